"""minisam.training.interactive: the 11-round interactive simulation, with fake predictors and properties.

The sampling and bookkeeping are pure functions, tested without a model. ``simulate_interactive``
is driven by two fakes with ``SamPredictor.predict``'s signature: an oracle that returns the
target exactly, and a "click disk" model whose masks follow the clicks (and the mask prompt),
so the error region changes from round to round as with a real model.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisam.errors import PromptError
from minisam.training.losses import sam_loss
from minisam.training.interactive import (INITIAL, MASK_ONLY, NOT_A_POINT, POINT, error_regions, mask_box,
                                          next_click, noisy_box, round_schedule, sample_error_point,
                                          sample_foreground_point, simulate_interactive, use_multimask)

LOW = 16  # low-res side of the fakes (256 for real SAM)


class OraclePredictor:
    """Predicts the target exactly, with full confidence, whatever the prompt."""

    def __init__(self, target):
        self.target = np.asarray(target, bool)
        self.calls = []

    def set_image(self, image):
        self.image_shape = image.shape[:2]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output=True, return_logits=False):
        self.calls.append(dict(point_coords=point_coords, point_labels=point_labels, box=box,
                               mask_input=mask_input, multimask_output=multimask_output))
        k = 3 if multimask_output else 1
        logits = np.where(self.target, 10.0, -10.0).astype(np.float32)
        return (np.repeat(logits[None], k, 0), np.ones(k, np.float32),
                np.zeros((k, LOW, LOW), np.float32))


class ClickDiskPredictor:
    """A toy model: the previous mask (from the mask prompt), plus disks at positive clicks,
    minus disks at negative ones, inside the box if any. Output k uses radius (k + 1) * r."""

    def __init__(self, radius=3):
        self.radius = radius
        self.calls = []

    def set_image(self, image):
        self.h, self.w = image.shape[:2]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output=True, return_logits=False):
        self.calls.append(dict(point_coords=point_coords, point_labels=point_labels, box=box,
                               mask_input=mask_input, multimask_output=multimask_output))
        rows, cols = np.mgrid[0:self.h, 0:self.w]                 # [H, W] each
        k = 3 if multimask_output else 1
        outs = []
        for i in range(k):
            if mask_input is not None:   # nearest upsampling of the [1, S, S] prompt
                logit = mask_input[0][rows * LOW // self.h, cols * LOW // self.w].copy()
            else:
                logit = np.full((self.h, self.w), -5.0)
            if box is not None:
                inside = ((cols >= box[0]) & (cols <= box[2]) & (rows >= box[1]) & (rows <= box[3]))
                logit = np.where(inside, np.maximum(logit, 5.0), logit)
            for (x, y), label in zip(point_coords if point_coords is not None else [],
                                     point_labels if point_labels is not None else []):
                if label == NOT_A_POINT:   # a pad token has no position
                    continue
                disk = (cols - x) ** 2 + (rows - y) ** 2 <= ((i + 1) * self.radius) ** 2
                logit = np.where(disk, 5.0 if label == 1 else -5.0, logit)
            outs.append(logit)
        logits = np.stack(outs).astype(np.float32)                # [K, H, W]
        low = logits[:, ::max(self.h // LOW, 1), ::max(self.w // LOW, 1)][:, :LOW, :LOW]
        iou_pred = np.linspace(0.9, 0.5, k).astype(np.float32)[::-1].copy()   # prefers the last
        return logits, iou_pred, np.ascontiguousarray(low)


def scene(seed, h=48, w=64):
    """An image and a target: a random rectangle plus a disk."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:h, 0:w]
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    target = (rows >= y0) & (rows < y0 + rng.integers(4, h // 2)) & (cols >= x0) & (cols < x0 + rng.integers(4, w // 2))
    cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, 10)
    target |= (rows - cy) ** 2 + (cols - cx) ** 2 <= r ** 2
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    return image, target


masks = st.integers(0, 2**32 - 1).map(lambda s: np.random.default_rng(s).random((
    1 + s % 13, 1 + (s // 13) % 11)) < np.random.default_rng(s + 1).uniform(0.05, 0.95))


# ---- pure functions --------------------------------------------------------------------------

def test_round_schedule():
    for seed in range(20):
        kinds = round_schedule(seed)
        assert len(kinds) == 11 and kinds[0] == INITIAL and kinds[-1] == MASK_ONLY
        assert kinds.count(POINT) == 8 and kinds.count(MASK_ONLY) == 2
        assert round_schedule(seed) == kinds                     # seeded
    # the inserted mask-only round reaches every one of the 9 slots among the points
    slots = {round_schedule(seed).index(MASK_ONLY) for seed in range(300)}
    assert slots == set(range(1, 10))
    assert round_schedule(0, mask_only_rounds="end") == [INITIAL] + [POINT] * 8 + [MASK_ONLY] * 2
    with pytest.raises(ValueError):
        round_schedule(0, mask_only_rounds="middle")


@settings(max_examples=100, deadline=None)
@given(masks, st.integers(0, 2**32 - 1))
def test_foreground_point_lies_in_mask(mask, seed):
    if not mask.any():
        with pytest.raises(PromptError, match="empty"):
            sample_foreground_point(mask, seed)
        return
    x, y = sample_foreground_point(mask, np.random.default_rng(seed))
    assert x == int(x) and y == int(y) and mask[int(y), int(x)]


@settings(max_examples=200, deadline=None)
@given(masks, st.integers(0, 2**32 - 1))
def test_error_point_lies_in_error_region(target, seed):
    pred = np.random.default_rng(seed).random(target.shape) < 0.5
    false_neg, false_pos = error_regions(pred, target)
    sampled = sample_error_point(pred, target, np.random.default_rng(seed))
    if not (false_neg | false_pos).any():
        assert sampled is None
        return
    (x, y), label = sampled
    r, c = int(y), int(x)
    assert (label == 1 and false_neg[r, c]) or (label == 0 and false_pos[r, c])
    # a positive click is always on the target, a negative one never
    assert target[r, c] == (label == 1)


@settings(max_examples=50, deadline=None)
@given(masks)
def test_exact_prediction_gives_no_point(target):
    assert sample_error_point(target.copy(), target, 0) is None
    point, label = next_click(target.copy(), target, 0)          # the round adds the pad token
    assert label == NOT_A_POINT and point.tolist() == [0.0, 0.0]
    wrong = target.copy()
    wrong.flat[0] = not wrong.flat[0]                            # one error pixel: that is the click
    point, label = next_click(wrong, target, 0)
    assert point.tolist() == [0.0, 0.0] and label == int(target.flat[0])


def test_error_point_is_uniform_over_the_error_region():
    """3 false-negative pixels and 1 false positive: labels come out 3:1, pixels 1:1:1:1."""
    target = np.zeros((4, 4), bool)
    target[0, :3] = True
    pred = np.zeros((4, 4), bool)
    pred[3, 3] = True
    rng = np.random.default_rng(0)
    draws = [sample_error_point(pred, target, rng) for _ in range(4000)]
    counts = {}
    for (x, y), label in draws:
        counts[(int(x), int(y), label)] = counts.get((int(x), int(y), label), 0) + 1
    assert set(counts) == {(0, 0, 1), (1, 0, 1), (2, 0, 1), (3, 3, 0)}
    assert all(abs(n - 1000) < 120 for n in counts.values())   # ~4 sigma of a binomial(4000, 1/4)


@settings(max_examples=100, deadline=None)
@given(masks, st.integers(0, 2**32 - 1))
def test_noisy_box_stays_near_the_tight_box(mask, seed):
    if not mask.any():
        return
    tight = mask_box(mask)
    box = noisy_box(mask, np.random.default_rng(seed))
    h, w = mask.shape
    assert box[0] <= box[2] and box[1] <= box[3]
    assert 0 <= box[0] and box[2] <= w - 1 and 0 <= box[1] and box[3] <= h - 1
    assert np.all(np.abs(box - tight) <= 20 + 1e-4)
    np.testing.assert_array_equal(box, noisy_box(mask, np.random.default_rng(seed)))


def test_noisy_box_noise_statistics():
    """std = 10% of the side, each draw clipped at 20 px: a 60 x 200 box gets std 6 on y; on x
    N(0, 20) clipped at +-1 sigma has std 20 * sqrt(erf(1/sqrt2) - 2 phi(1) + P(|z| > 1)) = 14.4."""
    mask = np.zeros((500, 500), bool)
    mask[200:261, 150:351] = True                                # 60 high, 200 wide (inclusive)
    tight = mask_box(mask)
    rng = np.random.default_rng(1)
    noise = np.array([noisy_box(mask, rng) - tight for _ in range(4000)])   # [4000, 4]
    assert np.abs(noise).max() <= 20
    assert 5.6 < noise[:, 1].std() < 6.4 and 5.6 < noise[:, 3].std() < 6.4
    assert 13.8 < noise[:, 0].std() < 15.0 and abs(noise[:, 0].mean()) < 1


def test_use_multimask():
    assert use_multimask(1, False)
    assert not use_multimask(0, True) and not use_multimask(2, False) and not use_multimask(1, True)
    assert not use_multimask(1, False, has_mask=True)


# ---- the simulation --------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["point", "box"])
def test_oracle_stops_clicking_and_reports_iou_one(first):
    image, target = scene(0)
    oracle = OraclePredictor(target)
    records = simulate_interactive(oracle, image, target, 0, first_prompt=first)
    assert len(records) == 11 and len(oracle.calls) == 11
    assert all(r.iou == 1.0 for r in records)
    # nothing left to correct: each point round adds the not-a-point pad, as the trainer does
    point_rounds = [r for r in records[1:] if r.kind == POINT]
    assert point_rounds and all(r.new_label == NOT_A_POINT and not r.new_point.any() for r in point_rounds)
    n_points = 1 if first == "point" else 0
    assert all(np.count_nonzero(r.point_labels != NOT_A_POINT) == n_points for r in records)
    assert all((r.box is not None) == (first == "box") for r in records)
    assert [r.multimask for r in records] == [first == "point"] + [False] * 10


def test_simulation_is_deterministic_for_a_seed():
    image, target = scene(1)
    run = lambda seed: simulate_interactive(ClickDiskPredictor(), image, target, seed)
    a, b, c = run(5), run(5), run(6)
    key = lambda recs: [(r.kind, r.point_coords.tolist(), r.point_labels.tolist(),
                         None if r.box is None else r.box.tolist(), r.iou, r.loss) for r in recs]
    assert key(a) == key(b)
    assert key(a) != key(c)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["point", "box", None]))
def test_simulation_bookkeeping(seed, first):
    """Every new point lies in the error region of the previous round's chosen mask, with the
    right label; the previous low-res logits come back as the mask prompt; the loss and the
    IoU are those of the returned masks."""
    image, target = scene(seed)
    model = ClickDiskPredictor()
    records = simulate_interactive(model, image, target, np.random.default_rng(seed), first_prompt=first)
    assert len(records) == 11 and [r.round for r in records] == list(range(1, 12))
    assert records[0].kind == INITIAL and records[-1].kind == MASK_ONLY
    first_is_point = records[0].new_point is not None
    assert first_is_point != (records[0].box is not None)
    if first_is_point:
        x, y = records[0].new_point.astype(int)
        assert target[y, x] and records[0].new_label == 1
    for prev, rec, call in zip(records, records[1:], model.calls[1:]):
        # mask prompt = previous best low-res logits
        assert rec.had_mask_input and call["mask_input"].shape == (1, LOW, LOW)
        if rec.kind == MASK_ONLY:
            assert rec.new_point is None
            assert len(rec.point_labels) == len(prev.point_labels)
        elif rec.new_label == NOT_A_POINT:
            assert np.array_equal(prev.mask, target)
            assert len(rec.point_labels) == len(prev.point_labels) + 1
        else:
            x, y = rec.new_point.astype(int)
            fn, fp = error_regions(prev.mask, target)
            assert fn[y, x] if rec.new_label == 1 else fp[y, x]
            assert len(rec.point_labels) == len(prev.point_labels) + 1
            np.testing.assert_array_equal(rec.point_coords[-1], rec.new_point)
    assert not records[0].had_mask_input and model.calls[0]["mask_input"] is None
    # the loss and IoU of each round, recomputed from the model's outputs
    replay = ClickDiskPredictor()
    replay.set_image(image)
    for rec, call in zip(records, model.calls):
        logits, iou_pred, low = replay.predict(**call, return_logits=True)
        assert rec.chosen_index == int(np.argmax(iou_pred))
        assert (rec.loss, rec.loss_index) == sam_loss(logits, iou_pred, target)
        chosen = logits[rec.chosen_index] > 0
        np.testing.assert_array_equal(rec.mask, chosen)
        assert rec.iou == pytest.approx((chosen & target).sum() / (chosen | target).sum())


def test_simulation_improves_with_clicks():
    """With the click-disk toy model, corrective clicks raise the IoU from the first round."""
    image, target = scene(3)
    records = simulate_interactive(ClickDiskPredictor(), image, target, 0, first_prompt="point")
    assert records[-1].iou > records[0].iou


def test_simulation_rejects_bad_targets():
    image, target = scene(0)
    with pytest.raises(PromptError, match="empty"):
        simulate_interactive(OraclePredictor(target), image, np.zeros_like(target), 0)
    with pytest.raises(PromptError, match="shape"):
        simulate_interactive(OraclePredictor(target), image, target[:-1], 0)
    with pytest.raises(PromptError, match="schedule"):
        simulate_interactive(OraclePredictor(target), image, target, 0, schedule=[POINT, INITIAL])
    with pytest.raises(PromptError, match="first_prompt"):
        simulate_interactive(OraclePredictor(target), image, target, 0, first_prompt="scribble")


# ---- with the real predictor -----------------------------------------------------------------

class Recorder:
    """Wraps a predictor and keeps every ``predict`` call's inputs and outputs."""

    def __init__(self, predictor):
        self.predictor, self.calls = predictor, []

    def set_image(self, image):
        self.predictor.set_image(image)

    def predict(self, **kwargs):
        out = self.predictor.predict(**kwargs)
        self.calls.append((kwargs, out))
        return out


@pytest.mark.parametrize("first", ["point", "box"])
def test_simulation_with_minisam_predictor_matches_official_forward(first):
    """The 11 rounds on minisam's SamPredictor (randomized tiny model); every round's exact
    inputs (points, box, previous low-res logits) replayed through the official SamPredictor.

    Tolerance: per-round outputs agree to 1e-4 x max|ref| (the predictor parity tests hold
    each stage at ~1e-5; the low-res logits pass through the whole decoder). The chosen mask
    index must be identical, and the round's loss to 1e-4 relative (a smooth mean of logits).
    Replaying inputs, rather than running two free simulations, keeps the test stable: one
    pixel with |logit| < 1e-6 flipping sign would change every later random click.
    """
    from conftest import TINY_CONFIGS, official_model
    from segment_anything import SamPredictor as OfficialPredictor

    from minisam.build_sam import build_sam
    from minisam.predictor import SamPredictor

    cfg = TINY_CONFIGS["pad_window"]
    official = official_model(cfg, 0)
    sam = build_sam({k: v.detach().cpu().numpy() for k, v in official.state_dict().items()}, config=cfg)
    image, target = scene(4, h=48, w=64)                        # long side = img_size 64
    ours = Recorder(SamPredictor(sam))
    records = simulate_interactive(ours, image, target, 11, first_prompt=first)
    assert len(records) == 11 and all(np.isfinite(r.loss) for r in records)
    low_side = cfg.mask_input_size
    ref = OfficialPredictor(official)
    ref.set_image(image)
    worst = 0.0
    for rec, (kwargs, (logits, iou_pred, low_res)) in zip(records, ours.calls):
        if rec.round > 1:
            assert kwargs["mask_input"].shape == (1, low_side, low_side)
        ref_logits, ref_iou, ref_low = ref.predict(**kwargs)
        for got, want in [(logits, ref_logits), (iou_pred, ref_iou), (low_res, ref_low)]:
            err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
            worst = max(worst, err)
            assert err < 1e-4, f"round {rec.round}: rel err {err:.2e}"
        assert rec.chosen_index == int(np.argmax(ref_iou))
        ref_loss, ref_index = sam_loss(ref_logits, ref_iou, target)
        assert rec.loss_index == ref_index
        assert rec.loss == pytest.approx(ref_loss, rel=1e-4)
    print(f"\n[simulation parity, first={first}] worst per-round rel err {worst:.2e}; "
          f"IoU per round {[round(r.iou, 3) for r in records]}")


@pytest.mark.parametrize("seed", range(6))
def test_unseen_scene_close_up_is_the_centre_of_the_larger_scene(seed):
    """``make_unseen_scene(zoom=2)`` (the close-ups of lesson 22 and the fine-tuning benchmark) is
    the centre S x S of the same scene drawn 2S a side: same pixels, same objects in the same order."""
    from minisam.training.shapes import make_unseen_scene
    S, o = 64, 32
    large = make_unseen_scene(np.random.default_rng(seed), 2 * S, min_area=0)
    close = make_unseen_scene(np.random.default_rng(seed), S, min_area=0, zoom=2)
    usual = make_unseen_scene(np.random.default_rng(seed), S, min_area=0)
    assert close.image.shape == (S, S, 3) and close.kinds == large.kinds == usual.kinds
    np.testing.assert_array_equal(close.image, large.image[o:o + S, o:o + S])
    for m_close, m_large in zip(close.masks, large.masks):
        np.testing.assert_array_equal(m_close, m_large[o:o + S, o:o + S])
    kept = make_unseen_scene(np.random.default_rng(seed), S, min_area=40, zoom=2)
    assert [m.sum() for m in kept.masks] == [m.sum() for m in close.masks if m.sum() >= 40]
