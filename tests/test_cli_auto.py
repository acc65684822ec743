"""``minisam auto`` writes the official scripts/amg.py layout (and an overlay), resumes an
interrupted folder run, and never overwrites outputs without ``--force``."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from minisam.cli import main
from minisam.cli.auto import CSV_HEADER

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


# --- Interrupted folder runs resume; nothing is overwritten without --force -------------------

def _tree(folder):
    """{relative path: bytes} of every file under folder (hidden ones included)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


def _assert_complete(out, name):
    """name's folder holds metadata.csv and exactly one PNG per row; its overlay is a PNG."""
    with open(out / name / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 1
    assert sorted(os.listdir(out / name)) == sorted([f"{i}.png" for i in range(len(rows))] + ["metadata.csv"])
    assert (out / f"{name}_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def three_images(tmp_path_factory):
    from test_automatic_mask_generator import ODD, PHOTO
    d = tmp_path_factory.mktemp("three")
    for name, img in [("a", PHOTO), ("b", ODD), ("c", PHOTO[::-1, ::-1])]:
        Image.fromarray(np.ascontiguousarray(img)).save(d / f"{name}.png")
    return d


def test_interrupted_run_keeps_finished_images_and_resumes(three_images, tiny_checkpoints, tmp_path,
                                                            monkeypatch, capsys):
    import minisam.cli.auto as auto
    cfg, ckpt = tiny_checkpoints["pad_window"]
    out = tmp_path / "out"
    argv = ["auto", str(three_images), "--out", str(out), "--checkpoint", ckpt, *FLAGS]
    real_write = auto.write_masks_to_folder
    calls = []

    def interrupted_on_second_image(masks, path):
        calls.append(path)
        if len(calls) == 2:  # Ctrl-C halfway through writing image b's masks
            real_write(masks[:3], path)
            raise KeyboardInterrupt
        real_write(masks, path)

    monkeypatch.setattr(auto, "write_masks_to_folder", interrupted_on_second_image)
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    # Image a is complete; of b nothing exists, under a final name or a partial one.
    assert sorted(os.listdir(out)) == ["a", "a_overlay.png"]
    _assert_complete(out, "a")
    finished_a = _tree(out)

    # A killed run (no chance to clean up) leaves a partial folder: the re-run replaces it.
    leftover = out / auto.partial_name("b")  # out/.b.minisam-partial
    os.makedirs(leftover)
    (leftover / "0.png").write_bytes(b"junk")
    monkeypatch.setattr(auto, "write_masks_to_folder", real_write)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "skipped: already done" in printed and "1 skipped" in printed and "2 image(s) segmented" in printed
    assert sorted(os.listdir(out)) == ["a", "a_overlay.png", "b", "b_overlay.png", "c", "c_overlay.png"]
    for name in "abc":
        _assert_complete(out, name)
    after = _tree(out)
    assert {k: v for k, v in after.items() if k.startswith("a")} == finished_a  # a was not redone

    # A third run has nothing left to do.
    assert main(argv) == 0
    assert "0 image(s) segmented, 3 skipped" in capsys.readouterr().out
    assert _tree(out) == after


def test_generator_interrupted_leaves_no_output(three_images, tiny_checkpoints, tmp_path, monkeypatch):
    from minisam.automatic_mask_generator import SamAutomaticMaskGenerator
    cfg, ckpt = tiny_checkpoints["pad_window"]
    out = tmp_path / "out"
    real_generate = SamAutomaticMaskGenerator.generate
    calls = []

    def generate(self, image):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(self, image)

    monkeypatch.setattr(SamAutomaticMaskGenerator, "generate", generate)
    assert main(["auto", str(three_images), "--out", str(out), "--checkpoint", ckpt, "--convert-to-rle",
                 *FLAGS]) == 130
    assert sorted(os.listdir(out)) == ["a.json", "a_overlay.png"]
    with open(out / "a.json") as f:
        assert len(json.load(f)) >= 1


def test_existing_outputs_need_force(three_images, tiny_checkpoints, tmp_path, capsys):
    cfg, ckpt = tiny_checkpoints["pad_window"]
    out = tmp_path / "out"
    argv = ["auto", str(three_images / "a.png"), "--out", str(out), "--checkpoint", ckpt, *FLAGS]
    # Someone else's files under the names this run would write: kept, and the image skipped.
    os.makedirs(out / "a")
    (out / "a" / "metadata.csv").write_text("mine")
    (out / "a_overlay.png").write_bytes(b"mine")
    assert main(argv) == 0
    assert "skipped: already done" in capsys.readouterr().out
    assert (out / "a" / "metadata.csv").read_text() == "mine" and (out / "a_overlay.png").read_bytes() == b"mine"
    # Only the overlay there (the folder missing): still not overwritten.
    shutil.rmtree(out / "a")
    assert main(argv) == 0
    assert "a_overlay.png exists (--force overwrites it)" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["a_overlay.png"] and (out / "a_overlay.png").read_bytes() == b"mine"
    # --force replaces them, and leaves nothing else behind.
    os.makedirs(out / "a")
    (out / "a" / "stale.png").write_bytes(b"old")
    assert main(argv + ["--force"]) == 0
    assert "1 image(s) segmented" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["a", "a_overlay.png"]
    _assert_complete(out, "a")


def test_unwritable_output_folder_is_one_line(three_images, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # The folder is checked before the model loads: the missing checkpoint is never reached.
    missing = str(tmp_path / "no_such.pth")
    assert main(["auto", str(three_images), "--out", str(blocker / "out"), "--checkpoint", missing]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot create output folder" in err, err
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            assert main(["auto", str(three_images), "--out", str(locked), "--checkpoint", missing]) == 1
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "not writable" in err, err
        finally:
            locked.chmod(0o755)
