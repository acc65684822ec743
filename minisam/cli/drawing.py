"""Drawing helpers as the official notebooks define them, and safe output files.

``show_mask``, ``show_points``, ``show_box`` follow ``notebooks/predictor_example.ipynb``;
``show_anns`` follows ``notebooks/automatic_mask_generator_example.ipynb`` (masks sorted by
area, largest first, each in a random colour at alpha 0.35).
"""

from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from minisam.errors import MinisamError


def show_mask(mask, ax, color=None, random_color: bool = False) -> None:
    """Overlay one boolean mask [H, W] in translucent colour (default: the notebooks' blue)."""
    if color is None:
        color = np.concatenate([np.random.random(3), [0.6]]) if random_color else \
            np.array([30 / 255, 144 / 255, 255 / 255, 0.6])
    h, w = mask.shape[-2:]
    ax.imshow(np.asarray(mask).reshape(h, w, 1) * np.asarray(color).reshape(1, 1, -1))   # [H, W, 4]


def show_points(coords, labels, ax, marker_size: int = 200) -> None:
    """Green stars for positive points (label 1), red for negative (label 0)."""
    coords, labels = np.asarray(coords), np.asarray(labels)
    pos, neg = coords[labels == 1], coords[labels == 0]
    ax.scatter(pos[:, 0], pos[:, 1], color="green", marker="*", s=marker_size, edgecolor="white", linewidth=1.25)
    ax.scatter(neg[:, 0], neg[:, 1], color="red", marker="*", s=marker_size, edgecolor="white", linewidth=1.25)


def show_box(box, ax) -> None:
    """A green XYXY rectangle."""
    import matplotlib.pyplot as plt
    x0, y0, x1, y1 = [float(v) for v in box]
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, edgecolor="green", facecolor=(0, 0, 0, 0), lw=2))


def show_anns(anns: List[dict], ax, seed: Optional[int] = 0) -> None:
    """All masks of a ``SamAutomaticMaskGenerator.generate`` result (binary_mask mode), largest first."""
    if not anns:
        return
    rng = np.random.default_rng(seed)
    anns = sorted(anns, key=lambda a: a["area"], reverse=True)
    h, w = anns[0]["segmentation"].shape
    img = np.zeros((h, w, 4))                                   # [H, W, RGBA]
    for ann in anns:
        img[ann["segmentation"]] = np.concatenate([rng.random(3), [0.35]])
    ax.imshow(img)


def prepare_out_file(folder: str, name: str, force: bool = False) -> str:
    """``folder/name``, creating the folder; a clear error if it is not writable or the file
    exists (unless ``force``), so that no earlier result is overwritten silently."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise MinisamError(f"cannot create output folder {folder!r}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise MinisamError(f"output folder {folder!r} is not writable")
    path = os.path.join(folder, name)
    if os.path.exists(path) and not force:
        raise MinisamError(f"{path} exists; pass --force to overwrite it")
    return path
