"""Reference solutions for lesson 09's exercises."""

import numpy as np


def fourier_pe(coords, gauss):
    proj = (2 * np.asarray(coords, np.float32) - 1) @ gauss            # [..., C/2]
    proj = np.float32(2 * np.pi) * proj
    return np.concatenate([np.sin(proj), np.cos(proj)], axis=-1).astype(np.float32)


def raw_xy_pe(coords, C):
    centred = 2 * np.asarray(coords, np.float32) - 1                  # [..., 2]
    return np.tile(centred, C // 2).astype(np.float32)                # [..., C] x, y, x, y, ...


def confusable_pair(S, gauss):
    # The cosine of two raw encodings is the cosine of the angle between the two points seen
    # from the image centre: every point on a ray from the centre looks the same, however far.
    # Two points on the ray towards the bottom-right corner, half the image apart:
    return (S // 2 + S // 8, S // 2 + S // 8), (S - 2, S - 2)


def box_tokens(box, gauss, corner_embeddings, S):
    corners = (np.asarray(box, np.float32).reshape(2, 2) + 0.5) / S   # [2, 2] (x, y) in [0, 1]
    return fourier_pe(corners, gauss) + corner_embeddings
