"""``minisam finetune DATA --out DIR``: fine-tune the prompt encoder and mask decoder on one's own images.

The image encoder stays frozen; each image's embedding is computed once and cached in
``DIR/embeddings/``. Writes ``DIR/finetuned.pth`` (an official-format checkpoint of the whole
model: load it with ``--checkpoint`` here, or with ``segment_anything``'s ``sam_model_registry``),
``DIR/finetune_log.json`` and the resumable ``DIR/finetune_state.npz``. The recipe and the
data formats are described in :mod:`minisam.training.finetune`.

Every check (the options, the output folder, the model, every image and mask) runs before
anything is written: a mistake ends with one line on stderr, exit code 1, and ``DIR`` as it
was (not created, or untouched).
"""

from __future__ import annotations

from minisam.cli.model_args import add_model_args, load_model


def add_parser(sub):
    from minisam.training.finetune import DEFAULTS as D
    p = sub.add_parser("finetune", help="fine-tune the prompt encoder and mask decoder on your own images",
                       description="Fine-tune SAM's prompt encoder and mask decoder (the image encoder frozen) on "
                                   "a folder images/NAME.png|jpg + masks/NAME/*.png (one PNG per object, nonzero = "
                                   "object), or on a COCO JSON with --coco FILE --images DIR. Writes finetuned.pth, "
                                   "finetune_log.json and a resumable state into --out.")
    p.add_argument("data", nargs="?", default=None, metavar="DATA",
                   help="data folder with images/ and masks/ (omit with --coco)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_model_args(p)
    p.add_argument("--coco", metavar="FILE", help="COCO instances JSON (polygons or RLE) instead of DATA")
    p.add_argument("--images", metavar="DIR", help="the folder of the COCO file's images")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps (default {D['steps']}); with --resume, a larger number trains further")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate after the linear warm-up (default {D['lr']:g})")
    p.add_argument("--warmup", type=int, default=None,
                   help="linear warm-up steps (default min(250, steps / 10), at least 1)")
    p.add_argument("--batch", type=int, default=None, help=f"masks per step (default {D['batch']})")
    p.add_argument("--val-fraction", type=float, default=None,
                   help=f"fraction of the images held out for validation, at least one (default {D['val_fraction']})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"AdamW weight decay (default {D['weight_decay']}, the paper's)")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"interactive rounds per step, 1 to 11 (default {D['rounds']}, the paper's)")
    p.add_argument("--iou-outputs", choices=["all", "best"], default=None,
                   help="train the IoU head on all three outputs (default) or on the supervised one (the paper)")
    p.add_argument("--seed", type=int, default=None, help=f"seed of the split and of training (default {D['seed']})")
    p.add_argument("--save-every", type=int, default=50,
                   help="write the resumable state every N steps (default 50): a killed run loses at most these")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--force", action="store_true",
                   help="start over in an --out that holds a previous run (its embedding cache is kept)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    import os

    from minisam.training.finetune import check_out_dir, finetune, load_dataset
    # cheapest checks first, and all of them before anything is written
    check_out_dir(args.out, args.resume, args.force)
    dataset = load_dataset(args.data, args.coco, args.images)
    sam = load_model(args)
    name = f"checkpoint {os.path.abspath(args.checkpoint)}" if args.checkpoint else f"model {args.model or 'micro'}"
    result = finetune(dataset, sam, args.out, model_name=name, resume=args.resume, force=args.force,
                      save_every=args.save_every, progress=not args.no_progress, steps=args.steps, lr=args.lr,
                      batch=args.batch, val_fraction=args.val_fraction, seed=args.seed, warmup=args.warmup,
                      weight_decay=args.weight_decay, rounds=args.rounds, iou_outputs=args.iou_outputs)
    before, after = result["val_before"], result["val_after"]
    print(f"point IoU {before['point_iou']:.4f} -> {after['point_iou']:.4f}, "
          f"box IoU {before['box_iou']:.4f} -> {after['box_iou']:.4f} "
          f"({after['masks']} validation masks, {result['steps_done']} steps)")
    print(f"checkpoint: {result['checkpoint']}")
    return 0
