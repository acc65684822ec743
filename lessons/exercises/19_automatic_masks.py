"""Exercises for lesson 19: the automatic mask generator.

Fill in each function, then run ``python lessons/exercises.py 19``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)


def stability_score(logits, threshold=0.0, offset=1.0):
    """Exercise 19.1. The stability score of each mask.

    ``logits``: [N, H, W]. The IoU of the mask thresholded at ``threshold + offset`` with the
    mask thresholded at ``threshold - offset`` (the first lies inside the second, so the IoU is
    a ratio of two pixel counts; strict ``>`` for both). Returns [N] float32; NaN where the
    looser mask is empty (0 / 0), as the official code gives.
    """
    raise NotImplementedError("19.1 stability_score")


def sweep_thresholds(pred_iou, stability, matched_object, num_objects, iou_thresholds, stability_thresholds):
    """Exercise 19.2. Sweep the generator's two score thresholds.

    One entry per candidate mask: ``pred_iou`` [n], ``stability`` [n], and ``matched_object``
    [n] int, the index of the true object the mask matches (IoU >= 0.75) or -1. A mask is kept
    when pred_iou > t_iou and stability >= t_stab. Returns ``(kept, recall)``, both
    [len(iou_thresholds), len(stability_thresholds)]: the number of kept masks, and the
    fraction of the ``num_objects`` true objects matched by at least one kept mask. Stricter
    thresholds keep fewer masks; the question is how much recall that costs.
    """
    raise NotImplementedError("19.2 sweep_thresholds")


def box_nms(boxes, scores, iou_threshold):
    """Exercise 19.3. Greedy non-maximum suppression.

    ``boxes``: [N, 4] (x0, y0, x1, y1), area (x1 - x0) (y1 - y0); ``scores``: [N]. Visit the
    boxes from the highest score down; keep a box unless its IoU with an already kept box is
    > ``iou_threshold``. Returns the kept indices, highest score first (int array).
    """
    raise NotImplementedError("19.3 box_nms")
