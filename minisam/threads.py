"""One thread count for everything minisam runs in parallel: BLAS GEMMs and Numba kernels.

minisam alternates between plain NumPy float32 GEMMs (OpenBLAS or MKL threads) and Numba
row kernels (Numba's own pool); the two never nest, so both pools can use every core. But
they are two pools, with two settings, and setting one and forgetting the other is the usual
way to end up with 2 BLAS threads fighting 16 Numba threads on a laptop.
``set_num_threads(n)`` sets both:

- BLAS through ``threadpoolctl`` when it is installed (it changes the loaded library at run
  time); without it, the ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
  variables, which only take effect if set before NumPy is first imported;
- Numba with ``numba.set_num_threads`` (capped at ``NUMBA_NUM_THREADS``, the pool size fixed
  at start-up); before Numba is imported, ``NUMBA_NUM_THREADS``.

    from minisam.threads import set_num_threads, thread_info
    set_num_threads(2)
    thread_info()           # what each pool really uses, and which BLAS kernel runs
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_limiter = None  # the threadpoolctl limiter that holds the BLAS setting (kept alive on purpose)


def set_num_threads(n: Optional[int] = None) -> int:
    """Use ``n`` threads (default: all CPUs) for BLAS and for Numba. Returns the count set."""
    global _limiter
    n = int(n) if n is not None else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"set_num_threads needs n >= 1, got {n}")
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
    numba_info: Dict[str, object] = {}
    if "numba" in sys.modules:
        import numba
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            layer = "not started"
        numba_info = dict(num_threads=numba.get_num_threads(), pool=numba.config.NUMBA_NUM_THREADS, layer=layer)
    return {"blas": blas, "numba": numba_info}
