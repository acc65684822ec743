"""Prompts typed by hand: each is refused with :class:`PromptError` naming the problem, or used
as the official code uses it, with a :class:`PromptWarning` where it is probably a mistake.

The prompts that minisam keeps because the official code allows them (empty point sets, point
labels -1/2/3, inverted, zero-area and out-of-image boxes, points outside the image, binary
mask_input) are run through the official ``SamPredictor`` too, and must give the same logits.
Tolerances as in tests/test_predictor.py: low-res logits 1e-3 x max|ref| (float32 noise through
the encoder and decoder), IoU 1e-3 absolute.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from segment_anything import SamPredictor as OfficialPredictor

from minisam import PromptError
from minisam.checkpoints.param_tree import nest
from minisam.predictor import POINT_LABELS, PromptWarning, SamPredictor
from minisam.modeling.sam import Sam

from conftest import TINY_CONFIGS, official_model

H, W = 20, 30
CFG = TINY_CONFIGS["pad_window"]
M = CFG.mask_input_size
_CACHE = {}


def predictors():
    """(ours, official) with the same randomized tiny weights and the same image set."""
    if "pair" not in _CACHE:
        model = official_model(CFG, 0)
        params = nest({k: np.ascontiguousarray(v.detach().cpu().numpy(), np.float32)
                       for k, v in model.state_dict().items()})
        image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
        ours, theirs = SamPredictor(Sam(CFG, params)), OfficialPredictor(model)
        ours.set_image(image)
        theirs.set_image(image)
        _CACHE["pair"] = (ours, theirs)
    return _CACHE["pair"]


def no_warning(fn, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(**kw)


def assert_same(ours, theirs):
    _, iou, low = ours
    _, iou_ref, low_ref = theirs
    scale = np.abs(low_ref).max()
    np.testing.assert_allclose(low, low_ref, rtol=0, atol=1e-3 * scale)
    np.testing.assert_allclose(iou, iou_ref, rtol=0, atol=1e-3)
    return float(np.abs(low - low_ref).max() / scale)


# ----------------------------------------------------------------------------- refused

REFUSED = [
    (dict(point_coords=[[np.nan, 2]], point_labels=[1]), "point_coords contains NaN or inf"),
    (dict(point_coords=[[-np.inf, 2]], point_labels=[1]), "point_coords contains NaN or inf"),
    (dict(point_coords=[[1, 2]], point_labels=[np.nan]), "point_labels contains NaN or inf"),
    (dict(point_coords=[[1e300, 2]], point_labels=[1]), "point_coords has values too large for float32"),
    (dict(box=[0, 0, np.inf, 5]), "box contains NaN or inf"),
    (dict(box=[0, 0, 1e39, 5]), "box has values too large for float32"),
    (dict(point_coords=[], point_labels=[]), r"shape \[N, 2\].*got \[0\]; for no points pass None "
                                             r"\(or shape \[0, 2\]\)"),
    (dict(point_coords=np.zeros((0, 2)), point_labels=[1]), "one label per point"),
    (dict(point_coords=[[1, 2], [3, 4]], point_labels=[1]), "one label per point"),
    (dict(point_coords=[[1, 2]], point_labels=[[1]]), "one label per point"),
    (dict(point_coords=[[1, 2, 3]], point_labels=[1]), r"shape \[N, 2\]"),
    (dict(point_coords=[[1, 2]]), "point_labels must be supplied"),
    (dict(point_labels=[1]), "without point_coords"),
    (dict(point_coords=[["a", 2]], point_labels=[1]), "point_coords must be numbers"),
    (dict(point_coords=np.array([[1 + 2j, 2]]), point_labels=[1]), "real-valued array.*complex128"),
    (dict(point_coords=[[1, 2]], point_labels=[0.5]), "must be integers"),
    (dict(point_coords=[[1, 2]], point_labels=[4]), r"point_labels \[4\] have no meaning"),
    (dict(point_coords=[[1, 2], [3, 4]], point_labels=[-2, 1]), r"point_labels \[-2\] have no meaning"),
    (dict(box=[]), "box must be 4 numbers"),
    (dict(box=[1, 2, 3]), "box must be 4 numbers"),
    (dict(mask_input=np.zeros((M, M))), rf"\[1, {M}, {M}\].*got \[{M}, {M}\]$"),
    (dict(mask_input=np.zeros((1, 1, M, M))), rf"\[1, {M}, {M}\]"),
    (dict(mask_input=np.zeros((1, H, W))), "that is the image size: give the low-res logits, not a full-size mask"),
    (dict(mask_input=np.zeros((1, M, M), complex)), "real-valued array.*complex128"),
    (dict(mask_input=np.zeros((1, M, M), object)), "real-valued array.*object"),
    (dict(mask_input=np.full((1, M, M), "x")), "real-valued array.*<U1"),
    (dict(mask_input=np.full((1, M, M), np.nan, np.float32)), "mask_input contains NaN or inf"),
]


@pytest.mark.parametrize("kwargs,message", REFUSED)
def test_bad_prompt_refused(kwargs, message):
    ours, _ = predictors()
    with pytest.raises(PromptError, match=message):
        ours.predict(**kwargs)


BATCH_REFUSED = [
    (dict(point_coords=np.full((2, 1, 2), np.nan), point_labels=np.ones((2, 1))), "NaN or inf"),
    (dict(point_coords=np.full((2, 1, 2), 3e38), point_labels=np.ones((2, 1))), "too large for float32 once scaled"),
    (dict(point_coords=np.zeros((2, 3, 2)), point_labels=np.ones((2, 2))), "one label per point"),
    (dict(point_coords=np.zeros((2, 2)), point_labels=np.ones(2)), r"shape \[B, N, 2\]"),
    (dict(point_coords=np.zeros((1, 1, 2)), point_labels=[[9]]), r"point_labels \[9\] have no meaning"),
    (dict(boxes=np.zeros(4)), r"shape \[B, 4\]"),
    (dict(boxes=np.zeros((2, 4)), point_coords=np.zeros((3, 1, 2)), point_labels=np.ones((3, 1))),
     "batch sizes differ"),
    (dict(boxes=np.zeros((2, 4)), mask_input=np.zeros((1, 1, M, M))), "batch sizes differ"),
    (dict(mask_input=np.zeros((2, M, M))), rf"\[B, 1, {M}, {M}\]"),
]


@pytest.mark.parametrize("kwargs,message", BATCH_REFUSED)
def test_bad_batch_prompt_refused(kwargs, message):
    ours, _ = predictors()
    with pytest.raises(PromptError, match=message):
        ours.predict_batch(**kwargs)


# ----------------------------------------------------------------------------- kept, as official

KEPT_SILENTLY = {
    "empty point set": dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)),
    "empty point set and a box": dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0),
                                      box=np.array([2, 3, 20, 15])),
    "no prompt at all": dict(),
    "padding label -1": dict(point_coords=np.array([[5, 5], [0, 0]]), point_labels=np.array([1, -1])),
    "zero-area box": dict(box=np.array([7, 7, 7, 7])),
    "box outside the image": dict(box=np.array([-50, -40, 300, 200])),
    "points outside the image": dict(point_coords=np.array([[-10, 5], [400, -3]]), point_labels=np.array([1, 0])),
}


@pytest.mark.parametrize("case", list(KEPT_SILENTLY))
def test_allowed_prompts_match_official_without_warning(case):
    ours, theirs = predictors()
    kw = dict(KEPT_SILENTLY[case], return_logits=True)
    got = no_warning(ours.predict, **kw)
    ref = theirs.predict(**kw)
    assert got[0].shape == (3, H, W)
    err = assert_same(got, ref)
    print(f"{case}: max |low-res diff| / max|ref| = {err:.2e}")


WARNED = {
    "box-corner label 2": (dict(point_coords=np.array([[5, 5], [9, 9]]), point_labels=np.array([1, 2])),
                           r"label\(s\) \[2\] are box-corner labels of the ONNX export.*box=\[x0, y0, x1, y1\]"),
    "box-corner labels 2, 3": (dict(point_coords=np.array([[5, 5], [9, 9]]), point_labels=np.array([2, 3])),
                               r"label\(s\) \[2, 3\]"),
    "inverted box": (dict(box=np.array([20, 15, 2, 3])), r"box \[20\.0, 15\.0, 2\.0, 3\.0\] is inverted"),
    "binary 0/1 mask_input": (dict(point_coords=np.array([[5, 5]]), point_labels=np.array([1]),
                                   mask_input=(np.arange(M * M).reshape(1, M, M) % 3 == 0).astype(np.float32)),
                              r"only the values \[0\.0, 1\.0\]: it looks like a mask, not logits.*third output"),
    "0/255 mask_input": (dict(mask_input=(np.arange(M * M).reshape(1, M, M) % 2 * 255).astype(np.float64)),
                         r"only the values \[0\.0, 255\.0\]"),
    "bool mask_input": (dict(mask_input=np.ones((1, M, M), bool)), r"only the values \[1\.0\]"),
    "uint8 mask_input": (dict(mask_input=np.arange(M * M, dtype=np.uint8).reshape(1, M, M)), "dtype uint8"),
}


@pytest.mark.parametrize("case", list(WARNED))
def test_probable_mistakes_warn_and_still_match_official(case):
    ours, theirs = predictors()
    kw, message = WARNED[case]
    kw = dict(kw, return_logits=True)
    with pytest.warns(PromptWarning, match=message) as record:
        got = ours.predict(**kw)
    assert len(record) == 1 and issubclass(record[0].category, UserWarning)
    assert record[0].filename == __file__                  # points at the caller's line
    ref = theirs.predict(**kw)
    assert_same(got, ref)


def test_real_logits_as_mask_input_do_not_warn():
    ours, theirs = predictors()
    _, scores, low = ours.predict(point_coords=np.array([[5, 5]]), point_labels=np.array([1]))
    logits = low[np.argmax(scores)][None]                       # [1, M, M] float32
    kw = dict(point_coords=np.array([[5, 5], [12, 9]]), point_labels=np.array([1, 0]), mask_input=logits,
              multimask_output=False, return_logits=True)
    assert_same(no_warning(ours.predict, **kw), theirs.predict(**kw))


def test_padding_point_position_is_ignored():
    """Label -1 means not-a-point: its coordinates do not matter at all (bit for bit)."""
    ours, _ = predictors()
    outs = [ours.predict(point_coords=np.array([[5, 5], xy]), point_labels=np.array([1, -1]), return_logits=True)
            for xy in ([0, 0], [17, 3], [-1000, 5000])]
    for out in outs[1:]:
        for a, b in zip(out, outs[0]):
            np.testing.assert_array_equal(a, b)
    assert set(POINT_LABELS) == {-1, 0, 1, 2, 3}


def test_empty_batch_returns_empty_arrays():
    ours, _ = predictors()
    for kw in (dict(boxes=np.zeros((0, 4))), dict(point_coords=np.zeros((0, 1, 2)), point_labels=np.zeros((0, 1)))):
        masks, iou, low = no_warning(ours.predict_batch, **kw)
        assert masks.shape == (0, 3, H, W) and iou.shape == (0, 3) and low.shape == (0, 3, M, M)


def test_batch_warnings():
    ours, _ = predictors()
    with pytest.warns(PromptWarning, match="is inverted"):
        ours.predict_batch(boxes=np.array([[1, 1, 5, 5], [9, 9, 2, 2]]))
    with pytest.warns(PromptWarning, match="looks like a mask"):
        ours.predict_batch(boxes=np.zeros((2, 4)), mask_input=np.zeros((2, 1, M, M)))
    with pytest.warns(PromptWarning, match="box-corner"):
        ours.predict_batch(point_coords=np.zeros((1, 1, 2)), point_labels=[[3]])
