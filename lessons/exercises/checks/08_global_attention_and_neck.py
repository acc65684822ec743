"""Checks for lesson 08's exercises: counts from the official state dict shapes, minisam's LayerNorm2d."""

import numpy as np
from _common import close

from minisam.config import MICRO, VIT_B, VIT_H, VIT_L, expected_shapes
from minisam.kernels.layers import layer_norm2d_numpy
from minisam.modeling.image_encoder import window_partition


def check_scores(m):
    for G, w in [(64, 14), (16, 8), (10, 4), (7, 7), (5, 3)]:
        windows, _ = window_partition(np.zeros((1, G, G, 1), np.float32), w)   # the windows a block attends in
        windowed = windows.shape[0] * (w * w) ** 2
        mine = tuple(int(v) for v in m.scores_per_head(G, w))
        assert mine == (windowed, G ** 4), f"G={G}, w={w}: {mine}, expected {(windowed, G ** 4)}"
    windowed, global_ = m.scores_per_head(64, 14)
    return f"ViT-B: {windowed / 1e6:.2f}M scores per head windowed, {global_ / 1e6:.1f}M global"


def check_params(m):
    for cfg in (VIT_B, VIT_L, VIT_H, MICRO):
        shapes = expected_shapes(cfg)
        for block in (0, cfg.encoder_global_attn_indexes[0]):
            prefix = f"image_encoder.blocks.{block}."
            count = sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith(prefix))
            rel_len = shapes[prefix + "attn.rel_pos_h"][0]
            mine = int(m.block_params(cfg.encoder_embed_dim, cfg.encoder_num_heads, rel_len))
            assert mine == count, f"D={cfg.encoder_embed_dim}, {cfg.encoder_num_heads} heads, rel_pos_len " \
                                  f"{rel_len}: {mine}, the checkpoint's block {block} holds {count}"
    return f"ViT-H block: {m.block_params(1280, 16, 27) / 1e6:.1f}M parameters"


def check_layer_norm(m):
    rng = np.random.default_rng(0)
    for C, H, W in [(8, 5, 7), (32, 4, 4), (3, 1, 9)]:
        x = (rng.normal(size=(C, H, W)) * 3 + 1).astype(np.float32)
        weight, bias = rng.normal(size=C).astype(np.float32), rng.normal(size=C).astype(np.float32)
        close(m.layer_norm_2d(x, weight, bias), layer_norm2d_numpy(x[None], weight, bias)[0],
              f"LayerNorm2d of a {(C, H, W)} map", rtol=1e-4, atol=1e-5)


CHECKS = [("08.1 scores per head, windowed and global", check_scores),
          ("08.2 the parameters of one ViT block", check_params),
          ("08.3 LayerNorm2d", check_layer_norm)]
