"""Checks for lesson 18's exercises: minisam's bilinear upsampling and connected components, the lesson's crop."""

import numpy as np

from minisam.kernels.resize import resize_bilinear
from minisam.modeling.common import mask_iou, mask_to_box
from minisam.training.shapes import make_scene
from minisam.utils.amg import connected_components


def bar(S, width, theta):   # lesson 18's bars, one of them: [S, S] bool
    yy, xx = np.mgrid[0:S, 0:S] + 0.5
    u = (xx - S / 2) * np.cos(theta) + (yy - S / 2) * np.sin(theta)
    v = -(xx - S / 2) * np.sin(theta) + (yy - S / 2) * np.cos(theta)
    return (np.abs(u) <= 0.35 * S) & (np.abs(v) <= width / 2)


def check_lowres(m):
    cases = [(make_scene(np.random.default_rng(s), 64).masks, 16) for s in range(2)]
    cases += [([bar(128, w, theta) for w in (1, 2, 4, 8, 12) for theta in (0.0, 0.4)], 64),
              ([bar(64, w, 1.1) for w in (1, 3, 6)], 16)]
    count = 0
    for masks, low_res in cases:
        for mask in masks:
            S = mask.shape[0]
            f = S // low_res
            area = mask.reshape(low_res, f, low_res, f).mean((1, 3)).astype(np.float32)
            expected = resize_bilinear(area - 0.5, (S, S)) > 0                 # F.interpolate's arithmetic
            mine = np.asarray(m.lowres_mask(mask, low_res))
            assert mine.shape == (S, S), f"shape {mine.shape}, expected {(S, S)}"
            if not np.array_equal(mine, expected):
                y, x = np.argwhere(mine != expected)[0]
                raise AssertionError(f"{S} px mask ({mask.sum()} pixels) at low res {low_res}: pixel (x={x}, y={y}) "
                                     f"is {bool(mine[y, x])}, expected {bool(expected[y, x])}; "
                                     f"{(mine != expected).sum()} pixels differ (bilinear, not nearest?)")
            count += 1
    ceilings = {w: float(mask_iou(np.asarray(m.lowres_mask(bar(128, w, 0.4), 64)), bar(128, w, 0.4)))
                for w in (1, 2, 12)}
    return (f"{count} masks; micro's best possible IoU (128 px, 64 x 64 logits) for a bar 1 / 2 / 12 px wide: "
            + " / ".join(f"{v:.2f}" for v in ceilings.values()))


def reference_stray(mask, truth):
    n, labels, _ = connected_components(mask)
    return sum(not truth[labels == c].any() for c in range(1, n))


def check_stray(m):
    rng = np.random.default_rng(1)
    total = 0
    for s in range(4):
        scene = make_scene(np.random.default_rng(30 + s), 64)
        for truth in scene.instance_masks:
            mask = truth | (rng.random(truth.shape) < 0.03)                     # specks, some touching diagonally
            mask[::7, ::5] |= np.roll(truth, 9, axis=1)[::7, ::5]
            expected = reference_stray(mask, truth)
            mine = int(m.stray_components(mask, truth))
            assert mine == expected, (f"scene {s}: {mine} stray components, expected {expected} (8-connected: "
                                      f"corner neighbours belong together)")
            total += expected
    diagonal = np.eye(6, dtype=bool)
    truth = np.zeros((6, 6), bool)
    assert int(m.stray_components(diagonal, truth)) == 1, "a diagonal line is one component"
    truth[5, 5] = True
    assert int(m.stray_components(diagonal, truth)) == 0, "a component touching the object by one pixel is not stray"
    assert int(m.stray_components(np.zeros((5, 5), bool), truth)) == 0, "an empty mask has no component"
    return f"{total} stray components found"


def reference_window(truth):
    H, W = truth.shape
    x0, y0, x1, y1 = (int(v) for v in mask_to_box(truth))
    side = max(24, 2 * max(x1 - x0 + 1, y1 - y0 + 1))
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    left = int(np.clip(round(cx - side / 2), 0, W - side))
    top = int(np.clip(round(cy - side / 2), 0, H - side))
    return left, top, side


def check_window(m):
    masks = []
    for s in range(6):
        scene = make_scene(np.random.default_rng(50 + s), 128)
        masks += [mk for mk in scene.instance_masks if mk.sum() < 300]          # the lesson's small objects
    for (y0, y1, x0, x1) in [(0, 5, 3, 8), (120, 128, 100, 128), (60, 63, 0, 30), (10, 19, 40, 47)]:
        mk = np.zeros((128, 128), bool)
        mk[y0:y1, x0:x1] = True                                                 # on the border, odd and even sides
        masks.append(mk)
    for i, truth in enumerate(masks):
        mine = tuple(int(v) for v in m.zoom_window(truth))
        expected = reference_window(truth)
        assert mine == expected, (f"object {i}, box {mask_to_box(truth).tolist()}: (left, top, side) {mine}, "
                                  f"expected {expected} (inside the image? rounded half to even?)")
    return f"{len(masks)} small objects, 4 of them on the image border"


CHECKS = [("18.1 the low-resolution ceiling", check_lowres),
          ("18.2 stray components", check_stray),
          ("18.3 the zoom-in crop", check_window)]
