"""Reference solutions for lesson 11's exercises."""

import numpy as np


def _linear(x, p):
    return x @ p["weight"].T + p["bias"]


def _layer_norm(x, p, eps=1e-5):
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + eps) * p["weight"] + p["bias"]


def attention(p, q, k, v, num_heads):
    q, k, v = _linear(q, p["q_proj"]), _linear(k, p["k_proj"]), _linear(v, p["v_proj"])   # [N, T, Ci]
    N, Tq, Ci = q.shape
    d = Ci // num_heads

    def heads(x):                                                  # [N, T, Ci] -> [N, h, T, d]
        return x.reshape(N, x.shape[1], num_heads, d).transpose(0, 2, 1, 3)

    scores = heads(q) @ heads(k).transpose(0, 1, 3, 2) / np.sqrt(d)   # [N, h, Tq, Tk]
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ heads(v)).transpose(0, 2, 1, 3).reshape(N, Tq, Ci)
    return _linear(out, p["out_proj"])


def two_way_block(p, queries, keys, query_pe, key_pe, num_heads, skip_first_layer_pe):
    if skip_first_layer_pe:
        queries = attention(p["self_attn"], queries, queries, queries, num_heads)
    else:
        q = queries + query_pe
        queries = queries + attention(p["self_attn"], q, q, queries, num_heads)
    queries = _layer_norm(queries, p["norm1"])
    queries = queries + attention(p["cross_attn_token_to_image"], queries + query_pe, keys + key_pe, keys, num_heads)
    queries = _layer_norm(queries, p["norm2"])
    hidden = np.maximum(_linear(queries, p["mlp"]["lin1"]), 0)
    queries = _layer_norm(queries + _linear(hidden, p["mlp"]["lin2"]), p["norm3"])
    keys = keys + attention(p["cross_attn_image_to_token"], keys + key_pe, queries + query_pe, queries, num_heads)
    keys = _layer_norm(keys, p["norm4"])
    return queries, keys
