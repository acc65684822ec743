"""From low-res mask logits to masks at the original image size.

Mirrors ``Sam.postprocess_masks`` (``segment_anything/modeling/sam.py`` L133-162): upsample
the M x M logits to the padded model input (img_size x img_size), crop away the padding
(keep the resized image's h_in x w_in), and resize that to the original H x W. Both resizes
are ``F.interpolate(mode="bilinear", align_corners=False)`` without antialiasing (so the
second one *aliases* when the original is smaller than the model input: we reproduce that).

PyTorch's source-index rule (``aten/src/ATen/native/UpSample.h``, ``area_pixel_compute_scale``,
``area_pixel_compute_source_index``, and ``compute_source_index_and_lambda`` in
``cpu/UpSampleKernel.cpp``), all in float32 for float32 tensors:

    scale = in / out
    src   = max(fma(scale, dst + 0.5, -0.5), 0)      (fused multiply-add, see source_indices)
    i0    = min(floor(src), in - 1);  i1 = i0 + (i0 < in - 1)
    l1    = clamp(src - i0, 0, 1);    l0 = 1 - l1
    (and when in == out: i0 = i1 = dst, l0 = 1, l1 = 0, a plain copy)

The value is ``l0h * (l0w * x[i0h, i0w] + l1w * x[i0h, i1w]) + l1h * (l0w * x[i1h, i0w] + l1w * x[i1h, i1w])``,
evaluated in that order, as PyTorch's ``Interpolate<2>`` does (width inside, height outside).

``resize_bilinear`` is the Numba kernel; ``resize_bilinear_numpy`` its readable twin
(separable: the same float32 products and sums, so the two agree bit for bit).
Shapes: P planes (B*K), h x w in, H x W out.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ._numba import njit
from .threads import parallel_for


def source_indices(in_size: int, out_size: int):  # -> i0 [out], i1 [out], l0 [out], l1 [out]
    """Per-axis source indices and weights, in float32 as PyTorch computes them."""
    dst = np.arange(out_size)
    if in_size == out_size:
        return dst, dst.copy(), np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = np.float32(in_size) / np.float32(out_size)  # float32 ratio
    centers = dst.astype(np.float32) + np.float32(0.5)  # [out], dst + 0.5 in float32
    # scale * centers - 0.5 as ONE fused multiply-add: PyTorch's CPU (and CUDA) kernels are
    # compiled with FMA contraction, and the unfused form moves the source index by an ulp,
    # enough to swap i0 at exact grid crossings (measured: 1e-3 logit errors, 683 -> 1500).
    # The float64 product of two float32 is exact and so is the sum here (< 53 bits), so one
    # rounding to float32 gives exactly the fused result.
    src = (np.float64(scale) * centers.astype(np.float64) - 0.5).astype(np.float32)  # [out]
    src = np.maximum(src, np.float32(0))  # clamped at 0 below (align_corners=False)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)  # [out]
    l1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)  # [out]
    l0 = (np.float32(1) - l1).astype(np.float32)  # [out]
    i1 = i0 + (i0 < in_size - 1)  # [out]
    return i0, i1, l0, l1


def resize_bilinear_numpy(x, size: Tuple[int, int]):  # [..., h, w] -> [..., H, W]
    """NumPy twin of :func:`resize_bilinear` (separable form of the same arithmetic)."""
    H, W = size
    y0, y1, a0, a1 = source_indices(x.shape[-2], H)
    x0, x1, b0, b1 = source_indices(x.shape[-1], W)
    rows = x[..., x0] * b0 + x[..., x1] * b1  # [..., h, W], width interpolation of every input row
    return (rows[..., y0, :] * a0[:, None] + rows[..., y1, :] * a1[:, None]).astype(np.float32)  # [..., H, W]


@njit
def _resize_kernel(lo, hi, x, y0, y1, a0, a1, x0, x1, b0, b1, out):  # output rows [lo, hi); [P, h, w], tables, [P, H, W]
    P, H, W = out.shape
    for r in range(lo, hi):
        pl = r // H
        oy = r % H
        ry0 = y0[oy]
        ry1 = y1[oy]
        for ox in range(W):
            top = x[pl, ry0, x0[ox]] * b0[ox] + x[pl, ry0, x1[ox]] * b1[ox]
            bot = x[pl, ry1, x0[ox]] * b0[ox] + x[pl, ry1, x1[ox]] * b1[ox]
            out[pl, oy, ox] = top * a0[oy] + bot * a1[oy]


def resize_bilinear(x, size: Tuple[int, int]):  # [..., h, w] float32 -> [..., H, W] float32
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for float32 arrays."""
    H, W = int(size[0]), int(size[1])
    x = np.ascontiguousarray(x, dtype=np.float32)
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    y0, y1, a0, a1 = source_indices(h, H)
    x0, x1, b0, b1 = source_indices(w, W)
    planes = x.reshape(-1, h, w)  # [P, h, w]
    out = np.empty((planes.shape[0], H, W), np.float32)  # [P, H, W]
    parallel_for(_resize_kernel, out.shape[0] * H, planes, y0, y1, a0, a1, x0, x1, b0, b1, out)
    return out.reshape(lead + (H, W))


def postprocess_masks(masks, input_size, original_size, img_size: int):  # [B, K, M, M] -> [B, K, H, W]
    """``Sam.postprocess_masks``: upsample to the model input, crop the padding, resize to the original."""
    full = resize_bilinear(masks, (img_size, img_size))  # [B, K, M, M] -> [B, K, S, S]
    h, w = int(input_size[0]), int(input_size[1])
    cropped = full[..., :h, :w]  # [B, K, h_in, w_in], the resized image without padding
    return resize_bilinear(cropped, (int(original_size[0]), int(original_size[1])))  # [B, K, H, W]
