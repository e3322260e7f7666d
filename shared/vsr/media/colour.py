"""YUV <-> RGB conversion with the source's own matrix and range, and colour tags for the encoder.

Decoding converts with the frame's tagged matrix (BT.601 when untagged, swscale's default) and range;
encoding converts back with the same matrix and range and writes the same tags, so a player shows the
upscaled video with the source's colours. Transfer and primaries are only tags (no pixel conversion):
HDR (PQ/HLG) sources keep their signal and their tags.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Interpolation

# swscale's default fast path darkens an 8-bit YUV -> RGB -> YUV round trip by about 1.3 levels on real
# footage; accurate rounding with full chroma interpolation makes it near-exact for a few ms per frame.
# FULL_CHR_H_INT corrupts the rgb48 path (Y off by ~150 of 1023, measured), so deep frames do without it.
_SWS_FLAGS_8BIT = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_SWS_FLAGS_DEEP = Interpolation.BILINEAR | Interpolation.ACCURATE_RND


def _sws_flags(rgb_format: str) -> Interpolation:
    return _SWS_FLAGS_8BIT if rgb_format == "rgb24" else _SWS_FLAGS_DEEP


# FFmpeg AVColorSpace values -> the swscale matrices PyAV's reformatter knows.
_MATRIX_BY_COLORSPACE = {
    1: "itu709",  # BT.709
    4: "fcc",
    5: "itu601",  # BT.470BG
    6: "smpte170m",
    7: "smpte240m",
    9: "bt2020",  # BT.2020 non-constant luminance
    10: "bt2020",  # constant luminance: nearest available matrix
}
_UNSPECIFIED_RANGE = 0


def matrix_for(colorspace: int) -> str:
    """The swscale matrix for an FFmpeg colorspace value; BT.601 ("default") when untagged, like decoders."""
    return _MATRIX_BY_COLORSPACE.get(int(colorspace), "default")


def rgb_format_for(pix_fmt: str) -> str:
    """rgb24 for 8-bit sources, rgb48le (uint16) for deeper ones so 10-bit detail survives."""
    depth = max(component.bits for component in av.VideoFormat(pix_fmt).components)
    return "rgb24" if depth <= 8 else "rgb48le"


def to_rgb_array(
    frame: av.VideoFrame, rgb_format: str, width: int | None = None, height: int | None = None
) -> np.ndarray:
    """H x W x 3 RGB (uint8 or uint16) of the coded picture, converted with the frame's matrix and range;
    scaled to width x height when given (vsr.media.geometry: a frame after a mid-stream size change)."""
    return frame.to_ndarray(
        format=rgb_format,
        width=width,
        height=height,
        src_colorspace=matrix_for(frame.colorspace),
        src_color_range=int(frame.color_range) or None,
        interpolation=_sws_flags(rgb_format),
    )


def from_rgb_array(
    image: np.ndarray, pix_fmt: str, *, colorspace: int, color_range: int, color_primaries: int, color_trc: int
) -> av.VideoFrame:
    """A YUV frame for the encoder from RGB, converted with the source matrix/range and carrying its tags."""
    rgb_format = "rgb24" if image.dtype == np.uint8 else "rgb48le"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=rgb_format)
    out = frame.reformat(
        format=pix_fmt,
        dst_colorspace=matrix_for(colorspace),
        dst_color_range=int(color_range) or None,
        interpolation=_sws_flags(rgb_format),
    )
    out.colorspace = int(colorspace)
    out.color_range = int(color_range)
    out.color_primaries = int(color_primaries)
    out.color_trc = int(color_trc)
    return out
