"""The shipped offline model (weights/microsam_shapes.pth): registered, loaded without torch,
equal to the official code on its weights, and as good as its model card says.

The card (``weights/microsam_shapes.eval.json``, written by
``minisam.training.micro.model_card_metrics``) is re-measured in full for the prompt metrics
(deterministic), and on subsets of the same held-out scenes for refinement and the automatic
generator, with tolerances of four standard errors of the subset mean. The same measurements on
an untrained micro fail, so they test the training and not the code alone."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from minisam import sam_model_registry
from minisam.checkpoints import registry as weights
from minisam.config import MICRO
from minisam.training.shapes import interior_point, make_scene

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARD = os.path.join(ROOT, "weights", "microsam_shapes.eval.json")


def test_registered_checksummed_and_small():
    path = weights.find("micro")
    e = weights.entry("micro")
    assert os.path.getsize(path) == e["bytes"] <= 20 * 2 ** 20
    assert weights.file_md5(path) == e["md5"]
    sam = sam_model_registry["micro"]()
    assert sam.config == MICRO


@pytest.fixture(scope="module")
def card():
    return json.load(open(CARD))


@pytest.fixture
def one_thread():
    """Thousands of small predictor calls: one thread each for BLAS and Numba is fastest for work
    this small, and keeps a loaded machine from thrashing between the two pools."""
    from minisam.kernels.threads import get_num_threads, set_num_threads
    before = get_num_threads()
    set_num_threads(1)
    yield
    set_num_threads(before)


def subset_tolerance(std: float, n_subset: int, n_full: int, k: float = 4.0) -> float:
    """k standard errors of the mean of ``n_subset`` items drawn from the ``n_full`` items whose
    mean the card reports (the subset is part of that sample, hence 1/n - 1/N). At k = 4 a true
    agreement fails about once in 16,000 runs."""
    return k * std * math.sqrt(max(1.0 / n_subset - 1.0 / n_full, 0.0))


def test_model_card_numbers_hold(card, one_thread):
    """Re-measure the model card's held-out numbers (500 scenes from a seed training never used)."""
    from minisam.training.micro import EVAL_SEED, evaluate, meets_targets
    assert card["seed"] == EVAL_SEED and card["scenes"] == 500
    got = evaluate(sam_model_registry["micro"](), n_scenes=500, seed=EVAL_SEED,
                   scene_min_area=card["scene_min_area"])
    print("\nmeasured", got, "\nreported", card)
    # The evaluation is deterministic; only float summation order (BLAS threads) can move a
    # mask pixel or two, which moves a mean over ~2000 objects by far less than 0.002.
    for k in ("point_best_of_3_iou", "box_iou", "iou_head_picks_best"):
        assert abs(got[k] - card[k]) <= 0.002, k
    assert got["objects"] == card["objects"]
    # the card's verdict is the targets (minisam.training.micro.TARGETS) applied to its numbers
    assert card["meets_targets"] == meets_targets({**card, **card["refinement"], **card["automatic"]})


# Subsets of the card's held-out scenes: the first scenes of the same seed, measured exactly as
# the card's were, so a subset's mean differs from the card's only by which objects it holds.
REFINEMENT_SCENES, AUTOMATIC_SCENES = 40, 20


def test_refinement_subset_agrees_with_the_card(card, one_thread):
    """Clicks from the error region with the logits fed back raise the IoU as the card says, and
    a negative click in a ring's hole lowers the mask there as often (card: all 500 scenes)."""
    from minisam.training.micro import evaluate_refinement
    ref = card["refinement"]
    got = evaluate_refinement(sam_model_registry["micro"](), n_scenes=REFINEMENT_SCENES, seed=ref["seed"],
                              scene_min_area=ref["scene_min_area"])
    print("\nmeasured", got, "\nreported", ref)
    for k in ("gain_after_3_clicks", "gain_after_8_clicks"):
        tol = subset_tolerance(ref["std"][k], got["objects"], ref["objects"])
        assert abs(got[k] - ref[k]) <= tol, (k, got[k], ref[k], tol)
    k = "negative_click_lowers_hole"
    tol = subset_tolerance(ref["std"][k], got["hole_cases"], ref["hole_cases"])
    assert got["hole_cases"] >= 5 and abs(got[k] - ref[k]) <= tol, (got[k], ref[k], tol)


def test_automatic_subset_agrees_with_the_card(card, one_thread):
    """The automatic generator with micro's own defaults (the registry's generator_defaults)
    finds the objects and returns real masks as often as the card says."""
    from minisam.training.micro import evaluate_automatic
    auto = card["automatic"]
    got = evaluate_automatic(sam_model_registry["micro"](), n_scenes=AUTOMATIC_SCENES, seed=auto["seed"],
                             scene_min_area=auto["scene_min_area"])
    print("\nmeasured", got, "\nreported", auto)
    n_masks = round(got["masks_per_scene"] * AUTOMATIC_SCENES)
    card_masks = round(auto["masks_per_scene"] * auto["scenes"])
    for k, n, n_full in (("recall", got["objects"], auto["objects"]), ("precision", n_masks, card_masks)):
        tol = subset_tolerance(auto["std"][k], n, n_full)
        assert abs(got[k] - auto[k]) <= tol, (k, got[k], auto[k], tol)


def test_the_same_measurements_fail_on_an_untrained_micro(card, tmp_path, one_thread):
    """The measurements test the training: micro's configuration with random weights (the official
    model randomized at sensible scales, as the parity tests do) falls short of every group of
    targets, and far below the card."""
    from conftest import saved_checkpoint
    from minisam import build_sam
    from minisam.training.micro import TARGETS, evaluate, evaluate_automatic, evaluate_refinement
    sam = build_sam(saved_checkpoint(MICRO, tmp_path, seed=0))
    area = card["scene_min_area"]
    prompts = evaluate(sam, n_scenes=10, seed=card["seed"], scene_min_area=area)
    clicks = evaluate_refinement(sam, n_scenes=10, seed=card["seed"], scene_min_area=area)
    auto = evaluate_automatic(sam, n_scenes=5, seed=card["seed"], scene_min_area=area)
    print("\nuntrained:", prompts, clicks, auto, sep="\n")
    assert prompts["point_best_of_3_iou"] < TARGETS["point_best_of_3_iou"]
    assert prompts["box_iou"] < TARGETS["box_iou"]
    assert prompts["point_best_of_3_iou"] < card["point_best_of_3_iou"] - 0.2
    assert clicks["gain_after_8_clicks"] < TARGETS["gain_after_8_clicks"]
    assert not auto["recall"] >= TARGETS["recall"]          # nan (no masks) counts as failing
    assert not auto["recall"] >= card["automatic"]["recall"] - 0.2


def test_official_code_on_the_micro_checkpoint_agrees():
    """The official PyTorch predictor and minisam's, on the shipped weights and a scene."""
    import torch
    from segment_anything import SamPredictor as OfficialPredictor
    from minisam import SamPredictor
    from minisam.reference.official import build_official
    official = build_official(MICRO)
    official.load_state_dict(torch.load(weights.find("micro"), weights_only=True))
    S = MICRO.img_size
    scene = make_scene(np.random.default_rng(123), S)
    image = np.ascontiguousarray(scene.image[:, 10:])        # non-square: S x (S - 10)
    ref, ours = OfficialPredictor(official), SamPredictor(sam_model_registry["micro"]())
    ref.set_image(image)
    ours.set_image(image)
    for m in scene.instance_masks:
        p = interior_point(m[:, 10:] if m[:, 10:].any() else m) - 0.5
        for kw in (dict(point_coords=p[None], point_labels=np.array([1])),
                   dict(box=np.array([5, 6, 60, 75]) * S / 128, multimask_output=False)):
            rm, ri, rl = ref.predict(**kw)
            om, oi, ol = ours.predict(**kw)
            # the suite's decoder tolerances: logits 1e-3 x max|ref|, IoU 1e-3, masks <= 1e-4 of pixels
            assert np.max(np.abs(ol - rl)) <= 1e-3 * np.max(np.abs(rl))
            assert np.max(np.abs(oi - ri)) <= 1e-3
            assert np.mean(om != rm) <= 1e-4


BLOCK = ("import sys\n"
         "class B:\n"
         "    def find_spec(self, n, p=None, t=None):\n"
         "        if n.split('.')[0] in ('torch', 'segment_anything', 'torchvision'):\n"
         "            raise ImportError('blocked')\n"
         "sys.meta_path.insert(0, B())\n"
         "import socket\n"
         "def _no(*a, **k): raise OSError('network blocked in this test')\n"
         "socket.socket.connect = _no\n"
         "from minisam.cli import main\n"
         "raise SystemExit(main(sys.argv[1:]))\n")


def test_demo_runs_offline_without_torch(tmp_path):
    res = subprocess.run([sys.executable, "-c", BLOCK, "demo", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert "box" in res.stdout and "IoU" in res.stdout and "automatic masks" in res.stdout
    # the README figure: the automatic generator, with micro's defaults, finds every object of the scene
    found, total = map(int, re.search(r"(\d+) of (\d+) objects found", res.stdout).groups())
    assert found == total > 0, res.stdout
    again = subprocess.run([sys.executable, "-c", BLOCK, "demo", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 1 and "--force" in again.stderr   # no silent overwrite
