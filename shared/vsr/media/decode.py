"""Frame-exact windows of decoded frames, addressed by presentation timestamp.

Seek (backward) to the keyframe at or before `start_pts` in the video stream, decode forward, drop frames
before `start_pts`, yield `count` frames. Identical to a full sequential decode (tests/media checks
mp4/mov/webm/mkv/VFR/10-bit/rotated/odd sizes), because every frame is still decoded from its keyframe.

Images are the coded (unrotated) picture in RGB: uint8 for 8-bit sources and uint16 (rgb48) for deeper
ones so 10-bit sources are not crushed. YUV -> RGB uses the frame's own matrix and range; the encoder
uses the same ones back, so colours survive the round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from vsr.errors import CorruptInputError
from vsr.media.colour import rgb_format_for, to_rgb_array
from vsr.media.safety import Source, corrupt_on_media_error, open_input


@dataclass(frozen=True)
class Frame:
    pts: int  # in the source video stream's time base
    image: np.ndarray  # H x W x 3, uint8 or uint16


def decode_window(source: Source, start_pts: int, count: int) -> Iterator[Frame]:
    """Yield exactly `count` frames starting at the frame whose pts is `start_pts` (fewer only at end of stream)."""
    if count <= 0:
        return
    with open_input(source) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"  # frame + slice threads: ~1.45x faster than the SLICE default for h264
        for stream in container.streams:
            if stream.index != video.index:
                stream.discard = av.stream.Discard.all
        produced = 0
        with corrupt_on_media_error("decoding the video"):
            container.seek(start_pts, backward=True, any_frame=False, stream=video)
            rgb_format: str | None = None
            for frame in container.decode(video):
                if frame.pts is None:
                    raise CorruptInputError("the video has a frame without a timestamp")
                if frame.pts < start_pts:
                    continue
                if produced == 0 and frame.pts != start_pts:
                    # the seek landed after the wanted frame (broken index): never return a shifted window
                    raise CorruptInputError(f"frame at pts {start_pts} could not be found in the video")
                rgb_format = rgb_format or rgb_format_for(frame.format.name)
                yield Frame(pts=int(frame.pts), image=to_rgb_array(frame, rgb_format))
                produced += 1
                if produced == count:
                    return
