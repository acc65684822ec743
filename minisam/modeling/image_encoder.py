"""The image encoder, readable: a ViT with windowed and global attention, then a neck.

Paper: Kirillov et al. 2023, section 3 ("Image encoder") and appendix A: an MAE-pretrained
ViT adapted to 1024x1024 inputs as in ViTDet (Li et al. 2022): 14x14 windowed attention
with four equally spaced global-attention blocks, decomposed relative positions (MViTv2,
Li et al. 2022), and a neck of 1x1 conv, LayerNorm, 3x3 conv, LayerNorm down to 256 channels.

Mirrors ``segment_anything/modeling/image_encoder.py``, one function per official piece:
``image_encoder`` (ImageEncoderViT.forward), ``patch_embed`` (PatchEmbed), ``block`` (Block),
``attention`` (Attention), ``window_partition`` / ``window_unpartition``, ``get_rel_pos``,
``add_decomposed_rel_pos`` and ``neck`` (the ``nn.Sequential`` neck), with ``MLPBlock`` and
``LayerNorm2d`` from ``modeling/common.py`` (:mod:`minisam.modeling.common`).

This is the path to read and step through: plain NumPy, one operation a line, no caches and
nothing updated in place. The default path is the fused one in
:mod:`minisam.kernels.image_encoder` (tested equal to this one); ``SamPredictor(sam,
fast=False)`` or ``MINISAM_READABLE=1`` runs this one. Numerics: ``docs/numerics.md``
section 3 (LayerNorm eps 1e-6) and section 4 (attention: q scaled before q k^T, the
rel-pos terms from the unscaled q, linear interpolation of the tables, padded window tokens
not masked). Shapes: ``docs/shapes.md``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from minisam.config import SamConfig
from minisam.errors import ImageError
from minisam.modeling.common import (ENCODER_LN_EPS, LAYER_NORM_2D_EPS, gelu, layer_norm, layer_norm_2d, linear,
                                     softmax)


def _record(trace, name, value):
    if trace is not None:
        trace[name] = value


# --------------------------------------------------------------------------- patches

def patch_embed(p, x, patch_size):  # [B, 3, S, S] -> [B, G, G, D]
    """``PatchEmbed``: a PxP conv with stride P, as a reshape and one matmul. Each patch is
    flattened in the conv weight's (channel, row, column) order; the output is channels-last,
    as the official ``permute(0, 2, 3, 1)`` leaves it."""
    B, _, S, _ = x.shape
    P = patch_size
    G = S // P
    w = p["proj"]["weight"]  # [D, 3, P, P]
    patches = x.reshape(B, 3, G, P, G, P).transpose(0, 2, 4, 1, 3, 5)  # [B, G, G, 3, P, P]
    patches = patches.reshape(B, G, G, 3 * P * P)  # [B, G, G, 3*P*P]
    return linear(patches, w.reshape(w.shape[0], -1), p["proj"]["bias"])  # [B, G, G, D]


# --------------------------------------------------------------------------- windows

def window_partition(x, window_size) -> Tuple[np.ndarray, Tuple[int, int]]:  # [B, G, G, D] -> [B*nW, w, w, D]
    """Zero-pad the grid to a multiple of w and cut it into windows (image_encoder.py L243-264).

    Returns the windows in (row, column) order and the padded size (Gp, Gp). The padding is
    zeros in the already-normalized tokens, and nothing masks it later.
    """
    B, H, W, D = x.shape
    w = window_size
    pad_h, pad_w = (w - H % w) % w, (w - W % w) % w
    x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))  # [B, Gp, Gp, D]
    Hp, Wp = H + pad_h, W + pad_w
    x = x.reshape(B, Hp // w, w, Wp // w, w, D).transpose(0, 1, 3, 2, 4, 5)  # [B, Gp/w, Gp/w, w, w, D]
    return np.ascontiguousarray(x).reshape(-1, w, w, D), (Hp, Wp)  # [B*nW, w, w, D]


def window_unpartition(windows, window_size, pad_hw, hw):  # [B*nW, w, w, D] -> [B, G, G, D]
    """Inverse of :func:`window_partition`, cropping the padding (image_encoder.py L267-289)."""
    Hp, Wp = pad_hw
    H, W = hw
    w = window_size
    B = windows.shape[0] // ((Hp // w) * (Wp // w))
    x = windows.reshape(B, Hp // w, Wp // w, w, w, -1).transpose(0, 1, 3, 2, 4, 5)  # [B, Gp/w, w, Gp/w, w, D]
    x = x.reshape(B, Hp, Wp, -1)[:, :H, :W, :]  # [B, G, G, D]
    return np.ascontiguousarray(x)  # [B, G, G, D]


# --------------------------------------------------------------------------- relative positions

def interpolate_linear(rel_pos, size):  # [L, hd] -> [size, hd]
    """``F.interpolate(mode="linear", align_corners=False)`` along axis 0, as PyTorch's CPU kernel
    computes it in float32 (docs/numerics.md section 1.2): src = scale * (i + 0.5) - 0.5 clamped
    at 0 with scale = L / size, then a blend of the two neighbours (the right one clamped at
    L - 1). The compiled kernel contracts both ``a * b + c`` into fused multiply-adds; a float64
    sum of float32 products is exact, so rounding it once gives the fused result."""
    L = rel_pos.shape[0]
    scale = np.float64(np.float32(L) / np.float32(size))  # ()
    half = np.arange(size, dtype=np.float32) + np.float32(0.5)  # [size]
    src = (scale * half.astype(np.float64) - 0.5).astype(np.float32)  # [size] fma(scale, i + 0.5, -0.5)
    src = np.maximum(src, np.float32(0.0))  # [size]
    i0 = src.astype(np.int64)  # [size] floor, src >= 0
    lam1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)  # [size]
    lam0 = np.float32(1.0) - lam1  # [size]
    i1 = np.minimum(i0 + 1, L - 1)  # [size]
    right = (rel_pos[i1] * lam1[:, None]).astype(np.float64)  # [size, hd] the float32 product
    blend = rel_pos[i0].astype(np.float64) * lam0[:, None] + right  # [size, hd] fma(t0, w0, t1 * w1)
    return blend.astype(np.float32)  # [size, hd]


def get_rel_pos(q_size, k_size, rel_pos):  # [L, hd] -> [q, k, hd]
    """Relative-position table for every (query, key) pair on one axis (image_encoder.py L292-322).

    R[i, j] = rel_pos[i - j + k_size - 1] when q_size == k_size; the table is first resized by
    linear interpolation if its length is not 2 * max(q, k) - 1.
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = interpolate_linear(rel_pos, max_rel_dist)  # [L, hd]
    # float32 coordinates and truncation, as the official torch arithmetic does
    q_coords = np.arange(q_size, dtype=np.float32)[:, None] * np.float32(max(k_size / q_size, 1.0))  # [q, 1]
    k_coords = np.arange(k_size, dtype=np.float32)[None, :] * np.float32(max(q_size / k_size, 1.0))  # [1, k]
    rel = (q_coords - k_coords) + np.float32((k_size - 1) * max(q_size / k_size, 1.0))  # [q, k]
    return np.ascontiguousarray(rel_pos[rel.astype(np.int64)], np.float32)  # [q, k, hd]


def add_decomposed_rel_pos(attn, q, rel_pos_h, rel_pos_w, q_size, k_size):  # [A, T, T] -> [A, T, T]
    """``add_decomposed_rel_pos`` (image_encoder.py L325-361): attention logits plus a term that
    depends on the query's row and the key's row, and one for the columns (MViTv2).

    q [A, T, hd] is the UNSCALED query. rel_h[a, (y, x), ky] = q[a, y, x] . Rh[y, ky] and
    rel_w[a, (y, x), kx] = q[a, y, x] . Rw[x, kx] are broadcast over the key grid (ky, kx).
    """
    qh, qw = q_size
    kh, kw = k_size
    Rh = get_rel_pos(qh, kh, rel_pos_h)  # [qh, kh, hd]
    Rw = get_rel_pos(qw, kw, rel_pos_w)  # [qw, kw, hd]
    A, _, hd = q.shape
    r_q = q.reshape(A, qh, qw, hd)  # [A, qh, qw, hd]
    rel_h = np.einsum("byxc,ykc->byxk", r_q, Rh, optimize=True)  # [A, qh, qw, kh]
    rel_w = np.einsum("byxc,xkc->byxk", r_q, Rw, optimize=True)  # [A, qh, qw, kw]
    attn = attn.reshape(A, qh, qw, kh, kw)  # [A, qh, qw, kh, kw]
    attn = attn + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]  # [A, qh, qw, kh, kw]
    return attn.reshape(A, qh * qw, kh * kw)  # [A, T, T]


# --------------------------------------------------------------------------- attention

def attention(p, x, num_heads, trace=None, name=""):  # [B', h, w, D] -> [B', h, w, D]
    """``Attention.forward``: multi-head self-attention with decomposed relative positions.

    B' is windows (B*nW) in a windowed block or images (B) in a global block; h = w = the window
    side or G. The scale hd^-0.5 multiplies q before q k^T; the rel-pos terms use the unscaled q.
    A global block at vit_b holds [nH, 4096, 4096] scores here (0.8 GB); the fast path never does.
    """
    Bp, h, w, D = x.shape
    T, hd = h * w, D // num_heads
    qkv = linear(x, **p["qkv"])  # [B', h, w, 3D]
    _record(trace, name + ".qkv", qkv)
    qkv = qkv.reshape(Bp, T, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)  # [3, B', nH, T, hd]
    q, k, v = qkv.reshape(3, Bp * num_heads, T, hd)  # [A, T, hd] each
    attn = (q * np.float32(hd ** -0.5)) @ k.transpose(0, 2, 1)  # [A, T, hd] @ [A, hd, T] -> [A, T, T]
    attn = add_decomposed_rel_pos(attn, q, p["rel_pos_h"], p["rel_pos_w"], (h, w), (h, w))  # [A, T, T]
    attn = softmax(attn)  # [A, T, T], rows sum to 1 over the keys
    out = attn @ v  # [A, T, T] @ [A, T, hd] -> [A, T, hd]
    out = out.reshape(Bp, num_heads, h, w, hd).transpose(0, 2, 3, 1, 4).reshape(Bp, h, w, D)  # [B', h, w, D]
    out = linear(out, **p["proj"])  # [B', h, w, D]
    _record(trace, name + ".proj", out)
    _record(trace, name, out)
    return out


# --------------------------------------------------------------------------- blocks

def block(p, x, num_heads, window_size, trace=None, name="", eps=ENCODER_LN_EPS):  # [B, G, G, D] -> [B, G, G, D]
    """``Block.forward`` (image_encoder.py L119-182): pre-norm attention (windowed, or global
    when window_size is 0) and an MLP, each with a residual connection."""
    B, G, _, D = x.shape
    shortcut = x  # [B, G, G, D]
    x = layer_norm(x, eps=eps, **p["norm1"])  # [B, G, G, D]
    _record(trace, name + ".norm1", x)
    if window_size > 0:
        windows, pad_hw = window_partition(x, window_size)  # [B*nW, w, w, D]
        windows = attention(p["attn"], windows, num_heads, trace, name + ".attn")  # [B*nW, w, w, D]
        x = window_unpartition(windows, window_size, pad_hw, (G, G))  # [B, G, G, D]
    else:
        x = attention(p["attn"], x, num_heads, trace, name + ".attn")  # [B, G, G, D]
    x = shortcut + x  # [B, G, G, D]
    x_norm2 = layer_norm(x, eps=eps, **p["norm2"])  # [B, G, G, D]
    _record(trace, name + ".norm2", x_norm2)
    hidden = linear(x_norm2, **p["mlp"]["lin1"])  # [B, G, G, F]
    _record(trace, name + ".mlp.lin1", hidden)
    act = gelu(hidden)  # [B, G, G, F]
    _record(trace, name + ".mlp.act", act)
    mlp_out = linear(act, **p["mlp"]["lin2"])  # [B, G, G, D]
    _record(trace, name + ".mlp.lin2", mlp_out)
    _record(trace, name + ".mlp", mlp_out)
    x = x + mlp_out  # [B, G, G, D]
    _record(trace, name, x)
    return x


def conv3x3(x, weight):  # [B, C, G, G], [C, C, 3, 3] -> [B, C, G, G]
    """``nn.Conv2d(C, C, 3, padding=1, bias=False)``: the sum over the nine shifted copies."""
    B, C, G, _ = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))  # [B, C, G+2, G+2]
    out = np.zeros((B, weight.shape[0], G, G), np.float32)  # [B, C, G, G]
    for ky in range(3):
        for kx in range(3):
            shifted = xp[:, :, ky:ky + G, kx:kx + G]  # [B, C, G, G]
            out += np.einsum("oc,bcyx->boyx", weight[:, :, ky, kx], shifted, optimize=True)  # [B, C, G, G]
    return out


def neck(p, x, trace=None, name="image_encoder.neck"):  # [B, G, G, D] -> [B, C, G, G]
    """The neck (image_encoder.py L88-104): 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d."""
    x = x.transpose(0, 3, 1, 2)  # [B, D, G, G] channels-first, as the official permute
    w0 = p[0]["weight"]  # [C, D, 1, 1]
    x = np.einsum("od,bdyx->boyx", w0[:, :, 0, 0], x, optimize=True)  # [B, C, G, G]
    _record(trace, name + ".0", x)
    x = layer_norm_2d(x, eps=LAYER_NORM_2D_EPS, **p[1])  # [B, C, G, G]
    _record(trace, name + ".1", x)
    x = conv3x3(x, p[2]["weight"])  # [B, C, G, G]
    _record(trace, name + ".2", x)
    x = layer_norm_2d(x, eps=LAYER_NORM_2D_EPS, **p[3])  # [B, C, G, G]
    _record(trace, name + ".3", x)
    _record(trace, name, x)
    return x


def image_encoder(p, cfg: SamConfig, x, trace: Optional[dict] = None, name: str = "image_encoder"):
    """``ImageEncoderViT.forward``: [B, 3, S, S] preprocessed float32 -> [B, C, G, G] embedding.

    ``p`` is ``params["image_encoder"]``. With a ``trace`` dict, records the outputs of the
    official modules under their full paths (``image_encoder.blocks.3.attn`` ...).
    """
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != cfg.img_size or x.shape[3] != cfg.img_size:
        raise ImageError(f"image_encoder expects float32 [B, 3, {cfg.img_size}, {cfg.img_size}], got {x.shape}")
    x = patch_embed(p["patch_embed"], x, cfg.patch_size)  # [B, G, G, D]
    _record(trace, name + ".patch_embed.proj", x.transpose(0, 3, 1, 2))
    _record(trace, name + ".patch_embed", x)
    x = x + p["pos_embed"]  # [B, G, G, D] absolute positions, [1, G, G, D] learned
    for i in range(cfg.encoder_depth):
        x = block(p["blocks"][i], x, cfg.encoder_num_heads, cfg.block_window_size(i), trace,
                  f"{name}.blocks.{i}", cfg.encoder_norm_eps)  # [B, G, G, D]
    x = neck(p["neck"], x, trace, name + ".neck")  # [B, C, G, G]
    _record(trace, name, x)
    return x
