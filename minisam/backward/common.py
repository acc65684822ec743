"""Forward and backward of the small layers: linear, ReLU, GELU, LayerNorm, LayerNorm2d, softmax,
and the bilinear upsampling of low-res logits.

Paper: Kirillov et al. 2023, section 3 and appendix A. Mirrors ``segment_anything/modeling/common.py``
(``LayerNorm2d``) and the ``torch.nn`` layers the official modules are built from, as
:mod:`minisam.modeling.common` does for the forward. Every backward takes ``dy``, the gradient of
the loss with respect to the layer's output, and returns the gradients with respect to its
inputs and parameters (the chain rule, one layer at a time, as llm.c's ``train_gpt2.c`` does).

Everything computes in the dtype of ``x``: float64 for the exact checks against torch autograd,
float32 for training. Shapes: ``docs/shapes.md``; ``-1`` is all leading axes flattened.
"""

from __future__ import annotations

import math

import numpy as np

from minisam.kernels.jit import njit
from minisam.modeling.common import source_indices


def add_grads(total: dict, grads: dict) -> dict:
    """total += grads, key by key through the nesting: a parameter used in several places (or
    several training rounds) receives the sum of the gradients of each use."""
    for k, v in grads.items():
        if isinstance(v, dict):
            add_grads(total.setdefault(k, {}), v)
        elif k in total:
            total[k] = total[k] + v
        else:
            total[k] = v
    return total


# --------------------------------------------------------------------------- linear

def linear_forward(x, weight, bias=None):  # [..., in], [out, in], [out] -> [..., out], cache
    """y = x W^T + b, one GEMM over all leading axes (a stacked matmul would run one small GEMM
    per leading index)."""
    y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])  # [..., out]
    if bias is not None:
        y = y + bias  # [..., out]
    return y, (x, weight, bias is not None)


def linear_backward(dy, cache):  # [..., out] -> dx [..., in], {"weight": [out, in], "bias": [out]}
    """y = x W^T + b, so dx = dy W, dW = sum over rows of dy^T x, db = sum over rows of dy."""
    x, weight, has_bias = cache
    dy2 = dy.reshape(-1, dy.shape[-1])  # [-1, out]
    dx = (dy2 @ weight).reshape(*dy.shape[:-1], weight.shape[1])  # [-1, out] @ [out, in] -> [..., in]
    grads = {"weight": dy2.T @ x.reshape(-1, x.shape[-1])}  # [out, -1] @ [-1, in] -> [out, in]
    if has_bias:
        grads["bias"] = dy2.sum(0)  # [out]
    return dx, grads


# --------------------------------------------------------------------------- activations

def relu_forward(x):  # [...] -> [...], cache
    return np.maximum(x, 0).astype(x.dtype, copy=False), x > 0


def relu_backward(dy, on):  # [...], [...] bool -> [...]
    """d relu / dx = 1 where x > 0, else 0 (0 at x = 0 exactly, as torch's ``threshold_backward``)."""
    return dy * on  # [...]


_SQRT1_2 = 1 / math.sqrt(2)


@njit
def _normal_cdf_exact(x, out):  # [n] float64 -> [n] float64
    for i in range(x.size):
        out[i] = 0.5 * math.erfc(-x[i] * _SQRT1_2)


_INV_FACTORIAL = np.array([1 / math.factorial(k) for k in range(12)])


@njit(inline="always")
def _exp_nonpositive(a):  # float64 a in [-120, 0.3] -> exp(a) to ~1e-8 relative
    """exp(a) = exp(a / 128) ** 128: a degree-12 Taylor polynomial on |a / 128| < 0.94 (error
    < 1e-10), squared 7 times (relative error x 128). Only multiplies and adds, so the loop
    around it vectorizes; libm's exp is a scalar call."""
    r = max(a, -120.0) * (1.0 / 128.0)
    p = 1.0 / 479001600.0  # 1 / 12!
    for k in range(11, -1, -1):  # Horner, 1 / k! down to 1 / 0!
        p = p * r + _INV_FACTORIAL[k]
    for _ in range(7):
        p = p * p
    return p


@njit(error_model="numpy")
def _normal_cdf_fit(x, out):  # [n] float32 -> [n] float32
    """0.5 erfc(|x| / sqrt 2) by the Chebyshev fit of erfc in Press et al., *Numerical Recipes*,
    2nd ed., section 6.2 (``erfcc``): erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), relative
    error < 1.2e-7 for every z >= 0; then Phi(x) is that for x < 0 and 1 minus it for x >= 0."""
    for i in range(x.size):
        v = np.float64(x[i])
        z = abs(v) * _SQRT1_2
        t = 1.0 / (1.0 + 0.5 * z)
        q = 0.17087277
        q = q * t - 0.82215223
        q = q * t + 1.48851587
        q = q * t - 1.13520398
        q = q * t + 0.27886807
        q = q * t - 0.18628806
        q = q * t + 0.09678418
        q = q * t + 0.37409196
        q = q * t + 1.00002368
        q = q * t - 1.26551223
        tail = 0.5 * t * _exp_nonpositive(q - z * z)  # Phi(-|x|)
        out[i] = np.float32(tail if v < 0 else 1.0 - tail)  # rounded once


def normal_cdf(x):  # [...] -> [...]
    """Phi(x), the standard normal CDF, in the dtype of x, from erfc: Phi(x) = 0.5 erfc(-x / sqrt 2).

    Why erfc and not 0.5 (1 + erf(x / sqrt 2)): for x < 0, 1 + erf cancels. At x = -4.9,
    Phi = 4.8e-7 while float32's spacing at 1 is 6e-8, so any float32 evaluation of 1 + erf is
    off by percents there (torch's float32 GELU on the CPU by 5.7%, at x = -5.6 it returns 0 for
    6e-8), and the fit's 3.8e-7 error (:func:`minisam.modeling.common.erf`) by more. erfc has no
    cancellation: Phi keeps its relative precision in the whole left tail, in both dtypes.

    - float64: libm's ``math.erfc``, exact to rounding (the float64 checks against autograd test
      the backward, not a fit).
    - float32: :func:`_normal_cdf_fit`, evaluated in float64 and rounded once: within the fit's
      1.2e-7 plus float32's rounding (2^-24) relative of the exact Phi, for every float32 x whose
      Phi is a normal float32 (measured: 1.6e-7; a few float32 ulps). It is ~7x faster than
      ``math.erfc`` element by element, which took 12% of a micro training step
      (``benchmarks/train_micro_step.py``)."""
    flat = np.ascontiguousarray(x).ravel()  # [n]
    if x.dtype == np.float32:
        out = np.empty(flat.shape, np.float32)  # [n]
        _normal_cdf_fit(flat, out)
        return out.reshape(x.shape)  # [...]
    out = np.empty(flat.shape, np.float64)  # [n]
    _normal_cdf_exact(flat.astype(np.float64, copy=False), out)
    return out.reshape(x.shape).astype(x.dtype, copy=False)  # [...]


def gelu_forward(x):  # [...] -> [...], cache
    """Exact GELU, x Phi(x) (``nn.GELU()``, approximate="none"); the cache keeps x and Phi(x)."""
    cdf = normal_cdf(x)  # [...] Phi(x)
    return (x * cdf).astype(x.dtype, copy=False), (x, cdf)


def gelu_backward(dy, cache):  # [...] -> [...]
    """d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the Gaussian density."""
    x, cdf = cache
    pdf = np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))  # [...]
    return (dy * (cdf + x * pdf)).astype(x.dtype, copy=False)  # [...]


def reduce_last_axis(ufunc, x):  # np.add or np.maximum; [..., T] -> [..., 1]
    """``ufunc.reduce(x, axis=-1, keepdims=True)``, fast when T is small.

    NumPy reduces a contiguous last axis row by row, with a fixed cost per row that dominates
    when rows are short: the mask decoder's image-to-token attention has rows of 5 to 9 token
    scores. For T <= 16 the columns are combined instead, T - 1 elementwise passes over all rows
    (13x faster for the max at T = 7 here). Left to right: the same sum NumPy's pairwise
    summation gives for T < 9, and for larger T the same up to rounding."""
    T = x.shape[-1]
    if T > 16 or T == 0:
        return ufunc.reduce(x, axis=-1, keepdims=True)  # [..., 1]
    out = x[..., 0].copy()  # [...]
    for j in range(1, T):
        ufunc(out, x[..., j], out=out)  # [...]
    return out[..., None]  # [..., 1]


def softmax_forward(x):  # [..., T] -> [..., T]; the output is its own cache
    e = np.exp(x - reduce_last_axis(np.maximum, x))  # [..., T]
    e /= reduce_last_axis(np.add, e)  # [..., T]
    return e


def softmax_backward(dp, p):  # [..., T], [..., T] -> [..., T]
    """p = softmax(s): dp_i/ds_j = p_i (delta_ij - p_j), so ds = p * (dp - sum_i dp_i p_i)."""
    return p * (dp - reduce_last_axis(np.add, dp * p))  # [..., T]


# --------------------------------------------------------------------------- LayerNorms

def layer_norm_forward(x, weight, bias, eps: float, axis: int = -1):  # [...], [C], [C] -> [...], cache
    """LayerNorm over ``axis`` (-1: ``nn.LayerNorm``; 1: ``LayerNorm2d`` on [B, C, H, W]), biased variance."""
    mean = x.mean(axis, keepdims=True)  # [..., 1, ...]
    centred = x - mean  # [...]
    rstd = 1.0 / np.sqrt((centred * centred).mean(axis, keepdims=True) + eps)  # [..., 1, ...]
    xhat = centred * rstd  # [...]
    shape = [1] * x.ndim
    shape[axis] = -1
    w, b = weight.reshape(shape), bias.reshape(shape)  # [C] -> broadcastable along axis
    return (xhat * w + b).astype(x.dtype, copy=False), (xhat, rstd, w, axis)


def layer_norm_backward(dy, cache):  # [...] -> dx [...], {"weight": [C], "bias": [C]}
    """y = xhat w + b with xhat = (x - mean) rstd. With g = dy w (the gradient at xhat),
    dx = rstd (g - mean(g) - xhat mean(g xhat)): the two means remove the parts of g that move
    the mean and the variance, which normalisation undoes. dw = sum dy xhat, db = sum dy."""
    xhat, rstd, w, axis = cache
    g = dy * w  # [...]
    dx = rstd * (g - g.mean(axis, keepdims=True) - xhat * (g * xhat).mean(axis, keepdims=True))  # [...]
    others = tuple(i for i in range(dy.ndim) if i != axis % dy.ndim)
    return dx.astype(dy.dtype, copy=False), {"weight": (dy * xhat).sum(others), "bias": dy.sum(others)}


# --------------------------------------------------------------------------- bilinear upsampling

def _interpolation_matrix(in_size: int, out_size: int, dtype):  # -> [out, in]
    """The rows of PyTorch's ``align_corners=False`` bilinear resize along one axis as a matrix:
    row i holds weight l0 at source i0 and l1 at i1 (:func:`minisam.modeling.common.source_indices`,
    whose float32 arithmetic is PyTorch's for float32 tensors)."""
    if dtype == np.float32:
        i0, i1, l0, l1 = source_indices(in_size, out_size)
    else:  # the same rule with the scale and the weights in double, as PyTorch computes it for float64
        src = np.maximum((in_size / out_size) * (np.arange(out_size) + 0.5) - 0.5, 0.0)  # [out]
        i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)  # [out]
        l1 = np.clip(src - i0, 0.0, 1.0) if in_size != out_size else np.zeros(out_size)  # [out]
        l0 = 1.0 - l1  # [out]
        i1 = i0 + (i0 < in_size - 1)  # [out]
    a = np.zeros((out_size, in_size), dtype)  # [out, in]
    rows = np.arange(out_size)
    np.add.at(a, (rows, i0), l0.astype(dtype))
    np.add.at(a, (rows, i1), l1.astype(dtype))
    return a


def _rows_and_columns(a_rows, x, a_cols):  # [H, h], [..., h, w], [W, w] -> [..., H, W]
    """a_rows @ x @ a_cols^T for every leading index at once, as two GEMMs over all of them (a
    stacked matmul would run two small GEMMs per leading index)."""
    *lead, h, w = x.shape
    m = int(np.prod(lead, dtype=np.int64))
    t = x.reshape(m * h, w) @ a_cols.T  # [m*h, w] @ [w, W] -> [m*h, W]
    t = t.reshape(m, h, -1).transpose(1, 0, 2).reshape(h, -1)  # [h, m*W]
    y = a_rows @ t  # [H, h] @ [h, m*W] -> [H, m*W]
    return y.reshape(len(a_rows), m, -1).transpose(1, 0, 2).reshape(*lead, len(a_rows), -1)  # [..., H, W]


def upsample_bilinear_forward(x, size):  # [..., h, w] -> [..., H, W], cache
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` as two matrix products,
    y = A_h x A_w^T: a resize is linear in x, separable in rows and columns."""
    h, w = x.shape[-2:]
    a_h = _interpolation_matrix(h, size[0], x.dtype)  # [H, h]
    a_w = _interpolation_matrix(w, size[1], x.dtype)  # [W, w]
    return _rows_and_columns(a_h, x, a_w), (a_h, a_w)  # [H, h] @ [..., h, w] @ [w, W] -> [..., H, W]


def upsample_bilinear_backward(dy, cache):  # [..., H, W] -> [..., h, w]
    """The transpose of the forward's linear map: dx = A_h^T dy A_w (each input pixel collects
    the gradient of every output pixel it was blended into, with the same weight)."""
    a_h, a_w = cache
    return _rows_and_columns(a_h.T, dy, a_w.T)  # [h, H] @ [..., H, W] @ [W, w] -> [..., h, w]
