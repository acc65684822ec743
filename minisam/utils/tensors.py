"""Torch tensors in, torch tensors out, without torch as a dependency.

The official API takes and returns ``torch.Tensor`` in a few places that users copy from the
notebooks (``predict_torch``, ``set_torch_image``, ``apply_coords_torch``,
``apply_boxes_torch``, ``Sam.forward``). minisam computes on NumPy arrays; these helpers let
those methods accept either kind and hand back the kind they were given:

- :func:`is_tensor` recognizes a tensor by duck typing (its class lives in ``torch`` and it
  has ``detach``/``cpu``/``numpy``), so nothing here imports torch;
- :func:`to_numpy` gives the tensor's values as an ndarray (``detach().cpu().numpy()``: the
  same bits, no cast);
- :func:`like` turns an ndarray back into a tensor on the device of the tensor it stands in
  for, importing torch only then, when the caller has already imported it.

The values are never recomputed on the way in or out, so a method called with tensors gives
the same bits as the same method called with the arrays.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

import numpy as np


def is_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` (checked by its type's module and methods, never by importing torch)."""
    module = type(x).__module__ or ""
    return (module == "torch" or module.startswith("torch.")) and all(
        hasattr(x, name) for name in ("detach", "cpu", "numpy"))


def first_tensor(values: Iterable[Any]) -> Optional[Any]:
    """The first tensor among ``values`` (None when there is none): it decides the output kind."""
    for v in values:
        if is_tensor(v):
            return v
    return None


def to_numpy(x: Any) -> Any:
    """A tensor's values as an ndarray (bit-identical); anything else unchanged."""
    if is_tensor(x):
        return x.detach().cpu().numpy()
    return x


def like(template: Optional[Any], value: Any) -> Any:
    """``value`` (an ndarray) as a tensor on ``template``'s device when ``template`` is a tensor;
    ``value`` unchanged when ``template`` is None."""
    if template is None or value is None:
        return value
    torch = sys.modules.get("torch")
    if torch is None:  # a tensor exists, so torch is importable; reached only if it was imported oddly
        import torch  # noqa: F811
    out = torch.from_numpy(np.ascontiguousarray(value))
    return out if template.device.type == "cpu" else out.to(template.device)
