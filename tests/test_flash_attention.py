"""The blocked, fused attention (``minisam.kernels.attention``) equals its NumPy twin and the float64
reference, whatever the blocks; the encoder equals the official one with every attention variant.

Tolerances. Against the float64 reference (``kernels.layers.attention_rel_pos_numpy``) the float32
kernel's forward error is bounded as in ``tests/test_kernels.py::test_attention_rel_pos``: a logit
is a float32 sum of hd products plus two rel-pos adds, off by at most d = (hd + 2) 2^-24 sum|terms|;
logits off by d move each output (a convex combination of v rows) by at most 2 d max|v|; exp, the
normalization and the output sum add a few ulps (2e-6 max|v|). The online softmax adds one rescale
of the running sum and output per key block, each a float32 product with a factor exp'd within
2e-7: nb x 3e-7 max|v| more for nb key blocks. The kernel and its twin (float32 both, the same
blocks) are held to the same bound. The encoder tests use the parity bound of
``tests/test_image_encoder.py`` (1e-5 x max|ref| for every traced intermediate), unchanged.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisam.kernels import attention as FA
from minisam.kernels import layers as K
from minisam.kernels.threads import get_num_threads, set_num_threads

SETTINGS = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def _arr(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _inputs(seed, A, kh, kw, hd, scale):
    rng = np.random.default_rng(seed)
    T = kh * kw
    q, k, v = (_arr(rng, [A, T, hd], s) for s in (scale / np.sqrt(hd), 1.0, 1.0))
    return q, k, v, _arr(rng, [A, T, kh]), _arr(rng, [A, T, kw])


def _bound(q, k, v, rel_h, rel_w, key_blocks):
    """The forward error bound of the module docstring, in units of output."""
    hd = q.shape[-1]
    terms = np.matmul(np.abs(q).astype(np.float64), np.abs(k).astype(np.float64).transpose(0, 2, 1))  # [A, T, T]
    terms = terms.max() + np.abs(rel_h).max() + np.abs(rel_w).max()
    d = (hd + 2) * 2.0 ** -24 * terms
    return (2 * d + 2e-6 + key_blocks * 3e-7) * np.abs(v).max()


def _check(q, k, v, rel_h, rel_w, key_rows, budget):
    A, T, _ = q.shape
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    calls, q_rows, k_rows = FA.block_sizes(A, T, kh, kw, key_rows, budget)
    ref = K.attention_rel_pos_numpy(q, k, v, rel_h, rel_w)                     # float64 throughout
    twin = FA.flash_attention_rel_pos_numpy(q, k, v, rel_h, rel_w, q_rows, k_rows)
    got = FA.flash_attention_rel_pos(q, k, v, rel_h, rel_w, key_rows, budget)
    tol = _bound(q, k, v, rel_h, rel_w, -(-kh // k_rows))
    for name, a, b in (("kernel vs float64", got, ref), ("twin vs float64", twin, ref), ("kernel vs twin", got, twin)):
        assert a.dtype == np.float32 and a.shape == b.shape
        err = np.abs(a.astype(np.float64) - b).max()
        assert err <= tol, f"{name}: max abs err {err:.3e} > {tol:.3e} (blocks: calls {calls}, rows {q_rows}, key rows {k_rows})"
    return got


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(1, 20),
       st.sampled_from([1, 2, 3, 16]), st.sampled_from([1, 20, 60, 1000, 1 << 18]), seeds,
       st.sampled_from([1e-3, 1.0, 10.0]))
def test_flash_attention_equals_twin_and_reference(A, kh, kw, hd, key_rows, budget, seed, scale):
    """Random shapes and blocks: one key row per block and one query row per task up to whole calls
    grouped in one task; the online softmax runs over up to 9 key blocks."""
    _check(*_inputs(seed, A, kh, kw, hd, scale), key_rows, budget)


@pytest.mark.parametrize("A,kh,kw,hd,key_rows,budget", [
    (3, 8, 8, 16, 2, 8 * 2 * 8),          # 4 key blocks x 8 query blocks of 8 rows
    (2, 7, 5, 8, 3, 45),                  # ragged: key blocks of 3, 3, 1 rows; query blocks of 3 rows
    (12, 14, 14, 64, 16, 1 << 18),        # vit_b windows: 6 whole calls per task, one key block
    (2, 16, 16, 64, 4, 4096),             # a global grid in small: 4 key blocks x 4 query blocks
])
def test_flash_attention_blocks(A, kh, kw, hd, key_rows, budget):
    _check(*_inputs(A * 1000 + kh, A, kh, kw, hd, 10.0), key_rows, budget)


def test_online_softmax_sees_a_later_larger_max():
    """Logits that grow along the keys: every key block raises the running max, so every rescale
    factor alpha is far from 1 and a wrong one shows."""
    q, k, v, rel_h, rel_w = _inputs(5, 2, 6, 4, 8, 1.0)
    rel_h = (np.arange(6, dtype=np.float32) * 8.0)[None, None, :].repeat(2, 0).repeat(24, 1)  # [A, T, kh] rising
    _check(q, k, v, np.ascontiguousarray(rel_h), rel_w, 1, 8)


@pytest.mark.parametrize("budget", [50, 1 << 18])
def test_flash_attention_thread_count_does_not_change_a_bit(budget):
    """Tasks are independent and every GEMM runs on one BLAS thread: 1, 2 and 3 threads agree bit for bit."""
    q, k, v, rel_h, rel_w = _inputs(11, 5, 6, 6, 8, 3.0)
    before = get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            set_num_threads(n)
            outs.append(FA.flash_attention_rel_pos(q, k, v, rel_h, rel_w, 2, budget))
    finally:
        set_num_threads(before)
    for got in outs[1:]:
        assert np.array_equal(got, outs[0])


def test_block_sizes():
    for A, kh, kw, key_rows, budget in [(12, 64, 64, 16, 1 << 18), (300, 14, 14, 16, 1 << 18), (3, 8, 8, 2, 100),
                                         (2, 7, 5, 3, 1), (4, 3, 3, 16, 1 << 30)]:
        T = kh * kw
        calls, q_rows, k_rows = FA.block_sizes(A, T, kh, kw, key_rows, budget)
        assert 1 <= calls <= A and 1 <= q_rows <= T and 1 <= k_rows <= min(kh, key_rows)
        assert calls * q_rows * k_rows * kw <= max(budget, kw)      # at least one key row
        assert calls == 1 or q_rows == T                             # calls are grouped only whole
    assert FA.block_sizes(12, 4096, 64, 64) == (1, 256, 16)           # vit_b global: 256 rows x 1024 keys
    assert FA.block_sizes(300, 196, 14, 14) == (6, 196, 14)           # vit_b windows: 6 calls a task


def test_flash_attention_never_holds_the_scores():
    """Peak NumPy allocation of a call stays near its inputs and output, far under [A, T, T]."""
    q, k, v, rel_h, rel_w = _inputs(3, 2, 32, 32, 8, 1.0)               # T = 1024
    A, T, hd = q.shape
    budget = 1 << 14
    FA.flash_attention_rel_pos(q, k, v, rel_h, rel_w, 4, budget)       # compiled before measuring
    tracemalloc.start()
    try:
        FA.flash_attention_rel_pos(q, k, v, rel_h, rel_w, 4, budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held_per_thread = 4 * (budget + 3 * 256 * hd + (32 + 32) * 256) + 4096  # scores, P V, O, rel-pos^T [kh + kw, r], row stats
    limit = 4 * A * T * hd + max(1, get_num_threads()) * held_per_thread + 65536
    assert peak <= limit, f"peak {peak} B > {limit} B"
    assert limit < 4 * A * T * T / 4                                    # the check could see [A, T, T]


def test_flash_attention_refuses_mismatched_shapes():
    q, k, v, rel_h, rel_w = _inputs(0, 2, 3, 4, 5, 1.0)
    with pytest.raises(ValueError, match="kh \\* kw"):
        FA.flash_attention_rel_pos(q, k, v, rel_h[:, :, :2], rel_w)         # 2 x 4 keys, not 12
    with pytest.raises(ValueError, match="kh \\* kw"):
        FA.flash_attention_rel_pos(q, k, v[:, :-1], rel_h, rel_w)           # 11 values for 12 keys


# --------------------------------------------------------------------------- the encoder, every variant

@pytest.mark.parametrize("variant", ["numba windows", "small key blocks"])
@pytest.mark.parametrize("name", ["pad_window", "one_head_global_first", "odd_heads_global_last"])
def test_encoder_parity_tiny_variants(name, variant, monkeypatch):
    """The fast encoder against the official one, every traced intermediate within the parity bound:
    windows through the Numba kernel (``_WINDOW_ATTENTION = "numba"``), or every attention call
    (windows too) through the blocked kernel with one key-grid row per key block and a few query
    rows per task, so the online softmax runs over every key row."""
    from test_image_encoder import encoder_parity_tiny
    import minisam.kernels.image_encoder as enc
    if variant == "numba windows":
        monkeypatch.setattr(enc, "_WINDOW_ATTENTION", "numba")
    else:
        monkeypatch.setattr(enc, "_SMALL_T", 0)
        monkeypatch.setattr(enc, "_KEY_ROWS", 1)
        monkeypatch.setattr(enc, "_SCORE_BUDGET", 40)
    encoder_parity_tiny(name, enc.image_encoder, f"encoder {name} ({variant})")
