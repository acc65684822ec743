"""Benchmark: peak resident memory of loading a model and one ``SamPredictor.set_image``, in a fresh process.

    python benchmarks/encoder_memory.py [--checkpoint vit_b.pth] [--model vit_b] [--runs 2] [--threads N]

Each run is a new Python process (started by ``subprocess``) that imports minisam, loads the
checkpoint with the torch-free ``build_sam``, and runs one ``set_image`` on a 1500x2250 image. The
process reads its own peak resident set size, VmHWM of ``/proc/self/status``, after each step:
``ru_maxrss`` of a child started by vfork/exec can carry the parent's high-water mark on Linux,
VmHWM cannot. Without ``--checkpoint`` a child process with torch first saves a randomized
official model (``minisam.reference.official``) to a temporary .pth; the measuring process never
imports torch.

The first run after installing (or after a kernel's source changes) also compiles the Numba
kernels, and LLVM's memory counts then; later runs load the compiled kernels from Numba's cache.
Every run is printed, so a compiling run shows as such (its set_image takes far longer).

Target: at most 1000 MB (MiB, as /proc reports kB / 1024) for load + one vit_b set_image.
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
from common import synthetic_image  # noqa: E402
from encoder import vm_hwm_mb  # noqa: E402

TARGET_MB = 1000


def measure(checkpoint: str, model: str) -> dict:
    """In this (fresh) process: VmHWM after imports, after loading, after one set_image."""
    from minisam import SamPredictor, build_sam
    from minisam.config import PRESETS
    from minisam.kernels.threads import get_num_threads
    image = synthetic_image()                                          # [1500, 2250, 3] uint8
    out = dict(imports_mb=vm_hwm_mb())
    t0 = time.perf_counter()
    predictor = SamPredictor(build_sam(checkpoint, config=PRESETS[model]))
    out["load_s"], out["loaded_mb"] = time.perf_counter() - t0, vm_hwm_mb()
    t0 = time.perf_counter()
    predictor.set_image(image)
    out["set_image_s"], out["set_image_mb"] = time.perf_counter() - t0, vm_hwm_mb()
    out["embedding"] = list(predictor.get_image_embedding().shape)
    out["threads"] = get_num_threads()
    out["torch_imported"] = "torch" in sys.modules
    return out


def save_random_checkpoint(path: str, model: str) -> None:
    import torch
    from minisam.config import PRESETS
    from minisam.reference.official import build_official, randomize
    torch.save(randomize(build_official(PRESETS[model]), 0).state_dict(), path)


def _child(args_list, env=None) -> str:
    cmd = [sys.executable, os.path.abspath(__file__), *args_list]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="official-format .pth (default: a randomized official model)")
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "micro"])
    ap.add_argument("--runs", type=int, default=2, help="fresh processes, one after another")
    ap.add_argument("--threads", type=int, help="NUMBA_NUM_THREADS and the BLAS thread variables of the runs")
    ap.add_argument("--worker", choices=["measure", "prepare"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "measure":
        print(json.dumps(measure(args.checkpoint, args.model)))
        return 0
    if args.worker == "prepare":
        save_random_checkpoint(args.checkpoint, args.model)
        return 0

    env = dict(os.environ)
    if args.threads:
        for var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = os.path.join(tmp, f"{args.model}_random.pth")
            _child(["--worker", "prepare", "--model", args.model, "--checkpoint", checkpoint])
        size_mb = os.path.getsize(checkpoint) / 2**20
        print(f"{args.model}: load + one set_image (1500x2250 image) in a fresh process; checkpoint "
              f"{checkpoint} ({size_mb:.0f} MB); peak RSS = VmHWM of /proc/self/status, MB = 2^20 bytes")
        worst = 0.0
        for run in range(1, args.runs + 1):
            r = json.loads(_child(["--worker", "measure", "--model", args.model, "--checkpoint", checkpoint],
                                  env).strip().splitlines()[-1])
            worst = max(worst, r["set_image_mb"])
            print(f"  run {run}: VmHWM after imports {r['imports_mb']:.0f} MB, after loading {r['loaded_mb']:.0f} MB "
                  f"({r['load_s']:.1f} s), after set_image {r['set_image_mb']:.0f} MB ({r['set_image_s']:.1f} s); "
                  f"{r['threads']} threads, embedding {r['embedding']}, torch imported: {r['torch_imported']}")
    print(f"peak RSS for load + one set_image: {worst:.0f} MB over {args.runs} runs (target <= {TARGET_MB} MB: "
          f"{'met' if worst <= TARGET_MB else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
