"""The official notebooks run on minisam with only the import changed.

The code cells of ``predictor_example.ipynb`` and ``automatic_mask_generator_example.ipynb``
(vendored in ``tests/data/notebooks/``; its README says where they come from) run twice, each
time in a fresh subprocess (``tests/notebook_runner.py``): once with ``segment_anything``, once
with ``from segment_anything import`` (and ``segment_anything.utils.transforms``) changed to
``minisam``. The adaptations, the same on both sides and each asserted to apply:

- the checkpoint: the randomized vit_b the official package writes (``vit_b_checkpoint``), so
  ``sam_checkpoint`` and ``model_type`` name it;
- the images: ``images/truck.jpg``, ``groceries.jpg`` (at the notebook's sizes: its prompts
  are pixel coordinates) and ``dog.jpg`` are pictures the test makes (coloured discs and
  noise); ``dog.jpg`` is 320 x 240, a downscaled stand-in.

- ``plt.show()`` saves the figure to a file;
- ``device = "cpu"``;
- shell lines (``!...``) and the Colab badge cell (IPython display) are dropped.

Must hold: every cell that runs on the official side runs on minisam; every array the cells
leave behind (masks, scores, logits, prompts, tensors, ``Sam.__call__`` and generator
outputs) has the same shape on both sides; masks are equal on >= 99.99% of their pixels;
scores (``scores``, ``iou_predictions``, ``predicted_iou``, ``stability_score``) are within 1e-3;
other float arrays (the logits fed back, the transformed prompts) within 1e-3 x max|ref|, the
decoder's logit parity bound; integer arrays are identical, areas differ by at most the
differing pixels and boxes by at most 1 px.

The generator notebook runs on its own randomized vit_b (``regions_vit_b_checkpoint``). With
every weight drawn at its usual scale, each prompt's masks span the whole picture in a 2 x 2
checkerboard, so both generators keep one whole-image record and the comparison would test
next to nothing. The same draw, reshaped so that masks follow the picture's regions, keeps
several records with real boundaries on both sides (asserted):

- the encoder's residual branches (``attn.proj``, ``mlp.lin2``) and ``pos_embed`` scaled by
  0.1, so the embedding keeps each patch's colour instead of mixing twelve random blocks;
- each transposed convolution of ``output_upscaling`` with one kernel shared by its 2 x 2
  sub-pixel positions, so the upscaled features have no checkerboard;
- the hypernetworks' last layers scaled by 100, so logits sit far from 0 and masks pass the
  stability filter (a threshold offset of 1);
- the IoU head's last layer scaled by 0.01 with bias 0.95, so predicted IoUs pass 0.88.

The predictor notebook runs in the default suite (about 2 minutes). The generator notebook does
not fit the suite's budget, downscaled or not: the official generator upsamples every batch of
64 point prompts to 1024 x 1024 logits, and its two generators decode 3072 prompts over 6
encoder runs. Measured on 2 cores: about 20 minutes for both sides. It runs with
``pytest -m amg_notebook``, which ``.ci/run`` runs after the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE / "data" / "notebooks"
RUNNER = HERE / "notebook_runner.py"

MASK_AGREEMENT = 0.9999
SCORE_ATOL = 1e-3
LOGIT_RTOL = 1e-3  # the parity bound of the decoder's low-res logits (test_mask_decoder.py)
SCORES = ("predicted_iou", "stability_score", "scores", "iou_predictions")


def code_cells(name):
    with open(NOTEBOOKS / name) as f:
        nb = json.load(f)
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def adapt(cells, checkpoint, minisam: bool):
    """The allowed adaptations (module docstring), asserting that each applies where expected."""
    out, done = [], {"checkpoint": 0, "model_type": 0, "device": 0, "import": 0}
    for src in cells:
        if "from IPython.display import" in src:
            continue  # the Colab badge cell
        lines = [ln for ln in src.split("\n") if not ln.lstrip().startswith(("!", "%"))]
        src = "\n".join(lines)
        for old, new, key in ((
                'sam_checkpoint = "sam_vit_h_4b8939.pth"', f"sam_checkpoint = {str(checkpoint)!r}", "checkpoint"),
                ('model_type = "vit_h"', 'model_type = "vit_b"', "model_type"),
                ('device = "cuda"', 'device = "cpu"', "device")):
            done[key] += src.count(old)
            src = src.replace(old, new)
        src = src.replace("plt.show()", "_save_figure()")
        if "from segment_anything" in src:
            done["import"] += 1
            if minisam:
                src = src.replace("from segment_anything.utils.transforms import",
                                  "from minisam.utils.transforms import")
                src = src.replace("from segment_anything import", "from minisam import")
        out.append(src)
    assert all(n >= 1 for n in done.values()), f"an adaptation did not apply: {done}"
    assert not minisam or not any("segment_anything" in s for s in out)
    return out


def make_photo(h, w, seed=0):
    """A stand-in photo: blobs of colour with soft and hard edges, and noise (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.full((h, w, 3), 40.0)
    for _ in range(6):
        cy, cx, r = rng.random(3) * [0.8, 1.0, 0.25] + [0.1, 0.0, 0.08]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        img[inside] = rng.random(3) * 215 + 40
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def run_side(cells, workdir: Path, images):
    """Run the cells in ``workdir``, whose images/ holds ``images`` ({file name: RGB uint8}) as JPEGs."""
    import cv2
    (workdir / "images").mkdir(parents=True)
    for name, image in images.items():
        cv2.imwrite(str(workdir / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = workdir / "out"
    out.mkdir()
    (workdir / "cells.json").write_text(json.dumps(cells))
    env = dict(os.environ, MPLBACKEND="Agg")
    res = subprocess.run([sys.executable, str(RUNNER), str(workdir / "cells.json"), str(out)], cwd=workdir,
                         capture_output=True, text=True, timeout=1500, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    with np.load(out / "values.npz") as z:
        values = {k: z[k] for k in z.files}
    return status, values, res.stdout


def compare_runs(official, ours, label):
    (st_ref, val_ref, _), (st_got, val_got, _) = official, ours
    ran = [c["cell"] for c in st_ref["cells"] if c["ok"]]
    failed_here = [(c["cell"], c.get("error")) for c in st_got["cells"] if c["cell"] in ran and not c["ok"]]
    assert not failed_here, f"{label}: cells that run officially fail on minisam: {failed_here}"
    print(f"\n[{label}] official: {len(ran)} of {len(st_ref['cells'])} cells ran; "
          f"failed officially: {[(c['cell'], c['error']) for c in st_ref['cells'] if not c['ok']]}")
    keys = [k for k in val_ref if int(k.split(":")[0]) in ran]
    missing = [k for k in keys if k not in val_got]
    assert not missing, f"{label}: minisam's run lacks {missing}"
    for k in keys:
        r, g = val_ref[k], val_got[k]
        assert r.shape == g.shape, f"{label} {k}: shape {g.shape} != official {r.shape}"
        field = k.split(":", 1)[1].rsplit(".", 1)[-1]
        if r.dtype == np.bool_:
            agree = float((r == g).mean()) if r.size else 1.0
            print(f"  {k}: {r.shape} masks agree on {agree:.7f} of pixels")
            assert agree >= MASK_AGREEMENT, f"{label} {k}: masks agree on only {agree:.6f} of pixels"
        elif field in SCORES:
            err = float(np.abs(r - g).max()) if r.size else 0.0
            print(f"  {k}: max |diff| {err:.2e}")
            assert err <= SCORE_ATOL, f"{label} {k}: scores differ by {err:.3e}"
        elif field == "area":
            seg = val_ref[k.replace(".area", ".segmentation")]
            allowed = (1 - MASK_AGREEMENT) * seg[0].size
            assert np.abs(r.astype(np.int64) - g).max() <= allowed, f"{label} {k}: areas differ"
        elif field == "bbox":
            assert np.abs(r - g).max() <= 1, f"{label} {k}: boxes differ by more than 1 px"
        elif np.issubdtype(r.dtype, np.floating):  # logits fed back, transformed prompts
            err = float(np.abs(r - g).max() / max(np.abs(r).max(), 1e-30)) if r.size else 0.0
            print(f"  {k}: {r.dtype} {r.shape} max |diff| / max |ref| {err:.2e}")
            assert err <= LOGIT_RTOL, f"{label} {k}: values differ by {err:.3e} x max"
        else:
            assert np.array_equal(r, g), f"{label} {k}: differs"


def follow_regions(state):
    """The randomized vit_b state dict reshaped so that masks follow the picture's regions
    (module docstring); a new dict of the same keys, shapes and dtypes."""
    import torch
    out = dict(state)
    for key, value in state.items():
        if key.startswith("image_encoder.blocks.") and key.endswith(("attn.proj.weight", "mlp.lin2.weight")):
            out[key] = value * 0.1
    out["image_encoder.pos_embed"] = state["image_encoder.pos_embed"] * 0.1
    for i in (0, 3):
        w = state[f"mask_decoder.output_upscaling.{i}.weight"]                     # [in, out, 2, 2]
        out[f"mask_decoder.output_upscaling.{i}.weight"] = w.mean(dim=(2, 3), keepdim=True).expand_as(w).clone()
    for key in state:
        if key.startswith("mask_decoder.output_hypernetworks_mlps.") and key.endswith("layers.2.weight"):
            out[key] = state[key] * 100.0
    head = "mask_decoder.iou_prediction_head.layers.2"
    out[head + ".weight"] = state[head + ".weight"] * 0.01
    out[head + ".bias"] = torch.full_like(state[head + ".bias"], 0.95)
    return out


@pytest.fixture(scope="module")
def regions_vit_b_checkpoint(vit_b_checkpoint, checkpoint_dir):
    """The randomized vit_b of ``vit_b_checkpoint`` reshaped by ``follow_regions``, saved by torch."""
    import torch
    path = Path(checkpoint_dir) / "sam_vit_b_random_regions.pth"
    if not path.exists():
        torch.save(follow_regions(torch.load(vit_b_checkpoint[1], weights_only=True)), path)
    return path


def test_follow_regions_changes_only_what_it_says():
    import torch
    gen = torch.Generator().manual_seed(0)
    state = {"image_encoder.pos_embed": torch.randn(1, 4, 4, 8, generator=gen),
             "image_encoder.blocks.0.attn.proj.weight": torch.randn(8, 8, generator=gen),
             "image_encoder.blocks.0.attn.qkv.weight": torch.randn(24, 8, generator=gen),
             "image_encoder.blocks.0.mlp.lin2.weight": torch.randn(8, 16, generator=gen),
             "mask_decoder.output_upscaling.0.weight": torch.randn(8, 4, 2, 2, generator=gen),
             "mask_decoder.output_upscaling.3.weight": torch.randn(4, 2, 2, 2, generator=gen),
             "mask_decoder.output_hypernetworks_mlps.1.layers.2.weight": torch.randn(2, 8, generator=gen),
             "mask_decoder.iou_prediction_head.layers.2.weight": torch.randn(4, 8, generator=gen),
             "mask_decoder.iou_prediction_head.layers.2.bias": torch.randn(4, generator=gen)}
    out = follow_regions(state)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {k: (v.shape, v.dtype) for k, v in state.items()}
    assert torch.equal(out["image_encoder.blocks.0.attn.qkv.weight"], state["image_encoder.blocks.0.attn.qkv.weight"])
    lin2 = "image_encoder.blocks.0.mlp.lin2.weight"
    assert torch.allclose(out[lin2], 0.1 * state[lin2])
    up = out["mask_decoder.output_upscaling.0.weight"]
    assert torch.equal(up[..., 0, 0], up[..., 1, 1]) and torch.equal(up[..., 0, 1], up[..., 1, 0])
    assert torch.allclose(up[..., 0, 0], state["mask_decoder.output_upscaling.0.weight"].mean(dim=(2, 3)))
    assert torch.equal(out["mask_decoder.iou_prediction_head.layers.2.bias"], torch.full((4,), 0.95))


@pytest.mark.amg_notebook
def test_automatic_mask_generator_notebook(regions_vit_b_checkpoint, tmp_path):
    checkpoint = regions_vit_b_checkpoint
    cells = code_cells("automatic_mask_generator_example.ipynb")
    images = {"dog.jpg": make_photo(240, 320)}
    official = run_side(adapt(cells, checkpoint, minisam=False), tmp_path / "run_official", images)
    ours = run_side(adapt(cells, checkpoint, minisam=True), tmp_path / "run_minisam", images)
    print(official[2][-1500:], ours[2][-1500:], sep="\n--- minisam ---\n")
    compare_runs(official, ours, "automatic_mask_generator_example")
    # The notebook's two generate calls ran on the official side and left records worth comparing:
    # several masks each, and some with a boundary inside the picture.
    for name in ("masks", "masks2"):
        found = [k for k in official[1] if k.split(":", 1)[1] == f"{name}.segmentation"]
        assert found, f"the official run left no {name}: {sorted(official[1])}"
        segmentations = official[1][found[-1]]                          # [n, H, W]
        covered = segmentations.mean(axis=(1, 2))                       # [n] share of the picture
        print(f"{name}: {len(covered)} records covering {np.round(covered, 3).tolist()} of the picture")
        assert len(covered) >= 2 and ((covered > 0.01) & (covered < 0.99)).any(), \
            f"{name}: the official generator kept only trivial records ({covered.tolist()})"


@pytest.mark.vit_b
def test_predictor_notebook(vit_b_checkpoint, tmp_path):
    _, checkpoint = vit_b_checkpoint
    cells = code_cells("predictor_example.ipynb")
    images = {"truck.jpg": make_photo(1200, 1800, seed=1), "groceries.jpg": make_photo(750, 1000, seed=2)}
    official = run_side(adapt(cells, checkpoint, minisam=False), tmp_path / "run_official", images)
    ours = run_side(adapt(cells, checkpoint, minisam=True), tmp_path / "run_minisam", images)
    compare_runs(official, ours, "predictor_example")
    for name in ("masks", "scores", "logits", "batched_output.0.masks", "batched_output.1.iou_predictions"):
        assert any(k.split(":", 1)[1] == name for k in official[1]), f"the official run left no {name}"


def test_comparison_catches_each_kind_of_difference():
    """compare_runs fails on a cell that fails only on minisam, a flipped mask pixel beyond the
    agreement bound, a score off by more than 1e-3, an array of another shape, and a changed
    integer array; and passes on identical runs."""
    rng = np.random.default_rng(0)
    masks = rng.random((3, 100, 100)) < 0.5
    values = {"3:masks": masks, "3:scores": np.array([0.5, 0.7, 0.9], np.float32),
              "3:logits": rng.normal(size=(3, 8, 8)).astype(np.float32), "2:input_point": np.array([[5, 7]])}
    status = {"cells": [{"cell": i, "ok": True} for i in range(4)]}
    ref = (status, values, "")
    compare_runs(ref, (status, dict(values), ""), "identical")

    def changed(**edits):
        v = dict(values)
        v.update(edits)
        return (status, v, "")

    flipped = masks.copy()
    flipped[0, :2, :] ^= True                                    # 200 of 30000 pixels
    for label, got in (
            ("mask", changed(**{"3:masks": flipped})),
            ("score", changed(**{"3:scores": values["3:scores"] + np.float32(2e-3)})),
            ("logits", changed(**{"3:logits": values["3:logits"] * np.float32(1.01)})),
            ("shape", changed(**{"3:masks": masks[:2]})),
            ("points", changed(**{"2:input_point": np.array([[5, 8]])})),
            ("cell", ({"cells": status["cells"][:3] + [{"cell": 3, "ok": False, "error": "X"}]}, values, ""))):
        with pytest.raises(AssertionError):
            compare_runs(ref, got, label)
