"""The parity harness: the official PyTorch SAM at any configuration, randomized, traced.

``build_official``, ``randomize`` and ``record`` live in :mod:`minisam.reference.official` (``minisam
parity`` and the training script use them too) and are re-exported here.

- :func:`build_official` builds ``segment_anything.modeling.Sam`` from a
  :class:`minisam.config.SamConfig`, exactly as ``build_sam._build_sam`` does for the presets.
- :func:`randomize` overwrites **every** parameter and buffer with seeded values at sensible
  scales. The official init leaves ``rel_pos`` at zero and LayerNorms at 1/0, which would
  hide bugs in exactly the places where reimplementations go wrong.
- :func:`record` runs a callable with forward hooks on every named module and returns the
  outputs keyed by the official module path (``image_encoder.blocks.3``). A module called
  more than once gets ``path#1``, ``path#2``, ... for the later calls.
- :func:`compare` checks minisam's trace against the official one key by key, prints the
  max absolute and relative error of each, and fails naming the keys that are off.

This module imports torch; minisam itself never does.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional

import numpy as np
import torch

from minisam.config import SamConfig  # noqa: F401
from minisam.reference.official import build_official, randomize, record  # noqa: F401  (re-exported for the tests)

_DEVICE: Optional[torch.device] = None


def torch_device() -> torch.device:
    """The device the official side runs on: ``--torch-device`` (auto = CUDA when present)."""
    global _DEVICE
    if _DEVICE is None:
        choice = os.environ.get("MINISAM_TORCH_DEVICE", "auto")
        if choice == "auto":
            choice = "cuda" if torch.cuda.is_available() else "cpu"
        _DEVICE = torch.device(choice)
        # Full fp32 on CUDA: TF32 would make the reference itself ~1e-3 off.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return _DEVICE


def rel_err(ref: np.ndarray, got: np.ndarray):
    """(max |got - ref|, that divided by max |ref|)."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        raise AssertionError(f"shape {got.shape} != reference {ref.shape}")
    if ref.size == 0:
        return 0.0, 0.0
    abs_err = float(np.max(np.abs(got - ref)))
    scale = float(np.max(np.abs(ref)))
    return abs_err, abs_err / scale if scale > 0 else abs_err


def compare(ref_trace: Dict[str, object], our_trace: Dict[str, object], rtol: float,
            keys: Optional[Iterable[str]] = None, require: Iterable[str] = (), label: str = ""):
    """Compare traces key by key: max|ours - ref| <= rtol * max|ref| for each key.

    ``keys`` defaults to every key minisam recorded (each must exist in the reference).
    ``require`` lists keys that must be present in minisam's trace. Prints one line per key
    (max abs error, relative error) and raises naming every key over tolerance.
    Returns ``{key: (abs_err, rel_err)}``.
    """
    missing = [k for k in require if k not in our_trace]
    if missing:
        raise AssertionError(f"{label}: minisam trace lacks {missing}")
    keys = list(our_trace) if keys is None else list(keys)
    results, bad = {}, []
    dev = torch_device()
    print(f"\n[parity {label}] torch {torch.__version__} on {dev}; tolerance {rtol:g} x max|ref|")
    for k in keys:
        if k not in ref_trace:
            raise AssertionError(f"{label}: reference trace has no key {k!r}")
        ref, got = ref_trace[k], our_trace[k]
        pairs = list(zip(ref, got)) if isinstance(ref, (tuple, list)) else [(ref, got)]
        worst = (0.0, 0.0)
        for r, g in pairs:
            a, rel = rel_err(r, g)
            worst = max(worst, (a, rel), key=lambda t: t[1])
        results[k] = worst
        ok = worst[1] <= rtol
        print(f"  {k:<60s} {str(np.shape(pairs[0][0])):<22s} abs {worst[0]:.3e}  rel {worst[1]:.3e}  {'ok' if ok else 'FAIL'}")
        if not ok:
            bad.append(k)
    if bad:
        raise AssertionError(f"{label}: over tolerance {rtol:g}: {bad}")
    return results


def assert_same_params(ref_params: Dict[str, object], our_params: Dict[str, object], label: str) -> None:
    """minisam gives a gradient for every parameter of the official module, and for no other."""
    missing = sorted(set(ref_params) - set(our_params))
    assert not missing, f"{label}: minisam gives no gradient for {missing}"
    extra = sorted(set(our_params) - set(ref_params))
    assert not extra, f"{label}: minisam gives gradients for parameters the module lacks: {extra}"


def record_grads(model, prefix: str = ""):
    """Forward hooks that keep every named submodule's output tensors and ``retain_grad`` them.

    Returns ``(outputs, remove)``: after the forward and ``backward()`` of the caller,
    ``grads_of(outputs)`` maps official module paths (``prefix`` prepended) to numpy copies of the
    gradients of those outputs, in their own dtype; ``remove()`` takes the hooks off. A tensor that
    several modules return (a block's queries are its ``norm3`` output) is the same tensor, so
    each key holds the total gradient it received.
    """
    outputs: Dict[str, object] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(_m, _inp, out, key=prefix + name):
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    t.retain_grad()
            outputs[key] = out
        handles.append(mod.register_forward_hook(hook))

    def remove():
        for h in handles:
            h.remove()
    return outputs, remove


def grads_of(outputs: Dict[str, object]) -> Dict[str, object]:
    """The ``.grad`` of each recorded output as numpy (a tuple for tuple outputs); outputs that got
    no gradient (not on the path to the loss) are left out."""
    def one(t):
        return None if t.grad is None else t.grad.detach().cpu().numpy()
    result = {}
    for key, out in outputs.items():
        if isinstance(out, (tuple, list)):
            gs = tuple(one(t) for t in out)
            if all(g is not None for g in gs):
                result[key] = gs
        elif isinstance(out, torch.Tensor) and one(out) is not None:
            result[key] = one(out)
    return result
