"""Forward and backward of SAM's image encoder: patch embedding, ViT blocks with windowed and
global attention and decomposed relative positions, and the neck.

Paper: Kirillov et al. 2023, section 3 ("Image encoder") and appendix A: an MAE-pretrained ViT
adapted as in ViTDet (Li et al. 2022), with windowed attention, a few global blocks, decomposed
relative positions (MViTv2, Li et al. 2022) and a neck of 1x1 conv, LayerNorm2d, 3x3 conv,
LayerNorm2d. Mirrors ``segment_anything/modeling/image_encoder.py`` (``ImageEncoderViT``,
``PatchEmbed``, ``Block``, ``Attention``, ``window_partition``, ``window_unpartition``,
``get_rel_pos``, ``add_decomposed_rel_pos``) and ``MLPBlock`` / ``LayerNorm2d`` of
``modeling/common.py``, whose forward :mod:`minisam.modeling.image_encoder` writes out step by
step. The forwards here are the same arithmetic in the dtype of their inputs (float64 for the
exact checks of ``tests/test_backward_image_encoder.py``, float32 for training), keeping what the
backward needs; every ``*_backward`` sits beside its forward.

What is saved, and what is recomputed in the backward
-----------------------------------------------------
Per block the forward keeps: the two LayerNorms' normalised inputs and 1/std (``xhat`` [B, G, G, D]
and [B, G, G, 1]), the qkv projection's input (norm1's output, cut into windows with its padding),
q, k and v ([A, T, hd] each), the merged attention output (proj's input), the softmax's row
maximum and row sum ([A, T] each), the MLP's input (norm2's output) and its hidden layer before
the GELU ([B, G, G, F]). Recomputed in the backward, where it saves a lot:

- the attention probabilities P [A, T, T]: rebuilt from q, k, the rel-pos tables and the saved
  row max and row sum, one chunk of (calls, query rows) at a time (:data:`SCORE_BUDGET` scores
  at most), which gives back bit for bit the P of the forward. Saving P would cost nH * T * T
  per attention call: 805 MB per global block of vit_b (12 heads x 4096 x 4096 float32), 46 MB
  per windowed block; the chunks also keep the global blocks' forward from ever holding all
  scores at once, as the fast inference path does (:mod:`minisam.kernels.image_encoder`);
- the GELU's Phi(x) and its output (lin2's input): recomputed from the saved hidden layer,
  which saves two [B, G, G, F] tensors per block (100 MB per block at vit_b);
- the neck's 3x3-conv columns (the 3x3 neighbourhoods, 9 x its input): rebuilt from the input.

Memory, measured with :func:`saved_bytes` on the cache of :func:`image_encoder_forward`
(float32; ``benchmarks/encoder_backward_memory.py`` measures it and the peak of a whole
forward and backward with tracemalloc, ``--sizes vit_b`` at vit_b): at micro
(:data:`minisam.config.MICRO`, 4 images of 128 x 128) 58 MB saved (9.2 MB a block), a peak of
88 MB over forward and backward (66 MB for the forward alone).

Kept instead of recomputed, P would add 3.6 GB at vit_b (4 global blocks x 805 MB, 8 windowed
x 46 MB) and the GELU's two tensors 1.2 GB (12 x 100 MB).

Every backward can fill ``grad_trace``, the gradient of each official module's output keyed by
its module path (``image_encoder.blocks.3.attn.qkv``), as :mod:`minisam.backward.transformer`
does; a windowed block's ``attn`` entries are per window, as the official ``Attention`` sees them.

Shapes (``docs/shapes.md``): B images, S input side, P patch side, G grid side, D width, F MLP
width, nH heads, hd head width, w window side, Gp padded grid side, nW windows per image,
A attention calls x heads, T tokens of one call (qh * qw = kh * kw), L a rel-pos table's length,
C the neck's output channels.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from minisam.backward.common import (_interpolation_matrix, gelu_backward, gelu_forward, layer_norm_backward,
                                     layer_norm_forward, linear_backward, linear_forward)
from minisam.modeling.common import ENCODER_LN_EPS, LAYER_NORM_2D_EPS
from minisam.modeling.image_encoder import window_partition, window_unpartition

#: The most attention scores (floats) one chunk holds in the forward and the backward: 32 MB in
#: float32, 2048 query rows of a 4096-key global call of vit_b. Small calls (micro's windows and
#: its 256-token global blocks, vit_b's 196-token windows) take many calls per chunk.
SCORE_BUDGET = 1 << 23


def _record(grad_trace, name, value):
    if grad_trace is not None:
        grad_trace[name] = value


def saved_bytes(cache) -> int:
    """Bytes of the distinct arrays a forward's cache holds (views counted once, by their base)."""
    seen = {}

    def walk(obj):
        if isinstance(obj, np.ndarray):
            base = obj if obj.base is None else obj.base
            if isinstance(base, np.ndarray):
                seen[id(base)] = base.nbytes
            else:
                seen[id(obj)] = obj.nbytes
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)
    walk(cache)
    return int(sum(seen.values()))


# --------------------------------------------------------------------------- PatchEmbed

def patch_embed_forward(p, x, patch_size: int):  # [B, 3, S, S] -> [B, G, G, D], cache
    """``PatchEmbed``: a PxP conv with stride P is one matmul over the flattened patches (each in
    the conv weight's (channel, row, column) order), channels-last as the official permute leaves it."""
    B, Cin, S, _ = x.shape
    P = patch_size
    G = S // P
    w = p["proj"]["weight"]  # [D, 3, P, P]
    patches = x.reshape(B, Cin, G, P, G, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, G, G, Cin * P * P)  # [B, G, G, 3PP]
    y, c = linear_forward(patches, w.reshape(w.shape[0], -1), p["proj"]["bias"])  # [B, G, G, D]
    return y, (c, x.shape, w.shape)


def patch_embed_backward(dy, cache):  # [B, G, G, D] -> dx [B, 3, S, S], {"proj": {"weight", "bias"}}
    """The matmul's backward; dW comes back in the conv's [D, 3, P, P] layout and the patch
    gradients are put back in their places in the image (patches do not overlap)."""
    c, (B, Cin, S, _), wshape = cache
    P = wshape[-1]
    G = S // P
    dpatches, g = linear_backward(dy, c)  # [B, G, G, 3PP]
    dx = dpatches.reshape(B, G, G, Cin, P, P).transpose(0, 3, 1, 4, 2, 5).reshape(B, Cin, S, S)  # [B, 3, S, S]
    return dx, {"proj": {"weight": g["weight"].reshape(wshape), "bias": g["bias"]}}


# --------------------------------------------------------------------------- windows

def window_partition_backward(dwindows, window_size: int, pad_hw, hw):  # [B*nW, w, w, D] -> [B, G, G, D]
    """window_partition pads with zeros and cuts windows; its transpose puts the windows back and
    drops the gradients of the padding (constants): that is :func:`window_unpartition`."""
    return window_unpartition(dwindows, window_size, pad_hw, hw)  # [B, G, G, D]


def window_unpartition_backward(dx, window_size: int):  # [B, G, G, D] -> [B*nW, w, w, D]
    """window_unpartition crops the padding and reassembles the grid; its transpose zero-pads
    (the cropped tokens reached nothing, so their gradient is 0) and cuts windows: that is
    :func:`window_partition`."""
    return window_partition(dx, window_size)[0]  # [B*nW, w, w, D]


# --------------------------------------------------------------------------- relative positions

def get_rel_pos_forward(q_size: int, k_size: int, rel_pos):  # [L, hd] -> [q, k, hd], cache
    """``get_rel_pos``: R[i, j] = table[i - j + k_size - 1] (in general the official float
    coordinates, truncated), after resizing the table to 2 * max(q, k) - 1 rows by linear
    interpolation (``F.interpolate(mode="linear")``, align_corners False) when its length differs.
    The resize is linear in the table: resized = M table, M [L', L] (the rows of PyTorch's
    resampling, :func:`minisam.backward.common._interpolation_matrix`)."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    resize = None
    if rel_pos.shape[0] != max_rel_dist:
        resize = _interpolation_matrix(rel_pos.shape[0], max_rel_dist, rel_pos.dtype)  # [L', L]
        rel_pos = resize @ rel_pos  # [L', L] @ [L, hd] -> [L', hd]
    q_coords = np.arange(q_size, dtype=np.float32)[:, None] * np.float32(max(k_size / q_size, 1.0))  # [q, 1]
    k_coords = np.arange(k_size, dtype=np.float32)[None, :] * np.float32(max(q_size / k_size, 1.0))  # [1, k]
    index = ((q_coords - k_coords) + np.float32((k_size - 1) * max(q_size / k_size, 1.0))).astype(np.int64)  # [q, k]
    return rel_pos[index], (index, resize, rel_pos.shape)  # [q, k, hd]


def get_rel_pos_backward(dR, cache):  # [q, k, hd] -> [L, hd]
    """A gather's transpose is a scatter-add: table row i - j + k - 1 collects the gradient of
    every (i, j) that read it (one diagonal of R). Through the resize, d table = M^T d resized:
    each original row gets the gradient of the resized rows it was blended into, with its weight."""
    index, resize, shape = cache
    dtable = np.zeros(shape, dR.dtype)  # [L', hd]
    np.add.at(dtable, index.ravel(), dR.reshape(-1, shape[1]))  # [q*k, hd] into [L', hd]
    return dtable if resize is None else resize.T @ dtable  # [L, L'] @ [L', hd] -> [L, hd]


def _chunks(calls: int, tokens: int):
    """(calls slice, query-rows slice) pieces of an [A, T, T] score tensor, each at most
    :data:`SCORE_BUDGET` scores: whole calls while one fits, else rows of one call."""
    if tokens * tokens <= SCORE_BUDGET:
        step = max(1, SCORE_BUDGET // (tokens * tokens))
        for a0 in range(0, calls, step):
            yield slice(a0, min(calls, a0 + step)), slice(0, tokens)
    else:
        rows = max(1, SCORE_BUDGET // tokens)
        for a in range(calls):
            for r0 in range(0, tokens, rows):
                yield slice(a, a + 1), slice(r0, min(tokens, r0 + rows))


def _scores(q, k, Rh, Rw, rows: slice, hw, scale):  # [a, T, hd] x2, [qh, kh, hd], [qw, kw, hd] -> [a, r, T]
    """The attention logits of query rows ``rows``: s q k^T plus the decomposed rel-pos terms
    (``add_decomposed_rel_pos``, image_encoder.py L325-361) from the UNSCALED q. Query t sits
    at grid row y = t // qw and column x = t % qw:
    rel_h[t, ky] = q[t] . Rh[y, ky] is added to every key of row ky, rel_w[t, kx] = q[t] . Rw[x, kx]
    to every key of column kx."""
    qh, qw = hw
    kh, kw = Rh.shape[1], Rw.shape[1]
    ys, xs = np.divmod(np.arange(qh * qw)[rows], qw)  # [r], [r]
    qr = q[:, rows]  # [a, r, hd]
    s = (qr * scale) @ k.transpose(0, 2, 1)  # [a, r, hd] @ [a, hd, T] -> [a, r, T]
    rel_h = np.einsum("arc,rkc->ark", qr, Rh[ys])  # [a, r, kh]
    rel_w = np.einsum("arc,rkc->ark", qr, Rw[xs])  # [a, r, kw]
    s = s.reshape(*s.shape[:2], kh, kw) + rel_h[..., :, None] + rel_w[..., None, :]  # [a, r, kh, kw]
    return s.reshape(s.shape[0], s.shape[1], kh * kw)  # [a, r, T]


# --------------------------------------------------------------------------- Attention

def attention_forward(p, x, num_heads: int):  # [B', h, w, D] -> [B', h, w, D], cache
    """``Attention.forward``: qkv projection, softmax(s q k^T + rel-pos) v per head, proj.

    B' is windows (B * nW) in a windowed block, images in a global block. The softmax is taken
    chunk by chunk (:func:`_chunks`); each chunk's row max m and row sum z of exp(S - m) are kept
    so the backward can rebuild P = exp(S - m) / z exactly.
    """
    Bp, h, w, D = x.shape
    T, hd = h * w, D // num_heads
    A = Bp * num_heads
    qkv, c_qkv = linear_forward(x, **p["qkv"])  # [B', h, w, 3D]
    qkv = qkv.reshape(Bp, T, 3, num_heads, hd).transpose(2, 0, 3, 1, 4).reshape(3, A, T, hd)  # [3, A, T, hd]
    q, k, v = (np.ascontiguousarray(t) for t in qkv)  # [A, T, hd] each
    Rh, c_h = get_rel_pos_forward(h, h, p["rel_pos_h"])  # [h, h, hd]
    Rw, c_w = get_rel_pos_forward(w, w, p["rel_pos_w"])  # [w, w, hd]
    scale = q.dtype.type(hd ** -0.5)
    heads = np.empty_like(q)  # [A, T, hd]
    row_max = np.empty((A, T), q.dtype)  # [A, T]
    row_sum = np.empty((A, T), q.dtype)  # [A, T]
    for calls, rows in _chunks(A, T):
        s = _scores(q[calls], k[calls], Rh, Rw, rows, (h, w), scale)  # [a, r, T]
        m = s.max(-1, keepdims=True)  # [a, r, 1]
        e = np.exp(s - m)  # [a, r, T]
        z = e.sum(-1, keepdims=True)  # [a, r, 1]
        heads[calls, rows] = (e / z) @ v[calls]  # [a, r, T] @ [a, T, hd] -> [a, r, hd]
        row_max[calls, rows], row_sum[calls, rows] = m[..., 0], z[..., 0]
    merged = heads.reshape(Bp, num_heads, h, w, hd).transpose(0, 2, 3, 1, 4).reshape(Bp, h, w, D)  # [B', h, w, D]
    out, c_proj = linear_forward(merged, **p["proj"])  # [B', h, w, D]
    cache = (c_qkv, c_proj, q, k, v, row_max, row_sum, Rh, Rw, c_h, c_w, scale, num_heads)
    return out, cache


def attention_backward(dout, cache, grad_trace=None, name: str = ""):  # [B', h, w, D] -> dx, grads
    """Backward of ``Attention``. Per call and head, with S = s q k^T + relh + relw, P = softmax(S),
    O = P v (s = hd^-1/2):

    - dv = P^T dO and dP = dO v^T;
    - dS = P * (dP - delta), delta_t = sum_j P_tj dP_tj = dO_t . O_t (the softmax's backward;
      delta from the saved output O, so P is needed only chunk by chunk);
    - dq = s dS k and dk = s dS^T q from the scaled product;
    - the rel-pos terms: relh[t, ky] was added to the keys of row ky, so d relh[t, ky] = sum over
      kx of dS[t, (ky, kx)], and d relw[t, kx] the sum over ky. relh[t, ky] = q_t . Rh[y_t, ky]
      gives dq_t += sum_ky d relh[t, ky] Rh[y_t, ky] and dRh[y, ky] += sum over the queries of
      row y (all calls, heads and columns) of d relh[t, ky] q_t; likewise Rw by column;
    - dRh and dRw go back through ``get_rel_pos`` (:func:`get_rel_pos_backward`) into
      ``rel_pos_h`` and ``rel_pos_w``, which every window and head shares.

    Returns dx [B', h, w, D] and {"qkv", "proj", "rel_pos_h", "rel_pos_w"}.
    """
    c_qkv, c_proj, q, k, v, row_max, row_sum, Rh, Rw, c_h, c_w, scale, num_heads = cache
    _record(grad_trace, name, dout)
    _record(grad_trace, name + ".proj", dout)
    dmerged, g_proj = linear_backward(dout, c_proj)  # [B', h, w, D]
    Bp, h, w, D = dmerged.shape
    A, T, hd = q.shape
    kh, kw = Rh.shape[1], Rw.shape[1]
    dheads = dmerged.reshape(Bp, h, w, num_heads, hd).transpose(0, 3, 1, 2, 4).reshape(A, T, hd)  # [A, T, hd]
    heads = c_proj[0].reshape(Bp, h, w, num_heads, hd).transpose(0, 3, 1, 2, 4).reshape(A, T, hd)  # [A, T, hd] O
    delta = (dheads * heads).sum(-1)  # [A, T]
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)  # [A, T, hd] each
    dRh, dRw = np.zeros_like(Rh), np.zeros_like(Rw)  # [h, kh, hd], [w, kw, hd]
    for calls, rows in _chunks(A, T):
        s = _scores(q[calls], k[calls], Rh, Rw, rows, (h, w), scale)  # [a, r, T]
        P = np.exp(s - row_max[calls, rows, None]) / row_sum[calls, rows, None]  # [a, r, T] the forward's P
        dO = dheads[calls, rows]  # [a, r, hd]
        dv[calls] += P.transpose(0, 2, 1) @ dO  # [a, T, r] @ [a, r, hd] -> [a, T, hd]
        dP = dO @ v[calls].transpose(0, 2, 1)  # [a, r, hd] @ [a, hd, T] -> [a, r, T]
        dS = P * (dP - delta[calls, rows, None])  # [a, r, T]
        qr = q[calls, rows]  # [a, r, hd]
        dk[calls] += scale * (dS.transpose(0, 2, 1) @ qr)  # [a, T, r] @ [a, r, hd] -> [a, T, hd]
        dS4 = dS.reshape(*dS.shape[:2], kh, kw)  # [a, r, kh, kw]
        drel_h = dS4.sum(3)  # [a, r, kh]
        drel_w = dS4.sum(2)  # [a, r, kw]
        ys, xs = np.divmod(np.arange(T)[rows], w)  # [r], [r]
        dq[calls, rows] = (scale * (dS @ k[calls])  # [a, r, T] @ [a, T, hd] -> [a, r, hd]
                           + np.einsum("ark,rkc->arc", drel_h, Rh[ys])  # [a, r, hd]
                           + np.einsum("ark,rkc->arc", drel_w, Rw[xs]))  # [a, r, hd]
        np.add.at(dRh, ys, np.einsum("ark,arc->rkc", drel_h, qr))  # [r, kh, hd] into rows y of [h, kh, hd]
        np.add.at(dRw, xs, np.einsum("ark,arc->rkc", drel_w, qr))  # [r, kw, hd] into columns x of [w, kw, hd]
    dqkv = np.stack([dq, dk, dv]).reshape(3, Bp, num_heads, T, hd).transpose(1, 3, 0, 2, 4)  # [B', T, 3, nH, hd]
    dqkv = dqkv.reshape(Bp, h, w, 3 * D)  # [B', h, w, 3D]
    _record(grad_trace, name + ".qkv", dqkv)
    dx, g_qkv = linear_backward(dqkv, c_qkv)  # [B', h, w, D]
    return dx, {"qkv": g_qkv, "proj": g_proj, "rel_pos_h": get_rel_pos_backward(dRh, c_h),
                "rel_pos_w": get_rel_pos_backward(dRw, c_w)}


# --------------------------------------------------------------------------- MLPBlock

def mlp_forward(p, x):  # [..., D] -> [..., D], cache
    """``MLPBlock``: lin2(GELU(lin1(x))), exact GELU. Saves lin1's input and the hidden layer
    before the GELU; the GELU's output (lin2's input) is recomputed in the backward."""
    hidden, c1 = linear_forward(x, **p["lin1"])  # [..., F]
    act, _ = gelu_forward(hidden)  # [..., F]
    out, _ = linear_forward(act, **p["lin2"])  # [..., D]
    return out, (c1, hidden, p["lin2"]["weight"])


def mlp_backward(dy, cache, grad_trace=None, name: str = ""):  # [..., D] -> [..., D], grads
    """lin2, GELU, lin1 in reverse, the GELU recomputed from the hidden layer: Phi(h) for its
    derivative Phi(h) + h phi(h), and act = h Phi(h), lin2's input, for dW2 = dy^T act."""
    c1, hidden, w2 = cache
    _record(grad_trace, name, dy)
    _record(grad_trace, name + ".lin2", dy)
    act, c_gelu = gelu_forward(hidden)  # [..., F] recomputed
    dact, g2 = linear_backward(dy, (act, w2, True))  # [..., F], lin2's cache (input, weight, has bias)
    _record(grad_trace, name + ".act", dact)
    dhidden = gelu_backward(dact, c_gelu)  # [..., F]
    _record(grad_trace, name + ".lin1", dhidden)
    dx, g1 = linear_backward(dhidden, c1)  # [..., D]
    return dx, {"lin1": g1, "lin2": g2}


# --------------------------------------------------------------------------- Block

def block_forward(p, x, num_heads: int, window_size: int, eps: float = ENCODER_LN_EPS):  # [B, G, G, D] -> same, cache
    """``Block.forward`` (image_encoder.py L119-182): x + attn(norm1(x)), windowed (window_size
    > 0: the normed grid zero-padded and cut into windows) or global, then x + mlp(norm2(x))."""
    B, H, W, D = x.shape
    n1, c_n1 = layer_norm_forward(x, p["norm1"]["weight"], p["norm1"]["bias"], eps)  # [B, G, G, D]
    pad_hw = None
    if window_size > 0:
        windows, pad_hw = window_partition(n1, window_size)  # [B*nW, w, w, D]
        a, c_attn = attention_forward(p["attn"], windows, num_heads)  # [B*nW, w, w, D]
        a = window_unpartition(a, window_size, pad_hw, (H, W))  # [B, G, G, D]
    else:
        a, c_attn = attention_forward(p["attn"], n1, num_heads)  # [B, G, G, D]
    x = x + a  # [B, G, G, D]
    n2, c_n2 = layer_norm_forward(x, p["norm2"]["weight"], p["norm2"]["bias"], eps)  # [B, G, G, D]
    m, c_mlp = mlp_forward(p["mlp"], n2)  # [B, G, G, D]
    return x + m, (c_n1, c_attn, c_n2, c_mlp, window_size, pad_hw, (H, W))


def block_backward(dy, cache, grad_trace=None, name: str = ""):  # [B, G, G, D] -> [B, G, G, D], grads
    """The two residuals: y = x1 + mlp(norm2(x1)) sends dy to x1 unchanged plus the MLP branch's
    gradient; x1 = x + attn(norm1(x)) likewise. A windowed block's attention gradient is cut
    into windows (window_unpartition's transpose) and put back (window_partition's)."""
    c_n1, c_attn, c_n2, c_mlp, window_size, pad_hw, hw = cache
    _record(grad_trace, name, dy)
    g = {}
    dn2, g["mlp"] = mlp_backward(dy, c_mlp, grad_trace, name + ".mlp")  # [B, G, G, D]
    _record(grad_trace, name + ".norm2", dn2)
    dx1_branch, g["norm2"] = layer_norm_backward(dn2, c_n2)  # [B, G, G, D]
    dx1 = dy + dx1_branch  # [B, G, G, D]
    if window_size > 0:
        dwin = window_unpartition_backward(dx1, window_size)  # [B*nW, w, w, D]
        dwin, g["attn"] = attention_backward(dwin, c_attn, grad_trace, name + ".attn")  # [B*nW, w, w, D]
        dn1 = window_partition_backward(dwin, window_size, pad_hw, hw)  # [B, G, G, D]
    else:
        dn1, g["attn"] = attention_backward(dx1, c_attn, grad_trace, name + ".attn")  # [B, G, G, D]
    _record(grad_trace, name + ".norm1", dn1)
    dx_branch, g["norm1"] = layer_norm_backward(dn1, c_n1)  # [B, G, G, D]
    return dx1 + dx_branch, g


# --------------------------------------------------------------------------- neck

def _neighbourhoods3x3(x):  # [B, g, g, Cin] -> [B, g, g, 9*Cin]
    """Each pixel's 3x3 neighbourhood (zero-padded at the border), in (ky, kx, channel) order."""
    B, H, W, C = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # [B, g+2, g+2, Cin]
    cols = np.empty((B, H, W, 3, 3, C), x.dtype)  # [B, g, g, 3, 3, Cin]
    for ky in range(3):
        for kx in range(3):
            cols[:, :, :, ky, kx] = xp[:, ky:ky + H, kx:kx + W]
    return cols.reshape(B, H, W, 9 * C)  # [B, g, g, 9*Cin]


def conv3x3_forward(x, weight):  # [B, g, g, Cin], [Cout, Cin, 3, 3] -> [B, g, g, Cout], cache
    """``nn.Conv2d(C, C, 3, padding=1, bias=False)`` channels-last: one matmul of the 3x3
    neighbourhoods with the kernel flattened the same way. Saves x only (the neighbourhoods are 9x x)."""
    B, H, W, C = x.shape
    w2 = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], 9 * C)  # [Cout, 9*Cin]
    cols = _neighbourhoods3x3(x).reshape(B * H * W, 9 * C)  # [B*g*g, 9*Cin]
    return (cols @ w2.T).reshape(B, H, W, -1), (x, weight)  # [B*g*g, 9Cin] @ [9Cin, Cout] -> [B, g, g, Cout]


def conv3x3_backward(dy, cache):  # [B, g, g, Cout] -> dx [B, g, g, Cin], {"weight": [Cout, Cin, 3, 3]}
    """dW = dy^T cols; d cols = dy W, and each pixel's input gradient is the sum of the
    neighbourhood gradients it appeared in (the im2col's transpose: nine shifted adds)."""
    x, weight = cache
    B, H, W, C = x.shape
    Cout = weight.shape[0]
    w2 = weight.transpose(0, 2, 3, 1).reshape(Cout, 9 * C)  # [Cout, 9*Cin]
    cols = _neighbourhoods3x3(x)  # [B, g, g, 9*Cin] recomputed
    dw = (dy.reshape(-1, Cout).T @ cols.reshape(-1, 9 * C)).reshape(Cout, 3, 3, C).transpose(0, 3, 1, 2)  # [Cout, Cin, 3, 3]
    dcols = (dy.reshape(-1, Cout) @ w2).reshape(B, H, W, 3, 3, C)  # [B, g, g, 3, 3, Cin]
    dxp = np.zeros((B, H + 2, W + 2, C), dy.dtype)  # [B, g+2, g+2, Cin]
    for ky in range(3):
        for kx in range(3):
            dxp[:, ky:ky + H, kx:kx + W] += dcols[:, :, :, ky, kx]
    return dxp[:, 1:-1, 1:-1], {"weight": dw}  # [B, g, g, Cin]


def neck_forward(p, x, eps: float = LAYER_NORM_2D_EPS):  # [B, G, G, D] -> [B, C, G, G], cache
    """The neck (image_encoder.py L88-104) channels-last: a 1x1 conv is a linear layer over the
    channels, LayerNorm2d a LayerNorm over the last axis; channels-first only at the end."""
    c = {}
    w0 = p[0]["weight"]  # [C, D, 1, 1]
    y, c[0] = linear_forward(x, w0.reshape(w0.shape[0], -1))  # [B, G, G, C]
    y, c[1] = layer_norm_forward(y, p[1]["weight"], p[1]["bias"], eps)  # [B, G, G, C]
    y, c[2] = conv3x3_forward(y, p[2]["weight"])  # [B, G, G, C]
    y, c[3] = layer_norm_forward(y, p[3]["weight"], p[3]["bias"], eps)  # [B, G, G, C]
    return y.transpose(0, 3, 1, 2), (c, w0.shape)  # [B, C, G, G]


def neck_backward(dout, cache, grad_trace=None, name: str = "image_encoder.neck"):  # [B, C, G, G] -> [B, G, G, D], grads
    """The neck's four layers in reverse, channels-last: LayerNorm2d, the 3x3 conv
    (:func:`conv3x3_backward`), LayerNorm2d, the 1x1 conv (a linear layer's backward, its weight
    gradient put back in the conv's [C, D, 1, 1] layout). ``grad_trace`` gets each layer's output
    gradient channels-first, as the official ``nn.Sequential`` sees it."""
    c, w0_shape = cache

    def nchw(t):  # [B, G, G, C] -> [B, C, G, G]
        return t.transpose(0, 3, 1, 2)

    g = {}
    _record(grad_trace, name, dout)
    _record(grad_trace, name + ".3", dout)
    dy = dout.transpose(0, 2, 3, 1)  # [B, G, G, C]
    dy, g[3] = layer_norm_backward(dy, c[3])  # [B, G, G, C]
    _record(grad_trace, name + ".2", nchw(dy))
    dy, g[2] = conv3x3_backward(dy, c[2])  # [B, G, G, C]
    _record(grad_trace, name + ".1", nchw(dy))
    dy, g[1] = layer_norm_backward(dy, c[1])  # [B, G, G, C]
    _record(grad_trace, name + ".0", nchw(dy))
    dx, g0 = linear_backward(dy, c[0])  # [B, G, G, D]
    g[0] = {"weight": g0["weight"].reshape(w0_shape)}  # [C, D, 1, 1]
    return dx, g


# --------------------------------------------------------------------------- ImageEncoderViT

def image_encoder_forward(p, cfg, x):  # [B, 3, S, S] -> [B, C, G, G], cache
    """``ImageEncoderViT.forward``: patch embedding, + the absolute position embedding, the
    blocks, the neck. ``p`` is ``params["image_encoder"]``; x is preprocessed, in p's dtype."""
    tokens, c_patch = patch_embed_forward(p["patch_embed"], x, cfg.patch_size)  # [B, G, G, D]
    tokens = tokens + p["pos_embed"]  # [B, G, G, D] + [1, G, G, D]
    blocks = []
    for i in range(cfg.encoder_depth):
        tokens, c = block_forward(p["blocks"][i], tokens, cfg.encoder_num_heads, cfg.block_window_size(i),
                                  cfg.encoder_norm_eps)  # [B, G, G, D]
        blocks.append(c)
    out, c_neck = neck_forward(p["neck"], tokens)  # [B, C, G, G]
    return out, (c_patch, blocks, c_neck)


def image_encoder_backward(dout, cache, grad_trace: Optional[dict] = None, name: str = "image_encoder"):
    """Backward of the image encoder: dout [B, C, G, G] -> (dx [B, 3, S, S], grads keyed like ``p``).

    The position embedding was added to every image, so its gradient is the sum over the batch
    of the gradient of the blocks' input.
    """
    c_patch, blocks, c_neck = cache
    g = {"blocks": {}}
    _record(grad_trace, name, dout)
    dtokens, g["neck"] = neck_backward(dout, c_neck, grad_trace, name + ".neck")  # [B, G, G, D]
    for i in reversed(range(len(blocks))):
        dtokens, g["blocks"][i] = block_backward(dtokens, blocks[i], grad_trace, f"{name}.blocks.{i}")  # [B, G, G, D]
    g["pos_embed"] = dtokens.sum(0, keepdims=True)  # [1, G, G, D]
    _record(grad_trace, name + ".patch_embed", dtokens)
    _record(grad_trace, name + ".patch_embed.proj", dtokens.transpose(0, 3, 1, 2))  # [B, D, G, G] the conv's output
    dx, g["patch_embed"] = patch_embed_backward(dtokens, c_patch)  # [B, 3, S, S]
    return dx, g
