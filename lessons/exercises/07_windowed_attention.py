"""Exercises for lesson 07: windowed attention with decomposed relative positions.

Fill in each function, then run ``python lessons/exercises.py 07``. Use NumPy only (no minisam
calls inside your answers: the checks compare your code with minisam's).
"""

import numpy as np  # noqa: F401  (for your answers)


def window_partition(x, w):
    """Exercise 07.1. Zero-pad a token grid and cut it into windows.

    ``x``: [B, H, W, D]. Pad with zeros at the bottom and on the right to Hp x Wp, the next
    multiples of ``w``, then cut into non-overlapping w x w windows, in row-major window order
    (all windows of image 0 first; within an image, left to right, then top to bottom).
    Returns ``(windows [B * (Hp // w) * (Wp // w), w, w, D], (Hp, Wp))``.
    Hint: one ``np.pad``, one reshape to [B, Hp // w, w, Wp // w, w, D], one transpose.
    """
    raise NotImplementedError("07.1 window_partition")


def window_unpartition(windows, w, pad_hw, hw):
    """Exercise 07.2. The inverse: put the windows back on the padded grid and crop the padding.

    ``windows``: [B * nW, w, w, D]; ``pad_hw`` = (Hp, Wp); ``hw`` = (H, W). Returns [B, H, W, D].
    """
    raise NotImplementedError("07.2 window_unpartition")


def rel_pos_bias(q, rel_pos_h, rel_pos_w, w):
    """Exercise 07.3. The decomposed relative-position bias of one window.

    ``q``: [A, w*w, d], the UNSCALED queries of A (window, head) pairs, tokens in row-major
    (y, x) order; ``rel_pos_h``, ``rel_pos_w``: [2w - 1, d]. Returns the bias [A, w*w, w*w]
    that attention adds to its scores:

        bias[a, (y, x), (y', x')] = q[a, (y, x)] . rel_pos_h[y - y' + w - 1]
                                  + q[a, (y, x)] . rel_pos_w[x - x' + w - 1]

    Compute the two dot products once per query and key row (resp. column), [A, w*w, w]
    each, then broadcast: never w^4 dot products.
    """
    raise NotImplementedError("07.3 rel_pos_bias")
