"""Checks for lesson 07's exercises: against minisam/modeling/image_encoder.py."""

import numpy as np
from _common import close

from minisam.modeling import image_encoder as ref

# Grids that pad and grids that do not, odd sizes, B > 1.
CASES = [((2, 7, 5, 3), 3), ((1, 8, 8, 4), 4), ((1, 10, 10, 2), 4), ((3, 3, 6, 5), 2)]


def check_partition(m):
    rng = np.random.default_rng(1)
    for shape, w in CASES:
        x = rng.normal(size=shape).astype(np.float32)
        windows, pad = m.window_partition(x, w)
        expected, expected_pad = ref.window_partition(x, w)
        assert tuple(pad) == tuple(expected_pad), \
            f"grid {shape[1:3]}, window {w}: padded to {pad}, expected {expected_pad}"
        close(windows, expected, f"windows of a {shape} grid, window {w}")
    return "4 grids, 2 of them padded"


def check_unpartition(m):
    rng = np.random.default_rng(2)
    for shape, w in CASES:
        x = rng.normal(size=shape).astype(np.float32)
        windows, pad = ref.window_partition(x, w)
        back = m.window_unpartition(windows, w, pad, shape[1:3])
        close(back, x, f"unpartition of a {shape} grid, window {w}")
        close(back, ref.window_unpartition(windows, w, pad, shape[1:3]), "unpartition")


def check_rel_pos(m):
    rng = np.random.default_rng(3)
    for A, w, d in [(2, 3, 4), (5, 4, 8), (1, 7, 2)]:
        q = rng.normal(size=(A, w * w, d)).astype(np.float32)
        rh, rw = (rng.normal(size=(2 * w - 1, d)).astype(np.float32) for _ in range(2))
        mine = m.rel_pos_bias(q, rh, rw, w)
        expected = ref.add_decomposed_rel_pos(np.zeros((A, w * w, w * w), np.float32), q, rh, rw, (w, w), (w, w))
        close(mine, expected, f"bias for A={A}, w={w}, d={d}", rtol=1e-4, atol=1e-5)


CHECKS = [("07.1 window_partition with padding", check_partition),
          ("07.2 window_unpartition", check_unpartition),
          ("07.3 the decomposed rel-pos bias", check_rel_pos)]
