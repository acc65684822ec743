"""Benchmark: the automatic mask generator, minisam vs the official code, same weights and image.

Each side runs in its own worker subprocess (benchmarks/common.py), so each peak RSS is its
own and minisam's worker never imports torch. The parent saves a randomized vit_b, both
workers load it (``segment_anything``'s Sam, and ``minisam.build_sam``), run one warm-up
``generate`` with one full point batch on a small image (Numba compiles or loads its cache
there), then the timed ``generate`` calls on a real photo, interleaved between the two sides
so that a change in machine load hits both alike. Reported: median and all times, peak RSS,
RSS before the first timed call, the number of masks, and whether both found the same boxes
and areas (with the largest area difference), mask by mask matched by point and predicted IoU
(``match_records``); the BLAS kernel and the OPENBLAS_* state of the minisam worker. Areas may differ by pixels whose logit sits on the 0 threshold within float32
rounding; tests/test_automatic_mask_generator.py checks, pixel by pixel against the official
logits, that no other pixel differs.

Random weights give logits of ~0.1, so the settings are the tests' lowered thresholds
(stability offset 0.05); the pipeline work is the same as with trained weights.
The official code upsamples every batch to full resolution (points_per_batch x 3 x H x W
float32: 64 x 3 x 750 x 1125 x 4 B = 650 MB); minisam upsamples only the masks that pass
the IoU filter, a few at a time.

    python benchmarks/amg.py [--height 750 --width 1125] [--points-per-side 32] [--repeats 3]
                             [--threads N] [--keep-blas-env]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_worker_args, answer, ask, describe_minisam, fmt_times, header, photo, rss_mb,  # noqa: E402
                    save_random_vit_b, start_worker, stop, timed, worker_env)

SETTINGS = dict(pred_iou_thresh=0.0, stability_score_thresh=0.2, stability_score_offset=0.05, box_nms_thresh=1.0)


def worker(a) -> None:
    """Serve ``generate`` calls: one JSON line per command read from stdin."""
    kwargs = dict(SETTINGS, points_per_side=a.points_per_side, points_per_batch=a.points_per_batch,
                  crop_n_layers=a.crop_n_layers, crop_n_points_downscale_factor=2)
    info = {}
    if a.worker == "official":
        import torch
        from common import load_official_vit_b
        from segment_anything import SamAutomaticMaskGenerator
        if a.threads:
            torch.set_num_threads(a.threads)
        model = load_official_vit_b(a.checkpoint)
        make = lambda **kw: SamAutomaticMaskGenerator(model, **kw)  # noqa: E731
        info["torch_threads"] = torch.get_num_threads()
    else:
        from common import minisam_env_info
        from minisam import SamAutomaticMaskGenerator, build_sam
        from minisam.kernels.threads import set_num_threads
        set_num_threads(a.threads)
        model = build_sam(a.checkpoint)
        make = lambda **kw: SamAutomaticMaskGenerator(model, progress=False, **kw)  # noqa: E731
        info = minisam_env_info()
    side_len = max(1, int(a.points_per_batch ** 0.5))
    _, warm = timed(lambda: make(**dict(kwargs, points_per_side=side_len, crop_n_layers=0)).generate(photo(64, 96)))
    image = photo(a.height, a.width)
    answer(dict(info, warmup_s=warm, rss_before_mb=rss_mb()))
    for _ in sys.stdin:
        records, seconds = timed(lambda: make(**kwargs).generate(image))
        answer({"s": seconds, "peak_rss_mb": rss_mb(), "n": len(records),
                "bbox": [r["bbox"] for r in records], "area": [r["area"] for r in records],
                "point": [r["point_coords"][0] for r in records],
                "iou": [float(r["predicted_iou"]) for r in records]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=750)
    ap.add_argument("--width", type=int, default=1125)
    ap.add_argument("--points-per-side", type=int, default=32, help="the official default, 32 (1024 points)")
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--crop-n-layers", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed generate calls per side (median reported)")
    ap.add_argument("--seed", type=int, default=1234)
    add_worker_args(ap, workers=("official", "minisam"))
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return

    print(header("automatic mask generator, vit_b (randomized)", a.threads))
    print(f"image {a.height}x{a.width} (grace_hopper.jpg), {a.points_per_side}^2 points, points_per_batch "
          f"{a.points_per_batch}, crop_n_layers {a.crop_n_layers}, settings {SETTINGS}, {a.repeats} timed runs/side")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "vit_b_random.pth")
        save_random_vit_b(ckpt, a.seed)
        args = ["--checkpoint", ckpt, "--height", str(a.height), "--width", str(a.width),
                "--points-per-side", str(a.points_per_side), "--points-per-batch", str(a.points_per_batch),
                "--crop-n-layers", str(a.crop_n_layers)] + (["--threads", str(a.threads)] if a.threads else [])
        procs, ready, runs = {}, {}, {"official": [], "minisam": []}
        try:
            for side in ("official", "minisam"):   # one at a time: their warm-ups do not overlap
                procs[side] = start_worker(__file__, ["--worker", side] + args,
                                           worker_env(side, a.threads, a.keep_blas_env))
                ready[side] = ask(procs[side])
            for _ in range(a.repeats):
                for side in ("official", "minisam"):
                    runs[side].append(ask(procs[side], "generate"))
        finally:
            stop(procs.values())
    for line in describe_minisam(ready["minisam"]):
        print(line)
    print(f"official: torch threads {ready['official'].get('torch_threads')}")
    print(f"{'':10} {'median s':>9} {'runs s':>26} {'warm-up s':>10} {'RSS before MB':>14} {'peak RSS MB':>12} "
          f"{'masks':>6}")
    med = {}
    for side in ("official", "minisam"):
        times = [r["s"] for r in runs[side]]
        med[side] = statistics.median(times)
        print(f"{side:10} {med[side]:9.1f} {fmt_times(times):>26} {ready[side]['warmup_s']:10.1f} "
              f"{ready[side]['rss_before_mb']:14.0f} {runs[side][-1]['peak_rss_mb']:12.0f} {runs[side][-1]['n']:6d}")
    o, m = runs["official"][-1], runs["minisam"][-1]
    print(f"minisam / official: time x{med['minisam'] / med['official']:.2f}, "
          f"peak RSS x{m['peak_rss_mb'] / o['peak_rss_mb']:.2f}")
    pairs = match_records(o, m)
    same_order = sum(i == j for i, j in pairs)
    same_boxes = sum(o["bbox"][i] == m["bbox"][j] for i, j in pairs)
    area_diff = [abs(o["area"][i] - m["area"][j]) for i, j in pairs]
    rel = max((d / max(o["area"][i], 1) for d, (i, _) in zip(area_diff, pairs)), default=0.0)
    print(f"same masks: count {o['n']} vs {m['n']}, matched {len(pairs)} (same position in the list: "
          f"{same_order}), identical boxes {same_boxes}/{len(pairs)}, identical areas {area_diff.count(0)}/"
          f"{len(pairs)}, max |area difference| {max(area_diff, default=0)} px ({rel:.1e} of the official area)")


def match_records(o: dict, m: dict) -> list:
    """Pairs (official index, minisam index) of the same mask: the same point, and of that point's
    masks the one with the nearest predicted IoU (within 1e-4, the suite's bound).

    The lists cannot be compared by position: records are sorted by predicted IoU, and two whole-image
    masks whose IoUs differ by float32 rounding may come in either order on the two sides, with the
    same bbox and different areas."""
    by_point = {}
    for j, (p, iou) in enumerate(zip(m["point"], m["iou"])):
        by_point.setdefault(tuple(p), []).append((iou, j))
    pairs, taken = [], set()
    for i, (p, iou) in enumerate(zip(o["point"], o["iou"])):
        free = [(abs(iou - v), j) for v, j in by_point.get(tuple(p), []) if j not in taken]
        if free and min(free)[0] <= 1e-4:
            j = min(free)[1]
            taken.add(j)
            pairs.append((i, j))
    return pairs


if __name__ == "__main__":
    main()
