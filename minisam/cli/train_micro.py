"""``minisam train-micro``: train the small shapes SAM, with torch (the ``train`` extra: torch,
segment-anything) or, with ``--engine numpy``, with minisam's own backward passes and no torch.

Every default is the shipped model's recipe, :data:`minisam.training.micro.SHIPPED_RECIPE`."""

from __future__ import annotations


def add_parser(sub):
    from minisam.training.micro import SHIPPED_RECIPE as R
    p = sub.add_parser("train-micro", help="train the small SAM on synthetic shapes (torch or NumPy engine)",
                       description="Train a SAM-architecture model at a small configuration on synthetic "
                                   "shapes with the paper's recipe; writes microsam_shapes.pth and train_log.json. "
                                   "The defaults reproduce the shipped weights/microsam_shapes.pth.")
    p.add_argument("--steps", type=int, default=R["steps"], help=f"optimizer steps (default {R['steps']})")
    p.add_argument("--single-round-steps", type=int, default=R["single_round_steps"],
                   help="curriculum: the first N steps supervise the initial prompt only (a point and a box "
                        f"per target); the rest run all 11 interactive rounds (default {R['single_round_steps']})")
    p.add_argument("--out", help="output folder (required unless --resume)")
    p.add_argument("--resume", metavar="CKPT_DIR",
                   help="continue the run saved in CKPT_DIR (its train_state.pth, or train_state.npz for the "
                        "numpy engine: weights, optimizer moments, step, RNG streams, recipe and log); the recipe "
                        "options are then taken from the state")
    p.add_argument("--engine", choices=["torch", "numpy"], default=None,
                   help="torch: the official modules and autograd (needs torch); numpy: the same recipe with "
                        "minisam's own backward passes, no torch (default: torch for a new run, the saved "
                        "run's engine with --resume)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="end this run after about this many minutes, saving its state for --resume")
    p.add_argument("--save-every", type=int, default=200,
                   help="write the resumable state every N steps (default 200): a killed run loses at most these")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-images", type=int, default=R["batch_images"])
    p.add_argument("--masks-per-image", type=int, default=R["masks_per_image"])
    p.add_argument("--iou-outputs", choices=["all", "best"], default=R["iou_outputs"],
                   help="train the IoU head on all three outputs (SAM 2's supervise_all_iou, default) "
                        "or on the supervised one only")
    p.add_argument("--scene-min-area", type=int, default=R["scene_min_area"],
                   help="the scene domain: every part, object and group mask has at least this many visible "
                        f"pixels (minisam.training.shapes.make_scene's min_area; default {R['scene_min_area']})")
    p.add_argument("--extra-round-steps", type=int, default=R["extra_round_steps"],
                   help="a second schedule after --steps: N more 11-round steps, warm-up and cosine to "
                        f"--extra-round-lr (0 skips it; default {R['extra_round_steps']}); with --resume it extends "
                        "a finished run saved without it")
    p.add_argument("--extra-round-lr", type=float, default=R["extra_round_lr"],
                   help=f"the second schedule's peak learning rate (default {R['extra_round_lr']})")
    p.add_argument("--iou-head-scenes", type=int, default=R["iou_head_scenes"],
                   help="the last stage: refit the IoU head alone on frozen features of N training scenes "
                        f"(minisam.training.iou_head; 0 skips it; default {R['iou_head_scenes']})")
    p.add_argument("--lr", type=float, default=R["lr"])
    p.add_argument("--warmup", type=int, default=R["warmup"], help="warm-up steps (default min(300, steps/10))")
    p.add_argument("--val-every", type=int, default=R["val_every"])
    p.add_argument("--threads", type=int, default=None,
                   help="threads: torch's, or BLAS and kernels' with --engine numpy (default: all cores)")
    p.add_argument("--evaluate", type=int, default=0, metavar="N",
                   help="after training, choose the automatic generator's settings on validation scenes, then "
                        "evaluate on N held-out scenes with minisam (no torch); writes eval.json and "
                        "training_curve.png")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args) -> int:
    import json
    import os

    from minisam.errors import MinisamError
    if not args.out and not args.resume:
        raise MinisamError("train-micro needs --out DIR (a new run) or --resume DIR (continue one)")
    if args.out and args.resume and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise MinisamError("--resume continues the run in its own folder; drop --out or give the same folder")
    if args.save_every < 1:
        raise MinisamError("--save-every must be at least 1")
    if args.steps < 1:
        raise MinisamError("--steps must be at least 1")
    if args.extra_round_steps < 0:
        raise MinisamError("--extra-round-steps must be >= 0")
    if not args.extra_round_lr > 0:
        raise MinisamError("--extra-round-lr must be > 0")
    if args.iou_head_scenes < 0:
        raise MinisamError("--iou-head-scenes must be >= 0")
    if args.single_round_steps < 0:
        raise MinisamError("--single-round-steps must be >= 0")
    engine = args.engine or "torch"
    if args.resume:  # the engine that wrote the saved state
        saved = [e for e, name in (("torch", "train_state.pth"), ("numpy", "train_state.npz"))
                 if os.path.isfile(os.path.join(args.resume, name))]
        if len(saved) == 1 and args.engine not in (None, saved[0]):
            raise MinisamError(f"{args.resume} holds a run of the {saved[0]} engine; resume it with "
                               f"--engine {saved[0]} (or without --engine)")
        if len(saved) == 1:
            engine = saved[0]
    if engine == "torch":
        try:
            import torch  # noqa: F401
            import segment_anything  # noqa: F401
        except ImportError as exc:
            raise MinisamError(f"train-micro needs torch and segment-anything ({exc}); install them with: "
                               "pip install -e \".[train]\", or train without torch: --engine numpy") from None
    from minisam.training.micro import train
    out = args.resume or args.out
    result = train(args.steps, out, seed=args.seed, batch_images=args.batch_images,
                   masks_per_image=args.masks_per_image, lr=args.lr, warmup=args.warmup,
                   val_every=args.val_every, threads=args.threads, single_round_steps=args.single_round_steps,
                   iou_outputs=args.iou_outputs, scene_min_area=args.scene_min_area,
                   extra_round_steps=args.extra_round_steps, extra_round_lr=args.extra_round_lr,
                   iou_head_scenes=args.iou_head_scenes, progress=not args.no_progress, resume=bool(args.resume),
                   max_minutes=args.max_minutes, save_every=args.save_every, engine=engine)
    if not result["finished"]:
        print(f"unfinished: state saved in {out}; continue with: minisam train-micro --resume {out}")
        return 0
    print(f"checkpoint: {result['checkpoint']}")
    if args.evaluate:
        from minisam.build_sam import build_sam
        from minisam.training.micro import evaluate_trained, training_curve_figure, TARGETS
        metrics = evaluate_trained(build_sam(result["checkpoint"]), n_scenes=args.evaluate,
                                   scene_min_area=result.get("recipe", {}).get("scene_min_area", args.scene_min_area),
                                   progress=not args.no_progress)
        with open(os.path.join(out, "eval.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        with open(os.path.join(out, "train_log.json")) as f:
            training_curve_figure(json.load(f), os.path.join(out, "training_curve.png"), TARGETS)
        print(json.dumps(metrics["targets"], indent=1))
    return 0
