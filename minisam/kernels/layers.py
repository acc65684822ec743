"""Row kernels shared by every model part: LayerNorm, GELU, softmax, attention pieces.

Each kernel comes twice: a readable NumPy twin (``*_numpy``) that states the math in a few
lines, and a Numba kernel (``_*_kernel``) that does the same work in one pass over memory.
A kernel is a serial ``nogil`` function over a range of tasks (row blocks, attention calls);
:func:`minisam.kernels.threads.parallel_for` splits the tasks over threads. Numba's own
``parallel=True`` would do the same, but its extra compiler passes made the first run (with
an empty Numba cache) take ~2x longer; per task the arithmetic is identical. ``tests/test_kernels.py`` holds each pair equal with hypothesis.
The public functions (``layer_norm``, ``gelu``, ``softmax`` ...) call the Numba kernels.

Numerics follow the official PyTorch modules (``docs/numerics.md`` sections 3 and 4):
- LayerNorm (``torch.nn.LayerNorm``, ``modeling/common.py`` LayerNorm2d): biased variance,
  ``(x - mean) / sqrt(var + eps) * w + b``. The row mean and variance are accumulated in
  float64, in 8 independent partial sums (a tiny per-task scratch, no float64 tensors) so
  that the loop vectorizes with fastmath off; at least as exact as PyTorch's float32
  vectorized sums; the tensors stay float32.
- GELU (``torch.nn.GELU()``, default ``approximate="none"``): ``0.5 * x * (1 + erf(x / sqrt 2))``
  with the exact erf, never the tanh approximation.
- softmax over the last axis: subtract the row max, exponentiate, scale by 1 / sum, as
  ``aten/src/ATen/native/cpu/SoftMaxKernel.cpp`` (``_vec_softmax_lastdim``) does.

Big GEMMs never happen here: they are plain NumPy float32 matmuls (BLAS threads) outside
Numba, and these kernels run between them (minisam's threads), so the two never nest. The one
fast function here that is not a Numba kernel, ``rel_pos_terms``, is thousands of small BLAS
GEMMs, each of minisam's threads running its share with BLAS held to one thread.
All functions take and return float32.
"""

from __future__ import annotations

import math

import numpy as np

from minisam.kernels.jit import bits_float, fma, njit
from minisam.kernels.threads import parallel_blas, parallel_for

_SQRT1_2 = np.float32(1.0 / math.sqrt(2.0))


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def out_array(out, shape, name, *inputs):
    """``out`` checked to be a C-contiguous float32 array of ``shape`` that shares no memory with
    ``inputs``, or a new one if it is None: the ``out=`` of the row kernels, which lets a forward
    reuse one array per role (``kernels.image_encoder._buffer``)."""
    shape = tuple(shape)
    if out is None:
        return np.empty(shape, np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"{name}: out must be a C-contiguous float32 array of shape {shape}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    if any(np.may_share_memory(out, a) for a in inputs):
        raise ValueError(f"{name}: out shares memory with an input")
    return out


# --------------------------------------------------------------------------- LayerNorm

def layer_norm_numpy(x, weight, bias, eps=1e-6):
    """NumPy twin: LayerNorm over the last axis.  [..., C], [C], [C] -> [..., C]"""
    mean = x.mean(-1, keepdims=True, dtype=np.float64)                  # [..., 1]
    var = ((x - mean) ** 2).mean(-1, keepdims=True)                     # [..., 1] biased
    return (((x - mean) / np.sqrt(var + eps)) * weight + bias).astype(np.float32)  # [..., C]


_LN_LANES = 8  # independent float64 partial sums per row: a serial sum cannot vectorize with fastmath off


@njit
def _row_mean_inv_std(row, eps, acc):  # [C] float32, (), [_LN_LANES] float64 scratch -> (mean, 1/std)
    """Mean and 1 / sqrt(biased var + eps) of one row, accumulated in float64 over 8 lanes."""
    # Explicit loops instead of acc[:] = 0 / acc.sum(): each array method is one more Numba
    # overload to compile on a first run; the summation order is the same (lane 0 to 7).
    C = row.shape[0]
    body = C - C % _LN_LANES
    for l in range(_LN_LANES):
        acc[l] = 0.0
    for j0 in range(0, body, _LN_LANES):
        for l in range(_LN_LANES):
            acc[l] += row[j0 + l]
    total = 0.0
    for l in range(_LN_LANES):
        total += acc[l]
    for j in range(body, C):
        total += row[j]
    mean = total / C
    for l in range(_LN_LANES):
        acc[l] = 0.0
    for j0 in range(0, body, _LN_LANES):
        for l in range(_LN_LANES):
            d = row[j0 + l] - mean
            acc[l] += d * d
    sq = 0.0
    for l in range(_LN_LANES):
        sq += acc[l]
    for j in range(body, C):
        d = row[j] - mean
        sq += d * d
    return mean, 1.0 / math.sqrt(sq / C + eps)


_ROW_BLOCK = 64  # rows per parallel task: scratch buffers are allocated once per task, not per row


def _blocks(rows):
    return (rows + _ROW_BLOCK - 1) // _ROW_BLOCK


@njit
def _layer_norm_kernel(lo, hi, x, weight, bias, eps, out):  # blocks [lo, hi); [rows, C], [C], [C], (), [rows, C]
    rows, C = x.shape
    acc = np.empty(_LN_LANES, np.float64)
    for blk in range(lo, hi):
        for r in range(blk * _ROW_BLOCK, min(rows, (blk + 1) * _ROW_BLOCK)):
            mean, inv = _row_mean_inv_std(x[r], eps, acc)
            for c in range(C):
                out[r, c] = np.float32((x[r, c] - mean) * inv) * weight[c] + bias[c]


def layer_norm(x, weight, bias, eps=1e-6):
    """LayerNorm over the last axis of any float32 array.  [..., C] -> [..., C]

    The encoder and every LayerNorm2d use eps 1e-6; the decoder's nn.LayerNorms use 1e-5.
    """
    x = _f32(x)
    out = np.empty_like(x)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    parallel_for(_layer_norm_kernel, _blocks(x2.shape[0]), x2, _f32(weight), _f32(bias), float(eps),
                 out.reshape(-1, C))
    return out


def add_layer_norm_numpy(x, delta, weight, bias, eps=1e-6, delta_bias=None):
    """NumPy twin of the fused residual: returns (x + delta [+ delta_bias], LN of that)."""
    if delta_bias is not None:
        delta = delta + delta_bias                                       # [..., C]
    s = (x + delta).astype(np.float32)                                   # [..., C]
    return s, layer_norm_numpy(s, weight, bias, eps)


@njit
def _add_layer_norm_kernel(lo, hi, x, delta, delta_bias, weight, bias, eps, out):  # blocks; [rows, C] x2, [C] x3, (), [rows, C]
    rows, C = x.shape
    acc = np.empty(_LN_LANES, np.float64)
    for blk in range(lo, hi):
        for r in range(blk * _ROW_BLOCK, min(rows, (blk + 1) * _ROW_BLOCK)):
            for c in range(C):
                x[r, c] = x[r, c] + (delta[r, c] + delta_bias[c])   # float32, the order torch uses
            mean, inv = _row_mean_inv_std(x[r], eps, acc)
            for c in range(C):
                out[r, c] = np.float32((x[r, c] - mean) * inv) * weight[c] + bias[c]


def add_layer_norm(x, delta, weight, bias, eps=1e-6, delta_bias=None, out=None):
    """Residual add fused with the LayerNorm that follows it, in one pass.

    ``x += delta (+ delta_bias)`` IN PLACE (x must be a C-contiguous float32 array), and
    returns ``LN(x)``.  [..., C], [..., C] -> [..., C].  ``delta_bias`` [C] is the bias of the
    linear layer that produced ``delta``, folded in here to save a pass. ``out``: an array of
    x's shape to write LN(x) into (see :func:`out_array`).
    """
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        raise ValueError("add_layer_norm updates x in place: x must be C-contiguous float32")
    C = x.shape[-1]
    db = np.zeros(C, np.float32) if delta_bias is None else _f32(delta_bias)
    out = out_array(out, x.shape, "add_layer_norm", x, delta)
    x2 = x.reshape(-1, C)
    parallel_for(_add_layer_norm_kernel, _blocks(x2.shape[0]), x2, _f32(delta).reshape(-1, C), db, _f32(weight),
                 _f32(bias), float(eps), out.reshape(-1, C))
    return out


def layer_norm2d_numpy(x, weight, bias, eps=1e-6):
    """NumPy twin of LayerNorm2d: normalize over channels.  [B, C, H, W] -> [B, C, H, W]"""
    u = x.mean(1, keepdims=True, dtype=np.float64)                       # [B, 1, H, W]
    s = ((x - u) ** 2).mean(1, keepdims=True)                            # [B, 1, H, W]
    y = (x - u) / np.sqrt(s + eps)                                       # [B, C, H, W]
    return (weight[:, None, None] * y + bias[:, None, None]).astype(np.float32)


def layer_norm2d(x, weight, bias, eps=1e-6):
    """LayerNorm2d (``modeling/common.py``): channels-first LayerNorm.  [B, C, H, W] -> [B, C, H, W]"""
    x = _f32(x)
    y = layer_norm(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), weight, bias, eps)  # [B, H, W, C]
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))                 # [B, C, H, W]


# --------------------------------------------------------------------------- exp and erf
# libm's scalar expf/erff stop LLVM from vectorizing a loop (Numba has no vector math
# library without Intel SVML), and they dominated the encoder's elementwise time (erf
# alone was ~1 s of a vit_b forward). These two are plain float32 polynomials that LLVM
# vectorizes with fastmath off. The exp is evaluated with explicit fused multiply-adds
# (``jit.fma``: one rounding per step, the same result on every CPU) and builds 2**n from its
# bits in the same loop (``jit.bits_float``); together these made the online softmax's pass
# 1.27x faster (0.43 -> 0.34 ns per score on one AVX-512 core). The erf is
# not, so that GELU stays equal to the bit to the readable path's NumPy GELU
# (``modeling.common.gelu``), which has no FMA. Accuracy is measured in tests/test_kernels.py
# against float64 references: exp within 2e-7 relative, erf within 5e-7 absolute. PyTorch's own
# CPU kernels are approximations too (SLEEF expf_u10; its vectorized erf is Abramowitz &
# Stegun 7.1.26, max error 1.5e-7), so neither side is "the exact" one at float32.
# A kernel that divides is compiled with error_model="numpy": under Numba's default
# ("python") every float division checks for a zero divisor and may raise, and that branch
# stops LLVM from vectorizing the loop (the erf's p / q made GELU a scalar loop). With
# "numpy" a division by zero gives inf as in NumPy; the divisors here are never zero.

@njit(inline="always")
def _exp(x):
    """exp of a float32 (Cephes expf): x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2;
    exp(r) by its degree-7 polynomial, times 2**n built from its exponent bits.

    x is clamped to [-87, 88], so that 2**n stays a normal float32: exp(-87) = 1.6e-38 (the
    smallest normal is 1.2e-38; below it the result is exp(-87), an absolute error under 2e-38),
    and exp(88) = 1.7e38 (the largest float32 is 3.4e38).
    """
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(fma(x, np.float32(1.44269504088896341), np.float32(0.5)))
    r = fma(n, np.float32(-0.693359375), x)                  # x - n ln2, ln2 in two parts
    r = fma(n, np.float32(2.12194440e-4), r)
    p = fma(np.float32(1.9875691500e-4), r, np.float32(1.3981999507e-3))
    p = fma(p, r, np.float32(8.3334519073e-3))
    p = fma(p, r, np.float32(4.1665795894e-2))
    p = fma(p, r, np.float32(1.6666665459e-1))
    p = fma(p, r, np.float32(5.0000001201e-1))
    p = fma(p * r, r, r) + np.float32(1.0)                   # 1 + r + p r^2
    return p * bits_float((np.int32(n) + np.int32(127)) << np.int32(23))  # p * 2**n


@njit(inline="always")
def _erf(x):
    """erf of a float32 (Eigen's ``generic_fast_erf_float`` rational fit on [-4, 4], clamped outside).

    Odd in x exactly. Max error against ``math.erf``: 3.8e-7 (at x = -3.31) over 100001 evenly spaced
    float32 in [-6, 6] (``tests/test_kernels.py::test_erf_rational_accuracy`` holds it under 5e-7);
    exactly +-1 beyond +-4, where float32 erf rounds to +-1. So GELU's error from it is at most
    0.5 |x| 3.8e-7. One division per element, vectorized (error_model="numpy", see above).
    """
    v = min(max(x, np.float32(-4.0)), np.float32(4.0))
    x2 = v * v
    p = x2 * np.float32(-2.72614225801306e-10) + np.float32(2.77068142495902e-08)
    p = x2 * p + np.float32(-2.10102402082508e-06)
    p = x2 * p + np.float32(-5.69250639462346e-05)
    p = x2 * p + np.float32(-7.34990630326855e-04)
    p = x2 * p + np.float32(-2.95459980854025e-03)
    p = x2 * p + np.float32(-1.60960333262415e-02)
    q = x2 * np.float32(-1.45660718464996e-05) + np.float32(-2.13374055278905e-04)
    q = x2 * q + np.float32(-1.68282697438203e-03)
    q = x2 * q + np.float32(-7.37332916720468e-03)
    q = x2 * q + np.float32(-1.42647390514189e-02)
    return v * p / q


@njit
def _exp_kernel(x, out):  # [rows, cols] -> [rows, cols]; exposes _exp to the tests
    rows, N = x.shape
    for r in range(rows):
        for j in range(N):
            out[r, j] = _exp(x[r, j])


@njit
def _row_max_kernel(x, out):  # [rows, cols] -> [rows]; exposes _row_max to the tests
    for r in range(x.shape[0]):
        out[r] = _row_max(x[r], x.shape[1])


@njit(error_model="numpy")
def _erf_kernel(x, out):  # [rows, cols] -> [rows, cols]; exposes _erf to the tests
    rows, N = x.shape
    for r in range(rows):
        for j in range(N):
            out[r, j] = _erf(x[r, j])


# --------------------------------------------------------------------------- GELU

def _erf_numpy(x):
    # NumPy has no erf ufunc; math.erf per element is slow but exact (test sizes only).
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def gelu_numpy(x, bias=None):
    """NumPy twin: exact GELU, optionally of ``x + bias``.  [..., C] -> [..., C]"""
    if bias is not None:
        x = (x + bias).astype(np.float32)                                # [..., C]
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf_numpy(x64 / math.sqrt(2.0)))).astype(np.float32)


@njit(inline="always")
def _gelu_one(v):  # float32 -> float32
    return v * np.float32(0.5) * (np.float32(1.0) + _erf(v * _SQRT1_2))


@njit(error_model="numpy")
def _gelu_kernel(lo, hi, x, bias, out):  # rows [lo, hi); [rows, C], [C], [rows, C]; out must not overlap x
    rows, C = x.shape
    for r in range(lo, hi):
        for c in range(C):
            out[r, c] = _gelu_one(x[r, c] + bias[c])


@njit(error_model="numpy")
def _gelu_kernel_inplace(lo, hi, x, bias):  # rows [lo, hi); [rows, C] in place, [C]
    rows, C = x.shape
    for r in range(lo, hi):
        for c in range(C):
            x[r, c] = _gelu_one(x[r, c] + bias[c])


def gelu(x, bias=None, out=None):
    """Exact-erf GELU (not the tanh form) of ``x (+ bias)`` over any float32 array.  [..., C] -> [..., C]

    ``out=x`` works in place (the MLP uses that to avoid a 4D-wide temporary), with its own
    kernel: given two arrays, LLVM vectorizes the loop only behind a run-time check that they do
    not overlap, and ``out=x`` fails it, leaving a scalar loop ~10x slower (vit_b's GELU went from
    ~40 to ~4 ms a block with this kernel). ``out`` must be ``x`` itself or not overlap it.
    """
    x = _f32(x)
    C = x.shape[-1] if x.ndim else 1
    b = np.zeros(C, np.float32) if bias is None else _f32(bias)
    if out is None:
        out = np.empty_like(x)
    elif out.dtype != np.float32 or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError(f"gelu: out must be C-contiguous float32 of shape {x.shape}, got {out.dtype} {out.shape}")
    elif out is x:
        parallel_for(_gelu_kernel_inplace, x.size // C if C else 0, x.reshape(-1, C), b)
        return x
    elif np.may_share_memory(out, x):
        raise ValueError("gelu: out overlaps x without being x; pass out=x to work in place")
    x2 = x.reshape(-1, C)
    parallel_for(_gelu_kernel, x2.shape[0], x2, b, out.reshape(-1, C))
    return out


# --------------------------------------------------------------------------- softmax

_SUM_LANES = 64  # float64 partial sums per softmax row: lane l takes elements l, l + 64, ...


@njit(inline="always")
def _row_max(row, N):  # row [>=N] float32 -> max of row[:N]
    """The maximum of row[:N], taken over integer keys so that the loop vectorizes with fastmath off.

    LLVM vectorizes a float max only when allowed to ignore NaNs and signed zeros (fastmath),
    but an integer max always: the key ``i ^ ((i >> 31) & 0x7fffffff)`` of the float's bits ``i``
    orders the keys as the floats (it flips the magnitude bits of the negatives), so the largest
    key is the largest float, the same one ``max`` finds. A NaN with its sign bit clear is the
    largest key and becomes the max; any NaN makes ``exp(x - max)`` NaN in the sum anyway.
    """
    keys = row[:N].view(np.int32)  # [N] the floats' bits
    best = np.int32(-2147483648)
    for j in range(N):
        i = keys[j]
        best = max(best, i ^ ((i >> np.int32(31)) & np.int32(0x7fffffff)))
    best = best ^ ((best >> np.int32(31)) & np.int32(0x7fffffff))     # the key is its own inverse
    return bits_float(best)


@njit(inline="always")
def _exp_shifted_(row, N, m, lanes):  # row [>=N] float32 in place; scratch [_SUM_LANES] float64
    """row[:N] <- exp(row[:N] - m); returns their sum, accumulated in float64 over 64 lanes
    (lane l takes elements l, l + 64, ...; then lanes 0..63 in order, then the tail).

    Two loops, not one: the exp loop and the sum loop each vectorize; one loop doing both ran
    1.7x slower (0.68 against 0.41 ns per score, 1024-key rows in L1). The lanes loop is a plain
    elementwise loop over a scratch array, which LLVM vectorizes (with a run-time check that
    ``lanes`` does not overlap ``row``); 8 lanes kept in local variables stayed scalar, one
    float64 add after another, 1.5x slower for a 1024-key row.
    """
    L = lanes.shape[0]
    chunks = N // L
    for j in range(N):
        row[j] = _exp(row[j] - m)
    for l in range(L):
        lanes[l] = 0.0
    for c in range(chunks):                    # not range(0, body, L): that loop ran 1.7x slower
        j0 = c * L
        for l in range(L):
            lanes[l] += row[j0 + l]
    total = 0.0
    for l in range(L):
        total += lanes[l]
    for j in range(chunks * L, N):
        total += row[j]
    return total


@njit
def _softmax_row_(row, lanes):  # [cols] float32 in place; scratch: [_SUM_LANES] f64
    """Softmax of one row in place: max, exp(x - max), scale by 1 / sum."""
    N = row.shape[0]
    m = _row_max(row, N)
    total = _exp_shifted_(row, N, m, lanes)
    inv = np.float32(1.0 / total)
    for j in range(N):
        row[j] *= inv


def softmax_numpy(x):
    """NumPy twin: softmax over the last axis.  [..., cols] -> [..., cols]"""
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))          # [..., cols]
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@njit
def _softmax_kernel(lo, hi, x):  # blocks [lo, hi); [rows, cols] in place
    rows, N = x.shape
    lanes = np.empty(_SUM_LANES, np.float64)
    for blk in range(lo, hi):
        for r in range(blk * _ROW_BLOCK, min(rows, (blk + 1) * _ROW_BLOCK)):
            _softmax_row_(x[r], lanes)


def softmax(x, out=None):
    """Softmax over the last axis of any float32 array.  [..., cols] -> [..., cols]

    ``out=x`` works in place.
    """
    x = _f32(x)
    if out is None:
        out = x.copy()
    elif out is not x:
        out[...] = x
    N = x.shape[-1]
    x2 = out.reshape(-1, N)
    parallel_for(_softmax_kernel, _blocks(x2.shape[0]), x2)
    return out


def softmax_rel_pos_numpy(attn, rel_h, rel_w):
    """NumPy twin of the fused decomposed-rel-pos softmax (``add_decomposed_rel_pos`` + softmax).

    attn [rows, kh*kw] (one row per query token), rel_h [rows, kh], rel_w [rows, kw] -> [rows, kh*kw]
    """
    R, kh, kw = attn.shape[0], rel_h.shape[-1], rel_w.shape[-1]
    a = attn.reshape(R, kh, kw) + rel_h[:, :, None] + rel_w[:, None, :]   # [rows, kh, kw]
    return softmax_numpy(a.reshape(R, kh * kw).astype(np.float32))        # [rows, kh*kw]


@njit
def _softmax_rel_pos_kernel(lo, hi, attn, rel_h, rel_w):  # blocks [lo, hi); [rows, kh*kw] in place, [rows, kh], [rows, kw]
    rows = attn.shape[0]
    kh = rel_h.shape[1]
    kw = rel_w.shape[1]
    lanes = np.empty(_SUM_LANES, np.float64)
    for blk in range(lo, hi):
        for r in range(blk * _ROW_BLOCK, min(rows, (blk + 1) * _ROW_BLOCK)):
            for a in range(kh):
                for b in range(kw):
                    # float32, in torch's order: (attn + rel_h) + rel_w
                    attn[r, a * kw + b] = (attn[r, a * kw + b] + rel_h[r, a]) + rel_w[r, b]
            _softmax_row_(attn[r], lanes)


def softmax_rel_pos_(attn, rel_h, rel_w):
    """IN PLACE: ``attn = softmax(attn + rel_h[:, :, None] + rel_w[:, None, :])`` per query row.

    attn [rows, kh*kw] C-contiguous float32 (scores of the query tokens, one row each against a kh x kw key grid),
    rel_h [rows, kh], rel_w [rows, kw]. Returns attn. This is ``add_decomposed_rel_pos`` followed by
    ``softmax(-1)`` (``image_encoder.py`` L325-361, L230), without materializing the sum twice.
    """
    if attn.dtype != np.float32 or not attn.flags.c_contiguous or attn.ndim != 2:
        raise ValueError("softmax_rel_pos_ works in place on a C-contiguous float32 [R, N] array")
    parallel_for(_softmax_rel_pos_kernel, _blocks(attn.shape[0]), attn, _f32(rel_h), _f32(rel_w))
    return attn


# --------------------------------------------------------------------------- small-window attention

def attention_rel_pos_numpy(q, k, v, rel_h, rel_w):
    """NumPy twin: softmax(q k^T + rel-pos) v for a batch of small attention calls, in float64.

    q [A, T, hd] ALREADY SCALED, k, v [A, T, hd], rel_h [A, T, kh], rel_w [A, T, kw] with
    T = kh * kw -> [A, T, hd] (float32 out).
    """
    N, T, hd = q.shape
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))                          # [A, T, hd] each
    scores = np.matmul(q64, k64.transpose(0, 2, 1)).reshape(N, T, kh, kw)                     # [A, T, kh, kw]
    scores = scores + np.asarray(rel_h, np.float64)[..., :, None] + np.asarray(rel_w, np.float64)[..., None, :]  # [A, T, kh, kw]
    scores = scores.reshape(N, T, T)                                                          # [A, T, T]
    e = np.exp(scores - scores.max(-1, keepdims=True))                                        # [A, T, T]
    return np.matmul(e / e.sum(-1, keepdims=True), v64).astype(np.float32)                   # [A, T, hd]


@njit
def _attention_one_call(q, kT, v, rel_h, rel_w, out, P, lanes):  # [T,hd], [hd,T], [T,hd], [T,kh], [T,kw], [T,hd]
    """One attention call (one window x head), its scores staying in cache."""
    T, hd = q.shape
    kh = rel_h.shape[1]
    kw = rel_w.shape[1]
    for i0 in range(0, T, 4):                  # P: scores of 4 query rows; each k row is loaded once for 4
        m = min(4, T - i0)
        for r in range(4):
            for j in range(T):
                P[r, j] = 0
        for c in range(hd):                    # P[r, :] += q[i0 + r, c] * k[:, c], vectorized over keys
            kc = kT[c]
            if m == 4:
                q0 = q[i0, c]
                q1 = q[i0 + 1, c]
                q2 = q[i0 + 2, c]
                q3 = q[i0 + 3, c]
                for j in range(T):
                    kv = kc[j]
                    P[0, j] += q0 * kv
                    P[1, j] += q1 * kv
                    P[2, j] += q2 * kv
                    P[3, j] += q3 * kv
            else:
                for r in range(m):
                    qr = q[i0 + r, c]
                    for j in range(T):
                        P[r, j] += qr * kc[j]
        for r in range(m):
            i = i0 + r
            row = P[r]
            for a in range(kh):
                for b in range(kw):
                    row[a * kw + b] = (row[a * kw + b] + rel_h[i, a]) + rel_w[i, b]
            _softmax_row_(row, lanes)
            for c in range(hd):
                out[i, c] = 0
        for r in range(m):                     # out[i] += P[r, j] * v[j], vectorized over hd
            o = out[i0 + r]
            for j in range(T):
                pj = P[r, j]
                vj = v[j]
                for c in range(hd):
                    o[c] += pj * vj[c]


@njit
def _attention_rel_pos_kernel(lo, hi, q, kT, v, rel_h, rel_w, out):  # calls [lo, hi); [A,T,hd], [A,hd,T], [A,T,hd], [A,T,kh], [A,T,kw], [A,T,hd]
    N, T, hd = q.shape
    P = np.empty((4, T), np.float32)
    lanes = np.empty(_SUM_LANES, np.float64)
    for n in range(lo, hi):                    # one attention call (window x head) per task
        _attention_one_call(q[n], kT[n], v[n], rel_h[n], rel_w[n], out[n], P, lanes)


def attention_rel_pos(q, k, v, rel_h, rel_w):
    """softmax(q k^T + decomposed rel-pos) v, one Numba task per small attention call.

    For the windowed blocks: 25 windows x 12 heads of 196 tokens for vit_b. Batched BLAS
    on such small matrices spends its time in thread hand-offs (and stalls when the CPU is
    shared), so each call runs whole inside one thread, its scores staying in cache.
    q [A, T, hd] ALREADY SCALED, k, v [A, T, hd], rel_h [A, T, kh], rel_w [A, T, kw] -> [A, T, hd].
    """
    q, v = _f32(q), _f32(v)
    kT = np.ascontiguousarray(_f32(k).transpose(0, 2, 1))                # [A, hd, T]
    out = np.empty_like(q)
    parallel_for(_attention_rel_pos_kernel, q.shape[0], q, kT, v, _f32(rel_h), _f32(rel_w), out)
    return out


# --------------------------------------------------------------------------- decomposed rel-pos terms

def rel_pos_terms_numpy(q, Rh, Rw):
    """NumPy twin: the two einsums of ``add_decomposed_rel_pos`` (image_encoder.py L354-355).

    q [A, qh, qw, hd] UNSCALED, Rh [qh, kh, hd], Rw [qw, kw, hd] -> rel_h [A, qh, qw, kh], rel_w [A, qh, qw, kw]
    """
    rel_h = np.einsum("nyxc,ykc->nyxk", q, Rh)                           # [A, qh, qw, kh]
    rel_w = np.einsum("nyxc,xkc->nyxk", q, Rw)                           # [A, qh, qw, kw]
    return rel_h.astype(np.float32), rel_w.astype(np.float32)


def _rel_pos_gemms(lo, hi, q, RhT, RwT, rel_h, rel_w):  # calls [lo, hi); [A,qh,qw,hd], [qh,hd,kh], [qw,hd,kw], [A,qh,qw,kh], [A,qh,qw,kw]
    """Both terms for calls lo:hi, as batched GEMMs on strided views: nothing is transposed in memory."""
    np.matmul(q[lo:hi], RhT, out=rel_h[lo:hi])                           # [n, qh, qw, kh]: per (call, y) [qw, hd] x [hd, kh]
    np.matmul(q[lo:hi].transpose(0, 2, 1, 3), RwT,
              out=rel_w[lo:hi].transpose(0, 2, 1, 3))                    # [n, qw, qh, kw]: per (call, x) [qh, hd] x [hd, kw]


def rel_pos_terms(q, Rh, Rw, out=None):
    """Both decomposed rel-pos terms, as batched BLAS GEMMs split over minisam's threads by call.

    rel_h is one [qw, hd] x [hd, kh] product per (call, query row y), with Rh[y]; rel_w one
    [qh, hd] x [hd, kw] product per (call, query column x), with Rw[x], read through a transposed
    view of q and written through one of rel_w: the strides are BLAS leading dimensions, so no
    copy is made. The products are small (64 x 64 x 64 for a vit_b global head, 14 x 64 x 14 in a
    window), too small for BLAS's own threads, so each of minisam's threads runs whole calls with
    BLAS held to one thread (:func:`minisam.kernels.threads.parallel_blas`).
    q [A, qh, qw, hd] UNSCALED, Rh [qh, kh, hd], Rw [qw, kw, hd] -> rel_h [A, qh, qw, kh], rel_w [A, qh, qw, kw]:
    rel_h[n, y, x, k] = q[n, y, x] . Rh[y, k];  rel_w[n, y, x, k] = q[n, y, x] . Rw[x, k].
    ``out``: None, or the pair (rel_h, rel_w) of arrays to write into (see :func:`out_array`).
    """
    q = _f32(q)
    N, h, w, _ = q.shape
    RhT = _f32(Rh).transpose(0, 2, 1)                                    # [qh, hd, kh] view
    RwT = _f32(Rw).transpose(0, 2, 1)                                    # [qw, hd, kw] view
    out_h, out_w = (None, None) if out is None else out
    rel_h = out_array(out_h, (N, h, w, RhT.shape[2]), "rel_pos_terms", q, Rh, Rw)    # [A, qh, qw, kh]
    rel_w = out_array(out_w, (N, h, w, RwT.shape[2]), "rel_pos_terms", q, Rh, Rw, rel_h)  # [A, qh, qw, kw]
    parallel_blas(_rel_pos_gemms, N, q, RhT, RwT, rel_h, rel_w)
    return rel_h, rel_w
