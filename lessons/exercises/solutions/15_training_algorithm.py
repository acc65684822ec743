"""Reference solutions for lesson 15's exercises."""

import numpy as np


def sample_error_point(pred, target, rng):
    false_neg, false_pos = target & ~pred, pred & ~target
    errors = np.flatnonzero(false_neg | false_pos)
    if errors.size == 0:
        return None
    row, col = divmod(int(errors[rng.integers(errors.size)]), pred.shape[1])
    return np.array([col, row], np.float32), int(false_neg[row, col])


def round_schedule(rng):
    middle = ["point"] * 8
    middle.insert(int(rng.integers(0, 9)), "mask_only")
    return ["initial"] + middle + ["mask_only"]


def noisy_box(mask, rng):
    rows, cols = np.nonzero(mask)
    box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], np.float64)
    width, height = box[2] - box[0], box[3] - box[1]
    jitter = np.clip(rng.normal(0.0, 1.0, 4) * 0.1 * np.array([width, height, width, height]), -20, 20)
    h, w = mask.shape
    box = np.clip(box + jitter, 0, [w - 1, h - 1, w - 1, h - 1])
    x0, x1 = sorted(box[[0, 2]])
    y0, y1 = sorted(box[[1, 3]])
    return np.array([x0, y0, x1, y1], np.float32)
