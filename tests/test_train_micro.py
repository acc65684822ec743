"""The training script of the offline model: its loss equals minisam.training.losses, its batched decoder
equals the official one, and a few-step run works end to end (so the script does not rot)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from minisam.training.losses import sam_loss
from minisam.training.micro import MICRO_CONFIG, _predict_masks, sam_loss_torch

from conftest import official_model


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
                          "--threads", "1", "--no-progress"], capture_output=True, text=True, timeout=600)
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


def test_interleaved_interactive_steps_and_saved_weights_are_the_ema(tmp_path):
    """interactive_every=2 runs the 11 rounds on every 2nd step, and with ema_decay the saved
    checkpoint is the moving average of the raw weights after each step (from the initial
    weights), not the last raw weights."""
    from minisam.checkpoints.formats import load_state_dict
    from minisam.reference.official import build_official
    from minisam.training.micro import train
    cfg = MICRO_CONFIG.replace(encoder_depth=1, encoder_global_attn_indexes=(0,))
    raw = []
    res = train(3, str(tmp_path), batch_images=1, masks_per_image=2, val_every=3, config=cfg, threads=1,
                single_round_steps=3, interactive_every=2, box_noise=(0.0, 0.05), ema_decay=0.5, progress=False,
                on_step=lambda step, model: raw.append({k: v.detach().double().numpy().copy()
                                                        for k, v in model.named_parameters()}),
                log=lambda *a: None)
    assert [r["rounds"] for r in res["history"]] == [1, 11, 1]
    torch.manual_seed(0)                                  # train() seeds the same way before building
    ema = {k: v.detach().double().numpy() for k, v in build_official(cfg).named_parameters()}
    for t, w in enumerate(raw):
        d = min(0.5, (1 + t) / (10 + t))
        ema = {k: d * ema[k] + (1 - d) * w[k] for k in w}
    saved = load_state_dict(res["checkpoint"])
    moved = 0
    for k, want in ema.items():
        got = np.asarray(saved[k], np.float64)
        # float32 storage and foreach updates against a float64 recursion: a few float32 ulps
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=k)
        moved += not np.allclose(got, raw[-1][k], rtol=1e-5, atol=1e-6)
    assert moved > len(ema) // 2                          # and it is not the raw last weights


def test_train_micro_rejects_bad_recipe_flags(tmp_path):
    for flags, word in ((["--box-noise", "0.2,0.1"], "--box-noise"), (["--box-noise", "x"], "--box-noise"),
                        (["--ema-decay", "1.5"], "--ema-decay"), (["--interactive-every", "-1"], "--interactive-every")):
        res = subprocess.run([sys.executable, "-m", "minisam", "train-micro", "--steps", "1", "--out", str(tmp_path),
                              *flags], capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and res.stderr.strip().count("\n") == 0 and word in res.stderr, (flags, res.stderr)


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
