"""Exercises for lesson 02: an encoder-decoder (a tiny U-Net), and its least-squares read-out.

Fill in each function, then run ``python lessons/exercises.py 02``. NumPy only in your answers.
Feature maps are channels first, [C, h, w], as in the lesson.
"""

import numpy as np  # noqa: F401  (for your answers)


def receptive_field(layers):
    """Exercise 02.1. How much of the image does one bottleneck pixel see?

    ``layers``: the encoder in order, each ``("conv", k)`` (a k x k convolution, k odd, stride 1,
    'same' padding) or ``("pool", k)`` (k x k pooling with stride k). For a pixel of the last
    map, away from the image border, returns ``(side, stride)``: the side of the square of input
    pixels its value depends on (its receptive field), and the distance in input pixels between
    the receptive fields of two neighbouring pixels of the last map. The lesson's encoder is
    ``[("conv", 3), ("pool", 2), ("conv", 3), ("pool", 2), ("conv", 3), ("pool", 2), ("conv", 3)]``.
    """
    raise NotImplementedError("02.1 receptive_field")


def decoder_features(levels):
    """Exercise 02.2. The decoder: upsample the bottleneck, bring the skips across, concatenate.

    ``levels``: the encoder's maps, level i of shape [C_i, S / 2**i, S / 2**i], i = 0 .. L-1;
    the last one is the bottleneck B. Every map is brought to S x S by nearest-neighbour
    upsampling (each pixel becomes an f x f block, f = S / its side). Returns the read-out's
    input as the lesson's ``unet_features`` lays it out, [S * S, F] (row y * S + x is pixel
    (x, y)), with the channels in this order: B upsampled; B minus its per-channel mean over
    its pixels, upsampled; one channel of ones; then the skips, levels L-2, L-3, ..., 0, each
    upsampled. F = 2 C_{L-1} + 1 + C_0 + ... + C_{L-2}.
    """
    raise NotImplementedError("02.2 decoder_features")


def fit_readout(batches, ridge=1.0):
    """Exercise 02.3. The 1 x 1 read-out, fitted by least squares.

    ``batches``: an iterable (read it once) of ``(X, foreground)``, one per training image:
    X [n, F] float, the decoder features of its n pixels; foreground [n] bool. The labels are
    y = +1 on foreground pixels and -1 on background ones. Returns w [F] float64 minimizing
    ||X w - y||^2 + ridge ||w||^2 over all the images, w = (X^T X + ridge I)^{-1} X^T y, with
    X^T X and X^T y accumulated image by image (the lesson never stacks every pixel). A pixel
    is then foreground when its score x . w is > 0.
    """
    raise NotImplementedError("02.3 fit_readout")
