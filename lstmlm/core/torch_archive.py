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
runs. It accepts only what lstmlm.core.checkpoint writes, so that a size it reads is a size
it holds: records that do not overlap in the zip (Python 3.11's zipfile lets several
records share bytes, each read in full), each storage exactly as long as it claims, and
each tensor the whole of its storage, contiguous, from offset 0 (a stride of 0 would let a
tensor of 10**11 elements rest on one). Each tensor becomes a read-only view of its
storage's bytes, dtype and byte order honoured.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
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
    Raises ArchiveError for anything else: not a zip archive, a compressed record,
    records that overlap, a forbidden global, a storage missing or not of its claimed
    size, a tensor that is not the whole of its storage."""
    try:
        with zipfile.ZipFile(handle) as archive:
            _check_records(archive, handle)
            return _Reader(archive).load()
    except ArchiveError:
        raise
    except Exception as err:  # zipfile and pickle raise many types for damaged bytes
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ArchiveError(f"{type(err).__name__}: {reason}"[:200] if reason
                           else type(err).__name__) from None


# A zip record's local header: its signature, then 26 bytes whose last 4 are the lengths
# of the name and the extra field that follow it (APPNOTE.TXT 4.3.7).
_LOCAL_HEADER = struct.Struct("<4s22xHH")


def _check_records(archive: zipfile.ZipFile, handle: BinaryIO) -> None:
    """Every record, uncompressed (as torch writes: no zip bomb), ends before the next one
    (or the central directory) starts: records that share bytes would each be read in
    full, so that a small file could cost its size times its records."""
    records = sorted(archive.infolist(), key=lambda info: info.header_offset)
    starts = [info.header_offset for info in records[1:]] + [archive.start_dir]
    for info, limit in zip(records, starts):
        if info.compress_type != zipfile.ZIP_STORED:
            raise ArchiveError(f"record {info.filename[:80]} is compressed; torch.save "
                               "stores records as they are")
        handle.seek(info.header_offset)
        header = handle.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise ArchiveError(f"record {info.filename[:80]} has no header")
        _, name, extra = _LOCAL_HEADER.unpack(header)
        if info.header_offset + len(header) + name + extra + info.compress_size > limit:
            raise ArchiveError(f"record {info.filename[:80]} overlaps the next; torch.save "
                               "writes each record apart")


class _Reader:
    """One archive's records: the pickle, its storages (each read once) and byte order."""

    def __init__(self, archive: zipfile.ZipFile):
        self.archive = archive
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")
                   and name.count("/") == 1]
        if len(pickles) != 1:
            raise ArchiveError("not an archive written by torch.save (no single data.pkl)")
        self.folder = pickles[0][:-len("data.pkl")]
        order = self._record("byteorder", required=False) or b"little"
        if order not in (b"little", b"big"):
            raise ArchiveError(f"unknown byte order {order[:20]!r}")
        self.order = "<" if order == b"little" else ">"
        self.storages: dict[str, np.ndarray] = {}

    def _info(self, name: str, required: bool = True) -> zipfile.ZipInfo | None:
        try:
            return self.archive.getinfo(self.folder + name)
        except KeyError:
            if required:
                raise ArchiveError(f"the archive lacks its record {name[:40]}") from None
            return None

    def _record(self, name: str, required: bool = True) -> bytes | None:
        info = self._info(name, required)
        return None if info is None else self.archive.read(info)

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
            info = self._info(f"data/{key}")
            if info.file_size != elements * dtype.itemsize:  # before a byte is read
                raise ArchiveError(f"storage {key[:20]} holds {info.file_size:,} bytes, not "
                                   f"the {elements:,} elements of {dtype.itemsize} bytes it "
                                   "claims")
            self.storages[key] = np.frombuffer(self.archive.read(info), dtype=dtype)
        return self.storages[key]


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                    hooks: Any, metadata: Any = None) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2's arguments -> a read-only view of the storage,
    once the tensor is known to be the whole storage, contiguous, from offset 0: as
    lstmlm.core.checkpoint writes them. A view, a stride of 0 or a storage larger than its
    tensor is refused, so that no tensor claims more elements than the file holds."""
    if not isinstance(storage, np.ndarray) or hooks or metadata:
        raise ArchiveError("a tensor with hooks, metadata or no storage of its own")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if offset != 0 or stride != _contiguous(size, stride):
        raise ArchiveError(f"a tensor of size {size[:4]}, stride {stride[:4]}, offset "
                           f"{str(offset)[:20]}: not contiguous from the start of its storage")
    if math.prod(size) != storage.size:
        raise ArchiveError(f"a tensor of size {size[:4]} on a storage of {storage.size:,} "
                           "elements: not the whole of it")
    return storage.reshape(size)


def _contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...] | None:
    """The strides of a contiguous tensor of ``size`` (a dimension of one element may
    have any stride, as in torch's is_contiguous); None if ``stride`` has another length."""
    if len(stride) != len(size):
        return None
    want = [math.prod(size[i + 1:]) for i in range(len(size))]
    return tuple(s if n == 1 else w for n, s, w in zip(size, stride, want))


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
