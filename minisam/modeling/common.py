"""The small pieces every model part uses: linear, LayerNorm, GELU, softmax, mask IoU and boxes.

Paper: Kirillov et al. 2023, section 3 and appendix A. Mirrors ``segment_anything/modeling/common.py``
(``MLPBlock``, ``LayerNorm2d``) and the ``torch.nn`` layers the official modules are built from
(``nn.Linear``, ``nn.LayerNorm``, ``nn.GELU``, ``F.softmax``). Everything here is plain NumPy,
one operation a line: the readable path of ``minisam/modeling`` is written with these
functions, and the fused kernels of :mod:`minisam.kernels.layers` are tested equal to them.

Numerics: ``docs/numerics.md`` section 3 (LayerNorm eps per module), 4 (GELU's erf, softmax)
and 1.2 (the source-index rule of PyTorch's resizes). Shapes: ``docs/shapes.md``.
"""

from __future__ import annotations

import numpy as np

# LayerNorm eps of each module (docs/numerics.md section 3)
ENCODER_LN_EPS = 1e-6    # image encoder norm1/norm2: build_sam.py passes partial(nn.LayerNorm, eps=1e-6)
LAYER_NORM_2D_EPS = 1e-6  # LayerNorm2d's default (modeling/common.py): the neck, the decoder's upscaling
DECODER_LN_EPS = 1e-5    # nn.LayerNorm's default: the two-way transformer's norm1..norm4, norm_final_attn


def linear(x, weight, bias=None):  # [..., in], [out, in], [out] -> [..., out]
    """``nn.Linear``: x W^T + b, in float32."""
    y = np.asarray(x, np.float32) @ np.asarray(weight, np.float32).T  # [..., in] @ [in, out] -> [..., out]
    return y if bias is None else y + bias  # [..., out]


def layer_norm(x, weight, bias, eps):  # [..., C], [C], [C], () -> [..., C]
    """``nn.LayerNorm`` over the last axis: biased variance, statistics in float64."""
    mean = x.mean(-1, keepdims=True, dtype=np.float64)  # [..., 1]
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # [..., 1]
    return (((x - mean) / np.sqrt(var + eps)) * weight + bias).astype(np.float32)  # [..., C]


def layer_norm_2d(x, weight, bias, eps=LAYER_NORM_2D_EPS):  # [B, C, H, W] -> [B, C, H, W]
    """``LayerNorm2d``: a LayerNorm over the channel axis of a channels-first tensor."""
    u = x.mean(1, keepdims=True, dtype=np.float64)  # [B, 1, H, W]
    s = ((x - u) ** 2).mean(1, keepdims=True)  # [B, 1, H, W]
    y = (x - u) / np.sqrt(s + eps)  # [B, C, H, W]
    return (weight[:, None, None] * y + bias[:, None, None]).astype(np.float32)  # [B, C, H, W]


_ERF_P = np.array([-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                   -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                   -1.60960333262415e-02], np.float32)
_ERF_Q = np.array([-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                   -7.37332916720468e-03, -1.42647390514189e-02], np.float32)


def erf(x):  # [...] float32 -> [...] float32
    """erf in float32 by Eigen's rational fit on [-4, 4] (``generic_fast_erf_float``), the fit
    PyTorch's own CPU kernels use; NumPy has no erf. Bit-equal to the Numba kernel's ``_erf``;
    max error 3.8e-7 against ``math.erf`` over [-6, 6] (``tests/test_kernels.py``)."""
    v = np.clip(np.asarray(x, np.float32), np.float32(-4), np.float32(4))  # [...]
    x2 = v * v  # [...]
    p = x2 * _ERF_P[0] + _ERF_P[1]  # [...] Horner's rule, the same order as the kernel
    for c in _ERF_P[2:]:
        p = x2 * p + c  # [...]
    q = x2 * _ERF_Q[0] + _ERF_Q[1]  # [...]
    for c in _ERF_Q[2:]:
        q = x2 * q + c  # [...]
    return v * p / q  # [...]


def gelu(x):  # [...] -> [...]
    """``nn.GELU()`` (approximate="none"): 0.5 x (1 + erf(x / sqrt 2)), never the tanh form."""
    x = np.asarray(x, np.float32)
    return np.float32(0.5) * x * (np.float32(1) + erf(x * np.float32(1 / np.sqrt(2))))  # [...]


def relu(x):  # [...] -> [...]
    return np.maximum(x, np.float32(0))  # [...]


def softmax(x):  # [..., T] -> [..., T]
    """softmax over the last axis: subtract the row max, exponentiate, divide by the sum."""
    e = np.exp(x - x.max(-1, keepdims=True))  # [..., T]
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)  # [..., T]


def mlp_block(x, lin1, lin2, act):  # [..., C] -> [..., C]
    """``MLPBlock``: lin2(act(lin1(x))). GELU in the encoder, ReLU in the two-way transformer."""
    return linear(act(linear(x, **lin1)), **lin2)  # [..., C] -> [..., Dm] -> [..., C]


# --------------------------------------------------------------------------- masks

def mask_iou(a, b, axes=(-2, -1)) -> np.ndarray:  # [..., H, W] bool x2 -> [...] float64
    """Intersection over union of binary masks over ``axes``: ``|a & b| / max(|a | b|, 1)``, so
    two empty masks score 0 (SAM 2's trainer uses the same convention; an empty target never
    occurs in SA-1B)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    inter = np.logical_and(a, b).sum(axis=axes)  # [...]
    union = np.logical_or(a, b).sum(axis=axes)  # [...]
    return inter / np.maximum(union, 1)  # [...]


def mask_to_box(masks) -> np.ndarray:  # [..., H, W] bool -> [..., 4] int64
    """The tight XYXY box around each mask, x1 and y1 inclusive (the last column and row that
    are on), as ``utils/amg.py``'s ``batched_mask_to_box``; an empty mask gives [0, 0, 0, 0]."""
    masks = np.asarray(masks, dtype=bool)
    if masks.size == 0:
        return np.zeros(masks.shape[:-2] + (4,), dtype=np.int64)
    h, w = masks.shape[-2:]
    in_row = masks.any(axis=-1)  # [..., H] rows that hold a pixel
    in_col = masks.any(axis=-2)  # [..., W] columns that hold a pixel
    top = np.where(in_row.any(-1), in_row.argmax(-1), 0)  # [...]
    bottom = np.where(in_row.any(-1), h - 1 - in_row[..., ::-1].argmax(-1), 0)  # [...]
    left = np.where(in_col.any(-1), in_col.argmax(-1), 0)  # [...]
    right = np.where(in_col.any(-1), w - 1 - in_col[..., ::-1].argmax(-1), 0)  # [...]
    return np.stack([left, top, right, bottom], axis=-1).astype(np.int64)  # [..., 4]


# --------------------------------------------------------------------------- resizes

def source_indices(in_size: int, out_size: int):  # -> i0 [out], i1 [out], l0 [out], l1 [out]
    """PyTorch's source-index rule for linear/bilinear resizes with ``align_corners=False``
    (docs/numerics.md section 1.2): output index i reads input position
    ``src = (in / out) * (i + 0.5) - 0.5``, clamped at 0, and blends the two neighbours
    ``floor(src)`` and ``floor(src) + 1`` (clamped at ``in - 1``) with weights ``1 - l1`` and
    ``l1 = src - floor(src)``. In float32, as PyTorch computes it; ``scale * (i + 0.5) - 0.5``
    is ONE fused multiply-add in PyTorch's compiled kernels, and the float64 product of two
    float32 numbers is exact, so rounding the float64 result once gives the fused value
    (the unfused form moves src by an ulp, enough to swap i0 at exact grid crossings)."""
    dst = np.arange(out_size)  # [out]
    if in_size == out_size:
        return dst, dst.copy(), np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = np.float32(in_size) / np.float32(out_size)  # () float32 ratio
    centers = dst.astype(np.float32) + np.float32(0.5)  # [out]
    src = (np.float64(scale) * centers.astype(np.float64) - 0.5).astype(np.float32)  # [out] fused multiply-add
    src = np.maximum(src, np.float32(0))  # [out]
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)  # [out]
    l1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)  # [out]
    l0 = (np.float32(1) - l1).astype(np.float32)  # [out]
    i1 = i0 + (i0 < in_size - 1)  # [out]
    return i0, i1, l0, l1
