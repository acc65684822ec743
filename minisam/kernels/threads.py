"""One thread count for everything minisam runs in parallel: BLAS GEMMs and Numba kernels.

minisam alternates between plain NumPy float32 GEMMs (OpenBLAS or MKL threads) and Numba
row kernels (run by :func:`parallel_for` on a small pool of Python threads: the kernels are
compiled ``nogil``, so the threads run them truly in parallel); the two never nest, so both
pools can use every core. But they are two pools, with two settings, and setting one and
forgetting the other is the usual way to end up with 2 BLAS threads fighting 16 kernel
threads on a laptop. ``set_num_threads(n)`` sets both:

- BLAS through ``threadpoolctl`` when it is installed (it changes the loaded library at run
  time); without it, the ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
  variables, which only take effect if set before NumPy is first imported;
- the kernel threads of :func:`parallel_for` (default: ``NUMBA_NUM_THREADS`` if set, else
  every CPU); Numba's own setting too, for any code that uses Numba's pool.

Why not Numba's ``parallel=True``: its extra compiler passes doubled the first-run compile
time (an empty Numba cache: right after installing), for the same per-task arithmetic.

    from minisam.kernels.threads import set_num_threads, thread_info
    set_num_threads(2)
    thread_info()           # what each pool really uses, and which BLAS kernel runs
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable, Dict, List, Optional

_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_limiter = None  # the threadpoolctl limiter that holds the BLAS setting (kept alive on purpose)


def _default_threads() -> int:
    try:
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


_kernel_threads = _default_threads()
_pool = None
_pool_lock = threading.Lock()


def get_num_threads() -> int:
    """Threads :func:`parallel_for` uses (set by :func:`set_num_threads`)."""
    return _kernel_threads


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < _kernel_threads - 1:
            from concurrent.futures import ThreadPoolExecutor
            _pool = ThreadPoolExecutor(max_workers=max(1, _kernel_threads - 1), thread_name_prefix="minisam")
        return _pool


def parallel_for(kernel: Callable, n_tasks: int, *args) -> None:
    """Run ``kernel(lo, hi, *args)`` over the tasks ``[0, n_tasks)``, split in contiguous chunks.

    One chunk per thread; the calling thread runs the first. ``kernel`` must be a ``nogil``
    Numba function (``minisam.kernels.jit.njit`` makes them so) whose tasks write disjoint output.
    With one thread, or a single task, it is one plain call.
    """
    threads = min(_kernel_threads, n_tasks)
    if threads <= 1:
        kernel(0, n_tasks, *args)
        return
    bounds = [n_tasks * i // threads for i in range(threads + 1)]
    pool = _executor()
    futures = [pool.submit(kernel, bounds[i], bounds[i + 1], *args) for i in range(1, threads)]
    try:
        kernel(bounds[0], bounds[1], *args)
    finally:   # every chunk finishes before we return or raise; the calling thread's error wins
        errors = [f.exception() for f in futures]
    for err in errors:
        if err is not None:
            raise err


def set_num_threads(n: Optional[int] = None) -> int:
    """Use ``n`` threads (default: all CPUs) for BLAS and for the kernels. Returns the count set."""
    global _limiter, _kernel_threads
    n = int(n) if n is not None else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"set_num_threads needs n >= 1, got {n}")
    _kernel_threads = n
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        _limiter = threadpool_limits(limits=n, user_api="blas")
    elif "numpy" not in sys.modules:
        for var in _BLAS_VARS:
            os.environ[var] = str(n)
    if "numba" in sys.modules:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    return n


def thread_info() -> Dict[str, object]:
    """{"blas": [{internal_api, version, architecture, num_threads, filepath}...], "numba": {...}}

    ``blas`` is empty without threadpoolctl. ``architecture`` is the BLAS kernel OpenBLAS chose
    for this CPU (e.g. SkylakeX, Haswell): ``OPENBLAS_CORETYPE`` overrides it.
    """
    blas: List[dict] = []
    try:
        from threadpoolctl import threadpool_info
        blas = [{k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                          "threading_layer", "filepath")}
                for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except ImportError:
        pass
    numba_info = dict(num_threads=_kernel_threads, pool=_kernel_threads,
                      layer="minisam.kernels.threads.parallel_for (Python threads, nogil Numba kernels)")
    return {"blas": blas, "numba": numba_info}
