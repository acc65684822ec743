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

from minisam.kernels.layers import gelu, layer_norm
from minisam.modeling.transformer import linear, two_way_transformer

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
    The weight layout is (in, out, kH, kW). Readable channels-first form (the decoder runs
    :func:`conv_transpose2x2_s2_nhwc`)."""
    B, Ci, H, W = x.shape
    Co = weight.shape[1]
    pixels = x.transpose(0, 2, 3, 1).reshape(B * H * W, Ci)  # [B, Ci, H, W] -> [B*H*W, Ci]
    patches = pixels @ weight.reshape(Ci, Co * 4)  # [B*H*W, Ci] @ [Ci, Co*2*2] -> [B*H*W, Co*4]
    patches = patches.reshape(B, H, W, Co, 2, 2)  # [B, H, W, Co, 2, 2]
    out = patches.transpose(0, 3, 1, 4, 2, 5).reshape(B, Co, 2 * H, 2 * W)  # [B, Co, 2H, 2W]
    return out + bias[None, :, None, None]  # [B, Co, 2H, 2W]


def conv_transpose2x2_s2_nhwc(x, weight, bias):  # [B, H, W, Ci], [Ci, Co, 2, 2], [Co] -> [B, 2H, 2W, Co]
    """The same transposed conv, channels-last: the GEMM writes [pixel, di, dj, Co] (weight
    reordered to (in, kH, kW, out)), and one strided copy, fused with the bias add, puts the
    2x2 patches in place. No channels-first transposes of the big upscaled tensors."""
    B, H, W, Ci = x.shape
    Co = weight.shape[1]
    w = np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(Ci, 4 * Co)  # [Ci, 2*2*Co]
    patches = x.reshape(B * H * W, Ci) @ w  # [B*H*W, Ci] @ [Ci, 2*2*Co] -> [B*H*W, 2*2*Co]
    patches = patches.reshape(B, H, W, 2, 2, Co).transpose(0, 1, 3, 2, 4, 5)  # [B, H, di, W, dj, Co]
    out = np.empty((B, H, 2, W, 2, Co), np.float32)  # [B, H, 2, W, 2, Co]
    np.add(patches, bias, out=out)  # copy into place + bias, one pass
    return out.reshape(B, 2 * H, 2 * W, Co)  # [B, 2H, 2W, Co]


def output_upscaling(p, src, trace=None):  # [B, G, G, C] channels-last -> [B, 4G, 4G, C/8] channels-last
    """ConvT 2x2/2 -> LayerNorm2d -> GELU -> ConvT 2x2/2 -> GELU, all channels-last.

    A LayerNorm2d over channels is a LayerNorm over the last axis of the channels-last tensor.
    The trace gets the official (channels-first) layout.
    """
    name = "mask_decoder.output_upscaling"
    x = conv_transpose2x2_s2_nhwc(src, p[0]["weight"], p[0]["bias"])  # [B, G, G, C] -> [B, 2G, 2G, C/4]
    steps = [x.copy()] if trace is not None else []
    x = layer_norm(x, p[1]["weight"], p[1]["bias"], LN2D_EPS)  # [B, 2G, 2G, C/4]
    steps += [x.copy()] if trace is not None else []
    gelu(x, out=x)  # [B, 2G, 2G, C/4] in place
    steps += [x] if trace is not None else []
    x = conv_transpose2x2_s2_nhwc(x, p[3]["weight"], p[3]["bias"])  # [B, 2G, 2G, C/4] -> [B, 4G, 4G, C/8]
    steps += [x.copy()] if trace is not None else []
    gelu(x, out=x)  # [B, 4G, 4G, C/8] in place
    if trace is not None:
        steps.append(x)
        for i, s in enumerate(steps):
            trace[f"{name}.{i}"] = np.ascontiguousarray(s.transpose(0, 3, 1, 2))  # [B, Co, H, W]
        trace[name] = trace[f"{name}.4"]
    return x


_UPSCALE_CHUNK = 4  # prompts upscaled at a time: ~32 MB of intermediates each, not B x 8 MB


def predict_masks(p, cfg, image_embeddings, image_pe, sparse, dense, trace=None, image_cache=None):
    """``MaskDecoder.predict_masks``: all K masks and K IoU scores.

    image_embeddings [1, C, G, G], image_pe [1, C, G, G], sparse [B, Ns, C], dense [B, C, G, G]
    -> (masks [B, K, M, M], iou [B, K]).
    ``image_cache``: a dict the caller keeps for this image and clears when the image changes,
    passed only when ``dense`` is the no-mask embedding (every prompt has the same one); what
    depends on the image alone is then computed on the first call only (see
    :func:`minisam.modeling.transformer.image_side_projections`). Ignored when tracing.
    """
    if trace is not None:
        image_cache = None
    K = cfg.num_mask_tokens
    output_tokens = np.concatenate([p["iou_token"]["weight"], p["mask_tokens"]["weight"]], axis=0)  # [1+K, C]
    B = sparse.shape[0]
    output_tokens = np.broadcast_to(output_tokens[None], (B,) + output_tokens.shape)  # [B, 1+K, C]
    tokens = np.concatenate([output_tokens, sparse], axis=1)  # [B, T, C]

    # One image, B prompts: the official code repeats the image per prompt (repeat_interleave).
    # Without mask inputs every prompt has the same dense embedding (a broadcast view, stride 0),
    # so one copy of the image tokens serves all prompts until layer 0's image-to-token
    # attention; the traced path keeps the official [B, ...] layout.
    pos_src = image_pe  # [1, C, G, G], broadcast over the prompts
    if image_cache is not None:
        if "src" not in image_cache:
            image_cache["src"] = image_embeddings + dense[:1]  # [1, C, G, G]
        src = image_cache["src"]  # [1, C, G, G]
    elif trace is None and B > 1 and dense.strides[0] == 0:
        src = image_embeddings + dense[:1]  # [1, C, G, G]
    else:
        src = np.repeat(image_embeddings, B, axis=0) + dense  # [B, C, G, G]
        if trace is not None:
            pos_src = np.repeat(image_pe, B, axis=0)  # [B, C, G, G]
    _, C, G, _ = src.shape

    hs, src = two_way_transformer(p["transformer"], cfg, src, pos_src, tokens, trace,
                                  image_cache=image_cache)  # [B, T, C], [B, N, C]
    iou_token_out = hs[:, 0, :]  # [B, C]
    mask_tokens_out = hs[:, 1:1 + K, :]  # [B, K, C]

    hyper_in = np.stack([mlp(p["output_hypernetworks_mlps"][i], mask_tokens_out[:, i, :], 3, trace,
                             f"mask_decoder.output_hypernetworks_mlps.{i}")
                         for i in range(K)], axis=1)  # K x [B, C/8] -> [B, K, C/8]
    src = src.reshape(B, G, G, C)  # [B, N, C] -> [B, G, G, C], channels-last: no transpose
    M = 4 * G
    masks = np.empty((B, K, M * M), np.float32)  # [B, K, M*M]
    step = B if trace is not None else _UPSCALE_CHUNK  # the trace wants whole tensors
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        upscaled = output_upscaling(p["output_upscaling"], src[b0:b1], trace)  # [b, M, M, C/8]
        # mask logits: each mask token's vector dotted with the upscaled embedding at every pixel
        np.matmul(hyper_in[b0:b1], upscaled.reshape(b1 - b0, M * M, -1).transpose(0, 2, 1),
                  out=masks[b0:b1])  # [b, K, C/8] @ [b, C/8, M*M] -> [b, K, M*M]
    masks = masks.reshape(B, K, M, M)  # [B, K, M, M]

    iou_pred = mlp(p["iou_prediction_head"], iou_token_out, cfg.iou_head_depth, trace,
                   "mask_decoder.iou_prediction_head")  # [B, C] -> [B, K], raw scores
    return masks, iou_pred


def mask_decoder(p, cfg, image_embeddings, image_pe, sparse, dense, multimask_output: bool,
                 trace: Optional[dict] = None, image_cache=None) -> Tuple[np.ndarray, np.ndarray]:
    """``MaskDecoder.forward``: the three ambiguity masks (tokens 1..K-1) or the single mask (token 0).

    -> (low_res_masks [B, K', M, M], iou_predictions [B, K']) with K' = K-1 or 1.
    ``image_cache``: see :func:`predict_masks`.
    """
    masks, iou_pred = predict_masks(p, cfg, image_embeddings, image_pe, sparse, dense, trace,
                                    image_cache)  # [B, K, M, M], [B, K]
    sel = slice(1, None) if multimask_output else slice(0, 1)
    masks = np.ascontiguousarray(masks[:, sel])  # [B, K', M, M]
    iou_pred = np.ascontiguousarray(iou_pred[:, sel])  # [B, K']
    if trace is not None:
        trace["mask_decoder"] = (masks, iou_pred)
    return masks, iou_pred
