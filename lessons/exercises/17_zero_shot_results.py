"""Exercises for lesson 17: the measures behind section 7's zero-shot experiments.

Fill in each function, then run ``python lessons/exercises.py 17``. NumPy only in your answers.
Maps are [H, W], indexed [row, column].
"""

import numpy as np  # noqa: F401  (for your answers)


def edge_strength(probabilities):
    """Exercise 17.1. Edges from masks, as in section 7.2 (without the edge NMS).

    ``probabilities``: [K, H, W], the unthresholded mask probabilities of K masks. For each
    map, the Sobel gradient magnitude sqrt(gx^2 + gy^2), with gx the 3 x 3 Sobel filter
    [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] (x along columns) and gy its transpose (y along rows),
    the map padded by repeating its border pixels (each pixel outside is the nearest one
    inside). Then the pixel-wise maximum over the K maps, divided by its largest value
    (by 1e-9 if that is smaller) so that the strongest edge is 1. Returns [H, W].
    """
    raise NotImplementedError("17.1 edge_strength")


def ods_f(strengths, truths, thresholds, tolerance=2):
    """Exercise 17.2. The best F-measure at one threshold for the whole dataset (ODS-like).

    ``strengths``: list of [H, W] edge maps in [0, 1]; ``truths``: list of [H, W] bool, the
    true boundary pixels (same sizes, image by image). At threshold t, the predicted edges are
    strength > t. A predicted pixel is right when a true edge pixel lies within ``tolerance``
    pixels of it (in both rows and columns: a (2 tol + 1)-pixel square around it), and a true
    pixel is found when a predicted one lies within the same square. For each t, sum over ALL
    images the four counts (right, predicted, found, true); precision = right / max(predicted,
    1), recall = found / max(true, 1), F = 2 P R / max(P + R, 1e-9). Returns the largest F over
    the thresholds (one threshold for the dataset; not a threshold per image).
    """
    raise NotImplementedError("17.2 ods_f")


def average_recall(proposals, objects):
    """Exercise 17.3. Average recall of object proposals (section 7.3's AR, over one image).

    ``proposals``: [P, H, W] bool (P may be 0); ``objects``: [n, H, W] bool. Each object's
    best IoU with any proposal (0 without proposals), IoU = |a & b| / max(|a | b|, 1); the
    recall at threshold t is the fraction of objects whose best IoU is >= t. Returns the mean
    of the recalls at the ten thresholds 0.5, 0.55, ..., 0.95 (a float).
    """
    raise NotImplementedError("17.3 average_recall")
