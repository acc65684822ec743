"""``minisam train-micro --engine numpy`` against the torch engine, its witness.

Both engines run :func:`minisam.training.micro.train` from the same initial weights (the torch
engine's own: ``torch.manual_seed(seed)`` then the official modules' init, handed to the NumPy
engine as ``init``) with the same seed, so the same scenes, targets, first prompts and clicks as
long as their predictions agree, and the history of each run (the loss of every step, the
validation IoUs of the last) is compared. The torch engine runs in float64 by giving ``train``
a float64 model (``build_official`` wrapped; the prompt encoder's float32 coordinates promoted
before the Fourier features, as in ``tests/test_decoder_training.py``).

The torch witness in float64 also computes its loss in float64
(``minisam.reference.official.float64_torch_engine``): as the engine calls it, torch's loss takes
float32 targets, which make its binary cross-entropy float32, and divides the IoU target in
float32; both limit that witness to ~1e-7.

Bounds (stated before measuring, never loosened to pass):
- float64: the loss of every step within 1e-4 relative; in the short run also every parameter's
  gradient (after clipping) at every step, and every weight after the last step, within 1e-9
  relative to max|ref| (the bound of the gradient parity tests; both sides compute the same
  sums in another order, ~1e-16 per operation);
- float32: the loss of every step within 2 % relative over the first 100 steps (float32
  rounding can flip a pixel of a thresholded prediction near 0, which moves a click, and each
  flip changes that step's prompts).
The measured worst values are printed. The 100-step runs are ``slow``; a 3-step version is not.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import minisam.reference.official as official_module
from minisam.checkpoints.formats import load_state_dict
from minisam.checkpoints.param_tree import flatten
from minisam.config import MICRO, make_config
from minisam.errors import MinisamError
from minisam.training import micro_numpy
from minisam.training.micro import train

from official import rel_err

REPO = Path(__file__).resolve().parents[1]
GRAD_RTOL = {"float64": 1e-9, "float32": 1e-4}
SMALL = MICRO.replace(encoder_depth=2, encoder_global_attn_indexes=(1,))  # micro's widths, 2 blocks


def _torch_init(cfg, seed):
    """The torch engine's initial weights: its seed, then the official modules' own init."""
    torch.manual_seed(seed)
    return {k: v.numpy().copy() for k, v in official_module.build_official(cfg).state_dict().items()}


def run_both(tmp_path, monkeypatch, dtype, cfg, grad_steps=0, **recipe):
    """Both engines from the torch engine's init; with ``grad_steps``, also each side's gradients
    (after clipping) of the first ``grad_steps`` steps, {step: {name: array}}."""
    # no stage and no second schedule unless given: these compare the main schedule
    kw = dict(seed=0, threads=1, progress=False, log=lambda *a: None, config=cfg,
              **{"iou_head_scenes": 0, "extra_round_steps": 0, **recipe})
    init = _torch_init(cfg, kw["seed"])
    ref_grads, our_grads = {}, {}

    def grab(step, model):  # on_step runs after opt.step(); .grad still holds the clipped gradients
        if step <= grad_steps:
            ref_grads[step] = {k: p.grad.numpy().copy() for k, p in model.named_parameters() if p.grad is not None}

    step_fn = micro_numpy.train_step

    def train_step(*args, **kwargs):
        out = step_fn(*args, **kwargs)
        if len(our_grads) < grad_steps:
            our_grads[len(our_grads) + 1] = {k: v.copy() for k, v in flatten(out["grads"]).items()}
        return out

    with official_module.float64_torch_engine() if dtype == "float64" else contextlib.nullcontext():
        ref = train(out_dir=str(tmp_path / "torch"), on_step=grab, **kw)
    with monkeypatch.context() as m:
        m.setattr(micro_numpy, "train_step", train_step)
        ours = micro_numpy.train(out_dir=str(tmp_path / "numpy"), dtype=dtype, init=init, **_full_recipe(kw))
    for step in range(1, grad_steps + 1):
        ref_g, our_g = ref_grads[step], our_grads[step]
        assert ref_g.keys() == our_g.keys(), ref_g.keys() ^ our_g.keys()
        # A key projection's bias adds q . b_k to every score of a softmax row, which the softmax
        # ignores: its true gradient is exactly 0 and both sides return rounding noise, held to
        # the bound on the scale of the same projection's weight gradient (tests/test_backward.py).
        zero = [k for k in ref_g if k.endswith("k_proj.bias")]
        for k in zero:
            scale = np.abs(ref_g[k[:-len("bias")] + "weight"]).max()
            noise = max(np.abs(ref_g[k]).max(), np.abs(our_g[k]).max())
            assert noise <= GRAD_RTOL[dtype] * scale, (step, k, noise, scale)
        errors = sorted(((rel_err(ref_g[k], our_g[k])[1], k) for k in ref_g if k not in zero), reverse=True)
        worst = errors[0]
        print(f"\n[{dtype}] step {step}: gradients of {len(ref_g)} parameters, worst rel "
              + ", ".join(f"{e:.3e} ({k})" for e, k in errors[:3]))
        assert worst[0] <= GRAD_RTOL[dtype], worst
    ref_loss = np.array([h["loss"] for h in ref["history"]])
    our_loss = np.array([h["loss"] for h in ours["history"]])
    rel = np.abs(our_loss - ref_loss) / np.abs(ref_loss)
    print(f"\n[{dtype}] {len(rel)} steps: loss torch {ref_loss[0]:.5f} -> {ref_loss[-1]:.5f}, numpy {our_loss[0]:.5f} -> "
          f"{our_loss[-1]:.5f}; worst step rel {rel.max():.3e} (step {int(rel.argmax()) + 1}), median {np.median(rel):.3e}")
    last_ref, last_ours = ref["history"][-1], ours["history"][-1]
    print(f"[{dtype}] validation IoU point {last_ref['val_point_iou']:.4f} / {last_ours['val_point_iou']:.4f}, "
          f"box {last_ref['val_box_iou']:.4f} / {last_ours['val_box_iou']:.4f} (torch / numpy)")
    a, b = load_state_dict(ref["checkpoint"]), load_state_dict(ours["checkpoint"])
    assert a.keys() == b.keys()
    weight_rel = {k: float(np.abs(b[k].astype(np.float64) - a[k]).max() / max(np.abs(a[k]).max(), 1e-30)) for k in a}
    worst = max(weight_rel, key=weight_rel.get)
    print(f"[{dtype}] weights after the last step: worst rel {weight_rel[worst]:.3e} ({worst})")
    return rel, ref, ours, weight_rel


def _full_recipe(kw):
    """train()'s defaults filled in, for calling the NumPy engine directly."""
    import inspect
    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()
                if p.default is not inspect.Parameter.empty}
    for key in ("engine", "out_dir"):
        defaults.pop(key)
    return {**defaults, **kw}


def test_numpy_engine_matches_torch_engine_short(tmp_path, monkeypatch):
    """3 steps in float64: two of the first phase (a point and a box per target), then one of the
    11 rounds, on the second schedule (``extra_round_steps``)."""
    rel, ref, ours, weight_rel = run_both(tmp_path, monkeypatch, "float64", SMALL, grad_steps=3, steps=2,
                                          single_round_steps=2, extra_round_steps=1, extra_round_lr=3e-4,
                                          batch_images=2, masks_per_image=3, warmup=2, val_every=3)
    assert [h["rounds"] for h in ours["history"]] == [1, 1, 11] == [h["rounds"] for h in ref["history"]]
    assert [h["lr"] for h in ours["history"]] == [h["lr"] for h in ref["history"]]
    assert ours["history"][-1]["lr"] == 3e-4   # the second schedule's one step: its warm-up's end
    assert rel.max() <= 1e-4, rel
    assert max(weight_rel.values()) <= 1e-9, sorted(weight_rel.items(), key=lambda kv: -kv[1])[:3]
    for key in ("val_point_iou", "val_box_iou"):
        assert abs(ours["history"][-1][key] - ref["history"][-1][key]) <= 1e-6


@pytest.mark.slow
def test_numpy_engine_matches_torch_engine_float64(tmp_path, monkeypatch):
    """100 steps at micro's size, 60 of the first phase and 40 of the 11 rounds."""
    rel, _, _, _ = run_both(tmp_path, monkeypatch, "float64", MICRO, steps=100, single_round_steps=60,
                            batch_images=2, masks_per_image=4, val_every=100)
    assert rel.max() <= 1e-4, rel


@pytest.mark.slow
def test_numpy_engine_matches_torch_engine_float32(tmp_path, monkeypatch):
    rel, _, _, _ = run_both(tmp_path, monkeypatch, "float32", MICRO, steps=100, single_round_steps=60,
                            batch_images=2, masks_per_image=4, val_every=100)
    assert rel.max() <= 0.02, rel


def test_official_init_draws_the_official_distributions():
    """Every tensor of the torch-free init against the official modules' init at micro: the same
    keys and shapes, the same constants (LayerNorms, zero tables), and for the random ones of 64
    values or more the same spread (std within 25 %) and the same bound (uniform ones)."""
    cfg = MICRO
    ref = _torch_init(cfg, 0)
    ours = micro_numpy.official_init(cfg, np.random.default_rng(0))
    assert ref.keys() == ours.keys()
    for k, r in ref.items():
        o = ours[k]
        assert o.shape == r.shape and o.dtype == np.float32, k
        if np.all(r == r.flat[0]):
            assert np.array_equal(o, r), k
            continue
        if r.size < 64:  # too few draws to compare a spread or a maximum
            continue
        assert 0.75 <= o.std() / r.std() <= 1.25, (k, o.std(), r.std())
        if np.abs(r).max() < 1.0:  # uniform draws: the same bound
            assert np.abs(o).max() <= np.abs(r).max() * 1.25 + 1e-3 and np.abs(r).max() <= np.abs(o).max() * 1.25 + 1e-3, k


def test_numpy_resumed_runs_equal_one_run(tmp_path):
    """As the torch engine's test: one-step runs resumed from train_state.npz end bit for bit
    where one uninterrupted run does (weights, AdamW moments, schedule, the generator)."""
    cfg = SMALL.replace(encoder_depth=1, encoder_global_attn_indexes=(0,))
    kw = dict(steps=3, single_round_steps=2, batch_images=1, masks_per_image=2, val_every=3, threads=1,
              progress=False, config=cfg, log=lambda *a: None, warmup=2, engine="numpy", iou_head_scenes=2,
              extra_round_steps=0)
    whole = train(out_dir=str(tmp_path / "whole"), **kw)
    part = train(out_dir=str(tmp_path / "parts"), max_minutes=0, save_every=1, **kw)
    assert not part["finished"] and len(part["history"]) == 1
    while not part["finished"]:
        part = train(out_dir=str(tmp_path / "parts"), resume=True, max_minutes=0, save_every=1,
                     **{k: v for k, v in kw.items() if k != "steps"})
    assert [(r["start_step"], r["end_step"]) for r in part["runs"]] == [(0, 1), (1, 2), (2, 3), (3, 3)]
    assert part["runs"][-1]["stage"] == "iou_head"
    assert [h["loss"] for h in part["history"]] == [h["loss"] for h in whole["history"]]
    a, b = load_state_dict(whole["checkpoint"]), load_state_dict(part["checkpoint"])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / "parts" / "train_log.json").read_text())
    assert log["engine"] == "numpy" and len(log["runs"]) == 4
    # the checkpoint is the official format: torch reads it
    sd = torch.load(whole["checkpoint"], weights_only=True)
    assert all(np.array_equal(sd[k].numpy(), a[k]) for k in a)


def test_numpy_state_errors(tmp_path):
    with pytest.raises(MinisamError, match="no NumPy training state"):
        micro_numpy.load_state(str(tmp_path))
    (tmp_path / "train_state.pth").write_bytes(b"")
    with pytest.raises(MinisamError, match="--engine torch"):
        micro_numpy.load_state(str(tmp_path))
    (tmp_path / micro_numpy.STATE_NAME).write_bytes(b"not a zip")
    with pytest.raises(MinisamError, match="cannot read the training state"):
        micro_numpy.load_state(str(tmp_path))
    with pytest.raises(MinisamError, match="engine must be"):
        train(out_dir=str(tmp_path / "x"), engine="jax")
    bad = _torch_init(SMALL, 0)
    bad.pop("image_encoder.pos_embed")
    with pytest.raises(MinisamError, match="missing"):
        micro_numpy.train(out_dir=str(tmp_path / "y"), init=bad, config=SMALL, progress=False,
                          **{k: v for k, v in _full_recipe({}).items() if k not in ("config", "progress")})


_NO_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "segment_anything":
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _Block())
from minisam.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_cli_numpy_engine_without_torch(tmp_path):
    """The NumPy engine runs with torch unimportable: a new run, then --resume (the engine read
    from the folder's state), and the torch engine refuses to resume it."""
    out = tmp_path / "run"
    base = [sys.executable, "-c", _NO_TORCH, "train-micro", "--single-round-steps", "1", "--batch-images", "1",
            "--masks-per-image", "2", "--val-every", "2", "--threads", "1", "--no-progress", "--iou-head-scenes", "1", "--extra-round-steps", "0"]
    res = subprocess.run(base + ["--engine", "numpy", "--steps", "2", "--out", str(out), "--max-minutes", "0",
                                 "--save-every", "1"], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    assert (out / micro_numpy.STATE_NAME).is_file() and not (out / "microsam_shapes.pth").exists()
    res = subprocess.run(base + ["--steps", "2", "--resume", str(out)], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    log = json.loads((out / "train_log.json").read_text())
    assert log["engine"] == "numpy" and len(log["history"]) == 2 and "val_point_iou" in log["history"][-1]
    from minisam import build_sam
    assert build_sam(out / "microsam_shapes.pth").config == MICRO
    res = subprocess.run([sys.executable, "-m", "minisam", "train-micro", "--engine", "torch", "--resume", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1 and "numpy" in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
