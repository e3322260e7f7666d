"""The configured model in the models bucket: its scale and cost for ingest, its file for the workers.

Ingest plans segments from the model's cost (multiply-adds per input pixel) and checks output limits with its
scale, but never downloads the model: Terraform (and `vsr run`) copy both from the converter's sidecar JSON
into `VSR_MODEL_SCALE` and `VSR_MODEL_MACS_PER_PIXEL`. Without them, ingest falls back to the model
object's S3 metadata (`scale`, `macs-per-input-pixel`, `sha256`, as Terraform's `aws_s3_object.model`
writes it; one HeadObject, which needs s3:GetObject on the model).
Workers download the .onnx once per container into $VSR_MODEL_DIR (skipped when a file with the recorded
sha256 is already there).
"""

from __future__ import annotations

import os
import posixpath
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsr.admission import ModelCost, model_cost
from vsr.aws import clients
from vsr.aws.clients import as_transient, is_transient
from vsr.aws.deployment import META_MACS, META_NAME, META_SCALE, META_SHA256
from vsr.aws.resources import ConfigurationError, Resources
from vsr.hashing import sha256_file
from vsr.models.registry import INT8_SUFFIX
from vsr.settings import Int8Guard

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

    @property
    def precision(self) -> str:
        return "int8" if self.name.endswith(INT8_SUFFIX) else "fp32"

    def to_message(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scale": self.scale,
            "key": self.key,
            "sha256": self.sha256,
            "precision": self.precision,
        }

    def cost(self, guard: Int8Guard) -> ModelCost:
        """What the planner assumes this model costs (int8: scaled by settings `model.int8_guard`)."""
        return model_cost(self.name, self.scale, self.macs_per_input_pixel, self.precision, guard)


def object_metadata(name: str, scale: int, macs_per_input_pixel: int, sha256: str) -> dict[str, str]:
    return {META_NAME: name, META_SCALE: str(scale), META_MACS: str(macs_per_input_pixel), META_SHA256: sha256}


def publish_model(path: Path, bucket: str, key: str, *, name: str, scale: int, macs_per_input_pixel: int) -> None:
    """Upload an .onnx with the metadata ingest reads (the local runtime's equivalent of Terraform's upload)."""
    digest = sha256_file(path)
    clients.s3().upload_file(
        str(path), bucket, key, ExtraArgs={"Metadata": object_metadata(name, scale, macs_per_input_pixel, digest)}
    )


def _name_from_key(key: str) -> str:
    return posixpath.splitext(posixpath.basename(key))[0]


def configured_model(res: Resources) -> ModelRef:
    """The deployed model's scale and cost: from the environment when set, else from its S3 metadata."""
    if res.model_scale and res.model_macs_per_pixel:
        try:
            return ModelRef(
                bucket=res.models_bucket,
                key=res.model_key,
                name=_name_from_key(res.model_key),
                scale=int(res.model_scale),
                macs_per_input_pixel=int(float(res.model_macs_per_pixel)),
                sha256="",
                etag="",
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"VSR_MODEL_SCALE={res.model_scale!r} / VSR_MODEL_MACS_PER_PIXEL={res.model_macs_per_pixel!r} "
                "are not numbers"
            ) from exc
    return model_ref(res.models_bucket, res.model_key)


def _head(bucket: str, key: str) -> tuple[str, dict[str, str]]:
    """(ETag, lower-cased user metadata) of the model object."""

    def not_readable(exc: Exception) -> Exception | None:
        if is_transient(exc):
            return None  # call() reports it as transient
        return ConfigurationError(f"model s3://{bucket}/{key} is not readable: {exc}")

    response = clients.call(
        f"head model s3://{bucket}/{key}",
        lambda: clients.s3().head_object(Bucket=bucket, Key=key),
        on_error=not_readable,
    )
    meta = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
    return str(response.get("ETag", "")).strip('"'), meta


def model_ref(bucket: str, key: str) -> ModelRef:
    """Read the model's name, scale and cost from its S3 metadata (one HeadObject, no download)."""
    etag, meta = _head(bucket, key)
    try:
        return ModelRef(
            bucket=bucket,
            key=key,
            name=meta.get(META_NAME) or _name_from_key(key),
            scale=int(meta[META_SCALE]),
            macs_per_input_pixel=int(meta[META_MACS]),
            sha256=meta.get(META_SHA256, ""),
            etag=etag,
        )
    except (KeyError, ValueError) as exc:
        raise ConfigurationError(
            f"model s3://{bucket}/{key} lacks metadata {META_SCALE} / {META_MACS} and VSR_MODEL_SCALE / "
            "VSR_MODEL_MACS_PER_PIXEL are not set"
        ) from exc


def ensure_local_model(bucket: str, key: str, directory: Path) -> Path:
    """The model file in `directory`, downloaded at most once per container (atomic rename, so a concurrent
    reader never sees half a file). An existing file with the same sha256 is reused."""
    with _lock:
        etag, meta = _head(bucket, key)
        sha256 = meta.get(META_SHA256, "")
        cache_key = (bucket, key, etag)
        cached = _downloaded.get(cache_key)
        if cached is not None and cached.is_file():
            return cached
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / posixpath.basename(key)
        if not (path.is_file() and sha256 and sha256_file(path) == sha256):
            partial = path.with_name(f".{path.name}.{os.getpid()}.part")

            what = f"download model s3://{bucket}/{key}"

            def transient_after_cleanup(exc: Exception) -> Exception:
                partial.unlink(missing_ok=True)
                return as_transient(exc, what)  # a deployed model that cannot be read now may be readable later

            clients.call(
                what, lambda: clients.s3().download_file(bucket, key, str(partial)), on_error=transient_after_cleanup
            )
            if sha256 and sha256_file(partial) != sha256:
                partial.unlink(missing_ok=True)
                raise ConfigurationError(f"model s3://{bucket}/{key} does not match its recorded sha256")
            partial.replace(path)
        _downloaded[cache_key] = path
        return path


def reset_cache() -> None:
    with _lock:
        _downloaded.clear()
