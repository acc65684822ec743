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

This is the readable path, written as the official file is (the image repeated per prompt,
channels-first upscaling). :mod:`minisam.kernels.mask_decoder` runs the same arithmetic for
one image and many prompts; ``tests/test_mask_decoder.py`` holds the two equal.
Shapes (``docs/shapes.md``): N prompts, Tt tokens (1 + K + Ns), K mask tokens, C channels,
G grid side, GG = G*G, R = 4G low-res mask side.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from minisam.modeling.common import LAYER_NORM_2D_EPS, gelu, layer_norm_2d, linear, relu
from minisam.modeling.transformer import two_way_transformer


def mlp(p, x, num_layers: int, trace=None, name: str = ""):  # [N, in] -> [N, out]
    """``MLP`` (from MaskFormer): Linear -> ReLU -> ... -> Linear, no sigmoid."""
    for i in range(num_layers):
        x = linear(x, **p["layers"][i])  # [N, in_i] -> [N, out_i]
        if trace is not None:
            trace[f"{name}.layers.{i}"] = x
        if i < num_layers - 1:
            x = relu(x)  # [N, out_i], F.relu (not a module: no hook)
    if trace is not None:
        trace[name] = x
    return x


def conv_transpose2x2_s2(x, weight, bias):  # [N, Cin, g, g], [Cin, Cout, 2, 2], [Cout] -> [N, Cout, 2g, 2g]
    """``ConvTranspose2d(kernel_size=2, stride=2)``: no overlap, so each input pixel paints its
    own 2x2 output patch, ``out[o, 2i+di, 2j+dj] = sum_c x[c, i, j] W[c, o, di, dj] + b[o]``.
    The weight layout is (in, out, kH, kW).

    One GEMM per image, W^T [Cout*2*2, Cin] @ x [Cin, g*g], gives every patch entry (o, di, dj)
    as a g x g plane; the plane (di, dj) fills the output pixels (2i + di, 2j + dj). Four strided
    copies put them in place, each with rows of g pixels (a single 6-axis transposing copy
    would move them two at a time, 2-3x slower)."""
    N, Cin, H, W = x.shape
    Cout = weight.shape[1]
    w_t = weight.reshape(Cin, Cout * 4).T  # [Cout*2*2, Cin]
    planes = (w_t @ x.reshape(N, Cin, H * W)).reshape(N, Cout, 2, 2, H, W)  # [N, Cout, 2, 2, g, g]
    out = np.empty((N, Cout, H, 2, W, 2), planes.dtype)  # [N, Cout, g, 2, g, 2], i.e. [N, Cout, 2g, 2g]
    for di in range(2):
        for dj in range(2):
            np.add(planes[:, :, di, dj], bias[None, :, None, None], out=out[:, :, :, di, :, dj])  # [N, Cout, g, g]
    return out.reshape(N, Cout, 2 * H, 2 * W)  # [N, Cout, 2g, 2g]


def output_upscaling(p, x, trace=None, name: str = "mask_decoder.output_upscaling"):
    """ConvT 2x2/2 -> LayerNorm2d -> GELU -> ConvT 2x2/2 -> GELU: [N, C, G, G] -> [N, C/8, 4G, 4G]."""
    steps = []
    x = conv_transpose2x2_s2(x, p[0]["weight"], p[0]["bias"])  # [N, C, G, G] -> [N, C/4, 2G, 2G]
    steps.append(x)
    x = layer_norm_2d(x, p[1]["weight"], p[1]["bias"], LAYER_NORM_2D_EPS)  # [N, C/4, 2G, 2G]
    steps.append(x)
    x = gelu(x)  # [N, C/4, 2G, 2G]
    steps.append(x)
    x = conv_transpose2x2_s2(x, p[3]["weight"], p[3]["bias"])  # [N, C/4, 2G, 2G] -> [N, C/8, 4G, 4G]
    steps.append(x)
    x = gelu(x)  # [N, C/8, 4G, 4G]
    steps.append(x)
    if trace is not None:
        for i, step in enumerate(steps):
            trace[f"{name}.{i}"] = step
        trace[name] = x
    return x


def predict_masks(p, cfg, image_embeddings, image_pe, sparse, dense, trace=None):
    """``MaskDecoder.predict_masks``: all K masks and K IoU scores.

    image_embeddings [1, C, G, G], image_pe [1, C, G, G], sparse [N, Ns, C], dense [N, C, G, G]
    -> (masks [N, K, R, R], iou [N, K]).
    """
    K = cfg.num_mask_tokens
    N = sparse.shape[0]
    output_tokens = np.concatenate([p["iou_token"]["weight"], p["mask_tokens"]["weight"]], axis=0)  # [1+K, C]
    output_tokens = np.broadcast_to(output_tokens[None], (N,) + output_tokens.shape)  # [N, 1+K, C]
    tokens = np.concatenate([output_tokens, sparse], axis=1)  # [N, Tt, C]

    # One image, N prompts: the image is repeated per prompt (torch.repeat_interleave).
    src = np.repeat(image_embeddings, N, axis=0) + dense  # [N, C, G, G]
    pos_src = np.repeat(image_pe, N, axis=0)  # [N, C, G, G]
    _, C, G, _ = src.shape

    hs, src = two_way_transformer(p["transformer"], cfg, src, pos_src, tokens, trace)  # [N, Tt, C], [N, GG, C]
    iou_token_out = hs[:, 0, :]  # [N, C]
    mask_tokens_out = hs[:, 1:1 + K, :]  # [N, K, C]

    src = src.transpose(0, 2, 1).reshape(N, C, G, G)  # [N, GG, C] -> [N, C, G, G]
    upscaled = output_upscaling(p["output_upscaling"], src, trace)  # [N, C/8, R, R]
    hyper_in = np.stack([mlp(p["output_hypernetworks_mlps"][i], mask_tokens_out[:, i, :], 3, trace,
                             f"mask_decoder.output_hypernetworks_mlps.{i}")
                         for i in range(K)], axis=1)  # K x [N, C/8] -> [N, K, C/8]
    _, c, R, _ = upscaled.shape
    # mask logits: each mask token's vector dotted with the upscaled embedding at every pixel
    masks = (hyper_in @ upscaled.reshape(N, c, R * R)).reshape(N, K, R, R)  # [N, K, c] @ [N, c, R*R] -> [N, K, R, R]

    iou_pred = mlp(p["iou_prediction_head"], iou_token_out, cfg.iou_head_depth, trace,
                   "mask_decoder.iou_prediction_head")  # [N, C] -> [N, K], raw scores
    return masks, iou_pred


def mask_decoder(p, cfg, image_embeddings, image_pe, sparse, dense, multimask_output: bool,
                 trace: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``MaskDecoder.forward``: the three ambiguity masks (tokens 1..K-1) or the single mask (token 0).

    -> (low_res_masks [N, K', R, R], iou_predictions [N, K']) with K' = K-1 or 1.
    """
    masks, iou_pred = predict_masks(p, cfg, image_embeddings, image_pe, sparse, dense, trace)  # [N, K, R, R], [N, K]
    sel = slice(1, None) if multimask_output else slice(0, 1)
    masks = masks[:, sel]  # [N, K', R, R]
    iou_pred = iou_pred[:, sel]  # [N, K']
    if trace is not None:
        trace["mask_decoder"] = (masks, iou_pred)
    return masks, iou_pred
