"""Numba set-up shared by every kernel module.

``cache=True`` keeps compiled kernels between processes. Numba writes its cache next to
the source file (``__pycache__``) and fails with "no locator available" when that folder
is read-only (a system-wide install, a container without HOME). We check that once here
and, when neither ``NUMBA_CACHE_DIR`` nor the package folder is writable, point Numba at a
user cache folder before it is imported.

Every kernel on the parity path is compiled with ``fastmath=False`` (the default here):
fastmath reorders float sums and swaps in approximate transcendentals. Kernels are serial
and ``nogil``; ``minisam.kernels.threads.parallel_for`` runs them on several threads.

Two LLVM operations Numba does not expose are given here as intrinsics, each one LLVM
instruction that vectorizes like any other:
- ``bits_float``: the float32 with a given bit pattern (``bitcast``), where a scalar ``view``
  would need a trip through memory;
- ``fma``: the fused multiply-add ``a * b + c`` with one rounding (``llvm.fma.f32``, IEEE 754
  fusedMultiplyAdd). It is written out where it is used, so the result does not depend on
  what the compiler chooses; that is what fastmath's ``contract`` flag would not guarantee.
  CPUs without FMA units (x86 before Haswell / Piledriver) get the same result from libm's
  ``fmaf``, slower.
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
from llvmlite import ir  # noqa: E402
from numba import types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402


def njit(*args, **kwargs):
    """``numba.njit`` with ``cache=True``, ``fastmath=False`` and ``nogil=True`` unless told otherwise
    (``nogil``: ``minisam.kernels.threads.parallel_for`` runs kernels on several Python threads at once)."""
    kwargs.setdefault("cache", True)
    kwargs.setdefault("fastmath", False)
    kwargs.setdefault("nogil", True)
    return numba.njit(*args, **kwargs)


@intrinsic
def bits_float(typingctx, i):
    """The float32 whose bit pattern is the low 32 bits of the integer ``i``."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if i.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif i.bitwidth < 32:
            v = builder.sext(v, ir.IntType(32)) if i.signed else builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(i), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """float32 ``a * b + c`` rounded once (IEEE 754 fusedMultiplyAdd)."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)
    return types.float32(types.float32, types.float32, types.float32), codegen
