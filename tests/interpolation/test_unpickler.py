"""The restricted unpickler: reads a legacy torch.save state dict without torch, refuses anything else."""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest

from vsr.errors import ModelError
from vsr.models.rife import torchpickle


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + b")R"


def _tensor(key: str, shape: tuple[int, ...]) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict()), as torch pickles it."""
    numel = int(np.prod(shape))
    stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    pid = _tuple(_str("storage"), _global("torch", "FloatStorage"), _str(key), _str("cpu"), _int(numel), b"N") + b"Q"
    args = _tuple(pid, _int(0), _tuple(*map(_int, shape)), _tuple(*map(_int, stride)), b"\x89", _ordered_dict())
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _legacy_file(tensors: dict[str, np.ndarray], extra: bytes | None = None) -> bytes:
    """A legacy torch.save byte string of float32 `tensors`, written opcode by opcode (no torch here);
    `extra`: the pickled value of one more state-dict entry."""
    out = io.BytesIO()
    for value in (torchpickle.MAGIC, torchpickle.PROTOCOL, {"little_endian": True}):
        pickle.dump(value, out, protocol=2)
    items = b"".join(_str(name) + _tensor(str(i), t.shape) for i, (name, t) in enumerate(tensors.items()))
    if extra is not None:
        items += _str("extra") + extra
    out.write(b"\x80\x02" + _ordered_dict() + b"(" + items + b"u.")
    pickle.dump([str(i) for i in range(len(tensors))], out, protocol=2)
    for t in tensors.values():
        out.write(struct.pack("<q", t.size))
        out.write(np.ascontiguousarray(t, dtype="<f4").tobytes())
    return out.getvalue()


def test_reads_a_state_dict_of_tensors() -> None:
    tensors = {"a.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "b": np.array([1.5], np.float32)}
    loaded = torchpickle.loads(_legacy_file(tensors))
    assert list(loaded) == ["a.weight", "b"]
    np.testing.assert_array_equal(loaded["a.weight"], tensors["a.weight"])
    np.testing.assert_array_equal(loaded["b"], tensors["b"])


def test_refuses_a_pickle_naming_another_global() -> None:
    call = _global("os", "system") + _tuple(_str("echo pwned")) + b"R"
    data = _legacy_file({"a": np.zeros(2, np.float32)}, extra=call)
    with pytest.raises(torchpickle.UnsafeModelFileError, match=r"refusing to load global os\.system"):
        torchpickle.loads(data)


def test_refuses_a_bare_pickle_with_a_global_before_anything_runs() -> None:
    data = b"\x80\x02cbuiltins\neval\nq\x00X\x04\x00\x00\x001+1q\x01\x85q\x02Rq\x03."
    with pytest.raises(torchpickle.UnsafeModelFileError, match=r"builtins\.eval"):
        torchpickle.loads(data)


def test_refuses_a_file_with_the_wrong_checksum(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "flownet.pkl"
    path.write_bytes(_legacy_file({"a": np.zeros(2, np.float32)}))
    with pytest.raises(torchpickle.ChecksumMismatchError, match="expected fe854fc8"):
        torchpickle.load_state_dict(path, sha256="fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8")
    assert isinstance(torchpickle.ChecksumMismatchError("x"), ModelError)  # permanent, with a reason


def test_refuses_a_truncated_file() -> None:
    data = _legacy_file({"a": np.zeros(4, np.float32)})
    with pytest.raises(ModelError, match=r"elements on disk|unreadable"):
        torchpickle.loads(data[:-8])
