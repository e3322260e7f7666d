"""Where a job's files live in S3 and moving them: probe, plan and segments in the work bucket, the output.

Work bucket layout (deterministic, so a retried or duplicated step overwrites instead of adding):

    jobs/<job_id>/probe.json              full VideoInfo (with the exact pts table)
    jobs/<job_id>/plan.json               {"segments": [Segment.to_dict(), ...]}
    jobs/<job_id>/segments/<index:05d>.nut  one upscaled segment (NUT, see vsr.media.encode); timings as metadata
    jobs/<job_id>/segments/<index:05d>.m4s  ... on the fragmented assembly path: fMP4 (vsr.media.fragmented)

The output goes to the output bucket beside a JSON report, under a key derived from the input key:
`videos/clip.mov` -> `videos/clip.upscaled-x2.mp4` and `videos/clip.upscaled-x2.json`. An input key so long
that a derived key would pass S3's 1024 bytes keeps a prefix of its stem plus a short hash of the whole key
(`vsr.keys`): `<prefix>~<hash>.upscaled-x2.mp4`; the report records the original key.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import botocore.exceptions

from vsr import keys
from vsr.aws import clients
from vsr.aws.clients import as_transient, error_code, is_transient
from vsr.aws.deployment import WORK_PREFIX
from vsr.errors import PermanentError
from vsr.planning import Segment

SEGMENT_META_PREFIX = "vsr-"
SEGMENT_SUFFIX = ".nut"  # vsr.media.encode writes NUT segments (exact source time base)
FRAGMENT_SUFFIX = ".m4s"  # on the fragmented assembly path: a segment as fMP4 media fragments (vsr.media.fragmented)
DELETE_BATCH = 1000  # DeleteObjects limit
PREVIEW_SUFFIX = ".preview.png"
CHAPTERS_SUFFIX = ".chapters.vtt"  # the longest name derived from an output key, with PREVIEW_SUFFIX
MAX_SIDECAR_TRACKS = 99  # subtitle sidecars are numbered .1. to .99.; a language tag is cut to 3 letters


class ArtifactMissingError(PermanentError):
    code = "artifact_missing"


def local_tmp_dir() -> str:
    """Scratch space for segment and output files: $VSR_TMP_DIR, else the system temp dir (/tmp on Lambda)."""
    folder = os.environ.get("VSR_TMP_DIR") or tempfile.gettempdir()
    Path(folder).mkdir(parents=True, exist_ok=True)
    return folder


def job_prefix(job_id: str) -> str:
    return f"{WORK_PREFIX}{job_id}/"


def probe_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}probe.json"


def plan_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}plan.json"


def segment_key(job_id: str, index: int, suffix: str = SEGMENT_SUFFIX) -> str:
    return f"{job_prefix(job_id)}segments/{index:05d}{suffix}"


def output_keys(input_key: str, scale: int, extension: str = ".mp4") -> tuple[str, str]:
    """(video key, report key) in the output bucket for an input key; the video's extension is its container's.
    Every key derived from them (the preview, the longest) stays within S3's 1024 bytes."""
    stem, _ext = posixpath.splitext(input_key)
    suffix = f".upscaled-x{scale}"
    longest = suffix + max(PREVIEW_SUFFIX, CHAPTERS_SUFFIX, key=len)  # the longest name derived from `base`
    base = keys.shorten(stem or input_key, keys.MAX_KEY_BYTES - keys.utf8_len(longest), input_key) + suffix
    return f"{base}{extension}", f"{base}.json"


def preview_key(video_key: str) -> str:
    """The side-by-side preview PNG beside an output video."""
    return f"{posixpath.splitext(video_key)[0]}{PREVIEW_SUFFIX}"


def subtitle_key(video_key: str, number: int, language: str | None) -> str:
    """A text subtitle track's WebVTT beside an output that cannot carry it: `<stem>.<number>.<lang>.vtt`."""
    if not 1 <= number <= MAX_SIDECAR_TRACKS:
        raise ValueError(f"subtitle sidecars are numbered 1 to {MAX_SIDECAR_TRACKS}")
    tag = re.sub(r"[^a-z]", "", (language or "").lower())[:3] or "und"
    return f"{posixpath.splitext(video_key)[0]}.{number}.{tag}.vtt"


def chapters_key(video_key: str) -> str:
    """The source's chapters as WebVTT beside an output that cannot carry them."""
    return f"{posixpath.splitext(video_key)[0]}{CHAPTERS_SUFFIX}"


def put_text(bucket: str, key: str, text: str, content_type: str) -> None:
    body = text.encode()
    what = f"put s3://{bucket}/{key}"
    clients.call(
        what,
        lambda: clients.s3().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type),
        on_error=_missing(what),
    )


def _missing(what: str) -> Callable[[Exception], Exception | None]:
    """Map "no such key" to ArtifactMissingError (permanent for the caller to judge); leave the rest to call()."""

    def classify(exc: Exception) -> Exception | None:
        if isinstance(exc, botocore.exceptions.ClientError) and error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return ArtifactMissingError(f"{what}: object not found")
        return None

    return classify


def put_json(bucket: str, key: str, data: Any) -> None:
    body = json.dumps(data, separators=(",", ":")).encode()
    what = f"put s3://{bucket}/{key}"
    clients.call(
        what,
        lambda: clients.s3().put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json"),
        on_error=_missing(what),
    )


def get_json(bucket: str, key: str) -> Any:
    what = f"get s3://{bucket}/{key}"
    body = clients.call(
        what, lambda: bytes(clients.s3().get_object(Bucket=bucket, Key=key)["Body"].read()), on_error=_missing(what)
    )
    return json.loads(body)


def save_plan(bucket: str, job_id: str, segments: Sequence[Segment]) -> str:
    key = plan_key(job_id)
    put_json(bucket, key, {"segments": [s.to_dict() for s in segments]})
    return key


def load_plan(bucket: str, job_id: str) -> list[Segment]:
    """The segment plan of a job (what `vsr status` uses for per-segment frame ranges)."""
    return [Segment.from_dict(s) for s in get_json(bucket, plan_key(job_id))["segments"]]


def upload_file(
    path: Path, bucket: str, key: str, metadata: Mapping[str, str] | None = None, content_type: str = ""
) -> None:
    extra: dict[str, Any] = {}
    if metadata:
        extra["Metadata"] = dict(metadata)
    if content_type:
        extra["ContentType"] = content_type
    what = f"upload s3://{bucket}/{key}"

    def upload() -> None:
        # upload_file switches to multipart for large files (the output of a long video)
        try:
            clients.s3().upload_file(str(path), bucket, key, ExtraArgs=extra or None)
        except OSError as exc:  # a broken connection inside the transfer manager: worth a retry
            if is_transient(exc):
                raise as_transient(exc, what) from exc
            raise

    clients.call(what, upload, on_error=_missing(what))


def download_file(bucket: str, key: str, path: Path) -> dict[str, str]:
    """Download one object to `path`; returns its user metadata."""

    def download() -> dict[str, str]:
        response = clients.s3().get_object(Bucket=bucket, Key=key)
        with open(path, "wb") as handle:
            for chunk in response["Body"].iter_chunks(1 << 20):
                handle.write(chunk)
        return dict(response.get("Metadata", {}))

    what = f"download s3://{bucket}/{key}"
    return clients.call(what, download, on_error=_missing(what))


def segment_metadata(timings: Mapping[str, float], frames: int) -> dict[str, str]:
    meta = {f"{SEGMENT_META_PREFIX}{name.replace('_', '-')}": f"{value:.6f}" for name, value in timings.items()}
    meta[f"{SEGMENT_META_PREFIX}frames"] = str(int(frames))
    return meta


def parse_segment_metadata(metadata: Mapping[str, str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, text in metadata.items():
        if name.startswith(SEGMENT_META_PREFIX):
            try:
                values[name[len(SEGMENT_META_PREFIX) :].replace("-", "_")] = float(text)
            except ValueError:
                continue
    return values


def segment_sizes(bucket: str, job_id: str, suffix: str = SEGMENT_SUFFIX) -> dict[int, int]:
    """{index: bytes} of the segments present in the work bucket (ListObjectsV2, 1000 keys per call)."""
    prefix = f"{job_prefix(job_id)}segments/"

    def listing() -> list[dict[str, Any]]:
        paginator = clients.s3().get_paginator("list_objects_v2")
        return [obj for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])]

    what = f"list s3://{bucket}/{prefix}"
    objects = clients.call(what, listing, on_error=_missing(what))
    sizes: dict[int, int] = {}
    for obj in objects:
        name = obj["Key"][len(prefix) :]
        if name.endswith(suffix) and name[: -len(suffix)].isdigit():
            sizes[int(name[: -len(suffix)])] = int(obj["Size"])
    return sizes


def delete_keys(bucket: str, keys: Sequence[str]) -> int:
    """Delete objects (DeleteObjects, 1000 per call); missing keys are fine."""
    deleted = 0
    for start in range(0, len(keys), DELETE_BATCH):
        chunk = keys[start : start + DELETE_BATCH]
        objects = [{"Key": k} for k in chunk]
        clients.call(
            f"delete in s3://{bucket}",
            lambda objects=objects: clients.s3().delete_objects(
                Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
            ),
        )
        deleted += len(chunk)
    return deleted
