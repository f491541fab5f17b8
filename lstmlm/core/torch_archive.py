"""What ``torch.save`` wrote, read back without torch: its tensors as numpy arrays.

``python -m lstmlm generate`` and ``serve`` draw with numpy, and importing torch alone
takes longer than the whole of their start-up may (docs/generation.md); no library
reads torch's format without torch, so this one does, for what our checkpoints hold.

torch.save writes a zip archive, every record stored uncompressed under one folder:

    <name>/data.pkl      the object, pickled; each tensor as a call of
                         torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                         requires_grad, hooks), its storage a persistent id
                         ("storage", torch.FloatStorage, key, location, elements)
    <name>/data/<key>    each storage's raw bytes
    <name>/byteorder     "little" or "big"

The pickle is read as ``torch.load(..., weights_only=True)`` reads it, only narrower: an
unpickler whose find_class knows the tensor call, the storage types and OrderedDict
(for the tensor's empty hooks) and refuses every other global, so no code from the file
runs. Each tensor becomes a read-only view of its storage's bytes, dtype, byte order,
offset and strides honoured, once its extent is known to lie inside the storage.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any, BinaryIO

import numpy as np

# torch's storage types -> numpy dtypes (bfloat16 has none: such a file is refused)
STORAGE_DTYPES = {"DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2",
                  "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2",
                  "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?"}


class ArchiveError(ValueError):
    """Not a torch archive this module reads; the message says why, in one line."""


class _StorageType:
    """Stands for one of torch's storage classes (GLOBAL torch FloatStorage) in the pickle."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def read_archive(handle: BinaryIO) -> Any:
    """The object torch.save wrote to ``handle``, tensors as read-only numpy arrays.
    Raises ArchiveError for anything else: not a zip archive, a compressed record, a
    forbidden global, a storage missing or shorter than its tensors."""
    try:
        with zipfile.ZipFile(handle) as archive:
            return _Reader(archive).load()
    except ArchiveError:
        raise
    except Exception as err:  # zipfile and pickle raise many types for damaged bytes
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ArchiveError(f"{type(err).__name__}: {reason}"[:200] if reason
                           else type(err).__name__) from None


class _Reader:
    """One archive's records: the pickle, its storages (each read once) and byte order."""

    def __init__(self, archive: zipfile.ZipFile):
        self.archive = archive
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")
                   and name.count("/") == 1]
        if len(pickles) != 1:
            raise ArchiveError("not an archive written by torch.save (no single data.pkl)")
        self.folder = pickles[0][:-len("data.pkl")]
        for info in archive.infolist():  # uncompressed, as torch writes: no zip bomb
            if info.compress_type != zipfile.ZIP_STORED:
                raise ArchiveError(f"record {info.filename} is compressed; torch.save "
                                   "stores records as they are")
        order = self._record("byteorder", required=False) or b"little"
        if order not in (b"little", b"big"):
            raise ArchiveError(f"unknown byte order {order[:20]!r}")
        self.order = "<" if order == b"little" else ">"
        self.storages: dict[str, np.ndarray] = {}

    def _record(self, name: str, required: bool = True) -> bytes | None:
        try:
            return self.archive.read(self.folder + name)
        except KeyError:
            if required:
                raise ArchiveError(f"the archive lacks its record {name}") from None
            return None

    def load(self) -> Any:
        return _Unpickler(io.BytesIO(self._record("data.pkl")), self).load()

    def storage(self, pid: Any) -> np.ndarray:
        """A persistent id ("storage", type, key, location, elements) -> its 1-D array."""
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not isinstance(pid[4], int) or pid[4] < 0):
            raise ArchiveError(f"unknown persistent id {str(pid)[:80]}")
        _, kind, key, _, elements = pid
        if key not in self.storages:
            dtype = np.dtype(STORAGE_DTYPES[kind.name]).newbyteorder(self.order)
            data = self._record(f"data/{key}")
            if len(data) != elements * dtype.itemsize:
                raise ArchiveError(f"storage {key} holds {len(data):,} bytes, not the "
                                   f"{elements:,} elements of {dtype.itemsize} bytes it claims")
            self.storages[key] = np.frombuffer(data, dtype=dtype)
        return self.storages[key]


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                    hooks: Any, metadata: Any = None) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2's arguments -> a read-only view of the storage,
    once the view is known to lie inside it (a tensor claiming more than its storage
    holds is refused, not read past its end)."""
    if not isinstance(storage, np.ndarray) or hooks or metadata:
        raise ArchiveError("a tensor with hooks, metadata or no storage of its own")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or not isinstance(offset, int) or offset < 0:
        raise ArchiveError(f"a tensor of size {size}, stride {stride}, offset {offset!r}")
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise ArchiveError(f"a tensor of size {size} reaches element {last:,} of a "
                               f"storage of {storage.size:,}")
    start = storage[min(offset, storage.size):]
    view = np.lib.stride_tricks.as_strided(start, shape=size, writeable=False,
                                           strides=[s * storage.itemsize for s in stride])
    return view


def _ints(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple) or not all(type(v) is int and v >= 0 for v in values):
        raise ArchiveError(f"a tensor's {what} is not a tuple of counts: {str(values)[:80]}")
    return values


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler that builds only what our checkpoints hold (see the docstring)."""

    def __init__(self, file: Any, reader: _Reader):
        super().__init__(file)
        self.reader = reader

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            raise ArchiveError(f"it holds tensors of a type numpy lacks ({name})")
        raise ArchiveError(f"it holds a Python object ({module}.{name}), not only tensors "
                           "and plain data")

    def persistent_load(self, pid: Any) -> np.ndarray:
        return self.reader.storage(pid)
