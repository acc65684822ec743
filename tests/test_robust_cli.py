"""``minisam segment`` and ``minisam demo`` given bad arguments, bad images and bad output folders.

Each ends with exactly one line on stderr, ``minisam <command>: error: ...``, and exit code 2
(usage) or 1 (anything else), never a traceback; earlier results are never overwritten
without ``--force``; and these checks run before the model is loaded.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minisam.cli import main

from test_robust_images import png_header_only

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


def run_cli(argv, capsys):
    """(exit code, stderr lines) of ``minisam ARGV``, whether it returns or exits."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def one_line(err, command, *fragments):
    assert len(err) == 1, err
    assert err[0].startswith(f"minisam {command}: error: "), err[0]
    for f in fragments:
        assert f in err[0], err[0]


# ----------------------------------------------------------------------------- bad arguments: exit 2

@pytest.mark.parametrize("argv,fragment", [
    ([], "the following arguments are required: COMMAND"),
    (["segment"], "the following arguments are required: image, --out"),
    (["segment", "x.png", "--point", "1,2"], "the following arguments are required: --out"),
    (["segment", "x.png", "--out", "o", "--point", "1;2"], "--point X,Y[,LABEL] must be comma-separated numbers"),
    (["segment", "x.png", "--out", "o", "--point", "1,2,-1"], "label must be 1 (foreground) or 0"),
    (["segment", "x.png", "--out", "o", "--box", "1,2,inf,4"], "must be finite numbers"),
    (["segment", "x.png", "--out", "o", "--model", "vit_b", "--checkpoint", "c.pth"], "not allowed with argument"),
    (["segment", "x.png", "--out", "o", "--forse"], "unrecognized arguments: --forse"),
    (["demo", "--seed", "three"], "argument --seed: invalid int value: 'three'"),
    (["segmnt", "x.png"], "invalid choice: 'segmnt'"),
])
def test_bad_arguments_exit_2_with_one_line(argv, fragment, capsys):
    rc, err = run_cli(argv, capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("minisam") and "error:" in err[0] and fragment in err[0], err


# ----------------------------------------------------------------------------- bad images: exit 1

def test_non_images_one_line(tmp_path, capsys, tiny_checkpoints):
    _, ckpt = tiny_checkpoints["pad_window"]
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "big.png").write_bytes(png_header_only(9000, 9000))
    full = tmp_path / "full.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(full)
    (tmp_path / "cut.jpg").write_bytes(full.read_bytes()[:300])
    cases = {"notes.txt": "cannot read as an image", "missing.png": "no such file", ".": "is a folder",
             "cut.jpg": "truncated", "big.png": "over minisam's limit"}
    for name, fragment in cases.items():
        rc, err = run_cli(["segment", str(tmp_path / name), "--point", "1,2", "--checkpoint", ckpt,
                           "--out", str(tmp_path / "out")], capsys)
        assert rc == 1, (name, err)
        one_line(err, "segment", fragment)
    assert not (tmp_path / "out").exists()                 # nothing created for an input that was refused


# ----------------------------------------------------------------------------- output folders

def test_unwritable_output_folder_one_line(tmp_path, image, capsys, tiny_checkpoints):
    _, ckpt = tiny_checkpoints["pad_window"]
    (tmp_path / "a_file").write_text("x")
    blocked = str(tmp_path / "a_file" / "out")               # its parent is a file: cannot be created
    rc, err = run_cli(["segment", image, "--point", "3,4", "--checkpoint", ckpt, "--out", blocked], capsys)
    assert rc == 1
    one_line(err, "segment", "cannot create output folder", "a_file")
    rc, err = run_cli(["demo", "--out", blocked], capsys)
    assert rc == 1
    one_line(err, "demo", "cannot create output folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_output_folder_one_line(tmp_path, image, capsys, tiny_checkpoints):
    _, ckpt = tiny_checkpoints["pad_window"]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, err = run_cli(["segment", image, "--point", "3,4", "--checkpoint", ckpt, "--out", str(ro)], capsys)
        assert rc == 1
        one_line(err, "segment", "is not writable")
    finally:
        ro.chmod(0o755)


def test_existing_outputs_need_force(tmp_path, image, capsys, tiny_checkpoints):
    _, ckpt = tiny_checkpoints["pad_window"]
    out = tmp_path / "out"
    argv = ["segment", image, "--point", "3,4", "--checkpoint", ckpt, "--out", str(out)]
    assert run_cli(argv, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"mask_0.png", "mask_1.png", "mask_2.png", "overlay.png", "scores.json"}
    # second run: refused before the model is even loaded (a missing checkpoint would be the other error)
    rc, err = run_cli(["segment", image, "--point", "3,4", "--checkpoint", str(tmp_path / "nope.pth"),
                       "--out", str(out)], capsys)
    assert rc == 1
    one_line(err, "segment", f"{out} already holds mask_0.png, mask_1.png, mask_2.png, overlay.png, scores.json; "
                             "pass --force to overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # one leftover file is enough to refuse
    (out / "mask_0.png").unlink()
    (out / "scores.json").write_text("{}")
    rc, err = run_cli(argv, capsys)
    assert rc == 1
    one_line(err, "segment", "already holds mask_1.png, mask_2.png, overlay.png, scores.json;")
    assert (out / "scores.json").read_text() == "{}" and not (out / "mask_0.png").exists()
    assert run_cli(argv + ["--force"], capsys)[0] == 0
    assert json.loads((out / "scores.json").read_text())["points"] == [[3.0, 4.0]]
    # demo: its figure is protected the same way (checked before any model is built)
    (out / "demo.png").write_bytes(b"mine")
    rc, err = run_cli(["demo", "--out", str(out), "--checkpoint", str(tmp_path / "nope.pth")], capsys)
    assert rc == 1
    one_line(err, "demo", "demo.png exists; pass --force")
    assert (out / "demo.png").read_bytes() == b"mine"


def test_disk_full_while_writing_is_one_line(tmp_path, image, capsys, tiny_checkpoints, monkeypatch):
    _, ckpt = tiny_checkpoints["pad_window"]

    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full)
    rc, err = run_cli(["segment", image, "--point", "3,4", "--checkpoint", ckpt, "--out", str(tmp_path / "o")],
                      capsys)
    assert rc == 1
    one_line(err, "segment", "cannot write", "mask_0.png: No space left on device")


def test_real_process_prints_no_traceback(tmp_path, image, tiny_checkpoints):
    """The same through ``python -m minisam`` in a fresh process: exit codes and stderr as a user sees them."""
    _, ckpt = tiny_checkpoints["pad_window"]
    (tmp_path / "notes.txt").write_text("hello")
    env = dict(os.environ, PYTHONPATH=REPO, MPLBACKEND="Agg")
    for argv, code, fragment in [
        (["segment", str(tmp_path / "notes.txt"), "--point", "1,2", "--checkpoint", ckpt, "--out", str(tmp_path)],
         1, "cannot read as an image"),
        (["segment", image, "--point", "1,2,7", "--out", str(tmp_path)], 2, "label must be 1"),
    ]:
        res = subprocess.run([sys.executable, "-m", "minisam", *argv], env=env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == code, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in res.stderr, res.stderr
