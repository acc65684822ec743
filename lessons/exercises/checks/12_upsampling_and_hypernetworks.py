"""Checks for lesson 12's exercises: against minisam/modeling/mask_decoder.py on a random model."""

import copy

import numpy as np
from _common import TINY, close, random_sam

from minisam.modeling.mask_decoder import conv_transpose2x2_s2, predict_masks


def decode(sam, p, seed):
    rng = np.random.default_rng(seed)
    G, C, S = TINY.image_embedding_size, TINY.prompt_embed_dim, TINY.img_size
    emb = rng.normal(size=(1, C, G, G)).astype(np.float32)
    points = (rng.uniform(0, S, (2, 2, 2)).astype(np.float32), np.array([[1, 0], [1, 1]]))
    sparse, dense = sam.prompt_encoder(points=points)
    trace = {}
    masks, iou = predict_masks(p, TINY, emb, sam.get_dense_pe(), sparse, dense, trace=trace)
    return masks, iou, trace


def check_product(m):
    sam = random_sam(TINY)
    masks, _, trace = decode(sam, sam.params["mask_decoder"], 0)
    K = masks.shape[1]
    for n in range(masks.shape[0]):
        hyper = np.stack([trace[f"mask_decoder.output_hypernetworks_mlps.{k}"][n] for k in range(K)])   # [K, c]
        upscaled = trace["mask_decoder.output_upscaling"][n]                                          # [c, R, R]
        close(m.masks_from_hypernetwork(hyper, upscaled), masks[n], f"prompt {n}: the {K} masks",
              rtol=1e-4, atol=1e-5)


def check_conv_transpose(m):
    rng = np.random.default_rng(1)
    for cin, cout, g in [(8, 4, 3), (32, 8, 8), (1, 1, 1)]:
        x = rng.normal(size=(cin, g, g)).astype(np.float32)
        w = rng.normal(size=(cin, cout, 2, 2)).astype(np.float32)
        b = rng.normal(size=cout).astype(np.float32)
        close(m.conv_transpose_2x2(x, w, b), conv_transpose2x2_s2(x[None], w, b)[0],
              f"ConvTranspose2d {cin} -> {cout} on {g} x {g}", rtol=1e-4, atol=1e-5)


def check_swap(m):
    sam = random_sam(TINY)
    p = sam.params["mask_decoder"]
    before = copy.deepcopy(p)
    for i, j in [(1, 3), (0, 2)]:
        swapped = m.swap_mask_outputs(p, i, j)
        for name in ("mask_tokens", "iou_prediction_head", "output_hypernetworks_mlps"):
            assert _equal(p[name], before[name]), f"swap_mask_outputs changed its input's {name!r}: return new weights"
        for seed in (2, 3):
            masks, iou, _ = decode(sam, p, seed)
            masks2, iou2, _ = decode(sam, swapped, seed)
            order = list(range(masks.shape[1]))
            order[i], order[j] = j, i
            close(masks2, masks[:, order], f"masks after swapping outputs {i} and {j}", rtol=1e-4, atol=1e-4)
            close(iou2, iou[:, order], f"predicted IoUs after swapping outputs {i} and {j}", rtol=1e-4, atol=1e-5)


def _equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


CHECKS = [("12.1 masks = hypernetwork vectors x upscaled embedding", check_product),
          ("12.2 a 2x2 stride-2 transposed conv as one matmul", check_conv_transpose),
          ("12.3 swap two outputs by editing the weights", check_swap)]
