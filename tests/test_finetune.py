"""``minisam finetune``: data reading, refusals, resume, and the checkpoint it writes.

The data are three 96 x 72 synthetic scenes (:func:`minisam.training.shapes.make_scene`,
cropped so that the model input is padded) with their masks as PNGs, or as a COCO file; the
model is the shipped micro SAM. Runs are a few steps long: these tests check the machinery,
not what fine-tuning buys.

What is held exactly:
- COCO decoding equals pycocotools on every pixel (random polygons, with out-of-image,
  repeated and fractional vertices; RLE strings both ways; uncompressed counts);
- a run interrupted after a state save and resumed ends with the same weights, AdamW state
  and losses as an uninterrupted run, **bit for bit** (``np.array_equal``), and so does a
  finished run extended with ``--resume --steps``;
- the written ``finetuned.pth`` loads into the official ``segment_anything`` model with a strict
  ``load_state_dict``, and its prompt encoder + decoder agree with minisam's on it within the
  decoder parity tolerance of ``tests/test_mask_decoder.py`` (every traced intermediate within
  1e-4 x max|ref|); the image encoder's weights are the base model's, bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minisam.cli import main
from minisam.training.coco_masks import (CocoError, decode_segmentation, polygon_rle, rle_decode, rle_encode,
                                         rle_from_string, rle_to_string)
from minisam.training.finetune import (CHECKPOINT_NAME, LOG_NAME, STATE_NAME, DatasetError, finetune, load_dataset,
                                       mask_to_input_frame, read_state, split_items)
from minisam.training.shapes import make_scene

# pycocotools 2.0 calls np.array(..., copy=False) on its own objects (NumPy 2 deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 96, 72
STEPS = ["--steps", "4", "--batch", "2", "--warmup", "1", "--save-every", "2", "--no-progress"]


def _scenes():
    out = []
    for i in range(3):
        s = make_scene(np.random.default_rng(100 + i), H)
        masks = [m[:, :W] for m in s.masks if m[:, :W].sum() >= 10]
        out.append((f"img{i}", s.image[:, :W].copy(), masks))  # [H, W, 3], each [H, W]
    return out


def _write_folder(root, scenes):
    os.makedirs(os.path.join(root, "images"))
    for name, image, masks in scenes:
        Image.fromarray(image).save(os.path.join(root, "images", f"{name}.png"))
        os.makedirs(os.path.join(root, "masks", name))
        for k, m in enumerate(masks):
            Image.fromarray(m.astype(np.uint8) * 255).save(os.path.join(root, "masks", name, f"m{k:02d}.png"))
    return root


def _write_coco(root, scenes):
    """Image 0 by polygons, image 1 by compressed RLE, image 2 by uncompressed counts; plus a
    crowd annotation and an image without annotations, both left out."""
    os.makedirs(os.path.join(root, "imgs"))
    images, anns = [], []
    for i, (name, image, masks) in enumerate(scenes):
        Image.fromarray(image).save(os.path.join(root, "imgs", f"{name}.jpg" if i == 0 else f"{name}.png"))
        images.append({"id": 10 + i, "file_name": f"{name}.jpg" if i == 0 else f"{name}.png", "height": H,
                       "width": W})
        for k, m in enumerate(masks):
            if i == 0:
                ys, xs = np.nonzero(m)
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                seg = [[float(x0), float(y0), x1 - 0.3, float(y0), x1 - 0.3, y1 + 0.2, float(x0), y1 + 0.2],
                       [1.0, 1.0, 4.5, 1.0, 3.0, 5.2]]  # two parts: a box and a small triangle
            elif i == 1:
                seg = {"size": [H, W], "counts": rle_to_string(rle_encode(m))}
            else:
                seg = {"size": [H, W], "counts": rle_encode(m)}
            anns.append({"id": len(anns) + 1, "image_id": 10 + i, "category_id": 1, "segmentation": seg,
                         "iscrowd": 0})
    anns.append({"id": 99, "image_id": 11, "category_id": 1, "iscrowd": 1,
                 "segmentation": {"size": [H, W], "counts": rle_encode(np.ones((H, W), bool))}})
    Image.fromarray(scenes[0][1]).save(os.path.join(root, "imgs", "unlabelled.png"))
    images.append({"id": 50, "file_name": "unlabelled.png", "height": H, "width": W})
    path = os.path.join(root, "instances.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "shape"}]}, f)
    return path, os.path.join(root, "imgs")


@pytest.fixture(scope="module")
def scenes():
    return _scenes()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, scenes):
    return _write_folder(str(tmp_path_factory.mktemp("ft") / "data"), scenes)


@pytest.fixture(scope="module")
def coco(tmp_path_factory, scenes):
    return _write_coco(str(tmp_path_factory.mktemp("ftcoco")), scenes)


def cli(args):
    """``minisam ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder``, and the folders: what 'untouched' means."""
    if not os.path.exists(folder):
        return None
    snap = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        snap[rel + "/"] = os.stat(dirpath).st_mtime_ns
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            snap[os.path.normpath(os.path.join(rel, f))] = (digest, os.stat(p).st_mtime_ns)
    return snap


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """An uninterrupted CLI run of 4 steps (state saved at 2 and 4)."""
    out = str(tmp_path_factory.mktemp("ftrun") / "out")
    rc, stdout, err = cli(["finetune", data_dir, "--out", out] + STEPS)
    assert rc == 0, err
    return out


def _weights(path):
    from minisam.checkpoints.formats import load_state_dict
    return load_state_dict(path)


def _assert_same_run(a_dir, b_dir):
    """Bit-equal final weights, AdamW state and per-step losses."""
    wa, wb = _weights(os.path.join(a_dir, CHECKPOINT_NAME)), _weights(os.path.join(b_dir, CHECKPOINT_NAME))
    assert set(wa) == set(wb)
    diff = [k for k in wa if not np.array_equal(wa[k], wb[k])]
    assert not diff, f"weights differ: {diff[:5]}"
    ma, pa, oa = read_state(os.path.join(a_dir, STATE_NAME))
    mb, pb, ob = read_state(os.path.join(b_dir, STATE_NAME))
    assert ma["step"] == mb["step"] and ma["rng"] == mb["rng"]
    for k in oa:
        assert oa[k]["step"] == ob[k]["step"], k
        assert np.array_equal(oa[k]["exp_avg"], ob[k]["exp_avg"]), k
        assert np.array_equal(oa[k]["exp_avg_sq"], ob[k]["exp_avg_sq"]), k
    la = [h["loss"] for h in json.load(open(os.path.join(a_dir, LOG_NAME)))["history"]]
    lb = [h["loss"] for h in json.load(open(os.path.join(b_dir, LOG_NAME)))["history"]]
    assert la == lb


# ----------------------------------------------------------------------------- COCO masks

def test_rle_hand_made():
    """Column-major runs, background first; the string code's delta and sign rules."""
    m = np.array([[0, 1, 0],
                  [1, 1, 0]], bool)  # column-major: 0 1 | 1 1 | 0 0
    assert rle_encode(m) == [1, 3, 2]
    assert np.array_equal(rle_decode([1, 3, 2], 2, 3), m)
    assert rle_encode(np.ones((2, 2), bool)) == [0, 4]
    # counts [5, 40, 3, 2]: the 4th is stored as 2 - 40 = -38 (two characters, sign bit set)
    s = rle_to_string([5, 40, 3, 2])
    assert rle_from_string(s) == [5, 40, 3, 2]
    with pytest.raises(CocoError, match="add up to"):
        rle_decode([1, 2], 2, 3)
    with pytest.raises(CocoError, match="outside the code"):
        rle_from_string("5 ")
    with pytest.raises(CocoError, match="ends inside"):
        rle_from_string("0Q")  # 'Q' - 48 = 33: the 'more' bit, then nothing
    # a 4 x 3 (h x w) square polygon covering pixel centres x in {1, 2}, y in {1, 2, 3}
    sq = rle_decode(polygon_rle([0.6, 0.6, 2.6, 0.6, 2.6, 3.6, 0.6, 3.6], 5, 4), 5, 4)
    want = np.zeros((5, 4), bool)
    want[1:4, 1:3] = True
    assert np.array_equal(sq, want)
    with pytest.raises(CocoError, match="at least 3 points"):
        polygon_rle([0, 0, 1, 1], 4, 4)
    with pytest.raises(CocoError, match="RLE size"):
        decode_segmentation({"size": [3, 3], "counts": [9]}, 4, 4)


def test_coco_masks_match_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for it in range(400):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        xy = rng.uniform(-6, max(h, w) + 6, 2 * int(rng.integers(3, 10)))  # vertices in and out of the image
        if it % 3 == 0:
            xy = np.round(xy)  # on pixel edges exactly
        if it % 5 == 0:
            xy[2:4] = xy[0:2]  # a repeated vertex
        polys = [xy.tolist()] + ([rng.uniform(0, w, 6).tolist()] if it % 4 == 0 else [])
        ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))).astype(bool)
        assert np.array_equal(decode_segmentation(polys, h, w), ref), (h, w, polys)
        m = rng.random((h, w)) < rng.uniform(0.05, 0.95)  # [h, w]
        enc = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert rle_to_string(rle_encode(m)) == enc["counts"].decode()
        assert np.array_equal(decode_segmentation({"size": [h, w], "counts": enc["counts"].decode()}, h, w), m)
        unc = mask_utils.frPyObjects({"size": [h, w], "counts": rle_encode(m)}, h, w)
        assert np.array_equal(mask_utils.decode(unc).astype(bool), m)


# ----------------------------------------------------------------------------- reading data

def test_read_folder(data_dir, scenes):
    ds = load_dataset(data_dir)
    assert [it.name for it in ds.items] == [name for name, _, _ in scenes]
    for item, (name, image, masks) in zip(ds.items, scenes):
        assert item.size == (H, W)
        assert len(item.masks) == len(masks)
        for got, want in zip(item.masks, masks):  # m00, m01, ... sort as written
            assert np.array_equal(got.array(), want), got.source
    t = mask_to_input_frame(scenes[0][2][0], 128)  # 96 x 72 -> 128 x 96, padded to 128 x 128
    assert t.shape == (128, 128) and not t[:, 96:].any() and t.any()
    train, val = split_items(ds.items, 0.2, seed=0)
    assert len(val) == 1 and len(train) == 2  # round(0.2 * 3) = 1 image held out, whole
    assert [it.name for it in split_items(ds.items[::-1], 0.2, seed=0)[1]] == [it.name for it in val]
    with pytest.raises(DatasetError, match="at least 2 images"):
        split_items(ds.items[:1], 0.2, seed=0)


def test_read_coco(coco, scenes):
    path, images = coco
    ds = load_dataset(coco=path, images=images)
    assert [it.name for it in ds.items] == ["img0.jpg", "img1.png", "img2.png"]
    assert ds.skipped == {"crowd_annotations": 1, "images_without_annotations": 1}
    for item, (_, _, masks) in zip(ds.items[1:], scenes[1:]):  # the RLE ones are the masks themselves
        assert [m.array().tolist() for m in item.masks] == [m.tolist() for m in masks]
    try:
        from pycocotools.coco import COCO
    except ImportError:
        return
    with contextlib.redirect_stdout(io.StringIO()):
        ref = COCO(path)
    for item in ds.items:
        image_id = next(i for i, im in ref.imgs.items() if im["file_name"] == item.name)
        anns = [a for a in ref.loadAnns(ref.getAnnIds(imgIds=[image_id])) if not a["iscrowd"]]
        assert len(anns) == len(item.masks)
        for a, m in zip(anns, item.masks):
            assert np.array_equal(ref.annToMask(a).astype(bool), m.array()), m.source


def test_coco_cli_run(coco, tmp_path):
    path, images = coco
    out = str(tmp_path / "out")
    rc, stdout, err = cli(["finetune", "--coco", path, "--images", images, "--out", out, "--steps", "1",
                           "--batch", "2", "--rounds", "2", "--no-progress"])
    assert rc == 0, err
    log = json.load(open(os.path.join(out, LOG_NAME)))
    assert log["skipped"]["crowd_annotations"] == 1 and log["steps_done"] == 1


# ----------------------------------------------------------------------------- refusals

def _break(kind, data, coco_path, images):
    """Damage a copy of the data; return (arguments naming the data, text the error must contain)."""
    masks0 = os.path.join(data, "masks", "img0")
    first = os.path.join(masks0, sorted(os.listdir(masks0))[0])
    if kind == "mask_size":
        Image.fromarray(np.full((H, W + 1), 255, np.uint8)).save(first)
        return [data], f"{first}: mask is 96 x 73 (H x W), its image"
    if kind == "empty_mask":
        Image.fromarray(np.zeros((H, W), np.uint8)).save(first)
        return [data], f"{first}: empty mask"
    if kind == "corrupt_image":
        img = os.path.join(data, "images", "img1.png")
        with open(img, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n this is not an image")
        return [data], f"{img}: "
    if kind == "truncated_mask":
        with open(first, "rb") as f:
            head = f.read(60)
        with open(first, "wb") as f:
            f.write(head)
        return [data], f"{first}: cannot read the mask"
    if kind == "no_images_dir":
        shutil.rmtree(os.path.join(data, "images"))
        return [data], f"{os.path.join(data, 'images')}: missing folder"
    if kind == "orphan_masks":
        os.makedirs(os.path.join(data, "masks", "ghost"))
        return [data], "mask folder without an image"
    with open(coco_path) as f:
        c = json.load(f)
    if kind == "coco_unknown_image":
        c["annotations"][2]["image_id"] = 999
        want = f"annotations[2] (id {c['annotations'][2]['id']}): image_id 999 is not in 'images'"
    elif kind == "coco_rle_size":
        a = next(a for a in c["annotations"] if isinstance(a["segmentation"], dict) and not a["iscrowd"])
        a["segmentation"]["size"] = [H, W + 2]
        want = f"(id {a['id']}): RLE size 96 x 74 (h x w) differs from its image's 96 x 72"
    elif kind == "coco_images_dir":
        shutil.rmtree(images)
        want = f"{images}: no such images folder"
    else:
        raise ValueError(kind)
    with open(coco_path, "w") as f:
        json.dump(c, f)
    return ["--coco", coco_path, "--images", images], want


BAD = ["mask_size", "empty_mask", "corrupt_image", "truncated_mask", "no_images_dir", "orphan_masks",
       "coco_unknown_image", "coco_rle_size", "coco_images_dir"]


@pytest.mark.parametrize("existing", [False, True], ids=["new_out", "forced_existing_out"])
@pytest.mark.parametrize("kind", BAD)
def test_bad_input_one_line_nothing_written(kind, existing, data_dir, coco, finished, tmp_path):
    """Bad data: exit 1, one line naming the file or key, and --out not created (or, with --force
    over a previous run, not touched at all)."""
    data = shutil.copytree(data_dir, str(tmp_path / "data"))
    coco_dir = shutil.copytree(os.path.dirname(coco[0]), str(tmp_path / "coco"))
    args, want = _break(kind, data, os.path.join(coco_dir, "instances.json"), os.path.join(coco_dir, "imgs"))
    out = str(tmp_path / "out")
    extra = []
    if existing:
        shutil.copytree(finished, out)
        extra = ["--force"]
    before = snapshot(out)
    rc, stdout, err = cli(["finetune"] + args + ["--out", out, "--no-progress"] + extra)
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("minisam finetune: error: "), err
    assert want in err, err
    assert stdout == ""
    assert snapshot(out) == before  # None: not created


def test_bad_input_subprocess(data_dir, tmp_path):
    """The real process: stderr is exactly one line (no traceback, no warning, no progress bar)."""
    data = shutil.copytree(data_dir, str(tmp_path / "data"))
    args, want = _break("empty_mask", data, None, None)
    out = str(tmp_path / "out")
    p = subprocess.run([sys.executable, "-m", "minisam", "finetune"] + args + ["--out", out], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and want in p.stderr, p.stderr
    assert not os.path.exists(out)


def test_existing_output_refused_and_force(finished, data_dir, tmp_path):
    out = shutil.copytree(finished, str(tmp_path / "out"))
    before = snapshot(out)
    rc, _, err = cli(["finetune", data_dir, "--out", out, "--no-progress"])
    assert rc == 1 and err.count("\n") == 1 and "already holds a fine-tuning run" in err and "--force" in err, err
    assert snapshot(out) == before
    rc, _, err = cli(["finetune", data_dir, "--out", out, "--resume", "--force"])
    assert rc == 1 and err.count("\n") == 1 and "give one of them" in err
    rc, _, err = cli(["finetune", data_dir, "--out", out, "--resume", "--lr", "0.01", "--no-progress"])
    assert rc == 1 and err.count("\n") == 1 and "has lr 0.0001, not 0.01" in err, err
    rc, _, err = cli(["finetune", data_dir, "--out", out, "--resume", "--checkpoint",
                      os.path.join(out, CHECKPOINT_NAME), "--no-progress"])
    assert rc == 1 and err.count("\n") == 1 and "started from another model (model micro)" in err, err
    other = shutil.copytree(data_dir, str(tmp_path / "other"))
    os.remove(os.path.join(other, "masks", "img2", "m00.png"))
    rc, _, err = cli(["finetune", other, "--out", out, "--resume", "--no-progress"])
    assert rc == 1 and err.count("\n") == 1 and "the data differs" in err, err
    assert snapshot(out) == before
    broken = shutil.copytree(out, str(tmp_path / "broken"))
    with open(os.path.join(broken, STATE_NAME), "r+b") as f:
        f.truncate(1000)
    rc, _, err = cli(["finetune", data_dir, "--out", broken, "--resume", "--no-progress"])
    assert rc == 1 and err.count("\n") == 1 and "not a readable fine-tuning state" in err, err
    emb = {k: v for k, v in before.items() if k.startswith("embeddings/")}
    rc, _, err = cli(["finetune", data_dir, "--out", out, "--force", "--steps", "1", "--rounds", "2",
                      "--no-progress"])
    assert rc == 0, err
    after = snapshot(out)
    assert json.load(open(os.path.join(out, LOG_NAME)))["steps_done"] == 1
    assert after[CHECKPOINT_NAME] != before[CHECKPOINT_NAME]
    assert {k: v for k, v in after.items() if k.startswith("embeddings/")} == emb  # the cache reused, unchanged


# ----------------------------------------------------------------------------- resume

class _Killed(Exception):
    pass


def test_resume_is_bit_equal(finished, data_dir, tmp_path):
    """Killed after step 2's state save, then resumed: the same run as uninterrupted, bit for bit."""
    from minisam import sam_model_registry
    out = str(tmp_path / "killed")
    ds = load_dataset(data_dir)

    def kill(step, loss):
        if step == 2:
            raise _Killed

    with pytest.raises(_Killed):
        finetune(ds, sam_model_registry["micro"](), out, steps=4, batch=2, warmup=1, save_every=2, progress=False,
                 log=lambda *a: None, on_step=kill)
    assert read_state(os.path.join(out, STATE_NAME))[0]["step"] == 2
    assert not os.path.exists(os.path.join(out, CHECKPOINT_NAME))
    emb = {k: v for k, v in snapshot(out).items() if k.startswith("embeddings/")}
    rc, _, err = cli(["finetune", data_dir, "--out", out, "--resume", "--no-progress"])
    assert rc == 0, err
    assert {k: v for k, v in snapshot(out).items() if k.startswith("embeddings/")} == emb
    _assert_same_run(finished, out)
    runs = json.load(open(os.path.join(out, LOG_NAME)))["runs"]
    assert [(r["start_step"], r["end_step"]) for r in runs] == [(0, 2), (2, 4)]


def test_resume_extends_a_finished_run(finished, data_dir, tmp_path):
    """2 steps, then --resume --steps 4: the same as 4 steps at once (the lr is constant after warm-up)."""
    out = str(tmp_path / "short")
    args = ["finetune", data_dir, "--out", out, "--batch", "2", "--warmup", "1", "--save-every", "2",
            "--no-progress"]
    assert cli(args + ["--steps", "2"])[0] == 0
    rc, _, err = cli(["finetune", data_dir, "--out", out, "--resume", "--steps", "4", "--no-progress"])
    assert rc == 0, err
    _assert_same_run(finished, out)
    rc, _, err = cli(["finetune", data_dir, "--out", out, "--resume", "--steps", "3", "--no-progress"])
    assert rc == 1 and "would go back" in err


# ----------------------------------------------------------------------------- outputs

def test_log(finished):
    log = json.load(open(os.path.join(finished, LOG_NAME)))
    assert [h["step"] for h in log["history"]] == [1, 2, 3, 4]
    assert all(np.isfinite(h["loss"]) and h["lr"] == 1e-4 for h in log["history"])
    for when in ("val_before", "val_after"):
        assert set(log[when]) == {"point_iou", "point_best_of_3_iou", "box_iou", "masks"}
        assert 0 <= log[when]["point_iou"] <= log[when]["point_best_of_3_iou"] <= 1
    assert log["images"] == {"train": 2, "val": 1}
    assert not set(log["split"]["train"]) & set(log["split"]["val"])
    assert {"embeddings", "validation_before", "train", "validation_after"} <= set(log["seconds"])


def test_checkpoint_loads_in_official_code(finished):
    """finetuned.pth in segment_anything: strict load, and the same decoder outputs as minisam."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    from minisam import build_sam, sam_model_registry
    from minisam.checkpoints.param_tree import flatten, nest
    from minisam.reference.official import build_official
    from official import compare, torch_device
    from test_mask_decoder import RTOL, _required, check_outputs, run_decoder_both

    path = os.path.join(finished, CHECKPOINT_NAME)
    ours = build_sam(path)
    model = build_official(ours.config)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    model = model.to(torch_device())
    base = flatten(sam_model_registry["micro"]().params)
    tuned = flatten(ours.params)
    assert all(np.array_equal(base[k], tuned[k]) for k in base if k.startswith("image_encoder."))
    assert any(not np.array_equal(base[k], tuned[k]) for k in base if k.startswith("mask_decoder."))
    cfg = ours.config
    p = nest({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    assert all(np.array_equal(flatten(p)[k], tuned[k]) for k in tuned)
    rng = np.random.default_rng(3)
    G, S = cfg.image_embedding_size, cfg.img_size
    emb = rng.standard_normal((1, cfg.prompt_embed_dim, G, G)).astype(np.float32)  # [1, C, G, G]
    point = ((rng.random((1, 1, 2)) * S).astype(np.float32), np.array([[1]], np.int32))
    box = np.array([[0.2 * S, 0.1 * S, 0.6 * S, 0.8 * S]], np.float32)
    for label, points, boxes, multimask in (("point", point, None, True), ("box", None, box, False)):
        ref_trace, trace, ref, got = run_decoder_both(model, p, cfg, emb, points, boxes, None, multimask)
        compare(ref_trace, trace, RTOL, require=_required(cfg), label=f"finetuned {label}")
        check_outputs(ref, got, f"finetuned {label}")
