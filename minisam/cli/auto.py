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

A folder run can be interrupted and resumed. Each image's outputs are first written under
hidden temporary names (``DIR/.<name>.minisam-partial``) and renamed once complete, the
overlay first and the folder (or JSON) last: an image is finished exactly when its folder
(or ``<name>.json``) exists under the final name, and a final name never holds a partial
output. On a re-run, finished images are skipped (and said so), so ``minisam auto`` over
the same folder picks up where it stopped; leftovers of a killed run are removed. Existing
outputs are never overwritten unless ``--force`` is given. An output folder that cannot be
created or written is one clear line (exit 1), before the model is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, List

import numpy as np

from minisam.errors import ImageError, MinisamError
from minisam.cli.model_args import add_model_args, load_model
from minisam.utils.images import read_image

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
    p.add_argument("--force", action="store_true",
                   help="redo images whose outputs exist, overwriting them (default: skip them)")
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


PARTIAL = ".minisam-partial"  # suffix of the hidden names outputs are written under


def partial_name(final: str) -> str:
    """``DIR/x`` -> ``DIR/.x.minisam-partial``: where ``final`` is written before it is complete."""
    folder, name = os.path.split(final)
    return os.path.join(folder, "." + name + PARTIAL)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _publish(tmp: str, final: str) -> None:
    """Give the complete output ``tmp`` its final name (replacing what is there: --force)."""
    if not os.path.isdir(tmp) and not os.path.isdir(final):
        os.replace(tmp, final)  # atomic for files
        return
    old = partial_name(final) + "-old"
    if os.path.lexists(final):
        _remove(old)
        os.rename(final, old)
    os.rename(tmp, final)
    _remove(old)


def check_out_folder(folder: str) -> None:
    """Create ``folder`` if needed and prove it can be written to, or say why in one line."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise MinisamError(f"cannot create output folder {folder!r}: {exc.strerror or exc}") from None
    try:  # os.access says yes to root on a read-only mount: try a real write
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise MinisamError(f"output folder {folder!r} is not writable: {exc.strerror or exc}") from None


def write_outputs(image: np.ndarray, masks: List[Dict[str, Any]], save_base: str, output_mode: str,
                  with_overlay: bool) -> List[str]:
    """Write one image's outputs under partial names, then rename them: overlay, then the
    folder / JSON that marks the image finished. Interrupted (Ctrl-C, full disk), the partial
    files are removed and nothing appears under a final name. Returns the final paths."""
    from PIL import Image

    from minisam.utils.amg import coco_decode_rle

    marker = save_base if output_mode == "binary_mask" else save_base + ".json"
    finals = ([save_base + "_overlay.png"] if with_overlay else []) + [marker]
    tmps = [partial_name(f) for f in finals]
    published: List[str] = []
    try:
        for tmp in tmps:
            _remove(tmp)  # left by a killed run
        if output_mode == "binary_mask":
            os.makedirs(tmps[-1])
            write_masks_to_folder(masks, tmps[-1])
            binary = [m["segmentation"] for m in masks]
        else:
            with open(tmps[-1], "w") as f:
                json.dump(masks, f)
            binary = [coco_decode_rle(m["segmentation"]) for m in masks]
        if with_overlay:
            Image.fromarray(overlay(image, binary)).save(tmps[0], format="PNG")
        for tmp, final in zip(tmps, finals):
            _publish(tmp, final)
            published.append(final)
    except BaseException as exc:
        # Stopped before the marker was renamed: the image is not finished, so nothing of
        # it may stay under a final name (an overlay alone would block the resumed run).
        for path in tmps + (published if marker not in published else []):
            try:
                _remove(path)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise MinisamError(f"cannot write {marker}: {exc.strerror or exc}") from None
        raise
    return finals


def run(args) -> int:
    from minisam.automatic_mask_generator import SamAutomaticMaskGenerator

    files = targets(args.input)
    check_out_folder(args.out)
    model = load_model(args)
    output_mode = "coco_rle" if args.convert_to_rle else "binary_mask"
    try:
        generator = SamAutomaticMaskGenerator(model, output_mode=output_mode, progress=not args.no_progress,
                                              **amg_kwargs(args))
    except ValueError as exc:
        raise MinisamError(f"bad AMG settings: {exc}") from None
    written: Dict[str, str] = {}  # save_base -> the input that wrote it in this run
    done = skipped = 0
    for t in files:
        print(f"Processing '{t}'...")
        save_base = os.path.join(args.out, os.path.splitext(os.path.basename(t))[0])
        marker = save_base if output_mode == "binary_mask" else save_base + ".json"
        if save_base in written:
            print(f"  skipped: its outputs would overwrite those of '{written[save_base]}' from this run")
            skipped += 1
            continue
        finals = [marker] + ([] if args.no_overlay else [save_base + "_overlay.png"])
        existing = [p for p in finals if os.path.lexists(p)]
        if existing and not args.force:
            if os.path.lexists(marker):
                print(f"  skipped: already done ({marker} exists; --force redoes it)")
            else:
                print(f"  skipped: {existing[0]} exists (--force overwrites it)")
            skipped += 1
            continue
        try:
            image = read_image(t)
        except ImageError:
            print(f"Could not load '{t}' as an image, skipping...")
            continue
        masks = generator.generate(image)
        write_outputs(image, masks, save_base, output_mode, with_overlay=not args.no_overlay)
        written[save_base] = t
        done += 1
        print(f"  {len(masks)} masks -> {marker}")
    print(f"Done! {done} image(s) segmented, {skipped} skipped.")
    return 0
