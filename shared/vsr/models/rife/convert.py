"""Build `rife-hdv3.onnx` from the pinned weights file (operator side: imports `onnx`; never torch)."""

from __future__ import annotations

from pathlib import Path

import onnx

from vsr.hashing import sha256_file
from vsr.logs import get_logger
from vsr.models import CONVERTER_VERSION
from vsr.models.rife import graph, source, torchpickle

log = get_logger(__name__)

DEFAULT_SCALE_LIST = (4.0, 2.0, 1.0)


def convert(weights: Path, out_path: Path) -> dict[str, str]:
    """Convert the RIFE HDv3 weights at `weights` (checksum checked first) to `out_path` + `<out>.json`."""
    from vsr.models.convert import unique_temp, write_json_atomic

    state = torchpickle.load_state_dict(weights, sha256=source.WEIGHTS_SHA256)
    proto = graph.build(state, source.NAME)
    metadata = {
        "name": source.NAME,
        "kind": source.KIND,
        "scale": "1",
        "source": f"{source.SOURCE_DIST}/{source.WEIGHTS_IN_DIST}",
        "source_sha256": source.WEIGHTS_SHA256,
        "macs_per_input_pixel": str(graph.macs_per_pixel(state, DEFAULT_SCALE_LIST)),
        "parameters": str(sum(v.size for k, v in state.items() if not k.startswith("module.block_tea."))),
        "converter_version": CONVERTER_VERSION,
        "licence": source.LICENCE,
        "attribution": source.ATTRIBUTION,
    }
    onnx.helper.set_model_props(proto, metadata)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temp(out_path)
    onnx.save_model(proto, str(tmp))
    tmp.replace(out_path)
    metadata["onnx_sha256"] = sha256_file(out_path)
    write_json_atomic(out_path.with_suffix(".json"), metadata)
    log.info("model_converted", name=source.NAME, path=str(out_path))
    return metadata
