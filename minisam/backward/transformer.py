"""Forward and backward of the two-way transformer of SAM's mask decoder.

Paper: Kirillov et al. 2023, section 3 ("Mask decoder") and appendix A (figure 14). Mirrors
``segment_anything/modeling/transformer.py`` (``Attention``, ``TwoWayAttentionBlock``,
``TwoWayTransformer``), whose forward :mod:`minisam.modeling.transformer` writes out step by
step; the forwards here are the same arithmetic, keeping what the backward needs.

The one rule of the backward: a tensor used in several places receives the **sum** of the
gradients from each use. In a two-way block the tokens feed the queries, the keys and the
values of an attention at once, and the positional encodings are re-added before every
attention, so ``query_pe`` and ``key_pe`` collect a gradient from every attention that read
them. Values never carry a PE, so the PE gradient of an attention comes only through its
queries and keys.

Every backward can fill ``grad_trace``, the gradient of each official module's output keyed by
its module path (``mask_decoder.transformer.layers.0.norm1``), which ``tests/test_backward.py``
compares with ``.grad`` of the same tensors under torch autograd. Where an official module
returns a tensor another module also returns (a block's queries *are* its ``norm3`` output),
the gradient is the total that tensor receives, as autograd's is.

Shapes (``docs/shapes.md``): N prompts, Tt tokens, GG image positions, C channels, Ci the
attention width, nH heads, hd = Ci / nH, Dm the MLP width, Tq / Tk query and key tokens.
"""

from __future__ import annotations

import math

import numpy as np

from minisam.backward.common import (layer_norm_backward, layer_norm_forward, linear_backward, linear_forward,
                                     relu_backward, relu_forward, softmax_backward, softmax_forward)
from minisam.modeling.common import DECODER_LN_EPS


def _record(grad_trace, name, value):
    if grad_trace is not None:
        grad_trace[name] = value


# --------------------------------------------------------------------------- Attention

def attention_forward(p, q, k, v, num_heads: int):  # [N, Tq, C], [N, Tk, C], [N, Tk, C] -> [N, Tq, C], cache
    """``Attention.forward``: project to Ci = C / downsample_rate, split heads,
    softmax(q k^T / sqrt(hd)) v, merge the heads, project back to C."""
    qp, q_cache = linear_forward(q, **p["q_proj"])  # [N, Tq, C] -> [N, Tq, Ci]
    kp, k_cache = linear_forward(k, **p["k_proj"])  # [N, Tk, C] -> [N, Tk, Ci]
    vp, v_cache = linear_forward(v, **p["v_proj"])  # [N, Tk, C] -> [N, Tk, Ci]
    N, Tq, Ci = qp.shape
    Tk = kp.shape[1]
    hd = Ci // num_heads
    qh = qp.reshape(N, Tq, num_heads, hd).transpose(0, 2, 1, 3)  # [N, nH, Tq, hd]
    kh = kp.reshape(N, Tk, num_heads, hd).transpose(0, 2, 1, 3)  # [N, nH, Tk, hd]
    vh = vp.reshape(N, Tk, num_heads, hd).transpose(0, 2, 1, 3)  # [N, nH, Tk, hd]
    scale = 1.0 / math.sqrt(hd)
    scores = (qh @ kh.transpose(0, 1, 3, 2)) * scale  # [N, nH, Tq, Tk]
    weights = softmax_forward(scores)  # [N, nH, Tq, Tk]
    heads = weights @ vh  # [N, nH, Tq, hd]
    merged = heads.transpose(0, 2, 1, 3).reshape(N, Tq, Ci)  # [N, Tq, Ci]
    out, o_cache = linear_forward(merged, **p["out_proj"])  # [N, Tq, Ci] -> [N, Tq, C]
    return out, (q_cache, k_cache, v_cache, o_cache, qh, kh, vh, weights, scale, num_heads)


def attention_backward(dout, cache, grad_trace=None, name: str = ""):  # [N, Tq, C] -> dq, dk, dv, grads
    """Backward of ``Attention``. With S = s q k^T (s = 1 / sqrt(hd)), P = softmax(S), O = P V:
    dV = P^T dO, dP = dO V^T, dS = softmax'(dP) (:func:`softmax_backward`), dQ = s dS K,
    dK = s dS^T Q; then each projection's linear backward. Returns the gradients of the three
    *inputs* of the attention (before their projections) and of its eight parameters."""
    q_cache, k_cache, v_cache, o_cache, qh, kh, vh, weights, scale, num_heads = cache
    _record(grad_trace, name, dout)
    _record(grad_trace, name + ".out_proj", dout)
    dmerged, g_out = linear_backward(dout, o_cache)  # [N, Tq, C] -> [N, Tq, Ci]
    N, Tq, Ci = dmerged.shape
    hd = Ci // num_heads
    dheads = dmerged.reshape(N, Tq, num_heads, hd).transpose(0, 2, 1, 3)  # [N, nH, Tq, hd]
    dvh = weights.transpose(0, 1, 3, 2) @ dheads  # [N, nH, Tk, Tq] @ [N, nH, Tq, hd] -> [N, nH, Tk, hd]
    dweights = dheads @ vh.transpose(0, 1, 3, 2)  # [N, nH, Tq, hd] @ [N, nH, hd, Tk] -> [N, nH, Tq, Tk]
    dscores = softmax_backward(dweights, weights) * scale  # [N, nH, Tq, Tk], the scale folded in
    dqh = dscores @ kh  # [N, nH, Tq, Tk] @ [N, nH, Tk, hd] -> [N, nH, Tq, hd]
    dkh = dscores.transpose(0, 1, 3, 2) @ qh  # [N, nH, Tk, Tq] @ [N, nH, Tq, hd] -> [N, nH, Tk, hd]
    Tk = dkh.shape[2]
    dqp = dqh.transpose(0, 2, 1, 3).reshape(N, Tq, Ci)  # [N, Tq, Ci]
    dkp = dkh.transpose(0, 2, 1, 3).reshape(N, Tk, Ci)  # [N, Tk, Ci]
    dvp = dvh.transpose(0, 2, 1, 3).reshape(N, Tk, Ci)  # [N, Tk, Ci]
    _record(grad_trace, name + ".q_proj", dqp)
    _record(grad_trace, name + ".k_proj", dkp)
    _record(grad_trace, name + ".v_proj", dvp)
    dq, g_q = linear_backward(dqp, q_cache)  # [N, Tq, Ci] -> [N, Tq, C]
    dk, g_k = linear_backward(dkp, k_cache)  # [N, Tk, Ci] -> [N, Tk, C]
    dv, g_v = linear_backward(dvp, v_cache)  # [N, Tk, Ci] -> [N, Tk, C]
    return dq, dk, dv, {"q_proj": g_q, "k_proj": g_k, "v_proj": g_v, "out_proj": g_out}


# --------------------------------------------------------------------------- TwoWayAttentionBlock

def two_way_block_forward(p, queries, keys, query_pe, key_pe, num_heads: int, skip_first_layer_pe: bool,
                          norm_eps: float = DECODER_LN_EPS):
    """``TwoWayAttentionBlock.forward``: the four steps of :func:`minisam.modeling.transformer.two_way_block`.

    queries [N, Tt, C], keys [N, GG, C], query_pe [N, Tt, C], key_pe [N, GG, C]
    -> (queries [N, Tt, C], keys [N, GG, C]), cache.
    """
    c = {"skip": skip_first_layer_pe}
    # 1. token self-attention; layer 0 replaces the queries (no residual, no PE)
    if skip_first_layer_pe:
        attn_out, c["self_attn"] = attention_forward(p["self_attn"], queries, queries, queries, num_heads)  # [N, Tt, C]
        queries = attn_out  # [N, Tt, C]
    else:
        q = queries + query_pe  # [N, Tt, C]
        attn_out, c["self_attn"] = attention_forward(p["self_attn"], q, q, queries, num_heads)  # [N, Tt, C]
        queries = queries + attn_out  # [N, Tt, C]
    queries, c["norm1"] = layer_norm_forward(queries, p["norm1"]["weight"], p["norm1"]["bias"], norm_eps)  # [N, Tt, C]
    # 2. tokens read the image
    q = queries + query_pe  # [N, Tt, C]
    k = keys + key_pe  # [N, GG, C]
    attn_out, c["t2i"] = attention_forward(p["cross_attn_token_to_image"], q, k, keys, num_heads)  # [N, Tt, C]
    queries = queries + attn_out  # [N, Tt, C]
    queries, c["norm2"] = layer_norm_forward(queries, p["norm2"]["weight"], p["norm2"]["bias"], norm_eps)  # [N, Tt, C]
    # 3. MLP on the tokens (ReLU)
    hidden, c["lin1"] = linear_forward(queries, **p["mlp"]["lin1"])  # [N, Tt, C] -> [N, Tt, Dm]
    act, c["relu"] = relu_forward(hidden)  # [N, Tt, Dm]
    mlp_out, c["lin2"] = linear_forward(act, **p["mlp"]["lin2"])  # [N, Tt, Dm] -> [N, Tt, C]
    queries = queries + mlp_out  # [N, Tt, C]
    queries, c["norm3"] = layer_norm_forward(queries, p["norm3"]["weight"], p["norm3"]["bias"], norm_eps)  # [N, Tt, C]
    # 4. the image reads the tokens: q = image + PE, k = tokens + PE, v = tokens
    q = queries + query_pe  # [N, Tt, C]
    k = keys + key_pe  # [N, GG, C]
    attn_out, c["i2t"] = attention_forward(p["cross_attn_image_to_token"], k, q, queries, num_heads)  # [N, GG, C]
    keys = keys + attn_out  # [N, GG, C]
    keys, c["norm4"] = layer_norm_forward(keys, p["norm4"]["weight"], p["norm4"]["bias"], norm_eps)  # [N, GG, C]
    return (queries, keys), c


def two_way_block_backward(dqueries, dkeys, c, grad_trace=None, name: str = ""):
    """Backward of one two-way block, the four steps in reverse.

    dqueries [N, Tt, C], dkeys [N, GG, C] (the gradients of the block's two outputs)
    -> (dqueries_in [N, Tt, C], dkeys_in [N, GG, C], dquery_pe [N, Tt, C], dkey_pe [N, GG, C], grads).
    Each residual ``y = x + f(x)`` passes dy to x unchanged and adds f's backward; each
    ``x + pe`` that feeds an attention sends the same gradient to x and to the PE.
    """
    g = {}
    # 4. keys = LN4(keys_in + i2t(q = keys_in + kpe, k = queries + qpe, v = queries))
    _record(grad_trace, name + ".norm4", dkeys)
    ds, g["norm4"] = layer_norm_backward(dkeys, c["norm4"])  # [N, GG, C]
    d_img_q, d_tok_k, d_tok_v, g["cross_attn_image_to_token"] = attention_backward(
        ds, c["i2t"], grad_trace, name + ".cross_attn_image_to_token")  # [N, GG, C], [N, Tt, C], [N, Tt, C]
    dkeys_in = ds + d_img_q  # [N, GG, C]
    dkey_pe = d_img_q  # [N, GG, C]
    dqueries = dqueries + d_tok_k + d_tok_v  # [N, Tt, C], the total at the norm3 output
    dquery_pe = d_tok_k  # [N, Tt, C]
    if grad_trace is not None:
        grad_trace[name] = (dqueries, dkeys)
        grad_trace[name + ".norm3"] = dqueries
    # 3. queries = LN3(n2 + lin2(relu(lin1(n2))))
    ds, g["norm3"] = layer_norm_backward(dqueries, c["norm3"])  # [N, Tt, C]
    _record(grad_trace, name + ".mlp", ds)
    _record(grad_trace, name + ".mlp.lin2", ds)
    dact, g_lin2 = linear_backward(ds, c["lin2"])  # [N, Tt, C] -> [N, Tt, Dm]
    _record(grad_trace, name + ".mlp.act", dact)
    dhidden = relu_backward(dact, c["relu"])  # [N, Tt, Dm]
    _record(grad_trace, name + ".mlp.lin1", dhidden)
    dn2, g_lin1 = linear_backward(dhidden, c["lin1"])  # [N, Tt, Dm] -> [N, Tt, C]
    g["mlp"] = {"lin1": g_lin1, "lin2": g_lin2}
    dn2 = dn2 + ds  # [N, Tt, C]
    # 2. queries = LN2(n1 + t2i(q = n1 + qpe, k = keys_in + kpe, v = keys_in))
    _record(grad_trace, name + ".norm2", dn2)
    ds, g["norm2"] = layer_norm_backward(dn2, c["norm2"])  # [N, Tt, C]
    d_tok_q, d_img_k, d_img_v, g["cross_attn_token_to_image"] = attention_backward(
        ds, c["t2i"], grad_trace, name + ".cross_attn_token_to_image")  # [N, Tt, C], [N, GG, C], [N, GG, C]
    dn1 = ds + d_tok_q  # [N, Tt, C]
    dquery_pe = dquery_pe + d_tok_q  # [N, Tt, C]
    dkeys_in = dkeys_in + d_img_k + d_img_v  # [N, GG, C]
    dkey_pe = dkey_pe + d_img_k  # [N, GG, C]
    # 1. queries = LN1(queries_in + self_attn(queries_in + qpe, same, queries_in)), or LN1(self_attn(x, x, x))
    _record(grad_trace, name + ".norm1", dn1)
    ds, g["norm1"] = layer_norm_backward(dn1, c["norm1"])  # [N, Tt, C]
    dq, dk, dv, g["self_attn"] = attention_backward(ds, c["self_attn"], grad_trace, name + ".self_attn")  # 3 x [N, Tt, C]
    if c["skip"]:
        dqueries_in = dq + dk + dv  # [N, Tt, C]
    else:
        dqueries_in = ds + dq + dk + dv  # [N, Tt, C]
        dquery_pe = dquery_pe + dq + dk  # [N, Tt, C]
    return dqueries_in, dkeys_in, dquery_pe, dkey_pe, g


# --------------------------------------------------------------------------- TwoWayTransformer

def two_way_transformer_forward(p, cfg, image_embedding, image_pe, point_embedding):
    """``TwoWayTransformer.forward``.

    image_embedding [N, C, G, G], image_pe [N, C, G, G], point_embedding [N, Tt, C]
    -> (tokens [N, Tt, C], image [N, GG, C]), cache.
    """
    N, C, G, _ = image_embedding.shape
    keys = image_embedding.reshape(N, C, G * G).transpose(0, 2, 1)  # [N, GG, C]
    key_pe = image_pe.reshape(N, C, G * G).transpose(0, 2, 1)  # [N, GG, C]
    queries = point_embedding  # [N, Tt, C]
    blocks = []
    for i in range(cfg.decoder_depth):
        (queries, keys), cache = two_way_block_forward(p["layers"][i], queries, keys, point_embedding, key_pe,
                                                       cfg.decoder_num_heads, skip_first_layer_pe=(i == 0),
                                                       norm_eps=cfg.decoder_norm_eps)  # [N, Tt, C], [N, GG, C]
        blocks.append(cache)
    q = queries + point_embedding  # [N, Tt, C]
    k = keys + key_pe  # [N, GG, C]
    attn_out, final = attention_forward(p["final_attn_token_to_image"], q, k, keys, cfg.decoder_num_heads)  # [N, Tt, C]
    queries = queries + attn_out  # [N, Tt, C]
    queries, norm = layer_norm_forward(queries, p["norm_final_attn"]["weight"], p["norm_final_attn"]["bias"],
                                       DECODER_LN_EPS)  # [N, Tt, C]
    return (queries, keys), (blocks, final, norm, (N, C, G))


def two_way_transformer_backward(dtokens, dimage, cache, grad_trace=None, name: str = "mask_decoder.transformer"):
    """Backward of the two-way transformer.

    dtokens [N, Tt, C], dimage [N, GG, C]
    -> (dimage_embedding [N, C, G, G], dimage_pe [N, C, G, G], dpoint_embedding [N, Tt, C], grads).
    ``point_embedding`` is both the first queries and the ``query_pe`` of every attention, and
    ``image_pe`` the ``key_pe`` of every attention, so both sum the gradients of all of them.
    """
    blocks, final, norm, (N, C, G) = cache
    g = {}
    _record(grad_trace, name + ".norm_final_attn", dtokens)
    ds, g["norm_final_attn"] = layer_norm_backward(dtokens, norm)  # [N, Tt, C]
    dq, dk, dv, g["final_attn_token_to_image"] = attention_backward(
        ds, final, grad_trace, name + ".final_attn_token_to_image")  # [N, Tt, C], [N, GG, C], [N, GG, C]
    dqueries = ds + dq  # [N, Tt, C]
    dpoint = dq  # [N, Tt, C]
    dkeys = dimage + dk + dv  # [N, GG, C]
    dkey_pe = dk  # [N, GG, C]
    _record(grad_trace, name, (dtokens, dkeys))  # the image output also fed the final attention
    g["layers"] = {}  # keyed by block index, as the parameter tree
    for i in reversed(range(len(blocks))):
        dqueries, dkeys, dqpe, dkpe, g["layers"][i] = two_way_block_backward(
            dqueries, dkeys, blocks[i], grad_trace, f"{name}.layers.{i}")  # [N, Tt, C], [N, GG, C], ...
        dpoint = dpoint + dqpe  # [N, Tt, C]
        dkey_pe = dkey_pe + dkpe  # [N, GG, C]
    dpoint = dpoint + dqueries  # [N, Tt, C], the first queries are the point embedding itself
    dimage_embedding = dkeys.transpose(0, 2, 1).reshape(N, C, G, G)  # [N, GG, C] -> [N, C, G, G]
    dimage_pe = dkey_pe.transpose(0, 2, 1).reshape(N, C, G, G)  # [N, GG, C] -> [N, C, G, G]
    return dimage_embedding, dimage_pe, dpoint, g
