"""Reference solutions for lesson 17's exercises."""

import numpy as np


def edge_strength(probabilities):
    p = np.pad(probabilities, ((0, 0), (1, 1), (1, 1)), mode="edge")
    H, W = probabilities.shape[-2:]

    def at(dy, dx):                                   # the neighbour at offset (dy, dx) of every pixel
        return p[:, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    strength = np.hypot(gx, gy).max(axis=0)
    return strength / max(strength.max(), 1e-9)


def _near(mask, r):                                    # pixels within r (square) of a True pixel
    H, W = mask.shape
    p = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy:dy + H, dx:dx + W]
    return out


def ods_f(strengths, truths, thresholds, tolerance=2):
    counts = np.zeros((len(thresholds), 4))
    for strength, truth in zip(strengths, truths):
        near_truth = _near(truth, tolerance)
        for k, t in enumerate(thresholds):
            pred = strength > t
            counts[k] += [(pred & near_truth).sum(), pred.sum(), (truth & _near(pred, tolerance)).sum(), truth.sum()]
    precision = counts[:, 0] / np.maximum(counts[:, 1], 1)
    recall = counts[:, 2] / np.maximum(counts[:, 3], 1)
    return float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-9)))


def average_recall(proposals, objects):
    best = []
    for obj in objects:
        inter = (proposals & obj).sum(axis=(1, 2))
        union = (proposals | obj).sum(axis=(1, 2))
        best.append((inter / np.maximum(union, 1)).max() if len(proposals) else 0.0)
    best = np.array(best)
    return float(np.mean([(best >= t).mean() for t in 0.5 + 0.05 * np.arange(10)]))
