"""Lessons 09 (losses) and 10 (training algorithm) run headless in subprocesses and write figures."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_lesson(name, out_dir):
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "lessons", name), "--out", str(out_dir)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def assert_png(path):
    assert os.path.isfile(path), f"missing figure {path}"
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert os.path.getsize(path) > 5000, f"{path} is suspiciously small"


def test_lesson_09_losses(tmp_path):
    out = run_lesson("09_losses.py", tmp_path)
    for figure in ("focal_curves.png", "focal_heatmap.png"):
        assert_png(tmp_path / figure)
    assert "focal gradient vs finite differences" in out
    assert "sam_loss picks output 0" in out          # the right mask of the three


def test_lesson_10_training_algorithm(tmp_path):
    out = run_lesson("10_training_algorithm.py", tmp_path)
    for figure in ("rounds_strip.png", "rounds_curves.png"):
        assert_png(tmp_path / figure)
    # the real predictor ran (the lesson falls back to the toy model only without it)
    assert "real SamPredictor, random tiny SAM" in out and "NOTE:" not in out
    assert out.count("training would backpropagate") == 2
