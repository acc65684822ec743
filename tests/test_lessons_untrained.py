"""The lessons' claims about what the *trained* model does are real checks: on an untrained
micro they fail.

``tests/test_lessons.py`` shows that every claim holds on the shipped micro. That alone does not
show that a claim such as "SAM's masks from the detector's boxes beat the boxes taken as masks"
tests the training: a claim that any weights satisfy would pass as well. Here each lesson with
such a claim runs on a randomly initialised model with micro's exact configuration
(``minisam.config.MICRO``; the official model randomized at sensible scales, as
``conftest.saved_checkpoint`` writes it) and must stop cleanly on that claim: exit non-zero,
print ``claim FAILS:`` for the statement named below (a stable fragment of it) as its only
failed claim, and no traceback. A crash, another claim failing first, or the lesson finishing
would each fail the test.

A lesson stops at its first failed claim, so each test covers the first behaviour claim of its
lesson; the claims after it are not reached here.

Some lessons check their trained-model claims only on a registered model
(``if args.checkpoint is None``), so ``--checkpoint`` skips them. Those lessons run as
``--model micro`` with ``MINISAM_WEIGHTS`` naming a folder whose micro file holds the random
weights (``minisam.checkpoints.registry.weights_dir``).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

from minisam.checkpoints import registry
from minisam.config import MICRO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS_DIR = os.path.join(ROOT, "lessons")

# Lesson number -> a fragment of the first claim that must fail on random weights, run with
# --checkpoint. Each is a statement about the trained model's masks.
FAILS_WITH_CHECKPOINT = {
    "02": "asked for one object, SAM's mask has IoU",
    "03": "zero-shot on shapes it never saw",
    "04": "interactive and detector-composed segmentation from the same model: one click gives mean IoU",
    "10": "with aligned embeddings, a colour name picks its object among SAM's masks",
    "16": "SAM's masks from the detector's boxes (mean best IoU",
    "17": "as in 7.1, one point gives a valid mask",
    "18": "micro misses fine structures",
}

# The same for claims a lesson checks only on the registered micro (run as --model micro).
# Lesson 20's tracking claims (previous mask vs reused click) are left out: they compare two
# IoUs near 0.06 without a margin, and on random weights they hold for some seeds.
# Lesson 22's (fine-tuning) are left out for time: it trains for about a minute before them.
FAILS_AS_REGISTERED_MICRO = {
    "11": "with trained weights some heads look at the clicked shape, others away from it",
    "13": "one click on a part: the three masks hold both readings",
    "15": "SAM's first mask is the object",
}


@pytest.fixture(scope="session")
def random_micro(tmp_path_factory):
    """(folder, path): micro's configuration with random weights, saved under the registered
    micro file name so that the folder can stand in for ``weights/``."""
    from conftest import saved_checkpoint
    folder = tmp_path_factory.mktemp("random_micro")
    path = saved_checkpoint(MICRO, folder, seed=0, name=registry.entry("micro")["file"])
    return str(folder), path


def lesson_path(number: str) -> str:
    found = glob.glob(os.path.join(LESSONS_DIR, f"{number}_*.py"))
    assert len(found) == 1, f"lesson {number}: expected one file, found {found}"
    return found[0]


def run_lesson(path: str, out, *extra, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", **(env_extra or {}))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, "1")   # tiny matrices: worker threads only slow a loaded machine
    return subprocess.run([sys.executable, path, "--out", str(out), *extra], cwd=str(out), env=env,
                          capture_output=True, text=True, timeout=300)


def check_stops_on(proc: subprocess.CompletedProcess, path: str, fragment: str) -> None:
    """The lesson exited non-zero on exactly one failed claim, the one containing ``fragment``,
    through ``_lesson.claim``'s SystemExit and not a crash."""
    name = os.path.basename(path)
    log = f"\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.returncode != 0, f"{name} passed on random weights: its claims do not test the training{log}"
    assert "Traceback" not in proc.stderr, f"{name} crashed on random weights instead of failing a claim{log}"
    failed = re.findall(r"^claim FAILS: (.*)$", proc.stdout, flags=re.MULTILINE)
    assert len(failed) == 1, f"{name}: expected one failed claim, got {failed}{log}"
    assert fragment in failed[0], f"{name}: the failed claim is not the one containing {fragment!r}{log}"
    assert proc.stderr.rstrip().endswith(f"lesson claim failed: {failed[0]}"), \
        f"{name} did not stop on that claim{log}"


@pytest.mark.parametrize("number", sorted(FAILS_WITH_CHECKPOINT))
def test_behaviour_claim_fails_on_random_checkpoint(number, random_micro, tmp_path):
    _, checkpoint = random_micro
    path = lesson_path(number)
    proc = run_lesson(path, tmp_path, "--checkpoint", checkpoint)
    # the banner of _lesson.load_model: the lesson ran on the random weights, not the shipped ones
    assert f"model: {checkpoint}: " in proc.stdout, \
        f"{os.path.basename(path)} did not load {checkpoint}:\n{proc.stdout[-2000:]}"
    check_stops_on(proc, path, FAILS_WITH_CHECKPOINT[number])


@pytest.mark.parametrize("number", sorted(FAILS_AS_REGISTERED_MICRO))
def test_behaviour_claim_fails_on_random_registered_micro(number, random_micro, tmp_path, monkeypatch):
    folder, checkpoint = random_micro
    monkeypatch.setenv("MINISAM_WEIGHTS", folder)
    assert registry.find("micro") == checkpoint   # --model micro resolves to the random weights
    path = lesson_path(number)
    proc = run_lesson(path, tmp_path, "--model", "micro")
    assert "model: micro: " in proc.stdout, proc.stdout[-2000:]
    check_stops_on(proc, path, FAILS_AS_REGISTERED_MICRO[number])
