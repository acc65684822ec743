"""SAM's prompt encoder: points, boxes and masks -> sparse tokens and a dense embedding.

Paper: Kirillov et al. 2023, section 3 ("Prompt encoder") and appendix A. Mirrors
``segment_anything/modeling/prompt_encoder.py`` (``PromptEncoder``,
``PositionEmbeddingRandom``).

- Sparse prompts (points, box corners) become one C-dim token each: a random-Fourier
  positional encoding of the location (Tancik et al. 2020) plus a learned embedding saying
  what the location is (foreground / background point, top-left / bottom-right corner).
- Dense prompts (a low-res mask, usually the logits of a previous prediction) go through a
  small strided-conv network down to the G x G embedding grid; without a mask a learned
  "no mask" vector fills the grid.
- The same random-Fourier encoding, evaluated at the centre of each grid cell, is the dense
  positional encoding the decoder adds to the image embedding (``get_dense_pe``).

Shapes: B prompts, N points, C = prompt_embed_dim, G = image embedding grid side,
M = 4G mask side, m = mask_in_chans. Coordinates are (x, y) pixels in the padded
img_size x img_size model input frame.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from minisam.kernels.layers import gelu, layer_norm2d

LN2D_EPS = 1e-6  # LayerNorm2d default (modeling/common.py)
_TWO_PI = np.float32(2 * np.pi)  # torch multiplies the float32 tensor by 2*pi as a float32 scalar


def pe_encoding(gaussian, coords):  # [2, C/2], [..., 2] in [0, 1] -> [..., C]
    """``PositionEmbeddingRandom._pe_encoding``: [sin, cos] of random projections.

    Coordinates in [0, 1] are mapped to [-1, 1], projected on the 2 x C/2 Gaussian matrix
    (loaded from the checkpoint, never regenerated) and scaled by 2 pi. Channels 0..C/2-1
    are the sines, C/2..C-1 the cosines.
    """
    coords = np.float32(2) * coords - np.float32(1)  # [..., 2]
    proj = coords @ gaussian  # [..., 2] @ [2, C/2] -> [..., C/2]
    proj = _TWO_PI * proj  # [..., C/2]
    return np.concatenate([np.sin(proj), np.cos(proj)], axis=-1)  # [..., C]


def dense_pe(p, cfg, trace: Optional[dict] = None):  # -> [C, G, G]
    """``PositionEmbeddingRandom.forward((G, G))``: the PE at every grid-cell centre."""
    G = cfg.image_embedding_size
    centers = (np.arange(G, dtype=np.float32) + np.float32(0.5)) / np.float32(G)  # [G], (i + 0.5) / G
    x_embed = np.broadcast_to(centers[None, :], (G, G))  # [G, G], varies along x (columns)
    y_embed = np.broadcast_to(centers[:, None], (G, G))  # [G, G], varies along y (rows)
    grid = np.stack([x_embed, y_embed], axis=-1)  # [G, G, 2], (x, y) order
    pe = pe_encoding(p["pe_layer"]["positional_encoding_gaussian_matrix"], grid)  # [G, G, C]
    pe = np.ascontiguousarray(pe.transpose(2, 0, 1))  # [G, G, C] -> [C, G, G]
    if trace is not None:
        trace["prompt_encoder.pe_layer"] = pe
    return pe


def get_dense_pe(p, cfg, trace: Optional[dict] = None):  # -> [1, C, G, G]
    return dense_pe(p, cfg, trace)[None]  # [C, G, G] -> [1, C, G, G]


def pe_with_coords(p, cfg, coords):  # [B, N, 2] pixels -> [B, N, C]
    """``forward_with_coords``: divide by the model input size (not the resized image size)."""
    coords = np.array(coords, copy=True)  # [B, N, 2], keeps the caller's float dtype
    coords[..., 0] = coords[..., 0] / cfg.img_size  # x / W_in
    coords[..., 1] = coords[..., 1] / cfg.img_size  # y / H_in
    return pe_encoding(p["pe_layer"]["positional_encoding_gaussian_matrix"], coords.astype(np.float32))


def embed_points(p, cfg, points, labels, pad: bool):  # [B, N, 2], [B, N] -> [B, N(+1), C]
    """``_embed_points``: PE of the pixel centre plus the embedding of the label.

    Label 1 = foreground, 0 = background, -1 = "not a point" (the PE is discarded). Without a
    box prompt a padding point labelled -1 is appended (the decoder was trained that way).
    Other labels (2, 3) get the bare PE, as in the official PyTorch path.
    """
    points = points + (np.float32(0.5) if points.dtype == np.float32 else 0.5)  # [B, N, 2], pixel centres
    if pad:
        B = points.shape[0]
        points = np.concatenate([points, np.zeros((B, 1, 2), points.dtype)], axis=1)  # [B, N+1, 2]
        labels = np.concatenate([labels, -np.ones((B, 1), labels.dtype)], axis=1)  # [B, N+1]
    emb = pe_with_coords(p, cfg, points)  # [B, N', C]
    emb[labels == -1] = 0.0
    emb[labels == -1] += p["not_a_point_embed"]["weight"][0]  # [C]
    emb[labels == 0] += p["point_embeddings"][0]["weight"][0]  # [C]
    emb[labels == 1] += p["point_embeddings"][1]["weight"][0]  # [C]
    return emb


def embed_boxes(p, cfg, boxes):  # [B, 4] xyxy -> [B, 2, C]
    """``_embed_boxes``: each box is two corner tokens with their own learned embeddings."""
    boxes = boxes + (np.float32(0.5) if boxes.dtype == np.float32 else 0.5)  # [B, 4]
    corners = boxes.reshape(-1, 2, 2)  # [B, 4] -> [B, 2, 2], (top-left, bottom-right) x (x, y)
    emb = pe_with_coords(p, cfg, corners)  # [B, 2, C]
    emb[:, 0, :] += p["point_embeddings"][2]["weight"][0]  # top-left corner
    emb[:, 1, :] += p["point_embeddings"][3]["weight"][0]  # bottom-right corner
    return emb


def conv2x2_s2(x, weight, bias):  # [B, Ci, H, W], [Co, Ci, 2, 2], [Co] -> [B, Co, H/2, W/2]
    """Conv2d(kernel 2, stride 2): non-overlapping 2x2 patches, so one GEMM over patches."""
    B, Ci, H, W = x.shape
    Co = weight.shape[0]
    patches = x.reshape(B, Ci, H // 2, 2, W // 2, 2)  # [B, Ci, H/2, 2, W/2, 2]
    patches = patches.transpose(0, 2, 4, 1, 3, 5).reshape(B * (H // 2) * (W // 2), Ci * 4)  # [B*H/2*W/2, Ci*4]
    out = patches @ weight.reshape(Co, Ci * 4).T + bias  # [P, Ci*4] @ [Ci*4, Co] -> [P, Co]
    return np.ascontiguousarray(out.reshape(B, H // 2, W // 2, Co).transpose(0, 3, 1, 2))  # [B, Co, H/2, W/2]


def conv1x1(x, weight, bias):  # [B, Ci, H, W], [Co, Ci, 1, 1], [Co] -> [B, Co, H, W]
    B, Ci, H, W = x.shape
    Co = weight.shape[0]
    pixels = x.transpose(0, 2, 3, 1).reshape(B * H * W, Ci)  # [B*H*W, Ci]
    out = pixels @ weight.reshape(Co, Ci).T + bias  # [B*H*W, Co]
    return np.ascontiguousarray(out.reshape(B, H, W, Co).transpose(0, 3, 1, 2))  # [B, Co, H, W]


def mask_downscaling(p, masks, trace: Optional[dict] = None, eps: float = LN2D_EPS):  # [B, 1, M, M] -> [B, C, G, G]
    """conv 2x2/2 -> LayerNorm2d -> GELU -> conv 2x2/2 -> LayerNorm2d -> GELU -> conv 1x1."""
    name = "prompt_encoder.mask_downscaling"
    x = conv2x2_s2(masks, p[0]["weight"], p[0]["bias"])  # [B, 1, M, M] -> [B, m/4, 2G, 2G]
    steps = [x]
    x = layer_norm2d(x, p[1]["weight"], p[1]["bias"], eps)  # [B, m/4, 2G, 2G]
    steps.append(x)
    x = gelu(x)  # [B, m/4, 2G, 2G]
    steps.append(x)
    x = conv2x2_s2(x, p[3]["weight"], p[3]["bias"])  # [B, m/4, 2G, 2G] -> [B, m, G, G]
    steps.append(x)
    x = layer_norm2d(x, p[4]["weight"], p[4]["bias"], eps)  # [B, m, G, G]
    steps.append(x)
    x = gelu(x)  # [B, m, G, G]
    steps.append(x)
    x = conv1x1(x, p[6]["weight"], p[6]["bias"])  # [B, m, G, G] -> [B, C, G, G]
    steps.append(x)
    if trace is not None:
        for i, s in enumerate(steps):
            trace[f"{name}.{i}"] = s
        trace[name] = x
    return x


def prompt_batch_size(points, boxes, masks) -> int:
    """``PromptEncoder._get_batch_size``: B from the first prompt kind given, else 1."""
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1


def prompt_encoder(p, cfg, points: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                   boxes: Optional[np.ndarray] = None, masks: Optional[np.ndarray] = None,
                   trace: Optional[dict] = None):
    """``PromptEncoder.forward``: -> (sparse [B, Ns, C], dense [B, C, G, G]).

    points = (coords [B, N, 2], labels [B, N]) in the model input frame; boxes [B, 4] xyxy;
    masks [B, 1, M, M] low-res logits. Sparse tokens are ordered [points (+pad), box corners].
    """
    C, G = cfg.prompt_embed_dim, cfg.image_embedding_size
    bs = prompt_batch_size(points, boxes, masks)
    sparse = [np.empty((bs, 0, C), np.float32)]  # [B, 0, C]
    if points is not None:
        coords, labels = points
        sparse.append(embed_points(p, cfg, coords, labels, pad=boxes is None))  # [B, N(+1), C]
    if boxes is not None:
        sparse.append(embed_boxes(p, cfg, boxes))  # [B, 2, C]
    sparse = np.concatenate(sparse, axis=1).astype(np.float32, copy=False)  # [B, Ns, C]
    if masks is not None:
        dense = mask_downscaling(p["mask_downscaling"], masks.astype(np.float32, copy=False), trace,
                                 cfg.mask_embed_norm_eps)  # [B, C, G, G]
    else:
        # A read-only broadcast view: the decoder adds it to the image embedding anyway.
        dense = np.broadcast_to(p["no_mask_embed"]["weight"].reshape(1, C, 1, 1), (bs, C, G, G))  # [B, C, G, G]
    if trace is not None:
        trace["prompt_encoder"] = (sparse, dense)
    return sparse, dense
