"""Checks for lesson 17's exercises: the lesson's Sobel, boundaries, edge counts and average recall."""

import numpy as np
from _common import close

from minisam.modeling.common import mask_iou
from minisam.training.shapes import make_scene


def sobel(maps):   # lesson 17's: [..., H, W] -> [..., H, W]
    p = np.pad(maps, [(0, 0)] * (maps.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    gx = ((p[..., :-2, 2:] + 2 * p[..., 1:-1, 2:] + p[..., 2:, 2:])
          - (p[..., :-2, :-2] + 2 * p[..., 1:-1, :-2] + p[..., 2:, :-2]))
    gy = ((p[..., 2:, :-2] + 2 * p[..., 2:, 1:-1] + p[..., 2:, 2:])
          - (p[..., :-2, :-2] + 2 * p[..., :-2, 1:-1] + p[..., :-2, 2:]))
    return np.hypot(gx, gy)


def dilate(m, r):   # lesson 17's: [H, W] bool, square structuring element of radius r
    out = m.copy()
    for _ in range(r):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[1:, 1:] |= out[:-1, :-1]
        grown[:-1, :-1] |= out[1:, 1:]
        grown[1:, :-1] |= out[:-1, 1:]
        grown[:-1, 1:] |= out[1:, :-1]
        out = grown
    return out


def boundaries(masks):   # lesson 17's: the pixels of a mask with a 4-neighbour outside it
    edge = np.zeros(masks[0].shape, bool)
    for m in masks:
        inner = m.copy()
        inner[1:] &= m[:-1]
        inner[:-1] &= m[1:]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        edge |= m & ~inner
    return edge


def counts(strength, truth, thresholds, tolerance):
    near = dilate(truth, tolerance)
    return np.array([[((strength > t) & near).sum(), (strength > t).sum(),
                      (truth & dilate(strength > t, tolerance)).sum(), truth.sum()] for t in thresholds], np.float64)


def best_f(c):
    precision, recall = c[:, 0] / np.maximum(c[:, 1], 1), c[:, 2] / np.maximum(c[:, 3], 1)
    return float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-9)))


def scenes(seed, n, size=64):
    """n scenes with at least one mask each."""
    found, k = [], 0
    while len(found) < n:
        scene = make_scene(np.random.default_rng(seed + k), size, min_area=20)
        k += 1
        if scene.objects:
            found.append(scene)
    return found


def soft_masks(scene, rng):
    """Probability maps like a SAM's: the scene's masks, blurred a little and noisy, [K, H, W]."""
    maps = np.stack(scene.masks).astype(np.float64)
    maps = (maps + np.roll(maps, 1, 1) + np.roll(maps, 1, 2) + np.roll(maps, -1, 1)) / 4
    return np.clip(maps + rng.normal(0, 0.05, maps.shape), 0, 1)


def check_edges(m):
    rng = np.random.default_rng(0)
    for s, scene in enumerate(scenes(10, 3)):
        probabilities = soft_masks(scene, rng)
        probabilities[0, :, 0] = 1.0                            # something on the border: padding matters
        strength = sobel(probabilities).max(axis=0)
        expected = strength / max(strength.max(), 1e-9)
        close(m.edge_strength(probabilities), expected, f"scene {s}: edge strength", rtol=1e-6, atol=1e-9)
    flat = np.full((2, 8, 8), 0.3)
    close(m.edge_strength(flat), np.zeros((8, 8)), "constant maps (no edge anywhere)", atol=1e-12)


def check_ods(m):
    rng = np.random.default_rng(1)
    thresholds = np.linspace(0.05, 0.95, 19)
    strengths, truths = [], []
    for s, scene in enumerate(scenes(20, 4)):
        truth = boundaries(scene.masks)
        # a good edge map, but on a different scale in each image: their best thresholds differ
        soft = np.clip(0.25 * s + 0.2 + 0.15 * dilate(truth, 1) + rng.normal(0, 0.15, truth.shape), 0, 1) * truth
        strength = np.clip(soft + rng.random(truth.shape) * (0.2 + 0.2 * s), 0, 1)
        strengths.append(strength)
        truths.append(truth)
    for tol in (2, 1):
        total = sum(counts(st, tr, thresholds, tol) for st, tr in zip(strengths, truths))
        expected = best_f(total)
        per_image = np.mean([best_f(counts(st, tr, thresholds, tol)) for st, tr in zip(strengths, truths)])
        mine = float(m.ods_f(strengths, truths, thresholds, tol))
        assert np.isclose(mine, expected, rtol=1e-9), \
            (f"tolerance {tol}: F {mine:.4f}, expected {expected:.4f} (the best F of each image, averaged, "
             f"would be {per_image:.4f}: sum the counts over all images first)")
    return f"ODS F {best_f(sum(counts(s, t, thresholds, 2) for s, t in zip(strengths, truths))):.3f} on 4 scenes"


def check_average_recall(m):
    rng = np.random.default_rng(2)
    thresholds = 0.5 + 0.05 * np.arange(10)
    values = []
    for s, scene in enumerate(scenes(40, 6)):
        objects = np.stack(scene.instance_masks)
        proposals = np.stack([np.roll(mk, tuple(rng.integers(-2, 3, 2)), axis=(0, 1)) for mk in scene.masks] +
                             [rng.random((64, 64)) < 0.1])     # each mask shifted a little, and noise
        best = mask_iou(objects[:, None], proposals[None]).max(axis=1)
        assert np.abs(best[:, None] - thresholds).min() > 1e-9, "a best IoU on a threshold: pick another seed"
        expected = float(np.mean([(best >= t).mean() for t in thresholds]))
        mine = float(m.average_recall(proposals, objects))
        assert np.isclose(mine, expected), (f"scene {s}: AR {mine:.4f}, expected {expected:.4f} (best IoUs "
                                            f"{np.round(best, 3).tolist()}; the mean over the 10 thresholds)")
        values.append(expected)
    none = float(m.average_recall(np.zeros((0, 64, 64), bool), objects))
    assert none == 0.0, f"no proposals: AR {none}, expected 0"
    return f"AR per scene {', '.join(f'{v:.2f}' for v in values)}"


CHECKS = [("17.1 edges from mask probabilities", check_edges),
          ("17.2 the ODS F-measure", check_ods),
          ("17.3 average recall over IoU thresholds", check_average_recall)]
