"""The fragmented assembly path in the stages: what a worker uploads, and how the assembler joins it.

Admission chose the path (vsr.assembly_path) and recorded it on the job's plan and its segment messages; the
stages follow it and decide nothing about it.
- Worker (`fragment_upload`): the segment, encoded at delivery quality with the path's encoder options, becomes
  a little fMP4 (vsr.media.fragmented) uploaded as `segments/<index>.m4s`, with its init's length and hash as
  metadata beside the usual timings.
- Assembler (`join_fragments`): checks every segment is there and shares one init, takes segment 0's init as
  the film's, and joins the rest in S3 (vsr.pipeline.multipart). Nothing is written on its /tmp.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsr.aws import clients
from vsr.logs import get_logger
from vsr.media.fragmented import FragmentError, MediaSegment, write_media_segment
from vsr.media.probe import VideoInfo
from vsr.media.safety import Source
from vsr.pipeline import artifacts, multipart
from vsr.planning import Segment

log = get_logger(__name__)

INIT_BYTES_KEY = f"{artifacts.SEGMENT_META_PREFIX}init-bytes"
INIT_SHA_KEY = f"{artifacts.SEGMENT_META_PREFIX}init-sha256"


def fragment_upload(
    encoded: Path, source: Source, info: VideoInfo, segment: Segment, job_id: str
) -> tuple[Path, str, dict[str, str]]:
    """Turn the worker's encoded segment into its fMP4; returns (file, key, metadata) to upload."""
    path = encoded.with_suffix(artifacts.FRAGMENT_SUFFIX)
    media = write_media_segment(encoded, source, info, segment, path)
    return path, artifacts.segment_key(job_id, segment.index, artifacts.FRAGMENT_SUFFIX), fragment_metadata(media)


def fragment_metadata(media: MediaSegment) -> dict[str, str]:
    return {INIT_BYTES_KEY: str(media.init_bytes), INIT_SHA_KEY: media.init_sha256}


@dataclass(frozen=True)
class FragmentedJoin:
    bytes: int
    stats: multipart.JoinStats
    per_segment: list[dict[str, Any]]


def _head(bucket: str, key: str) -> Mapping[str, str]:
    what = f"head s3://{bucket}/{key}"
    return clients.call(what, lambda: dict(clients.s3().head_object(Bucket=bucket, Key=key).get("Metadata", {})))


def join_fragments(
    job_id: str, segment_count: int, work_bucket: str, output_bucket: str, video_key: str
) -> FragmentedJoin:
    """Join the job's fMP4 segments into s3://output_bucket/video_key (init, then every segment's fragments)."""
    sizes = artifacts.segment_sizes(work_bucket, job_id, artifacts.FRAGMENT_SUFFIX)
    missing = [i for i in range(segment_count) if i not in sizes]
    if missing:
        raise artifacts.ArtifactMissingError(
            f"upscaled segments {missing[:10]} are missing from the work bucket; the job must be resubmitted"
        )
    pieces: list[multipart.Piece] = []
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
        pieces.append(multipart.Piece(key, init_bytes, sizes[index]))
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
    stats = multipart.join(work_bucket, pieces, init, output_bucket, video_key)
    total = len(init) + sum(p.size for p in pieces)
    return FragmentedJoin(bytes=total, stats=stats, per_segment=per_segment)


def fragment_keys(job_id: str, segment_count: int) -> list[str]:
    return [artifacts.segment_key(job_id, i, artifacts.FRAGMENT_SUFFIX) for i in range(segment_count)]


def tmp_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes under `folder` (what the fragmented assembly leaves on /tmp: expected 0)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
