"""The IoU-head stage of train-micro (minisam.training.iou_head) against the official modules
and autograd, and what it may change: the IoU head's weights, nothing else."""

import numpy as np
import torch

from minisam.checkpoints.param_tree import nest
from minisam.config import MICRO
from minisam.training.iou_head import (RANK_TEMPERATURE, calibrate_iou_head, iou_head_loss, iou_token_features,
                                       pick_rate)
from minisam.training.shapes import interior_point, make_scene

SMALL = MICRO.replace(encoder_depth=2, encoder_global_attn_indexes=(1,))  # micro's widths, 2 blocks


def _random_model(seed=0):
    from official import build_official, randomize
    return randomize(build_official(SMALL), seed).eval()


def _params(model):
    return nest({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})


def test_features_equal_the_official_iou_token_and_mask_ious():
    """The IoU token after the official transformer (``hs[:, 0]`` in ``MaskDecoder.predict_masks``)
    and the IoU of each of the 4 masks, upsampled as ``Sam.postprocess_masks`` does.

    Tolerance: float32 on both sides through the same decoder; the measured max abs error of the
    features is ~1e-6 of values of order 1, so 1e-4 leaves room for BLAS summation order. An IoU
    may differ only where a logit within rounding of 0 flips a pixel: at most a few pixels of a
    mask of >= 100 px, 0.02."""
    import torch.nn.functional as F
    model = _random_model()
    s = make_scene(np.random.default_rng(3), SMALL.img_size, min_area=100)
    masks = np.stack(s.masks)                                            # [P, S, S]
    points = np.stack([interior_point(m) - 0.5 for m in masks])          # [P, 2]
    feats, ious = iou_token_features(_params(model), SMALL, s.image, masks, points)
    with torch.no_grad():
        img = torch.from_numpy(s.image[None]).permute(0, 3, 1, 2).float()
        emb = model.image_encoder(model.preprocess(img))                # [1, C, G, G]
        pts = (torch.from_numpy(points[:, None]).float(), torch.ones(len(masks), 1, dtype=torch.int64))
        sparse, dense = model.prompt_encoder(points=pts, boxes=None, masks=None)
        pe = model.prompt_encoder.get_dense_pe()                        # [1, C, G, G]
        tokens, lows = [], []
        hook = model.mask_decoder.iou_prediction_head.register_forward_hook(
            lambda mod, inp, out: tokens.append(inp[0]))                 # the head's input: hs[:, 0]
        for i in range(len(masks)):                                      # one prompt per official call
            lows.append(model.mask_decoder.predict_masks(emb, pe, sparse[i:i + 1], dense[i:i + 1])[0])
        hook.remove()
        token = torch.cat(tokens).numpy()                                # [P, C]
        low = torch.cat(lows)                                            # [P, 4, R, R]
        up = F.interpolate(low, (SMALL.img_size,) * 2, mode="bilinear", align_corners=False) > 0   # [P, 4, S, S]
        t = torch.from_numpy(masks)[:, None]
        ref_iou = ((up & t).flatten(2).sum(-1) / (up | t).flatten(2).sum(-1).clamp(min=1)).numpy()
    err = np.abs(feats - token).max()
    print(f"features: max abs err {err:.2e} (max |value| {np.abs(token).max():.2f}); "
          f"IoU max abs err {np.abs(ious - ref_iou).max():.2e}")
    assert err <= 1e-4
    assert np.abs(ious - ref_iou).max() <= 0.02


def test_loss_gradient_equals_autograd():
    """MSE on all outputs + rank_weight * cross-entropy over the multimask scores: value and
    gradient against torch autograd in float64 (agreement to rounding, 1e-12)."""
    rng = np.random.default_rng(0)
    scores = rng.normal(0.7, 0.2, (37, 4))
    ious = rng.uniform(0, 1, (37, 4))
    loss, grad = iou_head_loss(scores, ious, rank_weight=0.3, grad=True)
    s = torch.tensor(scores, requires_grad=True)
    y = torch.tensor(ious)
    ce = torch.nn.functional.cross_entropy(s[:, 1:] / RANK_TEMPERATURE, y[:, 1:].argmax(1))
    ref = ((s - y) ** 2).mean() + 0.3 * ce
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-12
    np.testing.assert_allclose(grad, s.grad.numpy(), rtol=0, atol=1e-12)


def test_stage_changes_the_iou_head_only_and_raises_its_pick_rate():
    """Every weight but the IoU head's is left bit for bit (so every mask is unchanged), and on
    the prompts it was fit to the head picks the best of three masks more often than before."""
    p = _params(_random_model(1))
    before = {k: v.copy() for k, v in _flat(p).items()}
    info = calibrate_iou_head(p, SMALL, np.random.default_rng(5), n_scenes=6, epochs=40, rank_weight=0.1,
                              scene_min_area=100, log=lambda *a: None)
    after = _flat(p)
    changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
    assert changed and all(k.startswith("mask_decoder.iou_prediction_head.") for k in changed), changed
    assert info["train_pick_after"] > info["train_pick_before"] + 0.1, info


def test_pick_rate_counts_the_highest_score_over_the_multimask_outputs():
    """Output 0 (the single mask) never takes part in the pick."""
    head = {"layers": [{"weight": np.eye(4, dtype=np.float32), "bias": np.zeros(4, np.float32)}]}
    feats = np.array([[9, 0, 1, 0], [0, 0, 0, 1]], np.float32)   # scores = features
    ious = np.array([[1, 0.2, 0.9, 0.1], [0, 0.1, 0.2, 0.8]], np.float32)
    assert pick_rate(head, 1, feats, ious) == 1.0
    ious[1] = [0, 0.9, 0.2, 0.8]
    assert pick_rate(head, 1, feats, ious) == 0.5


def _flat(p):
    from minisam.checkpoints.param_tree import flatten
    return flatten(p)


def test_mix_weighs_the_refit_head_against_the_joint_one():
    """``mix`` = 0 keeps the jointly trained head bit for bit; 0.5 lands halfway, weight by weight,
    between it and the head that ``mix`` = 1 gives from the same draws."""
    start = _flat(_params(_random_model(2)))
    heads = {}
    for mix in (0.0, 0.5, 1.0):
        p = nest({k: v.copy() for k, v in start.items()})
        calibrate_iou_head(p, SMALL, np.random.default_rng(7), n_scenes=2, epochs=5, rank_weight=0.1, mix=mix,
                           scene_min_area=100, log=lambda *a: None)
        heads[mix] = {k: v for k, v in _flat(p).items() if "iou_prediction_head" in k}
    assert all(np.array_equal(heads[0.0][k], start[k]) for k in heads[0.0])
    for k in heads[0.5]:
        assert not np.array_equal(heads[1.0][k], start[k]), k
        np.testing.assert_allclose(heads[0.5][k], (start[k] + heads[1.0][k]) / 2, rtol=0, atol=1e-6)
