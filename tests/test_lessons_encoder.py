"""Lessons 02-04 run headless and write their figures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LESSONS = {
    "02_preprocessing_and_patches.py": ["02_padded_input.png", "02_patch_grid.png"],
    "03_windowed_attention.py": ["03_windows.png", "03_relpos_and_attention.png"],
    "04_global_attention_and_neck.py": ["04_global_attention.png", "04_embedding_channels.png"],
}


@pytest.mark.parametrize("lesson", list(LESSONS))
def test_lesson_runs_and_writes_figures(lesson, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "lessons", lesson), "--out", str(out)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for name in LESSONS[lesson]:
        path = out / name
        assert path.exists() and path.stat().st_size > 1000, f"{lesson} did not write {name}"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
