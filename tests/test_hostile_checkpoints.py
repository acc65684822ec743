"""A corpus of hostile and broken checkpoints, built here. Each must be refused with
CheckpointError naming the problem, never run anything (a marker file proves it), and stay
within bounded memory (the loads run in a subprocess under an address-space limit).
Plus a fuzz test: byte mutations of a valid checkpoint load correctly or fail cleanly.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from minisam import CheckpointError, load_state_dict

P = b"archive"


def _pickle_ops(*parts: bytes) -> bytes:
    """A protocol-2 pickle from raw opcodes."""
    return b"\x80\x02" + b"".join(parts) + b"."


def _str(s: str) -> bytes:  # SHORT_BINUNICODE-free BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _zip(path, members, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _ok_torch_members():
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buf)
    zf = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    return {n: zf.read(n) for n in zf.namelist()}, buf.getvalue()


def _corpus(tmp, marker):
    """{name: (path, expected message fragment)}."""
    cmd = f"touch {marker}"
    members, valid = _ok_torch_members()
    prefix = next(iter(members)).split("/")[0]
    pkl = members[f"{prefix}/data.pkl"]
    out = {}

    def torch_zip(name, data_pkl, *rest):
        extra, msg = rest if len(rest) == 2 else ((), rest[0])
        path = tmp / f"{name}.pth"
        _zip(path, [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/byteorder", b"little"), *extra])
        out[name] = (path, msg)

    g = lambda mod, name: b"c" + mod.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL
    torch_zip("global_reduce_os_system", _pickle_ops(g("os", "system"), _str(cmd), b"\x85R"), "os.system")
    torch_zip("global_reduce_eval", _pickle_ops(g("builtins", "eval"), _str(f"__import__('os').system({cmd!r})"), b"\x85R"), "builtins.eval")
    torch_zip("global_reduce_exec", _pickle_ops(g("builtins", "exec"), _str(f"import os; os.system({cmd!r})"), b"\x85R"), "builtins.exec")
    torch_zip("subprocess", _pickle_ops(g("subprocess", "check_call"), b"(" + _str("touch") + _str(str(marker)) + b"l\x85R"), "subprocess.check_call")
    torch_zip("getattr_chain", _pickle_ops(g("builtins", "getattr"), g("collections", "OrderedDict"), _str("__init__"), b"\x86R"), "builtins.getattr")
    torch_zip("inst", _pickle_ops(b"(" + _str(cmd) + b"ios\nsystem\n"), "os.system")
    torch_zip("obj", _pickle_ops(b"(" + g("os", "system") + _str(cmd) + b"o"), "os.system")
    torch_zip("newobj", _pickle_ops(g("os", "_wrap_close") + b")\x81"), "os._wrap_close")
    torch_zip("build_setstate", _pickle_ops(g("collections", "OrderedDict") + b")R" + b"}" + _str("__setstate__")
                                            + g("os", "system") + b"sb"), "os.system")
    # STACK_GLOBAL (protocol 4), as pickle.dumps writes globals today
    torch_zip("stack_global", b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94" + _str(cmd) + b"\x85R.", "os.system")
    torch_zip("torch_other_function", _pickle_ops(g("torch", "load"), _str("x"), b"\x85R"), "torch.load")
    # persistent ids pointing at missing or foreign records
    torch_zip("pid_missing_storage", pkl, (), "missing")
    torch_zip("pid_foreign", _pickle_ops(b"(" + _str("module") + _str("os") + b"tQ"), "persistent id")
    torch_zip("pid_traversal", pkl.replace(b"X\x01\x00\x00\x000", b"X\x01\x00\x00\x00/"), (), "missing")
    # tensors that do not fit their storage
    data0 = members[f"{prefix}/data/0"]
    torch_zip("size_past_storage", pkl.replace(b"K\x04\x85", b"M\x90\x01\x85"), [(f"{prefix}/data/0", data0)], "runs past")
    torch_zip("stride_past_storage", pkl.replace(b"K\x01\x85", b"K\x09\x85"), [(f"{prefix}/data/0", data0)], "runs past")
    torch_zip("negative_size", pkl.replace(b"K\x04\x85", b"J\xfc\xff\xff\xff\x85"), [(f"{prefix}/data/0", data0)], "invalid shape")
    torch_zip("huge_numel", pkl.replace(b"K\x04t", b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40t"), [(f"{prefix}/data/0", data0)], "needs")
    torch_zip("huge_size", pkl.replace(b"K\x04\x85", b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40\x85"), [(f"{prefix}/data/0", data0)], "runs past")
    # zip-level attacks
    out["dotdot_name"] = (_zip(tmp / "dotdot.pth", [(f"{prefix}/data.pkl", pkl), (f"../{prefix}/data/0", data0)]), "unsafe path")
    with pytest.warns(UserWarning):
        out["duplicate_name"] = (_zip(tmp / "dup.pth", [(f"{prefix}/data.pkl", pkl), (f"{prefix}/data/0", data0),
                                                         (f"{prefix}/data/0", data0)]), "duplicate")
    out["zip_bomb"] = (_zip(tmp / "bomb.pth", [(f"{prefix}/data.pkl", pkl.replace(b"K\x04t", b"J\x00\x00\x00\x10t")),
                                               (f"{prefix}/data/0", b"\0" * (300 << 20))], zipfile.ZIP_DEFLATED), "zip bomb")
    (tmp / "truncated.pth").write_bytes(valid[: len(valid) // 3])
    out["truncated_zip"] = (tmp / "truncated.pth", "")
    (tmp / "empty.pth").write_bytes(b"")
    out["empty"] = (tmp / "empty.pth", "empty")
    (tmp / "text.pth").write_text("this is not a checkpoint\n")
    out["text"] = (tmp / "text.pth", "not a checkpoint")
    (tmp / "raw_pickle.pth").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    out["legacy_pickle"] = (tmp / "raw_pickle.pth", "legacy")
    # safetensors
    def st_file(name, header, data=b"", raw=None, msg=""):
        h = raw if raw is not None else json.dumps(header).encode()
        (tmp / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + data)
        out[name] = (tmp / f"{name}.safetensors", msg)
    st_file("st_oversized_header", None, raw=b"{" + b" " * 64, msg="")
    (tmp / "st_lying.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    out["st_lying_header"] = (tmp / "st_lying.safetensors", "header claims")
    st_file("st_not_json", None, raw=b"{nope", msg="JSON")
    st_file("st_overlap", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, msg="overlap")
    st_file("st_out_of_range", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, msg="offsets")
    st_file("st_huge_shape", {"a": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 8]}}, b"\0" * 8, msg="offsets")
    st_file("st_unknown_dtype", {"a": {"dtype": "Q8", "shape": [1], "data_offsets": [0, 1]}}, b"\0", msg="dtype")
    st_file("st_negative", {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, msg="malformed")
    # npz
    npz = io.BytesIO()
    np.savez(npz, a=np.zeros(3, np.float32))
    zf = zipfile.ZipFile(io.BytesIO(npz.getvalue()))
    hdr = zf.read("a.npy").replace(b"(3,)", b"(999999999999,)")
    out["npz_lying_shape"] = (_zip(tmp / "lie.npz", [("a.npy", hdr)]), "declares shape")
    obj = io.BytesIO()
    np.save(obj, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    out["npz_object_array"] = (_zip(tmp / "obj.npz", [("a.npy", obj.getvalue())]), "objects")
    return out


LOADER = textwrap.dedent("""
    import json, resource, sys
    limit = 1 << 30  # 1 GiB of address space on top of what the interpreter already maps
    import numpy  # noqa: map numpy's own pages before the limit
    from minisam import load_state_dict, CheckpointError
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    import psutil
    resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms + limit, hard))
    results = {}
    for name, path in json.loads(sys.argv[1]).items():
        try:
            load_state_dict(path)
            results[name] = ["loaded", ""]
        except CheckpointError as exc:
            results[name] = ["CheckpointError", str(exc)]
        except BaseException as exc:
            results[name] = [type(exc).__name__, str(exc)]
    print(json.dumps(results))
""")


def test_hostile_corpus_refused_without_running_anything(tmp_path):
    marker = tmp_path / "PWNED"
    corpus = _corpus(tmp_path, marker)
    res = subprocess.run([sys.executable, "-c", LOADER, json.dumps({k: str(p) for k, (p, _) in corpus.items()})],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout.strip().splitlines()[-1])
    print()
    for name, (path, fragment) in corpus.items():
        kind, msg = results[name]
        print(f"  {name:<26s} {kind:<16s} {msg[:110]}")
        assert kind == "CheckpointError", (name, kind, msg)
        assert str(path) in msg, (name, msg)
        assert fragment in msg, (name, fragment, msg)
    assert not marker.exists(), "a payload ran"


@pytest.fixture(scope="module")
def valid_bytes():
    buf = io.BytesIO()
    g = torch.Generator().manual_seed(0)
    torch.save({"a.weight": torch.randn(3, 4, generator=g), "a.bias": torch.randn(3, generator=g),
                "b": torch.randn(2, 2, generator=g).t()}, buf)
    return buf.getvalue()


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_checkpoints_load_or_fail_cleanly(valid_bytes, data, tmp_path_factory):
    """Every byte-level mutation either loads (a dict of arrays) or raises CheckpointError."""
    b = bytearray(valid_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        i = data.draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del b[i:]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del b[i:i + data.draw(st.integers(1, 16))]
        if not b:
            break
    path = tmp_path_factory.mktemp("fuzz") / "m.pth"
    path.write_bytes(bytes(b))
    try:
        sd = load_state_dict(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(sd, dict) and all(isinstance(v, np.ndarray) for v in sd.values())
