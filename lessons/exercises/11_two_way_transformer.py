"""Exercises for lesson 11: the two-way transformer.

Fill in each function, then run ``python lessons/exercises.py 11``. NumPy only in your answers.
Parameters come as nested dicts keyed like the checkpoint: a Linear is ``{"weight": [out, in],
"bias": [out]}``, a LayerNorm ``{"weight": [C], "bias": [C]}`` (eps 1e-5).
"""

import numpy as np  # noqa: F401  (for your answers)


def attention(p, q, k, v, num_heads):
    """Exercise 11.1. The decoder's attention (official ``transformer.py`` ``Attention``).

    ``p``: {"q_proj", "k_proj", "v_proj", "out_proj"} Linears; the projections go from C to
    C_i channels (C_i = C for self-attention, C / 2 for the cross-attentions) and ``out_proj``
    back. ``q``: [N, Tq, C], ``k`` and ``v``: [N, Tk, C]. Project, split C_i into ``num_heads``
    heads of d channels, softmax(q k^T / sqrt(d)) over the keys, weighted sum of v, merge the
    heads, project out. Returns [N, Tq, C].
    """
    raise NotImplementedError("11.1 attention")


def two_way_block(p, queries, keys, query_pe, key_pe, num_heads, skip_first_layer_pe):
    """Exercise 11.2. One two-way block: the four steps of lesson 11.

    ``p``: {"self_attn", "norm1", "cross_attn_token_to_image", "norm2", "mlp": {"lin1", "lin2"},
    "norm3", "cross_attn_image_to_token", "norm4"}. ``queries`` [N, T, C] the tokens, ``keys``
    [N, G*G, C] the image, ``query_pe`` and ``key_pe`` their positional encodings. With
    ``skip_first_layer_pe`` (block 0) step 1 replaces the tokens by the self-attention of the
    tokens alone (no PE, no residual). Use your ``attention``. Returns ``(queries, keys)``.
    """
    raise NotImplementedError("11.2 two_way_block")
