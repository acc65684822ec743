"""Run a notebook's code cells in order, headless, and record what each cell produced.

``python notebook_runner.py CELLS.json OUT_DIR`` executes the cells (a JSON list of source
strings) in one namespace, as Jupyter does, and goes on after a cell that raises. It writes
``OUT_DIR/status.json`` (per cell: ran, or the exception) and ``OUT_DIR/values.npz``: after
each cell, every array-like value of the namespace that is new or rebound, keyed
``"<cell>:<name>"``; torch tensors as their NumPy values, and the automatic mask generator's
record lists as one array per field (``"<cell>:<name>.segmentation"``, ...) and
``Sam.__call__``'s output list per image and key (``"<cell>:<name>.0.masks"``).

The cells call ``_save_figure()`` where the notebook has ``plt.show()``: it writes the
current figure to ``OUT_DIR/figure_<n>.png`` and closes it.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RECORD_FIELDS = ("segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box")


def snapshot(value):
    """{suffix: ndarray} for an array, a tensor or a list of mask records; None for anything else."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"": value}
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return {"": value.detach().cpu().numpy()}
    if isinstance(value, list) and value and all(isinstance(r, dict) and "segmentation" in r for r in value):
        return {f".{k}": np.stack([np.asarray(r[k]) for r in value]) for k in RECORD_FIELDS if k in value[0]}
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):  # Sam.__call__'s output
        out = {}
        for i, record in enumerate(value):
            for k, v in record.items():
                arrays = snapshot(v)
                if arrays is not None:
                    out.update({f".{i}.{k}{suffix}": a for suffix, a in arrays.items()})
        return out or None
    return None


def main(cells_path: str, out_dir: str) -> int:
    with open(cells_path) as f:
        cells = json.load(f)
    figures = []

    def save_figure():
        path = os.path.join(out_dir, f"figure_{len(figures)}.png")
        plt.gcf().savefig(path, dpi=20)
        plt.close("all")
        figures.append(path)

    namespace = {"__name__": "__main__", "_save_figure": save_figure}
    status, values, seen = [], {}, {}
    for i, source in enumerate(cells):
        try:
            exec(compile(source, f"<cell {i}>", "exec"), namespace)
            status.append({"cell": i, "ok": True})
        except Exception as exc:  # a failing cell is a result, as in Jupyter: record it and go on
            status.append({"cell": i, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()[-3000:]})
        plt.close("all")
        for name, value in list(namespace.items()):
            if name.startswith("_") or seen.get(name) is value:
                continue
            arrays = snapshot(value)
            if arrays is not None:
                seen[name] = value
                values.update({f"{i}:{name}{suffix}": a for suffix, a in arrays.items()})
            elif isinstance(value, list) and not value:
                seen[name] = value
                values[f"{i}:{name}.count"] = np.int64(0)
    np.savez(os.path.join(out_dir, "values.npz"), **values)
    with open(os.path.join(out_dir, "status.json"), "w") as f:
        json.dump({"cells": status, "figures": len(figures)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
