"""Parity of minisam's image encoder with the official ImageEncoderViT, module by module, on both
paths: the readable one (``minisam.modeling.image_encoder``) and the fused fast one
(``minisam.kernels.image_encoder``), and the two paths against each other.

Tolerances (fp32, both sides):
- tiny configs: 1e-5 x max|ref| for every traced intermediate. One float32 op is ~6e-8
  relative; a tiny encoder chains ~20 ops per block over 2-3 blocks, with summation orders
  that differ from PyTorch's (BLAS blocking, the LayerNorm/softmax reductions) and a float32
  erf/exp within 5e-7 of exact on either side. The measured errors are ~1e-7 to 1e-6
  relative (printed by ``compare``), so 1e-5 leaves ~10x headroom without hiding a bug: a
  wrong scale, eps, pad or rel-pos index moves the result by 1e-3 or more.
- vit_b: 1e-4 x max|ref| on the image embedding (the project's parity bound for intermediates): 12 blocks, 768-wide
  sums and 4096-key softmaxes; measured errors are printed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_CONFIGS, official_model
from official import compare, record, torch_device
from minisam.config import VIT_B
from minisam.modeling.image_encoder import get_rel_pos, interpolate_linear, window_partition, window_unpartition
from minisam.checkpoints.param_tree import nest
import minisam.kernels.image_encoder as enc
import minisam.modeling.image_encoder as readable

PATHS = {"readable": readable.image_encoder, "fast": enc.image_encoder}

TINY_RTOL = 1e-5
VIT_B_RTOL = 1e-4


def _params(cfg, seed):
    model = official_model(cfg, seed)
    return nest({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def _official_encoder_trace(cfg, seed, x):
    model = official_model(cfg, seed)
    xt = torch.from_numpy(x).to(torch_device())
    out, trace = record(model.image_encoder, lambda: model.image_encoder(xt), prefix="image_encoder.")
    trace["image_encoder"] = out.detach().float().cpu().numpy()
    return trace


def encoder_parity_tiny(name, image_encoder, label, require=()):
    """``image_encoder`` against the official encoder on ``TINY_CONFIGS[name]`` (weights and a random
    [2, 3, S, S] batch from the config's seed), every traced intermediate within TINY_RTOL.
    Returns (the output, minisam's trace)."""
    cfg = TINY_CONFIGS[name]
    seed = list(TINY_CONFIGS).index(name)
    x = np.random.default_rng(seed).standard_normal((2, 3, cfg.img_size, cfg.img_size)).astype(np.float32)
    ref = _official_encoder_trace(cfg, seed, x)
    ours = {}
    out = image_encoder(_params(cfg, seed)["image_encoder"], cfg, x, trace=ours)  # [2, C, G, G]
    compare(ref, ours, TINY_RTOL, require=require, label=label)
    return out, ours


@pytest.mark.parametrize("path", ["readable", "auto", "chunked"])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_encoder_parity_tiny(name, path, monkeypatch):
    """"readable": the readable path of minisam.modeling; on the fast path, "auto": tiny grids
    run every attention call as a Numba task (kernels.attention_rel_pos); "chunked": force the
    BLAS path of the vit_b global blocks, with a score budget so small that the query rows are
    split into chunks too."""
    image_encoder = PATHS["readable" if path == "readable" else "fast"]
    if path == "chunked":
        monkeypatch.setattr(enc, "_SMALL_T", 0)
        monkeypatch.setattr(enc, "_SCORE_BUDGET", 100)
    cfg = TINY_CONFIGS[name]
    e = "image_encoder"
    require = [e, e + ".patch_embed", e + ".patch_embed.proj"] + [f"{e}.neck.{i}" for i in range(4)]
    for i in range(cfg.encoder_depth):
        b = f"{e}.blocks.{i}"
        require += [b, b + ".attn", b + ".attn.qkv", b + ".attn.proj", b + ".norm1", b + ".norm2",
                    b + ".mlp", b + ".mlp.lin1", b + ".mlp.act", b + ".mlp.lin2"]
    out, ours = encoder_parity_tiny(name, image_encoder, f"encoder {name}", require=require)
    assert out.dtype == np.float32 and out.shape == (2, cfg.prompt_embed_dim, cfg.image_embedding_size,
                                                      cfg.image_embedding_size)
    np.testing.assert_array_equal(out, ours[e])


@pytest.mark.parametrize("H,W,w", [(8, 8, 3), (7, 5, 5), (6, 6, 3), (4, 9, 4)])
def test_window_partition_roundtrip_matches_official(H, W, w):
    from segment_anything.modeling.image_encoder import window_partition as wp_ref
    x = np.random.default_rng(0).standard_normal((2, H, W, 3)).astype(np.float32)
    ours, pad = window_partition(x, w)
    ref, pad_ref = wp_ref(torch.from_numpy(x), w)
    assert pad == tuple(pad_ref)
    np.testing.assert_array_equal(ours, ref.numpy())
    np.testing.assert_array_equal(window_unpartition(ours, w, pad, (H, W)), x)


@pytest.mark.parametrize("B,H,W,nH,hd,w", [(2, 8, 8, 2, 3, 3), (1, 7, 5, 3, 4, 5), (2, 6, 6, 1, 5, 3),
                                           (1, 4, 9, 2, 2, 4), (2, 5, 7, 2, 3, 0), (1, 6, 6, 3, 2, 6)])
def test_split_and_merge_heads_match_the_official_layout(B, H, W, nH, hd, w):
    """The fast path's q/k/v of every call (``split_heads``, from x W^T and the bias) are those the
    official block gives: window_partition of the normed tokens (zero padding), the qkv projection
    of every window token, then ``reshape(B', T, 3, nH, hd).permute(2, 0, 3, 1, 4)``. Pad tokens get
    exactly the bias; real tokens the same products in one GEMM over the grid (a few ulps).
    ``merge_heads`` inverts the layout and crops. The Numba kernels equal their NumPy twins bit for
    bit. w = 0: global."""
    rng = np.random.default_rng(H * 100 + W * 10 + w)
    D = nH * hd
    x = rng.standard_normal((B, H, W, D)).astype(np.float32)                    # [B, G, G, D] normed tokens
    weight, bias = rng.standard_normal((3 * D, D)).astype(np.float32), rng.standard_normal(3 * D).astype(np.float32)
    windows, pad_hw = window_partition(x, w) if w else (x, (H, W))             # [B*nW, w, w, D]
    Bp, wh, ww, _ = windows.shape
    qkv_ref = enc.linear(windows, weight, bias)                                # [B*nW, w, w, 3D]
    ref = qkv_ref.reshape(Bp, wh * ww, 3, nH, hd).transpose(2, 0, 3, 1, 4).reshape(3, Bp * nH, wh * ww, hd)
    xw = enc.linear(x, weight)                                                 # [B, G, G, 3D] real tokens, no bias
    got = enc.split_heads(xw, bias, nH, w)                                     # [3, A, T, hd]
    twin = np.stack(enc.split_heads_numpy(xw, bias, nH, w))
    np.testing.assert_array_equal(got, twin)
    is_pad = np.zeros((B,) + pad_hw, bool)
    is_pad[:, H:], is_pad[:, :, W:] = True, True
    pad_calls = (window_partition(is_pad[..., None], w)[0] if w else is_pad[..., None]).reshape(Bp, 1, wh * ww)
    pad_mask = np.broadcast_to(pad_calls, (Bp, nH, wh * ww)).reshape(Bp * nH, wh * ww)  # [A, T]
    assert got.shape == ref.shape and (pad_mask.any() == bool(w and (H % w or W % w)))
    np.testing.assert_array_equal(got[:, pad_mask], ref[:, pad_mask])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    o = rng.standard_normal(got.shape[1:]).astype(np.float32)                  # [A, T, hd] attention outputs
    merged = enc.merge_heads(o, nH, (H, W), w)                                 # [B, G, G, D]
    heads = o.reshape(Bp, nH, wh, ww, hd).transpose(0, 2, 3, 1, 4).reshape(Bp, wh, ww, D)
    expected = window_unpartition(heads, w, pad_hw, (H, W)) if w else heads
    np.testing.assert_array_equal(merged, expected)
    np.testing.assert_array_equal(merged, enc.merge_heads_numpy(o, nH, (H, W), w))


@pytest.mark.parametrize("q,k,L", [(7, 7, 13), (7, 7, 27), (14, 14, 9), (5, 5, 4), (64, 64, 27),
                                   (4, 8, 15), (8, 4, 15), (3, 6, 5)])
def test_get_rel_pos_matches_official(q, k, L):
    """Including the linear-interpolation branch (L != 2 max(q, k) - 1) and q != k scaling."""
    from segment_anything.modeling.image_encoder import get_rel_pos as ref_fn
    rel = np.random.default_rng(L).standard_normal((L, 6)).astype(np.float32)
    ref = ref_fn(q, k, torch.from_numpy(rel)).numpy()
    ours = get_rel_pos(q, k, rel)
    assert ours.shape == ref.shape
    # the interpolation is two float32 products and a sum: expect equality to ~1 ulp
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-7 * np.abs(ref).max())


def test_interpolate_linear_matches_torch():
    import torch.nn.functional as F
    rel = np.random.default_rng(3).standard_normal((11, 4)).astype(np.float32)
    for size in (1, 5, 11, 23, 127):
        ref = F.interpolate(torch.from_numpy(rel).T[None], size=size, mode="linear")[0].T.numpy()
        np.testing.assert_allclose(interpolate_linear(rel, size), ref, rtol=0, atol=2e-7 * np.abs(ref).max())


# --------------------------------------------------------------------------- vit_b

_VIT_B_CACHE = {}


def vit_b_test_input():
    """A preprocessed [1, 3, 1024, 1024] input: a smooth synthetic image, resized, normalized, padded."""
    from minisam.utils.transforms import ResizeLongestSide, preprocess
    yy, xx = np.mgrid[0:600, 0:900]
    img = np.stack([(xx * 255 // 899), (yy * 255 // 599), ((xx + yy) * 7) % 256], -1).astype(np.uint8)
    resized = ResizeLongestSide(1024).apply_image(img)                     # [683, 1024, 3]
    return preprocess(resized.transpose(2, 0, 1)[None], VIT_B)             # [1, 3, 1024, 1024]


def official_vit_b_embedding():
    """(input, official embedding [1, 256, 64, 64]) for ``official_model(VIT_B, 1234)``, cached per session."""
    if "embedding" not in _VIT_B_CACHE:
        x = vit_b_test_input()
        model = official_model(VIT_B, 1234)
        with torch.no_grad():
            ref = model.image_encoder(torch.from_numpy(x).to(torch_device())).float().cpu().numpy()
        _VIT_B_CACHE["input"], _VIT_B_CACHE["embedding"] = x, ref
    return _VIT_B_CACHE["input"], _VIT_B_CACHE["embedding"]


@pytest.mark.vit_b
def test_encoder_parity_vit_b():
    x, ref = official_vit_b_embedding()
    ours = enc.image_encoder(_params(VIT_B, 1234)["image_encoder"], VIT_B, x)
    _VIT_B_CACHE["fast"] = ours
    compare({"image_encoder": ref}, {"image_encoder": ours}, VIT_B_RTOL, label="encoder vit_b")


@pytest.mark.vit_b
def test_readable_encoder_equals_fast_vit_b():
    """The readable encoder's vit_b embedding against the fast one's (and the official one's),
    within the vit_b embedding bound: the two paths sum in different orders (one GEMM per
    layer vs stacked matmuls, a full softmax vs chunks with the rel-pos add fused)."""
    x, ref = official_vit_b_embedding()
    params = _params(VIT_B, 1234)["image_encoder"]
    fast = _VIT_B_CACHE.get("fast")
    if fast is None:
        fast = enc.image_encoder(params, VIT_B, x)
    ours = readable.image_encoder(params, VIT_B, x)
    compare({"image_encoder": fast}, {"image_encoder": ours}, VIT_B_RTOL, label="encoder vit_b readable vs fast")
    compare({"image_encoder": ref}, {"image_encoder": ours}, VIT_B_RTOL, label="encoder vit_b readable vs official")


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_fast_encoder_equals_readable_tiny(name):
    """Every traced intermediate of the fast path against the readable path, 1e-5 x max|ref| as
    against the official code: the same float32 math, summed in other orders (BLAS blocking of
    one GEMM per layer, the LayerNorm's 8-lane float64 sums, the chunked softmax)."""
    cfg = TINY_CONFIGS[name]
    seed = list(TINY_CONFIGS).index(name)
    x = np.random.default_rng(seed + 7).standard_normal((2, 3, cfg.img_size, cfg.img_size)).astype(np.float32)
    params = _params(cfg, seed)["image_encoder"]
    ref, ours = {}, {}
    readable.image_encoder(params, cfg, x, trace=ref)
    enc.image_encoder(params, cfg, x, trace=ours)
    assert set(ref) == set(ours)
    compare(ref, ours, TINY_RTOL, label=f"encoder {name} fast vs readable")


def test_kept_workspace_gives_the_same_embeddings():
    """``sam.image_encoder`` keeps the fast path's activation arrays from one call to the next
    (per thread). Images in turn, a batch of another size between them and a call from another
    thread each give, bit for bit, what a call with fresh arrays gives; ``free_workspace`` drops them."""
    import threading
    from minisam.modeling.sam import Sam
    name = next(n for n, c in TINY_CONFIGS.items()
                if c.window_size and c.image_embedding_size % c.window_size and c.encoder_global_attn_indexes)
    cfg = TINY_CONFIGS[name]
    params = _params(cfg, 0)
    sam = Sam(cfg, params, fast=True)
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((b, 3, cfg.img_size, cfg.img_size)).astype(np.float32) for b in (1, 2, 1)]
    images.append(images[0])
    outs = [sam.image_encoder(x) for x in images]                                # [B, C, G, G] each
    for x, out in zip(images, outs):           # compared after all the calls: no output is a kept array
        np.testing.assert_array_equal(out, enc.image_encoder(params["image_encoder"], cfg, x))
    assert sam.image_encoder._workspaces.arrays, "the workspace was not kept"
    other = {}
    thread = threading.Thread(target=lambda: other.update(out=sam.image_encoder(images[1])))
    thread.start()
    thread.join()
    np.testing.assert_array_equal(other["out"], enc.image_encoder(params["image_encoder"], cfg, images[1]))
    sam.image_encoder.free_workspace()
    assert not hasattr(sam.image_encoder._workspaces, "arrays")
