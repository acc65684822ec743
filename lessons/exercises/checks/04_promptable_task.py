"""Checks for lesson 04's exercises: minisam's interior point, tight box, error regions and point grid."""

import numpy as np

from minisam.training.interactive import error_regions, mask_box
from minisam.training.shapes import interior_point, make_scene
from minisam.utils.amg import build_point_grid


def test_masks():
    masks = []
    for s in range(4):
        scene = make_scene(np.random.default_rng(s), 96)
        masks += [scene.masks[i] for i in scene.objects]
    edge = np.zeros((40, 50), bool)
    edge[5:30, 0:12] = True                        # touches the left border: border pixels never survive
    corner = np.zeros((30, 30), bool)
    corner[20:, 22:] = True                        # the bottom right corner
    line = np.zeros((9, 9), bool)
    line[4, 2:7] = True                            # cannot be eroded at all
    return masks + [edge, corner, line]


def check_point_and_box(m):
    for i, mask in enumerate(test_masks()):
        point, box = (np.asarray(v, np.float64) for v in m.point_and_box(mask))
        expected = interior_point(mask) - 0.5       # minisam gives the pixel's centre
        assert point.shape == (2,) and np.array_equal(point, expected), \
            f"mask {i} ({mask.sum()} pixels): point {point.tolist()}, expected (x, y) {expected.tolist()}"
        assert mask[int(point[1]), int(point[0])], f"mask {i}: the point (x, y) {point.tolist()} is not in the mask"
        assert np.array_equal(box, mask_box(mask)), f"mask {i}: box {box.tolist()}, expected {mask_box(mask).tolist()}"
    return f"{len(test_masks())} masks, three of them on the image border"


def check_correction(m):
    rng = np.random.default_rng(1)
    n = {0: 0, 1: 0}
    for truth in test_masks()[:-1]:
        shifted = np.roll(truth, (int(rng.integers(-3, 4)), int(rng.integers(1, 5))), axis=(0, 1))
        grown = truth.copy()
        grown[1:] |= truth[:-1]
        grown[:, 1:] |= truth[:, :-1]
        blob = np.zeros_like(truth)
        r, c = (int(v) for v in np.argwhere(truth)[0])
        blob[max(r - 2, 0):r + 6, max(c - 6, 0):c + 6] = True
        for mask in (shifted, grown, truth & ~np.roll(truth, 3, axis=0), truth | blob, shifted | blob):
            if np.array_equal(mask, truth):
                continue
            point, label = m.correction_click(mask, truth)
            missed, taken = error_regions(mask, truth)
            region, expected_label = (missed, 1) if missed.sum() >= taken.sum() else (taken, 0)
            expected = interior_point(region) - 0.5
            assert int(label) == expected_label, (f"{missed.sum()} pixels missed, {taken.sum()} wrongly taken: label "
                                                  f"{label}, expected {expected_label} (1 adds what was missed)")
            assert np.array_equal(np.asarray(point, np.float64), expected), \
                f"the click (x, y) {np.asarray(point).tolist()}, expected {expected.tolist()}"
            n[expected_label] += 1
    return f"{n[1]} positive and {n[0]} negative corrections"


def check_grid(m):
    for n, h, w in [(16, 128, 128), (4, 64, 64), (3, 30, 60), (5, 100, 40)]:
        mine = np.asarray(m.point_grid(n, h, w), np.float64)
        expected = build_point_grid(n) * np.array([w, h])           # what the generator prompts with
        assert mine.shape == (n * n, 2), f"n {n}: shape {mine.shape}, expected {(n * n, 2)}"
        assert np.allclose(mine, expected, atol=1e-9), \
            f"n {n}, {h} x {w}: first points {mine[:3].tolist()}, expected {expected[:3].tolist()}"
    return "16 x 16 = 256 prompts, one SAM decoder run each, for everything"


CHECKS = [("04.1 a click and a box from a mask", check_point_and_box),
          ("04.2 the next click: the larger error", check_correction),
          ("04.3 the automatic generator's grid", check_grid)]
