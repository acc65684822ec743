"""``trace`` only observes: the same code path runs with and without it.

The parity suite compares traced intermediates with the official ones, so a trace that made the
model take another path (no per-image decoder state, whole tensors instead of chunks, the
official [N, ...] layout instead of one shared image copy) would check a path users never run.
Here every output is compared BIT FOR BIT with and without a trace, on the fast path (the
default) and on the readable path, for the predictor and for the automatic mask generator,
which decodes through the predictor's public ``predict_low_res``.
"""

from __future__ import annotations

import numpy as np
import pytest

from minisam.automatic_mask_generator import SamAutomaticMaskGenerator
from minisam.predictor import SamPredictor

from conftest import TINY_CONFIGS
from test_predictor import make_image, pair


def _calls(H, W):
    rng = np.random.default_rng(3)
    pts = np.stack([rng.random(5) * W, rng.random(5) * H], axis=1)
    box = np.array([0.1 * W, 0.2 * H, 0.7 * W, 0.9 * H])
    return [
        ("predict", dict(point_coords=pts[:1], point_labels=np.array([1]))),
        ("predict", dict(point_coords=pts[:3], point_labels=np.array([1, 0, 1]), multimask_output=False)),
        ("predict", dict(box=box, multimask_output=False)),
        ("predict", dict(point_coords=pts[:2], point_labels=np.array([1, 0]), box=box, return_logits=True)),
        # N > the decoder's upscaling chunk, so chunked upscaling is traced too
        ("predict_batch", dict(point_coords=pts[:, None, :].repeat(2, 1) * [1, 0.9],
                               point_labels=np.ones((5, 2), np.int64), multimask_output=True)),
        ("predict_batch", dict(boxes=np.stack([box, box * 0.8]), multimask_output=False)),
    ]


def _run(pred, image, trace: bool):
    """Every output of set_image and a series of prompts (with mask feedback), with or without traces."""
    traces = []

    def t():
        traces.append({} if trace else None)
        return traces[-1]

    pred.set_image(image, trace=t())
    H, W = image.shape[:2]
    outs = [pred.get_image_embedding()]
    for method, kw in _calls(H, W):
        outs += list(getattr(pred, method)(**kw, trace=t()))
    masks, iou, low = pred.predict(point_coords=np.array([[W / 2, H / 2]]), point_labels=np.array([1]), trace=t())
    best = int(np.argmax(iou))
    outs += list(pred.predict(point_coords=np.array([[W / 2, H / 2]]), point_labels=np.array([1]),
                              mask_input=low[best][None], multimask_output=False, trace=t()))
    return outs, traces


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_predictor_outputs_bit_equal_with_and_without_trace(name, fast):
    _, sam = pair(TINY_CONFIGS[name])
    image = make_image(47, 70, seed=5)
    plain, _ = _run(SamPredictor(sam, fast=fast), image, trace=False)
    traced, traces = _run(SamPredictor(sam, fast=fast), image, trace=True)
    assert len(plain) == len(traced)
    for i, (a, b) in enumerate(zip(plain, traced)):
        assert a.dtype == b.dtype and a.shape == b.shape, i
        np.testing.assert_array_equal(a, b, err_msg=f"output {i} changed when traced")
    # the traces did record the model (a trace that recorded nothing would pass trivially)
    assert "image_encoder" in traces[0]
    assert all("mask_decoder" in t and "prompt_encoder" in t for t in traces[1:])


def test_the_check_catches_a_path_that_changes_when_traced(monkeypatch):
    """The comparison above fails for a decoder that takes another path under a trace."""
    _, sam = pair(TINY_CONFIGS["pad_window"])
    image = make_image(47, 70, seed=5)
    plain, _ = _run(SamPredictor(sam), image, trace=False)
    original = type(sam.mask_decoder).decode

    def drifting(self, state, sparse, dense, multimask_output, trace=None):
        masks, iou = original(self, state, sparse, dense, multimask_output, trace)
        return (masks + np.float32(1e-3), iou) if trace is not None else (masks, iou)

    monkeypatch.setattr(type(sam.mask_decoder), "decode", drifting)
    traced, _ = _run(SamPredictor(sam), image, trace=True)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, traced))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
def test_automatic_mask_generator_decodes_through_the_predictor_and_ignores_traces(fast, monkeypatch):
    cfg = TINY_CONFIGS["pad_window"]
    _, sam = pair(cfg)
    image = make_image(61, 90, seed=8)
    kw = dict(points_per_side=6, points_per_batch=7, pred_iou_thresh=0.0, stability_score_thresh=0.0,
              crop_n_layers=1, progress=False)
    gen = SamAutomaticMaskGenerator(sam, **kw)
    gen.predictor.fast = fast
    plain = gen.generate(image)
    assert plain, "the generator kept no mask: the comparison would be empty"

    calls = []
    original = SamPredictor.predict_low_res

    def traced(self, *args, **kwargs):
        trace = {}
        out = original(self, *args, **dict(kwargs, trace=trace))
        calls.append(sorted(trace))
        return out

    monkeypatch.setattr(SamPredictor, "predict_low_res", traced)
    gen2 = SamAutomaticMaskGenerator(sam, **kw)
    gen2.predictor.fast = fast
    again = gen2.generate(image)
    assert calls and all("mask_decoder" in keys for keys in calls)  # it decoded through the public method, traced
    assert len(again) == len(plain)
    for a, b in zip(plain, again):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_decoder_state_is_bit_identical_to_recomputing_it_and_follows_the_image(monkeypatch):
    """The per-image decoder state changes no bit of any output, and a new image (set_image, or
    features assigned directly) gets a fresh one."""
    _, sam = pair(TINY_CONFIGS["one_head_global_first"])
    H, W = 45, 70
    cached, fresh = SamPredictor(sam), SamPredictor(sam)
    monkeypatch.setattr(fresh, "decoder_state",
                        lambda: sam.mask_decoder.image_state(fresh.features, sam.get_dense_pe()))

    def outputs(pred):
        return [o for method, kw in _calls(H, W) for o in getattr(pred, method)(**kw)]

    for seed in (1, 2):
        image = make_image(H, W, seed=seed)
        cached.set_image(image)
        fresh.set_image(image)
        for a, b in zip(outputs(cached), outputs(fresh)):
            np.testing.assert_array_equal(a, b)
        assert cached._decoder_state[0] is cached.features
    cached.features = fresh.features = np.ascontiguousarray(fresh.features[..., ::-1])
    for a, b in zip(outputs(cached), outputs(fresh)):
        np.testing.assert_array_equal(a, b)
