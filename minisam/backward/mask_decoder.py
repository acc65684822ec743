"""Forward and backward of SAM's mask decoder: output tokens, two-way transformer, upscaling,
hypernetwork heads and the IoU head.

Paper: Kirillov et al. 2023, section 3 ("Mask decoder", "Resolving ambiguity") and appendix A
(figure 14). Mirrors ``segment_anything/modeling/mask_decoder.py`` (``MaskDecoder``, ``MLP``),
whose forward :mod:`minisam.modeling.mask_decoder` writes out.

What flows back, and where it goes:
- the mask logits are a product ``hyper_in @ upscaled``: the gradient splits into one for the
  hypernetwork vectors (through each mask token's MLP into the transformer's tokens) and one
  for the upscaled embedding (through the two transposed convs into the transformer's image);
- the IoU scores go back through the IoU head MLP into the IoU token;
- the output tokens are learned weights shared by every prompt, so their gradient sums over
  the N prompts; so does the image embedding's, since one image is repeated per prompt; the
  dense prompt embedding is added per prompt and keeps its own;
- with ``multimask_output`` only tokens 1..3 reach the loss, else only token 0: the tokens
  not returned get zero gradient from the masks and IoU scores, as under autograd.

``grad_trace`` collects the gradient of each official module's output keyed by its module path,
as in :mod:`minisam.backward.transformer`. Shapes (``docs/shapes.md``): N prompts, Tt tokens,
K mask tokens, K' masks returned, C channels, G grid side, GG = G*G, R = 4G.
"""

from __future__ import annotations

import numpy as np

from minisam.backward.common import (gelu_backward, gelu_forward, layer_norm_backward, layer_norm_forward,
                                     linear_backward, linear_forward, relu_backward, relu_forward)
from minisam.backward.transformer import two_way_transformer_backward, two_way_transformer_forward
from minisam.modeling.common import LAYER_NORM_2D_EPS
from minisam.modeling.mask_decoder import conv_transpose2x2_s2


# --------------------------------------------------------------------------- MLP

def mlp_forward(p, x, num_layers: int):  # [N, in] -> [N, out], cache
    """``MLP``: Linear -> ReLU -> ... -> Linear (no sigmoid)."""
    caches = []
    for i in range(num_layers):
        x, lin = linear_forward(x, **p["layers"][i])  # [N, in_i] -> [N, out_i]
        on = None
        if i < num_layers - 1:
            x, on = relu_forward(x)  # [N, out_i]
        caches.append((lin, on))
    return x, caches


def mlp_backward(dy, caches, grad_trace=None, name: str = ""):  # [N, out] -> [N, in], grads
    """Each layer in reverse: the ReLU's mask, then the linear backward."""
    if grad_trace is not None:
        grad_trace[name] = dy
    layers = {}  # keyed by layer index, as the parameter tree
    for i in reversed(range(len(caches))):
        lin, on = caches[i]
        if on is not None:
            dy = relu_backward(dy, on)  # [N, out_i]
        if grad_trace is not None:
            grad_trace[f"{name}.layers.{i}"] = dy
        dy, layers[i] = linear_backward(dy, lin)  # [N, out_i] -> [N, in_i]
    return dy, {"layers": layers}


# --------------------------------------------------------------------------- upscaling

def conv_transpose2x2_s2_forward(x, weight, bias):  # [N, Cin, g, g], [Cin, Cout, 2, 2], [Cout] -> [N, Cout, 2g, 2g]
    """:func:`minisam.modeling.mask_decoder.conv_transpose2x2_s2`, keeping (x, weight) for the backward."""
    return conv_transpose2x2_s2(x, weight, bias), (x, weight)  # [N, Cout, 2g, 2g]


def conv_transpose2x2_s2_backward(dy, cache):  # [N, Cout, 2g, 2g] -> [N, Cin, g, g], grads
    """out = planes(W^T x) + b with no overlap between patches, so the backward is the GEMM's:
    gather dy back into the planes [N, Cout*2*2, g*g]; dx = W dplanes, dW = sum over images of
    x dplanes^T, db = dy summed over everything but the channel."""
    x, weight = cache
    N, Cin, H, W = x.shape
    Cout = weight.shape[1]
    dy_patches = dy.reshape(N, Cout, H, 2, W, 2)  # [N, Cout, g, 2, g, 2]
    dplanes = np.empty((N, Cout, 2, 2, H, W), dy.dtype)  # [N, Cout, 2, 2, g, g]
    for di in range(2):
        for dj in range(2):
            dplanes[:, :, di, dj] = dy_patches[:, :, :, di, :, dj]  # [N, Cout, g, g]
    dplanes = dplanes.reshape(N, Cout * 4, H * W)  # [N, Cout*2*2, g*g]
    w = weight.reshape(Cin, Cout * 4)  # [Cin, Cout*2*2]
    dx = (w @ dplanes).reshape(N, Cin, H, W)  # [Cin, Cout*4] @ [N, Cout*4, g*g] -> [N, Cin, g, g]
    dweight = np.matmul(x.reshape(N, Cin, H * W), dplanes.transpose(0, 2, 1)).sum(0)  # [N, Cin, g*g] @ [N, g*g, Cout*4] -> [Cin, Cout*4]
    return dx, {"weight": dweight.reshape(Cin, Cout, 2, 2), "bias": dy.sum((0, 2, 3))}


def output_upscaling_forward(p, x):  # [N, C, G, G] -> [N, C/8, R, R], cache
    """ConvT 2x2/2 -> LayerNorm2d -> GELU -> ConvT 2x2/2 -> GELU (``nn.Sequential`` indices 0..4)."""
    c = {}
    x, c[0] = conv_transpose2x2_s2_forward(x, p[0]["weight"], p[0]["bias"])  # [N, C/4, 2G, 2G]
    x, c[1] = layer_norm_forward(x, p[1]["weight"], p[1]["bias"], LAYER_NORM_2D_EPS, axis=1)  # [N, C/4, 2G, 2G]
    x, c[2] = gelu_forward(x)  # [N, C/4, 2G, 2G]
    x, c[3] = conv_transpose2x2_s2_forward(x, p[3]["weight"], p[3]["bias"])  # [N, C/8, R, R]
    x, c[4] = gelu_forward(x)  # [N, C/8, R, R]
    return x, c


def output_upscaling_backward(dy, c, grad_trace=None, name: str = "mask_decoder.output_upscaling"):
    """The five steps in reverse; the GELUs have no parameters. -> dx [N, C, G, G], grads {0, 1, 3}."""
    g = {}
    if grad_trace is not None:
        grad_trace[name] = grad_trace[f"{name}.4"] = dy
    dy = gelu_backward(dy, c[4])  # [N, C/8, R, R]
    if grad_trace is not None:
        grad_trace[f"{name}.3"] = dy
    dy, g[3] = conv_transpose2x2_s2_backward(dy, c[3])  # [N, C/4, 2G, 2G]
    if grad_trace is not None:
        grad_trace[f"{name}.2"] = dy
    dy = gelu_backward(dy, c[2])  # [N, C/4, 2G, 2G]
    if grad_trace is not None:
        grad_trace[f"{name}.1"] = dy
    dy, g[1] = layer_norm_backward(dy, c[1])  # [N, C/4, 2G, 2G]
    if grad_trace is not None:
        grad_trace[f"{name}.0"] = dy
    dy, g[0] = conv_transpose2x2_s2_backward(dy, c[0])  # [N, C, G, G]
    return dy, g


# --------------------------------------------------------------------------- MaskDecoder

def mask_decoder_forward(p, cfg, image_embeddings, image_pe, sparse, dense, multimask_output: bool):
    """``MaskDecoder.forward`` (``predict_masks`` and the output selection).

    image_embeddings [1, C, G, G] (or [N, C, G, G], one image per prompt), image_pe [1, C, G, G],
    sparse [N, Ns, C], dense [N, C, G, G] -> (masks [N, K', R, R], iou [N, K']), cache.
    """
    K = cfg.num_mask_tokens
    N = sparse.shape[0]
    output_tokens = np.concatenate([p["iou_token"]["weight"], p["mask_tokens"]["weight"]], axis=0)  # [1+K, C]
    tokens = np.concatenate([np.broadcast_to(output_tokens[None], (N,) + output_tokens.shape), sparse], axis=1)  # [N, Tt, C]
    # One image for all prompts (the official case, repeat_interleave) or one per prompt (a
    # training batch drawn from several images): broadcasting covers both.
    src = image_embeddings + dense  # [1 or N, C, G, G] + [N, C, G, G] -> [N, C, G, G]
    pos_src = np.broadcast_to(image_pe, src.shape)  # [N, C, G, G]
    _, C, G, _ = src.shape
    (hs, src), c_tr = two_way_transformer_forward(p["transformer"], cfg, src, pos_src, tokens)  # [N, Tt, C], [N, GG, C]
    iou_token_out = hs[:, 0, :]  # [N, C]
    mask_tokens_out = hs[:, 1:1 + K, :]  # [N, K, C]
    src = src.transpose(0, 2, 1).reshape(N, C, G, G)  # [N, C, G, G]
    upscaled, c_up = output_upscaling_forward(p["output_upscaling"], src)  # [N, C/8, R, R]
    hyper, c_hyper = [], []
    for i in range(K):
        h, cache = mlp_forward(p["output_hypernetworks_mlps"][i], mask_tokens_out[:, i, :], 3)  # [N, C] -> [N, C/8]
        hyper.append(h)
        c_hyper.append(cache)
    hyper_in = np.stack(hyper, axis=1)  # [N, K, C/8]
    _, cc, R, _ = upscaled.shape
    flat = upscaled.reshape(N, cc, R * R)  # [N, C/8, R*R]
    masks = (hyper_in @ flat).reshape(N, K, R, R)  # [N, K, C/8] @ [N, C/8, R*R] -> [N, K, R, R]
    iou_pred, c_iou = mlp_forward(p["iou_prediction_head"], iou_token_out, cfg.iou_head_depth)  # [N, C] -> [N, K]
    sel = slice(1, None) if multimask_output else slice(0, 1)
    cache = (c_tr, c_up, c_hyper, c_iou, hyper_in, flat, sel, (N, K, C, G, R, sparse.shape[1]), len(image_embeddings))
    return (masks[:, sel], iou_pred[:, sel]), cache


def mask_decoder_backward(dmasks, diou, cache, grad_trace=None):
    """Backward of the mask decoder.

    dmasks [N, K', R, R], diou [N, K'] -> (dimage_embeddings [1 or N, C, G, G], dimage_pe [1, C, G, G],
    dsparse [N, Ns, C], ddense [N, C, G, G], grads), grads keyed like ``p`` (``mask_decoder``'s tree).
    The mask product M = H U (H [K, C/8] the hypernetwork vectors, U [C/8, R*R] the upscaled pixels)
    gives dH = dM U^T and dU = H^T dM.
    """
    c_tr, c_up, c_hyper, c_iou, hyper_in, flat, sel, (N, K, C, G, R, Ns), n_images = cache
    if grad_trace is not None:
        grad_trace["mask_decoder"] = (dmasks, diou)
    dmasks_all = np.zeros((N, K, R, R), dmasks.dtype)  # [N, K, R, R], zero for the tokens not returned
    dmasks_all[:, sel] = dmasks
    diou_all = np.zeros((N, K), diou.dtype)  # [N, K]
    diou_all[:, sel] = diou
    g = {}
    dhs = np.zeros((N, 1 + K + Ns, C), dmasks.dtype)  # [N, Tt, C]
    dtoken, g["iou_prediction_head"] = mlp_backward(diou_all, c_iou, grad_trace,
                                                    "mask_decoder.iou_prediction_head")  # [N, K] -> [N, C]
    dhs[:, 0] = dtoken
    dm = dmasks_all.reshape(N, K, R * R)  # [N, K, R*R]
    dhyper = dm @ flat.transpose(0, 2, 1)  # [N, K, R*R] @ [N, R*R, C/8] -> [N, K, C/8]
    dflat = hyper_in.transpose(0, 2, 1) @ dm  # [N, C/8, K] @ [N, K, R*R] -> [N, C/8, R*R]
    g["output_hypernetworks_mlps"] = {}
    for i in range(K):
        dhs[:, 1 + i], g["output_hypernetworks_mlps"][i] = mlp_backward(
            dhyper[:, i], c_hyper[i], grad_trace, f"mask_decoder.output_hypernetworks_mlps.{i}")  # [N, C/8] -> [N, C]
    dsrc, g["output_upscaling"] = output_upscaling_backward(dflat.reshape(N, -1, R, R), c_up, grad_trace)  # [N, C, G, G]
    dsrc = dsrc.reshape(N, C, G * G).transpose(0, 2, 1)  # [N, C, G, G] -> [N, GG, C]
    dsrc_in, dpos_src, dtokens, g["transformer"] = two_way_transformer_backward(dhs, dsrc, c_tr, grad_trace)
    # dsrc_in [N, C, G, G], dpos_src [N, C, G, G], dtokens [N, Tt, C]
    g["iou_token"] = {"weight": dtokens[:, :1].sum(0)}  # [1, C], shared by every prompt
    g["mask_tokens"] = {"weight": dtokens[:, 1:1 + K].sum(0)}  # [K, C]
    dsparse = dtokens[:, 1 + K:]  # [N, Ns, C]
    # one image repeated per prompt sums their gradients; one image per prompt keeps its own
    dimage_embeddings = dsrc_in.sum(0, keepdims=True) if n_images == 1 else dsrc_in  # [1 or N, C, G, G]
    dimage_pe = dpos_src.sum(0, keepdims=True)  # [1, C, G, G]
    return dimage_embeddings, dimage_pe, dsparse, dsrc_in, g
