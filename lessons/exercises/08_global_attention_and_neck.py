"""Exercises for lesson 08: global attention, the neck, and the sizes of ViT-B/L/H.

Fill in each function, then run ``python lessons/exercises.py 08``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)


def scores_per_head(G, w):
    """Exercise 08.1. What windows save: attention scores one head computes on a G x G grid.

    Returns ``(windowed, global_)``: a windowed block pads the grid to the next multiple of
    ``w`` and computes, in each w x w window, one score per (query, key) pair of that window; a
    global block computes one score per pair of the G * G tokens. (For ViT-B, G = 64, w = 14.)
    """
    raise NotImplementedError("08.1 scores_per_head")


def block_params(D, num_heads, rel_pos_len, mlp_ratio=4):
    """Exercise 08.2. The number of parameters of one ViT block of width D.

    A block is: LayerNorm (weight and bias), attention (a qkv Linear D -> 3D with bias, an
    output Linear D -> D with bias, and two relative-position tables of ``rel_pos_len`` rows of
    D / num_heads numbers), LayerNorm, and an MLP (Linear D -> mlp_ratio D, GELU, Linear back,
    both with bias). ``rel_pos_len`` is 2w - 1 in a windowed block, 2G - 1 in a global one.
    """
    raise NotImplementedError("08.2 block_params")


def layer_norm_2d(x, weight, bias, eps=1e-6):
    """Exercise 08.3. The neck's LayerNorm2d: normalize over channels, at every pixel.

    ``x``: [C, H, W]; ``weight``, ``bias``: [C]. For each pixel, subtract the mean of its C
    values and divide by the square root of their (biased) variance + eps, then scale and shift
    per channel. Returns [C, H, W].
    """
    raise NotImplementedError("08.3 layer_norm_2d")
