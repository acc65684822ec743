"""Benchmark: the vit_b image encoder, minisam vs the official PyTorch code, on this CPU.

Each side runs in its own subprocess so that each peak RSS is its own (minisam's worker
never imports torch). Each worker builds randomized vit_b weights and runs the whole
set_image path once (image checks, resize of a 1500x2250 image, preprocess, encoder) as the
warm-up (Numba compiles or loads its cache here). Then the parent asks the two workers for
one timed encoder forward each, in turn, ``--repeats`` times: interleaving keeps the
comparison fair on a machine whose load changes while the benchmark runs.
Prints the median time, GFLOP/s (analytic count, multiply-add = 2 FLOPs), the peak RSS,
the ratios, and the BLAS that NumPy and Numba use (threadpoolctl).

    python benchmarks/encoder.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def encoder_flops(cfg) -> float:
    """FLOPs of one ImageEncoderViT forward (pad tokens included, as they are computed)."""
    D, G, P, C = cfg.encoder_embed_dim, cfg.image_embedding_size, cfg.patch_size, cfg.prompt_embed_dim
    T = G * G
    f = 2 * T * 3 * P * P * D                                        # patch embed
    for i in range(cfg.encoder_depth):
        w = cfg.block_window_size(i)
        if w:
            side = -(-G // w) * w
            Tp, span = side * side, w * w                             # padded tokens, keys per query
        else:
            Tp, span = T, T
        f += 2 * Tp * D * 3 * D + 2 * Tp * D * D                      # qkv, proj
        f += 2 * 2 * Tp * span * D                                    # q k^T and attn v, all heads
        f += 2 * 2 * T * D * cfg.encoder_mlp_dim                      # lin1, lin2
    f += 2 * T * D * C + 2 * T * 9 * C * C                            # neck convs
    return float(f)


def _test_image():
    import numpy as np
    yy, xx = np.mgrid[0:1500, 0:2250]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def setup_minisam():
    import numpy as np
    from minisam.config import VIT_B, expected_shapes
    from minisam.image_encoder import image_encoder
    from minisam.params import nest
    from minisam.transforms import ResizeLongestSide, as_rgb_uint8, preprocess
    rng = np.random.default_rng(0)
    flat = {}
    for k, shape in expected_shapes(VIT_B).items():
        if k.startswith("image_encoder."):
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            flat[k] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    p = nest(flat)["image_encoder"]
    rss_weights = _rss_mb()
    t0 = time.perf_counter()
    img = ResizeLongestSide(VIT_B.img_size).apply_image(as_rgb_uint8(_test_image()))
    x = preprocess(img.transpose(2, 0, 1)[None], VIT_B)
    image_encoder(p, VIT_B, x)
    warm = time.perf_counter() - t0
    from threadpoolctl import threadpool_info
    import numba
    info = dict(warmup_s=warm, rss_weights_mb=rss_weights, blas=threadpool_info(),
                numba_threads=numba.get_num_threads(), numba_layer=numba.threading_layer())
    return (lambda: image_encoder(p, VIT_B, x)), info


def setup_official():
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from official import build_official, randomize
    from segment_anything.utils.transforms import ResizeLongestSide
    from minisam.config import VIT_B
    sam = randomize(build_official(VIT_B), 0)
    enc = sam.image_encoder
    rss_weights = _rss_mb()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    img = ResizeLongestSide(1024).apply_image(_test_image())
    x = sam.preprocess(torch.as_tensor(img).permute(2, 0, 1).contiguous()[None])
    enc(x)
    warm = time.perf_counter() - t0
    info = dict(warmup_s=warm, rss_weights_mb=rss_weights, torch=torch.__version__,
                torch_threads=torch.get_num_threads())
    return (lambda: enc(x)), info


def serve(which: str) -> None:
    """Worker loop: set up, report, then one timed forward per "run" line on stdin."""
    run_once, info = (setup_minisam if which == "minisam" else setup_official)()
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        run_once()
        dt = time.perf_counter() - t0
        print(json.dumps(dict(time=dt, peak_rss_mb=_rss_mb())), flush=True)


def _start_worker(which: str, threads):
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", which]
    return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _ask(proc, line=None) -> dict:
    if line is not None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    out = proc.stdout.readline()
    if not out:
        raise RuntimeError(f"benchmark worker exited with {proc.wait()}")
    return json.loads(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="BLAS/Numba/torch threads (default: all cores)")
    ap.add_argument("--worker", choices=["minisam", "official"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        serve(args.worker)
        return 0

    from minisam.config import VIT_B
    gflop = encoder_flops(VIT_B) / 1e9
    print(f"vit_b image encoder, 1024x1024, {gflop:.0f} GFLOP per forward; {os.cpu_count()} CPUs; "
          f"median of {args.repeats} interleaved runs after one warm-up set_image each", flush=True)
    sides = ("minisam", "official")
    procs, info, times, rss = {}, {}, {s: [] for s in sides}, {}
    try:
        for side in sides:                       # one at a time, so set-ups do not overlap
            procs[side] = _start_worker(side, args.threads)
            info[side] = _ask(procs[side])
        for _ in range(args.repeats):
            for side in sides:
                r = _ask(procs[side], "run")
                times[side].append(r["time"])
                rss[side] = r["peak_rss_mb"]
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    for side in sides:
        med = statistics.median(times[side])
        print(f"\n[{side}] times {', '.join(f'{t:.2f}' for t in times[side])} s  median {med:.2f} s  "
              f"{gflop / med:.1f} GFLOP/s  warm-up set_image {info[side]['warmup_s']:.2f} s")
        print(f"  peak RSS {rss[side]:.0f} MB (after building the weights: {info[side]['rss_weights_mb']:.0f} MB)")
        if side == "minisam":
            for lib in info[side]["blas"]:
                print(f"  threadpoolctl: {lib.get('internal_api')} {lib.get('version')} "
                      f"{lib.get('num_threads')} threads, {lib.get('architecture')}, "
                      f"{os.path.basename(lib.get('filepath', ''))}")
            print(f"  numba: {info[side]['numba_threads']} threads, layer {info[side]['numba_layer']}")
        else:
            print(f"  torch {info[side]['torch']}, {info[side]['torch_threads']} threads")
    tm, to = statistics.median(times["minisam"]), statistics.median(times["official"])
    print(f"\nspeed-up official/minisam: {to / tm:.2f}x   peak RSS minisam/official: "
          f"{rss['minisam'] / rss['official']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
