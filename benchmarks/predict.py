"""Benchmark: prompting a set image, minisam vs the official code, same vit_b weights and photo.

    python benchmarks/predict.py [--repeats 10] [--batch 64] [--height 1500 --width 2250] [--threads N]

As ``benchmarks/encoder.py``: a randomized official vit_b is saved once, each side runs in
its own worker subprocess (minisam's never imports torch), both call ``set_image`` once on a
real photo (matplotlib's grace_hopper.jpg, resized), and the parent interleaves the timed
calls of the two sides:

- ``predict``: one foreground point, ``multimask_output=True`` (3 masks at full size):
  prompt encoder + mask decoder + upsampling to the original size + threshold;
  median of ``--repeats`` calls after one warm-up call;
- ``predict_new_image``: the same call as the first prompt on a new image, i.e. with
  minisam's per-image decoder cache dropped first (the official code has none);
- ``predict_batch`` with ``--batch`` boxes, ``multimask_output=False``, against the official
  ``predict_torch`` after ``apply_boxes_torch`` (the batched path of the official notebooks);
  median of 3 calls after one warm-up call.

Outputs are compared (same weights, same prompts): IoU predictions and the share of mask
pixels that agree. Targets: ``predict`` <= 1.0x the official time.
Also printed: peak RSS of each worker, the BLAS kernel and threads, OPENBLAS_* (unset for the
minisam worker unless ``--keep-blas-env``), the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_worker_args, answer, ask, describe_worker, fmt_times, header, interleaved,  # noqa: E402
                    load_official_vit_b, minisam_env_info, photo, print_ending, rss_mb, save_random_vit_b,
                    start_worker, timed, verdict, worker_env, workers)

PREDICT_TARGET = 1.0


def prompts(h: int, w: int, batch: int):
    """One point near the centre; ``batch`` boxes spread over the image (x0, y0, x1, y1 pixels)."""
    import numpy as np
    rng = np.random.default_rng(0)
    point = np.array([[w * 0.45, h * 0.4]], np.float32)                   # [1, 2]
    xy = rng.uniform(0, 1, (batch, 2)) * [w * 0.8, h * 0.8]                # [B, 2] top-left corners
    size = rng.uniform(0.05, 0.2, (batch, 2)) * [w, h]                    # [B, 2]
    boxes = np.concatenate([xy, xy + size], 1).astype(np.float32)         # [B, 4]
    return point, np.array([1], np.int64), boxes


class Side:
    """The two calls on one side, returning NumPy (masks, iou)."""

    def __init__(self, side: str, checkpoint: str, image, batch: int):
        self.side = side
        h, w = image.shape[:2]
        self.point, self.label, self.boxes = prompts(h, w, batch)
        if side == "minisam":
            from minisam import SamPredictor, build_sam
            self.predictor = SamPredictor(build_sam(checkpoint))
        else:
            import torch
            from segment_anything import SamPredictor
            torch.set_grad_enabled(False)
            self.predictor = SamPredictor(load_official_vit_b(checkpoint))
            self.torch = torch
        _, self.set_image_s = timed(lambda: self.predictor.set_image(image))

    def predict(self):
        masks, iou, _ = self.predictor.predict(point_coords=self.point, point_labels=self.label,
                                               multimask_output=True)     # [3, H, W], [3]
        return masks, iou

    def predict_new_image(self):
        """``predict`` as the first prompt on an image: minisam's per-image decoder cache
        (layer 0's image-only projections, filled by the first prompt) is dropped first; the
        official predictor keeps nothing between calls, so its call is unchanged."""
        if self.side == "minisam":
            self.predictor._decoder_state = None
        return self.predict()

    def predict_batch(self):
        if self.side == "minisam":
            masks, iou, _ = self.predictor.predict_batch(boxes=self.boxes, multimask_output=False)
            return masks, iou                                             # [B, 1, H, W], [B, 1]
        p = self.predictor
        boxes = p.transform.apply_boxes_torch(self.torch.as_tensor(self.boxes), p.original_size)
        masks, iou, _ = p.predict_torch(None, None, boxes=boxes, multimask_output=False)
        return masks.numpy(), iou.numpy()


def serve(side: str, a) -> None:
    import numpy as np
    s = Side(side, a.checkpoint, photo(a.height, a.width), a.batch)
    info = dict(set_image_s=s.set_image_s, rss_set_image_mb=rss_mb())
    for name in ("predict", "predict_batch"):                               # warm-up (Numba compiles here)
        _, info[name + "_first_s"] = timed(getattr(s, name))
    if side == "minisam":
        info.update(minisam_env_info())
    else:
        info.update(torch_threads=s.torch.get_num_threads(), torch=s.torch.__version__)
    answer(info)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ["run"]:
            _, dt = timed(getattr(s, cmd[1]))
            answer(dict(time=dt, peak_rss_mb=rss_mb()))
        elif cmd[:1] == ["save"]:
            out = {}
            for name in ("predict", "predict_batch"):
                masks, iou = getattr(s, name)()
                out[name + "_masks"], out[name + "_iou"] = np.asarray(masks, bool), np.asarray(iou)
            np.savez(cmd[1], **out)
            answer({})
        else:
            break


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10, help="timed predict calls per side (predict_batch: 3)")
    ap.add_argument("--batch", type=int, default=64, help="boxes in the predict_batch call")
    ap.add_argument("--height", type=int, default=1500)
    ap.add_argument("--width", type=int, default=2250)
    add_worker_args(ap)
    args = ap.parse_args(argv)
    if args.worker == "prepare":
        save_random_vit_b(args.checkpoint)
        return 0
    if args.worker:
        serve(args.worker, args)
        return 0

    import numpy as np
    print(header(f"vit_b prompting on a {args.height}x{args.width} photo: predict (1 point, 3 masks) and "
                 f"predict_batch ({args.batch} boxes, 1 mask each)", args.threads), flush=True)
    sides = ("minisam", "official")
    worker_args = ["--batch", str(args.batch), "--height", str(args.height), "--width", str(args.width)]
    times = {(s, n): [] for s in sides for n in ("predict", "predict_new_image", "predict_batch")}
    rss = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "vit_b_random.pth")
        if start_worker(__file__, ["--worker", "prepare", "--checkpoint", ckpt], worker_env("official")).wait():
            raise RuntimeError("could not prepare the random vit_b checkpoint")
        with workers(__file__, sides, lambda side: ["--worker", side, "--checkpoint", ckpt] + worker_args,
                     lambda side: worker_env(side, args.threads, args.keep_blas_env)) as (procs, info):
            for name, n in (("predict", args.repeats), ("predict_new_image", args.repeats), ("predict_batch", 3)):
                for side, _, r in interleaved(procs, ["run " + name], n):
                    times[side, name].append(r["time"])
                    rss[side] = r["peak_rss_mb"]
            outs = {}
            for side in sides:
                path = os.path.join(tmp, side + ".npz")
                ask(procs[side], "save " + path)
                outs[side] = dict(np.load(path))

    for side in sides:
        i = info[side]
        print(f"\n[{side}] set_image {i['set_image_s']:.2f} s; first predict {i['predict_first_s']:.3f} s, "
              f"first predict_batch {i['predict_batch_first_s']:.2f} s; peak RSS {rss[side]:.0f} MB "
              f"({i['rss_set_image_mb']:.0f} MB after set_image)")
        for name in ("predict", "predict_new_image", "predict_batch"):
            t = times[side, name]
            print(f"  {name:17s} median {statistics.median(t) * 1e3:8.1f} ms  (runs: {fmt_times(t)} s)")
        for line in describe_worker(i):
            print("  " + line)

    print()
    for name in ("predict", "predict_batch"):
        a, b = outs["minisam"], outs["official"]
        agree = (a[name + "_masks"] == b[name + "_masks"]).mean()
        iou_err = np.abs(a[name + "_iou"] - b[name + "_iou"]).max()
        print(f"{name}: outputs agree: {agree:.6%} of mask pixels, IoU predictions max abs diff {iou_err:.1e}")
    for name in ("predict", "predict_new_image", "predict_batch"):
        tm, to = (statistics.median(times[s, name]) for s in sides)
        target = (f"; target <= {PREDICT_TARGET}x: {verdict(tm / to <= PREDICT_TARGET)}"
                  if name != "predict_batch" else "")
        print(f"{name} time minisam/official: {tm / to:.2f}x (speed-up {to / tm:.2f}x{target})")
    print_ending(rss, sides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
