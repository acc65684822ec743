"""Numba set-up shared by every kernel module.

``cache=True`` keeps compiled kernels between processes. Numba writes its cache next to
the source file (``__pycache__``) and fails with "no locator available" when that folder
is read-only (a system-wide install, a container without HOME). We check that once here
and, when neither ``NUMBA_CACHE_DIR`` nor the package folder is writable, point Numba at a
user cache folder before it is imported.

Every kernel on the parity path is compiled with ``fastmath=False`` (the default here):
fastmath reorders float sums and swaps in approximate transcendentals. Kernels are serial
and ``nogil``; ``minisam.kernels.threads.parallel_for`` runs them on several threads.
"""

from __future__ import annotations

import os
import tempfile


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def _ensure_cache_dir() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    if _writable(here):
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (os.path.join(base, "minisam", "numba"),
                      os.path.join(tempfile.gettempdir(), f"minisam-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")):
        if _writable(candidate):
            os.environ["NUMBA_CACHE_DIR"] = candidate
            return


_ensure_cache_dir()

import numba  # noqa: E402  (after the cache dir is settled)


def njit(*args, **kwargs):
    """``numba.njit`` with ``cache=True``, ``fastmath=False`` and ``nogil=True`` unless told otherwise
    (``nogil``: ``minisam.kernels.threads.parallel_for`` runs kernels on several Python threads at once)."""
    kwargs.setdefault("cache", True)
    kwargs.setdefault("fastmath", False)
    kwargs.setdefault("nogil", True)
    return numba.njit(*args, **kwargs)

