"""The two train-micro engines over a long run: validation IoU after N steps (default 1000).

Runs :func:`minisam.training.micro.train` with ``engine="torch"`` and with ``engine="numpy"``
from the same initial weights (the torch engine's own init, handed to the NumPy engine) and the
same seed, each in its own subprocess (the NumPy one never imports torch), one after the other,
and reports the validation IoUs (best-of-3 point, box; 24 held-out scenes) at every validation,
the loss curves' means over windows of 50 steps, and whether the final IoUs agree within 0.02
(the bound the NumPy engine is held to). Past the first steps the runs are not
step-for-step equal in float32 (a flipped pixel moves a click): what is compared is where
training gets, not the path.

    python benchmarks/train_micro_engines.py [--steps 1000] [--single-round-steps 750] [--threads N]
                                             [--out DIR] [--tiny]

Wall times are printed but are not the comparison (``benchmarks/train_micro_step.py`` is the
speed benchmark). ``--tiny`` runs 4 steps of a 2-block model on 1 image x 2 masks, to check
that the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import header, load_average, start_worker, worker_env  # noqa: E402

BOUND = 0.02


def _config(tiny: bool):
    from minisam.config import MICRO
    return MICRO.replace(encoder_depth=2, encoder_global_attn_indexes=(1,)) if tiny else MICRO


def worker(args) -> None:
    """Train one engine; its train_log.json is the answer."""
    from minisam.training.micro import train
    kw = dict(steps=args.steps, single_round_steps=args.single_round_steps, val_every=args.val_every,
              threads=args.threads, progress=False, config=_config(args.tiny), seed=args.seed,
              extra_round_steps=0, iou_head_scenes=0)   # the first schedule alone: what both engines train
    if args.tiny:
        kw.update(batch_images=1, masks_per_image=2, warmup=2)
    if args.worker == "numpy":
        from minisam.checkpoints.formats import load_state_dict
        from minisam.training import micro_numpy
        from minisam.training.micro import train as dispatch
        import inspect
        defaults = {k: p.default for k, p in inspect.signature(dispatch).parameters.items()
                    if p.default is not inspect.Parameter.empty and k not in ("engine", "out_dir")}
        micro_numpy.train(out_dir=args.out, init=load_state_dict(args.init), **{**defaults, **kw})
    else:
        train(out_dir=args.out, engine="torch", **kw)


def torch_init(path: str, cfg, seed: int) -> None:
    """The torch engine's initial weights (its seed, then the official modules' init), saved."""
    import torch
    from minisam.reference.official import build_official
    torch.manual_seed(seed)
    torch.save(build_official(cfg).state_dict(), path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--single-round-steps", type=int, default=750,
                    help="the first phase (a point and a box per target): the shipped recipe runs 22000 of its first 25000 steps so")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="keep both runs' folders here (default: a temporary folder)")
    ap.add_argument("--tiny", action="store_true", help="4 steps of a 2-block model: check the script runs")
    ap.add_argument("--worker", choices=["torch", "numpy"], help=argparse.SUPPRESS)
    ap.add_argument("--init", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tiny and args.worker is None:
        args.steps, args.single_round_steps, args.val_every = 4, 2, 2
    if args.worker:
        worker(args)
        return 0

    print(header(f"train-micro, torch engine vs NumPy engine: {args.steps} steps ({args.single_round_steps} of "
                 f"the first phase), same init and seed" + (" [--tiny: not a comparison]" if args.tiny else ""),
                 args.threads), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or tmp
        os.makedirs(root, exist_ok=True)
        init = os.path.join(root, "init.pth")
        torch_init(init, _config(args.tiny), args.seed)
        logs = {}
        for engine in ("torch", "numpy"):
            out = os.path.join(root, engine)
            cmd = ["--worker", engine, "--init", init, "--out", out, "--steps", str(args.steps),
                   "--single-round-steps", str(args.single_round_steps), "--val-every", str(args.val_every),
                   "--seed", str(args.seed)] + (["--threads", str(args.threads)] if args.threads else []) \
                + (["--tiny"] if args.tiny else [])
            t0 = time.time()
            proc = start_worker(__file__, cmd, worker_env("minisam" if engine == "numpy" else "official",
                                                          args.threads))
            proc.stdin.close()
            if proc.wait():
                raise RuntimeError(f"the {engine} run failed")
            with open(os.path.join(out, "train_log.json")) as f:
                logs[engine] = json.load(f)
            print(f"[{engine}] {time.time() - t0:.0f} s wall", flush=True)
    print("\nvalidation (24 held-out scenes): step, point best-of-3 IoU torch / numpy, box IoU torch / numpy")
    val = {e: {h["step"]: h for h in logs[e]["history"] if "val_point_iou" in h} for e in logs}
    for step in sorted(val["torch"]):
        a, b = val["torch"][step], val["numpy"].get(step, {})
        print(f"  {step:>6}  {a['val_point_iou']:.4f} / {b.get('val_point_iou', float('nan')):.4f}   "
              f"{a['val_box_iou']:.4f} / {b.get('val_box_iou', float('nan')):.4f}")
    print("\nmean loss over windows of 50 steps: torch / numpy")
    losses = {e: [h["loss"] for h in logs[e]["history"]] for e in logs}
    for s0 in range(0, args.steps, 50):
        a, b = losses["torch"][s0:s0 + 50], losses["numpy"][s0:s0 + 50]
        print(f"  {s0 + 1:>6}-{min(args.steps, s0 + 50):<6} {sum(a) / len(a):.4f} / {sum(b) / len(b):.4f}")
    last = {e: logs[e]["history"][-1] for e in logs}
    diffs = {k: abs(last["torch"][k] - last["numpy"][k]) for k in ("val_point_iou", "val_box_iou")}
    ok = all(d <= BOUND for d in diffs.values())
    print(f"\nfinal IoU differences: point {diffs['val_point_iou']:.4f}, box {diffs['val_box_iou']:.4f} "
          f"(bound {BOUND}: {'met' if ok else 'NOT met'})")
    print(f"{load_average()} at the end")
    return 0 if ok or args.tiny else 1


if __name__ == "__main__":
    sys.exit(main())
