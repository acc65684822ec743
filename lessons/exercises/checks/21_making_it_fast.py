"""Checks for lesson 21's exercises: the blocked softmax against plain attention, roofline arithmetic."""

import numpy as np
from _common import close


def reference_attention(q, k, v):
    s = q @ k.T / np.sqrt(q.shape[1])
    w = np.exp(s - s.max(1, keepdims=True))
    return (w / w.sum(1, keepdims=True)) @ v


def check_blocked(m):
    rng = np.random.default_rng(0)
    for Tq, Tk, d, block in [(5, 64, 8, 16), (7, 50, 4, 16), (3, 10, 2, 1), (9, 33, 6, 100)]:
        q, k, v = (rng.normal(0, 3, (T, d)) for T in (Tq, Tk, Tk))
        k[-1] *= 20                                  # a late key with a large score: the maximum moves
        close(m.blocked_attention(q, k, v, block), reference_attention(q, k, v),
              f"Tq={Tq}, Tk={Tk}, d={d}, block {block}", rtol=1e-9, atol=1e-12)


def check_roofline(m):
    peak, bandwidth = 200e9, 20e9                    # 200 GFLOP/s, 20 GB/s: the ridge at 10 FLOP/byte
    for (mm, k, n), bound in [((4096, 768, 2304), "compute"), ((1, 768, 768), "memory"), ((64, 64, 64), "compute"),
                              ((8, 8, 8), "memory")]:
        intensity, attainable, where = m.matmul_roofline(mm, k, n, peak, bandwidth)
        expected = 2 * mm * k * n / (4 * (mm * k + k * n + mm * n))
        assert np.isclose(intensity, expected), f"{mm}x{k} @ {k}x{n}: intensity {intensity}, expected {expected}"
        assert np.isclose(attainable, min(peak, expected * bandwidth)), f"{mm}x{k} @ {k}x{n}: attainable {attainable}"
        assert where == bound, f"{mm}x{k} @ {k}x{n} (intensity {expected:.1f}): {where!r}, expected {bound!r}"
    intensity = m.matmul_roofline(4096, 768, 2304, peak, bandwidth)[0]
    return f"the qkv projection of ViT-B's global block: {intensity:.0f} FLOP/byte"


CHECKS = [("21.1 attention by blocks of keys (online softmax)", check_blocked),
          ("21.2 a matrix product on the roofline", check_roofline)]
