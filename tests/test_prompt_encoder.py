"""Prompt encoder parity: every traced intermediate against the official PromptEncoder.

Tolerance: 1e-5 x max|ref| per key. The prompt encoder is a handful of float32 ops: a 2 x C/2
projection, sin/cos of arguments up to ~2 pi * 3 * |G| (a few tens), two tiny convs with
LayerNorm2d and exact GELU. sin/cos of an argument of size ~30 carry an absolute rounding
error of about ulp(30) ~ 2e-6 in both libraries, i.e. ~2e-6 on values of size 1; measured
worst relative error is below 1e-6 (see the printed table).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minisam.config import VIT_B
from minisam.checkpoints.param_tree import nest
from minisam.modeling.prompt_encoder import get_dense_pe, prompt_encoder

from conftest import TINY_CONFIGS, official_model
from official import compare, record, torch_device

RTOL = 1e-5


def _params(model):
    return nest({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def _prompts(cfg, kind, rng):
    """(points, boxes, masks) as numpy arrays in the model input frame, B = 2."""
    S, M = cfg.img_size, cfg.mask_input_size
    B = 2
    pts = (rng.random((B, 3, 2)) * S).astype(np.float32)
    labels = np.array([[1, 0, 1], [1, -1, 0]], np.int32)
    box = np.sort(rng.random((B, 2, 2)) * S, axis=1).reshape(B, 4).astype(np.float32)
    mask = (rng.standard_normal((B, 1, M, M)) * 4).astype(np.float32)
    return {
        "points": ((pts, labels), None, None),
        "points_box": ((pts, labels), box, None),
        "box": (None, box, None),
        "mask": (None, None, mask),
        "all": ((pts, labels), box, mask),
        "none": (None, None, None),
        # labels 2/3 get the bare PE in the PyTorch path; float64 coords as the AMG passes them
        "odd_labels_f64": (((rng.random((B, 2, 2)) * S), np.array([[2, 3], [1, 2]], np.int64)), None, None),
    }[kind]


def _torch(a):
    return None if a is None else torch.as_tensor(a).to(torch_device())


def _run_both(model, p, cfg, points, boxes, masks):
    tp = None if points is None else (_torch(points[0]), _torch(points[1]))

    def fn():
        sparse, dense = model.prompt_encoder(points=tp, boxes=_torch(boxes), masks=_torch(masks))
        return sparse, dense, model.prompt_encoder.get_dense_pe()
    (ref_sparse, ref_dense, ref_pe), ref_trace = record(model, fn)
    ours = {}
    sparse, dense = prompt_encoder(p["prompt_encoder"], cfg, points, boxes, masks, trace=ours)
    pe = get_dense_pe(p["prompt_encoder"], cfg, trace=ours)
    return ref_trace, ours, (ref_sparse, ref_dense, ref_pe), (sparse, dense, pe)


@pytest.mark.parametrize("kind", ["points", "points_box", "box", "mask", "all", "none", "odd_labels_f64"])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_prompt_encoder_parity_tiny(name, kind):
    cfg = TINY_CONFIGS[name]
    model = official_model(cfg, 0)
    p = _params(model)
    points, boxes, masks = _prompts(cfg, kind, np.random.default_rng(7))
    ref_trace, ours, refs, got = _run_both(model, p, cfg, points, boxes, masks)
    required = ["prompt_encoder", "prompt_encoder.pe_layer"]
    if masks is not None:
        required += [f"prompt_encoder.mask_downscaling.{i}" for i in range(7)] + ["prompt_encoder.mask_downscaling"]
    compare(ref_trace, ours, RTOL, require=required, label=f"prompt encoder {name}/{kind}")
    for r, g in zip(refs, got):
        r = r.detach().cpu().numpy()
        assert g.shape == r.shape and g.dtype == np.float32
        if r.size:
            assert np.max(np.abs(g - r)) <= RTOL * np.max(np.abs(r))


def test_sparse_token_layout():
    """Pad point only without a box; label -1 drops the PE; box corners come last."""
    cfg = TINY_CONFIGS["pad_window"]
    p = _params(official_model(cfg, 0))["prompt_encoder"]
    pts = np.array([[[3.0, 4.0]]], np.float32)
    sparse, dense = prompt_encoder(p, cfg, (pts, np.array([[1]])))
    assert sparse.shape == (1, 2, cfg.prompt_embed_dim)
    np.testing.assert_array_equal(sparse[0, 1], p["not_a_point_embed"]["weight"][0])
    assert dense.shape == (1, cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.image_embedding_size)
    sparse, _ = prompt_encoder(p, cfg, (pts, np.array([[1]])), boxes=np.array([[1, 2, 3, 4]], np.float32))
    assert sparse.shape == (1, 3, cfg.prompt_embed_dim)


@pytest.mark.vit_b
def test_prompt_encoder_parity_vit_b():
    model = official_model(VIT_B, 1234)
    p = {"prompt_encoder": nest({k[len("prompt_encoder."):]: v.detach().cpu().numpy()
                                 for k, v in model.state_dict().items() if k.startswith("prompt_encoder.")})}
    points, boxes, masks = _prompts(VIT_B, "all", np.random.default_rng(3))
    ref_trace, ours, _, _ = _run_both(model, p, VIT_B, points, boxes, masks)
    compare(ref_trace, ours, RTOL, require=["prompt_encoder", "prompt_encoder.pe_layer",
                                            "prompt_encoder.mask_downscaling"], label="prompt encoder vit_b")
