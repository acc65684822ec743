"""Helpers of the automatic mask generator: point grids, crops, RLE, stability, NMS, components.

Paper: Kirillov et al. 2023, section 4 ("Segment Anything Data Engine", fully automatic
stage) and appendix B (grid of 32x32 points, predicted-IoU and stability filters, NMS,
zoomed-in crops, small-region post-processing).
Mirrors ``segment_anything/utils/amg.py`` (and the torchvision / pycocotools / OpenCV
calls it makes) with NumPy and Numba only: no torch, torchvision, pycocotools or cv2.

Shape alphabet: N masks or boxes, H x W the image (or crop), P points, K RLE runs.

Every decision here is exact, not approximate, because it decides which masks survive:
- boxes are **inclusive** pixel indexes (x1 is the last column that is on);
- RLE is **column-major** (Fortran order), first run counts zeros, as pycocotools wants;
- the stability score counts with torch's int16 row sums and int32 totals;
- NMS is torchvision's CPU kernel: float32 IoU, stable descending sort, strict ``>``;
- connected components are 8-connected and numbered like ``cv2.connectedComponents``
  (by the first 2x2 block of each component in raster order), so ties in the
  "keep the largest island" rule break the same way.

The Numba kernels (``_rle_counts_kernel``, ``_stability_counts_kernel``, ``_components_kernel``)
each have a readable NumPy twin (``mask_to_rle_numpy``, ``stability_counts_numpy``,
``connected_components_numpy``) that the tests hold equal on random inputs.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from minisam.kernels.jit import njit
from minisam.modeling.common import mask_to_box as batched_mask_to_box  # the official name

# --------------------------------------------------------------------------------------
# Point grids and crops
# --------------------------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:  # -> [n*n, 2] float64 in [0, 1]
    """An n x n grid of (x, y) points at pixel-like centres of [0,1]^2, rows of y outer."""
    offset = 1 / (2 * n_per_side)
    points_one_side = np.linspace(offset, 1 - offset, n_per_side)  # [n]
    points_x = np.tile(points_one_side[None, :], (n_per_side, 1))  # [n, n] x varies along columns
    points_y = np.tile(points_one_side[:, None], (1, n_per_side))  # [n, n] y varies along rows
    return np.stack([points_x, points_y], axis=-1).reshape(-1, 2)  # [n, n, 2] -> [n*n, 2]


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> List[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n / scale**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: Tuple[int, int], n_layers: int,
                        overlap_ratio: float) -> Tuple[List[List[int]], List[int]]:
    """XYXY crop boxes and their layer: the whole image, then (2^i)^2 overlapping crops per layer i.

    Crops are listed x0 outer, y0 inner (``itertools.product``), as in the official code.
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    crop_boxes, layer_idxs = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        crop_box_x0 = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        crop_box_y0 = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in product(crop_box_x0, crop_box_y0):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)
    return crop_boxes, layer_idxs


def uncrop_boxes_xyxy(boxes: np.ndarray, crop_box: Sequence[int]) -> np.ndarray:  # [..., 4] -> [..., 4]
    x0, y0 = crop_box[0], crop_box[1]
    return boxes + np.array([x0, y0, x0, y0], dtype=np.int64)  # broadcast over the leading dims


def uncrop_points(points: np.ndarray, crop_box: Sequence[int]) -> np.ndarray:  # [..., 2] -> [..., 2]
    x0, y0 = crop_box[0], crop_box[1]
    return points + np.array([x0, y0], dtype=np.int64)


def uncrop_masks(masks: np.ndarray, crop_box: Sequence[int], orig_h: int, orig_w: int) -> np.ndarray:
    """Zero-pad crop masks back into the full image: [..., h, w] -> [..., orig_h, orig_w]."""
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    lead = [(0, 0)] * (masks.ndim - 2)
    return np.pad(masks, lead + [(y0, orig_h - y1), (x0, orig_w - x1)])  # [..., orig_h, orig_w]


def is_box_near_crop_edge(boxes: np.ndarray, crop_box: Sequence[int], orig_box: Sequence[int],
                          atol: float = 20.0) -> np.ndarray:  # [N, 4] crop frame -> [N] bool
    """True for boxes within ``atol`` px of a crop edge that is not also an image edge."""
    crop = np.asarray(crop_box, dtype=np.float32)  # [4]
    orig = np.asarray(orig_box, dtype=np.float32)  # [4]
    boxes = uncrop_boxes_xyxy(np.asarray(boxes), crop_box).astype(np.float32)  # [N, 4] image frame
    atol = np.float32(atol)
    near_crop_edge = np.abs(boxes - crop[None, :]) <= atol  # [N, 4] torch.isclose with rtol=0
    near_image_edge = np.abs(boxes - orig[None, :]) <= atol  # [N, 4]
    return np.any(near_crop_edge & ~near_image_edge, axis=1)  # [N]


def box_xyxy_to_xywh(box_xyxy: np.ndarray) -> np.ndarray:  # [4] -> [4]
    """XYWH with w = x1 - x0 on inclusive corners (the official convention: extent minus one)."""
    box = np.array(box_xyxy, copy=True)
    box[2] = box[2] - box[0]
    box[3] = box[3] - box[1]
    return box


def batch_iterator(batch_size: int, *args) -> Iterator[List[Any]]:
    """Yield ``ceil(n / batch_size)`` aligned slices of every argument."""
    if len(args) == 0 or any(len(a) != len(args[0]) for a in args):
        raise ValueError("batch_iterator needs at least one input and inputs of the same length")
    n_batches = len(args[0]) // batch_size + int(len(args[0]) % batch_size != 0)
    for b in range(n_batches):
        yield [arg[b * batch_size:(b + 1) * batch_size] for arg in args]


# --------------------------------------------------------------------------------------
# Stability score
# --------------------------------------------------------------------------------------


def _wrap(count: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of an integer count, as an intN accumulator would hold it."""
    half = 1 << (bits - 1)
    return ((count + half) & ((1 << bits) - 1)) - half


def stability_counts_numpy(logits: np.ndarray, hi: float, lo: float) -> Tuple[np.ndarray, np.ndarray]:
    """(#pixels > hi, #pixels > lo) per mask, counted like torch: int16 per row, int32 total.

    [N, H, W] float32 -> [N] int64, [N] int64. Thresholds are rounded to float32 first, the
    way torch compares a float32 tensor with a Python scalar.
    """
    hi, lo = np.float32(hi), np.float32(lo)
    rows_hi = _wrap((logits > hi).sum(-1, dtype=np.int64), 16)  # [N, H] int16 row sums
    rows_lo = _wrap((logits > lo).sum(-1, dtype=np.int64), 16)  # [N, H]
    return _wrap(rows_hi.sum(-1), 32), _wrap(rows_lo.sum(-1), 32)  # [N], [N] int32 totals


@njit
def _stability_counts_kernel(logits, hi, lo):  # [N, H, W] float32, float32, float32 -> [N], [N] int64
    n, h, w = logits.shape
    inter = np.zeros(n, dtype=np.int64)
    union = np.zeros(n, dtype=np.int64)
    for i in range(n):
        total_hi = 0
        total_lo = 0
        for y in range(h):
            row_hi = 0
            row_lo = 0
            for x in range(w):
                v = logits[i, y, x]
                if v > hi:
                    row_hi += 1
                if v > lo:
                    row_lo += 1
            total_hi += ((row_hi + 32768) & 0xFFFF) - 32768  # int16 row accumulator
            total_lo += ((row_lo + 32768) & 0xFFFF) - 32768
        inter[i] = ((total_hi + 2147483648) & 0xFFFFFFFF) - 2147483648  # int32 total
        union[i] = ((total_lo + 2147483648) & 0xFFFFFFFF) - 2147483648
    return inter, union


def calculate_stability_score(masks: np.ndarray, mask_threshold: float,
                              threshold_offset: float) -> np.ndarray:  # [..., H, W] -> [...] float32
    """IoU of the masks thresholded at ``t + offset`` and ``t - offset`` (one holds the other).

    NaN when the looser mask is empty (0 / 0), exactly like the official code.
    """
    logits = np.ascontiguousarray(masks, dtype=np.float32)
    lead = logits.shape[:-2]
    flat = logits.reshape((-1,) + logits.shape[-2:])  # [..., H, W] -> [N, H, W]
    inter, union = _stability_counts_kernel(flat, np.float32(mask_threshold + threshold_offset),
                                     np.float32(mask_threshold - threshold_offset))
    with np.errstate(invalid="ignore", divide="ignore"):
        score = inter.astype(np.float32) / union.astype(np.float32)  # [N] float32 true division
    return score.reshape(lead)


# --------------------------------------------------------------------------------------
# Boxes and NMS
# --------------------------------------------------------------------------------------


def box_area(boxes: np.ndarray) -> np.ndarray:  # [N, 4] -> [N]
    """(x1 - x0) * (y1 - y0), no +1, as torchvision.ops.box_area."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _descending_stable_order(scores: np.ndarray) -> np.ndarray:  # [N] -> [N] int64
    """torch.sort(descending=True, stable=True): ties keep their order, NaN counts as largest."""
    key = -scores.astype(np.float64)
    key[np.isnan(key)] = -np.inf
    return np.argsort(key, kind="stable")


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:  # -> [M] int64
    """torchvision.ops.nms on CPU: indexes of the kept boxes, highest score first.

    IoU in float32 with areas ``(x2-x1)*(y2-y1)`` (no +1); a box is suppressed when its IoU
    with a kept box is ``> iou_threshold`` (the float32 IoU compared in double, as the C++
    kernel does). Zero-area pairs give 0/0 = NaN, which never suppresses.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)  # [N, 4]
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)  # [N]
    order = _descending_stable_order(scores)  # [N]
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))  # 4 x [N] in score order
    areas = (x2 - x1) * (y2 - y1)  # [N] float32
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(len(order)):
            if suppressed[i]:
                continue
            keep.append(order[i])
            w = np.maximum(np.float32(0), np.minimum(x2[i], x2[i + 1:]) - np.maximum(x1[i], x1[i + 1:]))
            h = np.maximum(np.float32(0), np.minimum(y2[i], y2[i + 1:]) - np.maximum(y1[i], y1[i + 1:]))
            inter = w * h  # [N-i-1] float32
            iou = inter / (areas[i] + areas[i + 1:] - inter)  # [N-i-1] float32
            suppressed[i + 1:] |= iou.astype(np.float64) > iou_threshold
    return np.array(keep, dtype=np.int64)


# --------------------------------------------------------------------------------------
# Run-length encoding
# --------------------------------------------------------------------------------------


def mask_to_rle_numpy(mask: np.ndarray) -> List[int]:  # [H, W] bool -> run lengths
    """Column-major run lengths, first run counting zeros (may be 0)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)  # [H, W] -> [W*H] Fortran order
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # [K-1] first index of each new run
    edges = np.concatenate([[0], change, [flat.size]])  # [K+1]
    counts = np.diff(edges).tolist()
    return counts if (flat.size == 0 or not flat[0]) else [0] + counts


@njit
def _rle_counts_kernel(mask):  # [H, W] bool -> [K] int64 column-major runs
    h, w = mask.shape
    counts = np.empty(h * w + 2, dtype=np.int64)
    n = 0
    current = False  # runs alternate starting with "off"
    run = 0
    for x in range(w):
        for y in range(h):
            v = mask[y, x]
            if v != current:
                counts[n] = run
                n += 1
                run = 0
                current = v
            run += 1
    counts[n] = run
    n += 1
    return counts[:n]


def mask_to_rle(masks: np.ndarray) -> List[Dict[str, Any]]:  # [N, H, W] bool -> N uncompressed RLEs
    """``mask_to_rle_pytorch``: ``{"size": [h, w], "counts": [...]}`` per mask."""
    masks = np.asarray(masks, dtype=bool)
    n, h, w = masks.shape
    if h * w == 0:  # nothing to scan: the official gives one run of length 0
        return [{"size": [h, w], "counts": [0]} for _ in range(n)]
    return [{"size": [h, w], "counts": _rle_counts_kernel(masks[i]).tolist()} for i in range(n)]


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:  # RLE -> [H, W] bool
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)  # [K]
    values = (np.arange(len(counts)) % 2).astype(bool)  # [K] off, on, off, ...
    flat = np.repeat(values, counts)  # [W*H] Fortran order
    return flat.reshape(w, h).transpose()  # [W, H] -> [H, W] (a transposed view, like the official)


def area_from_rle(rle: Dict[str, Any]) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(uncompressed_rle: Dict[str, Any]) -> Dict[str, Any]:
    """COCO compressed RLE (pycocotools ``frPyObjects`` + ``rleToString``), counts as str.

    Each count (from the third on, as a difference to the count two places before) is
    written as little-endian groups of 5 bits; bit 0x20 marks "more groups follow" and
    0x10 of the last group is the sign; each group is offset by 48 into printable ASCII.
    """
    h, w = uncompressed_rle["size"]
    counts = [int(c) & 0xFFFFFFFF for c in uncompressed_rle["counts"]]  # pycocotools casts to uint32
    out = []
    for i, x in enumerate(counts):
        if i > 2:  # the C code's `if(i>2)`: counts 0, 1, 2 are written as they are
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, like C's long >> 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return {"size": [h, w], "counts": "".join(out)}


def coco_decode_rle(rle: Dict[str, Any]) -> np.ndarray:  # COCO compressed RLE -> [H, W] bool
    """Inverse of :func:`coco_encode_rle` (pycocotools ``rleFrString``), then :func:`rle_to_mask`."""
    s = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
    counts: List[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign-extend the last group
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return rle_to_mask({"size": rle["size"], "counts": counts})


# --------------------------------------------------------------------------------------
# Connected components and small regions
# --------------------------------------------------------------------------------------


def connected_components_numpy(mask: np.ndarray) -> Tuple[int, np.ndarray, np.ndarray]:
    """Readable twin of :func:`connected_components`: min-label propagation over 8 neighbours.

    Returns ``(n_labels, labels [H, W] int32, areas [n_labels] int64)``, label 0 = background.
    """
    fg = np.asarray(mask).astype(bool)  # [H, W]
    h, w = fg.shape
    big = np.iinfo(np.int64).max
    labels = np.where(fg, np.arange(h * w).reshape(h, w) + 1, big)  # [H, W] provisional labels
    while True:
        padded = np.pad(labels, 1, constant_values=big)  # [H+2, W+2]
        best = labels.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                best = np.minimum(best, padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w])  # [H, W]
        best = np.where(fg, best, big)
        if np.array_equal(best, labels):
            break
        labels = best
    # Number components like OpenCV: by the first 2x2 block (raster order of blocks) they touch.
    ys, xs = np.nonzero(fg)  # [F], [F]
    block = (ys // 2) * ((w + 1) // 2) + xs // 2  # [F] block index of each pixel
    roots, inverse = np.unique(labels[ys, xs], return_inverse=True)  # [C], [F]
    first_block = np.full(len(roots), big)
    np.minimum.at(first_block, inverse, block)  # [C]
    rank = np.empty(len(roots), dtype=np.int64)
    rank[np.argsort(first_block, kind="stable")] = np.arange(1, len(roots) + 1)
    out = np.zeros((h, w), dtype=np.int32)
    out[ys, xs] = rank[inverse]
    areas = np.bincount(out.ravel(), minlength=len(roots) + 1).astype(np.int64)  # [C+1]
    return len(roots) + 1, out, areas


@njit
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit
def _components_kernel(fg):  # [H, W] bool -> n_labels, [H, W] int32, [n_labels] int64
    h, w = fg.shape
    parent = np.arange(h * w)
    for y in range(h):  # union each pixel with its already-scanned 8-neighbours (W, NW, N, NE)
        for x in range(w):
            if not fg[y, x]:
                continue
            i = y * w + x
            for dy, dx in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
                yy = y + dy
                xx = x + dx
                if yy < 0 or xx < 0 or xx >= w or not fg[yy, xx]:
                    continue
                a = _find(parent, i)
                b = _find(parent, yy * w + xx)
                if a != b:
                    if a < b:
                        parent[b] = a
                    else:
                        parent[a] = b
    # Final labels in OpenCV order: scan 2x2 blocks in raster order (all pixels of a block
    # are 8-connected, so a block belongs to one component).
    final = np.zeros(h * w, dtype=np.int64)  # root -> label, 0 = not yet numbered
    labels = np.zeros((h, w), dtype=np.int32)
    n = 1
    for by in range(0, h, 2):
        for bx in range(0, w, 2):
            for y in range(by, min(by + 2, h)):
                for x in range(bx, min(bx + 2, w)):
                    if fg[y, x]:
                        r = _find(parent, y * w + x)
                        if final[r] == 0:
                            final[r] = n
                            n += 1
                        labels[y, x] = final[r]
    areas = np.zeros(n, dtype=np.int64)
    for y in range(h):
        for x in range(w):
            areas[labels[y, x]] += 1
    return n, labels, areas


def connected_components(mask: np.ndarray) -> Tuple[int, np.ndarray, np.ndarray]:
    """8-connected components like ``cv2.connectedComponentsWithStats(mask, 8)``.

    Returns ``(n_labels, labels [H, W] int32, areas [n_labels] int64)``; label 0 is the
    background and ``areas[0]`` its pixel count (cv2's ``stats[:, CC_STAT_AREA]``).
    """
    fg = np.ascontiguousarray(np.asarray(mask).astype(bool))
    return _components_kernel(fg)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area_thresh``.

    Returns ``(mask, changed)``. If every island is small, the largest one is kept (the
    first in label order on a tie).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"remove_small_regions mode must be 'holes' or 'islands', got {mode!r}")
    correct_holes = mode == "holes"
    working = np.asarray(mask, dtype=bool) ^ correct_holes  # [H, W] the regions to inspect
    n_labels, regions, areas = connected_components(working)
    sizes = areas[1:]  # [C] label 0 is the background
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if len(small) == 0:
        return mask, False
    fill_labels = [0] + small
    if not correct_holes:
        fill_labels = [i for i in range(n_labels) if i not in fill_labels]
        if len(fill_labels) == 0:  # every island is small: keep the largest
            fill_labels = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill_labels), True
