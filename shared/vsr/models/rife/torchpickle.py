"""Read a legacy `torch.save` file (a state dict of tensors) without torch, and without running its code.

The legacy format (torch < 1.6, `_use_new_zipfile_serialization=False`) is a run of pickles followed by raw
storages: the magic number, the protocol version (1001), a dict of system information, then the object pickle
(whose persistent ids name the storages), then the list of storage keys, then each storage as an 8-byte
little-endian element count and its raw little-endian data.

A pickle can name any global and so run any code. This unpickler admits exactly the names a state dict of
tensors needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the `torch.*Storage` types),
each replaced by a local stand-in, and refuses every other global with `UnsafeModelFileError`.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vsr.errors import ModelError
from vsr.hashing import sha256_file

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafeModelFileError(ModelError):
    """The weights file names a global outside the admitted few: it could run code, so it is not read."""

    code = "unsafe_model_file"


class ChecksumMismatchError(ModelError):
    """The weights file is not the one whose checksum is pinned."""

    code = "checksum_mismatch"


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        if self.storage.data is None:
            raise ModelError("a tensor's storage was never read: the file is truncated")
        base = self.storage.data
        if not self.size:
            return base[self.offset : self.offset + 1].reshape(()).copy()
        itemsize = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=self.size, strides=tuple(s * itemsize for s in self.stride)
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only what a state dict of tensors needs; every other global is refused before it is looked up."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file)
        self.storages = storages if storages is not None else {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeModelFileError(
            f"refusing to load global {module}.{name} from a weights file: only collections.OrderedDict, "
            "torch._utils._rebuild_tensor_v2 and torch.*Storage types are admitted"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise UnsafeModelFileError(f"unexpected persistent id in a weights file: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, int(numel))
        return self.storages[key]


def _load(f: BinaryIO, storages: dict[str, _Storage] | None = None) -> Any:
    return RestrictedUnpickler(f, storages).load()


def load_state_dict(path: Path | str, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The tensors of a legacy `torch.save` state dict, as numpy arrays; `sha256`, when given, must match first."""
    path = Path(path)
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise ChecksumMismatchError(f"{path}: sha256 is {actual}, expected {sha256}; refusing to read it")
    data = path.read_bytes()
    return loads(data)


def loads(data: bytes) -> dict[str, np.ndarray]:
    f = io.BytesIO(data)
    try:
        if _load(f) != MAGIC:
            raise ModelError("not a legacy torch.save file (bad magic number)")
        if _load(f) != PROTOCOL:
            raise ModelError("unsupported torch.save protocol version")
        _load(f)  # system information: byte order, type sizes
        storages: dict[str, _Storage] = {}
        result = _load(f, storages)
        keys = _load(f)
        for key in keys:
            storage = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(count * storage.dtype.itemsize)
            if count != storage.numel or len(raw) != count * storage.dtype.itemsize:
                raise ModelError(f"storage {key}: {count} elements on disk, {storage.numel} expected")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, ValueError) as exc:
        raise ModelError(f"unreadable weights file: {exc}") from exc
    if not isinstance(result, dict):
        raise ModelError(f"expected a state dict, found {type(result).__name__}")
    tensors = {}
    for name, value in result.items():
        if not isinstance(value, _TensorRef):
            raise ModelError(f"state dict entry {name} is not a tensor")
        tensors[str(name)] = value.to_numpy()
    return tensors
