"""Exercises for lesson 14: the losses SAM is trained with.

Fill in each function, then run ``python lessons/exercises.py 14``. NumPy only in your answers.
Inputs are float64 arrays; a "mask" axis comes first: logits and targets are [M, H, W].
"""

import numpy as np  # noqa: F401  (for your answers)


def dice_loss_and_grad(logits, targets):
    """Exercise 14.1. Derive and code the dice gradient.

    Per mask, with p = sigmoid(logits): loss = 1 - (2 sum(p g) + 1) / (sum(p) + sum(g) + 1).
    Returns ``(loss [M], dlogits [M, H, W])`` with dlogits = d(sum of the M losses) / d logits.
    Derive it on paper first (quotient rule, then dp/dx = p (1 - p)); the check compares it
    with finite differences.
    """
    raise NotImplementedError("14.1 dice_loss_and_grad")


def focal_loss_and_grad(logits, targets, alpha=0.25, gamma=2.0):
    """Exercise 14.2. The focal loss and its gradient.

    Per pixel: BCE = -y log p - (1 - y) log(1 - p), p_t = p if y = 1 else 1 - p,
    alpha_t = alpha y + (1 - alpha)(1 - y), FL = alpha_t (1 - p_t)^gamma BCE; the loss of a mask
    is the mean of FL over its pixels. Returns ``(loss [M], dlogits [M, H, W])``. Logits stay
    within +-30 here, so the plain formulas are stable enough.
    """
    raise NotImplementedError("14.2 focal_loss_and_grad")


def sam_loss_min(logits, iou_pred, target):
    """Exercise 14.3. The loss of one prompt's K outputs: the minimum over masks, plus IoU MSE.

    ``logits``: [K, H, W], ``iou_pred``: [K], ``target``: [H, W] in {0, 1}. The mask loss of
    output k is 20 * focal_k + dice_k (alpha 0.25, gamma 2); k* is the output with the smallest
    (the first on a tie). Returns ``(total, k*)`` with total = mask loss of k* +
    (iou_pred[k*] - IoU(logits[k*] > 0, target))^2, IoU = |A & B| / max(|A | B|, 1).
    """
    raise NotImplementedError("14.3 sam_loss_min")
