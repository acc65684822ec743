"""SAM's mask decoder: two-way transformer, upscaling, hypernetwork heads, IoU head.

Paper: Kirillov et al. 2023, section 3 ("Mask decoder", "Resolving ambiguity") and
appendix A (figure 14). Mirrors ``segment_anything/modeling/mask_decoder.py``
(``MaskDecoder``, ``MLP``).

- Output tokens: 1 IoU token and K = num_multimask_outputs + 1 mask tokens, learned, are put
  before the sparse prompt tokens; the two-way transformer updates them together with the
  image embedding (plus the dense prompt embedding).
- The updated image embedding is upscaled 4x by two transposed convolutions (C -> C/4 -> C/8
  channels). Each mask token goes through its own 3-layer MLP (a "hypernetwork") to a C/8
  vector; the mask logits are the dot product of that vector with the upscaled embedding
  at every pixel: a dynamic 1x1 conv whose weights come from the prompt.
- The IoU token goes through an MLP to K raw scores (no sigmoid), the predicted IoU of
  each mask.
- Ambiguity: token 0 is the single-mask output; tokens 1..K-1 are the three ambiguity-aware
  masks returned when ``multimask_output`` is on.

Shapes: B prompts, T tokens (1 + K + Ns), K mask tokens, C channels, G grid side,
N = G*G, M = 4G low-res mask side.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .kernels import gelu, layer_norm2d
from .transformer import linear, two_way_transformer

LN2D_EPS = 1e-6  # LayerNorm2d default (modeling/common.py)


def mlp(p, x, num_layers: int, trace=None, name: str = ""):  # [B, in] -> [B, out]
    """``MLP`` (from MaskFormer): Linear -> ReLU -> ... -> Linear, no sigmoid."""
    for i in range(num_layers):
        x = linear(x, p["layers"][i])  # [B, in_i] -> [B, out_i]
        if trace is not None:
            trace[f"{name}.layers.{i}"] = x
        if i < num_layers - 1:
            x = np.maximum(x, np.float32(0))  # [B, out_i], F.relu (not a module: no hook)
    if trace is not None:
        trace[name] = x
    return x


def conv_transpose2x2_s2(x, weight, bias):  # [B, Ci, H, W], [Ci, Co, 2, 2], [Co] -> [B, Co, 2H, 2W]
    """ConvTranspose2d(kernel 2, stride 2): no overlap, so each input pixel paints its own
    2x2 output patch, ``out[o, 2i+di, 2j+dj] = sum_c x[c, i, j] W[c, o, di, dj] + b[o]``: one GEMM.
    The weight layout is (in, out, kH, kW)."""
    B, Ci, H, W = x.shape
    Co = weight.shape[1]
    pixels = x.transpose(0, 2, 3, 1).reshape(B * H * W, Ci)  # [B, Ci, H, W] -> [B*H*W, Ci]
    patches = pixels @ weight.reshape(Ci, Co * 4)  # [B*H*W, Ci] @ [Ci, Co*2*2] -> [B*H*W, Co*4]
    patches = patches.reshape(B, H, W, Co, 2, 2)  # [B, H, W, Co, 2, 2]
    out = patches.transpose(0, 3, 1, 4, 2, 5).reshape(B, Co, 2 * H, 2 * W)  # [B, Co, 2H, 2W]
    return out + bias[None, :, None, None]  # [B, Co, 2H, 2W]


def output_upscaling(p, src, trace=None):  # [B, C, G, G] -> [B, C/8, 4G, 4G]
    """ConvT 2x2/2 -> LayerNorm2d -> GELU -> ConvT 2x2/2 -> GELU."""
    name = "mask_decoder.output_upscaling"
    x = conv_transpose2x2_s2(src, p[0]["weight"], p[0]["bias"])  # [B, C, G, G] -> [B, C/4, 2G, 2G]
    steps = [x]
    x = layer_norm2d(x, p[1]["weight"], p[1]["bias"], LN2D_EPS)  # [B, C/4, 2G, 2G]
    steps.append(x)
    x = gelu(x)  # [B, C/4, 2G, 2G]
    steps.append(x)
    x = conv_transpose2x2_s2(x, p[3]["weight"], p[3]["bias"])  # [B, C/4, 2G, 2G] -> [B, C/8, 4G, 4G]
    steps.append(x)
    x = gelu(x)  # [B, C/8, 4G, 4G]
    steps.append(x)
    if trace is not None:
        for i, s in enumerate(steps):
            trace[f"{name}.{i}"] = s
        trace[name] = x
    return x


def predict_masks(p, cfg, image_embeddings, image_pe, sparse, dense, trace=None):
    """``MaskDecoder.predict_masks``: all K masks and K IoU scores.

    image_embeddings [1, C, G, G], image_pe [1, C, G, G], sparse [B, Ns, C], dense [B, C, G, G]
    -> (masks [B, K, M, M], iou [B, K]).
    """
    K = cfg.num_mask_tokens
    output_tokens = np.concatenate([p["iou_token"]["weight"], p["mask_tokens"]["weight"]], axis=0)  # [1+K, C]
    B = sparse.shape[0]
    output_tokens = np.broadcast_to(output_tokens[None], (B,) + output_tokens.shape)  # [B, 1+K, C]
    tokens = np.concatenate([output_tokens, sparse], axis=1)  # [B, T, C]

    # One image, B prompts: repeat the image per prompt (repeat_interleave).
    src = np.repeat(image_embeddings, B, axis=0) + dense  # [B, C, G, G]
    pos_src = np.repeat(image_pe, B, axis=0)  # [B, C, G, G]
    _, C, G, _ = src.shape

    hs, src = two_way_transformer(p["transformer"], cfg, src, pos_src, tokens, trace)  # [B, T, C], [B, N, C]
    iou_token_out = hs[:, 0, :]  # [B, C]
    mask_tokens_out = hs[:, 1:1 + K, :]  # [B, K, C]

    src = src.transpose(0, 2, 1).reshape(B, C, G, G)  # [B, N, C] -> [B, C, G, G]
    upscaled = output_upscaling(p["output_upscaling"], src, trace)  # [B, C/8, M, M]
    hyper_in = np.stack([mlp(p["output_hypernetworks_mlps"][i], mask_tokens_out[:, i, :], 3, trace,
                             f"mask_decoder.output_hypernetworks_mlps.{i}")
                         for i in range(K)], axis=1)  # K x [B, C/8] -> [B, K, C/8]
    _, c8, M, _ = upscaled.shape
    masks = hyper_in @ upscaled.reshape(B, c8, M * M)  # [B, K, C/8] @ [B, C/8, M*M] -> [B, K, M*M]
    masks = masks.reshape(B, K, M, M)  # [B, K, M, M]

    iou_pred = mlp(p["iou_prediction_head"], iou_token_out, cfg.iou_head_depth, trace,
                   "mask_decoder.iou_prediction_head")  # [B, C] -> [B, K], raw scores
    return masks, iou_pred


def mask_decoder(p, cfg, image_embeddings, image_pe, sparse, dense, multimask_output: bool,
                 trace: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``MaskDecoder.forward``: the three ambiguity masks (tokens 1..K-1) or the single mask (token 0).

    -> (low_res_masks [B, K', M, M], iou_predictions [B, K']) with K' = K-1 or 1.
    """
    masks, iou_pred = predict_masks(p, cfg, image_embeddings, image_pe, sparse, dense, trace)  # [B, K, M, M], [B, K]
    sel = slice(1, None) if multimask_output else slice(0, 1)
    masks = np.ascontiguousarray(masks[:, sel])  # [B, K', M, M]
    iou_pred = np.ascontiguousarray(iou_pred[:, sel])  # [B, K']
    if trace is not None:
        trace["mask_decoder"] = (masks, iou_pred)
    return masks, iou_pred
