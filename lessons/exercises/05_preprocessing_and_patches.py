"""Exercises for lesson 05: from a photo to a grid of patch tokens.

Fill in each function, then run ``python lessons/exercises.py 05``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)

PIXEL_MEAN = (123.675, 116.28, 103.53)   # ImageNet mean and std of R, G, B in 0..255
PIXEL_STD = (58.395, 57.12, 57.375)


def preprocess_shape(h, w, S):
    """Exercise 05.1. The size of an h x w image after its longest side is resized to S.

    Scale both sides by S / max(h, w) and round each half up (``int(v + 0.5)``), as the official
    ``ResizeLongestSide.get_preprocess_shape`` does. Returns ``(new_h, new_w)``.
    """
    raise NotImplementedError("05.1 preprocess_shape")


def normalize_and_pad(image, S):
    """Exercise 05.2. Steps 2 and 3: normalize each channel, then zero-pad to S x S.

    ``image``: [3, h, w] (already resized, h, w <= S; any numeric dtype). Returns float32
    [3, S, S]: (image - mean) / std per channel in float32 (divide by std), placed at the top
    left, zeros elsewhere. Zeros *after* normalizing: the pad is an "average" pixel.
    """
    raise NotImplementedError("05.2 normalize_and_pad")


def patchify(x, P):
    """Exercise 05.3. Cut an image into P x P patches, one row of numbers per patch.

    ``x``: [3, S, S]. Returns [G * G, 3 * P * P] with G = S // P: patches in row-major order,
    each flattened in (channel, row, column) order, the order of a conv weight [D, 3, P, P]
    flattened to [D, 3 * P * P]. Then ``patchify(x, P) @ weight.reshape(D, -1).T + bias`` is
    the patch-embedding convolution (kernel P, stride P): a conv with stride = kernel is one
    matrix product.
    """
    raise NotImplementedError("05.3 patchify")
