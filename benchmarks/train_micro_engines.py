"""The two train-micro engines over a long run: validation IoU after N steps (default 1000).

Runs :func:`minisam.training.micro.train` with ``engine="torch"`` and with ``engine="numpy"``
from the same initial weights (the torch engine's own init, handed to the NumPy engine) and the
same seed, each in its own subprocess (the NumPy one never imports torch), one after the other,
and reports the validation IoUs (best-of-3 point, box; 24 held-out scenes) at every validation,
the loss curves' means over windows of 50 steps, and whether the final IoUs agree within 0.02
(the bound the NumPy engine is held to). Past the first steps the runs are not
step-for-step equal in float32 (a flipped pixel moves a click): what is compared is where
training gets, not the path. Nor is the torch engine equal to itself: two of its runs from the
same init and batches first differ by one float32 ulp of the loss after some 20 steps, and
their final point IoUs on 300 scenes differed by up to 0.017 over four seeds
(``benchmarks/RESULTS.md``, 2026-12-07). One pair of runs measures the engines' difference plus
that spread.

The in-training validation has 24 scenes. ``--eval-scenes N`` (default 300) then evaluates both
final models on the first N validation scenes (those 24 and more from the same seed) with
minisam's own predictor (:func:`minisam.training.micro.evaluate`), object by object, and prints
each engine's IoUs with the paired difference and its standard error; the run passes only if
both comparisons are within the bound. ``--eval-only DIR`` does only the evaluation, on the two
run folders that an earlier ``--out DIR`` kept.

    python benchmarks/train_micro_engines.py [--steps 1000] [--single-round-steps 750] [--threads N]
                                             [--seed S] [--dtype float32|float64] [--out DIR]
                                             [--eval-scenes N] [--tiny]
    python benchmarks/train_micro_engines.py --eval-only DIR [--eval-scenes N]

``--dtype float64`` trains both engines in float64: the NumPy engine with ``dtype="float64"``, the
torch engine widened by :func:`minisam.reference.official.float64_torch_engine`. Their losses
then agree to ~1e-15 relative for as long as the runs stay together, and the line "losses step
for step" gives the step where they part (rounding, amplified by training itself).

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
        micro_numpy.train(out_dir=args.out, init=load_state_dict(args.init), dtype=args.dtype, **{**defaults, **kw})
    elif args.dtype == "float64":
        from minisam.reference.official import float64_torch_engine
        with float64_torch_engine():
            train(out_dir=args.out, engine="torch", **kw)
    else:
        train(out_dir=args.out, engine="torch", **kw)


def torch_init(path: str, cfg, seed: int) -> None:
    """The torch engine's initial weights (its seed, then the official modules' init), saved."""
    import torch
    from minisam.reference.official import build_official
    torch.manual_seed(seed)
    torch.save(build_official(cfg).state_dict(), path)


def paired_validation(root: str, n_scenes: int, tiny: bool) -> dict:
    """Both final models of ``root/{torch,numpy}`` on the first ``n_scenes`` validation scenes,
    object by object: each engine's mean IoUs and the paired differences (numpy - torch)."""
    import numpy as np
    from minisam.build_sam import build_sam
    from minisam.training.micro import SHIPPED_RECIPE, VAL_SEED, evaluate
    cfg = _config(tiny)
    per = {}
    for engine in ("torch", "numpy"):
        sam = build_sam(os.path.join(root, engine, "last_checkpoint.pth"), cfg)
        per[engine] = evaluate(sam, n_scenes, VAL_SEED, scene_min_area=SHIPPED_RECIPE["scene_min_area"],
                               per_object=True)["per_object"]
    out = {"scenes": n_scenes, "objects": len(per["torch"]["box_iou"])}
    for key in ("point_best_of_3_iou", "box_iou"):
        a, b = np.asarray(per["torch"][key]), np.asarray(per["numpy"][key])   # [objects] each
        d = b - a                                                               # [objects]
        out[key] = {"torch": float(a.mean()), "numpy": float(b.mean()), "diff": float(d.mean()),
                    "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")}
    return out


def print_paired(res: dict) -> bool:
    print(f"\nboth final models on {res['scenes']} validation scenes ({res['objects']} objects), minisam's predictor:\n"
          f"  IoU torch / numpy, difference numpy - torch +- its paired standard error")
    ok = True
    for key, name in (("point_best_of_3_iou", "point best-of-3"), ("box_iou", "box")):
        r = res[key]
        ok &= abs(r["diff"]) <= BOUND
        print(f"  {name:16} {r['torch']:.4f} / {r['numpy']:.4f}   {r['diff']:+.4f} +- {r['se']:.4f}")
    print(f"final IoU differences on {res['scenes']} scenes within {BOUND}: {'met' if ok else 'NOT met'}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--single-round-steps", type=int, default=750,
                    help="the first phase (a point and a box per target): the shipped recipe runs 22000 of its first 25000 steps so")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                    help="both engines in this precision (float64: the torch engine as a float64 witness)")
    ap.add_argument("--out", default=None, help="keep both runs' folders here (default: a temporary folder)")
    ap.add_argument("--eval-scenes", type=int, default=300,
                    help="evaluate both final models on this many validation scenes, object by object (0: skip)")
    ap.add_argument("--eval-only", metavar="DIR", help="only the evaluation, of the runs kept in DIR by --out DIR")
    ap.add_argument("--tiny", action="store_true", help="4 steps of a 2-block model: check the script runs")
    ap.add_argument("--worker", choices=["torch", "numpy"], help=argparse.SUPPRESS)
    ap.add_argument("--init", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tiny and args.worker is None:
        args.steps, args.single_round_steps, args.val_every = 4, 2, 2
        args.eval_scenes = min(args.eval_scenes, 2)
    if args.worker:
        worker(args)
        return 0
    if args.eval_only:
        return 0 if print_paired(paired_validation(args.eval_only, args.eval_scenes, args.tiny)) or args.tiny else 1

    print(header(f"train-micro, torch engine vs NumPy engine: {args.steps} steps ({args.single_round_steps} of "
                 f"the first phase), same init and seed, {args.dtype}" + (" [--tiny: not a comparison]" if args.tiny else ""),
                 args.threads), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or tmp
        paired = None
        os.makedirs(root, exist_ok=True)
        init = os.path.join(root, "init.pth")
        torch_init(init, _config(args.tiny), args.seed)
        logs = {}
        for engine in ("torch", "numpy"):
            out = os.path.join(root, engine)
            cmd = ["--worker", engine, "--init", init, "--out", out, "--steps", str(args.steps),
                   "--single-round-steps", str(args.single_round_steps), "--val-every", str(args.val_every),
                   "--seed", str(args.seed), "--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else []) \
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
        if args.eval_scenes:
            paired = paired_validation(root, args.eval_scenes, args.tiny)
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
    rel = [abs(a - b) / abs(a) for a, b in zip(losses["torch"], losses["numpy"])]
    parted = {t: next((i + 1 for i, r in enumerate(rel) if r > t), None) for t in (1e-12, 1e-4)}
    print("losses step for step: " + ", ".join(
        f"within {t:g} relative {'at every step' if s is None else f'up to step {s - 1}'}" for t, s in parted.items()))
    last = {e: logs[e]["history"][-1] for e in logs}
    diffs = {k: abs(last["torch"][k] - last["numpy"][k]) for k in ("val_point_iou", "val_box_iou")}
    ok = all(d <= BOUND for d in diffs.values())
    print(f"\nfinal IoU differences: point {diffs['val_point_iou']:.4f}, box {diffs['val_box_iou']:.4f} "
          f"(bound {BOUND}: {'met' if ok else 'NOT met'})")
    if paired is not None:
        ok &= print_paired(paired)
    print(f"{load_average()} at the end")
    return 0 if ok or args.tiny else 1


if __name__ == "__main__":
    sys.exit(main())
