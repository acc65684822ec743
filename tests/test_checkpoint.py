"""Torch-free checkpoint loading: official zip .pth, safetensors, npz, HF layout, refusals."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

from minisam import CheckpointError, load_state_dict
from minisam.checkpoints.formats import save_npz, save_safetensors
from minisam.config import VIT_H, VIT_L, expected_shapes
from minisam.checkpoints.hf_keys import official_to_hf

from conftest import TINY_CONFIGS, official_model

BLOCK_TORCH = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name.startswith("segment_anything"):
                raise ImportError("torch is blocked in this process")
    sys.meta_path.insert(0, _NoTorch())
""")


def _digest(a: np.ndarray) -> str:
    return f"{a.dtype.str}|{a.shape}|" + hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_vit_b_loads_without_torch(vit_b_checkpoint, tmp_path):
    """314 arrays, bit-identical to the torch tensors, in a process where `import torch` fails."""
    cfg, path = vit_b_checkpoint
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import json, hashlib, numpy as np
        try:
            import torch
            raise SystemExit("torch was importable")
        except ImportError:
            pass
        from minisam import load_state_dict, build_sam
        sd = load_state_dict({path!r})
        out = {{k: f"{{v.dtype.str}}|{{v.shape}}|" + hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
               for k, v in sd.items()}}
        sam = build_sam({path!r})
        print(json.dumps({{"digests": out, "depth": sam.config.encoder_depth, "torch": "torch" in __import__("sys").modules}}))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert len(got["digests"]) == len(ref) == 314
    assert got["torch"] is False and got["depth"] == 12
    for k, t in ref.items():
        assert got["digests"][k] == _digest(t.numpy()), k


def _random_state_dict(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in expected_shapes(cfg).items()}


@pytest.mark.vit_b
@pytest.mark.parametrize("cfg,name", [(VIT_L, "vit_l"), (VIT_H, "vit_h")])
def test_large_state_dicts_bit_identical(cfg, name, tmp_path):
    """vit_l/vit_h-shaped state dicts (482/594 tensors) written by torch.save load bit-identically."""
    from minisam.build_sam import build_sam
    sd = _random_state_dict(cfg, 7)
    path = tmp_path / f"{name}.pth"
    torch.save(sd, path)
    got = load_state_dict(path)
    assert list(got) == list(sd) and len(got) == {"vit_l": 482, "vit_h": 594}[name]
    for k, t in sd.items():
        assert got[k].dtype == np.float32 and got[k].shape == tuple(t.shape)
        assert np.array_equal(got[k].view(np.uint32), t.numpy().view(np.uint32)), k
    sam = build_sam(got)
    assert sam.config == cfg
    del sd, got, sam
    os.remove(path)


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_tiny_pth_safetensors_npz_and_hf_layout(name, tiny_checkpoints, tmp_path):
    cfg, path = tiny_checkpoints[name]
    ref = {k: v.detach().cpu().numpy() for k, v in official_model(cfg, list(TINY_CONFIGS).index(name)).state_dict().items()}
    got = load_state_dict(path)
    assert got.keys() == ref.keys()
    for k in ref:
        assert np.array_equal(got[k], ref[k]) and got[k].dtype == ref[k].dtype, k
    # the same tensors as safetensors (official names), npz, and HF-layout safetensors
    save_safetensors(tmp_path / "a.safetensors", ref)
    save_npz(tmp_path / "a.npz", ref)
    hf = {official_to_hf(k): v for k, v in ref.items()}
    hf["shared_image_embedding.positional_embedding"] = hf["prompt_encoder.shared_embedding.positional_embedding"]
    save_safetensors(tmp_path / "hf.safetensors", hf)
    from minisam.build_sam import build_sam
    for f in ("a.safetensors", "a.npz", "hf.safetensors"):
        sd = load_state_dict(tmp_path / f)
        if f == "hf.safetensors":
            assert any(k.startswith("vision_encoder.layers.") for k in sd)
        sam = build_sam(tmp_path / f, config={"decoder_num_heads": cfg.decoder_num_heads})
        assert sam.config == cfg, f
        from minisam.checkpoints.param_tree import flatten
        flat = flatten(sam.params)
        assert flat.keys() == ref.keys()
        for k in ref:
            assert np.array_equal(flat[k], ref[k]), (f, k)


def test_safetensors_file_from_the_safetensors_library(tmp_path):
    """Our reader agrees with files written by the reference safetensors library, when installed."""
    st = pytest.importorskip("safetensors.numpy")
    sd = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64),
          "c": np.ones((0, 4), np.float16)}
    st.save_file(sd, str(tmp_path / "x.safetensors"))
    got = load_state_dict(tmp_path / "x.safetensors")
    for k in sd:
        assert got[k].dtype == sd[k].dtype and np.array_equal(got[k], sd[k])


def test_non_contiguous_shared_and_bf16_tensors(tmp_path):
    sd = {"t": torch.arange(12.).reshape(3, 4).t(), "slice": torch.arange(10.)[2:7],
          "bf16": torch.randn(5, 3).bfloat16(), "half": torch.randn(4).half(), "empty": torch.zeros(0, 3)}
    torch.save(sd, tmp_path / "x.pth")
    got = load_state_dict(tmp_path / "x.pth")
    for k, t in sd.items():
        want = t.float().numpy() if k == "bf16" else t.numpy()
        assert got[k].shape == want.shape and np.array_equal(got[k], want), k
    assert got["bf16"].dtype == np.float32 and got["half"].dtype == np.float16


# --- refusals -------------------------------------------------------------------------------

class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _torch_zip(path, pkl_bytes, extra=None, prefix="archive"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl_bytes)
        zf.writestr(f"{prefix}/byteorder", "little")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("func", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
def test_malicious_pickle_is_refused_and_never_runs(func, tmp_path):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    import builtins, subprocess as sp  # noqa: E401
    target = {"os.system": os.system, "builtins.eval": builtins.eval, "builtins.exec": builtins.exec,
              "subprocess.call": sp.call}[func]
    arg = cmd if func in ("os.system",) else (["touch", str(marker)] if func == "subprocess.call"
                                              else f"__import__('os').system({cmd!r})")
    payload = pickle.dumps({"x": _Payload(target, arg)}, protocol=2)
    path = _torch_zip(tmp_path / "evil.pth", payload)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(path)
    assert "refusing pickle global" in str(err.value) and str(path) in str(err.value)
    assert func.split(".")[-1] in str(err.value) or "posix" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"hello, this is a text file\n", "not a checkpoint"),
    (b"PK\x03\x04" + b"\0" * 30, "zip"),
])
def test_non_checkpoints(content, message, tmp_path):
    p = tmp_path / "f.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict(p)


def test_truncated_and_missing(tiny_checkpoints, tmp_path):
    _, path = tiny_checkpoints["pad_window"]
    data = open(path, "rb").read()
    for cut in (len(data) // 2, len(data) - 100, 64):
        p = tmp_path / f"cut{cut}.pth"
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as err:
            load_state_dict(p)
        assert str(p) in str(err.value)
    with pytest.raises(CheckpointError, match="cannot open"):
        load_state_dict(tmp_path / "does_not_exist.pth")


def test_missing_storage_bad_shape_big_endian(tmp_path):
    torch.save({"w": torch.ones(4)}, tmp_path / "ok.pth")
    zf = zipfile.ZipFile(tmp_path / "ok.pth")
    names = zf.namelist()
    pkl = zf.read([n for n in names if n.endswith("data.pkl")][0])
    prefix = names[0].split("/")[0]
    # missing storage member
    _torch_zip(tmp_path / "nostorage.pth", pkl, prefix=prefix)
    with pytest.raises(CheckpointError, match="missing"):
        load_state_dict(tmp_path / "nostorage.pth")
    # storage too small for the declared numel
    _torch_zip(tmp_path / "short.pth", pkl, {f"{prefix}/data/0": b"\0" * 8}, prefix=prefix)
    with pytest.raises(CheckpointError, match="needs"):
        load_state_dict(tmp_path / "short.pth")
    # big-endian byte order
    with zipfile.ZipFile(tmp_path / "be.pth", "w") as out:
        for n in names:
            out.writestr(n, b"big" if n.endswith("byteorder") else zf.read(n))
    with pytest.raises(CheckpointError, match="byte order"):
        load_state_dict(tmp_path / "be.pth")
    # a shape beyond the storage: rewrite size (4,) -> (400,) in the pickle
    bad = pkl.replace(b"K\x04\x85", b"M\x90\x01\x85")
    assert bad != pkl
    _torch_zip(tmp_path / "big.pth", bad, {f"{prefix}/data/0": zf.read(f"{prefix}/data/0")}, prefix=prefix)
    with pytest.raises(CheckpointError, match="runs past its storage"):
        load_state_dict(tmp_path / "big.pth")


def test_bad_dtype_storage_is_refused(tmp_path):
    torch.save({"w": torch.ones(4)}, tmp_path / "ok.pth")
    zf = zipfile.ZipFile(tmp_path / "ok.pth")
    names = zf.namelist()
    prefix = names[0].split("/")[0]
    pkl = zf.read(f"{prefix}/data.pkl").replace(b"FloatStorage", b"ComplexStorg")
    _torch_zip(tmp_path / "dt.pth", pkl, {f"{prefix}/data/0": zf.read(f"{prefix}/data/0")}, prefix=prefix)
    with pytest.raises(CheckpointError, match="refusing pickle global torch.ComplexStorg"):
        load_state_dict(tmp_path / "dt.pth")


def test_safetensors_refusals(tmp_path):
    def write(header, data=b""):
        raw = json.dumps(header).encode()
        p = tmp_path / "x.safetensors"
        p.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
        return p
    with pytest.raises(CheckpointError, match="dtype"):
        load_state_dict(write({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8))
    with pytest.raises(CheckpointError, match="offsets"):
        load_state_dict(write({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8))
    with pytest.raises(CheckpointError, match="overlap"):
        load_state_dict(write({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12))
    p = tmp_path / "lie.safetensors"
    p.write_bytes((10 ** 12).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError):
        load_state_dict(p)


# ----------------------------------------------------------------------------- writing checkpoints

def _tiny_sam(seed=0):
    from minisam.checkpoints.param_tree import nest
    from minisam.modeling.sam import Sam
    cfg = TINY_CONFIGS["pad_window"]
    sd = {k: v.detach().numpy() for k, v in official_model(cfg, seed).state_dict().items()}
    return Sam(cfg, nest(sd)), sd


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz"])
def test_save_checkpoint_round_trips_bit_for_bit(tmp_path, suffix):
    """save_checkpoint writes every tensor bit-identical, in the state dict's order; a .pth loads
    in torch.load(weights_only=True) as torch.save's own file would."""
    from minisam import save_checkpoint
    sam, sd = _tiny_sam()
    path = save_checkpoint(sam, tmp_path / f"model{suffix}")
    back = load_state_dict(path)
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v), k
    if suffix == ".pth":
        theirs = torch.load(path, weights_only=True)
        assert list(theirs) == list(sd)
        for k, v in sd.items():
            assert np.array_equal(theirs[k].numpy(), v), k
    assert os.listdir(tmp_path) == [f"model{suffix}"]   # no temporary file left behind


def test_save_checkpoint_refuses_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    from minisam import save_checkpoint
    from minisam.checkpoints import formats
    sam, _ = _tiny_sam()
    existing = tmp_path / "model.pth"
    existing.write_bytes(b"keep me")
    with pytest.raises(CheckpointError, match="exists"):
        save_checkpoint(sam, existing)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(sam, tmp_path / "no" / "such" / "model.pth")
    with pytest.raises(CheckpointError, match="suffix"):
        save_checkpoint(sam, tmp_path / "model.bin")

    def disk_full(path, state_dict):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setitem(formats._WRITERS, ".pth", disk_full)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(sam, existing, force=True)
    assert existing.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["model.pth"]
    monkeypatch.undo()
    save_checkpoint(sam, existing, force=True)
    assert load_state_dict(existing).keys() == sam_keys(sam)


def sam_keys(sam):
    from minisam.checkpoints.param_tree import flatten
    return flatten(sam.params).keys()


@pytest.mark.vit_b
def test_saved_vit_b_loads_in_the_official_build_sam(tmp_path):
    """A vit_b written by minisam (no torch involved) is what segment_anything.build_sam_vit_b
    loads, strict, with bit-identical tensors and the same decoder outputs."""
    from segment_anything import build_sam_vit_b

    from minisam import build_sam, save_checkpoint
    from minisam.config import VIT_B
    model = official_model(VIT_B, 3)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    path = save_checkpoint(sd, tmp_path / "sam_vit_b_minisam.pth")
    theirs = build_sam_vit_b(checkpoint=path)
    for k, v in theirs.state_dict().items():
        assert np.array_equal(v.numpy(), sd[k]), k
    assert build_sam(path).config == VIT_B
    emb = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32))
    pts = (torch.tensor([[[300.0, 400.0]]]), torch.tensor([[1]]))
    with torch.no_grad():
        outs = []
        for m in (model, theirs):
            sp, de = m.prompt_encoder(points=pts, boxes=None, masks=None)
            outs.append(m.mask_decoder(emb, m.prompt_encoder.get_dense_pe(), sp, de, True))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
