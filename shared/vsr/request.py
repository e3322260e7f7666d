"""What a user asks of the time axis, as one typed value: parsed once from CLI flags or S3 metadata.

`--interpolate N` / `vsr-interpolate: N` (N = 2, 4, 8): N times the frame rate, same duration, audio kept.
`--fps F` / `vsr-fps: F`: a target rate (50, 59.94, 60 ...), frames at exact multiples of 1/F.
`--slowmo N` / `vsr-slowmo: N`: the source rate kept and time stretched N times; the audio is dropped.
`--scale 1`: interpolation without super-resolution (`scale` None: the configured model's own scale).

At most one of interpolate/fps/slowmo. Bad values raise `BadRequestError` (permanent: the job fails at ingest
with the reason). `check_against` refuses what the source makes impossible (an fps below the source's, an
output over the frame-rate or pixel-rate limits). The value rides in the segment message (`to_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from vsr.errors import BadRequestError, LimitExceededError

INTERPOLATE_KEY = "vsr-interpolate"
FPS_KEY = "vsr-fps"
SLOWMO_KEY = "vsr-slowmo"
FACTORS = (2, 4, 8)  # RIFE HDv3 makes midpoints only: factors are powers of two by recursive midpoints
# common NTSC-style rates written as decimals map to their exact fractions
_NTSC = {"23.976": Fraction(24000, 1001), "29.97": Fraction(30000, 1001), "59.94": Fraction(60000, 1001)}


@dataclass(frozen=True)
class InterpolationLimits:
    max_output_fps: float
    max_output_pixel_rate: float  # output pixels per second of video


@dataclass(frozen=True)
class TimeRequest:
    interpolate: int = 1  # 1: off
    fps: Fraction | None = None
    slowmo: int = 1  # 1: off
    scale: int | None = None  # 1: no super-resolution; None: the configured model's scale

    @property
    def active(self) -> bool:
        """Whether the time axis changes at all (otherwise the super-resolution path runs as before)."""
        return self.interpolate > 1 or self.fps is not None or self.slowmo > 1

    @property
    def factor(self) -> int:
        """Frames made per source interval (fps: the finest midpoint depth used, 8)."""
        if self.fps is not None:
            return max(FACTORS)
        return max(self.interpolate, self.slowmo)

    @property
    def audio(self) -> str:
        return "dropped" if self.slowmo > 1 else "kept"

    def to_dict(self) -> dict[str, Any]:
        return {
            "interpolate": self.interpolate,
            "fps": None if self.fps is None else f"{self.fps.numerator}/{self.fps.denominator}",
            "slowmo": self.slowmo,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TimeRequest:
        if not data:
            return cls()
        fps = data.get("fps")
        return cls(
            interpolate=int(data.get("interpolate") or 1),
            fps=Fraction(fps) if fps else None,
            slowmo=int(data.get("slowmo") or 1),
            scale=None if data.get("scale") is None else int(data["scale"]),
        )

    def check_against(
        self, source_rate: Fraction | None, width: int, height: int, scale: int, limits: InterpolationLimits
    ) -> None:
        """Refuse what this source makes impossible (`scale`: the super-resolution the job applies); the reason
        names the value and the limit."""
        if not self.active:
            return
        rate = source_rate or Fraction(25)
        if self.fps is not None and self.fps < rate:
            raise BadRequestError(
                f"fps {float(self.fps):g} is below the source's {float(rate):.3f} fps; frame interpolation only "
                "raises the rate"
            )
        out_rate = self.fps if self.fps is not None else rate * (self.interpolate if self.slowmo == 1 else 1)
        if out_rate > limits.max_output_fps:
            raise LimitExceededError(
                f"the output would run at {float(out_rate):.2f} fps; the limit is {limits.max_output_fps:g} fps"
            )
        pixel_rate = float(out_rate) * width * height * scale * scale
        if pixel_rate > limits.max_output_pixel_rate:
            raise LimitExceededError(
                f"the output would be {pixel_rate / 1e6:.0f} Mpixel/s ({width * scale}x{height * scale} at "
                f"{float(out_rate):.2f} fps); the limit is {limits.max_output_pixel_rate / 1e6:.0f} Mpixel/s"
            )


def _factor(name: str, text: str | int | None) -> int:
    if text is None or str(text).strip() == "":
        return 1
    raw = str(text).strip()
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"{name}={raw!r} is not a number; use one of {', '.join(map(str, FACTORS))}") from None
    if value not in FACTORS:
        raise BadRequestError(
            f"{name}={raw} is not supported; use one of {', '.join(map(str, FACTORS))} (RIFE makes midpoints, "
            "so factors are powers of two)"
        )
    return value


def parse_fps(text: str | float | None, name: str = FPS_KEY) -> Fraction | None:
    if text is None or str(text).strip() == "":
        return None
    raw = str(text).strip()
    if raw in _NTSC:
        return _NTSC[raw]
    try:
        value = Fraction(raw)
    except (ValueError, ZeroDivisionError):
        raise BadRequestError(f"{name}={raw!r} is not a frame rate; use a number such as 50, 59.94 or 60") from None
    if value <= 0:
        raise BadRequestError(f"{name}={raw} is not a frame rate; it must be positive")
    return value.limit_denominator(1001)


def parse(
    interpolate: str | int | None = None,
    fps: str | float | None = None,
    slowmo: str | int | None = None,
    scale: int | None = None,
    *,
    names: tuple[str, str, str] = (INTERPOLATE_KEY, FPS_KEY, SLOWMO_KEY),
) -> TimeRequest:
    request = TimeRequest(
        interpolate=_factor(names[0], interpolate),
        fps=parse_fps(fps, names[1]),
        slowmo=_factor(names[2], slowmo),
        scale=scale,
    )
    asked = [
        n
        for n, on in zip(names, (request.interpolate > 1, request.fps is not None, request.slowmo > 1), strict=True)
        if on
    ]
    if len(asked) > 1:
        raise BadRequestError(f"{' and '.join(asked)} were both asked for; ask for one of them")
    return request


def from_metadata(metadata: Mapping[str, str] | None) -> TimeRequest:
    """The request an upload's S3 user metadata makes (S3 lower-cases the names)."""
    value = {k.lower(): v for k, v in (metadata or {}).items()}
    return parse(value.get(INTERPOLATE_KEY), value.get(FPS_KEY), value.get(SLOWMO_KEY))


def from_args(args: Any) -> TimeRequest:
    """The request of the CLI flags --interpolate/--fps/--slowmo/--scale (absent attributes: not asked)."""
    return parse(
        getattr(args, "interpolate", None),
        getattr(args, "fps", None),
        getattr(args, "slowmo", None),
        getattr(args, "scale", None),
        names=("--interpolate", "--fps", "--slowmo"),
    )
