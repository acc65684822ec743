"""Each layer's backward on its own against torch autograd, over shapes drawn by hypothesis.

For each layer of :mod:`minisam.backward` (linear, ReLU, GELU, LayerNorm, LayerNorm2d, softmax,
the decoder attention, the 2x2 transposed conv, the bilinear upsampling) the torch functional
the official modules call runs forward and ``backward()`` on sum(y * r), r random; minisam's
``*_backward`` gets the same r. Every input and parameter gradient is compared.

Bounds relative to max|ref| (tests/test_backward.py states why): float64 1e-9, float32 1e-4.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minisam.backward import common as B
from minisam.backward.mask_decoder import conv_transpose2x2_s2_backward, conv_transpose2x2_s2_forward
from minisam.backward.transformer import attention_backward, attention_forward

from official import rel_err

RTOL = {np.float64: 1e-9, np.float32: 1e-4}
dtypes = st.sampled_from([np.float64, np.float32])
dims = st.integers(1, 7)


def _check(pairs, dtype, label):
    for name, (ref, got) in pairs.items():
        ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
        a, rel = rel_err(ref, got)
        assert rel <= RTOL[dtype], f"{label} {name}: abs {a:.3e} rel {rel:.3e}"


def _leaf(a):
    return torch.tensor(a, requires_grad=True)


def _grad_of(y, r):
    (y * torch.tensor(r)).sum().backward()


@settings(max_examples=25, deadline=None)
@given(lead=st.lists(dims, min_size=1, max_size=3), n_in=dims, n_out=dims, bias=st.booleans(), dtype=dtypes,
       seed=st.integers(0, 2**31))
def test_linear(lead, n_in, n_out, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (lead + [n_in], (n_out, n_in), (n_out,)))
    r = rng.standard_normal(lead + [n_out]).astype(dtype)
    xt, wt, bt = _leaf(x), _leaf(w), _leaf(b)
    _grad_of(F.linear(xt, wt, bt if bias else None), r)
    y, cache = B.linear_forward(x, w, b if bias else None)
    dx, g = B.linear_backward(r, cache)
    pairs = {"dx": (xt.grad, dx), "dW": (wt.grad, g["weight"])}
    if bias:
        pairs["db"] = (bt.grad, g["bias"])
    assert ("bias" in g) == bias
    _check(pairs, dtype, "linear")


def _gelu_by_erfc(x):  # [...] float64 tensor -> [...]
    """GELU as x Phi(x) with Phi = 0.5 erfc(-x / sqrt 2), in torch, so that autograd differentiates it."""
    return 0.5 * x * torch.special.erfc(-x / math.sqrt(2))


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(dims, min_size=1, max_size=4), dtype=dtypes, seed=st.integers(0, 2**31))
@example(shape=[2], dtype=np.float64, seed=76784846)   # x = [0, -7.353]: every nonzero value in the far tail
def test_relu_gelu_softmax(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x.flat[0] = 0.0  # relu's derivative at 0 is 0 in torch's threshold_backward
    r = rng.standard_normal(shape).astype(dtype)
    for name, fn, fwd, bwd in [("relu", F.relu, B.relu_forward, B.relu_backward),
                               ("gelu", _gelu_by_erfc, B.gelu_forward, B.gelu_backward)]:
        # GELU's witness is torch in float64 on the same values, by erfc: torch's F.gelu evaluates
        # 1 + erf, which cancels in the left tail, in float32 (test_gelu_float32_left_tail) and in
        # float64 too: at x = -7.353 F.gelu in float64 is off by 5.0e-5 relative (mpmath at 50
        # digits), erfc by rounding. On a tensor whose nonzero values all lie that far out, the
        # bound is relative to those tiny values, and F.gelu's own error exceeded it.
        xt = _leaf(x.astype(np.float64)) if name == "gelu" else _leaf(x)
        _grad_of(fn(xt), r)
        y, cache = fwd(x)
        _check({"y": (fn(xt.detach()), y), "dx": (xt.grad, bwd(r, cache))}, dtype, name)
    xt = _leaf(x)
    _grad_of(F.softmax(xt, -1), r)
    p = B.softmax_forward(x)
    _check({"y": (F.softmax(torch.tensor(x), -1), p), "dx": (xt.grad, B.softmax_backward(r, p))}, dtype, "softmax")


@settings(max_examples=25, deadline=None)
@given(lead=st.lists(dims, min_size=1, max_size=2), c=st.integers(2, 9), channels_first=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-6]), dtype=dtypes, seed=st.integers(0, 2**31))
def test_layer_norm(lead, c, channels_first, eps, dtype, seed):
    """nn.LayerNorm over the last axis, and LayerNorm2d (the official formula) over axis 1."""
    rng = np.random.default_rng(seed)
    shape = [lead[0], c] + lead[1:] + [3] if channels_first else lead + [c]
    x = rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    r = rng.standard_normal(shape).astype(dtype)
    xt, wt, bt = _leaf(x), _leaf(w), _leaf(b)
    if channels_first:  # segment_anything/modeling/common.py LayerNorm2d.forward
        u = xt.mean(1, keepdim=True)
        s = (xt - u).pow(2).mean(1, keepdim=True)
        view = (1, -1) + (1,) * (x.ndim - 2)
        yt = wt.view(view) * ((xt - u) / torch.sqrt(s + eps)) + bt.view(view)
    else:
        yt = F.layer_norm(xt, (c,), wt, bt, eps)
    _grad_of(yt, r)
    y, cache = B.layer_norm_forward(x, w, b, eps, axis=1 if channels_first else -1)
    dx, g = B.layer_norm_backward(r, cache)
    _check({"y": (yt, y), "dw": (wt.grad, g["weight"]), "db": (bt.grad, g["bias"])}, dtype, "layer_norm")
    # dx = rstd (g - mean g - xhat mean(g xhat)) with g = dy w: the two means project out what
    # normalisation undoes, and with few channels that removes almost all of g (for c = 2, xhat
    # is +-1 whatever x is, and the true dx is of order eps). The rounding error of either side
    # is then set by the terms before the cancellation, rstd |g|, not by the small result: the
    # bound is taken relative to max(rstd |g|), the same in both dtypes.
    axis = 1 if channels_first else -1
    x64 = x.astype(np.float64)
    rstd = 1 / np.sqrt(x64.var(axis, keepdims=True) + eps)
    view = [1] * x.ndim
    view[axis] = -1
    scale = np.abs(rstd * r * w.reshape(view)).max()
    err = np.abs(xt.grad.numpy() - dx).max()
    assert err <= RTOL[dtype] * scale, f"layer_norm dx: abs {err:.3e}, scale {scale:.3e}"


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), tq=dims, tk=dims, heads=st.integers(1, 3), hd=st.integers(1, 4), rate=st.integers(1, 2),
       dtype=dtypes, seed=st.integers(0, 2**31))
def test_attention(n, tq, tk, heads, hd, rate, dtype, seed):
    """The decoder's ``Attention`` with its downsampled internal width Ci = C / rate, against the official module."""
    from segment_anything.modeling.transformer import Attention
    c = heads * hd * rate
    rng = np.random.default_rng(seed)
    mod = Attention(c, heads, downsample_rate=rate).to(torch.float64 if dtype == np.float64 else torch.float32)
    p = {}
    with torch.no_grad():
        for name, prm in mod.named_parameters():
            prm.copy_(torch.tensor(rng.standard_normal(prm.shape)))
            layer, kind = name.split(".")
            p.setdefault(layer, {})[kind] = prm.detach().numpy().copy()
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((n, tq, c), (n, tk, c), (n, tk, c)))
    r = rng.standard_normal((n, tq, c)).astype(dtype)
    qt, kt, vt = _leaf(q), _leaf(k), _leaf(v)
    _grad_of(mod(qt, kt, vt), r)
    out, cache = attention_forward(p, q, k, v, heads)
    dq, dk, dv, g = attention_backward(r, cache)
    pairs = {"out": (mod(torch.tensor(q), torch.tensor(k), torch.tensor(v)), out),  # noqa: E501
             "dq": (qt.grad, dq), "dk": (kt.grad, dk), "dv": (vt.grad, dv)}
    for name, prm in mod.named_parameters():
        layer, kind = name.split(".")
        if name != "k_proj.bias":  # exactly 0 (softmax ignores a constant per row): checked below
            pairs[name] = (prm.grad, g[layer][kind])
    _check(pairs, dtype, "attention")
    scale = np.abs(mod.k_proj.weight.grad.numpy()).max()
    assert np.abs(g["k_proj"]["bias"]).max() <= RTOL[dtype] * scale


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), cin=dims, cout=dims, g=st.integers(1, 5), dtype=dtypes, seed=st.integers(0, 2**31))
def test_conv_transpose2x2(n, cin, cout, g, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, g, g)).astype(dtype)
    w = rng.standard_normal((cin, cout, 2, 2)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    r = rng.standard_normal((n, cout, 2 * g, 2 * g)).astype(dtype)
    xt, wt, bt = _leaf(x), _leaf(w), _leaf(b)
    yt = F.conv_transpose2d(xt, wt, bt, stride=2)
    _grad_of(yt, r)
    y, cache = conv_transpose2x2_s2_forward(x, w, b)
    dx, grads = conv_transpose2x2_s2_backward(r, cache)
    _check({"y": (yt, y), "dx": (xt.grad, dx), "dW": (wt.grad, grads["weight"]), "db": (bt.grad, grads["bias"])},
           dtype, "conv_transpose")


@settings(max_examples=25, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=2, max_size=2), h=st.integers(1, 9), w=st.integers(1, 9),
       H=st.integers(1, 20), W=st.integers(1, 20), dtype=dtypes, seed=st.integers(0, 2**31))
def test_upsample_bilinear(lead, h, w, H, W, dtype, seed):
    """``F.interpolate(mode="bilinear", align_corners=False)``, up and down, as the losses use it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + [h, w]).astype(dtype)
    r = rng.standard_normal(lead + [H, W]).astype(dtype)
    xt = _leaf(x)
    yt = F.interpolate(xt, (H, W), mode="bilinear", align_corners=False)
    _grad_of(yt, r)
    y, cache = B.upsample_bilinear_forward(x, (H, W))
    _check({"y": (yt, y), "dx": (xt.grad, B.upsample_bilinear_backward(r, cache))}, dtype, "upsample")


def test_gelu_float64_uses_exact_erf():
    """The float64 GELU is exact to rounding (math.erf), so the float64 bounds test the backward, not a fit."""
    x = np.linspace(-6, 6, 101)
    y, _ = B.gelu_forward(x)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.abs(y - ref).max() <= 1e-15


def test_gelu_float32_left_tail():
    """float32 GELU and its derivative keep their relative precision in the left tail, where
    Phi(x) is below float32's spacing at 1 (6e-8) times a few: Phi = 0.5 erfc(-x / sqrt 2).
    The same check on 0.5 x (1 + erf(x / sqrt 2)) in float32 (the inference GELU, and torch's)
    fails, which is what it guards against."""
    from minisam.modeling.common import gelu as gelu_one_plus_erf
    x = np.linspace(-9, -3, 601).astype(np.float32)
    exact_y = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    exact_dy = np.array([0.5 * math.erfc(-v / math.sqrt(2)) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
                         for v in x.astype(np.float64)])
    y, cache = B.gelu_forward(x)
    dy = B.gelu_backward(np.ones_like(x), cache)
    # float32 rounding of x Phi(x): a few ulps; dPhi = Phi + x phi cancels by about x^2 (81 at
    # x = -9), so the derivative's bound is 1e-4 relative
    assert np.abs(y / exact_y - 1).max() <= 1e-6
    assert np.abs(dy / exact_dy - 1).max() <= 1e-4
    assert np.abs(gelu_one_plus_erf(x) / exact_y - 1).max() > 1e-2


def test_normal_cdf_float32_fit_accuracy():
    """The float32 Phi (Numerical Recipes' erfcc fit, evaluated in float64, rounded once) is within
    the fit's published 1.2e-7 plus float32's rounding (2^-24) relative of the exact Phi, over the
    whole range where Phi is a normal float32: x in [-12.9, 6], and beyond, where it is 1."""
    x = np.concatenate([np.linspace(-12.9, 6, 200_001), np.random.default_rng(0).uniform(-12.9, 12, 10_000),
                        [0.0, -0.0, 6.5, 9.0, 40.0]]).astype(np.float32)
    exact = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    got = B.normal_cdf(x)
    assert got.dtype == np.float32
    rel = np.abs(got.astype(np.float64) / exact - 1)
    assert rel.max() <= 1.2e-7 + 2.0 ** -24, (rel.max(), x[rel.argmax()])


@settings(max_examples=10, deadline=None)
@given(T=st.sampled_from([1, 2, 7, 8, 9, 16, 17, 40, 256]), dtype=dtypes, seed=st.integers(0, 2**31))
def test_reduce_last_axis_and_softmax_short_and_long_rows(T, dtype, seed):
    """Rows of T <= 16 are reduced column by column, longer ones by NumPy: both give NumPy's max
    exactly and its sum to rounding, and softmax on either side of the switch matches torch."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, 5, T)) * 4).astype(dtype)
    assert np.array_equal(B.reduce_last_axis(np.maximum, x), x.max(-1, keepdims=True))
    s = B.reduce_last_axis(np.add, x)
    assert s.shape == (3, 5, 1) and s.dtype == x.dtype
    bound = T * np.finfo(dtype).eps * np.abs(x).sum(-1, keepdims=True)  # any summation order
    assert np.all(np.abs(s - x.sum(-1, keepdims=True)) <= bound)
    r = rng.standard_normal(x.shape).astype(dtype)
    xt = _leaf(x)
    _grad_of(F.softmax(xt, -1), r)
    p = B.softmax_forward(x)
    _check({"y": (F.softmax(torch.tensor(x), -1), p), "dx": (xt.grad, B.softmax_backward(r, p))}, dtype, "softmax")
