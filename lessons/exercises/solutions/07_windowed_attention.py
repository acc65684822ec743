"""Reference solutions for lesson 07's exercises."""

import numpy as np


def window_partition(x, w):
    B, H, W, D = x.shape
    Hp, Wp = -(-H // w) * w, -(-W // w) * w                       # next multiples of w
    x = np.pad(x, ((0, 0), (0, Hp - H), (0, Wp - W), (0, 0)))     # [B, Hp, Wp, D]
    x = x.reshape(B, Hp // w, w, Wp // w, w, D).transpose(0, 1, 3, 2, 4, 5)   # [B, nH, nW, w, w, D]
    return x.reshape(-1, w, w, D), (Hp, Wp)


def window_unpartition(windows, w, pad_hw, hw):
    (Hp, Wp), (H, W) = pad_hw, hw
    D = windows.shape[-1]
    B = windows.shape[0] // ((Hp // w) * (Wp // w))
    x = windows.reshape(B, Hp // w, Wp // w, w, w, D).transpose(0, 1, 3, 2, 4, 5)   # [B, nH, w, nW, w, D]
    return x.reshape(B, Hp, Wp, D)[:, :H, :W]


def rel_pos_bias(q, rel_pos_h, rel_pos_w, w):
    A, T, d = q.shape
    idx = np.arange(w)[:, None] - np.arange(w)[None, :] + w - 1   # [w, w] row y, column y'
    Rh, Rw = rel_pos_h[idx], rel_pos_w[idx]                      # [w, w, d] each
    qg = q.reshape(A, w, w, d)                                   # [A, y, x, d]
    rel_h = np.einsum("ayxd,ykd->ayxk", qg, Rh)                  # [A, y, x, y'] q . Rh[y - y']
    rel_w = np.einsum("ayxd,xkd->ayxk", qg, Rw)                  # [A, y, x, x'] q . Rw[x - x']
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]     # [A, y, x, y', x']
    return bias.reshape(A, T, T)
