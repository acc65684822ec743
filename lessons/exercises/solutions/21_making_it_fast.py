"""Reference solutions for lesson 21's exercises."""

import numpy as np


def blocked_attention(q, k, v, block):
    Tq, d = q.shape
    running_max = np.full((Tq, 1), -np.inf)
    running_sum = np.zeros((Tq, 1))
    acc = np.zeros((Tq, v.shape[1]))
    for start in range(0, k.shape[0], block):
        scores = q @ k[start:start + block].T / np.sqrt(d)             # [Tq, b]
        new_max = np.maximum(running_max, scores.max(1, keepdims=True))
        rescale = np.exp(running_max - new_max)                         # exp(-inf) = 0 on the first block
        weights = np.exp(scores - new_max)
        running_sum = running_sum * rescale + weights.sum(1, keepdims=True)
        acc = acc * rescale + weights @ v[start:start + block]
        running_max = new_max
    return acc / running_sum


def matmul_roofline(m, k, n, peak_flops, bandwidth, bytes_per_number=4):
    flops = 2 * m * k * n
    moved = bytes_per_number * (m * k + k * n + m * n)
    intensity = flops / moved
    attainable = min(peak_flops, intensity * bandwidth)
    return intensity, attainable, "memory" if intensity * bandwidth < peak_flops else "compute"
