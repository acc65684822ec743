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

This is the readable path, written as the official file is: the image is repeated once per
prompt. :mod:`minisam.kernels.mask_decoder` runs the same arithmetic on one shared copy of the
image (tested equal in ``tests/test_mask_decoder.py``). Every LayerNorm here is
``nn.LayerNorm`` with its default eps 1e-5 (``docs/numerics.md`` section 3).
Shapes (``docs/shapes.md``): N prompts, Tt tokens, GG image positions, C channels, Ci the
attention width (C / downsample rate), nH heads, hd = Ci / nH per head, Dm the MLP width.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from minisam.modeling.common import DECODER_LN_EPS, layer_norm, linear, relu, softmax


def attention(p, q, k, v, num_heads: int, trace=None, name: str = ""):
    """``Attention.forward``: project, split heads, softmax(q k^T / sqrt(hd)) v, merge, project.

    q [N, Tq, C], k [N, Tk, C], v [N, Tk, C] -> [N, Tq, C]. Unlike the image encoder, the
    scale is applied *after* the q k^T product (``attn / math.sqrt(c_per_head)``).
    """
    q = linear(q, **p["q_proj"])  # [N, Tq, C] -> [N, Tq, Ci]
    k = linear(k, **p["k_proj"])  # [N, Tk, C] -> [N, Tk, Ci]
    v = linear(v, **p["v_proj"])  # [N, Tk, C] -> [N, Tk, Ci]
    N, Tq, Ci = q.shape
    Tk = k.shape[1]
    hd = Ci // num_heads
    qh = q.reshape(N, Tq, num_heads, hd).transpose(0, 2, 1, 3)  # [N, Tq, Ci] -> [N, nH, Tq, hd]
    kh = k.reshape(N, Tk, num_heads, hd).transpose(0, 2, 1, 3)  # [N, Tk, Ci] -> [N, nH, Tk, hd]
    vh = v.reshape(N, Tk, num_heads, hd).transpose(0, 2, 1, 3)  # [N, Tk, Ci] -> [N, nH, Tk, hd]
    attn = qh @ kh.transpose(0, 1, 3, 2)  # [N, nH, Tq, hd] @ [N, nH, hd, Tk] -> [N, nH, Tq, Tk]
    attn = attn / np.float32(math.sqrt(hd))  # [N, nH, Tq, Tk]
    attn = softmax(attn)  # [N, nH, Tq, Tk], rows sum to 1 over the keys
    out = attn @ vh  # [N, nH, Tq, Tk] @ [N, nH, Tk, hd] -> [N, nH, Tq, hd]
    out = out.transpose(0, 2, 1, 3).reshape(N, Tq, Ci)  # [N, nH, Tq, hd] -> [N, Tq, Ci]
    out = linear(out, **p["out_proj"])  # [N, Tq, Ci] -> [N, Tq, C]
    if trace is not None:
        trace[name + ".q_proj"], trace[name + ".k_proj"], trace[name + ".v_proj"] = q, k, v
        trace[name + ".attn_weights"] = attn  # not an official hook (F.softmax is no module)
        trace[name + ".out_proj"] = out
        trace[name] = out
    return out


def _ln(x, p, eps=DECODER_LN_EPS):  # [..., C] -> [..., C]
    return layer_norm(x, p["weight"], p["bias"], eps)


def two_way_block(p, queries, keys, query_pe, key_pe, num_heads: int, skip_first_layer_pe: bool,
                  trace=None, name: str = "", norm_eps: float = DECODER_LN_EPS):
    """``TwoWayAttentionBlock.forward``.

    queries [N, Tt, C], keys [N, GG, C], query_pe [N, Tt, C], key_pe [N, GG, C]
    -> (queries [N, Tt, C], keys [N, GG, C]).
    """
    # 1. Self-attention of the tokens. Layer 0 *replaces* the queries (no residual, no PE).
    if skip_first_layer_pe:
        queries = attention(p["self_attn"], queries, queries, queries, num_heads, trace,
                            name + ".self_attn")  # [N, Tt, C]
    else:
        q = queries + query_pe  # [N, Tt, C]
        attn_out = attention(p["self_attn"], q, q, queries, num_heads, trace, name + ".self_attn")  # [N, Tt, C]
        queries = queries + attn_out  # [N, Tt, C]
    queries = norm1 = _ln(queries, p["norm1"], norm_eps)  # [N, Tt, C]

    # 2. Tokens read the image: q = tokens + PE, k = image + PE, v = image (no PE).
    q = queries + query_pe  # [N, Tt, C]
    k = keys + key_pe  # [N, GG, C]
    attn_out = attention(p["cross_attn_token_to_image"], q, k, keys, num_heads, trace,
                         name + ".cross_attn_token_to_image")  # [N, Tt, C]
    queries = queries + attn_out  # [N, Tt, C]
    queries = norm2 = _ln(queries, p["norm2"], norm_eps)  # [N, Tt, C]

    # 3. MLP on the tokens (ReLU, not GELU).
    hidden = linear(queries, **p["mlp"]["lin1"])  # [N, Tt, C] -> [N, Tt, Dm]
    act = relu(hidden)  # [N, Tt, Dm]
    mlp_out = linear(act, **p["mlp"]["lin2"])  # [N, Tt, Dm] -> [N, Tt, C]
    queries = queries + mlp_out  # [N, Tt, C]
    queries = _ln(queries, p["norm3"], norm_eps)  # [N, Tt, C]

    # 4. The image reads the tokens: the roles swap (q = image + PE, k = tokens + PE, v = tokens).
    q = queries + query_pe  # [N, Tt, C]
    k = keys + key_pe  # [N, GG, C]
    attn_out = attention(p["cross_attn_image_to_token"], k, q, queries, num_heads, trace,
                         name + ".cross_attn_image_to_token")  # [N, GG, C]
    keys = keys + attn_out  # [N, GG, C]
    keys = _ln(keys, p["norm4"], norm_eps)  # [N, GG, C]
    if trace is not None:
        trace[name + ".norm1"], trace[name + ".norm2"] = norm1, norm2
        trace[name + ".mlp.lin1"], trace[name + ".mlp.act"], trace[name + ".mlp.lin2"] = hidden, act, mlp_out
        trace[name + ".mlp"], trace[name + ".norm3"], trace[name + ".norm4"] = mlp_out, queries, keys
        trace[name] = (queries, keys)
    return queries, keys


def two_way_transformer(p, cfg, image_embedding, image_pe, point_embedding,
                        trace: Optional[dict] = None,
                        name: str = "mask_decoder.transformer") -> Tuple[np.ndarray, np.ndarray]:
    """``TwoWayTransformer.forward``.

    image_embedding [N, C, G, G], image_pe [N, C, G, G], point_embedding [N, Tt, C]
    -> (tokens [N, Tt, C], image [N, GG, C]), the image tokens in row-major (y, x) order.
    """
    N, C, G, _ = image_embedding.shape
    keys = image_embedding.reshape(N, C, G * G).transpose(0, 2, 1)  # [N, C, G, G] -> [N, GG, C]
    key_pe = image_pe.reshape(N, C, G * G).transpose(0, 2, 1)  # [N, C, G, G] -> [N, GG, C]
    queries = point_embedding  # [N, Tt, C]
    for i in range(cfg.decoder_depth):
        queries, keys = two_way_block(p["layers"][i], queries, keys, point_embedding, key_pe,
                                      cfg.decoder_num_heads, skip_first_layer_pe=(i == 0), norm_eps=cfg.decoder_norm_eps,
                                      trace=trace, name=f"{name}.layers.{i}")  # [N, Tt, C], [N, GG, C]
    # Final tokens -> image attention, again with both PEs re-added.
    q = queries + point_embedding  # [N, Tt, C]
    k = keys + key_pe  # [N, GG, C]
    attn_out = attention(p["final_attn_token_to_image"], q, k, keys, cfg.decoder_num_heads,
                         trace, f"{name}.final_attn_token_to_image")  # [N, Tt, C]
    queries = queries + attn_out  # [N, Tt, C]
    queries = _ln(queries, p["norm_final_attn"])  # [N, Tt, C]
    if trace is not None:
        trace[f"{name}.norm_final_attn"] = queries
        trace[name] = (queries, keys)
    return queries, keys
