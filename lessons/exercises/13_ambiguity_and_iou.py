"""Exercises for lesson 13: ambiguity, three masks and a predicted IoU for each.

Fill in each function, then run ``python lessons/exercises.py 13``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)


def use_multimask(num_points, has_box, has_mask=False):
    """Exercise 13.1. When should the decoder return three masks instead of one?

    Only for the one ambiguous prompt: a single point, with no box (a box counts as two
    points) and no mask prompt (a previous mask already says which object is meant). Returns bool.
    """
    raise NotImplementedError("13.1 use_multimask")


def chosen_and_oracle_iou(masks, scores, target):
    """Exercise 13.2. What the IoU head's choice costs, against an oracle.

    ``masks``: [K, H, W] bool, the candidate masks of one prompt; ``scores``: [K] predicted
    IoUs; ``target``: [H, W] bool. IoU(a, b) = |a & b| / max(|a | b|, 1). Returns
    ``(chosen, oracle)``: the IoU of the mask with the highest score (the first one on a tie)
    and the best IoU of any of the K masks (what an oracle that knows the target would pick:
    the paper reports both).
    """
    raise NotImplementedError("13.2 chosen_and_oracle_iou")


def calibration(predicted, actual):
    """Exercise 13.3. How good is the IoU head?

    ``predicted``, ``actual``: [n] predicted and measured IoUs of n masks. Returns
    ``(mean_abs_error, correlation)``: the mean of |predicted - actual| and Pearson's
    correlation coefficient (covariance over the product of the standard deviations).
    """
    raise NotImplementedError("13.3 calibration")
