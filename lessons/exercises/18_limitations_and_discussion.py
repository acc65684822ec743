"""Exercises for lesson 18: measuring SAM's limitations.

Fill in each function, then run ``python lessons/exercises.py 18``. NumPy only in your answers.
Masks are [H, W] bool, indexed [row, column] = [y, x].
"""

import numpy as np  # noqa: F401  (for your answers)


def lowres_mask(mask, low_res):
    """Exercise 18.1. The best mask a low-resolution logit map can draw ("misses fine structures").

    The decoder predicts ``low_res`` x ``low_res`` logits, upsampled to the image. The best
    such map for ``mask`` ([S, S], S = f * low_res) is its area fraction per f x f block,
    minus 0.5 (positive where more than half of the block is in the mask). Upsample that
    [low_res, low_res] map to [S, S] bilinearly as PyTorch does (align_corners=False): along
    each axis, output index i reads the input position src = (i + 0.5) * low_res / S - 0.5,
    clamped at 0; with i0 = floor(src) and i1 = min(i0 + 1, low_res - 1), the value is
    (1 - l) v[i0] + l v[i1], l = src - i0 (rows and columns separately). Returns [S, S] bool,
    the upsampled map > 0.
    """
    raise NotImplementedError("18.1 lowres_mask")


def stray_components(mask, truth):
    """Exercise 18.2. "Hallucinates small disconnected components": count them.

    Group the pixels of ``mask`` into connected components, 8-connected (pixels touching by
    an edge or a corner belong together). Returns the number (int) of components that share
    no pixel with ``truth``.
    """
    raise NotImplementedError("18.2 stray_components")


def zoom_window(truth):
    """Exercise 18.3. The lesson's zoom-in: the crop that goes through the model again.

    With (x0, y0, x1, y1) the tight box of ``truth`` ([H, W], not empty; x1, y1 inclusive):
    side = max(24, 2 * max(x1 - x0 + 1, y1 - y0 + 1)), the box's centre cx = (x0 + x1 + 1) / 2,
    cy = (y0 + y1 + 1) / 2; left = round(cx - side / 2) and top = round(cy - side / 2), each
    rounded half to even (Python's round, np.round) and then clipped to [0, W - side] and
    [0, H - side] so that the crop stays inside the image (side <= H, W here). Returns
    ``(left, top, side)`` ints: the crop is image[top:top + side, left:left + side].
    """
    raise NotImplementedError("18.3 zoom_window")
