"""Memory of the image encoder's backward (minisam.backward.image_encoder): what its forward saves,
and the peak of a forward and backward, at micro (4 images, as in training) and vit_b (1 image).

- saved: :func:`minisam.backward.image_encoder.saved_bytes` of the forward's cache, in total and
  per block (global and windowed blocks), and what saving the attention probabilities and the
  GELU's output as well would add;
- peak: tracemalloc's peak over ``image_encoder_forward`` then ``image_encoder_backward``
  (NumPy reports its array allocations to tracemalloc), the weights and the input not counted.

Random weights (:func:`minisam.training.micro_numpy.official_init`), float32. Needs no torch.

    python benchmarks/encoder_backward_memory.py [--sizes micro vit_b]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import header  # noqa: E402

MB = 1e6


def measure(name: str, batch: int) -> None:
    import numpy as np
    from minisam.backward import image_encoder as E
    from minisam.checkpoints.param_tree import nest
    from minisam.config import PRESETS
    from minisam.training.micro_numpy import official_init
    cfg = PRESETS[name]
    params = nest(official_init(cfg, np.random.default_rng(0)))["image_encoder"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, cfg.img_size, cfg.img_size)).astype(np.float32)
    G, D, F, nH = cfg.image_embedding_size, cfg.encoder_embed_dim, cfg.encoder_mlp_dim, cfg.encoder_num_heads
    dout = rng.standard_normal((batch, cfg.prompt_embed_dim, G, G)).astype(np.float32)
    tracemalloc.start()
    t0 = time.perf_counter()
    _, cache = E.image_encoder_forward(params, cfg, x)
    t1 = time.perf_counter()
    after_forward, forward_peak = tracemalloc.get_traced_memory()
    saved = E.saved_bytes(cache)
    per_block = [E.saved_bytes(c) for c in cache[1]]
    E.image_encoder_backward(dout, cache)
    t2 = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # what the recomputation avoids keeping: P per attention call, the GELU's output and Phi
    w = cfg.window_size
    nW = (-(-G // w)) ** 2  # windows per image, the grid padded to a multiple of w
    windowed_P = batch * nW * nH * (w * w) ** 2 * 4
    global_P = batch * nH * (G * G) ** 2 * 4
    gelu = 2 * batch * G * G * F * 4
    n_global = len(cfg.encoder_global_attn_indexes)
    n_windowed = cfg.encoder_depth - n_global
    print(f"\n{name}: {batch} image(s) of {cfg.img_size} x {cfg.img_size}, D {D}, {cfg.encoder_depth} blocks "
          f"({n_global} global)")
    print(f"  saved by the forward: {saved / MB:.1f} MB ({', '.join(f'{b / MB:.1f}' for b in per_block)} MB "
          f"per block; the rest: patch embedding and neck)")
    print(f"  peak over forward + backward: {peak / MB:.1f} MB (forward alone {forward_peak / MB:.1f} MB)")
    print(f"  not saved, recomputed: attention probabilities {(n_windowed * windowed_P + n_global * global_P) / MB:.1f} MB "
          f"({global_P / MB:.1f} MB per global block, {windowed_P / MB:.1f} MB per windowed block); "
          f"GELU output and Phi {cfg.encoder_depth * gelu / MB:.1f} MB")
    print(f"  forward {t1 - t0:.1f} s, backward {t2 - t1:.1f} s (timing only indicative)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["micro", "vit_b"], choices=["micro", "vit_b"])
    args = ap.parse_args(argv)
    print(header("image encoder backward: memory saved and peak (float32)", None), flush=True)
    for name in args.sizes:
        measure(name, 4 if name == "micro" else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
