"""Exercises for lesson 15: the training algorithm's 11 rounds.

Fill in each function, then run ``python lessons/exercises.py 15``. NumPy only in your answers;
``rng`` is a ``numpy.random.Generator``: draw every random number from it.
"""

import numpy as np  # noqa: F401  (for your answers)


def sample_error_point(pred, target, rng):
    """Exercise 15.1. The next click: uniform on the error region.

    ``pred``, ``target``: [H, W] bool. The error region is the false negatives (target & ~pred)
    and the false positives (pred & ~target). Draw one of its pixels uniformly and return
    ``((x, y), label)``: x the column, y the row (a float32 array [2]), label 1 for a false
    negative (a positive click: "this is part of the object"), 0 for a false positive. Return
    None when the prediction is exact.
    """
    raise NotImplementedError("15.1 sample_error_point")


def round_schedule(rng):
    """Exercise 15.2. The kinds of the 11 rounds.

    Round 1 is "initial" (the first prompt); then 8 "point" rounds (one new click each) and 2
    "mask_only" rounds (no new click, only the previous mask): one at a uniformly random place
    among the point rounds (before the first, between two, or after the last: 9 places), the
    other always last. Returns the list of 11 kinds.
    """
    raise NotImplementedError("15.2 round_schedule")


def noisy_box(mask, rng):
    """Exercise 15.3. A box prompt with the paper's noise.

    The tight box of ``mask`` [H, W] bool as (x0, y0, x1, y1) with x1, y1 the last column and
    row of the mask (inclusive); add Gaussian noise to each coordinate with standard deviation
    10% of the box's side (its width x1 - x0 for x0 and x1, its height for y0 and y1), each draw
    clipped to +-20 pixels; then clip to the image ([0, W - 1] x [0, H - 1]) and reorder so that
    x0 <= x1 and y0 <= y1. Returns a float32 array [4].
    """
    raise NotImplementedError("15.3 noisy_box")
