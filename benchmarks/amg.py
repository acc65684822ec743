"""Benchmark: the automatic mask generator, minisam vs the official code, same weights and image.

Each side runs in its own subprocess, so each peak RSS is its own (minisam's worker never
imports torch). A first worker builds a randomized vit_b (tests/official.py) and saves its
state dict; the official worker loads it into ``segment_anything``'s Sam, the minisam worker
with ``minisam.build_sam``. Both run one warm-up ``generate`` with one full point batch on a
small image (Numba compiles or loads its cache there), then the
timed ``generate`` on the test image, and report: time, peak RSS, RSS before ``generate``
(weights + warm-up), the number of masks, and the records' boxes, so that the parent can
check that both found the same masks.

Random weights give logits of ~0.1, so the settings are the tests' lowered thresholds
(stability offset 0.05); the pipeline work is the same as with trained weights.
The official code upsamples every batch to full resolution (points_per_batch x 3 x H x W
float32: 64 x 3 x 1500 x 2250 x 4 B = 2.6 GB); minisam upsamples only the masks that pass
the IoU filter, a few at a time.

    python benchmarks/amg.py [--height 750 --width 1125] [--points-per-side 16] [--crop-n-layers 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SETTINGS = dict(pred_iou_thresh=0.0, stability_score_thresh=0.2, stability_score_offset=0.05, box_nms_thresh=1.0)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _image(h: int, w: int):
    """grace_hopper.jpg (matplotlib sample data) resized to h x w."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.array(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR))


def _summary(records) -> dict:
    return {"n": len(records), "bbox": [r["bbox"] for r in records], "area": [r["area"] for r in records]}


def worker(side: str, a) -> dict:
    kwargs = dict(SETTINGS, points_per_side=a.points_per_side, points_per_batch=a.points_per_batch,
                  crop_n_layers=a.crop_n_layers, crop_n_points_downscale_factor=2)
    if side == "prepare":  # randomized official weights, saved for both workers
        import torch
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from official import build_official, randomize
        from minisam.config import VIT_B
        torch.save(randomize(build_official(VIT_B), a.seed).state_dict(), a.checkpoint)
        return {}
    if side == "official":
        import torch
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from official import build_official
        from segment_anything import SamAutomaticMaskGenerator
        from minisam.config import VIT_B
        torch.set_num_threads(a.threads)
        model = build_official(VIT_B)
        model.load_state_dict(torch.load(a.checkpoint))
        make = lambda **kw: SamAutomaticMaskGenerator(model, **kw)  # noqa: E731
    else:
        from threadpoolctl import threadpool_limits
        import numba
        from minisam import SamAutomaticMaskGenerator, build_sam
        threadpool_limits(a.threads)
        numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
        model = build_sam(a.checkpoint)
        make = lambda **kw: SamAutomaticMaskGenerator(model, progress=False, **kw)  # noqa: E731
    # Warm-up: one full point batch on a small image (Numba compiles; the decoder's own
    # working memory at points_per_batch prompts is then in "RSS before" for both sides).
    t0 = time.perf_counter()
    side_len = max(1, int(a.points_per_batch ** 0.5))
    make(**dict(kwargs, points_per_side=side_len, crop_n_layers=0)).generate(_image(64, 96))
    warm = time.perf_counter() - t0
    rss_before = _rss_mb()
    image = _image(a.height, a.width)
    gen = make(**kwargs)
    t0 = time.perf_counter()
    records = gen.generate(image)
    elapsed = time.perf_counter() - t0
    return dict(side=side, warmup_s=warm, generate_s=elapsed, rss_before_mb=rss_before, peak_rss_mb=_rss_mb(),
                **_summary(records))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=750)
    ap.add_argument("--width", type=int, default=1125)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--crop-n-layers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--worker", choices=["prepare", "official", "minisam"], help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "vit_b_random.pth")
        results = {}
        for side in ("prepare", "official", "minisam"):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--checkpoint", ckpt,
                   "--height", str(a.height), "--width", str(a.width), "--points-per-side", str(a.points_per_side),
                   "--points-per-batch", str(a.points_per_batch), "--crop-n-layers", str(a.crop_n_layers),
                   "--threads", str(a.threads), "--seed", str(a.seed)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[side] = json.loads(out.strip().splitlines()[-1])
    o, m = results["official"], results["minisam"]
    print(f"vit_b (randomized, seed {a.seed}), image {a.height}x{a.width}, {a.points_per_side}^2 points, "
          f"points_per_batch {a.points_per_batch}, crop_n_layers {a.crop_n_layers}, {a.threads} threads, "
          f"settings {SETTINGS}")
    print(f"{'':10} {'generate s':>11} {'warm-up s':>10} {'RSS before MB':>14} {'peak RSS MB':>12} {'masks':>6}")
    for r in (o, m):
        print(f"{r['side']:10} {r['generate_s']:11.1f} {r['warmup_s']:10.1f} {r['rss_before_mb']:14.0f} "
              f"{r['peak_rss_mb']:12.0f} {r['n']:6d}")
    print(f"minisam / official: time x{m['generate_s'] / o['generate_s']:.2f}, "
          f"peak RSS x{m['peak_rss_mb'] / o['peak_rss_mb']:.2f}, "
          f"RSS growth during generate {m['peak_rss_mb'] - m['rss_before_mb']:.0f} MB vs "
          f"{o['peak_rss_mb'] - o['rss_before_mb']:.0f} MB")
    same_boxes = sum(a_ == b_ for a_, b_ in zip(o["bbox"], m["bbox"]))
    print(f"same masks: count {o['n']} vs {m['n']}, identical boxes {same_boxes}/{o['n']}, "
          f"identical areas {sum(a_ == b_ for a_, b_ in zip(o['area'], m['area']))}/{o['n']}")


if __name__ == "__main__":
    main()
