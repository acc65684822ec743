"""Synthetic scenes of shapes, with instance masks and part/whole structure.

SAM is trained on masks at several granularities (paper section 3, "Resolving ambiguity"):
one click on a shirt can mean the shirt, the person or the pocket. To give a small model
something to learn about ambiguity, each scene here has masks at three levels:

- **part**: a smaller shape drawn inside an object (an inlay), or a ring's band;
- **object**: a whole shape as seen (occluded by shapes painted later), including its parts;
- **group**: two shapes of one colour family touching each other, or a ring with its hole.

A point inside a part is genuinely ambiguous between the part, the object and maybe the
group; the three mask outputs of SAM have something to specialise on.

Everything is seeded NumPy (a scene at 256x256 takes ~2 ms). Images are HxWx3 uint8 RGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

KINDS = ("ellipse", "polygon", "star", "rect", "ring")
# With a minimum mask area the inlays (parts) are drawn larger, 0.35-0.6 of their object's
# radius instead of 0.25-0.45, so that parts survive the minimum and ambiguity stays in the data.
PART_SCALE_MIN_AREA = (0.35, 0.6)


@dataclass
class Scene:
    image: np.ndarray                     # [H, W, 3] uint8
    masks: List[np.ndarray]               # each [H, W] bool, visible
    levels: List[str]                     # "part" | "object" | "group", one per mask
    kinds: List[str] = field(default_factory=list)      # shape kind per mask ("group" for groups)
    objects: List[int] = field(default_factory=list)   # indexes into masks of the object-level masks

    @property
    def instance_masks(self) -> List[np.ndarray]:
        return [self.masks[i] for i in self.objects]


def _grid(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)   # [H, W] each
    return yy + 0.5, xx + 0.5


def _polygon_mask(yy, xx, verts):
    """Even-odd point-in-polygon test for all pixels at once. verts: [V, 2] (x, y)."""
    inside = np.zeros(yy.shape, bool)                 # [H, W]
    x0, y0 = verts[:, 0], verts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1):
        crosses = (b > yy) != (d > yy)                # [H, W]
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = a + (yy - b) * (c - a) / (d - b)     # [H, W]
        inside ^= crosses & (xx < xi)
    return inside


def _shape_mask(kind, yy, xx, cx, cy, r, rng):
    if kind == "ellipse":
        ax, ay, th = r * rng.uniform(0.6, 1.0), r * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0
    if kind == "rect":
        hw, hh, th = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        return (np.abs(u) <= hw) & (np.abs(v) <= hh)
    if kind in ("polygon", "star"):
        n = rng.integers(3, 8) if kind == "polygon" else rng.integers(5, 9)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == "polygon" else \
            np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
        radii = r * rng.uniform(0.6, 1.0, len(angles))
        if kind == "star":
            radii[1::2] *= rng.uniform(0.35, 0.6)
        verts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)   # [V, 2]
        return _polygon_mask(yy, xx, verts)
    raise ValueError(kind)


def _texture(h, w, rng, base):
    """A colour fill with one of: flat, gradient, stripes, checker; plus noise. [H, W, 3] float."""
    yy, xx = _grid(h, w)
    kind = rng.integers(0, 4)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    if kind == 1:
        d = rng.normal(size=2)
        ramp = (xx * d[0] + yy * d[1]) / (np.hypot(*d) * max(h, w))
        img += 60 * ramp[..., None] * rng.choice([-1, 1], 3)
    elif kind == 2:
        period, th = rng.uniform(5, 14), rng.uniform(0, np.pi)
        s = np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period)
        img += 35 * s[..., None]
    elif kind == 3:
        p = int(rng.integers(5, 12))
        c = ((yy // p + xx // p) % 2) * 2 - 1
        img += 30 * c[..., None]
    return img


def _palette(rng):
    return rng.uniform(20, 235, 3)


def make_scene(rng: np.random.Generator, size: int = 256, max_objects: int = 6, min_area: int = 0) -> Scene:
    """One scene: background, 2..max_objects shapes with occlusion, parts and groups.

    ``min_area`` (visible pixels): every mask of the scene, part, object or group, is at least
    this large. A shape that would be left smaller (drawn too small, or occluded by later
    shapes) is not drawn, and neither are its parts and the groups it belongs to; a scene left
    with no object is drawn again from the same stream. ``min_area=0`` draws every shape (masks
    of fewer than 20 visible pixels are still left out of the lists), the original domain.
    """
    while True:
        scene = _draw_scene(rng, size, max_objects, min_area)
        if scene.objects or not min_area:
            return scene


@dataclass
class _Layer:
    full: np.ndarray                 # [H, W] bool, the shape as drawn
    level: str                       # "part" | "object" | "group"
    kind: str                        # shape kind ("group" for groups)
    colour: object = None            # base colour [3], None for groups (not painted)
    parent: int = -1                 # parts: their object; groups: the object they were made from
    members: tuple = ()              # groups: the painted layers they are the union of


def _visible(layers: List[_Layer], drawn: List[bool]) -> List[np.ndarray]:
    """The visible part of each layer [H, W] bool (all False for a layer not drawn): an object
    covers what was painted before it (not its own parts); an object includes its parts; a
    group is its shape where no later object covers it."""
    visible = [l.full & d for l, d in zip(layers, drawn)]
    for i, layer in enumerate(layers):
        if drawn[i] and layer.level == "object":
            for k in range(i):
                visible[k] &= ~layer.full
    for i, layer in enumerate(layers):
        if drawn[i] and layer.level == "part":
            visible[i] &= visible[layer.parent] | layer.full
            visible[layer.parent] |= visible[i]
    for i, layer in enumerate(layers):
        if drawn[i] and layer.level == "group":
            keep = np.ones_like(layer.full)
            for k in range(i + 1, len(layers)):
                if drawn[k] and layers[k].level == "object" and layers[k].parent < 0:
                    keep &= ~layers[k].full
            visible[i] = layer.full & keep
    return visible


def _draw_scene(rng, size, max_objects, min_area) -> Scene:
    h = w = size
    yy, xx = _grid(h, w)
    image = _texture(h, w, rng, _palette(rng) * 0.6)                     # [H, W, 3]
    layers: List[_Layer] = []
    n = int(rng.integers(2, max_objects + 1))
    for _ in range(n):
        r = rng.uniform(0.06, 0.24) * size
        cx, cy = rng.uniform(r * 0.5, w - r * 0.5), rng.uniform(r * 0.5, h - r * 0.5)
        kind = KINDS[rng.integers(0, len(KINDS))]
        base = _palette(rng)
        if kind == "ring":
            outer = _shape_mask("ellipse", yy, xx, cx, cy, r, np.random.default_rng(rng.integers(1 << 31)))
            sub = np.random.default_rng(rng.integers(1 << 31))
            hole = _shape_mask("ellipse", yy, xx, cx, cy, r * sub.uniform(0.35, 0.6), sub) & outer
            band = outer & ~hole
            if band.sum() < 30 or hole.sum() < 10:
                continue
            layers.append(_Layer(band, "object", "ring", base))
            layers.append(_Layer(outer, "group", "group", None, len(layers) - 1, (len(layers) - 1,)))  # ring + hole
            continue
        m = _shape_mask(kind, yy, xx, cx, cy, r, rng)
        if m.sum() < 40:
            continue
        layers.append(_Layer(m, "object", kind, base))
        obj = len(layers) - 1
        if rng.random() < 0.35:          # an inlay: a part inside the object
            ys, xs = np.nonzero(m)
            j = rng.integers(len(ys))
            pr = r * rng.uniform(*(PART_SCALE_MIN_AREA if min_area else (0.25, 0.45)))
            part_kind = KINDS[rng.integers(0, 4)]
            part = _shape_mask(part_kind, yy, xx, xs[j] + 0.5, ys[j] + 0.5, pr, rng) & m
            if part.sum() >= 25 and (m & ~part).sum() >= 25:
                layers.append(_Layer(part, "part", part_kind, _palette(rng), obj))
        if rng.random() < 0.25:          # a sibling of the same colour family touching it: a group
            ang = rng.uniform(0, 2 * np.pi)
            r2 = r * rng.uniform(0.5, 0.9)
            sx, sy = cx + np.cos(ang) * (r + r2) * 0.7, cy + np.sin(ang) * (r + r2) * 0.7
            sib_kind = KINDS[rng.integers(0, 4)]
            sib = _shape_mask(sib_kind, yy, xx, sx, sy, r2, rng) & ~m
            if sib.sum() >= 40 and (sib & _dilate(m)).any():
                layers.append(_Layer(sib, "object", sib_kind, np.clip(base + rng.normal(0, 18, 3), 0, 255)))
                layers.append(_Layer(m | sib, "group", "group", None, obj, (obj, len(layers) - 1)))
    drawn = [True] * len(layers)
    visible = _visible(layers, drawn)
    while min_area:                      # leave out the smallest mask below min_area, with what depends on it
        small = [i for i in range(len(layers)) if drawn[i] and visible[i].sum() < min_area]
        if not small:
            break
        gone = min(small, key=lambda i: visible[i].sum())
        gone = layers[gone].members[0] if layers[gone].level == "group" else gone   # a group: its first member
        drawn[gone] = False
        for i, layer in enumerate(layers):
            if layer.parent == gone or gone in layer.members:
                drawn[i] = False
        visible = _visible(layers, drawn)
    for layer, d in zip(layers, drawn):  # paint back to front
        if d and layer.colour is not None:
            image = np.where(layer.full[..., None], _texture(h, w, rng, layer.colour), image)
    image = image + rng.normal(0, rng.uniform(2, 10), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)                       # [H, W, 3]
    masks, levels, objects, mask_kinds = [], [], [], []
    for i, layer in enumerate(layers):
        if visible[i].sum() < 20:
            continue
        if any(np.array_equal(visible[i], m) for m in masks):
            continue
        if layer.level == "object":
            objects.append(len(masks))
        masks.append(visible[i])
        levels.append(layer.level)
        mask_kinds.append(layer.kind)
    return Scene(image=image, masks=masks, levels=levels, kinds=mask_kinds, objects=objects)


def _dilate(m):
    out = m.copy()
    out[1:] |= m[:-1]; out[:-1] |= m[1:]; out[:, 1:] |= m[:, :-1]; out[:, :-1] |= m[:, 1:]
    return out


def make_scenes(seed: int, n: int, size: int = 256, min_area: int = 0) -> List[Scene]:
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size, min_area=min_area) for _ in range(n)]


# Shapes the trained micro model never saw, for fine-tuning (lesson 22, ``minisam finetune``).
UNSEEN_KINDS = ("cross", "crescent")


def make_unseen_scene(rng: np.random.Generator, size: int = 128, min_area: int = 60, zoom: int = 1) -> Scene:
    """Crosses (two crossing bars) and crescents (a disk minus a shifted disk), 1 to 3 per image,
    on the textures of :func:`make_scene`; later shapes occlude earlier ones. Object-level masks
    only, each at least ``min_area`` visible pixels (the list may come out empty).

    ``zoom``: a close-up. The scene is drawn ``zoom`` times larger and cut to its centre
    ``size`` x ``size``: the same objects ``zoom`` times larger, some cut by the border. The
    random draws do not depend on the size, so one generator state gives the same scene at every
    zoom, and with ``min_area=0`` the same objects in the same order."""
    full = zoom * size
    yy, xx = _grid(full, full)
    image = _texture(full, full, rng, _palette(rng) * 0.6)                   # [zoom * H, zoom * W, 3]
    masks, kinds = [], []
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.25, 0.75, 2) * full
        rad = rng.uniform(0.12, 0.22) * full
        if rng.random() < 0.5:
            th = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            bar = rad * rng.uniform(0.22, 0.35)
            shape = ((np.abs(u) <= rad) & (np.abs(v) <= bar)) | ((np.abs(v) <= rad) & (np.abs(u) <= bar))
            kinds.append("cross")
        else:
            a = rng.uniform(0, 2 * np.pi)
            shift = rad * rng.uniform(0.45, 0.7)
            disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= rad ** 2
            bite = (xx - cx - shift * np.cos(a)) ** 2 + (yy - cy - shift * np.sin(a)) ** 2 <= (0.85 * rad) ** 2
            shape = disk & ~bite
            kinds.append("crescent")
        colour = _texture(full, full, rng, _palette(rng))
        image[shape] = colour[shape]
        masks = [m & ~shape for m in masks] + [shape]
    o = (zoom - 1) * size // 2  # the centre size x size of the zoomed scene
    image = image[o:o + size, o:o + size]                                    # [H, W, 3]
    masks = [m[o:o + size, o:o + size] for m in masks]                       # each [H, W]
    keep = [i for i, m in enumerate(masks) if m.sum() >= min_area]
    return Scene(image=np.clip(image, 0, 255).astype(np.uint8), masks=[masks[i] for i in keep],
                 levels=["object"] * len(keep), kinds=[kinds[i] for i in keep], objects=list(range(len(keep))))


def interior_point(mask: np.ndarray) -> np.ndarray:
    """The most interior pixel of a mask (erode until the next erosion would empty it). [2] (x, y)."""
    m = mask.copy()
    while True:
        e = m.copy()
        e[1:] &= m[:-1]; e[:-1] &= m[1:]; e[:, 1:] &= m[:, :-1]; e[:, :-1] &= m[:, 1:]
        e[0] = e[-1] = False; e[:, 0] = e[:, -1] = False
        if not e.any():
            break
        m = e
    ys, xs = np.nonzero(m)
    k = len(ys) // 2
    return np.array([xs[k] + 0.5, ys[k] + 0.5], np.float64)
