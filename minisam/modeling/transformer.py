"""The two-way transformer of SAM's mask decoder.

Paper: Kirillov et al. 2023, section 3 ("Mask decoder") and appendix A ("Lightweight mask
decoder", figure 14). Mirrors ``segment_anything/modeling/transformer.py``
(``TwoWayTransformer``, ``TwoWayAttentionBlock``, ``Attention``) and ``MLPBlock`` from
``modeling/common.py``.

A small set of prompt tokens (1 IoU token, 4 mask tokens, the sparse prompt embeddings) and
the dense image embedding (G*G tokens) update each other. Each block runs four steps:

1. self-attention of the tokens (layer 0: no residual and no positional encoding);
2. tokens -> image cross-attention (the tokens read the image);
3. an MLP on the tokens (ReLU, not GELU);
4. image -> tokens cross-attention (every image position reads the tokens).

After the last block the tokens attend to the image once more. The positional encodings
are re-added before *every* attention: ``query_pe`` is always the original prompt tokens,
``key_pe`` the dense random-Fourier PE. Values never carry a PE.

Shapes: B prompts (batch), T tokens, N = G*G image positions, C channels, Ci the internal
attention width (C / downsample rate), h heads, d = Ci / h per head.
Every LayerNorm here is ``nn.LayerNorm`` with the default eps 1e-5.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from minisam.kernels.layers import layer_norm, softmax

LN_EPS = 1e-5  # nn.LayerNorm default, used for norm1..4 and norm_final_attn


def linear(x, p):  # [..., in], {"weight": [out, in], "bias": [out]} -> [..., out]
    """``nn.Linear``: x @ W^T + b, in float32, as ONE GEMM over all leading axes (a stacked
    matmul would run one small GEMM per prompt) with the bias added in place."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = x.reshape(-1, x.shape[-1]) @ p["weight"].T  # [R, in] @ [in, out] -> [R, out]
    y += p["bias"]  # [R, out]
    return y.reshape(x.shape[:-1] + (y.shape[-1],))  # [..., out]


def _ln(x, p):  # [..., C] -> [..., C]
    return layer_norm(x, p["weight"], p["bias"], LN_EPS)


def attention(p, q, k, v, num_heads: int, trace=None, name: str = "", projected=None):
    """``Attention.forward``: project, split heads, softmax(q k^T / sqrt(d)) v, merge, project.

    q [B, Tq, C], k [B, Tk, C], v [B, Tk, C] -> [B, Tq, C]. Unlike the image encoder, the
    scale is applied *after* the q k^T product (``attn / math.sqrt(c_per_head)``).
    ``projected`` may hold some of ``"q"``, ``"k"``, ``"v"`` already projected ([., ., Ci],
    from :func:`image_side_projections`); the matching argument is then not used.
    """
    projected = projected or {}
    q = projected["q"] if "q" in projected else linear(q, p["q_proj"])  # [B, Tq, C] -> [B, Tq, Ci]
    k = projected["k"] if "k" in projected else linear(k, p["k_proj"])  # [B, Tk, C] -> [B, Tk, Ci]
    v = projected["v"] if "v" in projected else linear(v, p["v_proj"])  # [B, Tk, C] -> [B, Tk, Ci]
    if trace is not None:
        trace[name + ".q_proj"], trace[name + ".k_proj"], trace[name + ".v_proj"] = q, k, v
    # q or k/v may hold ONE image shared by all B prompts (batch 1): matmul broadcasts it.
    Bq, Tq, Ci = q.shape
    Bk, Tk, _ = k.shape
    d = Ci // num_heads
    qh = q.reshape(Bq, Tq, num_heads, d).transpose(0, 2, 1, 3)  # [B, Tq, Ci] -> [B, h, Tq, d]
    kh = k.reshape(Bk, Tk, num_heads, d).transpose(0, 2, 1, 3)  # [B, Tk, Ci] -> [B, h, Tk, d]
    vh = v.reshape(Bk, Tk, num_heads, d).transpose(0, 2, 1, 3)  # [B, Tk, Ci] -> [B, h, Tk, d]
    attn = qh @ kh.transpose(0, 1, 3, 2)  # [B, h, Tq, d] @ [B, h, d, Tk] -> [B, h, Tq, Tk]
    attn /= np.float32(math.sqrt(d))  # [B, h, Tq, Tk], in place
    softmax(attn, out=attn)  # [B, h, Tq, Tk], rows sum to 1 over the keys
    if trace is not None:
        # Not an official hook (the softmax is not a module); kept for the lessons.
        trace[name + ".attn_weights"] = attn
    out = attn @ vh  # [B, h, Tq, Tk] @ [B, h, Tk, d] -> [B, h, Tq, d]
    out = out.transpose(0, 2, 1, 3).reshape(out.shape[0], Tq, Ci)  # [B, h, Tq, d] -> [B, Tq, Ci]
    out = linear(out, p["out_proj"])  # [B, Tq, Ci] -> [B, Tq, C]
    if trace is not None:
        trace[name + ".out_proj"] = out
        trace[name] = out
    return out


def mlp_block(p, x, trace=None, name: str = ""):  # [B, T, C] -> [B, T, C]
    """``MLPBlock`` with ReLU (the two-way transformer's activation): lin2(relu(lin1(x)))."""
    hidden = linear(x, p["lin1"])  # [B, T, C] -> [B, T, M]
    act = np.maximum(hidden, np.float32(0))  # [B, T, M]
    out = linear(act, p["lin2"])  # [B, T, M] -> [B, T, C]
    if trace is not None:
        trace[name + ".lin1"], trace[name + ".act"], trace[name + ".lin2"] = hidden, act, out
        trace[name] = out
    return out


def image_side_projections(p, keys, key_pe):  # [1, N, C] x2 -> dict of [1, N, Ci]
    """The three projections of layer 0 that read only the image tokens: the token-to-image
    keys and values and the image-to-token queries. Before layer 0's image-to-token attention
    the image tokens are the embedding plus the no-mask dense embedding, the same for every
    prompt without a mask input, so a predictor computes these once per image (its
    ``_image_cache``) instead of once per call: the same arithmetic on the same arrays, so the
    outputs are bit for bit those of the uncached path."""
    k_img = keys + key_pe  # [1, N, C]
    return {"t2i": {"k": linear(k_img, p["cross_attn_token_to_image"]["k_proj"]),  # [1, N, Ci]
                    "v": linear(keys, p["cross_attn_token_to_image"]["v_proj"])},  # [1, N, Ci]
            "i2t": {"q": linear(k_img, p["cross_attn_image_to_token"]["q_proj"])}}  # [1, N, Ci]


def two_way_block(p, queries, keys, query_pe, key_pe, num_heads: int, skip_first_layer_pe: bool,
                  trace=None, name: str = "", image_side=None):
    """``TwoWayAttentionBlock.forward``.

    queries [B, T, C], keys [B, N, C], query_pe [B, T, C], key_pe [B, N, C]
    -> (queries [B, T, C], keys [B, N, C]). ``image_side``: this block's
    :func:`image_side_projections`, when computed earlier (layer 0 only).
    """
    image_side = image_side or {"t2i": None, "i2t": None}
    t = trace
    # 1. Self-attention of the tokens. Layer 0 *replaces* the queries (no residual, no PE).
    if skip_first_layer_pe:
        queries = attention(p["self_attn"], queries, queries, queries, num_heads, t, name + ".self_attn")  # [B, T, C]
    else:
        q = queries + query_pe  # [B, T, C]
        queries = queries + attention(p["self_attn"], q, q, queries, num_heads, t, name + ".self_attn")  # [B, T, C]
    queries = _ln(queries, p["norm1"])  # [B, T, C]
    if t is not None:
        t[name + ".norm1"] = queries

    # 2. Tokens read the image: q = tokens + PE, k = image + PE, v = image (no PE).
    q = queries + query_pe  # [B, T, C]
    # [B, N, C] (or [1, N, C]: one image for all prompts, layer 0); not needed if projected already
    k_img = keys + key_pe if image_side["i2t"] is None else None
    queries = queries + attention(p["cross_attn_token_to_image"], q, k_img, keys, num_heads, t,
                                  name + ".cross_attn_token_to_image", image_side["t2i"])  # [B, T, C]
    queries = _ln(queries, p["norm2"])  # [B, T, C]
    if t is not None:
        t[name + ".norm2"] = queries

    # 3. MLP on the tokens.
    queries = queries + mlp_block(p["mlp"], queries, t, name + ".mlp")  # [B, T, C]
    queries = _ln(queries, p["norm3"])  # [B, T, C]
    if t is not None:
        t[name + ".norm3"] = queries

    # 4. The image reads the tokens: the roles swap (q = image + PE, k = tokens + PE, v = tokens).
    q = queries + query_pe  # [B, T, C]
    # keys did not change since step 2: reuse keys + key_pe
    keys = keys + attention(p["cross_attn_image_to_token"], k_img, q, queries, num_heads, t,
                            name + ".cross_attn_image_to_token", image_side["i2t"])  # [B, N, C]
    keys = _ln(keys, p["norm4"])  # [B, N, C]
    if t is not None:
        t[name + ".norm4"] = keys
        t[name] = (queries, keys)
    return queries, keys


def two_way_transformer(p, cfg, image_embedding, image_pe, point_embedding,
                        trace: Optional[dict] = None,
                        name: str = "mask_decoder.transformer", image_cache=None) -> Tuple[np.ndarray, np.ndarray]:
    """``TwoWayTransformer.forward``.

    image_embedding [B, C, G, G], image_pe [B, C, G, G], point_embedding [B, T, C]
    -> (tokens [B, T, C], image [B, N, C]) with N = G*G in row-major (y, x) order.
    image_embedding and image_pe may also be [1, C, G, G] for B prompts on one image with the
    same dense embedding: the image tokens then broadcast until the first image-to-token
    attention makes them prompt-specific (layer 0 projects them once, not B times).
    ``image_cache``: a dict kept per image by the caller, for such a [1, C, G, G] image that
    does not change between calls; it keeps the token layouts and layer 0's
    :func:`image_side_projections`.
    """
    B, C, H, W = image_embedding.shape
    if image_cache is not None and "keys" in image_cache:
        keys, key_pe = image_cache["keys"], image_cache["key_pe"]  # [1, N, C] each
    else:
        keys = image_embedding.reshape(B, C, H * W).transpose(0, 2, 1)  # [B, C, G, G] -> [B, N, C]
        key_pe = image_pe.reshape(image_pe.shape[0], C, H * W).transpose(0, 2, 1)  # [1 or B, C, G, G] -> [1 or B, N, C]
        keys = np.ascontiguousarray(keys)
        key_pe = np.ascontiguousarray(key_pe)
        if image_cache is not None:
            image_cache.update(keys=keys, key_pe=key_pe,
                               layer0=image_side_projections(p["layers"][0], keys, key_pe))
    queries = point_embedding  # [B, T, C]
    for i in range(cfg.decoder_depth):
        queries, keys = two_way_block(p["layers"][i], queries, keys, point_embedding, key_pe,
                                      cfg.decoder_num_heads, skip_first_layer_pe=(i == 0),
                                      trace=trace, name=f"{name}.layers.{i}",
                                      image_side=image_cache["layer0"] if image_cache is not None and i == 0
                                      else None)  # [B, T, C], [B, N, C]
    # Final tokens -> image attention, again with both PEs re-added.
    q = queries + point_embedding  # [B, T, C]
    k = keys + key_pe  # [B, N, C]
    queries = queries + attention(p["final_attn_token_to_image"], q, k, keys, cfg.decoder_num_heads,
                                  trace, f"{name}.final_attn_token_to_image")  # [B, T, C]
    queries = _ln(queries, p["norm_final_attn"])  # [B, T, C]
    if trace is not None:
        trace[f"{name}.norm_final_attn"] = queries
        trace[name] = (queries, keys)
    return queries, keys
