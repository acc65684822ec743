"""Exercises for lesson 09: the prompt encoder.

Fill in each function, then run ``python lessons/exercises.py 09``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)


def fourier_pe(coords, gauss):
    """Exercise 09.1. The random-Fourier positional encoding.

    ``coords``: [..., 2] points (x, y) in [0, 1]^2; ``gauss``: [2, C/2], the fixed Gaussian
    matrix. Map the points to [-1, 1]^2, project them on the C/2 columns of ``gauss``, multiply
    by 2 pi, and return [sin of all C/2 projections, cos of all C/2 projections]: [..., C]
    float32.
    """
    raise NotImplementedError("09.1 fourier_pe")


def raw_xy_pe(coords, C):
    """Exercise 05.2a. The encoding the Fourier features replace: the raw coordinates.

    ``coords``: [..., 2] in [0, 1]^2. Map to [-1, 1]^2 and repeat the pair (x, y) C/2 times:
    channels [x, y, x, y, ...], [..., C] float32, so that it has the Fourier encoding's size.
    """
    raise NotImplementedError("05.2a raw_xy_pe")


def confusable_pair(S, gauss):
    """Exercise 05.2b. What breaks without Fourier features.

    Attention compares positions by dot products (cosine similarity, once normalized). Find
    two pixels ``(x0, y0)`` and ``(x1, y1)`` of an S x S image, at least S / 4 apart, whose raw
    encodings (``raw_xy_pe`` at the pixel centres ``(x + 0.5) / S``) have cosine similarity
    above 0.99, while their Fourier encodings with ``gauss`` have cosine similarity below 0.5.
    Return ``((x0, y0), (x1, y1))``. Think about what the cosine of two raw encodings depends on.
    """
    raise NotImplementedError("05.2b confusable_pair")


def box_tokens(box, gauss, corner_embeddings, S):
    """Exercise 09.3. The two prompt tokens of a box.

    ``box``: [4] (x0, y0, x1, y1) in pixels of the S x S input; ``gauss``: [2, C/2];
    ``corner_embeddings``: [2, C], the learned vectors of the top-left and bottom-right corner.
    Each corner is moved to its pixel centre (+0.5), divided by S, encoded with ``fourier_pe``
    and its corner vector added. Returns [2, C].
    """
    raise NotImplementedError("09.3 box_tokens")
