"""The training script of the offline model: its loss equals minisam.training.losses, its batched decoder
equals the official one, and a few-step run works end to end (so the script does not rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minisam.training.losses import sam_loss
from minisam.config import MICRO as MICRO_CONFIG
from minisam.training.micro import _predict_masks, sam_loss_torch

from conftest import official_model

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("iou_outputs", ["best", "all"])
@pytest.mark.parametrize("M", [1, 3])
def test_torch_loss_equals_minisam_losses(M, iou_outputs):
    rng = np.random.default_rng(M)
    K, H, W = 5, 24, 20
    logits = rng.normal(0, 4, (K, M, H, W))
    logits[0, 0, :3] = 100.0     # extreme logits stay finite in both
    logits[1, -1, :2] = -100.0
    iou = rng.normal(0.5, 0.3, (K, M))
    targets = (rng.random((K, H, W)) < 0.3).astype(np.float64)
    got, index = sam_loss_torch(torch.from_numpy(logits), torch.from_numpy(iou), torch.from_numpy(targets),
                                iou_outputs)
    ref = [sam_loss(logits[k], iou[k], targets[k], iou_outputs=iou_outputs) for k in range(K)]
    assert index.tolist() == [r[1] for r in ref]
    # float64: the torch recipe forms 1 - p_t from torch.sigmoid, which cancels to ~1e-16
    # absolute for confident pixels (|logit| = 100 here) where minisam uses exp(-|x|); summed over
    # pixels and scaled by 20 that is ~1e-10 relative, so 1e-9 is a float64 bound, not slack.
    np.testing.assert_allclose(float(got), np.mean([r[0] for r in ref]), rtol=1e-9)


def test_batched_decoder_equals_official_mask_decoder():
    """_predict_masks on per-prompt embeddings == MaskDecoder.forward on one image's prompts."""
    from minisam.config import make_config
    cfg = MICRO_CONFIG.replace(encoder_depth=1, encoder_global_attn_indexes=(0,))
    model = official_model(cfg, 3).cpu()
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, cfg.prompt_embed_dim, 16, 16, generator=g)
    pts = (torch.rand(4, 2, 2, generator=g) * 256, torch.tensor([[1, 0], [1, 1], [0, 1], [1, -1]]))
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=pts, boxes=None, masks=None)
        pe = model.prompt_encoder.get_dense_pe()
        for multimask in (True, False):
            ref_m, ref_i = model.mask_decoder(emb, pe, sparse, dense, multimask)
            got_m, got_i = _predict_masks(model.mask_decoder, emb.expand(4, -1, -1, -1), pe, sparse,
                                          dense.expand(4, -1, -1, -1), multimask)
            torch.testing.assert_close(got_m, ref_m, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got_i, ref_i, rtol=1e-5, atol=1e-5)


def test_train_micro_cli_few_steps(tmp_path):
    out = tmp_path / "run"
    # step 1 supervises the first prompt only, step 2 runs the 11 interactive rounds
    res = subprocess.run([sys.executable, "-m", "minisam", "train-micro", "--steps", "2", "--out", str(out),
                          "--single-round-steps", "1", "--batch-images", "1", "--masks-per-image", "2", "--val-every", "2",
                          "--iou-head-scenes", "2", "--extra-round-steps", "0", "--threads", "1", "--no-progress"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["history"]) == 2 and np.isfinite(log["history"][-1]["loss"])
    assert log["single_round_steps"] == 1
    assert "val_point_iou" in log["history"][-1]
    from minisam import build_sam
    assert build_sam(out / "microsam_shapes.pth").config == MICRO_CONFIG


def test_train_micro_rejects_bad_steps(tmp_path):
    res = subprocess.run([sys.executable, "-m", "minisam", "train-micro", "--steps", "0", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0 and "--steps" in res.stderr


def test_shipped_recipe_is_defined_once():
    """train()'s defaults, the CLI's defaults and the shipped model's training log are the one
    recipe, SHIPPED_RECIPE: ``train(out_dir=...)`` and ``minisam train-micro --out DIR`` run what
    made weights/microsam_shapes.pth."""
    import inspect
    from minisam.cli import build_parser
    from minisam.training.micro import SHIPPED_RECIPE, train
    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()}
    args = vars(build_parser().parse_args(["train-micro", "--out", "x"]))
    log = json.loads((REPO / "weights" / "microsam_shapes.train_log.json").read_text())
    for key, value in SHIPPED_RECIPE.items():
        assert defaults[key] == value, key
        if key in args:
            assert args[key] == value, key
        if key == "warmup":   # None: min(300, steps // 10)
            assert log[key] == min(300, SHIPPED_RECIPE["steps"] // 10)
        elif key in log:
            assert log[key] == value, key
    assert {"graded_rounds", "single_round_steps", "iou_outputs", "masks_per_image"} <= set(log)


def test_lowres_ceiling_equals_torch_area_then_bilinear():
    """The model card's ceiling: area-downsample to the low-res grid, upsample as Sam.postprocess_masks."""
    import torch.nn.functional as F
    from minisam.training.shapes import make_scene
    from minisam.training.micro import lowres_ceiling_iou
    s = make_scene(np.random.default_rng(5), 128)
    for m in s.masks:
        t = torch.from_numpy(m).float()[None, None]                                 # [1, 1, H, W]
        low = F.avg_pool2d(t, 2)                                                    # [1, 1, S, S]
        up = F.interpolate(low - 0.5, (128, 128), mode="bilinear", align_corners=False)[0, 0].numpy() > 0
        want = (up & m).sum() / max((up | m).sum(), 1)
        assert lowres_ceiling_iou(m, 64) == pytest.approx(want, abs=1e-12)
    assert lowres_ceiling_iou(np.ones((128, 128), bool), 64) == 1.0


def test_resumed_runs_equal_one_run(tmp_path):
    """A schedule cut into one-step runs (max_minutes=0 stops after each step) and resumed from
    train_state.pth ends with the same weights, bit for bit, and the same losses as one
    uninterrupted run: weights, AdamW moments, schedule position and both RNG streams carry over."""
    from minisam.training.micro import train
    cfg = MICRO_CONFIG.replace(encoder_depth=1, encoder_global_attn_indexes=(0,))
    kw = dict(steps=4, single_round_steps=2, batch_images=1, masks_per_image=2, val_every=4, threads=1,
              progress=False, config=cfg, log=lambda *a: None, warmup=2, iou_head_scenes=2, extra_round_steps=0)
    whole = train(out_dir=str(tmp_path / "whole"), **kw)
    part = train(out_dir=str(tmp_path / "parts"), max_minutes=0, save_every=1, **kw)
    assert not part["finished"] and len(part["history"]) == 1
    while not part["finished"]:
        part = train(out_dir=str(tmp_path / "parts"), resume=True, max_minutes=0, save_every=1,
                     **{k: v for k, v in kw.items() if k not in ("steps",)})
    assert [r["run"] for r in part["runs"]] == [1, 2, 3, 4, 5]
    assert [(r["start_step"], r["end_step"]) for r in part["runs"]] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 4)]
    assert [r.get("stage") for r in part["runs"]] == [None] * 4 + ["iou_head"]   # the IoU-head stage, once
    assert [h["loss"] for h in part["history"]] == [h["loss"] for h in whole["history"]]
    a = torch.load(whole["checkpoint"], weights_only=True)
    b = torch.load(part["checkpoint"], weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the saved model carries the refit IoU head, and only that differs from the weights of the
    # last step (last_checkpoint.pth, written at the validation of step 4, before the stage)
    before = torch.load(tmp_path / "parts" / "last_checkpoint.pth", weights_only=True)
    changed = {k for k in a if not torch.equal(a[k], before[k])}
    assert changed and all(k.startswith("mask_decoder.iou_prediction_head.") for k in changed), changed
    log = json.loads((tmp_path / "parts" / "train_log.json").read_text())
    assert len(log["runs"]) == 5 and log["total_seconds"] == sum(r["seconds"] for r in log["runs"])


def test_second_schedule_extends_a_finished_run_as_one_run(tmp_path):
    """A finished run saved before the second schedule existed (its recipe without the
    ``extra_round_*`` keys) resumed with ``extra_round_steps`` ends bit for bit where one run with
    that recipe from the start does, with the same learning rates: the first schedule's cosine,
    then the second's warm-up and cosine. A run whose IoU head was already refit is refused."""
    from minisam.errors import MinisamError
    from minisam.training.micro import STATE_NAME, recipe_lr, train
    cfg = MICRO_CONFIG.replace(encoder_depth=1, encoder_global_attn_indexes=(0,))
    kw = dict(steps=3, single_round_steps=2, batch_images=1, masks_per_image=2, val_every=10, threads=1,
              progress=False, config=cfg, log=lambda *a: None, warmup=2, extra_round_lr=4e-4, iou_head_scenes=0)
    whole = train(out_dir=str(tmp_path / "whole"), extra_round_steps=4, **kw)
    first = train(out_dir=str(tmp_path / "parts"), extra_round_steps=0, **kw)
    state_path = tmp_path / "parts" / STATE_NAME
    state = torch.load(state_path, weights_only=False)
    for key in ("extra_round_steps", "extra_round_lr"):   # as saved before these keys existed
        del state["recipe"][key]
    torch.save(state, state_path)
    more = train(out_dir=str(tmp_path / "parts"), resume=True, extra_round_steps=4,
                 **{k: v for k, v in kw.items() if k != "steps"})
    assert len(first["history"]) == 3 and len(more["history"]) == 7
    assert [h["loss"] for h in more["history"]] == [h["loss"] for h in whole["history"]]
    lrs = [h["lr"] for h in whole["history"]]
    assert [h["lr"] for h in more["history"]] == lrs
    assert lrs == [recipe_lr(i, whole["recipe"]) for i in range(7)]
    # the first schedule (warm-up 2, cosine over 1 step), then the second: warm-up 2 of its 4 steps, cosine
    assert lrs == pytest.approx([4e-4, 8e-4, 8e-4, 2e-4, 4e-4, 4e-4, 4e-4 * (0.05 + 0.95 * 0.5)])
    assert [h["rounds"] for h in whole["history"]] == [1, 1, 11, 11, 11, 11, 11]
    a = torch.load(whole["checkpoint"], weights_only=True)
    b = torch.load(more["checkpoint"], weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a run that has had its IoU-head stage cannot take more steps
    state = torch.load(state_path, weights_only=False)
    state["recipe"].pop("extra_round_steps")
    state["runs"].append({"run": len(state["runs"]) + 1, "stage": "iou_head", "start_step": 7, "end_step": 7,
                          "seconds": 0.0})
    torch.save(state, state_path)
    with pytest.raises(MinisamError, match="IoU head was refit after step 7"):
        train(out_dir=str(tmp_path / "parts"), resume=True, extra_round_steps=9,
              **{k: v for k, v in kw.items() if k != "steps"})


def test_train_micro_cli_resume(tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "minisam", "train-micro", "--single-round-steps", "1", "--batch-images", "1",
            "--masks-per-image", "2", "--val-every", "2", "--threads", "1", "--no-progress", "--iou-head-scenes", "1", "--extra-round-steps", "0"]
    res = subprocess.run(base + ["--steps", "2", "--out", str(out), "--max-minutes", "0", "--save-every", "1"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "unfinished" in res.stdout and not (out / "microsam_shapes.pth").exists()
    res = subprocess.run(base + ["--resume", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    log = json.loads((out / "train_log.json").read_text())
    assert [r["end_step"] for r in log["runs"]] == [1, 2, 2] and len(log["history"]) == 2
    assert log["runs"][-1]["stage"] == "iou_head" and log["iou_head_scenes"] == 1
    missing = subprocess.run(base + ["--resume", str(tmp_path / "nothing")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode != 0 and "no training state to resume" in missing.stderr
