"""Reference solutions for lesson 22's exercises."""

import numpy as np


def layer_norm_backward(dy, x, weight, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    g = dy * weight
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    axes = tuple(range(dy.ndim - 1))
    return dx, (dy * xhat).sum(axes), dy.sum(axes)


def attention_backward(d_out, q, k, v):
    scale = 1 / np.sqrt(q.shape[1])
    s = q @ k.T * scale
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dv = p.T @ d_out
    dp = d_out @ v.T
    ds = p * (dp - (dp * p).sum(1, keepdims=True))
    return ds @ k * scale, ds.T @ q * scale, dv


def adamw_step(param, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1):
    b1, b2 = betas
    param = param * (1 - lr * weight_decay)
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return param - lr * mhat / (np.sqrt(vhat) + eps), m, v
