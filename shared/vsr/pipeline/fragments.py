"""The fragmented assembly path in the stages: what a worker uploads (the assembler's join is
vsr.pipeline.multipart.join_fragments; this module has no multipart call, so the worker's role needs none).

Admission chose the path (vsr.assembly_path) and recorded it on the job's plan and its segment messages; the
stages follow it and decide nothing about it.
- Worker (`fragment_upload`): the segment, encoded at delivery quality with the path's encoder options, becomes
  a little fMP4 (vsr.media.fragmented) uploaded as `segments/<index>.m4s`, with its init's length and hash as
  metadata beside the usual timings.
- Assembler (vsr.pipeline.multipart.join_fragments): checks every segment is there and shares one init,
  takes segment 0's init as the film's, and joins the rest in S3. Nothing is written on its /tmp.
"""

from __future__ import annotations

from pathlib import Path

from vsr.logs import get_logger
from vsr.media.fragmented import MediaSegment, write_media_segment
from vsr.media.probe import VideoInfo
from vsr.media.safety import Source
from vsr.pipeline import artifacts
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


def fragment_keys(job_id: str, segment_count: int) -> list[str]:
    return [artifacts.segment_key(job_id, i, artifacts.FRAGMENT_SUFFIX) for i in range(segment_count)]
