"""The course's exercises: every checker fails on its unmodified stub and passes on its solution.

Lessons are found by glob (``lessons/NN_*.py``) and exercises by number, so a lesson without
exercises, or a checker that a stub or a plausible wrong answer gets past, fails here. The
wrong answers below are the mistakes each exercise is about (padding on the wrong side, the
missing chain-rule factor, (row, col) for (x, y), ...): each must be caught by its checker.
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import os
import subprocess
import sys
import types

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS_DIR = os.path.join(ROOT, "lessons")
ALL_NUMBERS = sorted({os.path.basename(p)[:2] for p in glob.glob(os.path.join(LESSONS_DIR, "[0-9][0-9]_*.py"))})
# Lessons whose exercises are not written yet: their tests are expected failures (strict, so
# each entry must go once its exercises exist), and no other lesson may lack exercises.
WITHOUT_EXERCISES = {"02", "03", "04", "06", "10", "17", "18"}
NUMBERS = [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="exercises not written yet"))
           if n in WITHOUT_EXERCISES else n for n in ALL_NUMBERS]


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


exercises = _load(os.path.join(LESSONS_DIR, "exercises.py"), "course_exercises")


def test_every_lesson_has_two_or_three_exercises_a_checker_and_solutions():
    assert ALL_NUMBERS, "no lessons found"
    have = set(exercises.numbers())
    assert set(ALL_NUMBERS) - have == WITHOUT_EXERCISES, "WITHOUT_EXERCISES lists exactly the lessons lacking exercises"
    for number in sorted(have):
        stub = exercises.find(exercises.EXERCISES, number)
        solution = exercises.find(os.path.join(exercises.EXERCISES, "solutions"), number)
        checker = exercises.find(os.path.join(exercises.EXERCISES, "checks"), number)
        lesson = glob.glob(os.path.join(LESSONS_DIR, f"{number}_*.py"))[0]
        for path in (stub, solution, checker):
            assert os.path.basename(path) == os.path.basename(lesson), f"{path} is not named like {lesson}"
        checks = exercises.load_checks(number)
        assert 2 <= len(checks.CHECKS) <= 3, f"lesson {number} has {len(checks.CHECKS)} exercises"
        assert all(title.startswith(f"{number}.") for title, _ in checks.CHECKS), "titles start with the number"


@pytest.mark.parametrize("number", NUMBERS)
def test_every_check_fails_on_the_stubs(number):
    results = exercises.run(number)
    assert results and all(not passed for _, passed, _ in results), \
        f"a check passes on the unmodified stub: {[(t, m) for t, ok, m in results if ok]}"
    assert all("not done yet" in message for _, _, message in results), results


@pytest.mark.parametrize("number", NUMBERS)
def test_every_check_passes_on_the_solutions(number):
    results = exercises.run(number, solutions=True)
    failed = [(title, message) for title, passed, message in results if not passed]
    assert not failed, failed


def test_the_command_line(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    script = os.path.join(LESSONS_DIR, "exercises.py")
    number = ALL_NUMBERS[0]
    stub = subprocess.run([sys.executable, script, number], capture_output=True, text=True, env=env, timeout=600)
    assert stub.returncode == 1 and "FAIL" in stub.stdout and "not done yet" in stub.stdout, stub.stdout + stub.stderr
    solved = subprocess.run([sys.executable, script, number, "--solutions"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert solved.returncode == 0 and "FAIL" not in solved.stdout, solved.stdout + solved.stderr
    unknown = subprocess.run([sys.executable, script, "99"], capture_output=True, text=True, env=env, timeout=600)
    assert unknown.returncode == 2 and "99_*.py" in unknown.stderr, unknown.stderr
    listing = subprocess.run([sys.executable, script, "--list"], capture_output=True, text=True, env=env, timeout=600)
    assert listing.returncode == 0 and all(f"{n}." in listing.stdout for n in exercises.numbers()), listing.stdout


# --------------------------------------------------------------------------------------
# Plausible wrong answers, each of which its checker must reject
# --------------------------------------------------------------------------------------

def _solution(number):
    return _load(exercises.find(os.path.join(exercises.EXERCISES, "solutions"), number), f"solution_{number}")


def _check(number, title_prefix):
    checks = exercises.load_checks(number)
    return next(fn for title, fn in checks.CHECKS if title.startswith(title_prefix))


def _with(module, **functions):
    patched = types.ModuleType(module.__name__ + "_wrong")
    patched.__dict__.update(module.__dict__)
    patched.__dict__.update(functions)
    return patched


def _pad_top_left(x, w):                                            # 07.1: padding on the wrong side
    B, H, W, D = x.shape
    Hp, Wp = -(-H // w) * w, -(-W // w) * w
    x = np.pad(x, ((0, 0), (Hp - H, 0), (Wp - W, 0), (0, 0)))
    return x.reshape(B, Hp // w, w, Wp // w, w, D).transpose(0, 1, 3, 2, 4, 5).reshape(-1, w, w, D), (Hp, Wp)


def _dice_without_sigmoid_factor(logits, targets):                  # 14.1: dL/dp reported as dL/dx
    sol = _solution("14")
    loss, grad = sol.dice_loss_and_grad(logits, targets)
    p = 1 / (1 + np.exp(-logits))
    return loss, grad / (p * (1 - p))


def _max_instead_of_min(logits, iou_pred, target):                  # 14.3: the worst output trained
    sol = _solution("14")
    t = np.broadcast_to(target, logits.shape).astype(np.float64)
    mask_loss = 20 * sol.focal_loss_and_grad(logits, t)[0] + sol.dice_loss_and_grad(logits, t)[0]
    k = int(np.argmax(mask_loss))
    pred, gt = logits[k] > 0, target > 0.5
    iou = np.logical_and(pred, gt).sum() / max(np.logical_or(pred, gt).sum(), 1)
    return float(mask_loss[k] + (iou_pred[k] - iou) ** 2), k


def _row_col(pred, target, rng):                                    # 15.1: (row, col) for (x, y)
    point = _solution("15").sample_error_point(pred, target, rng)
    return None if point is None else (point[0][::-1].copy(), point[1])


def _eight_slots(rng):                                              # 15.2: never right after round 1
    middle = ["point"] * 8
    middle.insert(int(rng.integers(1, 9)), "mask_only")
    return ["initial"] + middle + ["mask_only"]


def _inverted_stability(logits, threshold=0.0, offset=1.0):          # 19.1: thresholds swapped
    return _solution("19").stability_score(logits, threshold, -offset)


def _no_rescale(q, k, v, block):                                    # 21.1: the running sum not rescaled
    Tq, d = q.shape
    m, s, acc = np.full((Tq, 1), -np.inf), np.zeros((Tq, 1)), np.zeros((Tq, v.shape[1]))
    for start in range(0, k.shape[0], block):
        scores = q @ k[start:start + block].T / np.sqrt(d)
        new = np.maximum(m, scores.max(1, keepdims=True))
        w = np.exp(scores - new)
        s, acc, m = s + w.sum(1, keepdims=True), acc * np.exp(m - new) + w @ v[start:start + block], new
    return acc / s


def _no_bias_correction(param, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1):   # 22.3
    b1, b2 = betas
    param = param * (1 - lr * weight_decay)
    m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad * grad
    return param - lr * m / (np.sqrt(v) + eps), m, v


def _swap_mlps_only(p, i, j):                                       # 12.3: the hypernetworks alone
    q = copy.deepcopy(p)
    q["output_hypernetworks_mlps"][i], q["output_hypernetworks_mlps"][j] = \
        q["output_hypernetworks_mlps"][j], q["output_hypernetworks_mlps"][i]
    return q


WRONG = {
    "07.1 pads at the top left": ("07", "07.1", dict(window_partition=_pad_top_left)),
    "09.2 two pixels on different rays": ("09", "09.2", dict(confusable_pair=lambda S, g: ((S - 2, 2), (2, S - 2)))),
    "12.3 swaps only the hypernetwork MLPs": ("12", "12.3", dict(swap_mask_outputs=_swap_mlps_only)),
    "14.1 forgets dp/dx = p (1 - p)": ("14", "14.1", dict(dice_loss_and_grad=_dice_without_sigmoid_factor)),
    "14.3 trains the worst output": ("14", "14.3", dict(sam_loss_min=_max_instead_of_min)),
    "15.1 returns (row, col)": ("15", "15.1", dict(sample_error_point=_row_col)),
    "15.2 uses 8 slots, not 9": ("15", "15.2", dict(round_schedule=_eight_slots)),
    "19.1 swaps the two thresholds": ("19", "19.1", dict(stability_score=_inverted_stability)),
    "21.1 does not rescale the running sum": ("21", "21.1", dict(blocked_attention=_no_rescale)),
    "22.3 has no bias correction": ("22", "22.3", dict(adamw_step=_no_bias_correction)),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_a_plausible_wrong_answer_is_caught(case):
    number, title, functions = WRONG[case]
    if number not in ALL_NUMBERS:
        pytest.skip(f"no lesson {number} in this course")
    check = _check(number, title)
    solution = _solution(number)
    check(solution)                                                  # the right answer passes ...
    with pytest.raises(AssertionError):                              # ... and the wrong one does not
        check(_with(solution, **functions))
