"""What every lesson shares: its command line (``--out``, ``--model``, ``--checkpoint``), the
model it runs on, and :func:`claim`, which checks a sentence of the text in code.

By default a lesson runs on ``micro``, minisam's small SAM trained on synthetic shapes and
shipped in ``weights/`` (offline, a few MB, 128x128 inputs). With the official weights,
``--model vit_b`` (after ``minisam weights download vit_b``) or ``--checkpoint PATH`` runs the
same lesson on the real thing, only slower.
"""

import argparse
import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(number: str, description: str, extra=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=os.path.join("out", number), help="folder for the figures")
    parser.add_argument("--model", default="micro", help="registered model name (micro, vit_b, vit_l, vit_h)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint file instead of a registered model")
    if extra:
        extra(parser)
    args = parser.parse_args()
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


def save(fig, args, name: str) -> str:
    path = os.path.join(args.out, name)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    print(f"figure: {path}")
    return path
