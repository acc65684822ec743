"""Checks for lesson 14's exercises: against minisam/training/losses.py and finite differences."""

import numpy as np
from _common import close

from minisam.training.losses import dice_loss, sam_loss, sigmoid_focal_loss


def inputs(seed, shape=(3, 6, 7)):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 3, shape), (rng.random(shape) < 0.3).astype(np.float64)


def finite_differences(f, x, h=1e-6):
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (f(up).sum() - f(down).sum()) / (2 * h)
    return fd


def check_dice(m):
    x, y = inputs(0)
    loss, grad = m.dice_loss_and_grad(x, y)
    close(loss, dice_loss(x, y), "dice loss", rtol=1e-9, atol=1e-12)
    fd = finite_differences(lambda z: m.dice_loss_and_grad(z, y)[0], x)
    # float64 central differences with h = 1e-6: truncation and rounding far below 1e-6
    close(grad, fd, "dice gradient vs finite differences", rtol=1e-5, atol=1e-8)
    close(grad, dice_loss(x, y, grad=True)[1], "dice gradient vs minisam", rtol=1e-9, atol=1e-12)
    return f"largest |gradient| {np.abs(grad).max():.2e}"


def check_focal(m):
    x, y = inputs(1)
    for alpha, gamma in [(0.25, 2.0), (0.5, 1.0), (0.25, 0.0)]:
        loss, grad = m.focal_loss_and_grad(x, y, alpha, gamma)
        ref_loss, ref_grad = sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, grad=True)
        close(loss, ref_loss, f"focal loss (alpha {alpha}, gamma {gamma})", rtol=1e-7, atol=1e-12)
        close(grad, ref_grad, f"focal gradient (alpha {alpha}, gamma {gamma})", rtol=1e-6, atol=1e-12)


def check_min(m):
    rng = np.random.default_rng(2)
    target = np.zeros((16, 16))
    target[4:12, 3:10] = 1
    for trial in range(6):
        logits = rng.normal(0, 2, (3, 16, 16)) + 4 * (target - 0.5) * rng.random((3, 1, 1))
        iou_pred = rng.random(3)
        total, index = m.sam_loss_min(logits, iou_pred, target)
        ref_total, ref_index = sam_loss(logits, iou_pred, target)
        assert int(index) == ref_index, f"trial {trial}: chose output {index}, the smallest mask loss is {ref_index}"
        assert np.isclose(total, ref_total, rtol=1e-9), f"trial {trial}: total {total}, expected {ref_total}"


CHECKS = [("14.1 derive and code the dice gradient", check_dice),
          ("14.2 the focal loss and its gradient", check_focal),
          ("14.3 the minimum over masks, plus IoU MSE", check_min)]
