"""The image encoder: a ViT-B/L/H backbone with windowed and global attention, then a neck.

Paper: Kirillov et al. 2023, section 3 ("Image encoder") and appendix A: an MAE-pretrained
ViT adapted to 1024x1024 inputs as in ViTDet (Li et al. 2022): 14x14 windowed attention
with four equally spaced global-attention blocks, decomposed relative positions (MViTv2,
Li et al. 2022), and a neck of 1x1 conv, LayerNorm, 3x3 conv, LayerNorm down to 256 channels.
Official code mirrored: ``segment_anything/modeling/image_encoder.py`` (ImageEncoderViT, Block,
Attention, window_partition/unpartition, get_rel_pos, add_decomposed_rel_pos, PatchEmbed)
and ``modeling/common.py`` (MLPBlock, LayerNorm2d). Numerics: SAM_NOTES 2.2.

Shape alphabet: B images, S input side (1024), P patch (16), G grid side S/P (64), D embed
dim (768), nH heads, hd head dim D/nH, w window side (14), nW windows per image, T tokens
in an attention call (w*w or G*G), N = batch of attention calls x nH, C neck channels (256).

Speed (kept equal to the official code, see tests/test_image_encoder.py):
- every linear layer is one float32 BLAS GEMM over all tokens; the row kernels of
  ``minisam.kernels.layers`` fuse the bias, GELU, residual add and LayerNorm around them;
- global attention scores are computed in chunks of (calls, query rows) with at most
  ``_SCORE_BUDGET`` floats each, so the global blocks never hold [nH, G*G, G*G] (805 MB
  for vit_b); the decomposed rel-pos add is fused into the softmax;
- windowed attention (small calls, 196 tokens) runs one Numba task per (window, head),
  scores kept in cache (``kernels.attention_rel_pos``).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from minisam.config import SamConfig
from minisam.errors import ImageError
from minisam.kernels.layers import add_layer_norm, attention_rel_pos, gelu, layer_norm, softmax_rel_pos_
from minisam.kernels.layers import rel_pos_terms as _rel_pos_kernel

_EPS = 1e-6                 # every encoder LayerNorm and both LayerNorm2d (build_sam.py, common.py)
_SCORE_BUDGET = 1 << 23     # floats per chunk of attention scores (32 MB): 2048 query rows of a
                            # 4096-key call. Fewer, bigger GEMMs: measured on 2 loaded cores,
                            # 64 rows 36 s, 256 rows 2.7 s, 1024 rows 1.35 s, 2048 rows 1.24 s
                            # (4 heads); OpenBLAS threads stall on many small calls.
_SMALL_T = 1024             # attention calls up to this many tokens (windows) run as one Numba task each


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _put(trace, key, value):
    """Store a copy in the trace (the arrays are updated in place later)."""
    if trace is not None:
        trace[key] = np.array(value, dtype=np.float32, copy=True)


def linear(x, weight, bias=None):
    """y = x W^T + b as one GEMM over all leading axes.  [..., in], [out, in], [out] -> [..., out]"""
    lead = x.shape[:-1]
    y = _f32(x).reshape(-1, x.shape[-1]) @ _f32(weight).T                  # [M, out]
    if bias is not None:
        y += bias
    return y.reshape(*lead, -1)                                            # [..., out]


# --------------------------------------------------------------------------- patches

def patch_embed(p, x, patch_size):
    """16x16 stride-16 conv as reshape + matmul.  [B, 3, S, S] -> [B, G, G, D]

    Each patch is flattened in the conv weight's (c, ky, kx) order.
    """
    B, Cin, H, W = x.shape
    P = patch_size
    Gh, Gw = H // P, W // P
    w = p["proj"]["weight"]                                                # [D, 3, P, P]
    patches = x.reshape(B, Cin, Gh, P, Gw, P).transpose(0, 2, 4, 1, 3, 5)  # [B, G, G, 3, P, P]
    patches = patches.reshape(B * Gh * Gw, Cin * P * P)                    # [B*G*G, 3*P*P]
    y = linear(patches, w.reshape(w.shape[0], -1), p["proj"]["bias"])       # [B*G*G, D]
    return y.reshape(B, Gh, Gw, -1)                                        # [B, G, G, D]


# --------------------------------------------------------------------------- windows

def window_partition(x, window_size) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Zero-pad the grid to a multiple of w and cut it into windows (image_encoder.py L243-264).

    [B, H, W, D] -> [B*nW, w, w, D], with windows in (row, column) order, and (Hp, Wp).
    The padding is zeros in the already-normalized tokens, and nothing masks it later.
    """
    B, H, W, D = x.shape
    w = window_size
    pad_h, pad_w = (w - H % w) % w, (w - W % w) % w
    if pad_h or pad_w:
        x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))           # [B, Hp, Wp, D]
    Hp, Wp = H + pad_h, W + pad_w
    x = x.reshape(B, Hp // w, w, Wp // w, w, D).transpose(0, 1, 3, 2, 4, 5)  # [B, Hp/w, Wp/w, w, w, D]
    return np.ascontiguousarray(x).reshape(-1, w, w, D), (Hp, Wp)          # [B*nW, w, w, D]


def window_unpartition(windows, window_size, pad_hw, hw):
    """Inverse of :func:`window_partition`, cropping the padding.  [B*nW, w, w, D] -> [B, H, W, D]"""
    Hp, Wp = pad_hw
    H, W = hw
    w = window_size
    B = windows.shape[0] // ((Hp // w) * (Wp // w))
    x = windows.reshape(B, Hp // w, Wp // w, w, w, -1).transpose(0, 1, 3, 2, 4, 5)  # [B, Hp/w, w, Wp/w, w, D]
    x = x.reshape(B, Hp, Wp, -1)[:, :H, :W, :]                             # [B, H, W, D]
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------- relative positions

def interpolate_linear(rel_pos, size):
    """``F.interpolate(mode="linear", align_corners=False)`` along axis 0.  [L, hd] -> [size, hd]

    As PyTorch's CPU kernel computes it, in float32: src = scale * (i + 0.5) - 0.5 clamped
    at 0 with scale = L / size, then a blend of the two neighbours (the right one clamped
    at L - 1). The compiled kernel contracts both ``a * b + c`` into fused multiply-adds;
    we emulate an FMA by doing the sum in float64, where the float32 product is exact.
    """
    L = rel_pos.shape[0]
    scale = np.float64(np.float32(L) / np.float32(size))
    half = np.arange(size, dtype=np.float32) + np.float32(0.5)                 # [size]
    src = (scale * half.astype(np.float64) - 0.5).astype(np.float32)           # fma(scale, i+0.5, -0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)                                                  # floor: src >= 0
    lam1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)       # [size]
    lam0 = np.float32(1.0) - lam1
    i1 = np.minimum(i0 + 1, L - 1)
    right = (rel_pos[i1] * lam1[:, None]).astype(np.float64)                   # [size, hd] float32 product
    blend = rel_pos[i0].astype(np.float64) * lam0[:, None] + right             # fma(t0, w0, t1 * w1)
    return blend.astype(np.float32)                                            # [size, hd]


def get_rel_pos(q_size, k_size, rel_pos):
    """Relative-position table for every (query, key) pair on one axis (image_encoder.py L292-322).

    R[i, j] = rel_pos[i - j + k_size - 1] when q_size == k_size; the table is first resized
    by linear interpolation if its length is not 2 * max(q, k) - 1.  [L, hd] -> [q, k, hd]
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = interpolate_linear(rel_pos, max_rel_dist)                # [2*max-1, hd]
    # float32 coordinates and truncation, as the official torch arithmetic does
    q_coords = np.arange(q_size, dtype=np.float32)[:, None] * np.float32(max(k_size / q_size, 1.0))
    k_coords = np.arange(k_size, dtype=np.float32)[None, :] * np.float32(max(q_size / k_size, 1.0))
    rel = (q_coords - k_coords) + np.float32((k_size - 1) * max(q_size / k_size, 1.0))  # [q, k]
    return _f32(rel_pos[rel.astype(np.int64)])                             # [q, k, hd]


def rel_pos_terms(q, rel_pos_h, rel_pos_w, hw):
    """The two decomposed rel-pos terms of ``add_decomposed_rel_pos`` (L325-361), from UNSCALED q.

    q [N, T, hd] with T = h*w -> rel_h [N, T, h], rel_w [N, T, w]:
    rel_h[n, (y, x), k] = q[n, y, x] . Rh[y, k];  rel_w[n, (y, x), k] = q[n, y, x] . Rw[x, k].
    One Numba pass over q (``kernels.rel_pos_terms``): as batched BLAS these small products
    cost ~0.5 s per block, mostly in thread hand-offs and transposes.
    """
    h, w = hw
    N, T, hd = q.shape
    Rh = get_rel_pos(h, h, rel_pos_h)                                      # [h, h, hd]
    Rw = get_rel_pos(w, w, rel_pos_w)                                      # [w, w, hd]
    rel_h, rel_w = _rel_pos_kernel(q.reshape(N, h, w, hd), Rh, Rw)        # [N, h, w, h], [N, h, w, w]
    return rel_h.reshape(N, T, h), rel_w.reshape(N, T, w)


# --------------------------------------------------------------------------- attention

def attention(p, x, num_heads, trace=None, key=""):
    """Multi-head self-attention with decomposed relative positions (image_encoder.py L185-240).

    x [B', h, w, D] (B' windows, or images for a global block) -> [B', h, w, D].
    The scale multiplies q before q k^T; the rel-pos terms use the unscaled q.
    """
    Bp, h, w, D = x.shape
    T, hd = h * w, D // num_heads
    qkv = linear(x, p["qkv"]["weight"], p["qkv"]["bias"])                  # [B', h, w, 3D]
    _put(trace, key + ".qkv", qkv)
    qkv = qkv.reshape(Bp, T, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)    # [3, B', nH, T, hd]
    q, k, v = (_f32(t).reshape(Bp * num_heads, T, hd) for t in qkv)        # [N, T, hd] each
    rel_h, rel_w = rel_pos_terms(q, p["rel_pos_h"], p["rel_pos_w"], (h, w))  # [N, T, h], [N, T, w]
    q *= np.float32(hd ** -0.5)                                            # [N, T, hd] scaled after rel-pos
    if T <= _SMALL_T:
        out = attention_rel_pos(q, k, v, rel_h, rel_w)                     # [N, T, hd] one task per call
    else:
        out = _chunked_attention(q, k, v, rel_h, rel_w, (h, w))            # [N, T, hd]
    heads = out.reshape(Bp, num_heads, h, w, hd).transpose(0, 2, 3, 1, 4)  # [B', h, w, nH, hd]
    y = linear(heads.reshape(Bp, h, w, D), p["proj"]["weight"], p["proj"]["bias"])  # [B', h, w, D]
    _put(trace, key + ".proj", y)
    _put(trace, key, y)
    return y


def _chunked_attention(q, k, v, rel_h, rel_w, hw):
    """softmax(q k^T + rel-pos) v with BLAS GEMMs, never holding more than _SCORE_BUDGET scores.

    q [N, T, hd] scaled, k, v [N, T, hd], rel_h [N, T, h], rel_w [N, T, w] -> [N, T, hd].
    """
    h, w = hw
    N, T, hd = q.shape
    kT = k.transpose(0, 2, 1)                                              # [N, hd, T]
    out = np.empty_like(q)                                                 # [N, T, hd]
    # chunk (calls, query rows) so that one chunk of scores holds <= _SCORE_BUDGET floats
    rows = T if T * T <= _SCORE_BUDGET else max(1, _SCORE_BUDGET // T)
    calls = max(1, _SCORE_BUDGET // (T * T)) if rows == T else 1
    for n0 in range(0, N, calls):
        n1 = min(N, n0 + calls)
        for r0 in range(0, T, rows):
            r1 = min(T, r0 + rows)
            scores = np.matmul(q[n0:n1, r0:r1], kT[n0:n1])                 # [n, r, T]
            softmax_rel_pos_(scores.reshape(-1, T), rel_h[n0:n1, r0:r1].reshape(-1, h),
                             rel_w[n0:n1, r0:r1].reshape(-1, w))          # [n*r, T] in place
            np.matmul(scores, v[n0:n1], out=out[n0:n1, r0:r1])             # [n, r, hd]
    return out


# --------------------------------------------------------------------------- blocks

def block(p, x, x_norm1, num_heads, window_size, next_norm1=None, trace=None, key=""):
    """One transformer block (image_encoder.py L119-182), updating the residual stream in place.

    x [B, G, G, D] residual stream (modified in place), x_norm1 = norm1(x) [B, G, G, D].
    Returns (x, norm1 of the next block applied to the new x, or None if ``next_norm1`` is None):
    the MLP's residual add is fused with the next block's LayerNorm.
    """
    B, H, W, D = x.shape
    _put(trace, key + ".norm1", x_norm1)
    if window_size > 0:
        windows, pad_hw = window_partition(x_norm1, window_size)           # [B*nW, w, w, D]
        a = attention(p["attn"], windows, num_heads, trace, key + ".attn")  # [B*nW, w, w, D]
        a = window_unpartition(a, window_size, pad_hw, (H, W))             # [B, G, G, D]
    else:
        a = attention(p["attn"], x_norm1, num_heads, trace, key + ".attn")  # [B, G, G, D]
    x_norm2 = add_layer_norm(x, a, p["norm2"]["weight"], p["norm2"]["bias"], _EPS)  # x += a; [B, G, G, D]
    _put(trace, key + ".norm2", x_norm2)
    mlp = p["mlp"]
    hidden = linear(x_norm2, mlp["lin1"]["weight"])                        # [B, G, G, 4D] no bias yet
    if trace is not None:
        _put(trace, key + ".mlp.lin1", hidden + mlp["lin1"]["bias"])
    gelu(hidden, mlp["lin1"]["bias"], out=hidden)                          # [B, G, G, 4D] in place
    _put(trace, key + ".mlp.act", hidden)
    y = linear(hidden, mlp["lin2"]["weight"])                              # [B, G, G, D] no bias yet
    del hidden
    if trace is not None:
        _put(trace, key + ".mlp.lin2", y + mlp["lin2"]["bias"])
        _put(trace, key + ".mlp", y + mlp["lin2"]["bias"])
    if next_norm1 is None:
        x += y + mlp["lin2"]["bias"]                                       # [B, G, G, D]
        x_next = None
    else:
        x_next = add_layer_norm(x, y, next_norm1["weight"], next_norm1["bias"], _EPS,
                                delta_bias=mlp["lin2"]["bias"])            # x += y + b; LN
    _put(trace, key, x)
    return x, x_next


def conv3x3(x, weight):
    """3x3 conv, padding 1, no bias, channels-last, as im2col + one GEMM.  [B, H, W, C], [O, C, 3, 3] -> [B, H, W, O]"""
    B, H, W, C = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))                       # [B, H+2, W+2, C]
    cols = np.empty((B, H, W, 3, 3, C), np.float32)                        # [B, H, W, ky, kx, C]
    for ky in range(3):
        for kx in range(3):
            cols[:, :, :, ky, kx] = xp[:, ky:ky + H, kx:kx + W]
    w = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], 9 * C)       # [O, ky*kx*C]
    return linear(cols.reshape(B, H, W, 9 * C), w)                        # [B, H, W, O]


def neck(p, x, trace=None, key="image_encoder.neck"):
    """1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (image_encoder.py L88-104), all channels-last.

    [B, G, G, D] -> [B, C, G, G]. A LayerNorm2d over channels is a LayerNorm over the last
    axis of the channels-last tensor.
    """
    def nchw(t):
        return t.transpose(0, 3, 1, 2)

    w0 = p[0]["weight"]                                                    # [C, D, 1, 1]
    y = linear(x, w0.reshape(w0.shape[0], -1))                             # [B, G, G, C]
    _put(trace, key + ".0", nchw(y))
    y = layer_norm(y, p[1]["weight"], p[1]["bias"], _EPS)                  # [B, G, G, C]
    _put(trace, key + ".1", nchw(y))
    y = conv3x3(y, p[2]["weight"])                                         # [B, G, G, C]
    _put(trace, key + ".2", nchw(y))
    y = layer_norm(y, p[3]["weight"], p[3]["bias"], _EPS)                  # [B, G, G, C]
    out = np.ascontiguousarray(nchw(y))                                    # [B, C, G, G]
    _put(trace, key + ".3", out)
    _put(trace, key, out)  # the Sequential's own output, as its forward hook records it
    return out


def image_encoder(p, cfg: SamConfig, x, trace: Optional[dict] = None) -> np.ndarray:
    """ImageEncoderViT.forward: [B, 3, S, S] preprocessed float32 -> [B, C, S/16, S/16] embedding.

    ``p`` is ``params["image_encoder"]``. With a ``trace`` dict, records the outputs of the
    official modules under their full paths (``image_encoder.blocks.3.attn`` ...).
    """
    x = _f32(x)
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != cfg.img_size or x.shape[3] != cfg.img_size:
        raise ImageError(f"image_encoder expects float32 [B, 3, {cfg.img_size}, {cfg.img_size}], got {x.shape}")
    e = "image_encoder"
    tokens = patch_embed(p["patch_embed"], x, cfg.patch_size)              # [B, G, G, D]
    _put(trace, e + ".patch_embed.proj", tokens.transpose(0, 3, 1, 2))
    _put(trace, e + ".patch_embed", tokens)
    tokens += p["pos_embed"]                                               # [B, G, G, D] absolute positions
    blocks = p["blocks"]
    depth = cfg.encoder_depth
    x_norm1 = layer_norm(tokens, blocks[0]["norm1"]["weight"], blocks[0]["norm1"]["bias"], _EPS)
    for i in range(depth):
        next_norm1 = blocks[i + 1]["norm1"] if i + 1 < depth else None
        tokens, x_norm1 = block(blocks[i], tokens, x_norm1, cfg.encoder_num_heads,
                                cfg.block_window_size(i), next_norm1, trace, f"{e}.blocks.{i}")
    out = neck(p["neck"], tokens, trace, e + ".neck")                      # [B, C, G, G]
    _put(trace, e, out)
    return out
