"""The fragmented path's join: one S3 multipart upload whose parts are copied server side (UploadPartCopy).

The output is the film's init segment followed by the byte range after each segment's own init
(vsr.media.fragmented). S3 requires every part but the last to be at least 5 MiB and at most 5 GiB:
- a range of at least 5 MiB is copied by S3 itself (UploadPartCopy with CopySourceRange); no byte of it
  passes through the assembler;
- smaller pieces (the init, short segments, a segment's head) are gathered into one part and uploaded
  (UploadPart) from memory, which never holds more than one such part (under 10 MiB), and no file at all: the
  assembler's /tmp does not grow with the video.
`plan_parts` is pure (unit-tested); `join` runs a plan. An attempt that dies leaves its upload open: the next
attempt (the lease's next holder) aborts every open upload of the output key before it starts, and the
bucket's lifecycle rule (terraform/storage.tf) aborts any that are left after a day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from vsr.assembly_path import S3_MAX_PART_BYTES, S3_MIN_PART_BYTES
from vsr.aws import clients
from vsr.logs import get_logger
from vsr.media.fragmented import FragmentError, with_duration
from vsr.pipeline import artifacts
from vsr.pipeline.fragments import INIT_BYTES_KEY, INIT_SHA_KEY

log = get_logger(__name__)


@dataclass(frozen=True)
class Piece:
    """A byte range of the output's source: `key` in the work bucket, or None for the init (held in memory)."""

    key: str | None
    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Part:
    number: int
    ranges: tuple[Piece, ...]
    copy: bool  # one range copied by S3 (UploadPartCopy), else the ranges uploaded from memory (UploadPart)

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges)


def plan_parts(
    pieces: Sequence[Piece], min_part: int = S3_MIN_PART_BYTES, max_part: int = S3_MAX_PART_BYTES
) -> list[Part]:
    """Parts for the pieces in order: every part but the last is within [min_part, max_part].

    A piece of at least `min_part` is copied by S3 (split into ranges of at most `max_part`). Smaller pieces (and
    the init, which is in memory) are gathered; a gathered part that is still short takes the head of the next
    big piece, just enough to reach `min_part` when the rest of that piece can still be copied, else the whole
    piece (then the gathered part stays under 2 x `min_part`: the most the assembler holds in memory)."""
    if min_part <= 0 or max_part < 2 * min_part:
        raise ValueError("need 0 < min_part and max_part >= 2 x min_part")
    parts: list[Part] = []
    pending: list[Piece] = []

    def add(ranges: Sequence[Piece], copy: bool) -> None:
        parts.append(Part(number=len(parts) + 1, ranges=tuple(ranges), copy=copy))

    def flush() -> None:
        add(pending, copy=False)
        pending.clear()

    for piece in pieces:
        if piece.size <= 0:
            continue
        if piece.key is None or piece.size < min_part:
            pending.append(piece)
            if sum(p.size for p in pending) >= min_part:
                flush()
            continue
        start = piece.start
        if pending:
            need = min_part - sum(p.size for p in pending)
            if piece.size - need < min_part:  # no copyable rest: the whole piece completes the gathered part
                pending.append(piece)
                flush()
                continue
            pending.append(Piece(piece.key, start, start + need))
            flush()
            start += need
        left = piece.end - start
        count = -(-left // max_part)  # ranges of at most max_part, each at least min_part
        step = -(-left // count)
        while start < piece.end:
            end = min(piece.end, start + step)
            add([Piece(piece.key, start, end)], copy=True)
            start = end
    if pending:
        flush()  # the last part may be small
    return parts


@dataclass(frozen=True)
class JoinStats:
    parts: int
    copied_parts: int
    copied_bytes: int
    uploaded_bytes: int  # passed through the assembler's memory (init, small pieces), never its disk
    aborted_stale_uploads: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def abort_open_uploads(bucket: str, key: str) -> int:
    """Abort every open multipart upload of `key` (a dead attempt's); returns how many."""
    s3 = clients.s3()
    uploads = clients.call(
        f"list multipart uploads s3://{bucket}/{key}",
        lambda: s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []),
    )
    aborted = 0
    for upload in uploads:
        if upload.get("Key") != key:
            continue
        clients.call(
            f"abort multipart upload s3://{bucket}/{key}",
            lambda upload=upload: s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"]),
        )
        aborted += 1
    if aborted:
        log.warning("multipart.aborted_stale_uploads", key=key, count=aborted)
    return aborted


def _read(bucket: str, piece: Piece, init: bytes) -> bytes:
    if piece.key is None:
        return init[piece.start : piece.end]
    what = f"get s3://{bucket}/{piece.key} bytes {piece.start}-{piece.end - 1}"
    data = clients.call(
        what,
        lambda: bytes(
            clients.s3()
            .get_object(Bucket=bucket, Key=piece.key, Range=f"bytes={piece.start}-{piece.end - 1}")["Body"]
            .read()
        ),
    )
    if len(data) != piece.size:
        raise clients.as_transient(OSError(f"short read: {len(data)} of {piece.size} bytes"), what)
    return data


def copy_part(
    bucket: str, output_bucket: str, output_key: str, upload_id: str, part: Part
) -> dict[str, Any]:  # one UploadPartCopy: the fault-injection point of the tests
    (piece,) = part.ranges
    response = clients.call(
        f"copy part {part.number} of s3://{output_bucket}/{output_key}",
        lambda: clients.s3().upload_part_copy(
            Bucket=output_bucket,
            Key=output_key,
            UploadId=upload_id,
            PartNumber=part.number,
            CopySource={"Bucket": bucket, "Key": str(piece.key)},
            CopySourceRange=f"bytes={piece.start}-{piece.end - 1}",
        ),
    )
    return {"PartNumber": part.number, "ETag": response["CopyPartResult"]["ETag"]}


def upload_part(
    bucket: str, output_bucket: str, output_key: str, upload_id: str, part: Part, init: bytes
) -> dict[str, Any]:
    body = b"".join(_read(bucket, piece, init) for piece in part.ranges)
    response = clients.call(
        f"upload part {part.number} of s3://{output_bucket}/{output_key}",
        lambda: clients.s3().upload_part(
            Bucket=output_bucket, Key=output_key, UploadId=upload_id, PartNumber=part.number, Body=body
        ),
    )
    return {"PartNumber": part.number, "ETag": response["ETag"]}


def join(
    bucket: str,
    segments: Sequence[Piece],
    init: bytes,
    output_bucket: str,
    output_key: str,
    content_type: str = "video/mp4",
) -> JoinStats:
    """Write init + the segments' ranges as one object at s3://output_bucket/output_key, server side where
    S3 allows. An open upload of the key left by a dead attempt is aborted first; this one is aborted if it
    fails (the lifecycle rule catches the rest)."""
    aborted = abort_open_uploads(output_bucket, output_key)
    parts = plan_parts([Piece(None, 0, len(init)), *segments])
    s3 = clients.s3()
    upload_id = clients.call(
        f"create multipart upload s3://{output_bucket}/{output_key}",
        lambda: s3.create_multipart_upload(Bucket=output_bucket, Key=output_key, ContentType=content_type)["UploadId"],
    )
    log.info("multipart.started", key=output_key, parts=len(parts), upload_id=upload_id)
    try:
        done = [
            copy_part(bucket, output_bucket, output_key, upload_id, part)
            if part.copy
            else upload_part(bucket, output_bucket, output_key, upload_id, part, init)
            for part in parts
        ]
        clients.call(
            f"complete multipart upload s3://{output_bucket}/{output_key}",
            lambda: s3.complete_multipart_upload(
                Bucket=output_bucket, Key=output_key, UploadId=upload_id, MultipartUpload={"Parts": done}
            ),
        )
    except BaseException:
        try:
            s3.abort_multipart_upload(Bucket=output_bucket, Key=output_key, UploadId=upload_id)
        except Exception as exc:  # the next attempt or the lifecycle rule aborts it
            log.warning("multipart.abort_failed", error=f"{type(exc).__name__}: {exc}")
        raise
    copied = [p for p in parts if p.copy]
    stats = JoinStats(
        parts=len(parts),
        copied_parts=len(copied),
        copied_bytes=sum(p.size for p in copied),
        uploaded_bytes=sum(p.size for p in parts if not p.copy),
        aborted_stale_uploads=aborted,
    )
    log.info("multipart.complete", key=output_key, **stats.to_dict())
    return stats


@dataclass(frozen=True)
class FragmentedJoin:
    bytes: int
    stats: JoinStats
    per_segment: list[dict[str, Any]]


def _head(bucket: str, key: str) -> Mapping[str, str]:
    what = f"head s3://{bucket}/{key}"
    return clients.call(what, lambda: dict(clients.s3().head_object(Bucket=bucket, Key=key).get("Metadata", {})))


def join_fragments(
    job_id: str, segment_count: int, work_bucket: str, output_bucket: str, video_key: str, duration: Fraction
) -> FragmentedJoin:
    """Join the job's fMP4 segments into s3://output_bucket/video_key: segment 0's init with the film's
    `duration` (vsr.media.fragmented.with_duration), then every segment's fragments."""
    sizes = artifacts.segment_sizes(work_bucket, job_id, artifacts.FRAGMENT_SUFFIX)
    missing = [i for i in range(segment_count) if i not in sizes]
    if missing:
        raise artifacts.ArtifactMissingError(
            f"upscaled segments {missing[:10]} are missing from the work bucket; the job must be resubmitted"
        )
    pieces: list[Piece] = []
    per_segment: list[dict[str, Any]] = []
    shas: set[str] = set()
    first_init = 0
    for index in range(segment_count):
        key = artifacts.segment_key(job_id, index, artifacts.FRAGMENT_SUFFIX)
        metadata = _head(work_bucket, key)
        try:
            init_bytes = int(metadata[INIT_BYTES_KEY])
            shas.add(metadata[INIT_SHA_KEY])
        except (KeyError, ValueError) as exc:
            raise FragmentError(f"segment {index} is not a fragmented segment (no {INIT_BYTES_KEY})") from exc
        if index == 0:
            first_init = init_bytes
        pieces.append(Piece(key, init_bytes, sizes[index]))
        per_segment.append({"index": index, **artifacts.parse_segment_metadata(metadata)})
    if len(shas) != 1:
        raise FragmentError(
            f"the segments were written with {len(shas)} different track layouts (encoder settings or streams "
            "changed during the job); it must be resubmitted"
        )
    first_key = artifacts.segment_key(job_id, 0, artifacts.FRAGMENT_SUFFIX)
    init = clients.call(
        f"get the init of s3://{work_bucket}/{first_key}",
        lambda: bytes(
            clients.s3().get_object(Bucket=work_bucket, Key=first_key, Range=f"bytes=0-{first_init - 1}")["Body"].read()
        ),
    )
    init = with_duration(init, duration)
    stats = join(work_bucket, pieces, init, output_bucket, video_key)
    total = len(init) + sum(p.size for p in pieces)
    return FragmentedJoin(bytes=total, stats=stats, per_segment=per_segment)
