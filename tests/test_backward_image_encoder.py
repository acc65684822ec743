"""Gradient parity of the NumPy image-encoder backward (:mod:`minisam.backward.image_encoder`) against
torch autograd on the official ``ImageEncoderViT``.

The official encoder, every parameter and buffer randomized (``randomize``: LayerNorms off 1/0,
rel-pos tables and the position embedding nonzero), runs forward and ``backward()`` on the loss
L = sum(embedding * R), R random, so every output element has its own weight and no gradient path
can cancel unseen. minisam's forward and backward run on the same weights and input. Compared:
- the gradient of **every parameter** (one minisam leaves out, or adds, fails the test);
- the gradient of every official module's output, keyed by module path (forward hooks call
  ``retain_grad``): each block, norm1, attn (per window in a windowed block), attn.qkv, attn.proj,
  norm2, mlp, mlp.lin1, mlp.act, mlp.lin2, the patch embedding, the neck's four layers;
- the gradient of the input image and the forward output.

On the three tiny configurations of ``conftest.TINY_CONFIGS`` (windows that need padding, one
head, odd head dims, global blocks first and last), with rel-pos tables of other lengths than the
grid needs (so ``get_rel_pos`` interpolates, up and down), with attention scores cut into chunks
of a few rows, at micro's size, and (marked ``vit_b`` and ``slow``) once at vit_b in float32.

Bounds relative to max|ref| of each tensor (tests/test_backward.py states why): float64 1e-9,
float32 1e-4. The measured worst per key are printed.
"""

from __future__ import annotations

import copy
import gc

import numpy as np
import pytest
import torch

import minisam.backward.image_encoder as E
from minisam.checkpoints.param_tree import flatten, nest
from minisam.config import MICRO, VIT_B

from conftest import TINY_CONFIGS, official_model
from official import assert_same_params, compare, grads_of, record_grads, rel_err, torch_device

RTOL = {np.float64: 1e-9, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def _numpy(t):
    return t.detach().cpu().numpy()


def _resize_rel_pos(encoder, lengths, seed):
    """Give blocks new rel-pos tables of other lengths: {block index: (L_h, L_w)}."""
    gen = torch.Generator().manual_seed(seed)
    for i, (lh, lw) in lengths.items():
        attn = encoder.blocks[i].attn
        hd = attn.rel_pos_h.shape[1]
        dev, dt = attn.rel_pos_h.device, attn.rel_pos_h.dtype
        attn.rel_pos_h = torch.nn.Parameter(0.2 * torch.randn(lh, hd, generator=gen).to(dev, dt))
        attn.rel_pos_w = torch.nn.Parameter(0.2 * torch.randn(lw, hd, generator=gen).to(dev, dt))


def encoder_grads_both(cfg, dtype, seed=0, batch=2, rel_pos_lengths=None):
    """Run the official encoder and minisam's on the same random input and loss weights; return
    (reference, ours), each a dict of forward output, input grad, parameter grads and module grads."""
    tdtype, dev = TORCH_DTYPE[dtype], torch_device()
    encoder = copy.deepcopy(official_model(cfg, seed).image_encoder).to(tdtype)
    if rel_pos_lengths:
        _resize_rel_pos(encoder, rel_pos_lengths, seed)
    rng = np.random.default_rng(seed)
    C, G, S = cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.img_size
    x = rng.standard_normal((batch, 3, S, S)).astype(dtype)  # [B, 3, S, S]
    r = rng.standard_normal((batch, C, G, G)).astype(dtype)  # [B, C, G, G] the loss's weights

    xt = torch.tensor(x, device=dev, requires_grad=True)
    outputs, remove = record_grads(encoder, prefix="image_encoder.")
    try:
        out = encoder(xt)
        out.retain_grad()
        (out * torch.tensor(r, device=dev)).sum().backward()
    finally:
        remove()
    ref = {"forward": {"image_encoder": _numpy(out)}, "inputs": {"x": _numpy(xt.grad)},
           "params": {k: _numpy(v.grad) for k, v in encoder.named_parameters()},
           "modules": {**grads_of(outputs), "image_encoder": _numpy(out.grad)}}
    p = nest({k: _numpy(v) for k, v in encoder.state_dict().items()})
    del encoder, outputs, out, xt
    gc.collect()

    emb, cache = E.image_encoder_forward(p, cfg, x)
    trace = {}
    dx, g = E.image_encoder_backward(r, cache, trace)
    ours = {"forward": {"image_encoder": emb}, "inputs": {"x": dx}, "params": flatten(g), "modules": trace}
    return ref, ours


def check_all(ref, ours, rtol, label):
    assert_same_params(ref["params"], ours["params"], label)
    assert set(ref["modules"]) == set(ours["modules"]), sorted(set(ref["modules"]) ^ set(ours["modules"]))
    worst = {}
    for part in ("forward", "inputs", "params", "modules"):
        res = compare(ref[part], ours[part], rtol, label=f"{label} {part}")
        worst[part] = max(v[1] for v in res.values())
    print(f"[{label}] worst relative error: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    return worst


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_encoder_backward_tiny(name, dtype):
    cfg = TINY_CONFIGS[name]
    ref, ours = encoder_grads_both(cfg, dtype, seed=list(TINY_CONFIGS).index(name))
    check_all(ref, ours, RTOL[dtype], f"{name}/{dtype.__name__}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_encoder_backward_interpolated_rel_pos(dtype):
    """Tables shorter and longer than 2 * size - 1: get_rel_pos resizes them (linear interpolation,
    up in block 0, down in block 1, each axis its own length), and the gradient goes back through
    the resize into the stored tables."""
    cfg = TINY_CONFIGS["pad_window"]  # block 0 windowed (w 3: L = 5), block 1 global (G 8: L = 15)
    ref, ours = encoder_grads_both(cfg, dtype, seed=3, rel_pos_lengths={0: (3, 4), 1: (21, 9), 2: (5, 7)})
    assert ours["params"]["blocks.1.attn.rel_pos_h"].shape == (21, 16)
    check_all(ref, ours, RTOL[dtype], f"interpolated rel-pos/{dtype.__name__}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_encoder_backward_chunked_scores(dtype, monkeypatch):
    """A score budget of 20 floats: every attention call is cut into chunks of one or two query
    rows (global blocks) or one call (windows), in the forward and in the recomputing backward."""
    monkeypatch.setattr(E, "SCORE_BUDGET", 20)
    cfg = TINY_CONFIGS["odd_heads_global_last"]
    ref, ours = encoder_grads_both(cfg, dtype, seed=2)
    check_all(ref, ours, RTOL[dtype], f"chunked/{dtype.__name__}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_encoder_backward_micro(dtype):
    """At micro's size (D 160, 5 heads of 32, 6 blocks, windows of 8 on a 16 grid, global blocks
    2 and 5, neck to 96), a batch of 4 as in training."""
    ref, ours = encoder_grads_both(MICRO, dtype, seed=0, batch=4)
    check_all(ref, ours, RTOL[dtype], f"micro/{dtype.__name__}")


@pytest.mark.slow
@pytest.mark.vit_b
def test_encoder_backward_vit_b_float32():
    """One full vit_b encoder backward (one 1024 x 1024 image) in float32 against torch; the two
    sides run one after the other, torch's graph freed first (its peak is ~10 GB with every
    module's output gradient retained)."""
    ref, ours = encoder_grads_both(VIT_B, np.float32, seed=1234, batch=1)
    check_all(ref, ours, RTOL[np.float32], "vit_b/float32")


def test_saved_bytes_counts_views_once():
    a = np.zeros((10, 10))
    assert E.saved_bytes((a, a[2:], {"x": [a.T]})) == a.nbytes
    assert E.saved_bytes((a, np.zeros(3))) == a.nbytes + 24


def test_cache_holds_no_attention_probabilities():
    """The memory design: the forward's cache holds no [A, T, T] tensor (the probabilities are
    recomputed), nor the GELU's output, at micro's size."""
    cfg = MICRO
    p = nest({k: _numpy(v) for k, v in official_model(cfg).image_encoder.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, cfg.img_size, cfg.img_size)).astype(np.float32)
    _, cache = E.image_encoder_forward(p, cfg, x)
    G, F = cfg.image_embedding_size, cfg.encoder_mlp_dim
    shapes = []

    def walk(o):
        if isinstance(o, np.ndarray):
            shapes.append(o.shape)
        elif isinstance(o, (tuple, list)):
            for v in o:
                walk(v)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
    walk(cache)
    assert not [s for s in shapes if len(s) == 3 and s[1] == s[2] and s[1] in (G * G, cfg.window_size ** 2)]
    assert sum(1 for s in shapes if s == (2, G, G, F)) == cfg.encoder_depth  # one hidden layer per block


# --------------------------------------------------------------------------- each layer, over shapes

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

dtypes = st.sampled_from([np.float64, np.float32])


def _leaf(a):
    return torch.tensor(a, requires_grad=True)


def _check(pairs, dtype, label):
    for key, (ref, got) in pairs.items():
        ref = _numpy(ref) if isinstance(ref, torch.Tensor) else ref
        a, rel = rel_err(ref, got)
        assert rel <= RTOL[dtype], f"{label} {key}: abs {a:.3e} rel {rel:.3e}"


def _randomize_module(mod, rng, dtype):
    """Every parameter of a small official module random, at the scale randomize uses."""
    mod = mod.to(TORCH_DTYPE[dtype])
    with torch.no_grad():
        for name, prm in mod.named_parameters():
            scale = 1 / np.sqrt(prm.shape[-1]) if prm.ndim >= 2 and "rel_pos" not in name else 0.3
            base = 1.0 if prm.ndim == 1 and "norm" in name and name.endswith("weight") else 0.0
            prm.copy_(torch.tensor(base + scale * rng.standard_normal(prm.shape)))
    return mod


def _params_of(mod):
    return nest({k: _numpy(v) for k, v in mod.state_dict().items()})


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9), win=st.integers(1, 5), d=st.integers(1, 3),
       dtype=dtypes, seed=st.integers(0, 2**31))
def test_window_partition_and_unpartition(b, h, w, win, d, dtype, seed):
    """Both directions against the official functions (non-square grids, any padding)."""
    from segment_anything.modeling.image_encoder import window_partition, window_unpartition
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, h, w, d)).astype(dtype)
    xt = _leaf(x)
    windows, pad_hw = window_partition(xt, win)
    r = rng.standard_normal(windows.shape).astype(dtype)
    (windows * torch.tensor(r)).sum().backward()
    _check({"partition dx": (xt.grad, E.window_partition_backward(r, win, pad_hw, (h, w)))}, dtype, "partition")
    wt = _leaf(_numpy(windows))
    back = window_unpartition(wt, win, pad_hw, (h, w))
    r2 = rng.standard_normal(back.shape).astype(dtype)
    (back * torch.tensor(r2)).sum().backward()
    got = E.window_unpartition_backward(r2, win)
    _check({"unpartition dx": (wt.grad, got)}, dtype, "unpartition")


@settings(max_examples=30, deadline=None)
@given(q=st.integers(1, 9), k=st.integers(1, 9), length=st.integers(1, 20), same_length=st.booleans(),
       hd=st.integers(1, 4), dtype=dtypes, seed=st.integers(0, 2**31))
def test_get_rel_pos(q, k, length, same_length, hd, dtype, seed):
    """``get_rel_pos`` with and without the linear resize (tables shorter and longer), q != k too."""
    from segment_anything.modeling.image_encoder import get_rel_pos
    rng = np.random.default_rng(seed)
    L = 2 * max(q, k) - 1 if same_length else length
    table = rng.standard_normal((L, hd)).astype(dtype)
    tt = _leaf(table)
    Rt = get_rel_pos(q, k, tt)
    r = rng.standard_normal(Rt.shape).astype(dtype)
    (Rt * torch.tensor(r)).sum().backward()
    R, cache = E.get_rel_pos_forward(q, k, table)
    _check({"R": (Rt, R), "dtable": (tt.grad, E.get_rel_pos_backward(r, cache))}, dtype, "get_rel_pos")


@settings(max_examples=25, deadline=None)
@given(bp=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6), heads=st.integers(1, 3), hd=st.integers(1, 5),
       lengths=st.tuples(st.integers(0, 13), st.integers(0, 13)), budget=st.sampled_from([1, 7, 1 << 23]),
       dtype=dtypes, seed=st.integers(0, 2**31))
def test_attention(bp, h, w, heads, hd, lengths, budget, dtype, seed):
    """The official ``Attention`` with decomposed rel-pos on [B', h, w, D] (h != w too), rel-pos
    tables of the native length (0) or any other (interpolated), scores in one piece or in chunks."""
    from segment_anything.modeling.image_encoder import Attention
    rng = np.random.default_rng(seed)
    D = heads * hd
    mod = Attention(D, heads, qkv_bias=True, use_rel_pos=True, input_size=(h, w))
    lh, lw = (n if n else 2 * s - 1 for n, s in zip(lengths, (h, w)))
    mod.rel_pos_h = torch.nn.Parameter(torch.zeros(lh, hd))
    mod.rel_pos_w = torch.nn.Parameter(torch.zeros(lw, hd))
    mod = _randomize_module(mod, rng, dtype)
    x = rng.standard_normal((bp, h, w, D)).astype(dtype)
    r = rng.standard_normal((bp, h, w, D)).astype(dtype)
    xt = _leaf(x)
    yt = mod(xt)
    (yt * torch.tensor(r)).sum().backward()
    old = E.SCORE_BUDGET
    E.SCORE_BUDGET = budget
    try:
        y, cache = E.attention_forward(_params_of(mod), x, heads)
        dx, g = E.attention_backward(r, cache)
    finally:
        E.SCORE_BUDGET = old
    g = flatten(g)
    pairs = {"y": (yt, y), "dx": (xt.grad, dx)}
    pairs.update({k: (v.grad, g[k]) for k, v in mod.named_parameters()})
    assert set(g) == {k for k, _ in mod.named_parameters()}
    # With one key row (h = 1), or a one-row table (every resized row the same), the rel_h term
    # adds the same number to every key of a query's softmax, which ignores it: rel_pos_h's true
    # gradient is exactly 0 and both sides return rounding noise, held to the bound on the scale
    # of the qkv weight's gradient (likewise rel_pos_w).
    scale = np.abs(_numpy(mod.qkv.weight.grad)).max()
    for key, size, length in (("rel_pos_h", h, lh), ("rel_pos_w", w, lw)):
        if size == 1 or length == 1:
            ref, got = pairs.pop(key)
            assert max(np.abs(_numpy(ref)).max(), np.abs(got).max()) <= RTOL[dtype] * scale, key
    _check(pairs, dtype, "attention")


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 2), g=st.integers(2, 7), win=st.integers(0, 4), heads=st.integers(1, 2), hd=st.integers(3, 5),
       dtype=dtypes, seed=st.integers(0, 2**31))
def test_block(b, g, win, heads, hd, dtype, seed):
    """The official ``Block``: global (window 0) or windowed with any padding, and the MLP inside.
    At least 3 channels: a LayerNorm over 1 or 2 channels maps every input to the same one or
    two values, and its true input gradient is a cancellation to ~eps (tests/test_backward_layers.py)."""
    from segment_anything.modeling.image_encoder import Block
    from functools import partial
    rng = np.random.default_rng(seed)
    D = heads * hd
    mod = Block(D, heads, mlp_ratio=2.0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                window_size=win, input_size=(g, g) if win == 0 else (win, win))
    mod = _randomize_module(mod, rng, dtype)
    x = rng.standard_normal((b, g, g, D)).astype(dtype)
    r = rng.standard_normal((b, g, g, D)).astype(dtype)
    xt = _leaf(x)
    yt = mod(xt)
    (yt * torch.tensor(r)).sum().backward()
    y, cache = E.block_forward(_params_of(mod), x, heads, win)
    dx, grads = E.block_backward(r, cache)
    grads = flatten(grads)
    pairs = {"y": (yt, y), "dx": (xt.grad, dx)}
    pairs.update({k: (v.grad, grads[k]) for k, v in mod.named_parameters()})
    assert set(grads) == {k for k, _ in mod.named_parameters()}
    _check(pairs, dtype, "block")


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 2), g=st.integers(1, 6), d=st.integers(2, 6), c=st.integers(3, 6), dtype=dtypes,
       seed=st.integers(0, 2**31))
def test_neck(b, g, d, c, dtype, seed):
    """The neck as the official ``ImageEncoderViT`` builds it: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d.
    At least 2 input and 3 output channels: from one input channel the 1x1 conv makes every
    pixel's channels proportional to one number, which the LayerNorm then divides out, so the
    true input gradient is of order eps (a cancellation, as a LayerNorm over 1 or 2 channels)."""
    from segment_anything.modeling.common import LayerNorm2d
    rng = np.random.default_rng(seed)
    mod = torch.nn.Sequential(torch.nn.Conv2d(d, c, 1, bias=False), LayerNorm2d(c),
                              torch.nn.Conv2d(c, c, 3, padding=1, bias=False), LayerNorm2d(c))
    mod = _randomize_module(mod, rng, dtype)
    x = rng.standard_normal((b, g, g, d)).astype(dtype)  # channels-last, as the blocks leave it
    r = rng.standard_normal((b, c, g, g)).astype(dtype)
    xt = _leaf(x)
    yt = mod(xt.permute(0, 3, 1, 2))
    (yt * torch.tensor(r)).sum().backward()
    y, cache = E.neck_forward(_params_of(mod), x)
    dx, grads = E.neck_backward(r, cache)
    grads = flatten(grads)
    pairs = {"y": (yt, y), "dx": (xt.grad, dx)}
    pairs.update({k: (v.grad, grads[k]) for k, v in mod.named_parameters()})
    _check(pairs, dtype, "neck")


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 2), patch=st.integers(1, 4), g=st.integers(1, 4), d=st.integers(1, 6), dtype=dtypes,
       seed=st.integers(0, 2**31))
def test_patch_embed(b, patch, g, d, dtype, seed):
    """The official ``PatchEmbed``: a patch x patch conv with stride patch, channels-last out."""
    from segment_anything.modeling.image_encoder import PatchEmbed
    rng = np.random.default_rng(seed)
    mod = _randomize_module(PatchEmbed((patch, patch), (patch, patch), 0, 3, d), rng, dtype)
    x = rng.standard_normal((b, 3, g * patch, g * patch)).astype(dtype)
    r = rng.standard_normal((b, g, g, d)).astype(dtype)
    xt = _leaf(x)
    yt = mod(xt)
    (yt * torch.tensor(r)).sum().backward()
    y, cache = E.patch_embed_forward(_params_of(mod), x, patch)
    dx, grads = E.patch_embed_backward(r, cache)
    grads = flatten(grads)
    pairs = {"y": (yt, y), "dx": (xt.grad, dx)}
    pairs.update({k: (v.grad, grads[k]) for k, v in mod.named_parameters()})
    _check(pairs, dtype, "patch_embed")
