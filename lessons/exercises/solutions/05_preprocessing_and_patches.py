"""Reference solutions for lesson 05's exercises."""

import numpy as np

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def preprocess_shape(h, w, S):
    scale = S * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def normalize_and_pad(image, S):
    _, h, w = image.shape
    mean = np.asarray(PIXEL_MEAN, np.float32)[:, None, None]
    std = np.asarray(PIXEL_STD, np.float32)[:, None, None]
    out = np.zeros((3, S, S), np.float32)
    out[:, :h, :w] = (image.astype(np.float32) - mean) / std
    return out


def patchify(x, P):
    _, S, _ = x.shape
    G = S // P
    patches = x.reshape(3, G, P, G, P).transpose(1, 3, 0, 2, 4)    # [G, G, 3, P, P]
    return patches.reshape(G * G, 3 * P * P)
