"""Checks for lesson 15's exercises: the distributions the paper's sampling implies, and
minisam/training/interactive.py."""

import numpy as np

from minisam.training.interactive import noisy_box


def check_error_point(m):
    H, W = 20, 31                                   # not square: catches (row, col) for (x, y)
    target = np.zeros((H, W), bool)
    target[3:15, 4:20] = True
    pred = np.zeros((H, W), bool)
    pred[5:15, 4:26] = True                         # misses rows 3-4 (32 px), takes columns 20-25 (60 px)
    false_neg, false_pos = target & ~pred, pred & ~target
    assert m.sample_error_point(target, target, np.random.default_rng(0)) is None, \
        "an exact prediction has no error region: return None"
    rng = np.random.default_rng(1)
    draws = 6000
    counts = np.zeros((H, W), int)
    positives = 0
    for _ in range(draws):
        point, label = m.sample_error_point(pred, target, rng)
        x, y = (int(v) for v in point)
        assert 0 <= x < W and 0 <= y < H, f"({x}, {y}) is outside the {W} x {H} image (x = column, y = row)"
        assert false_neg[y, x] or false_pos[y, x], f"({x}, {y}) is not in the error region (x = column, y = row)"
        assert int(label) == int(false_neg[y, x]), f"({x}, {y}): label {label}, expected {int(false_neg[y, x])}"
        counts[y, x] += 1
        positives += int(label)
    n_errors = int((false_neg | false_pos).sum())
    expected = draws / n_errors                     # per error pixel, if uniform
    worst = np.abs(counts[false_neg | false_pos] - expected).max()
    assert worst <= 5 * np.sqrt(expected), f"not uniform: a pixel was drawn {expected:.0f} +- {worst:.0f} times"
    share = positives / draws
    assert abs(share - false_neg.sum() / n_errors) < 0.03, \
        f"{share:.2f} positive clicks, expected {false_neg.sum() / n_errors:.2f} (the false negatives' share)"
    return f"{share:.2f} of the clicks positive"


def check_schedule(m):
    slots = np.zeros(9, int)
    for seed in range(2700):
        kinds = list(m.round_schedule(np.random.default_rng(seed)))
        assert len(kinds) == 11, f"{len(kinds)} rounds: {kinds}"
        assert kinds[0] == "initial" and kinds[-1] == "mask_only", f"first and last rounds: {kinds}"
        assert kinds.count("point") == 8 and kinds.count("mask_only") == 2, f"round kinds: {kinds}"
        slots[kinds[1:-1].index("mask_only")] += 1
    expected = 2700 / 9
    assert np.abs(slots - expected).max() < 5 * np.sqrt(expected), \
        f"the inner mask-only round's place is not uniform over the 9 slots: {slots.tolist()}"


def check_box(m):
    z = np.random.default_rng(0).normal(size=400_000)               # E|clip(sigma z, -20, 20)| by sampling
    for shape, (y0, y1, x0, x1) in [((200, 300), (80, 110, 100, 160)), ((300, 520), (20, 260, 40, 480))]:
        mask = np.zeros(shape, bool)
        mask[y0:y1 + 1, x0:x1 + 1] = True
        tight = np.array([x0, y0, x1, y1], np.float64)
        mine = np.array([m.noisy_box(mask, np.random.default_rng(s)) for s in range(1500)], np.float64)
        assert np.all(mine[:, 0] <= mine[:, 2]) and np.all(mine[:, 1] <= mine[:, 3]), "boxes must be ordered"
        assert np.all(mine >= 0) and np.all(mine[:, [0, 2]] <= shape[1] - 1) \
            and np.all(mine[:, [1, 3]] <= shape[0] - 1), "boxes must stay in the image"
        assert np.abs(mine - tight).max() <= 20 + 1e-4, "a coordinate moved by more than 20 px"
        sides = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], np.float64)
        expected = np.array([np.abs(np.clip(0.1 * side * z, -20, 20)).mean() for side in sides])
        spread = np.abs(mine - tight).mean(0)
        # 1500 draws: the mean |noise| is known to about 2%; 8% is four times that
        assert np.allclose(spread, expected, rtol=0.08), \
            f"mean |noise| per coordinate {spread.round(2).tolist()}, expected about {expected.round(2).tolist()}"
    reference = noisy_box(mask, np.random.default_rng(0))              # minisam's, on the last mask
    assert np.all(np.abs(reference - tight) <= 20), "minisam's noisy_box disagrees with this check"
    return "a 60 x 30 box and a 440 x 240 one (clipped at 20 px)"


CHECKS = [("15.1 a click from the error region", check_error_point),
          ("15.2 the 11 rounds' schedule", check_schedule),
          ("15.3 a noisy box", check_box)]
