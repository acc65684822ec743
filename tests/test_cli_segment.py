"""``minisam segment`` and ``minisam parity`` on randomized tiny checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from minisam.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRACE = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def test_segment_writes_overlay_masks_and_json(tiny_checkpoints, tmp_path, capsys):
    _, ckpt = tiny_checkpoints["pad_window"]
    out = tmp_path / "out"
    rc = main(["segment", str(GRACE), "--point", "250,200", "--point", "100,100,0", "--box", "50,50,400,500",
               "--checkpoint", ckpt, "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "scores.json").read_text())
    W, H = Image.open(GRACE).size
    assert report["image_size"] == [H, W] and report["labels"] == [1, 0] and report["box"] == [50, 50, 400, 500]
    assert len(report["masks"]) == 3 and report["best"] in (0, 1, 2)
    for m in report["masks"]:
        mask = np.asarray(Image.open(out / m["file"]))
        assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}
        assert int((mask > 0).sum()) == m["area"]
        assert np.isfinite(m["score"])
    overlay = Image.open(out / "overlay.png")
    assert overlay.size[0] > 100 and overlay.size[1] > 100
    assert "overlay ->" in capsys.readouterr().out


@pytest.mark.vit_b
def test_segment_grace_hopper_with_random_vit_b(vit_b_checkpoint, tmp_path, capsys):
    """The issue's case: a real photo and a randomized vit_b checkpoint written by the official package."""
    out = tmp_path / "out"
    rc = main(["segment", str(GRACE), "--point", "300,250", "--checkpoint", vit_b_checkpoint[1], "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "scores.json").read_text())
    assert len(report["masks"]) == 3 and all(np.isfinite(m["score"]) for m in report["masks"])
    W, H = Image.open(GRACE).size
    for m in report["masks"]:
        assert np.asarray(Image.open(out / m["file"])).shape == (H, W)
    assert Image.open(out / "overlay.png").size[0] > 100


def test_segment_single_mask(tiny_checkpoints, tmp_path):
    _, ckpt = tiny_checkpoints["one_head_global_first"]
    rc = main(["segment", str(GRACE), "--box", "10,20,300,400", "--single", "--checkpoint", ckpt,
               "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "scores.json").read_text())
    assert len(report["masks"]) == 1 and report["points"] == []


@pytest.mark.parametrize("argv,message", [
    (["--point", "250,a"], "must be comma-separated numbers"),
    (["--point", "1,2,3,4"], "takes 2 or 3 numbers"),
    (["--point", "1,2,5"], "label must be 1 (foreground) or 0"),
    (["--point", "nan,2"], "finite"),
    (["--box", "1,2,3"], "takes 4 numbers"),
    (["--box", "10,10,5,5"], "X0 <= X1"),
    ([], "give at least one --point"),
    (["--point", "1,2", "--image-missing"], "unrecognized arguments"),
])
def test_segment_bad_arguments_one_clear_line(argv, message, tiny_checkpoints, tmp_path, capsys):
    _, ckpt = tiny_checkpoints["pad_window"]
    with pytest.raises(SystemExit) as e:
        rc = main(["segment", str(GRACE), *argv, "--checkpoint", ckpt, "--out", str(tmp_path)])
        raise SystemExit(rc)
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("minisam") and "error:" in err[-1]


def test_segment_bad_files(tiny_checkpoints, tmp_path, capsys):
    _, ckpt = tiny_checkpoints["pad_window"]
    assert main(["segment", str(tmp_path / "nope.jpg"), "--point", "1,2", "--checkpoint", ckpt,
                 "--out", str(tmp_path)]) == 1
    assert "nope.jpg: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    assert main(["segment", str(bad), "--point", "1,2", "--checkpoint", ckpt, "--out", str(tmp_path)]) == 1
    assert "cannot read as an image" in capsys.readouterr().err
    assert main(["segment", str(GRACE), "--point", "1,2", "--checkpoint", str(tmp_path / "none.pth"),
                 "--out", str(tmp_path)]) == 1
    assert "none.pth" in capsys.readouterr().err


# ----------------------------------------------------------------------------- parity

BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "segment_anything"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def _verdicts(text):
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[-1].endswith(")") and any(v in parts for v in ("pass", "FAIL", "untraced")):
            verdict = next(v for v in ("pass", "FAIL", "untraced") if v in parts)
            rows[parts[0]] = verdict
    return rows


@pytest.mark.parametrize("size", ["tiny", pytest.param("vit_b", marks=pytest.mark.vit_b)])
def test_parity_all_pass_then_against_without_torch(size, tiny_checkpoints, vit_b_checkpoint, tmp_path, capsys):
    ckpt = tiny_checkpoints["odd_heads_global_last"][1] if size == "tiny" else vit_b_checkpoint[1]
    dump = tmp_path / "ref.npz"
    rc = main(["parity", "--checkpoint", ckpt, "--torch-device", "cpu", "--dump", str(dump)])
    out = capsys.readouterr().out
    assert rc == 0, out
    first = _verdicts(out)
    assert len(first) > 50 and "FAIL" not in first.values()
    for key in ("image_encoder.blocks.0", "point:mask_decoder.transformer.layers.0[1]", "point:output.masks",
                "feedback:prompt_encoder.mask_downscaling", "box_points:output.iou_predictions"):
        assert first[key] == "pass"
    assert dump.exists()

    # the same comparison from the dump, in a process where `import torch` fails
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), REPO]), MPLBACKEND="Agg")
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr
    res = subprocess.run([sys.executable, "-m", "minisam", "parity", "--checkpoint", ckpt, "--against", str(dump)],
                         env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    second = _verdicts(res.stdout)
    assert second == first
    assert "dump: torch" in res.stdout


def test_parity_catches_a_broken_mask_path(tiny_checkpoints, monkeypatch, capsys):
    """Both sides get the official run's "point" logits as the "feedback" mask input, and a mask path
    that computes something else (LayerNorm2d with eps 1e-4 instead of 1e-6) fails there and only there."""
    import minisam.modeling.prompt_encoder as pe
    real = pe.layer_norm2d
    monkeypatch.setattr(pe, "layer_norm2d", lambda x, w, b, eps: real(x, w, b, 100 * eps))
    rc = main(["parity", "--checkpoint", tiny_checkpoints["pad_window"][1], "--torch-device", "cpu"])
    rows = _verdicts(capsys.readouterr().out)
    assert rc == 1
    assert rows["feedback:prompt_encoder.mask_downscaling.1"] == "FAIL"
    assert all(v == "pass" for k, v in rows.items() if not k.startswith("feedback:"))


def test_parity_against_refuses_other_weights_and_bad_files(tiny_checkpoints, tmp_path, capsys):
    _, ckpt_a = tiny_checkpoints["pad_window"]
    _, ckpt_b = tiny_checkpoints["one_head_global_first"]
    dump = tmp_path / "a.npz"
    assert main(["parity", "--checkpoint", ckpt_a, "--torch-device", "cpu", "--dump", str(dump)]) == 0
    capsys.readouterr()
    assert main(["parity", "--checkpoint", ckpt_b, "--against", str(dump)]) == 1
    assert "made with other weights" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"xx")
    assert main(["parity", "--checkpoint", ckpt_a, "--against", str(junk)]) == 1
    assert "junk.npz: not a minisam parity dump" in capsys.readouterr().err
