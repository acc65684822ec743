"""Each Numba kernel of minisam.kernels.layers equals its readable NumPy twin, on random shapes.

Tolerances: the twins accumulate in float64 and use the true exp/erf, the kernels run in
float32 with float64 scalar accumulators and float32 polynomial exp/erf, so they differ by a
few float32 ulps: LayerNorm 1e-6 x max(1, max|ref|) (output O(|w|)), GELU 1e-6 x max(1, max|x|)
(erf within 5e-7), softmax 1e-6 relative + 1e-7 absolute (probabilities <= 1).
The last two tests pin the accuracy of the polynomial exp and erf themselves.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisam.kernels import layers as K

SETTINGS = settings(max_examples=40, deadline=None)

leading = st.lists(st.integers(1, 6), min_size=0, max_size=3)
last = st.integers(1, 70)            # covers the 8-lane body and its remainder
seeds = st.integers(0, 2**32 - 1)
scales = st.sampled_from([1e-3, 1.0, 10.0, 1e3])


def _arr(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _close(got, ref, atol):
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


@SETTINGS
@given(leading, last, seeds, scales, st.sampled_from([1e-6, 1e-5]))
def test_layer_norm(lead, C, seed, scale, eps):
    rng = np.random.default_rng(seed)
    x, w, b = _arr(rng, lead + [C], scale), _arr(rng, [C]), _arr(rng, [C])
    ref = K.layer_norm_numpy(x, w, b, eps)
    _close(K.layer_norm(x, w, b, eps), ref, 1e-6 * max(1.0, np.abs(ref).max()))


@SETTINGS
@given(leading, last, seeds, scales, st.booleans())
def test_add_layer_norm(lead, C, seed, scale, with_bias):
    rng = np.random.default_rng(seed)
    x, d = _arr(rng, lead + [C], scale), _arr(rng, lead + [C], scale)
    w, b, db = _arr(rng, [C]), _arr(rng, [C]), (_arr(rng, [C]) if with_bias else None)
    ref_sum, ref = K.add_layer_norm_numpy(x, d, w, b, 1e-6, db)
    x_inplace = x.copy()
    got = K.add_layer_norm(x_inplace, d, w, b, 1e-6, delta_bias=db)
    np.testing.assert_array_equal(x_inplace, ref_sum)        # the same float32 adds, same order
    _close(got, ref, 1e-6 * max(1.0, np.abs(ref).max()))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 9), st.integers(1, 9), seeds)
def test_layer_norm2d(B, C, H, W, seed):
    rng = np.random.default_rng(seed)
    x, w, b = _arr(rng, [B, C, H, W], 3.0), _arr(rng, [C]), _arr(rng, [C])
    ref = K.layer_norm2d_numpy(x, w, b)
    _close(K.layer_norm2d(x, w, b), ref, 1e-6 * max(1.0, np.abs(ref).max()))


@SETTINGS
@given(leading, last, seeds, st.sampled_from([0.1, 1.0, 3.0, 30.0]), st.booleans())
def test_gelu(lead, C, seed, scale, with_bias):
    rng = np.random.default_rng(seed)
    x = _arr(rng, lead + [C], scale)
    b = _arr(rng, [C]) if with_bias else None
    ref = K.gelu_numpy(x, b)
    _close(K.gelu(x, b), ref, 1e-6 * max(1.0, np.abs(x).max()))
    inplace = x.copy()
    K.gelu(inplace, b, out=inplace)
    assert np.array_equal(inplace, K.gelu(x, b))  # the in-place kernel computes the same bits


def test_gelu_out_must_be_x_or_apart():
    x = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        K.gelu(x[1:], out=x[:-1])
    with pytest.raises(ValueError, match="C-contiguous float32"):
        K.gelu(x, out=np.empty((6, 4), np.float32).T)


def test_out_arrays_are_written_or_refused():
    """The kernels with ``out=`` (the encoder reuses one array per role through them) write into it
    bit for bit what they return without one, and refuse an ``out`` of another shape or dtype, or
    one that shares memory with an input."""
    from minisam.kernels import attention as FA
    from minisam.kernels import image_encoder as enc
    rng = np.random.default_rng(0)
    A, kh, kw, hd, nH = 4, 3, 5, 8, 2
    T = kh * kw
    q, k, v = (_arr(rng, (A, T, hd)) for _ in range(3))
    rel_h, rel_w = _arr(rng, (A, T, kh)), _arr(rng, (A, T, kw))
    x, d, w, b = _arr(rng, (6, 16)), _arr(rng, (6, 16)), _arr(rng, 16), _arr(rng, 16)
    Rh, Rw = _arr(rng, (kh, kh, hd)), _arr(rng, (kw, kw, hd))
    qg = q.reshape(A, kh, kw, hd)
    cases = [  # (name, call without out, call with out, out of the right shape)
        ("add_layer_norm", lambda: K.add_layer_norm(x.copy(), d, w, b),
         lambda o: K.add_layer_norm(x.copy(), d, w, b, out=o), (6, 16)),
        ("flash_attention_rel_pos", lambda: FA.flash_attention_rel_pos(q, k, v, rel_h, rel_w, 2),
         lambda o: FA.flash_attention_rel_pos(q, k, v, rel_h, rel_w, 2, out=o), (A, T, hd)),
        ("merge_heads", lambda: enc.merge_heads(q, nH, (kh, kw), 0),
         lambda o: enc.merge_heads(q, nH, (kh, kw), 0, out=o), (A // nH, kh, kw, nH * hd)),
        ("rel_pos_terms", lambda: K.rel_pos_terms(qg, Rh, Rw)[0],
         lambda o: K.rel_pos_terms(qg, Rh, Rw, (o, None))[0], (A, kh, kw, kh)),
    ]
    for name, plain, into, shape in cases:
        out = np.full(shape, np.nan, np.float32)
        got = into(out)
        assert got is out, name
        np.testing.assert_array_equal(out, plain(), err_msg=name)
        with pytest.raises(ValueError, match=f"{name}: out must be"):
            into(np.empty(shape[:-1] + (shape[-1] + 1,), np.float32))
        with pytest.raises(ValueError, match=f"{name}: out must be"):
            into(np.empty(shape, np.float64))
    with pytest.raises(ValueError, match="flash_attention_rel_pos: out shares memory"):
        FA.flash_attention_rel_pos(q, k, v, rel_h, rel_w, 2, out=v)
    with pytest.raises(ValueError, match="add_layer_norm: out shares memory"):
        K.add_layer_norm(x, d, w, b, out=d)


@SETTINGS
@given(leading, last, seeds, st.sampled_from([0.1, 1.0, 3.0, 30.0]))
def test_gelu_kernel_equals_readable_gelu_bit_for_bit(lead, C, seed, scale):
    """The vectorized kernel (error_model="numpy") computes what the readable path's NumPy GELU
    (``modeling.common.gelu``, the same erf fit in the same order) computes, to the bit."""
    from minisam.modeling.common import gelu as readable_gelu
    x = _arr(np.random.default_rng(seed), lead + [C], scale)
    assert np.array_equal(K.gelu(x), readable_gelu(x))


@SETTINGS
@given(leading, st.integers(1, 300), seeds, scales)
def test_softmax(lead, N, seed, scale):
    rng = np.random.default_rng(seed)
    x = _arr(rng, lead + [N], scale)
    ref = K.softmax_numpy(x)
    got = K.softmax(x)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 16), st.integers(1, 16), seeds, scales)
def test_softmax_rel_pos(R, kh, kw, seed, scale):
    rng = np.random.default_rng(seed)
    attn, rh, rw = _arr(rng, [R, kh * kw], scale), _arr(rng, [R, kh], scale), _arr(rng, [R, kw], scale)
    ref = K.softmax_rel_pos_numpy(attn, rh, rw)
    got = K.softmax_rel_pos_(attn.copy(), rh, rw)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(1, 20), seeds,
       st.sampled_from([1e-3, 1.0, 10.0]))
def test_attention_rel_pos(N, kh, kw, hd, seed, scale):
    # Logits of O(1000) (scale 1e3) are ill-conditioned in float32 itself: one ulp of a logit
    # (6e-5) moves a probability by 6e-5 relative, whatever the summation order. Real
    # attention logits are O(10), so the test stops at logits of std 10.
    rng = np.random.default_rng(seed)
    T = kh * kw
    q, k, v = (_arr(rng, [N, T, hd], s) for s in (scale / np.sqrt(hd), 1.0, 1.0))
    rh, rw = _arr(rng, [N, T, kh]), _arr(rng, [N, T, kw])
    ref = K.attention_rel_pos_numpy(q, k, v, rh, rw)          # float64 throughout
    got = K.attention_rel_pos(q, k, v, rh, rw)
    # Forward error bound of the float32 kernel against the float64 twin. A logit is a float32
    # sum of hd products plus two rel-pos adds: error <= (hd + 2) u sum|terms| (u = 2^-24).
    # Perturbing logits by at most d moves each output (a convex combination of v rows) by at
    # most 2 d max|v|; exp, the normalisation and the output sum add a few ulps (2e-6 max|v|).
    # Logits of std 10 (scale 10) make d ~1e-5, which a fixed 2e-6 ignored.
    terms = np.matmul(np.abs(q).astype(np.float64), np.abs(k).astype(np.float64).transpose(0, 2, 1))   # [N, T, T]
    terms = terms.max() + np.abs(rh).max() + np.abs(rw).max()
    d = (hd + 2) * 2.0 ** -24 * terms
    _close(got, ref, (2 * d + 2e-6) * np.abs(v).max())


def test_exp_polynomial_accuracy():
    x = np.concatenate([np.linspace(-87, 88, 200001), np.linspace(-1, 1, 10001)]).astype(np.float32)
    got = np.empty_like(x)[None]
    K._exp_kernel(x[None], got)
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got[0] - ref) / ref) < 2e-7


def test_fma_rounds_once_and_bits_float_builds_powers_of_two():
    """``jit.fma`` is a * b + c with one rounding: a = b = 1 + 2^-12 gives a b = 1 + 2^-11 + 2^-24,
    whose float32 rounding (a tie, to even) drops the 2^-24 that the fused result keeps; on random
    operands it equals the float64 value rounded to float32.
    ``jit.bits_float((n + 127) << 23)`` is 2**n for every normal exponent n."""
    from minisam.kernels.jit import bits_float, fma, njit

    @njit
    def fused(a, b, c, out):
        for i in range(a.size):
            out[i] = fma(a[i], b[i], c[i])

    @njit
    def powers(n, out):
        for i in range(n.size):
            out[i] = bits_float((n[i] + np.int32(127)) << np.int32(23))

    one = np.float32(1 + 2.0 ** -12)
    a, b, c = (np.array([v], np.float32) for v in (one, one, -(1 + 2.0 ** -11)))
    got = np.empty(1, np.float32)
    fused(a, b, c, got)
    assert got[0] == np.float32(2.0 ** -24) and (a * b + c)[0] == 0
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(4096).astype(np.float32) for _ in range(3))
    got = np.empty(4096, np.float32)
    fused(a, b, c, got)
    # a b is exact in float64 (48 bits); a b + c rounded to float64 and then to float32 differs from
    # one rounding only when the float64 sum lands on a float32 tie (odds ~2^-29 per draw)
    assert np.array_equal(got, (a.astype(np.float64) * b + c).astype(np.float32))
    n = np.arange(-126, 128, dtype=np.int32)
    got = np.empty(n.size, np.float32)
    powers(n, got)
    assert np.array_equal(got, np.float32(2.0) ** n.astype(np.float32))


@SETTINGS
@given(st.integers(1, 300), seeds, st.sampled_from(["mixed", "negative", "positive", "specials"]))
def test_row_max_over_integer_keys_is_numpys_max(N, seed, kind):
    """The softmax row max, taken over integer keys of the float bits, is the float max: rows
    all negative (where a plain integer compare of the bits would pick the smallest), all
    positive, mixed, and with signed zeros, infinities, subnormals and huge values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, N)) * np.array([[1e-3], [1.0], [30.0], [1e30]])  # [4, N]
    if kind == "negative":
        x = -np.abs(x) - 1e-38
    elif kind == "positive":
        x = np.abs(x)
    elif kind == "specials":
        specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38])
        x.flat[rng.integers(0, x.size, 2 * N)] = specials[rng.integers(0, 8, 2 * N)]
    x = x.astype(np.float32)
    got = np.empty(4, np.float32)
    K._row_max_kernel(x, got)
    assert np.array_equal(got, x.max(1))


def test_row_max_propagates_nan():
    x = np.array([[1.0, np.nan, 3.0], [-1.0, -2.0, np.nan]], np.float32)
    got = np.empty(2, np.float32)
    K._row_max_kernel(x, got)
    assert np.isnan(got).all()


def test_erf_rational_accuracy():
    x = np.concatenate([np.linspace(-6, 6, 100001), [0.0, -0.0, 1e-30, 50.0, -50.0]]).astype(np.float32)
    got = np.empty_like(x)[None]
    K._erf_kernel(x[None], got)
    ref = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.max(np.abs(got[0] - ref)) < 5e-7
    assert got[0, -2] == 1.0 and got[0, -1] == -1.0


def test_thread_count_does_not_change_a_bit():
    """parallel_for splits tasks in contiguous chunks; each task's arithmetic is the same,
    so 1, 2 and 3 threads give bit-identical outputs for every kernel."""
    from minisam.kernels.threads import get_num_threads, set_num_threads
    rng = np.random.default_rng(0)
    x = _arr(rng, (300, 70), 3.0)                                        # [R, C], several row blocks
    w, b = _arr(rng, 70), _arr(rng, 70)
    q, k, v = _arr(rng, (7, 36, 8)), _arr(rng, (7, 36, 8)), _arr(rng, (7, 36, 8))   # [N, T, hd]
    rh, rw = _arr(rng, (7, 36, 6)), _arr(rng, (7, 36, 6))               # [N, T, kh], [N, T, kw]

    def run_all():
        return [K.layer_norm(x, w, b), K.gelu(x, b), K.softmax(x), K.add_layer_norm(x.copy(), x, w, b)[0],
                K.softmax_rel_pos_(x[:252, :36].copy(), rh.reshape(-1, 6), rw.reshape(-1, 6)),
                K.attention_rel_pos(q, k, v, rh, rw)]

    before = get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            set_num_threads(n)
            outs.append(run_all())
    finally:
        set_num_threads(before)
    for got in outs[1:]:
        for a, ref in zip(got, outs[0]):
            assert np.array_equal(a, ref)


def test_parallel_blas_holds_blas_to_one_thread_inside_its_tasks():
    """Each chunk of ``parallel_blas`` runs its GEMMs with BLAS on one thread, so that the two
    pools never nest; afterwards BLAS has its thread count back. With one minisam thread the
    tasks run in one call, BLAS threading its own GEMMs. The rel-pos GEMMs give the same bits
    on 1, 2 and 3 threads (each call's products are the same GEMMs)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from minisam.kernels.threads import get_num_threads, parallel_blas, set_num_threads

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    def tasks(lo, hi, seen):
        seen.append((lo, hi, blas_threads()))

    rng = np.random.default_rng(0)
    q, Rh, Rw = _arr(rng, (5, 6, 7, 8)), _arr(rng, (6, 4, 8)), _arr(rng, (7, 3, 8))   # [A, qh, qw, hd], ...
    before = get_num_threads()
    try:
        set_num_threads(2)
        seen = []
        parallel_blas(tasks, 4, seen)
        assert sorted(s[:2] for s in seen) == [(0, 2), (2, 4)]
        assert all(set(s[2]) == {1} for s in seen)
        assert set(blas_threads()) == {2}
        set_num_threads(1)
        seen = []
        parallel_blas(tasks, 4, seen)
        assert [s[:2] for s in seen] == [(0, 4)]
        terms = []
        for n in (1, 2, 3):
            set_num_threads(n)
            terms.append(K.rel_pos_terms(q, Rh, Rw))
    finally:
        set_num_threads(before)
    for got in terms[1:]:
        for a, ref in zip(got, terms[0]):
            assert np.array_equal(a, ref)


def test_parallel_for_raises_what_a_task_raises():
    from minisam.kernels.threads import get_num_threads, parallel_for, set_num_threads

    def kernel(lo, hi, out):
        if lo > 0:
            raise ValueError(f"task chunk {lo}-{hi}")
        out[lo:hi] = 1

    before = get_num_threads()
    set_num_threads(2)
    try:
        out = np.zeros(10)
        try:
            parallel_for(kernel, 10, out)
        except ValueError as exc:
            assert "task chunk 5-10" in str(exc)
        else:
            raise AssertionError("the error of the second chunk was lost")
        assert out[:5].sum() == 5          # the first chunk ran on the calling thread
    finally:
        set_num_threads(before)


@pytest.mark.parametrize("code, env_value, expected", [
    ("import minisam", None, ("20", "set by minisam")),
    ("import numpy, minisam", None, (None, "not set: NumPy was imported first")),
    ("import minisam", "8", ("8", "set by the environment")),
])
def test_import_shortens_the_openblas_spin_only_when_it_can(code, env_value, expected):
    """``import minisam`` sets OPENBLAS_THREAD_TIMEOUT before NumPy loads OpenBLAS, never after
    it, and never over a value the user set; thread_info says which happened."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if env_value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = env_value
    out = subprocess.run([sys.executable, "-c", code + "; import json, os; from minisam.kernels.threads import "
                          "thread_info; s = thread_info()['blas_spin']; print(json.dumps([os.environ.get("
                          "'OPENBLAS_THREAD_TIMEOUT'), s['OPENBLAS_THREAD_TIMEOUT'], s['how']]))"],
                         env=env, capture_output=True, text=True, check=True).stdout
    value, reported, how = json.loads(out.strip().splitlines()[-1])
    assert (value, how) == expected and reported == value
