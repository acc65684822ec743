"""The ``--model`` / ``--checkpoint`` options every command shares, and the model they name."""

from __future__ import annotations


def add_model_args(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default=None, metavar="NAME",
                   help="registered weights to use (micro, vit_b, vit_l, vit_h; default micro, the shipped "
                        "small model trained on synthetic shapes)")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="a checkpoint: an official-format .pth file, or a Hugging Face file")


def load_model(args):
    """The :class:`minisam.modeling.sam.Sam` that ``args.checkpoint`` or ``args.model`` names."""
    from minisam.build_sam import DEFAULT_MODEL, build_sam, sam_model_registry
    if args.checkpoint is not None:
        return build_sam(args.checkpoint)
    return sam_model_registry[args.model or DEFAULT_MODEL]()
