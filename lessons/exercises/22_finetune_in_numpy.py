"""Exercises for lesson 22: the backward pass in NumPy, and the optimizer step.

Fill in each function, then run ``python lessons/exercises.py 22``. NumPy only in your answers.
Inputs are float64.
"""

import numpy as np  # noqa: F401  (for your answers)


def layer_norm_backward(dy, x, weight, eps=1e-5):
    """Exercise 22.1. The backward pass of LayerNorm over the last axis.

    Forward: xhat = (x - mean) / sqrt(var + eps) (mean and biased variance over the last axis),
    y = xhat * weight + bias. Given dy = dL/dy (same shape as x), return ``(dx, dweight, dbias)``,
    dweight and dbias summed over every axis but the last. Hint: with g = dy * weight,
    dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps).
    """
    raise NotImplementedError("22.1 layer_norm_backward")


def attention_backward(d_out, q, k, v):
    """Exercise 22.2. The backward pass of one attention head.

    Forward: S = q k^T / sqrt(d), P = softmax(S) over the keys (rows), O = P v, with q [Tq, d],
    k and v [Tk, d]. Given d_out = dL/dO [Tq, d], return ``(dq, dk, dv)``: dv = P^T dO,
    dP = dO v^T, dS = P * (dP - rowsum(dP * P)), dq = dS k / sqrt(d), dk = dS^T q / sqrt(d).
    """
    raise NotImplementedError("22.2 attention_backward")


def adamw_step(param, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1):
    """Exercise 22.3. One AdamW step (torch.optim.AdamW), returning new arrays.

    ``t`` is the step number, starting at 1. Decoupled weight decay first,
    param <- param * (1 - lr * weight_decay); then m <- b1 m + (1 - b1) grad,
    v <- b2 v + (1 - b2) grad^2, and param <- param - lr * mhat / (sqrt(vhat) + eps) with the
    bias corrections mhat = m / (1 - b1^t), vhat = v / (1 - b2^t). Returns ``(param, m, v)``.
    """
    raise NotImplementedError("22.3 adamw_step")
