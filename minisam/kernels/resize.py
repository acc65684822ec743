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

from minisam.kernels.jit import njit
from minisam.kernels.threads import parallel_for
from minisam.modeling.common import source_indices


def resize_bilinear_numpy(x, size: Tuple[int, int]):  # [..., h, w] -> [..., H, W]
    """NumPy twin of :func:`resize_bilinear` (separable form of the same arithmetic)."""
    H, W = size
    y0, y1, a0, a1 = source_indices(x.shape[-2], H)
    x0, x1, b0, b1 = source_indices(x.shape[-1], W)
    rows = x[..., x0] * b0 + x[..., x1] * b1  # [..., h, W], width interpolation of every input row
    return (rows[..., y0, :] * a0[:, None] + rows[..., y1, :] * a1[:, None]).astype(np.float32)  # [..., H, W]


@njit
def _resize_width_kernel(lo, hi, x, src_rows, x0, x1, b0, b1, rows):  # rows [lo, hi) of [P, n, W]; [P, h, w] in
    """Width pass: each input row that the height pass will read, interpolated to W columns."""
    P, n, W = rows.shape
    for r in range(lo, hi):
        plane = r // n
        iy = src_rows[r % n]
        dst = rows[plane, r % n]
        for ox in range(W):
            dst[ox] = x[plane, iy, x0[ox]] * b0[ox] + x[plane, iy, x1[ox]] * b1[ox]


@njit
def _resize_height_kernel(lo, hi, rows, y0, y1, a0, a1, as_mask, threshold, out):  # output rows [lo, hi); [P, n, W] -> [P, H, W]
    """Height pass: each output row blends two width-resized rows (a contiguous, SIMD loop).

    With ``as_mask`` a bool ``out`` gets ``value > threshold`` (the float masks are never
    written); otherwise a float32 ``out`` gets the value. Numba compiles one specialization
    per ``out`` dtype.
    """
    P, H, W = out.shape
    for r in range(lo, hi):
        plane = r // H
        oy = r % H
        top = rows[plane, y0[oy]]  # [W]
        bot = rows[plane, y1[oy]]  # [W]
        wt = a0[oy]
        wb = a1[oy]
        dst = out[plane, oy]  # [W]
        if as_mask:
            for ox in range(W):
                dst[ox] = top[ox] * wt + bot[ox] * wb > threshold
        else:
            for ox in range(W):
                dst[ox] = top[ox] * wt + bot[ox] * wb


def _resize_planes(x, ytab, xtab, threshold=None):  # [..., h, w] float32 -> [..., H, W] float32 (or bool)
    """Separable bilinear resize with given per-axis tables (see :func:`source_indices`).

    The value of every output pixel is ``a0 * (b0 * x[y0, x0] + b1 * x[y0, x1]) + a1 * (...)``
    in float32, the same products and sums in the same order as PyTorch's kernel and as the
    NumPy twin; the width pass is done once per *input* row that is read (h rows, not H), and
    the height pass is a contiguous blend of two rows.
    """
    y0, y1, a0, a1 = ytab
    x0, x1, b0, b1 = xtab
    x = np.ascontiguousarray(x, dtype=np.float32)
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    H, W = len(y0), len(x0)
    planes = x.reshape(-1, h, w)  # [P, h, w]
    src_rows = np.unique(np.concatenate([y0, y1]))  # [n] the input rows the output reads
    ry0, ry1 = np.searchsorted(src_rows, y0), np.searchsorted(src_rows, y1)  # [H] each, into src_rows
    rows = np.empty((planes.shape[0], len(src_rows), W), np.float32)  # [P, n, W]
    parallel_for(_resize_width_kernel, rows.shape[0] * rows.shape[1], planes, src_rows, x0, x1, b0, b1, rows)
    out = np.empty((planes.shape[0], H, W), np.float32 if threshold is None else np.bool_)  # [P, H, W]
    parallel_for(_resize_height_kernel, out.shape[0] * H, rows, ry0, ry1, a0, a1, threshold is not None,
                 np.float32(0.0 if threshold is None else threshold), out)
    return out.reshape(lead + (H, W))


def resize_bilinear(x, size: Tuple[int, int]):  # [..., h, w] float32 -> [..., H, W] float32
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for float32 arrays."""
    H, W = int(size[0]), int(size[1])
    return _resize_planes(x, source_indices(x.shape[-2], H), source_indices(x.shape[-1], W))


def postprocess_masks(masks, input_size, original_size, img_size: int, threshold=None):  # [B, K, M, M] -> [B, K, H, W]
    """``Sam.postprocess_masks``: upsample to the model input, crop the padding, resize to the original.

    The crop is folded into the first resize (only the kept h_in x w_in pixels of the
    img_size x img_size upsampling are computed: each output pixel depends only on its own
    source indices, so the values are those of resize-then-crop). With ``threshold`` the
    result is the boolean ``logits > threshold``, fused into the last pass.
    """
    h, w = int(input_size[0]), int(input_size[1])
    ytab = tuple(t[:h] for t in source_indices(masks.shape[-2], img_size))  # rows [0, h_in) of the S x S upsampling
    xtab = tuple(t[:w] for t in source_indices(masks.shape[-1], img_size))  # columns [0, w_in)
    cropped = _resize_planes(masks, ytab, xtab)  # [B, K, M, M] -> [B, K, h_in, w_in]
    H, W = int(original_size[0]), int(original_size[1])
    return _resize_planes(cropped, source_indices(h, H), source_indices(w, W), threshold)  # [B, K, H, W]
