"""Checks for lesson 11's exercises: against minisam/modeling/transformer.py on a random model."""

import numpy as np
from _common import TINY, close, random_sam

from minisam.modeling import transformer as ref


def inputs(seed, T=7, N=2):
    rng = np.random.default_rng(seed)
    C, GG = TINY.prompt_embed_dim, TINY.image_embedding_size ** 2
    return [rng.normal(size=shape).astype(np.float32) for shape in [(N, T, C), (N, GG, C), (N, T, C), (N, GG, C)]]


def check_attention(m):
    layers = random_sam(TINY).params["mask_decoder"]["transformer"]["layers"]
    tokens, image, _, _ = inputs(0)
    h = TINY.decoder_num_heads
    for name, q, k in [("self_attn", tokens, tokens), ("cross_attn_token_to_image", tokens, image),
                       ("cross_attn_image_to_token", image, tokens)]:
        p = layers[0][name]
        close(m.attention(p, q, k, k, h), ref.attention(p, q, k, k, h), f"{name} (projections to "
              f"{p['q_proj']['weight'].shape[0]} channels)", rtol=1e-4, atol=1e-5)


def check_block(m):
    layers = random_sam(TINY).params["mask_decoder"]["transformer"]["layers"]
    tokens, image, tokens_pe, image_pe = inputs(1)
    for i, skip in [(0, True), (1, False)]:
        mine = m.two_way_block(layers[i], tokens, image, tokens_pe, image_pe, TINY.decoder_num_heads, skip)
        expected = ref.two_way_block(layers[i], tokens, image, tokens_pe, image_pe, TINY.decoder_num_heads, skip)
        close(mine[0], expected[0], f"block {i}: the tokens", rtol=1e-4, atol=1e-4)
        close(mine[1], expected[1], f"block {i}: the image", rtol=1e-4, atol=1e-4)


CHECKS = [("11.1 the decoder's attention", check_attention),
          ("11.2 one two-way block", check_block)]
