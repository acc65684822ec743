"""Measurement: `minisam finetune` on micro with a small generated dataset of unseen shapes.

Writes a dataset in the folder layout `minisam finetune` reads (``images/NAME.png`` and
``masks/NAME/*.png``): scenes of crosses and crescents
(:func:`minisam.training.shapes.make_unseen_scene`), shapes micro was never trained on, seen
``--zoom`` times closer than micro's scenes (default 2, the close-ups of lesson 22, where
micro's first click is weak; ``--zoom 1``: the usual size, where micro already does well). Then
runs ``minisam finetune DATA --out DIR --model micro`` as a user would, in a subprocess, and
reports its validation IoU before and after (held-out whole images, measured by the command
itself: the point IoU of the mask with the highest predicted IoU for a click at each object's
most interior pixel, and the box IoU), the wall time and the peak RSS (VmHWM of the child).
The target: validation point IoU up by at least 0.05 within 10 minutes on this machine.

    python benchmarks/finetune_micro.py [--images 60] [--steps 400] [--zoom 2] [--threads 2] [--keep-blas-env]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import describe_minisam, header, print_ending, verdict, worker_env  # noqa: E402

TARGET_GAIN, TARGET_SECONDS = 0.05, 600


def write_dataset(root: str, n_images: int, size: int = 128, seed: int = 2026, zoom: int = 2) -> int:
    """``n_images`` scenes with at least one object each; returns the number of object masks."""
    import numpy as np
    from PIL import Image
    from minisam.training.shapes import make_unseen_scene
    rng = np.random.default_rng(seed)
    masks_written, i = 0, 0
    while i < n_images:
        scene = make_unseen_scene(rng, size, zoom=zoom)
        if not scene.masks:
            continue
        name = f"scene{i:03d}"
        Image.fromarray(scene.image).save(os.path.join(root, "images", name + ".png"))
        os.makedirs(os.path.join(root, "masks", name))
        for j, mask in enumerate(scene.masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(root, "masks", name, f"{j}.png"))
        masks_written += len(scene.masks)
        i += 1
    return masks_written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=60, help="generated images (20%% held out for validation)")
    ap.add_argument("--steps", type=int, default=400, help="fine-tuning steps")
    ap.add_argument("--batch", type=int, default=8, help="masks per step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--zoom", type=int, default=2, help="close-ups: the scenes drawn this many times larger, cut "
                    "to their centre (1: micro's usual scale)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keep-blas-env", action="store_true")
    args = ap.parse_args(argv)
    print(header(f"minisam finetune on micro: {args.images} generated images of unseen shapes "
                 f"({'at the usual size' if args.zoom == 1 else f'{args.zoom}x close-ups'}), "
                 f"{args.steps} steps of {args.batch} masks", args.threads), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(os.path.join(data, "images"))
        os.makedirs(os.path.join(data, "masks"))
        n_masks = write_dataset(data, args.images, zoom=args.zoom)
        out = os.path.join(tmp, "out")
        cmd = [sys.executable, "-c",
               "import sys; from minisam.cli import main; rc = main(sys.argv[1:]); "
               "print('VmHWM', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]); "
               f"import json; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
               "from common import minisam_env_info; print('ENV', json.dumps(minisam_env_info(), default=str)); "
               "sys.exit(rc)",
               "finetune", data, "--out", out, "--model", "micro", "--steps", str(args.steps),
               "--batch", str(args.batch), "--lr", str(args.lr), "--no-progress"]
        t0 = time.time()
        proc = subprocess.run(cmd, env=worker_env("minisam", args.threads, args.keep_blas_env),
                              capture_output=True, text=True)
        seconds = time.time() - t0
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            return proc.returncode
        with open(os.path.join(out, "finetune_log.json")) as f:
            log = json.load(f)
        vmhwm = [line for line in proc.stdout.splitlines() if line.startswith("VmHWM")][0].split()[1]
        env_info = json.loads([line for line in proc.stdout.splitlines() if line.startswith("ENV ")][0][4:])
    before, after = log["val_before"], log["val_after"]
    for line in describe_minisam(env_info):
        print(line)
    print(f"dataset: {args.images} images, {n_masks} object masks; validation masks: {after['masks']}")
    for key in ("point_iou", "point_best_of_3_iou", "box_iou"):
        print(f"  {key:<20s} {before[key]:.4f} -> {after[key]:.4f}  ({after[key] - before[key]:+.4f})")
    gain = after["point_iou"] - before["point_iou"]
    print(f"wall time {seconds:.0f} s (the command, including the embeddings and both validations); "
          f"peak RSS {int(vmhwm) / 1024:.0f} MB")
    met = gain >= TARGET_GAIN and seconds <= TARGET_SECONDS
    print(f"target: point IoU +{TARGET_GAIN} within {TARGET_SECONDS} s: {verdict(met)} "
          f"({gain:+.4f} in {seconds:.0f} s)")
    print_ending()
    return 0


if __name__ == "__main__":
    sys.exit(main())
