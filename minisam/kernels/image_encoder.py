"""The image encoder, fast: the fused path that runs by default.

The same function as :func:`minisam.modeling.image_encoder.image_encoder` (the readable path,
which mirrors ``segment_anything/modeling/image_encoder.py`` line by line; read that one first),
computed with fewer passes over memory. Tested equal to it and to the official code
(``tests/test_image_encoder.py``). Numerics: ``docs/numerics.md`` sections 3 and 4.
Shapes: ``docs/shapes.md``.

What is fused here, and why:
- every linear layer is one float32 BLAS GEMM over all tokens; the row kernels of
  :mod:`minisam.kernels.layers` fuse the bias, GELU, residual add and LayerNorm around them
  (the qkv bias is added as q, k, v are cut into the attention calls, the proj bias in the
  residual add). The MLP's residual add is fused with the NEXT block's norm1 (``block`` takes
  ``next_norm1``) and the residual stream is updated in place: one pass over [B, G, G, D]
  instead of three;
- global attention is blocked and fused in the flash-attention manner
  (:mod:`minisam.kernels.attention`): per (head, block of query rows), the scores of one block
  of keys (one BLAS GEMM), the decomposed rel-pos add, an online softmax, and the value product
  (a second GEMM), each block at most ``_SCORE_BUDGET`` floats, L2-sized; the global blocks never
  hold [nH, G*G, G*G] (805 MB for vit_b);
- windowed attention (small calls, 196 tokens) runs either through the same blocked function,
  several whole calls per task as batched BLAS products (``_WINDOW_ATTENTION = "blas"``), or
  as one Numba task per (window, head) with the scores kept in cache
  (``kernels.layers.attention_rel_pos``, ``"numba"``); ``benchmarks/encoder.py --profile``
  times both;
- the rel-pos terms are batched BLAS GEMMs on strided views of q, split over minisam's threads
  (``kernels.layers.rel_pos_terms``);
- windows without window_partition: qkv and proj run on the G x G real tokens only, and one
  Numba pass (``split_heads``) pads with the qkv bias (a zero token's projection), cuts the
  windows and splits q/k/v and heads into the calls' layout; another (``merge_heads``) puts the
  heads back on the grid and crops. The official code projects the padded grid (4900 tokens at
  vit_b against 4096);
- the neck runs channels-last: the 3x3 conv as im2col and one GEMM;
- a block writes its activations into the arrays of the block before, one per role
  (``_buffer``), through the ``out=`` of the functions above: fresh arrays of 12.6-50 MB
  cost page faults at every block.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from minisam.config import SamConfig
from minisam.errors import ImageError
from minisam.kernels.attention import KEY_ROWS, SCORE_BUDGET, flash_attention_rel_pos
from minisam.kernels.jit import njit
from minisam.kernels.layers import add_layer_norm, attention_rel_pos, gelu, layer_norm, out_array
from minisam.kernels.layers import rel_pos_terms as rel_pos_dot_products
from minisam.kernels.threads import parallel_for
from minisam.modeling.common import ENCODER_LN_EPS, LAYER_NORM_2D_EPS
from minisam.modeling.image_encoder import get_rel_pos

_SCORE_BUDGET = SCORE_BUDGET   # scores per task block of the blocked attention (1 MiB): 256 query rows x
                               # 1024 keys of a global block, or several whole 196-token windows
_KEY_ROWS = KEY_ROWS           # key-grid rows per key block of the online softmax (16 x 64 = 1024 keys)
_SMALL_T = 1024                # attention calls up to this many tokens are "windowed": the 14x14 windows
                               # (196 tokens) are, the 64x64 global grid (4096) is not; any value from 196
                               # to 4095 gives the same split at every official size
_WINDOW_ATTENTION = "blas"     # windowed calls: "blas" (batched GEMMs, _chunked_attention) or "numba"
                               # (attention_rel_pos, one task per call)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _put(trace, name, value):
    """Store a copy in the trace (the arrays are updated in place later)."""
    if trace is not None:
        trace[name] = np.array(value, dtype=np.float32, copy=True)


def linear(x, weight, bias=None, out=None):
    """y = x W^T + b as one GEMM over all leading axes.  [..., in], [out, in], [out] -> [..., out]

    ``out``: a C-contiguous float32 array of the result's size to write into (see ``_buffer``)."""
    lead = x.shape[:-1]
    x2, w_t = _f32(x).reshape(-1, x.shape[-1]), _f32(weight).T             # [M, in], [in, out]
    if out is None:
        y = x2 @ w_t                                                       # [M, out]
    else:
        y = np.matmul(x2, w_t, out=out.reshape(x2.shape[0], w_t.shape[1]))  # [M, out]
    if bias is not None:
        y += bias
    return y.reshape(*lead, -1)                                            # [..., out]


def _buffer(buffers, role, shape):
    """A float32 array of ``shape`` for one role of a block's activations (the qkv, the attention's
    output, the MLP's hidden layer...), from ``buffers`` (one dict per forward), so that every
    block writes its activations into the memory of the block before.

    Why: glibc serves the larger results (12.6-50 MB each for vit_b) by a fresh mmap, or gives
    the top of its heap back to the system when they are freed, so that a forward that allocated
    them anew paid some 9000 page faults (sys time ~0.07 s of a 2.6 s vit_b forward on 2 cores)
    and wrote to memory straight from the kernel's zeroing. Kept from one forward to the next
    (``image_encoder``'s ``workspace``), they fault once. One flat array per role holds the
    largest shape asked of it (a windowed and a global block ask different ones) and is viewed
    to the shape asked for. The roles' lifetimes within a block do not overlap where one is
    written while another is read (see :func:`block`). ``buffers=None``: a new array.
    """
    if buffers is None:
        return np.empty(shape, np.float32)
    size = int(np.prod(shape))
    flat = buffers.get(role)
    if flat is None or flat.size < size:
        flat = buffers[role] = np.empty(size, np.float32)
    return flat[:size].reshape(shape)


# --------------------------------------------------------------------------- patches

def patch_embed(p, x, patch_size):
    """16x16 stride-16 conv as reshape + ONE GEMM over all patches.  [B, 3, S, S] -> [B, G, G, D]"""
    B, Cin, H, W = x.shape
    P = patch_size
    Gh, Gw = H // P, W // P
    w = p["proj"]["weight"]                                                # [D, 3, P, P]
    patches = x.reshape(B, Cin, Gh, P, Gw, P).transpose(0, 2, 4, 1, 3, 5)  # [B, G, G, 3, P, P]
    patches = patches.reshape(B * Gh * Gw, Cin * P * P)                    # [B*G*G, 3*P*P]
    y = linear(patches, w.reshape(w.shape[0], -1), p["proj"]["bias"])       # [B*G*G, D]
    return y.reshape(B, Gh, Gw, -1)                                        # [B, G, G, D]


def rel_pos_terms(q, rel_pos_h, rel_pos_w, hw, buffers=None):
    """The two decomposed rel-pos terms of ``add_decomposed_rel_pos`` (L325-361), from UNSCALED q.

    q [A, T, hd] with T = h*w (A = calls x heads) -> rel_h [A, T, h], rel_w [A, T, w]:
    rel_h[n, (y, x), k] = q[n, y, x] . Rh[y, k];  rel_w[n, (y, x), k] = q[n, y, x] . Rw[x, k].
    Batched GEMMs, one per (call, query row) and one per (call, query column), read and written
    through strided views (``kernels.layers.rel_pos_terms``). ``buffers``: see :func:`_buffer`.
    """
    h, w = hw
    N, T, hd = q.shape
    Rh = get_rel_pos(h, h, rel_pos_h)                                      # [h, h, hd]
    Rw = get_rel_pos(w, w, rel_pos_w)                                      # [w, w, hd]
    out = _buffer(buffers, "attn.rel_h", (N, h, w, h)), _buffer(buffers, "attn.rel_w", (N, h, w, w))
    rel_h, rel_w = rel_pos_dot_products(q.reshape(N, h, w, hd), Rh, Rw, out)    # [A, h, w, h], [A, h, w, w]
    return rel_h.reshape(N, T, h), rel_w.reshape(N, T, w)


# --------------------------------------------------------------------------- attention

def _windows(H, W, window_size):
    """(wh, ww, nWy, nWx): the attention call's side and the calls per image side. window_size 0 is a
    global block: one call over the whole H x W grid."""
    wh, ww = (window_size, window_size) if window_size > 0 else (H, W)
    return wh, ww, -(-H // wh), -(-W // ww)


def split_heads_numpy(xw, bias, num_heads, window_size):
    """NumPy twin of :func:`split_heads`: add the qkv bias, pad, cut into windows, split q/k/v and
    heads, as the official block does it (``window_partition``, then ``qkv(x).reshape(...).permute(...)``,
    image_encoder.py L172, L227-229), but from the product of the REAL tokens only: a pad token is
    zero after norm1, so its projection is the qkv bias (0 W^T + b), set here without a product.

    xw [B, G, G, 3D] = x W^T of the grid's tokens (the qkv projection without its bias), bias [3D]
    -> q, k, v [A, T, hd] each (A = B nW nH in (image, window row, window column, head) order;
    T = w w, or G G for window_size 0).
    """
    B, H, W, D3 = xw.shape
    hd = D3 // 3 // num_heads
    wh, ww, nWy, nWx = _windows(H, W, window_size)
    grid = np.empty((B, nWy * wh, nWx * ww, D3), np.float32)               # [B, Gp, Gp, 3D]
    grid[...] = bias                                                       # pad tokens: the bias
    grid[:, :H, :W] = xw + bias                                            # real tokens: x W^T + b
    win = grid.reshape(B, nWy, wh, nWx, ww, 3, num_heads, hd)              # [B, Gp/w, w, Gp/w, w, 3, nH, hd]
    win = win.transpose(5, 0, 1, 3, 6, 2, 4, 7)                            # [3, B, Gp/w, Gp/w, nH, w, w, hd]
    return tuple(np.ascontiguousarray(t).reshape(-1, wh * ww, hd) for t in win)  # [A, T, hd] x 3


@njit
def _split_heads_kernel(lo, hi, xw, bias, wh, ww, out):  # tasks (call, row) [lo, hi); [B,G,G,3,nH,hd], [3,nH,hd], [3,A,w,w,hd]
    B, H, W, _, nH, hd = xw.shape
    nWy, nWx = -(-H // wh), -(-W // ww)
    for task in range(lo, hi):
        a, y = task // wh, task % wh            # call a = ((b nWy + Y) nWx + X) nH + head, its row y
        h = a % nH
        X = (a // nH) % nWx
        Y = (a // (nH * nWx)) % nWy
        b = a // (nH * nWx * nWy)
        r = Y * wh + y
        for x in range(ww):
            c = X * ww + x
            for t in range(3):
                dst = out[t, a, y, x]
                bt = bias[t, h]
                if r < H and c < W:
                    src = xw[b, r, c, t, h]
                    for d in range(hd):
                        dst[d] = src[d] + bt[d]
                else:                                # a pad token: its projection is the bias
                    for d in range(hd):
                        dst[d] = bt[d]


def split_heads(xw, bias, num_heads, window_size, out=None):
    """q, k, v of every attention call, in one pass over the projection, its bias added on the way
    (one pass less than a GEMM with the bias): see :func:`split_heads_numpy` (its NumPy twin, tested
    equal). One Numba task per (call, row of the call), split over minisam's threads: NumPy's
    transposed copies run on one thread.

    xw [B, G, G, 3D] = x W^T, bias [3D] -> [3, A, T, hd] (q, k, v); ``out``: a C-contiguous float32
    array of that shape to write into.
    """
    B, H, W, D3 = xw.shape
    hd = D3 // 3 // num_heads
    wh, ww, nWy, nWx = _windows(H, W, window_size)
    A = B * nWy * nWx * num_heads
    if out is None:
        out = np.empty((3, A, wh * ww, hd), np.float32)                    # [3, A, T, hd]
    parallel_for(_split_heads_kernel, A * wh, _f32(xw).reshape(B, H, W, 3, num_heads, hd),
                 _f32(bias).reshape(3, num_heads, hd), wh, ww, out.reshape(3, A, wh, ww, hd))
    return out


def merge_heads_numpy(o, num_heads, grid_hw, window_size):
    """NumPy twin of :func:`merge_heads`: heads back to channels, windows back on the grid, the
    padding cropped (the official ``transpose(1, 2).reshape`` of the heads and ``window_unpartition``,
    image_encoder.py L237, L267-289), before the output projection.

    o [A, T, hd] (the calls of :func:`split_heads`) -> [B, G, G, D].
    """
    H, W = grid_hw
    A, _, hd = o.shape
    wh, ww, nWy, nWx = _windows(H, W, window_size)
    B = A // (nWy * nWx * num_heads)
    grid = o.reshape(B, nWy, nWx, num_heads, wh, ww, hd).transpose(0, 1, 4, 2, 5, 3, 6)  # [B, Gp/w, w, Gp/w, w, nH, hd]
    grid = grid.reshape(B, nWy * wh, nWx * ww, num_heads * hd)             # [B, Gp, Gp, D]
    return np.ascontiguousarray(grid[:, :H, :W])                           # [B, G, G, D]


@njit
def _merge_heads_kernel(lo, hi, o, wh, ww, out):  # tasks (image, grid row) [lo, hi); [A,w,w,hd], [B,G,G,nH,hd]
    B, H, W, nH, hd = out.shape
    nWy, nWx = -(-H // wh), -(-W // ww)
    for task in range(lo, hi):
        b, r = task // H, task % H
        Y, y = r // wh, r % wh
        for c in range(W):
            X, x = c // ww, c % ww
            a0 = ((b * nWy + Y) * nWx + X) * nH
            for h in range(nH):
                src = o[a0 + h, y, x]
                dst = out[b, r, c, h]
                for d in range(hd):
                    dst[d] = src[d]


def merge_heads(o, num_heads, grid_hw, window_size, out=None):
    """The attention calls' outputs back on the grid, in one pass: see :func:`merge_heads_numpy` (its
    NumPy twin, tested equal); one Numba task per grid row, split over minisam's threads. The pad
    tokens' outputs are dropped here, before the output projection: the official code projects
    them and crops after, and a row's projection does not depend on other rows.

    o [A, T, hd] -> [B, G, G, D]; ``out``: an array of that shape to write into.
    """
    H, W = grid_hw
    A, _, hd = o.shape
    wh, ww, nWy, nWx = _windows(H, W, window_size)
    B = A // (nWy * nWx * num_heads)
    out = out_array(out, (B, H, W, num_heads * hd), "merge_heads", o)      # [B, G, G, D]
    parallel_for(_merge_heads_kernel, B * H, _f32(o).reshape(A, wh, ww, hd), wh, ww,
                 out.reshape(B, H, W, num_heads, hd))
    return out


def attention(p, x, num_heads, window_size, trace=None, name="", buffers=None):
    """Multi-head self-attention with decomposed relative positions (image_encoder.py L185-240), in
    w x w windows of the zero-padded grid (L169-177) or, with window_size 0, over the whole grid.

    x [B, G, G, D] = norm1 of the residual stream -> [B, G, G, D], the attention's output on the
    grid (windows unpartitioned, padding cropped) LESS the proj bias, which the caller adds in its
    residual add (``add_layer_norm``'s ``delta_bias``: one pass less). The projections run on the
    G x G real tokens only: a pad token's qkv is the bias (its input is zero), and its output is
    cropped, so neither needs a product (the official code runs both on the padded grid: 20% more
    tokens at vit_b's 64 -> 70). The scale multiplies q before q k^T; the rel-pos terms use the unscaled q.
    With a ``trace``, the official modules' outputs are recorded as they give them: qkv and proj
    per window, pad tokens included (that proj runs on the pad tokens for the record only).
    """
    B, H, W, D = x.shape
    hd = D // num_heads
    wh, ww, nWy, nWx = _windows(H, W, window_size)
    A, T = B * nWy * nWx * num_heads, wh * ww
    xw = linear(x, p["qkv"]["weight"], None, _buffer(buffers, "qkv", (B, H, W, 3 * D)))  # [B, G, G, 3D] real tokens, no bias yet
    heads = split_heads(xw, p["qkv"]["bias"], num_heads, window_size,
                        _buffer(buffers, "qkv.heads", (3, A, T, hd)))      # [3, A, T, hd]
    q, k, v = heads                                                        # [A, T, hd] x 3, contiguous
    if trace is not None:
        qkv_windows = heads.reshape(3, A // num_heads, num_heads, wh, ww, hd).transpose(1, 3, 4, 0, 2, 5)  # [B*nW, w, w, 3, nH, hd]
        _put(trace, name + ".qkv", qkv_windows.reshape(-1, wh, ww, 3 * D))  # [B*nW, w, w, 3D]
    rel_h, rel_w = rel_pos_terms(q, p["rel_pos_h"], p["rel_pos_w"], (wh, ww), buffers)  # [A, T, kh], [A, T, kw]
    q *= np.float32(hd ** -0.5)                                            # [A, T, hd] scaled after rel-pos
    if T <= _SMALL_T and _WINDOW_ATTENTION == "numba":
        out = attention_rel_pos(q, k, v, rel_h, rel_w)                     # [A, T, hd] one task per call
    else:
        out = _chunked_attention(q, k, v, rel_h, rel_w, (wh, ww),
                                 _buffer(buffers, "attn.out", (A, T, hd)))  # [A, T, hd]
    merged = merge_heads(out, num_heads, (H, W), window_size,
                         _buffer(buffers, "attn.merged", (B, H, W, D)))    # [B, G, G, D]
    y = linear(merged, p["proj"]["weight"], None, _buffer(buffers, "delta", (B, H, W, D)))  # [B, G, G, D] no bias yet
    if trace is not None:
        per_call = out.reshape(A // num_heads, num_heads, wh, ww, hd).transpose(0, 2, 3, 1, 4)  # [B*nW, w, w, nH, hd]
        proj = linear(per_call.reshape(-1, wh, ww, D), p["proj"]["weight"], p["proj"]["bias"])  # [B*nW, w, w, D]
        _put(trace, name + ".proj", proj)
        _put(trace, name, proj)
    return y


def _chunked_attention(q, k, v, rel_h, rel_w, hw, out=None):
    """softmax(q k^T + rel-pos) v, blocked and fused (``kernels.attention.flash_attention_rel_pos``),
    never holding more than _SCORE_BUDGET scores per thread; key blocks of _KEY_ROWS grid rows.

    q [A, T, hd] scaled, k, v [A, T, hd], rel_h [A, T, h], rel_w [A, T, w] -> [A, T, hd]
    (into ``out`` if given).
    """
    h, w = hw
    if rel_h.shape[-1] != h or rel_w.shape[-1] != w:
        raise ValueError(f"rel_h {rel_h.shape} / rel_w {rel_w.shape} do not match the {h}x{w} key grid")
    return flash_attention_rel_pos(q, k, v, rel_h, rel_w, _KEY_ROWS, _SCORE_BUDGET, out)   # [A, T, hd]


# --------------------------------------------------------------------------- blocks

def block(p, x, x_norm1, num_heads, window_size, next_norm1=None, trace=None, name="", eps=ENCODER_LN_EPS,
          buffers=None):
    """One transformer block (image_encoder.py L119-182), updating the residual stream in place.

    x [B, G, G, D] residual stream (modified in place), x_norm1 = norm1(x) [B, G, G, D].
    Returns (x, norm1 of the next block applied to the new x, or None if ``next_norm1`` is None):
    the MLP's residual add is fused with the next block's LayerNorm.

    With ``buffers`` (:func:`_buffer`) two roles serve twice a block, each written only once its
    last value has been read: "delta", the residual branch's output (the attention's proj, read
    by the add + norm2, then the MLP's lin2), and "norm", the LayerNorm of the residual stream
    (norm2, read by lin1, then the next block's norm1, read by its qkv).
    """
    B, H, W, D = x.shape
    _put(trace, name + ".norm1", x_norm1)
    a = attention(p["attn"], x_norm1, num_heads, window_size, trace, name + ".attn", buffers)  # [B, G, G, D] no bias yet
    x_norm2 = add_layer_norm(x, a, p["norm2"]["weight"], p["norm2"]["bias"], eps, delta_bias=p["attn"]["proj"]["bias"],
                             out=_buffer(buffers, "norm", (B, H, W, D)))   # x += a + b; [B, G, G, D]
    _put(trace, name + ".norm2", x_norm2)
    mlp = p["mlp"]
    hidden = linear(x_norm2, mlp["lin1"]["weight"], None,
                    _buffer(buffers, "mlp.hidden", (B, H, W, mlp["lin1"]["weight"].shape[0])))  # [B, G, G, 4D] no bias yet
    if trace is not None:
        _put(trace, name + ".mlp.lin1", hidden + mlp["lin1"]["bias"])
    gelu(hidden, mlp["lin1"]["bias"], out=hidden)                          # [B, G, G, 4D] in place
    _put(trace, name + ".mlp.act", hidden)
    y = linear(hidden, mlp["lin2"]["weight"], None, _buffer(buffers, "delta", (B, H, W, D)))  # [B, G, G, D] no bias yet
    del hidden
    if trace is not None:
        _put(trace, name + ".mlp.lin2", y + mlp["lin2"]["bias"])
        _put(trace, name + ".mlp", y + mlp["lin2"]["bias"])
    if next_norm1 is None:
        x += y + mlp["lin2"]["bias"]                                       # [B, G, G, D]
        x_next = None
    else:
        x_next = add_layer_norm(x, y, next_norm1["weight"], next_norm1["bias"], eps, delta_bias=mlp["lin2"]["bias"],
                                out=_buffer(buffers, "norm", (B, H, W, D)))  # x += y + b; LN
    _put(trace, name, x)
    return x, x_next


def conv3x3(x, weight, buffers=None):
    """3x3 conv, padding 1, no bias, channels-last, as im2col + one GEMM.  [B, H, W, C], [O, C, 3, 3] -> [B, H, W, O]

    ``buffers``: see :func:`_buffer` (the im2col columns are 37.7 MB for vit_b)."""
    B, H, W, C = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))                       # [B, H+2, W+2, C]
    cols = _buffer(buffers, "neck.cols", (B, H, W, 3, 3, C))               # [B, H, W, ky, kx, C]
    for ky in range(3):
        for kx in range(3):
            cols[:, :, :, ky, kx] = xp[:, ky:ky + H, kx:kx + W]
    w = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], 9 * C)       # [O, ky*kx*C]
    return linear(cols.reshape(B, H, W, 9 * C), w)                        # [B, H, W, O]


def neck(p, x, trace=None, name="image_encoder.neck", buffers=None):
    """1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (image_encoder.py L88-104), all channels-last.

    [B, G, G, D] -> [B, C, G, G]. A LayerNorm2d over channels is a LayerNorm over the last
    axis of the channels-last tensor. ``buffers``: see :func:`_buffer`.
    """
    def nchw(t):
        return t.transpose(0, 3, 1, 2)

    w0 = p[0]["weight"]                                                    # [C, D, 1, 1]
    y = linear(x, w0.reshape(w0.shape[0], -1))                             # [B, G, G, C]
    _put(trace, name + ".0", nchw(y))
    y = layer_norm(y, p[1]["weight"], p[1]["bias"], LAYER_NORM_2D_EPS)                  # [B, G, G, C]
    _put(trace, name + ".1", nchw(y))
    y = conv3x3(y, p[2]["weight"], buffers)                                # [B, G, G, C]
    _put(trace, name + ".2", nchw(y))
    y = layer_norm(y, p[3]["weight"], p[3]["bias"], LAYER_NORM_2D_EPS)                  # [B, G, G, C]
    out = np.ascontiguousarray(nchw(y))                                    # [B, C, G, G]
    _put(trace, name + ".3", out)
    _put(trace, name, out)  # the Sequential's own output, as its forward hook records it
    return out


def image_encoder(p, cfg: SamConfig, x, trace: Optional[dict] = None, workspace: Optional[dict] = None) -> np.ndarray:
    """ImageEncoderViT.forward: [B, 3, S, S] preprocessed float32 -> [B, C, S/16, S/16] embedding.

    ``p`` is ``params["image_encoder"]``. With a ``trace`` dict, records the outputs of the
    official modules under their full paths (``image_encoder.blocks.3.attn`` ...).
    ``workspace``: a dict the caller keeps from one forward to the next, which holds the blocks'
    activation arrays (:func:`_buffer`, ~250 MB for vit_b) between them; one caller at a time.
    Without it they are allocated anew each forward, and their pages come fresh from the
    system, which on a virtual machine may have taken back the guest's idle free memory: on the
    ~470 GFLOP/s AVX-512 host of ``benchmarks/RESULTS.md`` (2026-12-07), a vit_b forward after a
    few idle seconds took 2.80-2.89 s, sys time 0.38-0.50 s (the zeroing of those pages), against
    2.57 s and 0.02 s with a kept workspace. ``SamPredictor`` keeps one
    per model and thread (``sam.image_encoder``).
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
    eps = cfg.encoder_norm_eps
    x_norm1 = layer_norm(tokens, blocks[0]["norm1"]["weight"], blocks[0]["norm1"]["bias"], eps)
    buffers = {} if workspace is None else workspace                       # reused from block to block
    for i in range(depth):
        next_norm1 = blocks[i + 1]["norm1"] if i + 1 < depth else None
        tokens, x_norm1 = block(blocks[i], tokens, x_norm1, cfg.encoder_num_heads,
                                cfg.block_window_size(i), next_norm1, trace, f"{e}.blocks.{i}", eps, buffers)
    out = neck(p["neck"], tokens, trace, e + ".neck", buffers)             # [B, C, G, G]
    _put(trace, e, out)
    return out
