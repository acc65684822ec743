"""Exercises for lesson 12: upscaling and hypernetworks.

Fill in each function, then run ``python lessons/exercises.py 12``. NumPy only in your answers
(``copy.deepcopy`` is fine for 12.3).
"""

import numpy as np  # noqa: F401  (for your answers)


def masks_from_hypernetwork(hyper_in, upscaled):
    """Exercise 12.1. The mask product.

    ``hyper_in``: [K, c], one hypernetwork vector per mask token; ``upscaled``: [c, R, R], the
    upscaled image embedding. Mask k's logit at pixel (i, j) is the dot product of
    ``hyper_in[k]`` with ``upscaled[:, i, j]``. Return [K, R, R] with ONE matrix product.
    """
    raise NotImplementedError("12.1 masks_from_hypernetwork")


def conv_transpose_2x2(x, weight, bias):
    """Exercise 12.2. A transposed convolution with kernel 2 and stride 2, as one matrix product.

    ``x``: [Cin, g, g]; ``weight``: [Cin, Cout, 2, 2] (PyTorch's ConvTranspose2d layout);
    ``bias``: [Cout]. Every input pixel (i, j) paints the 2 x 2 output patch at rows 2i, 2i+1
    and columns 2j, 2j+1: ``out[o, 2i + a, 2j + b] = bias[o] + sum_c x[c, i, j] weight[c, o, a, b]``.
    Returns [Cout, 2g, 2g].
    """
    raise NotImplementedError("12.2 conv_transpose_2x2")


def swap_mask_outputs(p, i, j):
    """Exercise 12.3. Swap two of the decoder's outputs by editing its weights.

    ``p``: the mask decoder's parameters (``sam.params["mask_decoder"]``): "mask_tokens"
    {"weight": [4, C]}, "output_hypernetworks_mlps" {k: 3-layer MLP}, "iou_prediction_head"
    {"layers": {0, 1, 2: Linear}}, and the rest. Return NEW parameters (leave ``p`` unchanged)
    with which the decoder's masks i and j trade places, and so do their predicted IoUs, for any
    image and prompt, every other output staying as it was. Which weights decide "output k"?
    Swapping only the hypernetwork MLPs is not enough: try it and see what the check says.
    """
    raise NotImplementedError("12.3 swap_mask_outputs")
