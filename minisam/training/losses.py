"""SAM's training losses, with hand-derived gradients: focal, dice, IoU MSE, and their mix.

Paper: Kirillov et al. 2023, "Segment Anything", section 3 ("Losses and training") and
appendix A ("Losses"): the mask is supervised with "a linear combination of focal loss and
dice loss in a 20:1 ratio", the IoU head with "mean-square-error loss between the IoU
prediction and the predicted mask's IoU with the ground truth mask ... added to the mask
loss with a constant scaling factor of 1.0", and, for the three ambiguity-aware outputs,
"we backprop only the minimum loss" over them.

The official SAM repository has no training code. These functions mirror:
- ``torchvision/ops/focal_loss.py`` ``sigmoid_focal_loss`` (from fvcore; RetinaNet, Lin et
  al. 2017), reduced as the DETR / SAM 2 trainers do: mean over the pixels of each mask;
- the DETR / SAM-HQ ``dice_loss`` (sigmoid first, +1 smoothing, one value per mask);
- SAM 2's ``training/loss_fns.py`` ``MultiStepMultiMasksAndIous`` for the recipe: argmin of
  ``20 * focal + dice`` over the outputs, IoU target ``|A & B| / max(|A | B|, 1)`` with the
  prediction binarized at logit 0, IoU MSE on the chosen output only (SAM 1's choice).

Shape alphabet: M masks, K outputs of one prompt (3 multimask or 1), H, W pixels.
Every function takes ``grad=True`` to also return the derivative of the **sum of its outputs**
with respect to its inputs, derived in its docstring and checked against torch autograd in
``tests/test_losses.py``. All of it is stable for logits of +-100 and beyond: the sigmoid and
the log-sigmoid are computed from ``exp(-|x|)`` only, so nothing overflows and no ``0 * inf``
appears.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np

from minisam.errors import MinisamError
from minisam.modeling.common import mask_iou as mask_iou_binary

#: Paper weights: focal : dice = 20 : 1, IoU MSE at 1.0 (appendix A).
FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0


class LossInputError(MinisamError, ValueError):
    """Logits, targets or IoU predictions whose shapes or values do not fit together."""


def _as_logits(logits) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.dtype.kind != "f":  # ints / bools: minisam's default float
        logits = logits.astype(np.float32)
    return logits


def _check_pair(logits, targets, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """Logits [M, ...] and targets of the same shape, both in the logits' float dtype."""
    logits = _as_logits(logits)
    targets = np.asarray(targets)
    if logits.ndim < 2:
        raise LossInputError(f"{name}: logits must be [M, H, W] (one row per mask), got shape {logits.shape}")
    if targets.shape != logits.shape:
        raise LossInputError(f"{name}: targets shape {targets.shape} differs from logits shape {logits.shape}")
    return logits, targets.astype(logits.dtype, copy=False)


def _pixel_axes(x: np.ndarray) -> Tuple[int, ...]:
    return tuple(range(1, x.ndim))  # every axis but the mask axis


def sigmoid_pair(logits: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p, q, e)`` with p = sigma(x), q = 1 - p = sigma(-x), e = exp(-|x|), all without overflow.

    Computing q as ``sigma(-x)`` instead of ``1 - p`` keeps it exact where p rounds to 1
    (x > 17 in float32, x > 37 in float64): the focal factor ``(1 - p_t)^gamma`` of an easy
    pixel stays a tiny positive number instead of an exact 0.
    """
    e = np.exp(-np.abs(logits))                                  # [...] in (0, 1]
    big = 1.0 / (1.0 + e)                                        # [...] sigma(|x|)
    small = e / (1.0 + e)                                        # [...] sigma(-|x|)
    positive = logits >= 0
    p = np.where(positive, big, small)                           # [...] sigma(x)
    q = np.where(positive, small, big)                           # [...] sigma(-x)
    return p, q, e


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0, grad: bool = False):
    r"""Focal loss of each mask: mean over its pixels of ``alpha_t (1 - p_t)^gamma BCE``.

    ``logits``, ``targets``: [M, H, W] (targets in {0, 1}, soft targets in [0, 1] also work).
    ``alpha`` in [0, 1] weights positives by alpha and negatives by 1 - alpha; ``alpha < 0``
    turns the weighting off (torchvision's ``-1``). Returns ``loss`` [M], and with ``grad=True``
    ``(loss, dlogits)`` where ``dlogits`` [M, H, W] = d(sum_m loss_m) / d logits.

    Per pixel, with x the logit, y the target, p = sigma(x), q = 1 - p, N = H * W:

    - BCE(x, y) = -y log p - (1 - y) log q = max(x, 0) - x y + log(1 + e^{-|x|})   (stable form)
    - 1 - p_t   = m = p (1 - y) + q y     (= q for y = 1, = p for y = 0)
    - alpha_t   = alpha y + (1 - alpha)(1 - y)        (constant in x)
    - FL        = alpha_t m^gamma BCE,     loss_m = (1 / N) sum_pixels FL

    Derivatives, using dp/dx = p q and dq/dx = -p q:

    - dBCE/dx = -y q + (1 - y) p = p - y
    - dm/dx   = (1 - y) p q - y p q = (1 - 2y) p q
    - dFL/dx  = alpha_t [gamma m^{gamma-1} (1 - 2y) p q BCE + m^gamma (p - y)]

    and d(sum_m loss_m)/dx = dFL/dx / N, since each pixel belongs to one mask only.
    With gamma = 0 this is alpha_t (p - y) / N, the BCE gradient. The ``m^{gamma-1}`` factor is
    taken as 0 where m == 0 (only possible once p or q underflows), which is its limit there:
    for binary y, ``m^{gamma-1} p q`` equals ``p q^gamma`` (y = 1) or ``q p^gamma`` (y = 0).
    """
    logits, targets = _check_pair(logits, targets, "sigmoid_focal_loss")
    if alpha > 1 or gamma < 0:
        raise LossInputError(f"sigmoid_focal_loss: need alpha <= 1 (negative = off) and gamma >= 0, "
                             f"got alpha={alpha}, gamma={gamma}")
    x, y = logits, targets                                       # [M, H, W]
    p, q, e = sigmoid_pair(x)                                    # [M, H, W] each
    bce = np.maximum(x, 0) - x * y + np.log1p(e)                 # [M, H, W]
    m = p * (1 - y) + q * y                                      # [M, H, W] 1 - p_t
    m_gamma = m ** gamma                                         # [M, H, W]
    if alpha >= 0:
        alpha_t = alpha * y + (1 - alpha) * (1 - y)              # [M, H, W]
    else:
        alpha_t = np.ones_like(x)                                # [M, H, W] no class weighting
    focal = alpha_t * m_gamma * bce                              # [M, H, W]
    n_pixels = int(np.prod(x.shape[1:]))
    loss = focal.mean(axis=_pixel_axes(x))                       # [M, H, W] -> [M]
    if not grad:
        return loss
    # m^(gamma-1) is 0 * inf at m == 0 for gamma < 1; its true limit in the product is 0.
    m_gamma_minus_1 = np.zeros_like(m)                           # [M, H, W]
    np.power(m, gamma - 1, out=m_gamma_minus_1, where=m > 0)
    dm = (1 - 2 * y) * p * q                                     # [M, H, W] dm/dx
    dfocal = alpha_t * (gamma * m_gamma_minus_1 * dm * bce + m_gamma * (p - y))  # [M, H, W]
    return loss, (dfocal / n_pixels).astype(x.dtype, copy=False)


def dice_loss(logits, targets, grad: bool = False):
    r"""Dice loss of each mask: ``1 - (2 sum(p g) + 1) / (sum p + sum g + 1)``, p = sigma(logits).

    ``logits``, ``targets``: [M, H, W]. Returns ``loss`` [M], and with ``grad=True``
    ``(loss, dlogits)`` with ``dlogits`` [M, H, W] = d(sum_m loss_m) / d logits.

    The +1 in numerator and denominator (DETR, SAM-HQ, SAM 2) makes an empty prediction of an
    empty target score 0 instead of 0/0. Per mask, with S = sum p g, P = sum p, G = sum g,
    den = P + G + 1, num = 2 S + 1:

    - dD/dp_i = -(2 g_i den - num) / den^2 = (num - 2 g_i den) / den^2
    - dD/dx_i = dD/dp_i * p_i q_i        (dp/dx = p q)

    A pixel that is already right and confident (|x| large) gets almost no gradient from the
    ``p q`` factor: dice only pushes on uncertain pixels, and on the whole mask's overlap.
    """
    logits, targets = _check_pair(logits, targets, "dice_loss")
    p, q, _ = sigmoid_pair(logits)                               # [M, H, W] each
    g = targets                                                  # [M, H, W]
    axes = _pixel_axes(logits)
    num = 2 * (p * g).sum(axis=axes) + 1                         # [M]
    den = p.sum(axis=axes) + g.sum(axis=axes) + 1                # [M]
    loss = 1 - num / den                                         # [M]
    if not grad:
        return loss
    bshape = (-1,) + (1,) * (logits.ndim - 1)                    # broadcast [M] over pixels
    num_b, den_b = num.reshape(bshape), den.reshape(bshape)      # [M, 1, 1]
    ddice_dp = (num_b - 2 * g * den_b) / den_b ** 2              # [M, H, W]
    return loss, (ddice_dp * p * q).astype(logits.dtype, copy=False)


def mask_iou(logits, targets) -> np.ndarray:
    """IoU of ``logits > 0`` with ``targets > 0.5``, per mask: [M, H, W] x2 -> [M].

    ``|A & B| / max(|A | B|, 1)`` as in SAM 2's trainer: two empty masks score 0, the
    convention the IoU head was trained on there (it never sees an empty target in SA-1B).
    """
    logits, targets = _check_pair(logits, targets, "mask_iou")
    pred = logits > 0                                            # [M, H, W] the mask_threshold
    gt = targets > 0.5                                           # [M, H, W]
    return mask_iou_binary(pred, gt, axes=_pixel_axes(logits)).astype(logits.dtype)   # [M]


def iou_mse_loss(iou_pred, logits, targets, grad: bool = False):
    r"""Squared error of the IoU head: ``(iou_pred - IoU(logits > 0, targets))^2`` per mask.

    ``iou_pred``: [M]; ``logits``, ``targets``: [M, H, W]. Returns ``loss`` [M], and with
    ``grad=True`` ``(loss, diou_pred)`` with ``diou_pred`` [M] = 2 (iou_pred - iou_target).

    The target comes from a thresholded mask, so it is a constant: no gradient flows from the
    IoU loss into the mask logits (as in SAM 2, where the target is computed under no_grad).
    """
    logits, targets = _check_pair(logits, targets, "iou_mse_loss")
    iou_pred = np.asarray(iou_pred, dtype=logits.dtype)
    if iou_pred.shape != logits.shape[:1]:
        raise LossInputError(f"iou_mse_loss: iou_pred shape {iou_pred.shape} should be "
                             f"{logits.shape[:1]} (one score per mask)")
    iou_target = mask_iou(logits, targets)                       # [M]
    diff = iou_pred - iou_target                                 # [M]
    loss = diff ** 2                                             # [M]
    if not grad:
        return loss
    return loss, 2 * diff                                        # [M], [M]


def sam_loss(logits, iou_pred, target, grad: bool = False, focal_weight: float = FOCAL_WEIGHT,
             dice_weight: float = DICE_WEIGHT, iou_weight: float = IOU_WEIGHT, iou_outputs: str = "best"
             ) -> Union[Tuple[float, int], Tuple[float, int, np.ndarray, np.ndarray]]:
    r"""The paper's loss for the K outputs of one prompt: ``(total, index)``.

    ``logits``: [K, H, W] (K = 3 multimask outputs, or 1), ``iou_pred``: [K], ``target``: [H, W].

    1. mask loss of each output: ``20 * focal_k + dice_k``                     [K]
    2. ``index = argmin_k`` of it: only the best output is supervised, so the three outputs
       are free to cover the three plausible objects of an ambiguous click;
    3. ``total = mask_loss[index] + 1.0 * (iou_pred[index] - IoU(logits[index] > 0, target))^2``.

    ``iou_outputs="all"`` supervises the IoU head on every output instead (the mean over K of
    the squared errors, SAM 2's ``supervise_all_iou``): with the best output alone, the head
    never sees a poor mask and cannot learn to rank the three, which is its job at inference.

    With ``grad=True`` returns ``(total, index, dlogits [K, H, W], diou_pred [K])``: both are
    zero everywhere except at ``index`` (the min picks one branch, and argmin itself has zero
    derivative almost everywhere), where they are ``20 * dfocal + ddice`` and ``2 (iou - t)``.
    Ties go to the lowest index (numpy's and torch's argmin both return the first minimum).
    """
    logits = _as_logits(logits)
    target = np.asarray(target)
    if logits.ndim != 3:
        raise LossInputError(f"sam_loss: logits must be [K, H, W], got shape {logits.shape}")
    if target.shape != logits.shape[1:]:
        raise LossInputError(f"sam_loss: target shape {target.shape} should be {logits.shape[1:]}")
    iou_pred = np.asarray(iou_pred, dtype=logits.dtype)
    if iou_pred.shape != logits.shape[:1]:
        raise LossInputError(f"sam_loss: iou_pred shape {iou_pred.shape} should be {logits.shape[:1]}")
    targets = np.broadcast_to(target, logits.shape)              # [H, W] -> [K, H, W]
    focal = sigmoid_focal_loss(logits, targets, grad=grad)       # [K] (, [K, H, W])
    dice = dice_loss(logits, targets, grad=grad)                 # [K] (, [K, H, W])
    if grad:
        (focal, dfocal), (dice, ddice) = focal, dice
    mask_loss = focal_weight * focal + dice_weight * dice        # [K]
    index = int(np.argmin(mask_loss))
    if iou_outputs not in ("best", "all"):
        raise LossInputError(f"sam_loss: iou_outputs must be 'best' or 'all', got {iou_outputs!r}")
    chosen = slice(index, index + 1) if iou_outputs == "best" else slice(None)
    iou = iou_mse_loss(iou_pred[chosen], logits[chosen], targets[chosen], grad=grad)   # [1] or [K]
    if grad:
        iou, diou = iou
    total = float(mask_loss[index] + iou_weight * iou.mean())
    if not grad:
        return total, index
    dlogits = np.zeros_like(logits)                              # [K, H, W]
    dlogits[index] = focal_weight * dfocal[index] + dice_weight * ddice[index]  # [H, W]
    diou_pred = np.zeros_like(iou_pred)                          # [K]
    diou_pred[chosen] = iou_weight * diou / len(diou)
    return total, index, dlogits, diou_pred
