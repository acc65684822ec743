"""``minisam auto IMAGE_OR_DIR --out DIR``: segment everything, as the official scripts/amg.py.

For each image (a file, or every file of a folder), writes what ``scripts/amg.py`` writes:
- default: a folder ``DIR/<name>/`` with ``0.png, 1.png, ...`` (each mask, 0/255) and
  ``metadata.csv`` (the official header, one row per mask, same order);
- ``--convert-to-rle``: ``DIR/<name>.json``, the list of records with COCO compressed RLE
  segmentations (loads with pycocotools);
plus ``DIR/<name>_overlay.png``: every mask in a random colour over the image, largest
first, like the notebooks' ``show_anns``.

The AMG flags are those of scripts/amg.py; a flag left out keeps the generator's default.
Unlike the script, ``--crop-overlap-ratio`` takes a float (the script declares it ``int``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import numpy as np

from ..errors import ImageError, MinisamError
from .segment import add_model_args, load_image, load_model

CSV_HEADER = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
              "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h")

# (flag, type, help); each maps to the SamAutomaticMaskGenerator argument of the same name.
AMG_FLAGS = [
    ("--points-per-side", int, "points sampled along one side of the image (n^2 in all)"),
    ("--points-per-batch", int, "points run through the decoder at once"),
    ("--pred-iou-thresh", float, "keep masks whose predicted IoU is above this"),
    ("--stability-score-thresh", float, "keep masks whose stability score is at least this"),
    ("--stability-score-offset", float, "logit offset used for the stability score"),
    ("--box-nms-thresh", float, "box IoU above which duplicate masks are removed"),
    ("--crop-n-layers", int, "extra layers of zoomed-in crops (layer i has (2^i)^2 crops)"),
    ("--crop-nms-thresh", float, "box IoU for removing duplicates between crops"),
    ("--crop-overlap-ratio", float, "crop overlap as a fraction of the short side (layer 1)"),
    ("--crop-n-points-downscale-factor", int, "points per side divided by this in each crop layer"),
    ("--min-mask-region-area", int, "fill holes / drop islands smaller than this many pixels"),
]


def add_parser(sub):
    p = sub.add_parser("auto", help="segment everything in an image (or a folder of images)",
                       description="Automatic mask generation, writing what the official scripts/amg.py "
                                   "writes, plus an overlay of all masks.")
    p.add_argument("input", metavar="IMAGE_OR_DIR", help="an image file or a folder of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_model_args(p)
    g = p.add_argument_group("AMG settings (as scripts/amg.py)")
    for flag, typ, text in AMG_FLAGS:
        g.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--convert-to-rle", action="store_true",
                   help="save one COCO-RLE JSON per image instead of PNG masks and metadata.csv")
    p.add_argument("--no-overlay", action="store_true", help="do not write <name>_overlay.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def amg_kwargs(args) -> Dict[str, Any]:
    kwargs = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _, _ in AMG_FLAGS}
    return {k: v for k, v in kwargs.items() if v is not None}


def targets(path: str) -> List[str]:
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        return [path]
    return sorted(os.path.join(path, f) for f in os.listdir(path) if not os.path.isdir(os.path.join(path, f)))


def write_masks_to_folder(masks: List[Dict[str, Any]], path: str) -> None:
    """``{i}.png`` (mask * 255) and ``metadata.csv``, exactly the script's layout."""
    from PIL import Image

    rows = [CSV_HEADER]
    for i, m in enumerate(masks):
        Image.fromarray(np.asarray(m["segmentation"], dtype=np.uint8) * 255).save(os.path.join(path, f"{i}.png"))
        rows.append(",".join([str(i), str(m["area"]), *[str(x) for x in m["bbox"]],
                              *[str(x) for x in m["point_coords"][0]], str(m["predicted_iou"]),
                              str(m["stability_score"]), *[str(x) for x in m["crop_box"]]]))
    with open(os.path.join(path, "metadata.csv"), "w") as f:
        f.write("\n".join(rows))


def overlay(image: np.ndarray, masks: List[np.ndarray], seed: int = 0, alpha: float = 0.35) -> np.ndarray:
    """``show_anns``: each mask in a random colour at 35 % opacity, largest drawn first."""
    out = image.astype(np.float32)  # [H, W, 3]
    rng = np.random.default_rng(seed)
    for m in sorted(masks, key=lambda m: -int(m.sum())):
        color = rng.random(3, dtype=np.float32) * 255  # [3]
        out[m] = (1 - alpha) * out[m] + alpha * color  # [n_on, 3]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def run(args) -> int:
    from PIL import Image

    from ..amg import coco_decode_rle
    from ..automatic_mask_generator import SamAutomaticMaskGenerator

    files = targets(args.input)
    model = load_model(args)
    output_mode = "coco_rle" if args.convert_to_rle else "binary_mask"
    try:
        generator = SamAutomaticMaskGenerator(model, output_mode=output_mode, progress=not args.no_progress,
                                              **amg_kwargs(args))
    except ValueError as exc:
        raise MinisamError(f"bad AMG settings: {exc}") from None
    os.makedirs(args.out, exist_ok=True)
    for t in files:
        print(f"Processing '{t}'...")
        try:
            image = load_image(t)
        except ImageError:
            print(f"Could not load '{t}' as an image, skipping...")
            continue
        masks = generator.generate(image)
        save_base = os.path.join(args.out, os.path.splitext(os.path.basename(t))[0])
        if output_mode == "binary_mask":
            if os.path.exists(save_base):
                raise MinisamError(f"{save_base} already exists: choose another --out or remove it")
            os.makedirs(save_base)
            write_masks_to_folder(masks, save_base)
            binary = [m["segmentation"] for m in masks]
        else:
            with open(save_base + ".json", "w") as f:
                json.dump(masks, f)
            binary = [coco_decode_rle(m["segmentation"]) for m in masks]
        if not args.no_overlay:
            Image.fromarray(overlay(image, binary)).save(save_base + "_overlay.png")
        print(f"  {len(masks)} masks")
    print("Done!")
    return 0

