"""Lessons 05-08 run headless and write their figures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LESSONS = {
    "05_prompt_encoder.py": ["05_dense_pe_channels.png", "05_pe_similarity.png"],
    "06_two_way_transformer.py": ["06_token_to_image_attention.png", "06_image_to_token_attention.png"],
    "07_upsampling_and_hypernetworks.py": ["07_upscaled_channels.png", "07_mask_logits.png"],
    "08_ambiguity_and_iou.py": ["08_three_masks.png", "08_single_mask_multi_point.png"],
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
