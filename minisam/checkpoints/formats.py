"""Reading and writing checkpoints without torch: ``.pth`` (torch zip), ``.safetensors`` and ``.npz``.

An official SAM checkpoint (``sam_vit_b_01ec64.pth``) is what ``torch.save(state_dict)``
writes: a zip archive holding ``<stem>/data.pkl`` (a pickle, protocol 2, of an
``OrderedDict`` of tensors) and one raw little-endian storage per tensor in
``<stem>/data/<N>``. The pickle names a handful of torch functions and classes; a plain
``pickle.load`` would import and *call* whatever the file names, which is how malicious
checkpoints run code. Here the unpickler resolves only the names a state dict needs, each
to a harmless stand-in written in this file, and builds arrays with ``np.frombuffer``
after checking offset, size and stride against the storage's byte count. Nothing from the
file is ever executed. See SECURITY.md.

Allowed globals (everything else -> :class:`CheckpointError` naming it):
``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``,
``torch._utils._rebuild_parameter`` and the ``torch.*Storage`` dtype classes.

``docs/numerics.md`` section 7 describes the format, section 8 the Hugging Face key layout
(see :mod:`minisam.checkpoints.hf_keys`).
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import zipfile
from typing import Dict, Tuple

import numpy as np

from minisam.errors import CheckpointError

# torch storage class -> numpy dtype. bfloat16 has no numpy dtype: it is read as uint16 and
# widened to float32 exactly (bf16 is the top half of an fp32).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"), "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
MAX_PICKLE_BYTES = 64 << 20      # data.pkl of vit_h is ~50 kB; anything huge is not a state dict
MAX_HEADER_BYTES = 100 << 20     # safetensors header limit, as the safetensors library uses
MAX_TENSOR_DIMS = 16


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A storage read from ``<prefix>/data/<key>``: a flat array and its type name."""

    def __init__(self, array: np.ndarray, type_name: str, key: str):
        self.array, self.type_name, self.key = array, type_name, key


def _bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    return (u16.astype(np.uint32) << 16).view(np.float32)  # [N] uint16 -> [N] float32


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, zf: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.path, self.zf, self.prefix = path, zf, prefix
        self.storages: Dict[str, _Storage] = {}

    def find_class(self, module, name):
        # Called for GLOBAL, STACK_GLOBAL and extension codes alike: the only gate to code.
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return self._rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"{self.path}: refusing pickle global {module}.{name} "
                              "(a state dict needs only OrderedDict, tensors and storages)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"{self.path}: storage {key!r} has type {stype!r:.60}, not a torch storage class")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.path}: malformed storage record {pid!r:.80}")
        if key in self.storages:
            return self.storages[key]
        member = f"{self.prefix}/data/{key}"
        try:
            info = self.zf.getinfo(member)
        except KeyError:
            raise CheckpointError(f"{self.path}: storage {key!r} is missing (no zip member {member!r})") from None
        nbytes = numel * stype.dtype.itemsize
        _check_member_size(self.path, info)
        if info.file_size < nbytes:
            raise CheckpointError(f"{self.path}: storage {key!r} holds {info.file_size} bytes, "
                                  f"but {numel} x {stype.name} needs {nbytes}")
        buf = bytearray(nbytes)
        try:
            with self.zf.open(info) as f:  # read exactly nbytes: a lying member cannot inflate memory
                got = f.readinto(buf)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: storage {key!r} cannot be read ({exc})") from None
        if got != nbytes:
            raise CheckpointError(f"{self.path}: storage {key!r} is truncated ({got} of {nbytes} bytes)")
        arr = np.frombuffer(buf, dtype=stype.dtype)  # [numel], little-endian
        storage = _Storage(arr, stype.name, key)
        self.storages[key] = storage
        return storage

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{self.path}: tensor built from {type(storage).__name__}, not a storage")
        return _view(self.path, storage, storage_offset, size, stride)

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None):
        if not isinstance(data, np.ndarray):
            raise CheckpointError(f"{self.path}: parameter wraps {type(data).__name__}, not a tensor")
        return data


def _view(path, storage: _Storage, offset, size, stride) -> np.ndarray:
    """The tensor ``storage[offset + sum(i_k * stride_k)]``, validated against the storage."""
    ints = lambda t: isinstance(t, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in t)
    if not (isinstance(offset, int) and ints(size) and ints(stride) and len(size) == len(stride)):
        raise CheckpointError(f"{path}: storage {storage.key!r}: malformed size/stride/offset "
                              f"{size!r:.60} {stride!r:.60} {offset!r:.20}")
    if len(size) > MAX_TENSOR_DIMS or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"{path}: storage {storage.key!r}: invalid shape {tuple(size)}, "
                              f"stride {tuple(stride)} or offset {offset}")
    n = storage.array.size
    if 0 in size:
        last = offset
    else:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if (0 not in size and last >= n) or offset > n:
        raise CheckpointError(f"{path}: tensor of shape {tuple(size)} (stride {tuple(stride)}, offset {offset}) "
                              f"runs past its storage {storage.key!r} of {n} elements")
    arr = storage.array
    item = arr.itemsize
    view = np.lib.stride_tricks.as_strided(arr[offset:] if 0 not in size else arr[:0],
                                           shape=tuple(size), strides=tuple(s * item for s in stride),
                                           writeable=False)
    out = np.ascontiguousarray(view) if not view.flags.c_contiguous or view.size != n else \
        arr[offset:offset + view.size].reshape(size)
    if storage.type_name == "BFloat16Storage":
        out = _bf16_to_f32(out.reshape(-1)).reshape(out.shape)  # [*] bf16 bits -> [*] float32
    return out


MAX_COMPRESSION_RATIO = 50  # float weights compress ~1.1x; zeros (a zip bomb) ~1000x


def _check_member_size(path: str, info: zipfile.ZipInfo) -> None:
    """Bound what reading a member can cost: stored members are their own size, compressed
    ones may not inflate beyond MAX_COMPRESSION_RATIO (torch itself writes stored members)."""
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise CheckpointError(f"{path}: zip member {info.filename!r} declares {info.file_size} bytes "
                                  f"but stores {info.compress_size}")
    elif info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1) + 4096:
        raise CheckpointError(f"{path}: zip member {info.filename!r} would inflate {info.compress_size} bytes "
                              f"to {info.file_size} (a zip bomb?)")


def _load_torch_zip(path: str, zf: zipfile.ZipFile) -> dict:
    names = zf.namelist()
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path}: zip archive has duplicate member names")
    for n in names:
        if n.startswith("/") or ".." in n.split("/"):
            raise CheckpointError(f"{path}: zip member {n!r} has an unsafe path")
    pkls = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkls) != 1:
        raise CheckpointError(f"{path}: expected one '<name>/data.pkl' record in the zip, found {len(pkls)}")
    prefix = pkls[0][: -len("/data.pkl")] if "/" in pkls[0] else ""
    order = f"{prefix}/byteorder" if prefix else "byteorder"
    if order in names:
        value = zf.read(order)[:16].decode("ascii", "replace").strip()
        if value != "little":
            raise CheckpointError(f"{path}: byte order is {value!r}; only little-endian checkpoints are supported")
    info = zf.getinfo(pkls[0])
    _check_member_size(path, info)
    if info.file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: {pkls[0]} is {info.file_size} bytes, too large for a state dict")
    try:
        with zf.open(info) as f:
            data = f.read(MAX_PICKLE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read {pkls[0]} ({exc})") from None
    unpickler = _StateDictUnpickler(io.BytesIO(data), path, zf, prefix)
    try:
        obj = unpickler.load()
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path}: pickle nests too deeply") from None
    except Exception as exc:  # any malformed pickle: UnpicklingError, EOFError, TypeError, IndexError, ...
        raise CheckpointError(f"{path}: malformed pickle in {pkls[0]} ({type(exc).__name__}: {exc})") from None
    return _as_state_dict(path, obj)


def _as_state_dict(path: str, obj) -> Dict[str, np.ndarray]:
    # Some training scripts wrap the weights: {"model": state_dict} or {"state_dict": ...}.
    if isinstance(obj, dict) and len(obj) == 1:
        (k, v), = obj.items()
        if k in ("model", "state_dict") and isinstance(v, dict):
            obj = v
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: the checkpoint holds a {type(obj).__name__}, not a state dict")
    out: Dict[str, np.ndarray] = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: state dict key {k!r:.60} is not a string")
        if not isinstance(v, np.ndarray):
            raise CheckpointError(f"{path}: state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v
    return out


_ST_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def _load_safetensors(path: str, f, file_size: int) -> Dict[str, np.ndarray]:
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{path}: truncated safetensors header")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES or n > file_size - 8:
        raise CheckpointError(f"{path}: safetensors header claims {n} bytes; the file has {file_size - 8}")
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    data_len = file_size - 8 - n
    spans = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(meta, dict) and isinstance(meta.get("dtype"), str)
                and isinstance(meta.get("shape"), list) and isinstance(meta.get("data_offsets"), list)
                and len(meta["data_offsets"]) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                        for v in meta["shape"] + meta["data_offsets"])):
            raise CheckpointError(f"{path}: safetensors entry {name!r} is malformed")
        if meta["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"{path}: safetensors entry {name!r} has unsupported dtype {meta['dtype']!r}")
        if len(meta["shape"]) > MAX_TENSOR_DIMS:
            raise CheckpointError(f"{path}: safetensors entry {name!r} has {len(meta['shape'])} dimensions")
        dt = np.dtype(_ST_DTYPES[meta["dtype"]])
        b, e = meta["data_offsets"]
        numel = int(np.prod(meta["shape"], dtype=object))
        if e < b or e > data_len or e - b != numel * dt.itemsize:
            raise CheckpointError(f"{path}: safetensors entry {name!r} has offsets [{b}, {e}) that do not fit "
                                  f"its shape {meta['shape']} x {meta['dtype']} in {data_len} data bytes")
        spans.append((b, e, name, dt, meta))
    spans.sort()
    for (b0, e0, n0, *_), (b1, e1, n1, *_) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"{path}: safetensors entries {n0!r} and {n1!r} overlap")
    data = bytearray(data_len)
    if f.readinto(data) != data_len:
        raise CheckpointError(f"{path}: truncated safetensors data")
    out = {}
    for b, e, name, dt, meta in spans:
        arr = np.frombuffer(data, dtype=dt, count=(e - b) // dt.itemsize, offset=b).reshape(meta["shape"])
        out[name] = _bf16_to_f32(arr.reshape(-1)).reshape(arr.shape) if meta["dtype"] == "BF16" else arr
    return out


def _load_npz(path: str, f) -> Dict[str, np.ndarray]:
    with zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            _check_member_size(path, info)
            with zf.open(info) as member:  # the .npy header must fit the member's size
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: {info.filename} holds Python objects, refused")
                need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if need > info.file_size:
                    raise CheckpointError(f"{path}: {info.filename} declares shape {shape} ({need} bytes) "
                                          f"in a {info.file_size}-byte member")
    f.seek(0)
    try:
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # ValueError for object arrays, BadZipFile, ...
        raise CheckpointError(f"{path}: cannot read .npz ({type(exc).__name__}: {exc})") from None


def load_state_dict(path) -> Dict[str, np.ndarray]:
    """Read a checkpoint into ``{key: np.ndarray}`` without torch.

    Accepts the official ``.pth`` files (torch zip format), ``.safetensors`` and ``.npz``,
    recognised by their content. Keys are returned as stored (official or Hugging Face
    names; :func:`minisam.build_sam.build_sam` maps HF names). Every failure is a
    :class:`CheckpointError` naming the file and the problem.
    """
    try:
        return _load_state_dict(path)
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(f"{os.fspath(path)}: not enough memory for what the file declares") from None
    except RecursionError:
        raise CheckpointError(f"{os.fspath(path)}: structure nests too deeply") from None
    except Exception as exc:  # a damaged file can trip zipfile/numpy in many ways; all mean "unreadable"
        raise CheckpointError(f"{os.fspath(path)}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None


def _load_state_dict(path) -> Dict[str, np.ndarray]:
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with f:
        magic = f.read(8)
        f.seek(0)
        if size == 0:
            raise CheckpointError(f"{path}: the file is empty")
        if magic[:4] == b"PK\x03\x04" or magic[:4] == b"PK\x05\x06":
            try:
                zf = zipfile.ZipFile(f)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise CheckpointError(f"{path}: damaged or truncated zip archive ({exc})") from None
            with zf:
                names = zf.namelist()
                if any(n.endswith("data.pkl") for n in names):
                    return _load_torch_zip(path, zf)
                if names and all(n.endswith(".npy") for n in names):
                    f.seek(0)
                    return _load_npz(path, f)
                raise CheckpointError(f"{path}: a zip archive that is neither a torch checkpoint nor an .npz")
        if len(magic) == 8 and f.read(9)[8:9] == b"{":  # u64 header length, then the JSON header
            f.seek(0)
            return _load_safetensors(path, f, size)
        if magic[:2] == b"\x80\x02":
            raise CheckpointError(f"{path}: legacy (pre-1.6) torch format; re-save it with a current torch.save")
        raise CheckpointError(f"{path}: not a checkpoint (expected a torch .pth zip, .safetensors or .npz)")


def save_npz(path, state_dict: Dict[str, np.ndarray]) -> None:
    """Write a flat state dict as ``.npz`` (readable by :func:`load_state_dict`)."""
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a path without it
        np.savez(f, **state_dict)


def save_safetensors(path, state_dict: Dict[str, np.ndarray], metadata: Dict[str, str] = None) -> None:
    """Write a flat state dict in the safetensors format (JSON header + raw little-endian bytes)."""
    inv = {np.dtype(v): k for k, v in _ST_DTYPES.items() if k != "BF16"}
    header, offset, blobs = {}, 0, []
    for name, arr in state_dict.items():
        arr = np.ascontiguousarray(arr)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dt not in inv:
            raise CheckpointError(f"{path}: cannot store {name!r} of dtype {arr.dtype} in safetensors")
        blob = arr.astype(dt, copy=False).tobytes()
        header[name] = {"dtype": inv[dt], "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


# --------------------------------------------------------------------------- writing .pth without torch

# numpy dtype -> the torch storage class torch.save names for it
_DTYPE_STORAGES = {v: k for k, v in _STORAGE_DTYPES.items() if k != "BFloat16Storage"}


def _pickle_state_dict(entries) -> bytes:
    """The ``data.pkl`` that ``torch.save(state_dict)`` writes (protocol 2), opcode by opcode:
    ``OrderedDict`` of ``torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
    OrderedDict())``, each storage a persistent id ``('storage', torch.<T>Storage, key, 'cpu',
    numel)``. Written by hand because ``pickle`` would need the torch objects to name them.
    ``entries``: (name, storage class name, storage key, shape, numel) in order."""
    out = io.BytesIO()
    w = out.write

    def text(s: str) -> None:  # BINUNICODE
        b = s.encode("utf-8")
        w(pickle.BINUNICODE + len(b).to_bytes(4, "little") + b)

    def integer(n: int) -> None:
        if 0 <= n < 256:
            w(pickle.BININT1 + bytes([n]))
        elif -2**31 <= n < 2**31:
            w(pickle.BININT + int(n).to_bytes(4, "little", signed=True))
        else:
            b = int(n).to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            w(pickle.LONG1 + bytes([len(b)]) + b)

    def ints(values) -> None:  # a tuple of ints
        w(pickle.MARK)
        for v in values:
            integer(v)
        w(pickle.TUPLE)

    def empty_ordered_dict() -> None:
        w(pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.EMPTY_TUPLE + pickle.REDUCE)

    w(pickle.PROTO + b"\x02")
    empty_ordered_dict()
    w(pickle.MARK)
    for name, storage, key, shape, numel in entries:
        text(name)
        w(pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n")
        w(pickle.MARK)
        w(pickle.MARK)
        text("storage")
        w(pickle.GLOBAL + f"torch\n{storage}\n".encode())
        text(key)
        text("cpu")
        integer(numel)
        w(pickle.TUPLE + pickle.BINPERSID)
        integer(0)                                                  # storage offset
        ints(shape)                                                 # size
        strides, step = [], 1
        for d in reversed(shape):
            strides.append(step)
            step *= max(int(d), 1)
        ints(reversed(strides))                                     # C-contiguous stride
        w(pickle.NEWFALSE)                                          # requires_grad
        empty_ordered_dict()                                        # backward hooks
        w(pickle.TUPLE + pickle.REDUCE)
    w(pickle.SETITEMS + pickle.STOP)
    return out.getvalue()


def save_pth(path, state_dict: Dict[str, np.ndarray]) -> None:
    """Write a flat state dict as ``torch.save`` does (zip format, ``archive/`` prefix, every
    record stored uncompressed, storage data 64-byte aligned), without torch: the file loads
    with ``torch.load(path, weights_only=True)`` and ``segment_anything.build_sam``."""
    entries, blobs = [], []
    for i, (name, arr) in enumerate(state_dict.items()):
        a = np.asarray(arr)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dt not in _DTYPE_STORAGES:
            raise CheckpointError(f"{path}: cannot store {name!r} of dtype {a.dtype} in a .pth")
        entries.append((name, _DTYPE_STORAGES[dt], str(i), tuple(int(d) for d in a.shape), int(a.size)))
        blobs.append(np.ascontiguousarray(a, dtype=dt).tobytes())
    records = [("archive/data.pkl", _pickle_state_dict(entries)), ("archive/byteorder", b"little")]
    records += [(f"archive/data/{i}", blob) for i, blob in enumerate(blobs)]
    records += [("archive/version", b"3\n"), ("archive/.data/serialization_id", os.urandom(20).hex().encode())]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            # torch aligns record data at 64 bytes (for mmap) with a padding extra field
            header = 30 + len(name.encode())
            pad = -(zf.fp.tell() + header + 4) % 64
            info.extra = b"FB" + pad.to_bytes(2, "little") + b"Z" * pad
            zf.writestr(info, data)


_WRITERS = {".pth": save_pth, ".pt": save_pth, ".safetensors": save_safetensors, ".npz": save_npz}


def save_checkpoint(sam_or_state_dict, path, force: bool = False) -> str:
    """Write a model (a :class:`minisam.modeling.sam.Sam`, or a flat state dict) to ``path``:
    the official ``.pth`` format (``.pth``/``.pt``), ``.safetensors`` or ``.npz``, chosen by the
    suffix. The file is written next to its destination and renamed into place, so a failed
    write leaves nothing under ``path``; an existing file is kept unless ``force=True``.
    Returns the path written."""
    from minisam.checkpoints.param_tree import flatten
    name = os.fspath(path)
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in _WRITERS:
        raise CheckpointError(f"{name}: unknown checkpoint suffix {suffix!r}; use one of {sorted(_WRITERS)}")
    if os.path.isdir(name):
        raise CheckpointError(f"{name}: is a folder")
    if os.path.exists(name) and not force:
        raise CheckpointError(f"{name}: exists; pass force=True to overwrite it")
    params = getattr(sam_or_state_dict, "params", sam_or_state_dict)
    flat = flatten(params) if any(isinstance(v, (dict, list)) for v in params.values()) else dict(params)
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(folder):
        raise CheckpointError(f"{name}: folder {folder} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(name)}.{os.getpid()}.part")
    try:
        _WRITERS[suffix](tmp, flat)
        os.replace(tmp, name)
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot write ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return name
