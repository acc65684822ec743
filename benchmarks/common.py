"""What the benchmarks share: worker subprocesses, timing, peak RSS, GEMM peak, BLAS report.

Every benchmark runs each side (minisam, official) in its own subprocess, so that each peak
RSS is its own and minisam's worker never imports torch. The parent talks to a worker over
its stdin/stdout, one JSON line per answer, and interleaves the timed runs of the two sides
so that a change in machine load hits both alike.

BLAS environment. These machines set ``OPENBLAS_CORETYPE`` (and sometimes
``OPENBLAS_L2_SIZE``), which forces an older OpenBLAS kernel (Haswell: ~half the float32
GEMM speed of the SkylakeX kernel on AVX-512 CPUs). Tests and CI leave them alone. A
benchmark unsets both **for the minisam worker only** (``--keep-blas-env`` keeps them); the
variables must be gone before NumPy loads OpenBLAS, hence in the worker's environment, not
set at run time. Every report then says which kernel ran (threadpoolctl ``architecture``).

OpenBLAS's idle spin. ``import minisam`` shortens it (``OPENBLAS_THREAD_TIMEOUT``, see
``minisam/kernels/threads.py``) when it is imported before NumPy. Every worker, of every side,
gets the same value (the parent's if set, else minisam's), so that no side runs with a setting
the other lacks; the header of each report prints it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
SPIN_VAR = "OPENBLAS_THREAD_TIMEOUT"


def spin_value() -> str:
    """The OPENBLAS_THREAD_TIMEOUT every worker gets: this process's, else minisam's default."""
    from minisam.kernels.threads import OPENBLAS_SPIN_EXPONENT
    return os.environ.get(SPIN_VAR) or str(OPENBLAS_SPIN_EXPONENT)


# --------------------------------------------------------------------------- measuring

def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_average() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def timed(fn):
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median_time(fn, repeats: int = 3, warmup: int = 1) -> dict:
    """Median wall time of ``repeats`` calls after ``warmup`` untimed ones: {"median", "times"}."""
    for _ in range(warmup):
        fn()
    times = [timed(fn)[1] for _ in range(max(1, repeats))]
    return {"median": statistics.median(times), "times": times}


def numpy_gemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """Float32 GEMM speed of NumPy's BLAS here ([n, n] x [n, n], median of ``repeats``)."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    return 2.0 * n ** 3 / median_time(lambda: a @ b, repeats)["median"] / 1e9


def torch_gemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """The same for torch's CPU GEMM."""
    import torch
    a = torch.randn(n, n)
    b = a.T.contiguous()
    return 2.0 * n ** 3 / median_time(lambda: a @ b, repeats)["median"] / 1e9


def minisam_env_info() -> dict:
    """BLAS kernel and thread counts of this (minisam) process, and what the BLAS env was."""
    from minisam.kernels.threads import thread_info
    info = thread_info()
    info["blas_env"] = {k: os.environ.get(k) for k in BLAS_ENV}
    return info


def describe_minisam(info: dict) -> list:
    lines = []
    for lib in info.get("blas", []):
        lines.append(f"BLAS: {lib.get('internal_api')} {lib.get('version')}, kernel {lib.get('architecture')}, "
                     f"{lib.get('num_threads')} threads ({os.path.basename(lib.get('filepath') or '')})")
    nb = info.get("numba", {})
    if nb:
        lines.append(f"Numba: {nb.get('num_threads')} threads (pool {nb.get('pool')}), layer {nb.get('layer')}")
    spin = info.get("blas_spin")
    if spin:
        lines.append(f"OpenBLAS idle spin in the minisam worker: {SPIN_VAR}={spin.get(SPIN_VAR)} ({spin.get('how')})")
    env = info.get("blas_env", {})
    set_vars = {k: v for k, v in env.items() if v is not None}
    lines.append("OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the minisam worker: "
                 + (", ".join(f"{k}={v}" for k, v in set_vars.items()) if set_vars else "unset (OpenBLAS default kernel)"))
    return lines


def describe_worker(info: dict) -> list:
    """What ran a worker, from its first answer: minisam's BLAS and Numba set-up, or the torch or
    onnxruntime version and threads."""
    if "onnxruntime" in info:
        return [f"onnxruntime {info['onnxruntime']}, {info['ort_threads']} intra-op threads, "
                f"{', '.join(info['providers'])}"]
    if "torch" in info:
        return [f"torch {info['torch']}, {info['torch_threads']} threads"]
    return describe_minisam(info)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_ending(rss=None, sides=None) -> None:
    """A report's last lines: the peak RSS of the two ``sides`` (when given) and the load average."""
    if sides:
        a, b = sides
        print(f"peak RSS {a}/{b}: {rss[a]:.0f} / {rss[b]:.0f} MB")
    print(f"{load_average()} at the end")


# --------------------------------------------------------------------------- workers

def add_worker_args(ap, workers=("minisam", "official", "prepare")) -> None:
    """The options every side-by-side benchmark shares: threads, BLAS env, and the hidden
    worker-mode flags the parent passes to its worker subprocesses."""
    import argparse
    ap.add_argument("--threads", type=int, default=None, help="BLAS/kernel/torch threads (default: all cores)")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for the minisam worker (default: unset)")
    ap.add_argument("--worker", choices=list(workers), help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)


def worker_env(side: str, threads=None, keep_blas_env: bool = False) -> dict:
    """Environment of a worker: thread counts, and the minisam worker without OPENBLAS_* unless kept."""
    env = dict(os.environ)
    if threads:
        for var in THREAD_ENV:
            env[var] = str(threads)
    if side == "minisam" and not keep_blas_env:
        for var in BLAS_ENV:
            env.pop(var, None)
    env[SPIN_VAR] = spin_value()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_worker(script: str, args: list, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, os.path.abspath(script), *args]
    return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def ask(proc: subprocess.Popen, line=None) -> dict:
    """Send one command line (if any) and read the worker's one-line JSON answer."""
    if line is not None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    out = proc.stdout.readline()
    if not out:
        raise RuntimeError(f"benchmark worker exited with {proc.wait()}")
    return json.loads(out)


def answer(obj) -> None:
    """Worker side of :func:`ask`."""
    print(json.dumps(obj), flush=True)


def stop(procs) -> None:
    for proc in procs:
        try:
            proc.stdin.close()
        except OSError:
            pass
        proc.wait()


@contextlib.contextmanager
def workers(script: str, sides, args_of, env_of):
    """One worker a side (``args_of(side)``, ``env_of(side)``), started one at a time so that their
    set-ups do not overlap. Yields (procs, info): the workers and each one's first answer; stops
    them all on the way out."""
    procs, info = {}, {}
    try:
        for side in sides:
            procs[side] = start_worker(script, args_of(side), env_of(side))
            info[side] = ask(procs[side])
        yield procs, info
    finally:
        stop(procs.values())


def interleaved(procs: dict, commands, repeats: int):
    """Each of ``commands`` sent to every worker in turn, ``repeats`` times over, so that a change in
    machine load hits every side alike. Yields (side, command, answer)."""
    for _ in range(repeats):
        for command in commands:
            for side, proc in procs.items():
                yield side, command, ask(proc, command)


def run_json(script: str, args: list, env: dict) -> dict:
    """Run a worker to completion; its last stdout line is its JSON report."""
    out = subprocess.run([sys.executable, os.path.abspath(script), *args], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- shared inputs

def synthetic_image(h: int = 1500, w: int = 2250):
    """A deterministic synthetic RGB uint8 photo-sized image [h, w, 3] (SA-1B images are ~1500x2250)."""
    import numpy as np
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)


def photo(h: int = 1500, w: int = 2250):
    """A real photo (matplotlib's grace_hopper.jpg sample), resized to [h, w, 3] uint8."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.array(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR))


def save_random_vit_b(path: str, seed: int = 0) -> None:
    """Randomized official vit_b (tests/official.py), saved as a torch state dict (needs torch)."""
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from official import build_official, randomize
    from minisam.config import VIT_B
    torch.save(randomize(build_official(VIT_B), seed).state_dict(), path)


def load_official_vit_b(path: str):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from official import build_official
    from minisam.config import VIT_B
    sam = build_official(VIT_B)
    sam.load_state_dict(torch.load(path))
    return sam.eval()


def header(title: str, threads) -> str:
    return (f"{title}\n{os.cpu_count()} CPUs, threads: {threads or 'all'}; {load_average()} at start; "
            f"python {sys.version.split()[0]}; {SPIN_VAR}={spin_value()} in every worker (OpenBLAS idle spin "
            f"2^{spin_value()} cycles)")


def fmt_times(times) -> str:
    return ", ".join(f"{t:.3f}" for t in times)
