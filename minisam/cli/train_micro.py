"""``minisam train-micro``: train the small shapes SAM (needs the ``train`` extra: torch, segment-anything)."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("train-micro", help="train the small SAM on synthetic shapes (needs torch)",
                       description="Train a SAM-architecture model at a small configuration on synthetic "
                                   "shapes with the paper's recipe; writes microsam_shapes.pth and train_log.json.")
    p.add_argument("--steps", type=int, default=8000, help="optimizer steps (default 8000, the shipped model)")
    p.add_argument("--single-round-steps", type=int, default=7500,
                   help="curriculum: the first N steps supervise the initial prompt only (a point and a box "
                        "per target); the rest run all 11 interactive rounds (default 7500, the shipped model)")
    p.add_argument("--interactive-every", type=int, default=0, metavar="K",
                   help="every K-th step of the single-prompt phase runs all 11 interactive rounds "
                        "(default 0: never, the shipped model)")
    p.add_argument("--box-noise", default="0.1,0.1", metavar="LO,HI",
                   help="each box's noise std as a fraction of its side, drawn uniformly from [LO, HI] "
                        "(default 0.1,0.1: the paper's fixed 10%%, the shipped model)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="save and validate an exponential moving average of the weights with this decay "
                        "(default 0: the raw weights, the shipped model)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-images", type=int, default=4)
    p.add_argument("--masks-per-image", type=int, default=8)
    p.add_argument("--iou-outputs", choices=["all", "best"], default="all",
                   help="train the IoU head on all three outputs (SAM 2's supervise_all_iou, default) "
                        "or on the supervised one only")
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--evaluate", type=int, default=0, metavar="N",
                   help="after training, evaluate on N held-out scenes with minisam (no torch)")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args) -> int:
    import json
    import os

    from minisam.errors import MinisamError
    if args.steps < 1:
        raise MinisamError("--steps must be at least 1")
    if args.single_round_steps < 0:
        raise MinisamError("--single-round-steps must be >= 0")
    if args.interactive_every < 0:
        raise MinisamError("--interactive-every must be >= 0")
    if not 0 <= args.ema_decay < 1:
        raise MinisamError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    try:
        box_noise = tuple(float(v) for v in args.box_noise.split(","))
    except ValueError:
        box_noise = ()
    if len(box_noise) != 2 or not 0 <= box_noise[0] <= box_noise[1]:
        raise MinisamError(f"--box-noise must be LO,HI with 0 <= LO <= HI, got {args.box_noise!r}")
    try:
        import torch  # noqa: F401
        import segment_anything  # noqa: F401
    except ImportError as exc:
        raise MinisamError(f"train-micro needs torch and segment-anything ({exc}); "
                           "install them with: pip install -e \".[train]\"") from None
    from minisam.training.micro import evaluate, train
    result = train(args.steps, args.out, seed=args.seed, batch_images=args.batch_images,
                   masks_per_image=args.masks_per_image, lr=args.lr, warmup=args.warmup,
                   val_every=args.val_every, threads=args.threads, single_round_steps=args.single_round_steps,
                   iou_outputs=args.iou_outputs, interactive_every=args.interactive_every,
                   box_noise=box_noise, ema_decay=args.ema_decay or None, progress=not args.no_progress)
    print(f"checkpoint: {result['checkpoint']}")
    if args.evaluate:
        from minisam.build_sam import build_sam
        metrics = evaluate(build_sam(result["checkpoint"]), n_scenes=args.evaluate)
        with open(os.path.join(args.out, "eval.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        print(json.dumps(metrics))
    return 0
