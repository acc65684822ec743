"""Checks for lesson 13's exercises: minisam's multimask rule and mask IoU, NumPy's statistics."""

import numpy as np

from minisam.modeling.common import mask_iou
from minisam.training.interactive import use_multimask
from minisam.training.shapes import make_scene


def check_multimask(m):
    for n in range(4):
        for box in (False, True):
            for mask in (False, True):
                mine = bool(m.use_multimask(n, box, mask))
                expected = use_multimask(n, box, mask)
                assert mine == expected, f"{n} points, box {box}, mask {mask}: {mine}, expected {expected}"


def check_chosen_oracle(m):
    rng = np.random.default_rng(0)
    for s in range(20):
        scene = make_scene(np.random.default_rng(s), 96)
        if not scene.masks:
            continue
        masks = np.stack([scene.masks[i] for i in rng.choice(len(scene.masks), 3)])
        target = scene.masks[int(rng.integers(len(scene.masks)))]
        scores = rng.random(3)
        if s % 5 == 0:
            scores[:] = 0.5                   # a tie: the first mask is chosen
        ious = mask_iou(masks, target[None])
        expected = (float(ious[int(np.argmax(scores))]), float(ious.max()))
        mine = tuple(float(v) for v in m.chosen_and_oracle_iou(masks, scores, target))
        assert np.allclose(mine, expected), f"scene {s}: {mine}, expected {expected}"
    empty = np.zeros((2, 5, 5), bool)
    assert tuple(m.chosen_and_oracle_iou(empty, np.array([0.1, 0.2]), empty[0])) == (0.0, 0.0), \
        "two empty masks have IoU 0 here (|a | b| counted as at least 1)"


def check_calibration(m):
    rng = np.random.default_rng(1)
    actual = rng.random(50)
    for predicted in (actual + rng.normal(0, 0.1, 50), 1 - actual, rng.random(50)):
        error, corr = m.calibration(predicted, actual)
        assert np.isclose(error, np.abs(predicted - actual).mean()), f"mean |error| {error}"
        assert np.isclose(corr, np.corrcoef(predicted, actual)[0, 1]), \
            f"correlation {corr}, expected {np.corrcoef(predicted, actual)[0, 1]}"


CHECKS = [("13.1 three masks only for a lone point", check_multimask),
          ("13.2 the chosen mask against an oracle", check_chosen_oracle),
          ("13.3 the IoU head's error and correlation", check_calibration)]
