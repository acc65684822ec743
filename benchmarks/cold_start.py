"""Benchmark: cold start, the first ``set_image`` + ``predict`` in a fresh process.

    python benchmarks/cold_start.py [--models micro vit_b] [--threads N] [--keep-blas-env]

For each model, two fresh worker processes share a new, empty Numba cache folder
(``NUMBA_CACHE_DIR``): the first compiles every kernel it meets and writes the cache (what a
user sees on the very first run after installing), the second loads the compiled kernels from
that cache (every later run). Each worker times, from its own start:
import (``import minisam`` + the predictor), build (read the checkpoint), the first
``set_image`` + ``predict`` (one point, 3 masks), then a second ``set_image`` + ``predict``
(steady state). The start-up cost is import + build + first ``set_image`` + ``predict`` minus the steady-state
``set_image`` + ``predict``: imports, weight loading, and Numba compiling or loading kernels
(reading the test photo and the interpreter start are left out, and printed).

Targets: start-up cost <= 10 s with an empty cache, <= 2 s with the cache. ``micro`` is the
bundled model (weights/); ``vit_b`` is random weights written as .npz (the speed does not
depend on the values), so no download and no torch are needed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

T_START = time.perf_counter()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import describe_minisam, header, load_average, photo, rss_mb, worker_env  # noqa: E402

FIRST_TARGET_S, CACHED_TARGET_S = 10.0, 2.0


def save_random(path: str, name: str) -> None:
    import numpy as np
    from minisam.config import PRESETS, expected_shapes
    rng = np.random.default_rng(0)
    flat = {}
    for k, shape in expected_shapes(PRESETS[name]).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        flat[k] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    np.savez(path, **flat)


def worker(model: str, checkpoint) -> dict:
    import warnings
    warnings.simplefilter("ignore")  # e.g. micro's "untrained placeholder" notice: not a timing matter
    out = {}
    t = time.perf_counter()
    from minisam import SamPredictor, build_sam, sam_model_registry
    out["import_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sam = build_sam(checkpoint) if checkpoint else sam_model_registry[model]()
    out["build_s"] = time.perf_counter() - t
    predictor = SamPredictor(sam)
    image = photo(750, 1125)

    def first_masks():
        predictor.set_image(image)
        h, w = image.shape[:2]
        return predictor.predict(point_coords=[[w * 0.45, h * 0.4]], point_labels=[1], multimask_output=True)

    for key in ("first_s", "steady_s"):
        t = time.perf_counter()
        first_masks()
        out[key] = time.perf_counter() - t
        if key == "first_s":
            out["to_first_masks_s"] = time.perf_counter() - T_START
    from common import minisam_env_info
    out.update(minisam_env_info(), peak_rss_mb=rss_mb(), img_size=sam.config.img_size)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["micro", "vit_b"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keep-blas-env", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.checkpoint)), flush=True)
        return 0

    print(header("cold start: first set_image + predict (1 point, 3 masks) on a 750x1125 photo, in a fresh process",
                 args.threads), flush=True)
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            ckpt = None
            if model != "micro":
                ckpt = os.path.join(tmp, model + ".npz")
                save_random(ckpt, model)
            env = worker_env("minisam", args.threads, args.keep_blas_env)
            env["NUMBA_CACHE_DIR"] = os.path.join(tmp, "numba-cache-" + model)   # empty: a fresh install
            results = {}
            for run in ("empty Numba cache", "with the cache"):
                t0 = time.perf_counter()
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", model]
                cmd += ["--checkpoint", ckpt] if ckpt else []
                line = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
                r = json.loads(line.strip().splitlines()[-1])
                r["process_s"] = time.perf_counter() - t0
                r["startup_s"] = r["import_s"] + r["build_s"] + r["first_s"] - r["steady_s"]
                results[run] = r
                print(f"\n[{model}, {run}] {r['img_size']}x{r['img_size']} model; whole process {r['process_s']:.2f} s; "
                      f"first masks {r['to_first_masks_s']:.2f} s after start = import {r['import_s']:.2f} + build "
                      f"{r['build_s']:.2f} + first set_image+predict {r['first_s']:.2f} (+ script {r['to_first_masks_s'] - r['import_s'] - r['build_s'] - r['first_s']:.2f})")
                print(f"  steady set_image+predict {r['steady_s']:.2f} s -> start-up cost {r['startup_s']:.2f} s; "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB")
            for line in describe_minisam(results["with the cache"]):
                print("  " + line)
            for run, target in (("empty Numba cache", FIRST_TARGET_S), ("with the cache", CACHED_TARGET_S)):
                s = results[run]["startup_s"]
                verdicts.append(f"{model}: start-up cost, {run}: {s:.2f} s (target <= {target:.0f} s: "
                                f"{'met' if s <= target else 'NOT met'}); first masks after "
                                f"{results[run]['to_first_masks_s']:.2f} s")
    print()
    print("\n".join(verdicts))
    print(f"{load_average()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
