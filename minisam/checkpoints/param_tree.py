"""Flat state dicts <-> nested parameter dicts.

A checkpoint is a flat mapping ``"image_encoder.blocks.3.attn.qkv.weight" -> array``.
The model code reads parameters as a nested dict keyed exactly like the checkpoint:
``p["image_encoder"]["blocks"][3]["attn"]["qkv"]["weight"]``. Numeric path parts (the
indexes of ``nn.ModuleList`` / ``nn.Sequential`` children) become ``int`` keys, so the
code reads ``p["blocks"][3]`` as in the official module tree.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np


def _key(part: str):
    return int(part) if part.isdigit() else part


def nest(flat: Mapping[str, np.ndarray]) -> Dict[Any, Any]:
    """``{"a.0.b": x}`` -> ``{"a": {0: {"b": x}}}``."""
    tree: Dict[Any, Any] = {}
    for name, value in flat.items():
        parts = name.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(_key(part), {})
            if not isinstance(node, dict):
                raise ValueError(f"state dict key {name!r} nests below a tensor")
        leaf = _key(parts[-1])
        if leaf in node:
            raise ValueError(f"state dict key {name!r} is both a tensor and a module")
        node[leaf] = value
    return tree


def flatten(tree: Mapping[Any, Any], prefix: str = "") -> Dict[str, np.ndarray]:
    """Inverse of :func:`nest`."""
    flat: Dict[str, np.ndarray] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, name + "."))
        else:
            flat[name] = v
    return flat
