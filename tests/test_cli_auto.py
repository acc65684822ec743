"""``minisam auto`` writes the official scripts/amg.py layout (and an overlay)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from minisam.cli import main
from minisam.commands.auto import CSV_HEADER

FLAGS = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0.2",
         "--stability-score-offset", "0.05", "--box-nms-thresh", "1.0", "--crop-overlap-ratio", "0.5",
         "--no-progress"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    from test_automatic_mask_generator import ODD, PHOTO
    d = tmp_path_factory.mktemp("images")
    Image.fromarray(PHOTO).save(d / "photo.png")
    Image.fromarray(ODD).save(d / "odd.jpg", quality=95)
    (d / "notes.txt").write_text("not an image")  # skipped with a message, as the script does
    os.mkdir(d / "subfolder")  # folders are ignored
    return d


def test_folder_writes_official_layout(image_dir, tiny_checkpoints, tmp_path, capsys):
    cfg, ckpt = tiny_checkpoints["pad_window"]
    out = tmp_path / "out"
    assert main(["auto", str(image_dir), "--out", str(out), "--checkpoint", ckpt, *FLAGS]) == 0
    assert "Could not load" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["odd", "odd_overlay.png", "photo", "photo_overlay.png"]
    for name, src in [("photo", "photo.png"), ("odd", "odd.jpg")]:
        folder = out / name
        with open(folder / "metadata.csv") as f:
            text = f.read()
        assert text.split("\n")[0] == CSV_HEADER
        rows = list(csv.DictReader(text.split("\n")))
        assert len(rows) >= 10
        pngs = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
        assert pngs == sorted(f"{i}.png" for i in range(len(rows)))
        w, h = Image.open(image_dir / src).size
        for row in rows[:5]:
            mask = np.array(Image.open(folder / f"{row['id']}.png"))
            assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
            on = mask == 255
            assert int(row["area"]) == on.sum()
            ys, xs = np.nonzero(on)
            assert [int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_w", "bbox_h")] == \
                [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
            assert [int(row[k]) for k in ("crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h")] == [0, 0, w, h]
            float(row["predicted_iou"]), float(row["stability_score"]), float(row["point_input_x"])
        assert Image.open(out / f"{name}_overlay.png").size == (w, h)


def test_convert_to_rle_json_loads_with_pycocotools(image_dir, tiny_checkpoints, tmp_path):
    cfg, ckpt = tiny_checkpoints["pad_window"]
    out = tmp_path / "out"
    assert main(["auto", str(image_dir / "photo.png"), "--out", str(out), "--checkpoint", ckpt,
                 "--convert-to-rle", *FLAGS]) == 0
    assert sorted(os.listdir(out)) == ["photo.json", "photo_overlay.png"]
    with open(out / "photo.json") as f:
        records = json.load(f)
    assert len(records) >= 10
    for r in records:
        assert set(r) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords",
                          "stability_score", "crop_box"}
        rle = {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
        assert rle["size"] == [188, 160]
        assert mask_utils.area(rle) == r["area"] == mask_utils.decode(rle).sum()
        x, y, w, h = mask_utils.toBbox(rle)  # COCO's box is the pixel extent: ours + 1
        assert [x, y, w - 1, h - 1] == r["bbox"]


def test_errors_are_one_line(tiny_checkpoints, tmp_path, capsys):
    cfg, ckpt = tiny_checkpoints["pad_window"]
    assert main(["auto", str(tmp_path / "missing.png"), "--out", str(tmp_path), "--checkpoint", ckpt]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["auto", "x.png"])  # --out is required
