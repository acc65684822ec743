"""Exercises for lesson 21: making it fast on a CPU.

Fill in each function, then run ``python lessons/exercises.py 21``. NumPy only in your answers.
"""

import numpy as np  # noqa: F401  (for your answers)


def blocked_attention(q, k, v, block):
    """Exercise 21.1. Attention without the full score matrix (the online softmax).

    ``q``: [Tq, d], ``k`` and ``v``: [Tk, d]. Returns softmax(q k^T / sqrt(d)) v, [Tq, d], but
    computing the scores ``block`` keys at a time: keep, per query row, the running maximum m,
    the running sum s of exp(score - m) and the running weighted sum of v; when a new block
    raises the maximum, rescale s and the weighted sum by exp(m_old - m_new). Divide at the end.
    Memory: [Tq, block] scores at a time instead of [Tq, Tk]; ``block`` need not divide Tk.
    """
    raise NotImplementedError("21.1 blocked_attention")


def matmul_roofline(m, k, n, peak_flops, bandwidth, bytes_per_number=4):
    """Exercise 21.2. Where a matrix product sits on the roofline.

    C[m, n] = A[m, k] B[k, n] does 2 m k n FLOPs and, at best, moves each of A, B and C once
    between memory and the cores. Returns ``(intensity, attainable, bound)``: the arithmetic
    intensity in FLOPs per byte, the attainable FLOP/s min(peak_flops, intensity * bandwidth),
    and "memory" if the bandwidth limits it (intensity * bandwidth < peak_flops), else "compute".
    """
    raise NotImplementedError("21.2 matmul_roofline")
