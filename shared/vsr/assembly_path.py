"""Which of the two assembly paths a job takes, decided once by admission from the predicted output size.

- `faststart`: today's join (vsr.media.concat). The assembler writes the whole output on its /tmp (the
  faststart rewrite needs it on disk; with re-encoded joins it also holds the one-pass delivery encode), so the
  output must fit there: predicted bytes x the copies the join holds <= the assembler's ephemeral storage.
- `fragmented`: workers write their segments as fragmented-MP4 media fragments (vsr.media.fragmented); the
  assembler writes the init segment and joins them in S3 with multipart UploadPartCopy
  (vsr.pipeline.multipart). Its disk use does not grow with the video; S3's limits bound it: at most 10,000
  parts (a segment takes at most two) and 5 TiB.

The prediction is a rate per output frame and megapixel at the delivery CRF (settings
`encode.delivery_bytes_per_output_mpix`, measured by bench/bench_output_size.py on the bundled clips) times a
margin (`encode.output_size_margin`). Small outputs keep the faststart MP4 (plays everywhere, starts at once);
a job no path can assemble is refused before any work. Pure: plain values in, no AWS, no FFmpeg.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

FASTSTART = "faststart"
FRAGMENTED = "fragmented"
PATHS = (FASTSTART, FRAGMENTED)

ASSEMBLER_DISK_HEADROOM = 0.9  # fraction of its /tmp the assembler plans to use

# S3 multipart limits (docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html)
S3_MIN_PART_BYTES = 5 * 1024**2  # every part but the last
S3_MAX_PART_BYTES = 5 * 1024**3
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT_BYTES = 5 * 1024**4


@dataclass(frozen=True)
class OutputModel:
    """Bytes of one output frame per output megapixel at the delivery CRF, and the margin a prediction gets."""

    bytes_per_output_mpix: float
    margin: float


@dataclass(frozen=True)
class AssemblyCapacity:
    """What each path can hold. `faststart_disk_bytes`: the assembler's /tmp it may use (ephemeral storage x
    the assembler's headroom); `faststart_copies`: outputs the join holds on it at once (2 when it re-encodes:
    the delivery encode, then the faststart MP4; 1 when it remuxes)."""

    faststart_disk_bytes: int
    faststart_copies: int
    max_parts: int = S3_MAX_PARTS
    max_object_bytes: int = S3_MAX_OBJECT_BYTES


@dataclass(frozen=True)
class AssemblyChoice:
    """The path admission chose, the size it predicted, and why (the report prints it)."""

    path: str
    predicted_bytes: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NoAssemblyPath(ValueError):
    """No path can assemble the job; the message is the user-facing reason."""


def predict_output_bytes(frames: int, output_mpix_per_frame: float, model: OutputModel) -> int:
    """The output's predicted size: frames x output megapixels x the measured rate x the margin."""
    return math.ceil(frames * output_mpix_per_frame * model.bytes_per_output_mpix * model.margin)


def fragmented_parts_bound(segments: int) -> int:
    """The most parts the fragmented join needs: each segment is one copied part, or two when it completes a
    grouped part first (vsr.pipeline.multipart.plan_parts), plus the part that carries the init segment."""
    return 2 * segments + 1


def _size(count: float) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def choose_path(predicted_bytes: int, segments: int, capacity: AssemblyCapacity) -> AssemblyChoice:
    """faststart when the output fits the assembler's /tmp, else fragmented when S3's limits allow it; else
    NoAssemblyPath with the reason."""
    predicted = _size(predicted_bytes)
    need = predicted_bytes * capacity.faststart_copies
    disk = _size(capacity.faststart_disk_bytes)
    if need <= capacity.faststart_disk_bytes:
        return AssemblyChoice(
            FASTSTART,
            predicted_bytes,
            f"the output (predicted {predicted}, {capacity.faststart_copies} cop"
            f"{'ies' if capacity.faststart_copies > 1 else 'y'} on disk) fits the assembler's {disk} /tmp: "
            "one faststart MP4",
        )
    if predicted_bytes > capacity.max_object_bytes:
        raise NoAssemblyPath(
            f"the output is predicted at {predicted}, above S3's largest object "
            f"({capacity.max_object_bytes / 1e12:.1f} TB): upload a shorter or smaller video"
        )
    if fragmented_parts_bound(segments) > capacity.max_parts:
        raise NoAssemblyPath(
            f"the output is predicted at {predicted}, too big for the assembler's {disk} /tmp, and its "
            f"{segments} segments are more than one S3 multipart upload can join ({capacity.max_parts} parts)"
        )
    return AssemblyChoice(
        FRAGMENTED,
        predicted_bytes,
        f"the output (predicted {predicted}, {capacity.faststart_copies} cop"
        f"{'ies' if capacity.faststart_copies > 1 else 'y'} on disk) does not fit the assembler's {disk} /tmp: "
        f"fragmented MP4 joined in S3 from {segments} segments",
    )
