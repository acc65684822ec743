"""The model-tuned generator defaults (the registry's ``generator_defaults``) and the pieces of
the refinement and automatic-mask evaluations (``minisam.training.micro``)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from minisam import SamAutomaticMaskGenerator, sam_model_registry
from minisam.automatic_mask_generator import MODEL_TUNABLE
from minisam.checkpoints import registry as weights
from minisam.training.micro import _enclosed_holes, evaluate_automatic, evaluate_refinement


def test_signature_defaults_are_the_official_values():
    from segment_anything import SamAutomaticMaskGenerator as Official
    ours = inspect.signature(SamAutomaticMaskGenerator).parameters
    for name, p in inspect.signature(Official).parameters.items():
        assert ours[name].default == p.default, name
        assert repr(ours[name].default) == repr(p.default), name


def test_micro_takes_its_registry_defaults_and_explicit_values_win():
    tuned = weights.entry("micro")["generator_defaults"]
    assert set(tuned) == set(MODEL_TUNABLE)
    sam = sam_model_registry["micro"]()
    assert sam.generator_defaults == tuned
    g = SamAutomaticMaskGenerator(sam)
    assert g.pred_iou_thresh == tuned["pred_iou_thresh"]
    assert g.stability_score_thresh == tuned["stability_score_thresh"]
    side = tuned["points_per_side"]
    assert len(g.point_grids[0]) == side * side
    # a value the caller gives is used, even when it equals the official default
    g = SamAutomaticMaskGenerator(sam, points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95)
    assert (g.pred_iou_thresh, g.stability_score_thresh, len(g.point_grids[0])) == (0.88, 0.95, 1024)
    # as in the official class, a point grid with the default points_per_side is refused
    with pytest.raises(ValueError, match="exactly one"):
        SamAutomaticMaskGenerator(sam, point_grids=[np.zeros((4, 2))])


def test_a_model_without_tuned_defaults_keeps_the_official_ones(tiny_checkpoints):
    from minisam import build_sam
    _, path = tiny_checkpoints["pad_window"]
    g = SamAutomaticMaskGenerator(build_sam(path))
    assert (g.pred_iou_thresh, g.stability_score_thresh, len(g.point_grids[0])) == (0.88, 0.95, 1024)


def test_unknown_registry_setting_is_refused(monkeypatch):
    from minisam.errors import CheckpointError
    entry = dict(weights.entry("micro"), generator_defaults={"pred_iou_thresh": 0.7, "box_nms": 0.5})
    monkeypatch.setattr(weights, "entry", lambda name: entry)
    with pytest.raises(CheckpointError, match="box_nms"):
        sam_model_registry["micro"]()


def test_enclosed_holes():
    yy, xx = np.mgrid[0:32, 0:32]
    r = np.hypot(yy - 15.5, xx - 15.5)
    ring = (r < 12) & (r >= 6)                                   # a ring around a disc hole
    assert np.array_equal(_enclosed_holes(ring), r < 6)
    assert not _enclosed_holes(r < 12).any()                     # a disc has no hole
    c = ring.copy()
    c[14:18, 20:] = False                                        # a cut from the hole to the edge
    assert not _enclosed_holes(c).any()


def test_evaluations_run_and_tell_a_random_model_apart():
    """Both evaluations on two validation scenes: the shipped micro against a micro with its
    decoder's weights shuffled (the same values in the wrong places)."""
    from minisam.training.micro import VAL_SEED
    sam = sam_model_registry["micro"]()
    ref = evaluate_refinement(sam, n_scenes=2, seed=VAL_SEED)
    assert len(ref["iou_after_clicks"]) == 9 and ref["objects"] > 0
    auto = evaluate_automatic(sam, n_scenes=2, seed=VAL_SEED)
    broken = sam_model_registry["micro"]()
    rng = np.random.default_rng(0)

    def shuffle(tree):
        for k, v in tree.items():
            if isinstance(v, dict):
                shuffle(v)
            else:
                tree[k] = rng.permutation(v.ravel()).reshape(v.shape)
    shuffle(broken.params["mask_decoder"])
    bad_ref = evaluate_refinement(broken, n_scenes=2, seed=VAL_SEED)
    bad_auto = evaluate_automatic(broken, n_scenes=2, seed=VAL_SEED)
    print("\nshipped", ref, auto, "\nshuffled", bad_ref, bad_auto)
    assert ref["iou_after_clicks"][0] > bad_ref["iou_after_clicks"][0] + 0.2
    assert auto["recall"] > bad_auto["recall"]


def test_train_micro_evaluate_chooses_the_generator_settings_on_validation_scenes():
    """``train-micro --evaluate``: the automatic generator's settings come from a sweep on
    validation scenes, and the held-out automatic numbers are measured with exactly those."""
    from minisam.training.micro import EVAL_SEED, TARGETS, VAL_SEED, evaluate_trained
    sam = sam_model_registry["micro"]()
    # 0.999: above every IoU the head predicts on these scenes, so that setting returns no mask
    grid = {"points_per_side": (4,), "pred_iou_thresh": (0.999, 0.5), "stability_score_thresh": (0.7,)}
    m = evaluate_trained(sam, n_scenes=2, scene_min_area=100, sweep_grid=grid, sweep_scenes=2)
    sweep = m["generator_sweep"]
    assert sweep["seed"] == VAL_SEED and m["seed"] == m["automatic"]["seed"] == EVAL_SEED
    assert [r["masks_per_scene"] for r in sweep["rows"]][0] == 0
    assert sweep["chosen"] == {"points_per_side": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}
    again = evaluate_automatic(sam, 2, scene_min_area=100, **sweep["chosen"])
    assert (m["automatic"]["recall"], m["automatic"]["precision"]) == (again["recall"], again["precision"])
    assert set(m["targets"]) == set(TARGETS)
    for k, t in m["targets"].items():
        assert t["target"] == TARGETS[k] and t["met"] == (t["value"] >= t["target"])
