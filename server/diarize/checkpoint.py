"""The tensors of a PyTorch checkpoint (`torch.save` of a state dict) as numpy arrays, without
torch.

Speaker models are published as PyTorch checkpoints, and the server has no torch (it would
triple the install). A checkpoint is a zip holding a pickle that names each tensor's storage
file, dtype, shape and strides; the pickle is read with an unpickler that rebuilds tensors as
numpy arrays and refuses every other global, so a hostile file can name no callable to run
(the same allow-list idea as `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """Not a PyTorch state-dict checkpoint this reader accepts."""


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> np.ndarray:
    if not size:
        return np.array(storage[offset])
    flat = storage[offset:]
    needed = 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if needed > len(flat):
        raise CheckpointError("a tensor reaches past its storage")
    strides = [s * storage.itemsize for s in stride]
    return np.lib.stride_tricks.as_strided(flat, shape=size, strides=strides).copy()


class _Unpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, root: str, file: Any) -> None:
        super().__init__(file)
        self._archive = archive
        self._root = root
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _DTYPES:
            return name
        raise CheckpointError(f"a checkpoint may hold tensors only, not {module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError("unexpected persistent id")
        _, kind, key, _location, _count = pid
        if kind not in _DTYPES:
            raise CheckpointError(f"unsupported storage {kind}")
        key = str(key)
        if key not in self._storages:
            data = self._archive.read(f"{self._root}/data/{key}")
            self._storages[key] = np.frombuffer(data, dtype=_DTYPES[kind])
        return self._storages[key]


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors by name (a `{"model": ...}`/`{"state_dict": ...}` wrapper is
    unwrapped); CheckpointError when it is not a zip-format state dict."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a PyTorch zip checkpoint ({exc})") from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (no data.pkl)")
        root = pickles[0].rsplit("/", 1)[0]
        try:
            with archive.open(pickles[0]) as file:
                state = _Unpickler(archive, root, file).load()
        except (pickle.UnpicklingError, KeyError, EOFError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return dict(state)
