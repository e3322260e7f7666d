"""The configured model in the models bucket: its metadata for ingest, its file for the workers.

Ingest plans segments from the model's cost (multiply-adds per input pixel) and checks output limits with its
scale, but on AWS it never downloads the model: both travel as S3 object metadata on the model object

    x-amz-meta-vsr-name, x-amz-meta-vsr-scale, x-amz-meta-vsr-macs-per-input-pixel, x-amz-meta-vsr-sha256

written by `publish_model` (local runtime) and by Terraform's `aws_s3_object.metadata` from the sidecar JSON
the converter writes beside each .onnx (same keys without the `vsr-` prefix). One HeadObject per upload.
Workers download the .onnx once per container into $VSR_MODEL_DIR (skipped when an identical file is there).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions

from vsr.aws import clients
from vsr.aws.clients import as_transient, aws_retry, is_transient
from vsr.aws.resources import ConfigurationError

META_NAME = "vsr-name"
META_SCALE = "vsr-scale"
META_MACS = "vsr-macs-per-input-pixel"
META_SHA256 = "vsr-sha256"

_lock = threading.Lock()
_downloaded: dict[tuple[str, str, str], Path] = {}


@dataclass(frozen=True)
class ModelRef:
    """What ingest needs to know about the deployed model, without its weights."""

    bucket: str
    key: str
    name: str
    scale: int
    macs_per_input_pixel: int
    sha256: str
    etag: str

    def to_message(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "key": self.key, "sha256": self.sha256}


def object_metadata(name: str, scale: int, macs_per_input_pixel: int, sha256: str) -> dict[str, str]:
    return {META_NAME: name, META_SCALE: str(scale), META_MACS: str(macs_per_input_pixel), META_SHA256: sha256}


def publish_model(path: Path, bucket: str, key: str, *, name: str, scale: int, macs_per_input_pixel: int) -> None:
    """Upload an .onnx with the metadata ingest reads (the local runtime's equivalent of Terraform's upload)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    clients.s3().upload_file(
        str(path), bucket, key, ExtraArgs={"Metadata": object_metadata(name, scale, macs_per_input_pixel, digest)}
    )


def model_ref(bucket: str, key: str) -> ModelRef:
    """Read the model's name, scale and cost from its S3 metadata (one HeadObject, no download)."""

    @aws_retry()
    def head() -> dict[str, Any]:
        return clients.s3().head_object(Bucket=bucket, Key=key)

    try:
        response = head()
    except botocore.exceptions.ClientError as exc:
        if is_transient(exc):
            raise as_transient(exc, f"head model s3://{bucket}/{key}") from exc
        raise ConfigurationError(f"model s3://{bucket}/{key} is not readable: {exc}") from exc
    meta = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
    try:
        return ModelRef(
            bucket=bucket,
            key=key,
            name=meta.get(META_NAME) or posixpath.splitext(posixpath.basename(key))[0],
            scale=int(meta[META_SCALE]),
            macs_per_input_pixel=int(meta[META_MACS]),
            sha256=meta.get(META_SHA256, ""),
            etag=str(response.get("ETag", "")).strip('"'),
        )
    except (KeyError, ValueError) as exc:
        raise ConfigurationError(
            f"model s3://{bucket}/{key} lacks metadata {META_SCALE} / {META_MACS} (upload it with them)"
        ) from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_local_model(bucket: str, key: str, directory: Path) -> Path:
    """The model file in `directory`, downloaded at most once per container (atomic rename, so a concurrent
    reader never sees half a file). An existing file with the same sha256 is reused."""
    with _lock:
        head = model_ref(bucket, key)
        cache_key = (bucket, key, head.etag)
        cached = _downloaded.get(cache_key)
        if cached is not None and cached.is_file():
            return cached
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / posixpath.basename(key)
        if not (path.is_file() and head.sha256 and _sha256(path) == head.sha256):
            partial = path.with_name(f".{path.name}.{os.getpid()}.part")

            @aws_retry()
            def download() -> None:
                clients.s3().download_file(bucket, key, str(partial))

            try:
                download()
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                partial.unlink(missing_ok=True)
                raise as_transient(exc, f"download model s3://{bucket}/{key}") from exc
            if head.sha256 and _sha256(partial) != head.sha256:
                partial.unlink(missing_ok=True)
                raise ConfigurationError(f"model s3://{bucket}/{key} does not match its recorded sha256")
            partial.replace(path)
        _downloaded[cache_key] = path
        return path


def reset_cache() -> None:
    with _lock:
        _downloaded.clear()
