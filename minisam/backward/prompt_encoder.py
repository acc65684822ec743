"""Forward and backward of SAM's prompt encoder: points, boxes and masks -> sparse tokens and a dense embedding.

Paper: Kirillov et al. 2023, section 3 ("Prompt encoder") and appendix A. Mirrors
``segment_anything/modeling/prompt_encoder.py`` (``PromptEncoder``, ``PositionEmbeddingRandom``),
whose forward :mod:`minisam.modeling.prompt_encoder` writes out; the forwards here are the same
arithmetic, keeping what the backward needs.

- A sparse token is a random-Fourier PE of its location, [sin, cos](2 pi (2c - 1) @ Gm), plus a
  learned embedding of what the location is (label 0 / 1 point, top-left / bottom-right corner,
  or "not a point", whose PE is zeroed). The learned embeddings receive the sum of the token
  gradients of every token they were added to; the Gaussian matrix Gm receives the gradient of
  every PE it produced: the sparse tokens and, through ``get_dense_pe``, the decoder's image PE.
  Gm is a *buffer* in the official code (never trained); its gradient is computed anyway so that
  it can be checked, and a trainer is free to ignore it.
- The dense embedding is either the mask input through conv 2x2/2 -> LayerNorm2d -> GELU ->
  conv 2x2/2 -> LayerNorm2d -> GELU -> conv 1x1, or ``no_mask_embed`` broadcast over the grid.

Dtypes: everything computes in the dtype of the parameters (float64 for the exact checks of
``tests/test_backward_prompt_encoder.py``, float32 for training), with one exception copied
from the official code: the normalised coordinates are rounded to float32 before the
projection (``forward_with_coords`` casts them with ``.to(torch.float)``, and ``forward`` builds
its grid in float32), then promoted to the parameters' dtype. The coordinates are data, never
differentiated here, so the rounding changes what is encoded, not how its gradient is computed.

Gradients are nested dicts keyed like ``nest(state_dict)["prompt_encoder"]``, holding an entry
for every parameter the forward used (zero where a used parameter had no effect, as autograd
leaves it), so ``point_embeddings`` 0 / 1 appear only with points, 2 / 3 only with boxes,
``mask_downscaling`` only with a mask and ``no_mask_embed`` only without one.

Shapes (``docs/shapes.md``): B prompts, Np points, Ns sparse tokens, C = prompt_embed_dim,
G the grid side, R = 4G the mask side, m = mask_in_chans, g a grid side of the mask
downscaling, Cin / Cout a convolution's channels, di / dj a 2 x 2 kernel's offsets.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from minisam.backward.common import (add_grads, gelu_backward, gelu_forward, layer_norm_backward,
                                     layer_norm_forward, linear_backward, linear_forward)
from minisam.modeling.prompt_encoder import prompt_batch_size

GAUSSIAN = "positional_encoding_gaussian_matrix"


# --------------------------------------------------------------------------- random-Fourier PE

def pe_encoding_forward(gaussian, coords):  # [2, C/2], [..., 2] in [0, 1] -> [..., C], cache
    """``PositionEmbeddingRandom._pe_encoding``: u = 2c - 1, z = 2 pi u @ Gm, out = [sin z, cos z]."""
    dtype = gaussian.dtype
    u = np.asarray(2, dtype) * coords.astype(dtype, copy=False) - np.asarray(1, dtype)  # [..., 2] in [-1, 1]
    # torch scales by 2 pi as a scalar of the tensor's dtype (a float32 2 pi for float32 tensors).
    two_pi = np.asarray(2 * np.pi, dtype)
    z = two_pi * (u @ gaussian)  # [..., 2] @ [2, C/2] -> [..., C/2]
    sin, cos = np.sin(z), np.cos(z)  # [..., C/2], [..., C/2]
    return np.concatenate([sin, cos], axis=-1), (u, gaussian, sin, cos, two_pi)  # [..., C]


def pe_encoding_backward(dout, cache):  # [..., C] -> dcoords [..., 2], {GAUSSIAN: [2, C/2]}
    """out = [sin z, cos z] with z = 2 pi u Gm and u = 2c - 1. Split dout into its sine half ds
    and cosine half dc: dz = ds cos z - dc sin z. z is linear in Gm and in u, so
    dGm = 2 pi sum over tokens of u^T dz, du = 2 pi dz Gm^T, and dcoords = 2 du."""
    u, gaussian, sin, cos, two_pi = cache
    half = sin.shape[-1]
    dz = dout[..., :half] * cos - dout[..., half:] * sin  # [..., C/2]
    dgaussian = two_pi * (u.reshape(-1, 2).T @ dz.reshape(-1, half))  # [2, -1] @ [-1, C/2] -> [2, C/2]
    dcoords = np.asarray(2, u.dtype) * two_pi * (dz @ gaussian.T)  # [..., C/2] @ [C/2, 2] -> [..., 2]
    return dcoords, {GAUSSIAN: dgaussian}


def _normalise_coords(coords, img_size: int, dtype):  # [B, Np, 2] pixels -> [B, Np, 2] in [0, 1]
    """``forward_with_coords``: divide by the model input size, in the coordinates' own dtype,
    then round to float32 as the official ``.to(torch.float)`` does, then promote to ``dtype``."""
    coords = coords / img_size  # [B, Np, 2]; x / W_in, y / H_in (a square input)
    return coords.astype(np.float32).astype(dtype, copy=False)  # [B, Np, 2]


def dense_pe_forward(p, cfg):  # -> [1, C, G, G], cache
    """``get_dense_pe``: the PE at every grid-cell centre ((i + 0.5) / G, built in float32 as the
    official grid is), channels first."""
    gaussian = p["pe_layer"][GAUSSIAN]  # [2, C/2]
    G = cfg.image_embedding_size
    centers = (np.arange(G, dtype=np.float32) + np.float32(0.5)) / np.float32(G)  # [G]
    grid = np.stack(np.broadcast_arrays(centers[None, :], centers[:, None]), axis=-1)  # [G, G, 2], (x, y)
    pe, cache = pe_encoding_forward(gaussian, grid.astype(gaussian.dtype))  # [G, G, C]
    return pe.transpose(2, 0, 1)[None], cache  # [G, G, C] -> [1, C, G, G]


def dense_pe_backward(dpe, cache):  # [1, C, G, G] -> {"pe_layer": {GAUSSIAN: [2, C/2]}}
    """The transpose is a relabelling, so the gradient is transposed back and goes through the
    PE backward; the grid is a constant, so only Gm receives a gradient."""
    dpe = dpe[0].transpose(1, 2, 0)  # [1, C, G, G] -> [G, G, C]
    _, grads = pe_encoding_backward(dpe, cache)
    return {"pe_layer": grads}


# --------------------------------------------------------------------------- sparse prompts

def embed_points_forward(p, cfg, coords, labels, pad: bool):  # [B, Np, 2], [B, Np] -> [B, Np(+1), C], cache
    """``_embed_points``: the PE of the pixel centre, zeroed for label -1, plus the learned
    embedding of the label (-1: not_a_point_embed, 0: point_embeddings[0], 1: point_embeddings[1];
    other labels keep the bare PE, as in the official code). Without a box, a padding point
    (0, 0) labelled -1 is appended."""
    dtype = p["not_a_point_embed"]["weight"].dtype
    coords = coords + (np.float32(0.5) if coords.dtype == np.float32 else 0.5)  # [B, Np, 2], pixel centres
    if pad:
        B = coords.shape[0]
        coords = np.concatenate([coords, np.zeros((B, 1, 2), coords.dtype)], axis=1)  # [B, Np+1, 2]
        labels = np.concatenate([labels, -np.ones((B, 1), labels.dtype)], axis=1)  # [B, Np+1]
    unit = _normalise_coords(coords, cfg.img_size, dtype)  # [B, Np', 2]
    pe, pe_cache = pe_encoding_forward(p["pe_layer"][GAUSSIAN], unit)  # [B, Np', C]
    masks = {-1: labels == -1, 0: labels == 0, 1: labels == 1}  # [B, Np'] each
    emb = np.where(masks[-1][..., None], np.asarray(0, dtype), pe)  # [B, Np', C]
    emb = emb + masks[-1][..., None] * p["not_a_point_embed"]["weight"][0]  # [B, Np', C]
    for k in (0, 1):
        emb = emb + masks[k][..., None] * p["point_embeddings"][k]["weight"][0]  # [B, Np', C]
    return emb.astype(dtype, copy=False), (pe_cache, masks)


def embed_points_backward(demb, cache):  # [B, Np', C] -> grads
    """emb = pe * [label != -1] + sum over k of [label = k] e_k, so each embedding e_k gets the
    token gradients summed over the tokens with label k, and the PE gets demb with the rows of
    label -1 zeroed (those tokens do not depend on their location): no Gm gradient from them."""
    pe_cache, masks = cache
    dtype = demb.dtype
    grads = {"not_a_point_embed": {"weight": (demb * masks[-1][..., None]).sum((0, 1))[None]},  # [1, C]
             "point_embeddings": {k: {"weight": (demb * masks[k][..., None]).sum((0, 1))[None]}  # [1, C]
                                  for k in (0, 1)}}
    dpe = np.where(masks[-1][..., None], np.asarray(0, dtype), demb)  # [B, Np', C]
    _, g_pe = pe_encoding_backward(dpe, pe_cache)
    grads["pe_layer"] = g_pe
    return grads


def embed_boxes_forward(p, cfg, boxes):  # [B, 4] xyxy -> [B, 2, C], cache
    """``_embed_boxes``: two corner tokens, each the PE of the corner plus its own embedding
    (point_embeddings[2] top-left, point_embeddings[3] bottom-right)."""
    dtype = p["point_embeddings"][2]["weight"].dtype
    boxes = boxes + (np.float32(0.5) if boxes.dtype == np.float32 else 0.5)  # [B, 4], pixel centres
    corners = boxes.reshape(-1, 2, 2)  # [B, 4] -> [B, 2, 2], (top-left, bottom-right) x (x, y)
    unit = _normalise_coords(corners, cfg.img_size, dtype)  # [B, 2, 2]
    pe, pe_cache = pe_encoding_forward(p["pe_layer"][GAUSSIAN], unit)  # [B, 2, C]
    corner_embed = np.stack([p["point_embeddings"][2]["weight"][0],
                             p["point_embeddings"][3]["weight"][0]])  # [2, C]
    return pe + corner_embed, pe_cache  # [B, 2, C]


def embed_boxes_backward(demb, cache):  # [B, 2, C] -> grads
    """emb[:, j] = pe[:, j] + e_(2+j): the corner embeddings get demb[:, j] summed over the
    boxes, and the PE gets demb unchanged."""
    _, g_pe = pe_encoding_backward(demb, cache)
    return {"pe_layer": g_pe,
            "point_embeddings": {2 + j: {"weight": demb[:, j].sum(0)[None]} for j in (0, 1)}}  # [1, C] each


# --------------------------------------------------------------------------- mask downscaling convs

def conv2x2_s2_forward(x, weight, bias):  # [B, Cin, g, g], [Cout, Cin, 2, 2], [Cout] -> [B, Cout, g/2, g/2], cache
    """``Conv2d(kernel_size=2, stride=2)``: the 2 x 2 patches do not overlap, so the convolution
    is one linear layer over the flattened patches (channel-major, as the weight is laid out)."""
    B, Cin, g, _ = x.shape
    Cout = weight.shape[0]
    patches = x.reshape(B, Cin, g // 2, 2, g // 2, 2).transpose(0, 2, 4, 1, 3, 5)  # [B, g/2, g/2, Cin, di, dj]
    patches = patches.reshape(B, g // 2, g // 2, Cin * 4)  # [B, g/2, g/2, Cin*4]
    out, cache = linear_forward(patches, weight.reshape(Cout, Cin * 4), bias)  # [B, g/2, g/2, Cout]
    return out.transpose(0, 3, 1, 2), (cache, x.shape, weight.shape)  # [B, Cout, g/2, g/2]


def conv2x2_s2_backward(dout, cache):  # [B, Cout, g/2, g/2] -> dx [B, Cin, g, g], {"weight", "bias"}
    """The linear backward over patches (dpatches = dout W, dW = dout^T patches, db = sum dout),
    then each patch's gradient scattered back to its own 2 x 2 pixels: no pixel is in two
    patches, so the scatter is the inverse reshape, with nothing to add."""
    lin_cache, x_shape, w_shape = cache
    B, Cin, g, _ = x_shape
    dpatches, grads = linear_backward(dout.transpose(0, 2, 3, 1), lin_cache)  # [B, g/2, g/2, Cin*4]
    dx = dpatches.reshape(B, g // 2, g // 2, Cin, 2, 2).transpose(0, 3, 1, 4, 2, 5)  # [B, Cin, g/2, di, g/2, dj]
    grads["weight"] = grads["weight"].reshape(w_shape)  # [Cout, Cin*4] -> [Cout, Cin, 2, 2]
    return dx.reshape(x_shape), grads  # [B, Cin, g, g]


def conv1x1_forward(x, weight, bias):  # [B, Cin, g, g], [Cout, Cin, 1, 1], [Cout] -> [B, Cout, g, g], cache
    """``Conv2d(kernel_size=1)``: a linear layer applied at every pixel."""
    Cout, Cin = weight.shape[:2]
    out, cache = linear_forward(x.transpose(0, 2, 3, 1), weight.reshape(Cout, Cin), bias)  # [B, g, g, Cout]
    return out.transpose(0, 3, 1, 2), (cache, weight.shape)  # [B, Cout, g, g]


def conv1x1_backward(dout, cache):  # [B, Cout, g, g] -> dx [B, Cin, g, g], {"weight", "bias"}
    """The linear backward at every pixel, its sums over pixels giving dW and db."""
    lin_cache, w_shape = cache
    dx, grads = linear_backward(dout.transpose(0, 2, 3, 1), lin_cache)  # [B, g, g, Cin]
    grads["weight"] = grads["weight"].reshape(w_shape)  # [Cout, Cin] -> [Cout, Cin, 1, 1]
    return dx.transpose(0, 3, 1, 2), grads  # [B, Cin, g, g]


def mask_downscaling_forward(p, masks, eps: float):  # [B, 1, R, R] -> [B, C, G, G], cache
    """``mask_downscaling``: conv 2x2/2 -> LayerNorm2d -> GELU -> conv 2x2/2 -> LayerNorm2d -> GELU
    -> conv 1x1 (Sequential indexes 0..6; 2 and 5 are the parameter-free GELUs)."""
    x, c0 = conv2x2_s2_forward(masks, p[0]["weight"], p[0]["bias"])  # [B, 1, R, R] -> [B, m/4, 2G, 2G]
    x, c1 = layer_norm_forward(x, p[1]["weight"], p[1]["bias"], eps, axis=1)  # [B, m/4, 2G, 2G]
    x, c2 = gelu_forward(x)  # [B, m/4, 2G, 2G]
    x, c3 = conv2x2_s2_forward(x, p[3]["weight"], p[3]["bias"])  # [B, m/4, 2G, 2G] -> [B, m, G, G]
    x, c4 = layer_norm_forward(x, p[4]["weight"], p[4]["bias"], eps, axis=1)  # [B, m, G, G]
    x, c5 = gelu_forward(x)  # [B, m, G, G]
    x, c6 = conv1x1_forward(x, p[6]["weight"], p[6]["bias"])  # [B, m, G, G] -> [B, C, G, G]
    return x, (c0, c1, c2, c3, c4, c5, c6)


def mask_downscaling_backward(ddense, cache):  # [B, C, G, G] -> dmasks [B, 1, R, R], grads
    """The chain rule through the seven layers in reverse, each layer's own backward."""
    c0, c1, c2, c3, c4, c5, c6 = cache
    grads = {}
    dx, grads[6] = conv1x1_backward(ddense, c6)  # [B, C, G, G] -> [B, m, G, G]
    dx = gelu_backward(dx, c5)  # [B, m, G, G]
    dx, grads[4] = layer_norm_backward(dx, c4)  # [B, m, G, G]
    dx, grads[3] = conv2x2_s2_backward(dx, c3)  # [B, m, G, G] -> [B, m/4, 2G, 2G]
    dx = gelu_backward(dx, c2)  # [B, m/4, 2G, 2G]
    dx, grads[1] = layer_norm_backward(dx, c1)  # [B, m/4, 2G, 2G]
    dmasks, grads[0] = conv2x2_s2_backward(dx, c0)  # [B, m/4, 2G, 2G] -> [B, 1, R, R]
    return dmasks, grads


# --------------------------------------------------------------------------- PromptEncoder

def prompt_encoder_forward(p, cfg, points: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                           boxes: Optional[np.ndarray] = None, masks: Optional[np.ndarray] = None):
    """``PromptEncoder.forward`` -> ((sparse [B, Ns, C], dense [B, C, G, G]), cache).

    points = (coords [B, Np, 2], labels [B, Np]) in the model input frame; boxes [B, 4] xyxy;
    masks [B, 1, R, R] low-res logits. Sparse tokens are ordered [points (+pad), box corners].
    """
    dtype = p["no_mask_embed"]["weight"].dtype
    C, G = cfg.prompt_embed_dim, cfg.image_embedding_size
    bs = prompt_batch_size(points, boxes, masks)
    sparse, cache = [np.empty((bs, 0, C), dtype)], {}  # [B, 0, C]
    if points is not None:
        emb, cache["points"] = embed_points_forward(p, cfg, points[0], points[1], pad=boxes is None)  # [B, Np', C]
        sparse.append(emb)
    if boxes is not None:
        emb, cache["boxes"] = embed_boxes_forward(p, cfg, boxes)  # [B, 2, C]
        sparse.append(emb)
    cache["split"] = [s.shape[1] for s in sparse[1:]]  # tokens from points, then boxes
    sparse = np.concatenate(sparse, axis=1)  # [B, Ns, C]
    if masks is not None:
        dense, cache["masks"] = mask_downscaling_forward(p["mask_downscaling"], masks.astype(dtype, copy=False),
                                                         cfg.mask_embed_norm_eps)  # [B, C, G, G]
    else:
        dense = np.broadcast_to(p["no_mask_embed"]["weight"].reshape(1, C, 1, 1), (bs, C, G, G))  # [B, C, G, G]
    return (sparse, dense), cache


def prompt_encoder_backward(dsparse, ddense, cache):  # [B, Ns, C], [B, C, G, G] -> grads
    """Split dsparse back into the point and box tokens (the concatenation's transpose) and run
    their backwards; ddense goes through the mask convs, or, without a mask, to no_mask_embed,
    which was broadcast over B, G, G, so its gradient is ddense summed over those axes. The
    Gaussian matrix collects the gradients of the point and the box PEs. Input gradients
    (coordinates, mask logits) are not returned: SAM treats its prompts as data."""
    grads = {}
    offset = 0
    for kind, n in zip([k for k in ("points", "boxes") if k in cache], cache["split"]):
        backward = embed_points_backward if kind == "points" else embed_boxes_backward
        add_grads(grads, backward(dsparse[:, offset:offset + n], cache[kind]))  # [B, n, C]
        offset += n
    if "masks" in cache:
        _, grads["mask_downscaling"] = mask_downscaling_backward(ddense, cache["masks"])
    else:
        grads["no_mask_embed"] = {"weight": ddense.sum((0, 2, 3))[None]}  # [B, C, G, G] -> [1, C]
    return grads
