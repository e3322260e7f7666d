"""Mid-stream changes of frame size, pixel format or sample aspect ratio, handled as FFmpeg does.

Captures and concatenated files change geometry mid-way (a broadcast switching feeds: 176x144, then 160x128).
The job keeps its first geometry (the probe's first frame: `VideoInfo.width/height/pix_fmt/sample_aspect_ratio`):
every later frame is converted to it before the model, scaled to fit while keeping its display aspect and
centred on black (pillarbox or letterbox), and converted to the first frame's RGB depth. FFmpeg's CLI does
the same (it scales to the first geometry) when a stream changes mid-way.

Settings `input.geometry_changes`: "scale" (the default) converts; "fail" makes a change a permanent error
with a clear reason (GeometryChangeError), found by the probe before any work is planned.

The probe finds the change points cheaply: its demux pass decodes keyframes only (the decoder's
skip_frame=NONKEY; a new size or format needs a new sequence header, which comes with a keyframe), and
`GeometryChange` records where each one starts, for the planner, every segment and the report to agree on.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from vsr.errors import GeometryChangeError
from vsr.media.colour import rgb_format_for, to_rgb_array

SCALE, FAIL = "scale", "fail"


@dataclass(frozen=True)
class Geometry:
    width: int
    height: int
    pix_fmt: str
    sample_aspect_ratio: Fraction | None = None  # None: square pixels (or unknown, treated as square)

    @property
    def sar(self) -> Fraction:
        return self.sample_aspect_ratio or Fraction(1)

    def display_aspect(self) -> Fraction:
        return Fraction(self.width, self.height) * self.sar

    def same_picture(self, other: Geometry) -> bool:
        """Same size and sample aspect (a pixel format change alone needs no scaling)."""
        return (self.width, self.height, self.sar) == (other.width, other.height, other.sar)

    def describe(self) -> str:
        sar = f" SAR {self.sar.numerator}:{self.sar.denominator}" if self.sar != 1 else ""
        return f"{self.width}x{self.height} {self.pix_fmt}{sar}"


def frame_geometry(frame: av.VideoFrame, sample_aspect_ratio: Any = None) -> Geometry:
    """A decoded frame's geometry; its SAR comes from the decoder context (PyAV frames do not expose it)."""
    sar = None
    if sample_aspect_ratio is not None and sample_aspect_ratio.denominator and sample_aspect_ratio.numerator:
        sar = Fraction(int(sample_aspect_ratio.numerator), int(sample_aspect_ratio.denominator))
    return Geometry(int(frame.width), int(frame.height), frame.format.name, sar)


@dataclass(frozen=True)
class Placement:
    """Where a converted frame goes in the target picture: scaled to width x height at (x, y)."""

    width: int
    height: int
    x: int
    y: int


def fit(source: Geometry, target: Geometry) -> Placement:
    """The largest placement of `source` inside `target` that keeps its display aspect, centred."""
    aspect = source.display_aspect() / target.sar  # width / height in target pixels
    if aspect * target.height > target.width:  # wider than the target: full width, bars top and bottom
        width, height = target.width, max(1, min(target.height, round(target.width / aspect)))
    else:  # narrower (or equal): full height, bars left and right
        width, height = max(1, min(target.width, round(target.height * aspect))), target.height
    return Placement(width, height, (target.width - width) // 2, (target.height - height) // 2)


@dataclass(frozen=True)
class GeometryChange:
    """From presentation timestamp `pts` on, frames have `geometry` (the probe's list, and the report's)."""

    pts: int
    time_s: float
    geometry: Geometry

    def to_dict(self) -> dict[str, Any]:
        g = self.geometry
        sar = g.sample_aspect_ratio
        return {
            "pts": self.pts,
            "time_s": round(self.time_s, 6),
            "width": g.width,
            "height": g.height,
            "pix_fmt": g.pix_fmt,
            "sample_aspect_ratio": None if sar is None else f"{sar.numerator}/{sar.denominator}",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeometryChange:
        sar = data.get("sample_aspect_ratio")
        geometry = Geometry(
            int(data["width"]), int(data["height"]), str(data["pix_fmt"]), Fraction(sar) if sar else None
        )
        return cls(int(data["pts"]), float(data["time_s"]), geometry)


def change_reason(first: Geometry, change: GeometryChange) -> str:
    return (
        f"the picture changes from {first.describe()} to {change.geometry.describe()} at {change.time_s:.3f} s, "
        'and settings input.geometry_changes is "fail" (set it to "scale" to convert such frames to the first '
        "geometry, as FFmpeg does)"
    )


class FrameConformer:
    """Decoded frame -> RGB array in the target geometry (the job's first frame), per `mode`."""

    def __init__(self, target: Geometry, mode: str = SCALE) -> None:
        if mode not in (SCALE, FAIL):
            raise ValueError(f'geometry change mode must be "{SCALE}" or "{FAIL}", got "{mode}"')
        self.target = target
        self.mode = mode
        self.rgb_format = rgb_format_for(target.pix_fmt)
        self.converted = 0  # frames that needed scaling (a pixel format change alone is not counted)

    def __call__(self, frame: av.VideoFrame, sample_aspect_ratio: Any = None) -> np.ndarray:
        source = frame_geometry(frame, sample_aspect_ratio)
        if source.same_picture(self.target):
            return to_rgb_array(frame, self.rgb_format)
        if self.mode == FAIL:
            raise GeometryChangeError(
                change_reason(self.target, GeometryChange(int(frame.pts or 0), float(frame.time or 0.0), source))
            )
        place = fit(source, self.target)
        image = to_rgb_array(frame, self.rgb_format, width=place.width, height=place.height)
        canvas = np.zeros((self.target.height, self.target.width, 3), dtype=image.dtype)
        canvas[place.y : place.y + place.height, place.x : place.x + place.width] = image
        self.converted += 1
        return canvas
