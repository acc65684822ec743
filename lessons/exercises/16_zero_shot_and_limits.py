"""Exercises for lesson 16: zero-shot transfer by composition, and measuring the result.

Fill in each function, then run ``python lessons/exercises.py 16``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)


def detector_boxes(image, threshold=60.0, min_area=60):
    """Exercise 16.1. The lesson's "detector": boxes for SAM to turn into masks.

    ``image``: [H, W, 3] uint8. The background colour is the per-channel median of the border
    pixels (first and last row, first and last column); a pixel is foreground when the
    Euclidean distance of its colour to the background colour is > ``threshold``. Group the
    foreground into 8-connected components, drop those of fewer than ``min_area`` pixels, and
    return one box per component, [n, 4] int (x0, y0, x1, y1 with x1, y1 inclusive: the last
    column and row of the component), components ordered by their first pixel in raster order.
    """
    raise NotImplementedError("16.1 detector_boxes")


def recall_and_mean_iou(true_masks, predicted_masks, threshold=0.75):
    """Exercise 16.2. How many objects did the model find?

    ``true_masks``: [n, H, W] bool; ``predicted_masks``: [k, H, W] bool (k may be 0). For each
    true object, its best IoU with any predicted mask (0 if there is none); IoU = |a & b| /
    max(|a | b|, 1). Returns ``(recall, mean_best_iou)``: the fraction of true objects whose best
    IoU is >= ``threshold``, and the mean of the best IoUs.
    """
    raise NotImplementedError("16.2 recall_and_mean_iou")
