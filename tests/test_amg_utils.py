"""minisam.utils.amg against the official utils/amg.py, torchvision NMS, pycocotools and OpenCV.

Everything here is discrete (indexes, counts, labels, strings), so every comparison is
exact equality: there is no tolerance to choose.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import cv2
from pycocotools import mask as mask_utils
from segment_anything.utils import amg as official
from torchvision.ops import batched_nms, nms

from minisam.utils import amg

SETTINGS = dict(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


def random_masks(draw, max_side=24, max_n=4):
    n = draw(st.integers(1, max_n))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.5, 0.8, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).random((n, h, w)) < density


masks_strategy = st.composite(random_masks)


# ---------------------------------------------------------------- grids, crops, boxes


@pytest.mark.parametrize("n", [1, 2, 7, 16, 32])
def test_point_grid_matches_official(n):
    np.testing.assert_array_equal(amg.build_point_grid(n), official.build_point_grid(n))
    for layers, scale in [(0, 1), (2, 2), (3, 3)]:
        if n < scale ** layers:  # a 0-point layer divides by zero in both
            continue
        ours = amg.build_all_layer_point_grids(n, layers, scale)
        ref = official.build_all_layer_point_grids(n, layers, scale)
        assert len(ours) == len(ref)
        for a, b in zip(ours, ref):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [(1500, 2250), (480, 640), (517, 389), (64, 64), (33, 1000)])
@pytest.mark.parametrize("layers,ratio", [(0, 512 / 1500), (1, 512 / 1500), (2, 0.25), (3, 0.9)])
def test_crop_boxes_match_official(size, layers, ratio):
    assert amg.generate_crop_boxes(size, layers, ratio) == official.generate_crop_boxes(size, layers, ratio)


@settings(**SETTINGS)
@given(masks=masks_strategy())
def test_mask_to_box_matches_official(masks):
    ref = official.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    ours = amg.batched_mask_to_box(masks)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(amg.batched_mask_to_box(masks[0]), ref[0])  # [H, W] -> [4]


def test_mask_to_box_empty_input():
    assert amg.batched_mask_to_box(np.zeros((0, 5, 6), bool)).shape == (0, 4)


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 30))
def test_uncrop_and_edge_filter_match_official(seed, n):
    rng = np.random.default_rng(seed)
    orig_h, orig_w = int(rng.integers(50, 300)), int(rng.integers(50, 300))
    x0, y0 = int(rng.integers(0, orig_w // 2)), int(rng.integers(0, orig_h // 2))
    x1, y1 = int(rng.integers(x0 + 10, orig_w + 1)), int(rng.integers(y0 + 10, orig_h + 1))
    crop = [x0, y0, x1, y1]
    xa = rng.integers(0, x1 - x0, size=(n, 2))
    ya = rng.integers(0, y1 - y0, size=(n, 2))
    boxes = np.stack([xa.min(1), ya.min(1), xa.max(1), ya.max(1)], 1).astype(np.int64)
    tb = torch.from_numpy(boxes)
    np.testing.assert_array_equal(amg.uncrop_boxes_xyxy(boxes, crop), official.uncrop_boxes_xyxy(tb, crop).numpy())
    np.testing.assert_array_equal(amg.is_box_near_crop_edge(boxes, crop, [0, 0, orig_w, orig_h]),
                                  official.is_box_near_crop_edge(tb, crop, [0, 0, orig_w, orig_h]).numpy())
    pts = rng.random((n, 2)) * 100
    np.testing.assert_array_equal(amg.uncrop_points(pts, crop), official.uncrop_points(torch.from_numpy(pts), crop).numpy())
    masks = rng.random((2, y1 - y0, x1 - x0)) < 0.5
    np.testing.assert_array_equal(amg.uncrop_masks(masks, crop, orig_h, orig_w),
                                  official.uncrop_masks(torch.from_numpy(masks), crop, orig_h, orig_w).numpy())


def test_batch_iterator_and_xywh():
    a, b = np.arange(10), np.arange(10) * 2
    ours = [[x.tolist() for x in batch] for batch in amg.batch_iterator(3, a, b)]
    ref = [[x.tolist() for x in batch] for batch in official.batch_iterator(3, a, b)]
    assert ours == ref and len(ours) == 4
    np.testing.assert_array_equal(amg.box_xyxy_to_xywh(np.array([3, 4, 10, 12])), [3, 4, 7, 8])
    with pytest.raises(ValueError):
        list(amg.batch_iterator(3, a, b[:5]))


# ---------------------------------------------------------------- stability score


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 4), h=st.integers(1, 30), w=st.integers(1, 30),
       offset=st.sampled_from([1.0, 0.5, 0.3, 2.0]), scale=st.sampled_from([0.5, 2.0, 10.0]))
def test_stability_matches_official_and_twin(seed, n, h, w, offset, scale):
    logits = (np.random.default_rng(seed).standard_normal((n, h, w)) * scale).astype(np.float32)
    logits[0, 0, 0] = np.float32(offset)  # a value exactly at the threshold: > is strict
    ours = amg.calculate_stability_score(logits, 0.0, offset)
    ref = official.calculate_stability_score(torch.from_numpy(logits), 0.0, offset).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)  # bitwise, NaN included
    twin = amg.stability_counts_numpy(logits, 0.0 + offset, 0.0 - offset)
    fast = amg._stability_counts_kernel(logits, np.float32(offset), np.float32(-offset))
    np.testing.assert_array_equal(twin[0], fast[0])
    np.testing.assert_array_equal(twin[1], fast[1])


def test_stability_nan_on_empty_union_and_int16_rows():
    logits = np.full((2, 3, 4), -5.0, np.float32)
    logits[1] = 5.0
    score = amg.calculate_stability_score(logits, 0.0, 1.0)
    assert np.isnan(score[0]) and score[1] == 1.0
    # A row wider than 32767 overflows torch's int16 row sum; we count the same way.
    wide = np.full((1, 2, 40000), 3.0, np.float32)
    wide[0, 1, :20000] = 0.5
    ref = official.calculate_stability_score(torch.from_numpy(wide), 0.0, 1.0).numpy()
    np.testing.assert_array_equal(amg.calculate_stability_score(wide, 0.0, 1.0), ref)
    np.testing.assert_array_equal(amg.stability_counts_numpy(wide, 1.0, -1.0), amg._stability_counts_kernel(wide, 1.0, -1.0))


# ---------------------------------------------------------------- RLE


@settings(**SETTINGS)
@given(masks=masks_strategy())
def test_rle_matches_official_and_pycocotools(masks):
    ref = official.mask_to_rle_pytorch(torch.from_numpy(masks))
    ours = amg.mask_to_rle(masks)
    assert ours == ref
    for m, rle in zip(masks, ours):
        assert rle["counts"] == amg.mask_to_rle_numpy(m)  # Numba kernel == NumPy twin
        np.testing.assert_array_equal(amg.rle_to_mask(rle), m)
        np.testing.assert_array_equal(amg.rle_to_mask(rle), official.rle_to_mask(rle))
        assert amg.area_from_rle(rle) == official.area_from_rle(rle) == int(m.sum())
        coco = amg.coco_encode_rle(rle)
        assert coco == official.coco_encode_rle(rle)  # same string, same size
        np.testing.assert_array_equal(mask_utils.decode({"size": coco["size"], "counts": coco["counts"].encode()}), m)
        assert mask_utils.area({"size": coco["size"], "counts": coco["counts"].encode()}) == m.sum()
        np.testing.assert_array_equal(amg.coco_decode_rle(coco), m)


def test_coco_rle_long_runs_and_negative_deltas():
    # Runs far apart in length exercise multi-group and negative differences.
    m = np.zeros((300, 257), bool)
    m[:, 3:200] = True
    m[7, 220] = True
    m[150:, 240:] = True
    rle = amg.mask_to_rle(m[None])[0]
    assert amg.coco_encode_rle(rle) == official.coco_encode_rle(rle)
    np.testing.assert_array_equal(mask_utils.decode({"size": [300, 257],
                                                     "counts": amg.coco_encode_rle(rle)["counts"]}), m)
    np.testing.assert_array_equal(amg.coco_decode_rle(amg.coco_encode_rle(rle)), m)


# ---------------------------------------------------------------- NMS


def _random_boxes(rng, n, span, tie_scores):
    xy = rng.integers(0, span, size=(n, 2))
    wh = rng.integers(0, span // 2 + 1, size=(n, 2))  # zero width/height included
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    if tie_scores:
        scores = rng.integers(0, 4, size=n).astype(np.float32) / 4
    else:
        scores = rng.random(n).astype(np.float32)
    return boxes, scores


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 60), span=st.sampled_from([4, 30, 500]),
       ties=st.booleans(), thr=st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9, 1.0]))
def test_nms_matches_torchvision(seed, n, span, ties, thr):
    boxes, scores = _random_boxes(np.random.default_rng(seed), n, span, ties)
    ref = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()
    ours = amg.box_nms(boxes, scores, thr)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, ref)
    ref_b = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(n), thr).numpy()
    np.testing.assert_array_equal(ours, ref_b)


def _assert_same_up_to_tie_order(ours, ref, scores):
    """Same kept set, same score sequence; among equal scores ours keeps index order."""
    assert sorted(ours.tolist()) == sorted(ref.tolist())
    np.testing.assert_array_equal(scores[ours], scores[ref])
    np.testing.assert_array_equal(ours, np.array(sorted(ref.tolist(), key=lambda i: (-scores[i], i))))


@pytest.mark.parametrize("seed", [0, 1])
def test_nms_many_boxes_with_ties(seed):
    # > 1000 boxes takes torchvision's "vanilla" batched path, which re-sorts the kept
    # indexes with torch's *unstable* sort: the order among exactly tied scores is then an
    # artefact of the sort algorithm. We keep the stable order (ties by index), which is
    # what the <= 1000-box path gives; set and score order are identical.
    boxes, scores = _random_boxes(np.random.default_rng(seed), 1500, 400, tie_scores=True)
    ref = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(1500), 0.7).numpy()
    _assert_same_up_to_tie_order(amg.box_nms(boxes, scores, 0.7), ref, scores)
    ref_plain = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.7).numpy()  # stable sort inside
    np.testing.assert_array_equal(amg.box_nms(boxes, scores, 0.7), ref_plain)
    # 1 / crop area scores as in cross-crop NMS: many exact ties
    crop_area = np.random.default_rng(seed).choice([1000, 250, 251], size=1500)
    s = (1 / torch.from_numpy(crop_area)).numpy()
    ref = batched_nms(torch.from_numpy(boxes), torch.from_numpy(s), torch.zeros(1500), 0.7).numpy()
    _assert_same_up_to_tie_order(amg.box_nms(boxes, s, 0.7), ref, s)


def test_nms_threshold_compared_in_double():
    # IoU 0.7 in float32 is 0.699999988 < 0.7 (double): torchvision keeps both boxes.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 7]], np.float32)
    scores = np.array([1.0, 0.5], np.float32)
    ref = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.7).numpy()
    np.testing.assert_array_equal(amg.box_nms(boxes, scores, 0.7), ref)
    assert amg.box_nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


# ---------------------------------------------------------------- components


@settings(**SETTINGS)
@given(masks=masks_strategy(max_side=40, max_n=1))
def test_components_match_cv2(masks):
    m = masks[0]
    n_ref, labels_ref, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), 8)
    n, labels, areas = amg.connected_components(m)
    assert n == n_ref
    np.testing.assert_array_equal(labels, labels_ref)  # same numbering, not just same partition
    np.testing.assert_array_equal(areas, stats[:, cv2.CC_STAT_AREA])
    n2, labels2, areas2 = amg.connected_components_numpy(m)  # readable twin
    assert n2 == n
    np.testing.assert_array_equal(labels2, labels)
    np.testing.assert_array_equal(areas2, areas)


def test_components_large_image_matches_cv2():
    # Large enough for OpenCV's multi-threaded (striped) labelling.
    rng = np.random.default_rng(3)
    m = cv2.resize((rng.random((60, 80)) < 0.45).astype(np.uint8), (800, 600), interpolation=cv2.INTER_NEAREST)
    m ^= (rng.random(m.shape) < 0.02).astype(np.uint8)
    n_ref, labels_ref, stats, _ = cv2.connectedComponentsWithStats(m, 8)
    n, labels, areas = amg.connected_components(m.astype(bool))
    assert n == n_ref
    np.testing.assert_array_equal(labels, labels_ref)
    np.testing.assert_array_equal(areas, stats[:, cv2.CC_STAT_AREA])


@settings(**SETTINGS)
@given(masks=masks_strategy(max_side=40, max_n=1), thresh=st.sampled_from([1, 2, 3, 5, 10, 50, 10**6]),
       mode=st.sampled_from(["holes", "islands"]))
def test_remove_small_regions_matches_official(masks, thresh, mode):
    m = masks[0]
    ref, ref_changed = official.remove_small_regions(m, thresh, mode)
    ours, changed = amg.remove_small_regions(m, thresh, mode)
    assert changed == ref_changed
    np.testing.assert_array_equal(ours, ref)


def test_remove_small_regions_keeps_first_largest_on_tie():
    m = np.zeros((10, 10), bool)
    m[0, 8:10] = True  # two islands of 2 pixels; cv2 numbers the one in block row 0 first
    m[5, 0:2] = True
    for mode in ("islands", "holes"):
        ref = official.remove_small_regions(m, 100, mode)
        ours = amg.remove_small_regions(m, 100, mode)
        np.testing.assert_array_equal(ours[0], ref[0])
        assert ours[1] == ref[1]
    with pytest.raises(ValueError):
        amg.remove_small_regions(m, 3, "both")
