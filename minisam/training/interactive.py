"""SAM's interactive training simulation: 11 rounds of prompts, each from the last round's errors.

Paper: Kirillov et al. 2023, appendix A ("Training algorithm"), which we follow sentence by
sentence (quoted where used below):

1. "with equal probability either a foreground point or bounding box is selected randomly for
   the target mask. Points are sampled uniformly from the ground truth mask. Boxes are taken as
   the ground truth mask's bounding box, with random noise added in each coordinate with
   standard deviation equal to 10% of the box sidelength, to a maximum of 20 pixels."
2. "subsequent points are selected uniformly from the error region between the previous mask
   prediction and the ground truth mask. Each new point is foreground or background if the
   error region is a false negative or false positive, respectively."
3. "We also supply the mask prediction from the previous iteration as an additional prompt
   ... the unthresholded mask logits instead of the binarized mask. When multiple masks are
   returned, the mask passed to the next iteration and used to sample the next point is the
   one with the highest predicted IoU."
4. "8 iteratively sampled points ... two more iterations where no additional points are
   sampled. One of these iterations is randomly inserted among the 8 iteratively sampled
   points, and the other is always at the end. This gives 11 total iterations."

The official repository has no training code, so nothing here is parity-tested against it;
the forward pass is minisam's (any object with ``SamPredictor.predict``'s signature works),
and the loss of every round is :func:`minisam.training.losses.sam_loss`. This module only simulates
and scores the rounds: it does not update weights.

Choices the paper leaves open, made explicit here:
- multimask output (3 masks) only when the prompt is a single point and nothing else (SAM 2's
  trainer rule, where a box counts as two points; a mask prompt disambiguates too), so in
  practice only in round 1 of a point start; otherwise the single-mask output;
- points are pixel indices ``(x, y) = (col, row)``: the prompt encoder adds 0.5 to reach the
  pixel centre, as for any user click;
- box noise is Gaussian with std = 10% of the side (width for x, height for y), each draw
  clipped to +-20 px, then the box is clipped to the image and kept ordered;
- the round schedule defaults to the paper's (one mask-only round at a random place among
  the point rounds, one at the end); ``mask_only_rounds="end"`` puts both at the end.

Shape alphabet: H, W image pixels; N points; K mask outputs (3 or 1); S low-res side (256).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from minisam.errors import PromptError
from minisam.modeling.common import mask_iou, mask_to_box
from minisam.training.losses import sam_loss

INITIAL, POINT, MASK_ONLY = "initial", "point", "mask_only"


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _as_mask(mask, name: str = "target_mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise PromptError(f"{name} must be a 2-D [H, W] mask, got shape {mask.shape}")
    return mask > 0.5 if mask.dtype.kind == "f" else mask.astype(bool)


def round_schedule(rng=None, num_points: int = 8, mask_only_rounds: str = "paper") -> List[str]:
    """The kinds of the 1 + num_points + 2 rounds: ``initial``, ``point`` and ``mask_only``.

    ``"paper"``: one mask-only round at a uniformly random slot among the point rounds, the
    other at the end. ``"end"``: both mask-only rounds last.
    """
    if mask_only_rounds == "end":
        return [INITIAL] + [POINT] * num_points + [MASK_ONLY, MASK_ONLY]
    if mask_only_rounds != "paper":
        raise ValueError(f"mask_only_rounds must be 'paper' or 'end', got {mask_only_rounds!r}")
    middle = [POINT] * num_points
    middle.insert(int(_rng(rng).integers(0, num_points + 1)), MASK_ONLY)  # any of the 9 slots
    return [INITIAL] + middle + [MASK_ONLY]


def sample_foreground_point(mask, rng) -> np.ndarray:
    """A pixel of ``mask`` [H, W] chosen uniformly, as ``(x, y)`` [2] float32."""
    mask = _as_mask(mask)
    flat = np.flatnonzero(mask)                                  # [n] indices into H*W
    if flat.size == 0:
        raise PromptError("target_mask is empty: there is no foreground pixel to click on")
    row, col = divmod(int(flat[_rng(rng).integers(flat.size)]), mask.shape[1])
    return np.array([col, row], dtype=np.float32)                # [2] (x, y)


def mask_box(mask) -> np.ndarray:
    """Tight XYXY box of ``mask`` [H, W]: [4] float32, max corner inclusive (as in amg.py)."""
    mask = _as_mask(mask)
    if not mask.any():
        raise PromptError("target_mask is empty: it has no bounding box")
    return mask_to_box(mask).astype(np.float32)                 # [4]


def noisy_box(mask, rng, noise: float = 0.1, max_noise: float = 20.0) -> np.ndarray:
    """The mask's box with Gaussian noise per coordinate: std = ``noise`` * side, |noise| <= max_noise.

    The x coordinates use the box width as side, the y ones the height. The result is clipped
    to the image ([0, W-1] x [0, H-1]) and reordered so that x0 <= x1 and y0 <= y1.
    """
    rng = _rng(rng)
    mask = _as_mask(mask)
    box = mask_box(mask).astype(np.float64)                      # [4] x0 y0 x1 y1
    width, height = box[2] - box[0], box[3] - box[1]
    std = noise * np.array([width, height, width, height])       # [4]
    jitter = np.clip(rng.normal(0.0, 1.0, 4) * std, -max_noise, max_noise)   # [4]
    h, w = mask.shape
    box = np.clip(box + jitter, 0, [w - 1, h - 1, w - 1, h - 1])  # [4]
    x0, x1 = sorted(box[[0, 2]])
    y0, y1 = sorted(box[[1, 3]])
    return np.array([x0, y0, x1, y1], dtype=np.float32)          # [4]


def error_regions(pred, target) -> Tuple[np.ndarray, np.ndarray]:
    """``(false_negative, false_positive)`` [H, W] bool each: target missed, background taken."""
    pred, target = _as_mask(pred, "pred"), _as_mask(target)
    if pred.shape != target.shape:
        raise PromptError(f"predicted mask shape {pred.shape} differs from target shape {target.shape}")
    return target & ~pred, pred & ~target


def sample_error_point(pred, target, rng) -> Optional[Tuple[np.ndarray, int]]:
    """A point drawn uniformly from the error region of ``pred`` vs ``target`` (both [H, W]).

    Returns ``((x, y) [2] float32, label)`` with label 1 (positive click) in a false negative
    and 0 (negative click) in a false positive, or ``None`` when the prediction is exact.
    """
    false_neg, false_pos = error_regions(pred, target)
    errors = np.flatnonzero(false_neg | false_pos)               # [n] indices into H*W
    if errors.size == 0:
        return None
    index = int(errors[_rng(rng).integers(errors.size)])
    row, col = divmod(index, false_neg.shape[1])
    label = 1 if false_neg[row, col] else 0
    return np.array([col, row], dtype=np.float32), label


NOT_A_POINT = -1  # the prompt encoder's label of a padding token: no position, not_a_point_embed


def next_click(previous, target, rng) -> Tuple[np.ndarray, int]:
    """The click of a point round: ``((x, y) [2] float32, label)`` drawn uniformly from the error
    region of ``previous`` (the mask passed on) against ``target``, label 1 in a false
    negative and 0 in a false positive. When ``previous`` is exact there is nothing to
    correct, and the round adds the not-a-point token ``((0, 0), -1)`` instead: every round
    adds one prompt token, so that all targets of a training batch keep the same number of
    tokens (the rule the batched trainer needs), and a single run and a batched one see the
    same prompts."""
    sampled = sample_error_point(previous, target, rng)
    if sampled is None:
        return np.zeros(2, np.float32), NOT_A_POINT
    return sampled


def use_multimask(num_points: int, has_box: bool, has_mask: bool = False) -> bool:
    """Three outputs only for a lone point, the one ambiguous prompt ("we only use multiple
    outputs when a single ambiguous prompt is given"): a box counts as two points (SAM 2), and
    a mask prompt from the previous round already says which object is meant."""
    return num_points + 2 * int(has_box) == 1 and not has_mask


@dataclass
class RoundRecord:
    """What one round gave to the model and what came back."""
    round: int                       # 1 .. 11
    kind: str                        # "initial", "point" or "mask_only"
    point_coords: np.ndarray         # [N, 2] every point so far, (x, y)
    point_labels: np.ndarray         # [N] 1 positive, 0 negative
    box: Optional[np.ndarray]        # [4] XYXY or None
    new_point: Optional[np.ndarray]  # [2] the point added this round ((0, 0) for a pad), or None
    new_label: Optional[int]         # 1, 0, or -1 (NOT_A_POINT: the previous mask was exact)
    had_mask_input: bool             # previous round's best low-res logits were given
    multimask: bool
    iou_pred: np.ndarray             # [K] the IoU head's scores
    chosen_index: int                # argmax of iou_pred: the mask passed on (paper)
    iou: float                       # IoU of the chosen mask with the target
    loss: float                      # sam_loss total of this round's K outputs
    loss_index: int                  # the output sam_loss supervises (argmin of 20 focal + dice)
    mask: np.ndarray = field(repr=False)   # [H, W] bool the chosen mask


def simulate_interactive(predictor, image, target_mask, rng, first_prompt: Optional[str] = None,
                         schedule: Optional[Sequence[str]] = None,
                         mask_only_rounds: str = "paper") -> List[RoundRecord]:
    """Run the paper's 11 rounds on one (image, target) pair; a list of :class:`RoundRecord`.

    ``predictor``: anything with ``predict(point_coords, point_labels, box, mask_input,
    multimask_output, return_logits)`` -> (masks [K, H, W], iou_pred [K], low_res [K, S, S])
    as :class:`minisam.predictor.SamPredictor`; ``set_image(image)`` is called first unless
    ``image`` is None (an image already set). ``target_mask``: [H, W] bool, non-empty.
    ``rng``: a ``numpy.random.Generator`` or a seed; every random choice comes from it, so a
    seed fixes the whole run. ``first_prompt``: "point", "box", or None to toss a fair coin.
    ``schedule``: round kinds, default :func:`round_schedule` (11 rounds).
    """
    rng = _rng(rng)
    target = _as_mask(target_mask)                               # [H, W]
    if not target.any():
        raise PromptError("target_mask is empty: there is nothing to segment")
    if image is not None:
        if tuple(np.shape(image)[:2]) != target.shape:
            raise PromptError(f"target_mask shape {target.shape} differs from the image's "
                              f"{tuple(np.shape(image)[:2])}")
        predictor.set_image(image)
    if first_prompt is None:
        first_prompt = "point" if rng.random() < 0.5 else "box"
    if first_prompt not in ("point", "box"):
        raise PromptError(f"first_prompt must be 'point', 'box' or None, got {first_prompt!r}")
    if schedule is None:
        schedule = round_schedule(rng, mask_only_rounds=mask_only_rounds)
    if not schedule or schedule[0] != INITIAL or INITIAL in schedule[1:]:
        raise PromptError(f"schedule must start with one 'initial' round, got {list(schedule)}")

    coords = np.zeros((0, 2), np.float32)                        # [N, 2]
    labels = np.zeros((0,), np.int64)                            # [N]
    box = None                                                   # [4] or None
    mask_input = None                                            # [1, S, S] or None
    previous = None                                              # [H, W] bool
    records: List[RoundRecord] = []
    for number, kind in enumerate(schedule, start=1):
        new_point, new_label = None, None
        if kind == INITIAL:
            if first_prompt == "point":
                new_point, new_label = sample_foreground_point(target, rng), 1
            else:
                box = noisy_box(target, rng)
        elif kind == POINT:
            new_point, new_label = next_click(previous, target, rng)   # a pad token if exact
        elif kind != MASK_ONLY:
            raise PromptError(f"unknown round kind {kind!r} in schedule")
        if new_point is not None:
            coords = np.concatenate([coords, new_point[None]])  # [N, 2] -> [N+1, 2]
            labels = np.append(labels, new_label)                # [N+1]
        num_points = int(np.count_nonzero(labels != NOT_A_POINT))
        multimask = use_multimask(num_points, box is not None, mask_input is not None)
        has_points = len(labels) > 0
        logits, iou_pred, low_res = predictor.predict(
            point_coords=coords.copy() if has_points else None,
            point_labels=labels.copy() if has_points else None,
            box=None if box is None else box.copy(), mask_input=mask_input,
            multimask_output=multimask, return_logits=True)     # [K, H, W], [K], [K, S, S]
        logits = np.asarray(logits, dtype=np.float32)
        iou_pred = np.asarray(iou_pred, dtype=np.float32)
        chosen = int(np.argmax(iou_pred))
        mask = logits[chosen] > 0.0                              # [H, W] mask_threshold 0
        loss, loss_index = sam_loss(logits, iou_pred, target)
        records.append(RoundRecord(
            round=number, kind=kind, point_coords=coords.copy(), point_labels=labels.copy(),
            box=None if box is None else box.copy(), new_point=new_point, new_label=new_label,
            had_mask_input=mask_input is not None, multimask=multimask, iou_pred=iou_pred,
            chosen_index=chosen, iou=float(mask_iou(mask, target)), loss=loss, loss_index=loss_index, mask=mask))
        mask_input = np.asarray(low_res[chosen], np.float32)[None]   # [S, S] -> [1, S, S] logits
        previous = mask
    return records
