"""``minisam click [IMAGE] [--model NAME | --checkpoint PATH]``: segment interactively in a window.

Left click a positive point, right click (or shift-click) a negative one, drag a box; the
window shows the best mask, the three candidates with their predicted IoU and stability
score, and with ``i`` the decoder's internals (:mod:`minisam.interactive`). With no IMAGE it
opens a synthetic scene (:func:`minisam.training.shapes.make_scene`) on the shipped ``micro``
model, offline.

The image embedding is computed once and cached on disk
(:func:`minisam.interactive.cache.embedding_cache_dir`); reopening the image with the same model
loads it. Every action is printed as one line. An unreadable or too-large image is refused
before the model loads; without a display the command says how to run headless or in Jupyter
and exits 2.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from minisam.cli.model_args import add_model_args

_STATIC_BACKENDS = ("agg", "pdf", "svg", "ps", "pgf", "cairo", "template")
HEADLESS_HINT = ("to run headless use a virtual display (xvfb-run -a minisam click IMAGE); in Jupyter: "
                 "pip install 'minisam[ui]', run %matplotlib widget, then "
                 "minisam.interactive.ClickSession(image, predictor).show()")


def add_parser(sub):
    p = sub.add_parser("click", help="segment interactively in a window: points, boxes, the decoder's internals",
                       description="Click on an image to segment it: left click = positive point, right click "
                                   "(or shift-click) = negative point, drag = box; keys: c cycle the 3 masks, "
                                   "u undo, r reset, a automatic masks, s save, i internals, f feed logits back "
                                   "on/off, h help, q quit.")
    p.add_argument("image", nargs="?", default=None,
                   help="image file (any format Pillow reads); none: a synthetic scene, offline")
    add_model_args(p)
    p.add_argument("--seed", type=int, default=5, help="which synthetic scene, without IMAGE (default 5)")
    p.add_argument("--out", default="minisam_click", metavar="DIR",
                   help="folder the s key saves masks and JSON into (default: minisam_click)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--no-feedback", action="store_true",
                   help="start without feeding the shown mask's logits back (the f key toggles it)")
    p.add_argument("--internals", action="store_true", help="start with the internals panels shown")
    p.add_argument("--report-screen", action="store_true",
                   help="print where the image is on the screen (for scripted clicks, e.g. with xdotool)")
    return p


def display_problem() -> Optional[str]:
    """Why no window can open here (no X or Wayland display, a static MPLBACKEND), or None."""
    backend = os.environ.get("MPLBACKEND", "")
    if not sys.platform.startswith(("darwin", "win")) and not (os.environ.get("DISPLAY")
                                                              or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    if backend.lower() in _STATIC_BACKENDS:
        return f"MPLBACKEND={backend} draws files, not windows (unset it, or set MPLBACKEND=TkAgg)"
    return None


def _no_window(reason: str) -> int:
    print(f"minisam click: error: {reason}; {HEADLESS_HINT}", file=sys.stderr)
    return 2


def run(args) -> int:
    import numpy as np

    from minisam.cli.model_args import load_model
    from minisam.utils.images import read_image
    if args.image is not None:
        image = read_image(args.image)  # refused here, before the model loads
        name = os.path.splitext(os.path.basename(args.image))[0] or "image"
        source = os.path.abspath(args.image)
    else:
        image = name = source = None
    problem = display_problem()
    if problem:
        return _no_window(problem)

    from minisam.build_sam import DEFAULT_MODEL
    from minisam.interactive.cache import embedding_cache_dir
    from minisam.interactive.session import ClickSession
    from minisam.predictor import SamPredictor
    sam = load_model(args)
    model_name = args.checkpoint or args.model or DEFAULT_MODEL
    if image is None:
        from minisam.training.shapes import make_scene
        image = make_scene(np.random.default_rng(args.seed), sam.config.img_size).image  # [S, S, 3]
        name, source = f"scene{args.seed}", f"synthetic scene {args.seed} (minisam.training.shapes)"

    import matplotlib.pyplot as plt
    try:
        fig = plt.figure(figsize=(12, 7.5), num=f"minisam click: {name}")
    except Exception as exc:  # a backend that cannot reach the display (TclError, ImportError, ...)
        return _no_window(f"cannot open a window ({type(exc).__name__}: {str(exc).strip() or 'no detail'})")
    from minisam.interactive.view import ClickView, interactive_canvas
    if not interactive_canvas(fig.canvas):
        plt.close(fig)
        return _no_window(f"matplotlib's backend {plt.get_backend()!r} cannot open a window")

    cache = False if args.no_cache else True
    session = ClickSession(image, SamPredictor(sam), name=name, source=source, cache=cache,
                           feed_logits=not args.no_feedback, out_dir=args.out, embed=False,
                           model_name=model_name)
    session.show_internals = args.internals
    print(f"minisam click: {source}, {image.shape[1]}x{image.shape[0]}, model {model_name}; "
          + ("embedding cache off" if args.no_cache else f"embedding cache: {embedding_cache_dir()}"), flush=True)

    def log(line: str) -> None:
        print(line, flush=True)

    view = ClickView(session, fig=fig, log=log, report_screen=args.report_screen)
    plt.show()
    del view
    return 0
