"""Exercises for lesson 04: one model, many tasks: the prompts that choose the task.

Fill in each function, then run ``python lessons/exercises.py 04``. NumPy only in your answers.
Masks are [H, W] bool, indexed [row, column] = [y, x]; points are (x, y) in pixels.
"""

import numpy as np  # noqa: F401  (for your answers)


def point_and_box(mask):
    """Exercise 04.1. The lesson's click and box for an object (interactive, and a perfect detector).

    The click is the most interior pixel: erode the mask repeatedly (a pixel survives one
    erosion if it and its 4 neighbours are in the mask; a pixel on the image border never
    survives) until the next erosion would leave nothing; of the pixels left, in raster order
    (row by row, left to right), take the one at index n // 2 (n of them). Returns
    ``(point, box)``: point [2] float (x, y) = (column, row) of that pixel, and box [4] float,
    the tight box (x0, y0, x1, y1) with x1, y1 the last column and row of the mask (inclusive).
    The mask is not empty.
    """
    raise NotImplementedError("04.1 point_and_box")


def correction_click(mask, truth):
    """Exercise 04.2. The next click of the lesson's "three clicks" task.

    ``mask``: the current prediction; ``truth``: the object; they differ. The two error
    regions are the missed pixels (truth and not mask) and the wrongly taken ones (mask and
    not truth). The click goes in the larger region (the missed one when they are the same
    size), at its most interior pixel as in 04.1, with label 1 (positive) in a missed region
    and 0 (negative) in a taken one. Returns ``(point [2] float (x, y), label int)``.
    """
    raise NotImplementedError("04.2 correction_click")


def point_grid(n_per_side, height, width):
    """Exercise 04.3. The "everything" task's prompts: the automatic generator's grid of points.

    An n x n grid over a height x width image, the points at the centres of an n x n
    tiling: x = (i + 0.5) * width / n, y = (j + 0.5) * height / n for i, j = 0 .. n-1. Returns
    [n * n, 2] float (x, y), row by row: y outer, x varying fastest (the first n points all
    have the smallest y).
    """
    raise NotImplementedError("04.3 point_grid")
