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
WITHOUT_EXERCISES = set()
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


def _tiled_features(levels):                                        # 02.2: np.tile repeats the image, not each pixel
    S = levels[0].shape[-1]

    def up(x):
        f = S // x.shape[-1]
        return np.tile(x, (1, f, f))

    b = levels[-1]
    maps = [up(b), up(b - b.mean(axis=(1, 2), keepdims=True)), np.ones((1, S, S))] + [up(x) for x in levels[-2::-1]]
    feats = np.concatenate(maps, axis=0)
    return feats.reshape(len(feats), -1).T


def _fit_zero_one(batches, ridge=1.0):                              # 02.3: targets 0/1, not -1/+1
    gram = moment = 0
    for X, fg in batches:
        gram, moment = gram + X.T @ X, moment + X.T @ fg.astype(np.float64)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), moment)


def _dot_product_classes(image_vectors, class_vectors):             # 03.1: long class vectors win
    return np.argmax(image_vectors @ class_vectors.T, axis=1)


def _centroid_with_itself(vectors, labels):                         # 03.3: no item left out
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    centroids = np.stack([vectors[labels == k].mean(axis=0) for k in classes])
    cosine = vectors @ centroids.T / np.linalg.norm(centroids, axis=1)
    return float(np.mean(np.array(classes)[np.argmax(cosine, axis=1)] == labels))


def _swapped_click_labels(mask, truth):                             # 04.2: negative where the object was missed
    point, label = _solution("04").correction_click(mask, truth)
    return point, 1 - label


def _coin_per_token(num_tokens, ratio, rng):                        # 06.1: the number masked varies
    masked = rng.random(num_tokens) < ratio
    ids_shuffle = np.concatenate([np.flatnonzero(~masked), np.flatnonzero(masked)])
    return np.flatnonzero(~masked), masked, np.argsort(ids_shuffle)


def _gather_with_shuffle(encoded, mask_token, ids_restore):         # 06.2: ids_shuffle for ids_restore
    return _solution("06").decoder_input(encoded, mask_token, np.argsort(ids_restore))


def _loss_on_all_patches(pred, target, masked):                    # 06.3: the loss MAE argues against
    return float(((pred - target) ** 2).mean()), 2 * (pred - target) / pred.size


def _unnormalized_text(sparse, text_embedding, projection):         # 10.1: CLIP's embedding not l2-normalized
    return np.concatenate([(text_embedding @ projection).astype(np.float32)[:, None], sparse], axis=1)


def _colour_not_scaled(query, image, masks):                        # 10.2: 0..255 against a [0, 1] query
    return int(np.argmin([np.linalg.norm(image[m].mean(axis=0) - query) for m in masks]))


def _zero_padded_sobel(probabilities):                              # 17.1: a step at every image border
    H, W = probabilities.shape[-2:]
    p = np.pad(probabilities, ((0, 0), (1, 1), (1, 1)))
    at = lambda dy, dx: p[:, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]  # noqa: E731
    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    strength = np.hypot(gx, gy).max(axis=0)
    return strength / max(strength.max(), 1e-9)


def _best_threshold_per_image(strengths, truths, thresholds, tolerance=2):   # 17.2: OIS, not ODS
    ods_f = _solution("17").ods_f
    return float(np.mean([ods_f([s], [t], thresholds, tolerance) for s, t in zip(strengths, truths)]))


def _recall_at_half(proposals, objects):                            # 17.3: one threshold, not ten
    ious = [[(p & o).sum() / max((p | o).sum(), 1) for p in proposals] for o in objects]
    return float(np.mean([max(row, default=0.0) >= 0.5 for row in ious]))


def _nearest_upsampling(mask, low_res):                             # 18.1: blocks, not bilinear
    f = mask.shape[0] // low_res
    area = mask.reshape(low_res, f, low_res, f).mean(axis=(1, 3)) - 0.5
    return area.repeat(f, axis=0).repeat(f, axis=1) > 0


def _four_connected(mask, truth):                                   # 18.2: corner neighbours kept apart
    labels, n = np.zeros(mask.shape, int), 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        n += 1
        stack = [(y, x)]
        labels[y, x] = n
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = n
                    stack.append((ny, nx))
    return sum(not truth[labels == k].any() for k in range(1, n + 1))


def _crop_not_clipped(truth):                                       # 18.3: the crop leaves the image
    ys, xs = np.nonzero(truth)
    side = max(24, 2 * max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
    return (round((xs.min() + xs.max() + 1) / 2 - side / 2), round((ys.min() + ys.max() + 1) / 2 - side / 2), side)


def _swap_mlps_only(p, i, j):                                       # 12.3: the hypernetworks alone
    q = copy.deepcopy(p)
    q["output_hypernetworks_mlps"][i], q["output_hypernetworks_mlps"][j] = \
        q["output_hypernetworks_mlps"][j], q["output_hypernetworks_mlps"][i]
    return q


WRONG = {
    "02.2 upsamples with np.tile": ("02", "02.2", dict(decoder_features=_tiled_features)),
    "02.3 fits 0/1 labels": ("02", "02.3", dict(fit_readout=_fit_zero_one)),
    "03.1 ranks classes by dot product": ("03", "03.1", dict(zero_shot_classify=_dot_product_classes)),
    "03.3 keeps each item in its own centroid": ("03", "03.3", dict(leave_one_out_accuracy=_centroid_with_itself)),
    "04.2 swaps the click labels": ("04", "04.2", dict(correction_click=_swapped_click_labels)),
    "06.1 masks each token by a coin flip": ("06", "06.1", dict(random_masking=_coin_per_token)),
    "06.2 gathers with the shuffle": ("06", "06.2", dict(decoder_input=_gather_with_shuffle)),
    "06.3 takes the loss on all patches": ("06", "06.3", dict(mae_loss_and_grad=_loss_on_all_patches)),
    "10.1 does not normalize the embedding": ("10", "10.1", dict(add_text_token=_unnormalized_text)),
    "10.2 compares 0-255 colours with [0, 1]": ("10", "10.2", dict(pick_by_text=_colour_not_scaled)),
    "17.1 zero-pads the maps": ("17", "17.1", dict(edge_strength=_zero_padded_sobel)),
    "17.2 picks a threshold per image": ("17", "17.2", dict(ods_f=_best_threshold_per_image)),
    "17.3 recall at IoU 0.5 only": ("17", "17.3", dict(average_recall=_recall_at_half)),
    "18.1 upsamples by repeating pixels": ("18", "18.1", dict(lowres_mask=_nearest_upsampling)),
    "18.2 joins 4-neighbours only": ("18", "18.2", dict(stray_components=_four_connected)),
    "18.3 lets the crop leave the image": ("18", "18.3", dict(zoom_window=_crop_not_clipped)),
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
