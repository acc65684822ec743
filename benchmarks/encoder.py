"""Benchmark: vit_b ``set_image`` (resize, preprocess, image encoder), minisam vs the official code.

One command prints everything:

    python benchmarks/encoder.py [--repeats 3] [--threads N] [--keep-blas-env]

A first subprocess saves a randomized official vit_b (``tests/official.py``) as a .pth; each
side then runs in its own worker subprocess (so each peak RSS is its own; minisam's worker
never imports torch), loads that checkpoint (minisam with its torch-free ``build_sam``), and
runs one warm-up ``SamPredictor.set_image`` on a 1500x2250 image (Numba compiles or loads its
cache there). The parent then asks the two workers for one timed ``set_image`` each, in turn,
``--repeats`` times: interleaving keeps the comparison fair on a machine whose load changes.
Both embeddings are compared at the end (same weights, same image: they must agree).

Printed: median time, encoder GFLOP/s (analytic count, multiply-add = 2 FLOPs) against the
float32 GEMM peak each side's BLAS reaches here, peak RSS, the ratios against the targets
(minisam <= 0.5x official time, <= 1.5 GB peak RSS), the BLAS kernel and thread counts, the
OPENBLAS_* variables (unset for the minisam worker unless ``--keep-blas-env``; see common.py),
and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_worker_args, ROOT, answer, ask, describe_minisam, fmt_times, header, load_average,  # noqa: E402
                    load_official_vit_b, minisam_env_info, numpy_gemm_gflops, rss_mb, save_random_vit_b,
                    start_worker, stop, synthetic_image, timed, torch_gemm_gflops, worker_env)

TIME_TARGET = 0.5     # minisam set_image time / official, at most
RSS_TARGET_MB = 1536  # minisam peak RSS


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


def setup(side: str, checkpoint: str):
    """-> (predictor, info) after one warm-up set_image."""
    image = synthetic_image()
    if side == "minisam":
        from minisam import SamPredictor, build_sam
        predictor = SamPredictor(build_sam(checkpoint))
        info = dict(rss_weights_mb=rss_mb())
        _, info["warmup_s"] = timed(lambda: predictor.set_image(image))
        info.update(minisam_env_info(), gemm_gflops=numpy_gemm_gflops())
    else:
        import torch
        from segment_anything import SamPredictor
        torch.set_grad_enabled(False)
        predictor = SamPredictor(load_official_vit_b(checkpoint))
        info = dict(rss_weights_mb=rss_mb())
        _, info["warmup_s"] = timed(lambda: predictor.set_image(image))
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(), gemm_gflops=torch_gemm_gflops())
    return predictor, image, info


def embedding(side, predictor):
    import numpy as np
    e = predictor.get_image_embedding()
    return np.asarray(e if side == "minisam" else e.float().numpy())


def serve(side: str, checkpoint: str) -> None:
    """Worker loop: set up, report, then one timed set_image per "run" line; "save PATH" writes the embedding."""
    import numpy as np
    predictor, image, info = setup(side, checkpoint)
    answer(info)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ["run"]:
            _, dt = timed(lambda: predictor.set_image(image))
            answer(dict(time=dt, peak_rss_mb=rss_mb()))
        elif cmd[:1] == ["save"]:
            np.save(cmd[1], embedding(side, predictor))
            answer({})
        else:
            break


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    add_worker_args(ap)
    args = ap.parse_args(argv)
    if args.worker == "prepare":
        save_random_vit_b(args.checkpoint)
        return 0
    if args.worker:
        serve(args.worker, args.checkpoint)
        return 0

    import numpy as np
    from minisam.config import VIT_B
    gflop = encoder_flops(VIT_B) / 1e9
    print(header("vit_b SamPredictor.set_image (1500x2250 image -> 1024x1024 -> 256x64x64 embedding)", args.threads))
    print(f"encoder: {gflop:.0f} GFLOP per forward; median of {args.repeats} interleaved runs after one warm-up "
          "set_image per side", flush=True)
    sides = ("minisam", "official")
    procs, info, times, rss = {}, {}, {s: [] for s in sides}, {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "vit_b_random.pth")
        prep = start_worker(__file__, ["--worker", "prepare", "--checkpoint", ckpt], worker_env("official"))
        if prep.wait() != 0:
            raise RuntimeError("could not prepare the random vit_b checkpoint")
        try:
            for side in sides:                       # one at a time, so set-ups do not overlap
                procs[side] = start_worker(__file__, ["--worker", side, "--checkpoint", ckpt],
                                           worker_env(side, args.threads, args.keep_blas_env))
                info[side] = ask(procs[side])
            for _ in range(args.repeats):
                for side in sides:
                    r = ask(procs[side], "run")
                    times[side].append(r["time"])
                    rss[side] = r["peak_rss_mb"]
            embs = {}
            for side in sides:
                path = os.path.join(tmp, side + ".npy")
                ask(procs[side], "save " + path)
                embs[side] = np.load(path)
        finally:
            stop(procs.values())
    for side in sides:
        med = statistics.median(times[side])
        i = info[side]
        print(f"\n[{side}] set_image times {fmt_times(times[side])} s  median {med:.2f} s  "
              f"encoder {gflop / med:.1f} GFLOP/s = {gflop / med / i['gemm_gflops']:.0%} of this side's "
              f"float32 GEMM peak ({i['gemm_gflops']:.0f} GFLOP/s, 2048^3)")
        print(f"  first set_image (warm-up) {i['warmup_s']:.2f} s; peak RSS {rss[side]:.0f} MB "
              f"(after loading the weights: {i['rss_weights_mb']:.0f} MB)")
        if side == "minisam":
            for line in describe_minisam(i):
                print("  " + line)
        else:
            print(f"  torch {i['torch']}, {i['torch_threads']} threads")
    ref = embs["official"]
    err = np.abs(embs["minisam"] - ref).max()
    print(f"\nembeddings agree: max abs diff {err:.2e} = {err / np.abs(ref).max():.1e} x max|official|")
    tm, to = statistics.median(times["minisam"]), statistics.median(times["official"])
    ratio = tm / to
    print(f"set_image time minisam/official: {ratio:.2f}x (speed-up {to / tm:.2f}x; target <= {TIME_TARGET}x: "
          f"{'met' if ratio <= TIME_TARGET else 'NOT met'})")
    print(f"peak RSS minisam {rss['minisam']:.0f} MB vs official {rss['official']:.0f} MB "
          f"({rss['minisam'] / rss['official']:.2f}x; target <= {RSS_TARGET_MB} MB: "
          f"{'met' if rss['minisam'] <= RSS_TARGET_MB else 'NOT met'})")
    print(f"{load_average()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
