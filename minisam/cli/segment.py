"""``minisam segment IMAGE --point X,Y[,LABEL] ... --box X0,Y0,X1,Y1 --out DIR``.

Runs ``SamPredictor`` on one image with point and/or box prompts and writes, into DIR:
- ``overlay.png``: the image with each mask, the points (green = foreground, red =
  background) and the box drawn as in the official notebooks (``show_mask``, ``show_points``,
  ``show_box``), one panel per mask, titled with its predicted IoU;
- ``mask_K.png``: each mask as a black/white PNG at the original size;
- ``scores.json``: the prompts, each mask's file and score, and the best mask.

Existing files of these names are not overwritten unless ``--force`` is given; the check (and
the check that DIR can be created and written) runs before the model is loaded, so a mistake
costs nothing. Images are read by :func:`minisam.utils.images.read_image` (its rules: grey, RGBA,
16-bit, EXIF orientation, size limit).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from minisam.cli.model_args import add_model_args, load_model
from minisam.errors import MinisamError, PromptError
from minisam.utils.images import read_image


def _numbers(text: str, counts, what: str):
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if len(vals) not in counts:
        raise argparse.ArgumentTypeError(f"{what} takes {' or '.join(map(str, counts))} numbers, got {text!r}")
    if not all(np.isfinite(vals)):
        raise argparse.ArgumentTypeError(f"{what} must be finite numbers, got {text!r}")
    return vals


def point_arg(text: str):
    vals = _numbers(text, (2, 3), "--point X,Y[,LABEL]")
    label = vals[2] if len(vals) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"--point label must be 1 (foreground) or 0 (background), got {text!r}")
    return vals[0], vals[1], int(label)


def box_arg(text: str):
    x0, y0, x1, y1 = _numbers(text, (4,), "--box X0,Y0,X1,Y1")
    if x1 < x0 or y1 < y0:
        raise argparse.ArgumentTypeError(f"--box needs X0 <= X1 and Y0 <= Y1, got {text!r}")
    return [x0, y0, x1, y1]


def add_parser(sub):
    p = sub.add_parser("segment", help="segment an image from point and box prompts",
                       description="Predict masks for point and/or box prompts and save an overlay, "
                                   "the masks and their scores.")
    p.add_argument("image", help="image file (any format Pillow reads)")
    p.add_argument("--point", type=point_arg, action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a point in image pixels; LABEL 1 = foreground (default), 0 = background; repeatable")
    p.add_argument("--box", type=box_arg, default=None, metavar="X0,Y0,X1,Y1", help="a box in image pixels")
    add_model_args(p)
    p.add_argument("--single", action="store_true",
                   help="one mask (the single-output token) instead of three ambiguity-aware masks")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files in DIR")
    return p


def save_overlay(path, image, masks, scores, points, labels, box) -> None:
    """One panel per mask, drawn as the official predictor notebook draws them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minisam.cli.drawing import show_box, show_mask, show_points
    K = len(masks)
    H, W = image.shape[:2]
    fig, axes = plt.subplots(1, K, figsize=(5 * K, 5 * H / max(W, 1) + 0.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(image)
        show_mask(masks[k], ax)
        if points is not None:
            show_points(points, labels, ax, marker_size=375)
        if box is not None:
            show_box(box, ax)
        ax.set_title(f"Mask {k + 1}, Score: {scores[k]:.3f}", fontsize=14)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write(path: str, save) -> None:
    """Run ``save(path)``; a full disk or a vanished folder becomes one clear line."""
    try:
        save(path)
    except OSError as exc:
        raise MinisamError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(args) -> int:
    from PIL import Image

    from minisam.predictor import SamPredictor
    from minisam.cli.drawing import prepare_out_file
    if not args.point and args.box is None:
        raise PromptError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    image = read_image(args.image)
    names = [f"mask_{k}.png" for k in range(1 if args.single else 3)] + ["overlay.png", "scores.json"]
    prepare_out_file(args.out, names[0], force=True)  # creates DIR, or says why it cannot be written
    existing = [n for n in names if os.path.exists(os.path.join(args.out, n))]
    if existing and not args.force:
        raise MinisamError(f"{args.out} already holds {', '.join(existing)}; pass --force to overwrite")
    sam = load_model(args)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    points = np.array([pt[:2] for pt in args.point], np.float64) if args.point else None
    labels = np.array([pt[2] for pt in args.point], np.int64) if args.point else None
    box = np.array(args.box, np.float64) if args.box is not None else None
    masks, scores, _ = predictor.predict(point_coords=points, point_labels=labels, box=box,
                                         multimask_output=not args.single)
    files = []
    for k, m in enumerate(masks):
        name = f"mask_{k}.png"
        _write(os.path.join(args.out, name), Image.fromarray(m.astype(np.uint8) * 255).save)
        files.append(name)
    _write(os.path.join(args.out, "overlay.png"),
           lambda path: save_overlay(path, image, masks, scores, points, labels, box))
    report = {
        "image": os.path.abspath(args.image),
        "image_size": list(image.shape[:2]),
        "points": [] if points is None else points.tolist(),
        "labels": [] if labels is None else labels.tolist(),
        "box": None if box is None else box.tolist(),
        "multimask_output": not args.single,
        "masks": [{"file": f, "score": float(s), "area": int(m.sum())} for f, s, m in zip(files, scores, masks)],
        "best": int(np.argmax(scores)),
    }
    def save_json(path):
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
    _write(os.path.join(args.out, "scores.json"), save_json)
    for k, s in enumerate(scores):
        print(f"mask {k}: score {s:.4f}, {int(masks[k].sum())} pixels -> {os.path.join(args.out, files[k])}")
    print(f"overlay -> {os.path.join(args.out, 'overlay.png')}")
    return 0
