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

The two pools do meet in one place: after each call, OpenBLAS keeps its idle threads spinning
for 2^28 CPU cycles (~0.1 s) in case another call follows, and minisam follows most GEMMs with
a Numba kernel on the same cores. Measured on 2 cores (AMD EPYC, OpenBLAS 0.3.31 SkylakeX), a
Numba kernel that took 18 ms after a pause took 35 ms right after a GEMM, and vit_b's ``set_image``
3.74 s against 3.26 s with the spin shortened. ``OPENBLAS_THREAD_TIMEOUT=n`` sets the spin to
2^n cycles, and OpenBLAS reads it once, when NumPy loads it: so ``import minisam`` sets it to
:data:`OPENBLAS_SPIN_EXPONENT` if it is unset and NumPy is not imported yet (the ``minisam``
command, or a script that imports minisam first). Otherwise it is too late and nothing is
changed; :func:`thread_info` says which. A value you set yourself is never touched.

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

# 2^20 cycles, ~0.3-0.5 ms: back-to-back GEMMs still find the threads awake; a Numba kernel
# after a GEMM shares its cores for at most that long. vit_b set_image on the machine above:
# 3.74 s with OpenBLAS's default, 3.21-3.29 s with any exponent from 4 to 24.
OPENBLAS_SPIN_EXPONENT = 20
_spin_setting = "not set up"  # what shorten_blas_spin found, for thread_info


def shorten_blas_spin() -> str:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` (see the module docstring) if that can still take effect.

    Returns, and :func:`thread_info` reports, one of: ``"set by minisam"``, ``"set by the
    environment"`` (left alone), ``"not set: NumPy was imported first"`` (OpenBLAS's default spin).
    """
    global _spin_setting
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        _spin_setting = "set by the environment"
    elif "numpy" in sys.modules:
        _spin_setting = "not set: NumPy was imported first"
    else:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(OPENBLAS_SPIN_EXPONENT)
        _spin_setting = "set by minisam"
    return _spin_setting


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

    One chunk per thread; the calling thread runs the first. ``kernel`` must release the GIL for
    most of its time, a ``nogil`` Numba function (``minisam.kernels.jit.njit`` makes them so) or
    Python around NumPy's GEMMs (:func:`parallel_blas`), and its tasks must write disjoint output.
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


_controller = None  # the threadpoolctl controller of parallel_blas, found once (scanning the libraries is slow)


def _one_blas_thread():
    """A context that holds BLAS to one thread (threadpoolctl), or None without threadpoolctl."""
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def parallel_blas(tasks: Callable, n_tasks: int, *args) -> None:
    """:func:`parallel_for` for Python functions whose tasks are small BLAS GEMMs.

    Each of minisam's threads runs its chunk of tasks with BLAS held to one thread meanwhile
    (threadpoolctl), so that the two pools never nest: GEMMs too small to gain from BLAS's own
    threads run side by side instead. ``np.matmul`` releases the GIL, so the Python threads do
    run in parallel. With one thread, one task, or no threadpoolctl: a single call, BLAS
    threading its own GEMMs.
    """
    limiter = _one_blas_thread() if _kernel_threads > 1 and n_tasks > 1 else None
    if limiter is None:
        tasks(0, n_tasks, *args)
        return
    with limiter:
        parallel_for(tasks, n_tasks, *args)


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
    """{"blas": [{internal_api, version, architecture, num_threads, filepath}...], "numba": {...},
    "blas_spin": {"OPENBLAS_THREAD_TIMEOUT": value or None, "how": what :func:`shorten_blas_spin` found}}

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
    spin = dict(OPENBLAS_THREAD_TIMEOUT=os.environ.get("OPENBLAS_THREAD_TIMEOUT"), how=_spin_setting)
    return {"blas": blas, "numba": numba_info, "blas_spin": spin}
