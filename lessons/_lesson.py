"""What every lesson shares: its command line (``--out``, ``--model``, ``--checkpoint``), the
model it runs on, and :func:`claim`, which checks a sentence of the text in code.

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

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: The environment variable a notebook run reads its options from.
ARGS_VARIABLE = "MINISAM_LESSON_ARGS"


def in_notebook() -> bool:
    """True when a Jupyter kernel runs the lesson (a notebook), False for ``python lesson.py``."""
    return "ipykernel" in sys.modules


def parse_args(number: str, description: str, extra=None):
    in_kernel = in_notebook()
    parser = argparse.ArgumentParser(description=description)
    # A script writes below the folder it is started from; a notebook's kernel starts in
    # lessons/, so its default is the repository's out/ folder, where the scripts' go.
    default_out = os.path.join(ROOT, "out", number) if in_kernel else os.path.join("out", number)
    parser.add_argument("--out", default=default_out, help="folder for the figures")
    parser.add_argument("--model", default="micro", help="registered model name (micro, vit_b, vit_l, vit_h)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint file instead of a registered model")
    if extra:
        extra(parser)
    # The kernel's own command line (-f connection.json) is not the lesson's.
    argv = shlex.split(os.environ.get(ARGS_VARIABLE, "")) if in_kernel else None
    args = parser.parse_args(argv)
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


def save(fig, args, name: str, **savefig_kwargs) -> str:
    """Write ``fig`` to ``args.out/name`` (90 dpi, tight box unless ``savefig_kwargs`` say
    otherwise); in a notebook, also show that file below the cell, and close the figure so that
    an inline backend does not draw it a second time."""
    path = os.path.join(args.out, name)
    fig.savefig(path, **{"dpi": 90, "bbox_inches": "tight", **savefig_kwargs})
    print(f"figure: {path}")
    if in_notebook():
        import matplotlib.pyplot as plt
        from IPython.display import Image, display
        display(Image(filename=path), metadata={"filename": name})
        plt.close(fig)
    return path
