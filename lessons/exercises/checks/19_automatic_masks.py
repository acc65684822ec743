"""Checks for lesson 19's exercises: against minisam/utils/amg.py and a brute-force sweep."""

import numpy as np
from _common import close

from minisam.utils import amg


def check_stability(m):
    rng = np.random.default_rng(0)
    logits = (rng.normal(0, 3, (5, 24, 20)) + np.linspace(-6, 6, 20)).astype(np.float32)
    logits[3] = -5                                               # empty at both thresholds: NaN
    logits[4, :, :] = np.where(np.arange(20) < 8, 4.0, -4.0)     # steep edge: stability 1
    for t, offset in [(0.0, 1.0), (0.5, 2.0)]:
        mine = np.asarray(m.stability_score(logits, t, offset), np.float64)
        expected = amg.calculate_stability_score(logits, t, offset).astype(np.float64)
        assert np.isnan(mine[3]), f"an empty mask's stability is 0 / 0 = NaN, got {mine[3]}"
        close(np.nan_to_num(mine, nan=-1), np.nan_to_num(expected, nan=-1), f"stability (t {t}, offset {offset})",
              rtol=1e-6, atol=1e-7)


def check_sweep(m):
    rng = np.random.default_rng(1)
    n, objects = 300, 12
    pred_iou = rng.uniform(0.6, 1.0, n)
    stability = np.clip(pred_iou + rng.normal(0, 0.05, n), 0, 1)
    matched = np.where(rng.random(n) < pred_iou - 0.3, rng.integers(0, objects, n), -1)
    t_iou, t_stab = [0.7, 0.8, 0.88, 0.95], [0.85, 0.9, 0.95, 0.98]
    kept, recall = m.sweep_thresholds(pred_iou, stability, matched, objects, t_iou, t_stab)
    for i, a in enumerate(t_iou):
        for j, b in enumerate(t_stab):
            keep = (pred_iou > a) & (stability >= b)
            found = len(set(matched[keep]) - {-1}) / objects
            assert int(kept[i][j]) == int(keep.sum()), \
                f"thresholds ({a}, {b}): kept {kept[i][j]}, expected {keep.sum()}"
            assert np.isclose(recall[i][j], found), f"thresholds ({a}, {b}): recall {recall[i][j]}, expected {found}"
    return f"kept {int(kept[0][0])} -> {int(kept[-1][-1])} masks, recall {recall[0][0]:.2f} -> {recall[-1][-1]:.2f}"


def check_nms(m):
    rng = np.random.default_rng(2)
    for trial in range(20):
        n = int(rng.integers(1, 40))
        xy = rng.uniform(0, 50, (n, 2))
        wh = rng.uniform(2, 30, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = rng.random(n).astype(np.float32)
        for thresh in (0.3, 0.7):
            mine = np.asarray(m.box_nms(boxes, scores, thresh)).astype(int).tolist()
            expected = amg.box_nms(boxes, scores, thresh).tolist()
            assert mine == expected, f"trial {trial}, threshold {thresh}: kept {mine}, expected {expected}"


CHECKS = [("19.1 the stability score", check_stability),
          ("19.2 sweep the two score thresholds", check_sweep),
          ("19.3 greedy box NMS", check_nms)]
