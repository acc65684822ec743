"""What every lesson shares: its command line (``--out``, ``--model``, ``--checkpoint``, and
``--image`` in the lessons a photo helps), the model it runs on, and :func:`claim`, which checks a
sentence of the text in code.

By default a lesson runs on ``micro``, minisam's small SAM trained on synthetic shapes and
shipped in ``weights/`` (offline, a few MB, 128x128 inputs). With the official weights,
``--model vit_b`` (after ``minisam weights download vit_b``) or ``--checkpoint PATH`` runs the
same lesson on the real thing, only slower.

Every lesson is a percent-format script (``# %%`` code cells, ``# %% [markdown]`` prose): it
runs as ``python lessons/NN_name.py --out DIR``, and the same file opens as a notebook through
jupytext. In a Jupyter kernel there is no command line: the options come from the environment
variable ``MINISAM_LESSON_ARGS`` (for example ``--out /tmp/09 --model vit_b``), the figures go
to ``out/NN`` at the repository root by default, and :func:`save` also shows each figure
below its cell.
"""

import argparse
import os
import shlex
import sys

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: The environment variable a notebook run reads its options from.
ARGS_VARIABLE = "MINISAM_LESSON_ARGS"


def in_notebook() -> bool:
    """True when a Jupyter kernel runs the lesson (a notebook), False for ``python lesson.py``."""
    return "ipykernel" in sys.modules


def parse_args(number: str, description: str, extra=None, photo: str = None, photo_click: bool = False):
    """The lesson's options. ``photo``: the lesson has a part that a real photo helps, and this
    sentence says which; it adds ``--image PATH`` (read at once: ``args.photo``, [H, W, 3] uint8,
    or None), and with ``photo_click`` ``--point X Y`` (a click on that photo, in its pixels;
    default its centre: ``args.photo_point``, [1, 2]). A photo the lesson cannot read, or a point
    off it, stops the lesson with one line."""
    in_kernel = in_notebook()
    parser = argparse.ArgumentParser(description=description)
    # A script writes below the folder it is started from; a notebook's kernel starts in
    # lessons/, so its default is the repository's out/ folder, where the scripts' go.
    default_out = os.path.join(ROOT, "out", number) if in_kernel else os.path.join("out", number)
    parser.add_argument("--out", default=default_out, help="folder for the figures")
    parser.add_argument("--model", default="micro", help="registered model name (micro, vit_b, vit_l, vit_h)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint file instead of a registered model")
    if photo:
        parser.add_argument("--image", metavar="PATH",
                            help=f"a photo (any format Pillow reads) for {photo}; best with --model vit_b")
        if photo_click:
            parser.add_argument("--point", nargs=2, type=float, metavar=("X", "Y"),
                                help="where to click on --image, in its pixels (default: its centre)")
    if extra:
        extra(parser)
    # The kernel's own command line (-f connection.json) is not the lesson's.
    argv = shlex.split(os.environ.get(ARGS_VARIABLE, "")) if in_kernel else None
    args = parser.parse_args(argv)
    if photo:
        args.photo, args.photo_point = None, None
        if args.image:
            from minisam.errors import MinisamError
            from minisam.utils.images import read_image
            try:
                args.photo = read_image(args.image)                       # [H, W, 3] uint8
            except MinisamError as exc:
                parser.error(str(exc))
            h, w = args.photo.shape[:2]
            point = getattr(args, "point", None)
            x, y = point if point else ((w - 1) / 2, (h - 1) / 2)
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                parser.error(f"--point {x:g} {y:g} is outside the {w}x{h} image")
            args.photo_point = np.array([[x, y]], np.float64)            # [1, 2] (x, y)
        elif getattr(args, "point", None):
            parser.error("--point needs --image")
    os.makedirs(args.out, exist_ok=True)
    return args


def load_model(args):
    from minisam.cli import model_args
    sam = model_args.load_model(args)
    c = sam.config
    print(f"model: {args.checkpoint or args.model}: {c.encoder_depth}-block ViT, D={c.encoder_embed_dim}, "
          f"input {c.img_size}x{c.img_size}, grid {c.image_embedding_size}x{c.image_embedding_size}")
    return sam


def claim(holds, statement: str) -> None:
    """A sentence of the lesson's text, checked in code: printed with its verdict, and a false
    one stops the lesson with an error (``tests/test_lessons.py`` runs every lesson)."""
    holds = bool(holds)
    print(f"claim {'holds' if holds else 'FAILS'}: {statement}")
    if not holds:
        raise SystemExit(f"lesson claim failed: {statement}")


#: The width at which a figure must be readable (a laptop screen, 96 px to the inch), and its
#: smallest text there, in points.
READ_WIDTH_PX, READ_MIN_PT = 800, 9.0


def _drawn_texts(fig) -> list:
    """The figure's visible, non-empty texts: figure texts, titles, axes texts, axis labels and
    tick labels of axes that show their axes, legends (colour bars are axes too)."""
    texts = list(fig.texts) + ([fig._suptitle] if getattr(fig, "_suptitle", None) else [])
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.axison:
            for axis in (ax.xaxis, ax.yaxis):
                if axis.get_visible():
                    texts += [axis.label, *axis.get_ticklabels()]
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            texts += [legend.get_title(), *legend.get_texts()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def figure_layout(fig, width_px: int, dpi: float) -> dict:
    """What makes a saved figure legible, measured: ``panels``, the visible axes that hold
    something (colour bars and twins of an axes not counted), the saved width in pixels, and
    ``min_text_pt``, its smallest text in points once the image is shown READ_WIDTH_PX wide at
    96 px to the inch."""
    positions = set()
    for ax in fig.axes:
        if (ax.get_visible() and ax.get_label() != "<colorbar>"
                and (ax.images or ax.lines or ax.collections or ax.patches or ax.texts or ax.tables)):
            positions.add(tuple(round(v, 3) for v in ax.get_position().bounds))
    texts = sorted(_drawn_texts(fig), key=lambda t: t.get_fontsize())
    scale = READ_WIDTH_PX / width_px * dpi / 96                          # saved px per pt -> shown pt
    return {"panels": len(positions), "width_px": int(width_px),
            "min_text_pt": round(texts[0].get_fontsize() * scale, 2) if texts else None,
            "min_text": texts[0].get_text()[:40] if texts else None}


def _record_layout(out_dir: str, name: str, layout: dict) -> None:
    """Add one figure's layout to ``out_dir/figures.json`` (read by tests/test_lessons.py)."""
    import json
    path = os.path.join(out_dir, "figures.json")
    known = {}
    if os.path.isfile(path):
        with open(path) as f:
            known = json.load(f)
    known[name] = layout
    with open(path + ".tmp", "w") as f:
        json.dump(known, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def save(fig, args, name: str, **savefig_kwargs) -> str:
    """Write ``fig`` to ``args.out/name`` (90 dpi, tight box unless ``savefig_kwargs`` say
    otherwise) and its measured layout (:func:`figure_layout`) to ``figures.json`` beside it; in a
    notebook, also show that file below the cell, and close the figure so that an inline backend
    does not draw it a second time."""
    path = os.path.join(args.out, name)
    kwargs = {"dpi": 90, "bbox_inches": "tight", **savefig_kwargs}
    fig.savefig(path, **kwargs)
    if path.lower().endswith(".png"):
        from PIL import Image
        with Image.open(path) as im:
            width_px = im.size[0]
        _record_layout(args.out, name, figure_layout(fig, width_px, kwargs["dpi"]))
    print(f"figure: {path}")
    if in_notebook():
        import matplotlib.pyplot as plt
        from IPython.display import Image, display
        display(Image(filename=path), metadata={"filename": name})
        plt.close(fig)
    return path
