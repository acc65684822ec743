"""COCO segmentations in NumPy: run-length encodings and polygons, decoded as pycocotools does.

A COCO annotation's ``segmentation`` is one of (``pycocotools/coco.py``, ``annToRLE``):
- a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixel coordinates, the parts of one
  object, merged by union;
- an uncompressed RLE ``{"size": [h, w], "counts": [n0, n1, ...]}``;
- a compressed RLE ``{"size": [h, w], "counts": "<string>"}``.

Run lengths alternate background / object, starting with background (a mask that starts with
an object pixel has ``n0 = 0``), over the pixels in **column-major** order (down the first
column, then the next), as ``maskApi.c`` ``rleDecode`` writes them. The compressed string is
``rleToString``'s LEB128-like code: 5 bits a character (offset 48), bit 0x20 for "more",
bit 0x10 of the last character the sign, and from the third count on each count is stored
as its difference to the count two before.

Polygons are rasterized by the same algorithm as ``maskApi.c`` ``rleFrPoly`` so that the pixels
agree with pycocotools exactly (``tests/test_finetune.py`` compares them on random polygons):
the vertices are scaled by 5 and rounded, every edge is walked in unit steps of its longer
axis, and each crossing of a pixel column's centre line (x = i + 0.5 in the 5x grid) toggles
the column's run at the first pixel centre below it. The result is the even-odd fill of the
polygon sampled at pixel centres, up to the 1/5-pixel rounding of the vertices.

Unlike pycocotools, malformed input is refused with :class:`CocoError` instead of decoded
into garbage: counts that do not add up to ``h * w``, negative counts, characters outside the
code's range, a string that ends inside a number, polygons with fewer than 3 points, odd
coordinate counts, NaN.

Shapes: h, w the mask's height and width; n the number of runs; k polygon vertices.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from minisam.errors import MinisamError


class CocoError(MinisamError, ValueError):
    """A COCO file or segmentation that cannot be used: names the file, the key and the problem."""


def rle_decode(counts: Sequence[int], h: int, w: int, where: str = "RLE") -> np.ndarray:
    """Run lengths (column-major, background first) -> [h, w] bool."""
    counts = np.asarray(counts, dtype=np.int64)  # [n]
    if counts.ndim != 1:
        raise CocoError(f"{where}: counts must be a flat list of run lengths")
    if (counts < 0).any():
        raise CocoError(f"{where}: negative run length {int(counts.min())}")
    if int(counts.sum()) != h * w:
        raise CocoError(f"{where}: run lengths add up to {int(counts.sum())} pixels, the size {h} x {w} "
                        f"has {h * w}")
    values = (np.arange(len(counts)) % 2).astype(bool)  # [n] background, object, background, ...
    column_major = np.repeat(values, counts)  # [h * w] down each column in turn
    return column_major.reshape(w, h).T  # [h, w]


def rle_encode(mask: np.ndarray) -> List[int]:
    """[h, w] bool -> run lengths, column-major, background first (``maskApi.c`` ``rleEncode``)."""
    flat = np.asarray(mask, bool).T.ravel()  # [h * w] column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # [n - 1] where a run starts
    bounds = np.concatenate([[0], change, [flat.size]])  # [n + 1]
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts  # the first run is background by convention, here of length 0
    return counts


def rle_from_string(s: str, where: str = "RLE") -> List[int]:
    """The compressed counts string -> run lengths (``maskApi.c`` ``rleFrString``)."""
    counts: List[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise CocoError(f"{where}: counts string ends inside a number")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise CocoError(f"{where}: counts string has the character {s[p]!r}, outside the code's range "
                                "('0' to 'o')")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign extension of the last group
        if len(counts) > 2:
            x += counts[-2]  # stored as the difference to the count two before
        if x < 0:
            raise CocoError(f"{where}: counts string decodes to a negative run length ({x})")
        counts.append(x)
    return counts


def rle_to_string(counts: Sequence[int]) -> str:
    """Run lengths -> the compressed counts string (``maskApi.c`` ``rleToString``)."""
    out = []
    counts = [int(c) for c in counts]
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as C's >> on a signed long
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def polygon_rle(xy: Sequence[float], h: int, w: int, where: str = "polygon") -> List[int]:
    """One polygon ``[x0, y0, x1, y1, ...]`` -> run lengths, as ``maskApi.c`` ``rleFrPoly``."""
    xy = np.asarray(xy, dtype=np.float64)  # [2k]
    if xy.ndim != 1 or len(xy) % 2 or len(xy) < 6:
        raise CocoError(f"{where}: a polygon needs x, y pairs of at least 3 points, got {len(xy)} numbers")
    if not np.all(np.isfinite(xy)):
        raise CocoError(f"{where}: polygon has NaN or infinite coordinates")
    scale = 5.0
    # C's (int)(scale * x + .5): truncation toward zero, not floor, for negative coordinates too
    x = np.trunc(scale * xy[0::2] + 0.5).astype(np.int64)  # [k]
    y = np.trunc(scale * xy[1::2] + 0.5).astype(np.int64)  # [k]
    x, y = np.append(x, x[0]), np.append(y, y[0])  # [k + 1] closed
    us, vs = [], []
    for j in range(len(x) - 1):
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:  # walk every edge in increasing order of its longer axis, so both directions agree
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx == 0 and dy == 0:
            # A repeated vertex: C divides 0 by 0 here; the one point it emits lies on the
            # previous edge's last column and the next edge's first, so it never marks a crossing.
            us.append(np.array([xs])), vs.append(np.array([ys]))
            continue
        d = np.arange(max(dx, dy) + 1)  # [dx + 1] or [dy + 1]
        t = (max(dx, dy) - d) if flip else d
        if dx >= dy:
            s = (ye - ys) / dx
            us.append(t + xs), vs.append(np.trunc(ys + s * t + 0.5).astype(np.int64))
        else:
            s = (xe - xs) / dy
            vs.append(t + ys), us.append(np.trunc(xs + s * t + 0.5).astype(np.int64))
    u, v = np.concatenate(us), np.concatenate(vs)  # [m] boundary points in the 5x grid
    # the points where the boundary crosses a column's centre line, back at 1x
    changed = u[1:] != u[:-1]  # [m - 1]
    xd = np.where(u[1:] < u[:-1], u[1:], u[1:] - 1).astype(np.float64)  # [m - 1]
    xd = (xd + 0.5) / scale - 0.5
    keep = changed & (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)  # [m - 1]
    yd = np.minimum(v[1:], v[:-1]).astype(np.float64)  # [m - 1]
    yd = np.ceil(np.clip((yd + 0.5) / scale - 0.5, 0, h))
    starts = np.sort(np.concatenate([xd[keep].astype(np.int64) * h + yd[keep].astype(np.int64),
                                     [h * w]]))  # [c + 1] column-major pixel index of each toggle
    a = np.diff(np.concatenate([[0], starts])).tolist()  # run lengths, some 0 (two toggles at one pixel)
    counts = [a[0]]
    j = 1
    while j < len(a):  # two toggles at one pixel cancel: merge the runs around a 0-length run
        if a[j] > 0:
            counts.append(a[j])
            j += 1
        else:
            j += 1
            if j < len(a):
                counts[-1] += a[j]
                j += 1
    return counts


def decode_segmentation(segmentation, h: int, w: int, where: str = "segmentation") -> np.ndarray:
    """A COCO ``segmentation`` (polygons, or RLE with string or list counts) -> [h, w] bool.

    ``h``, ``w``: the image's size; an RLE's own ``size`` must equal it.
    """
    if isinstance(segmentation, list):
        if not segmentation:
            raise CocoError(f"{where}: empty polygon list")
        mask = np.zeros((h, w), bool)  # [h, w]
        for i, poly in enumerate(segmentation):
            if not isinstance(poly, list) or not all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                     for c in poly):
                raise CocoError(f"{where}[{i}]: a polygon must be a list of numbers [x0, y0, x1, y1, ...]")
            mask |= rle_decode(polygon_rle(poly, h, w, f"{where}[{i}]"), h, w, f"{where}[{i}]")
        return mask
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)):
            raise CocoError(f"{where}: an RLE needs 'size': [height, width], got {size!r}")
        if tuple(size) != (h, w):
            raise CocoError(f"{where}: RLE size {size[0]} x {size[1]} (h x w) differs from its image's {h} x {w}")
        if isinstance(counts, str):
            return rle_decode(rle_from_string(counts, where), h, w, where)
        if isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            return rle_decode(counts, h, w, where)
        raise CocoError(f"{where}: RLE 'counts' must be a string or a list of integers")
    raise CocoError(f"{where}: must be a list of polygons or an RLE dict, got {type(segmentation).__name__}")

