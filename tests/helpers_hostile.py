"""Hostile input, for the tests and bench/hostile_input.py: checkpoints as a hostile file
lays them out (tensors forged as torch.save pickles them, of any size, stride, offset or
storage; zip records that overlap; metadata shared with itself), the child that loads a
file under a memory limit and reports its peak, and a YAML alias bomb.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import textwrap
import zipfile
import zlib
from pathlib import Path

import torch

from lstmlm.model.config import ModelConfig

# Run in a child: `LIMIT_MIB checkpoint|vocabulary PATH [VOCAB]` loads the checkpoint (and
# vocabulary) as the command and the page do (without torch), or the vocabulary, under an
# address-space limit of what the child holds after its imports plus LIMIT_MIB; prints what
# happened, the time it took and how much the resident memory grew meanwhile.
LOAD_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import psutil
    from lstmlm.core.loading import load_weights as load
    from lstmlm.data.vocab import Vocabulary
    me = psutil.Process()
    limit = me.memory_info().vms + (int(sys.argv[1]) << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    before, started = me.memory_info().rss, time.monotonic()
    what, path, vocab = sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None
    try:
        load(path, vocab) if what == "checkpoint" else Vocabulary.load(path)
        outcome = {"error": None, "message": ""}
    except BaseException as err:
        outcome = {"error": type(err).__name__, "message": str(err)}
    # The high-water mark of this process's own memory (ru_maxrss would carry the peak of
    # the process that forked it across exec).
    peak = 1024 * int(next(line.split()[1] for line in open("/proc/self/status")
                           if line.startswith("VmHWM:")))
    outcome.update(growth=peak - before, seconds=time.monotonic() - started)
    print(json.dumps(outcome), flush=True)
""")


class Storage:
    def __init__(self, key: str, elements: int, kind: str = "FloatStorage"):
        self.key, self.elements, self.kind = key, elements, kind


class Tensor:
    """Pickles as torch.save pickles a tensor, claiming any size, stride and offset over
    storage ``key`` of ``elements`` (floats, or another ``kind`` of torch storage)."""

    def __init__(self, key: str, elements: int, size: tuple, stride: tuple, offset: int = 0,
                 kind: str = "FloatStorage"):
        self.storage = Storage(key, elements, kind)
        self.size, self.stride, self.offset = size, stride, offset

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, self.size, self.stride, False,
                 collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    """Pickles as torch.save does: each Storage as a persistent id."""

    def persistent_id(self, value):
        if isinstance(value, Storage):
            return ("storage", getattr(torch, value.kind), value.key, "cpu", value.elements)
        return None


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def forged_archive(path: Path, obj, storages: dict[str, bytes], *,
                   compression: int = 0) -> Path:
    """A zip laid out as torch.save lays it out, with ``obj`` pickled as torch pickles
    (storages as persistent ids) and the ``storages`` given, whatever they hold."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("archive/data.pkl", pickled(obj))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def forged_checkpoint(root: Path, path: Path, tensors: dict | None = None,
                      storages: dict | None = None, options: dict | None = None,
                      **config) -> Path:
    """The checkpoint ``root``/model.pt forged (every tensor a Tensor, as torch.save lays
    it out), its stored model config changed by ``config``, and the entries of ``tensors``
    (a weight's name, or "counts" for the vocabulary's) put in: a Tensor, or a shape to
    claim on one element with strides of 0, or None to leave the weight out. ``storages``
    adds records, ``options`` go to forged_archive."""
    payload = torch.load(root / "model.pt", weights_only=True)
    payload["model_config"].update(config)
    storages = dict(storages or {})

    def stored(key: str, value: torch.Tensor, kind: str) -> Tensor:
        storages.setdefault(key, value.contiguous().numpy().tobytes())
        return Tensor(key, value.numel(), tuple(value.shape), tuple(value.contiguous().stride()),
                      kind=kind)

    weights = {name: stored(f"w{i}", value, "FloatStorage")
               for i, (name, value) in enumerate(payload["state_dict"].items())}
    counts = stored("counts", payload["vocab"]["counts"], "LongStorage")
    for name, tensor in (tensors or {}).items():
        kind = "LongStorage" if name == "counts" else "FloatStorage"
        if isinstance(tensor, tuple):  # a shape, on one element of zeros
            storages[f"zero {name}"] = bytes(4 if kind == "FloatStorage" else 8)
            tensor = Tensor(f"zero {name}", 1, tensor, (0,) * len(tensor), kind=kind)
        if name == "counts":
            counts = tensor
        elif tensor is None:
            del weights[name]
        else:
            weights[name] = tensor
    payload["state_dict"], payload["vocab"]["counts"] = weights, counts
    return forged_archive(path, payload, storages, **(options or {}))


def stride_zero_model(root: Path, path: Path, **config) -> Path:
    """The checkpoint ``root``/model.pt with a config changed by ``config`` and every weight
    it calls for claimed on one element (strides of 0): a small file claiming any size of
    model."""
    payload = torch.load(root / "model.pt", weights_only=True)
    stored, words = payload["model_config"], len(payload["vocab"]["counts"])
    shapes = ModelConfig(**{**stored, **config}).weight_shapes(words)
    tensors = {name: shapes.get(name)
               for name in {*shapes, *ModelConfig(**stored).weight_shapes(words)}}
    return forged_checkpoint(root, path, tensors, **config)


def _local_header(name: bytes, data_crc: int, size: int) -> bytes:
    """A zip record's local header (APPNOTE.TXT 4.3.7): stored, no extra field."""
    return struct.pack("<4sHHHHHLLLHH", b"PK\x03\x04", 20, 0, 0, 0, 0, data_crc, size, size,
                       len(name), 0) + name


def overlapping_zip(path: Path, records: int, payload: bytes,
                    wrap=lambda tensors: tensors) -> Path:
    """A zip that zipfile reads, holding ``wrap(tensors)`` pickled as torch pickles it:
    ``records`` uint8 tensors, each on a storage record of its own, whose headers lie one
    after another and whose data each run on to the end of ``payload``: every record
    shares its bytes with the next."""
    names = [f"archive/data/{k}".encode() for k in range(records)]
    sizes = [len(payload) + sum(30 + len(n) for n in names[k + 1:]) for k in range(records)]
    tensors = [Tensor(str(k), n, (n,), (1,), kind="ByteStorage") for k, n in enumerate(sizes)]
    tail, chain = payload, []  # built from the last record back: each one's data is the rest
    for name in reversed(names):
        chain.insert(0, (name, zlib.crc32(tail), len(tail)))
        tail = _local_header(*chain[0]) + tail
    out, central = bytearray(), []
    for name, data in ((b"archive/data.pkl", pickled(wrap(tensors))),
                       (b"archive/byteorder", b"little")):
        central.append((name, zlib.crc32(data), len(data), len(out)))
        out += _local_header(*central[-1][:3]) + data
    for name, crc, size in chain:
        central.append((name, crc, size, len(out)))
        out += _local_header(name, crc, size)
    out += payload
    directory = b"".join(struct.pack("<4sHHHHHHLLLHHHHHLL", b"PK\x01\x02", 20, 20, 0, 0, 0, 0,
                                     crc, size, size, len(name), 0, 0, 0, 0, 0, offset) + name
                         for name, crc, size, offset in central)
    end = struct.pack("<4sHHHHLLH", b"PK\x05\x06", 0, 0, len(central), len(central),
                      len(directory), len(out), 0)
    path.write_bytes(bytes(out) + directory + end)
    return path


def self_sharing(levels: int) -> list:
    """A list holding twice a list holding twice ... : small in memory and in a pickle,
    2**levels values to anything that walks it."""
    shared: list = []
    for _ in range(levels):
        shared = [shared, shared]
    return shared


def billion_laughs(levels: int = 9) -> str:
    """params.yaml whose model.cutoffs are ``levels`` lists, each of nine aliases of the
    one before: 9**levels items from a file of 2 KB."""
    lists = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lists += [f"&l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, levels)]
    return "model:\n  cutoffs: [" + ", ".join(lists) + "]\n"
