"""SamPredictor and Sam.__call__ against the official SamPredictor / Sam.forward.

Three levels:
- decoder path with a shared embedding (``load_embedding`` of the official features, no
  encoder): every traced intermediate, for every prompt kind and image geometry;
- end to end (``set_image`` -> PIL resize -> encoder -> decoder -> postprocess) on tiny configs
  and once at vit_b size, and the batched ``Sam.__call__`` on two images;
- discrete outcomes: binary masks at the original size.

Tolerances (never loosened to pass):
- traced intermediates of the decoder path: 1e-4 x max|ref| (see test_mask_decoder.py);
- low-res logits and full-size logits (return_logits): 1e-3 x max|ref|; IoU: 1e-3 absolute;
- binary masks: at most 1e-4 of the pixels differ (only pixels whose logit is within float32
  noise of 0 can flip).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor as OfficialPredictor
from segment_anything.utils.transforms import ResizeLongestSide as OfficialResize

from minisam import ImageError, MinisamError, PromptError
from minisam.config import VIT_B
from minisam.checkpoints.param_tree import nest
from minisam.predictor import ImageNotSetError, SamPredictor
from minisam.modeling.sam import Sam

from conftest import TINY_CONFIGS, official_model
from official import compare, record, rel_err, torch_device

RTOL = 1e-4
LOGIT_RTOL = 1e-3
IOU_ATOL = 1e-3
MASK_FRAC = 1e-4

_SAMS = {}


def pair(cfg, seed=0):
    """(official model, minisam Sam) with the same randomized weights."""
    key = (cfg, seed)
    if key not in _SAMS:
        model = official_model(cfg, seed)
        params = nest({k: np.ascontiguousarray(v.detach().cpu().numpy(), np.float32)
                       for k, v in model.state_dict().items()})
        _SAMS[key] = (model, Sam(cfg, params))
    return _SAMS[key]


def make_image(h, w, seed=0):
    """A smooth random image (blobs + noise) so that masks have structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for _ in range(4):
        cy, cx, r = rng.random(3) * [1, 1, 0.4] + [0, 0, 0.1]
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2)[..., None] * rng.random(3) * 200
    img += rng.random((h, w, 3)) * 30
    return np.clip(img, 0, 255).astype(np.uint8)


def _t(a):
    return None if a is None else torch.as_tensor(a).to(torch_device())


def check(ref, got, label, logits=False):
    """Outputs of predict / predict_batch: (masks, iou, low_res)."""
    ref = [r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else r for r in ref]
    (rm, ri, rl), (gm, gi, gl) = ref, got
    assert gm.shape == rm.shape and gi.shape == ri.shape and gl.shape == rl.shape, label
    a, r = rel_err(rl, gl)
    assert r <= LOGIT_RTOL, f"{label}: low-res logits off by {r:.3e} x max|ref|"
    assert np.max(np.abs(gi - ri)) <= IOU_ATOL, f"{label}: IoU off by {np.max(np.abs(gi - ri)):.3e}"
    if logits:
        assert gm.dtype == np.float32
        assert rel_err(rm, gm)[1] <= LOGIT_RTOL, f"{label}: logits off"
        rm, gm = rm > 0, gm > 0
    else:
        assert gm.dtype == np.bool_
    frac = float(np.mean(rm != gm))
    print(f"{label}: low-res rel {r:.2e}, IoU abs {np.max(np.abs(gi - ri)):.2e}, mask pixels differing {frac:.2e}")
    assert frac <= MASK_FRAC, f"{label}: {frac:.2e} of mask pixels differ"


def prompts(H, W, rng):
    """A list of (label, kwargs) for predict, in original image pixels."""
    pt = np.array([[0.4 * W, 0.55 * H]])
    pts = np.stack([rng.random(4) * W, rng.random(4) * H], axis=1)
    box = np.array([0.15 * W, 0.1 * H, 0.8 * W, 0.7 * H])
    return [
        ("one_point", dict(point_coords=pt, point_labels=np.array([1]))),
        ("one_point_single", dict(point_coords=pt, point_labels=np.array([1]), multimask_output=False)),
        ("points_neg", dict(point_coords=pts, point_labels=np.array([1, 0, 1, 0]), multimask_output=False)),
        ("box", dict(box=box, multimask_output=False)),
        ("box_points", dict(point_coords=pts[:2], point_labels=np.array([1, 0]), box=box)),
        ("logits", dict(point_coords=pt, point_labels=np.array([1]), return_logits=True)),
    ]


def official_predictor(model, features, original_size):
    op = OfficialPredictor(model)
    op.features = features
    op.original_size = tuple(original_size)
    op.input_size = OfficialResize.get_preprocess_shape(original_size[0], original_size[1],
                                                        model.image_encoder.img_size)
    op.is_image_set = True
    return op


def run_prompts(model, op, pred, H, W, label, trace=True, seed=0):
    rng = np.random.default_rng(seed)
    for name, kw in prompts(H, W, rng):
        ref, ref_trace = record(model, lambda: op.predict(**kw))
        ours = {} if trace else None
        got = pred.predict(**kw, trace=ours)
        if trace:
            ours = {k: v for k, v in ours.items() if not k.endswith(".attn_weights")}
            compare(ref_trace, ours, RTOL, require=["mask_decoder", "prompt_encoder"], label=f"{label}/{name}")
        check(ref, got, f"{label}/{name}", logits=kw.get("return_logits", False))
    # mask_input fed back from the previous low-res logits (each side its own)
    kw = dict(point_coords=np.array([[0.5 * W, 0.5 * H]]), point_labels=np.array([1]))
    ref0 = op.predict(**kw)
    got0 = pred.predict(**kw)
    i = int(np.argmax(ref0[1]))
    ref = op.predict(**kw, mask_input=ref0[2][i:i + 1], multimask_output=False)
    got = pred.predict(**kw, mask_input=got0[2][i:i + 1], multimask_output=False)
    check(ref, got, f"{label}/mask_feedback")
    # a batch of boxes (official predict_torch after apply_boxes_torch), in original pixels
    boxes = np.sort(rng.random((3, 2, 2)) * [W, H], axis=1).reshape(3, 4).astype(np.float32)
    with torch.no_grad():
        tb = op.transform.apply_boxes_torch(_t(boxes), op.original_size)
        ref = op.predict_torch(None, None, boxes=tb, multimask_output=True)
    got = pred.predict_batch(boxes=boxes, multimask_output=True)
    check(ref, got, f"{label}/batch_boxes")
    # batched points with a mask each
    pts = (rng.random((3, 2, 2)) * [W, H]).astype(np.float32)
    labs = np.array([[1, 0], [1, 1], [0, 1]])
    with torch.no_grad():
        tp = op.transform.apply_coords_torch(_t(pts), op.original_size)
        ref = op.predict_torch(tp, _t(labs), mask_input=_t(got0[2][None, :1].repeat(3, 0)),
                               multimask_output=False, return_logits=True)
    got = pred.predict_batch(pts, labs, mask_input=got0[2][None, :1].repeat(3, 0), multimask_output=False,
                             return_logits=True)
    check(ref, got, f"{label}/batch_points_masks", logits=True)


# ----------------------------------------------------------------------------- shared embedding

GEOMETRIES = {"square_small": (0.6, 0.6), "wide_small": (0.4, 0.9), "tall_large": (5.0, 2.0),
              "wide_large": (3.0, 4.7), "exact": (1.0, 1.0)}


# the fast path on every geometry; the readable one (SamPredictor(sam, fast=False)) on two,
# one smaller and one larger than the model input
PATHS = [(g, True) for g in GEOMETRIES] + [("wide_small", False), ("tall_large", False)]


@pytest.mark.parametrize("geom,fast", PATHS, ids=[f"{g}-{'fast' if f else 'readable'}" for g, f in PATHS])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_predict_parity_shared_embedding(name, geom, fast, tmp_path):
    """Official features written to .npz and loaded: exercises load_embedding and every prompt kind."""
    cfg = TINY_CONFIGS[name]
    model, sam = pair(cfg)
    S, G = cfg.img_size, cfg.image_embedding_size
    H, W = (int(round(f * S)) for f in GEOMETRIES[geom])
    feats = np.random.default_rng(2).standard_normal((1, cfg.prompt_embed_dim, G, G)).astype(np.float32)
    op = official_predictor(model, _t(feats), (H, W))
    path = tmp_path / "emb.npz"
    np.savez(path, format_version=1, embedding=feats, original_size=np.array([H, W]),
             input_size=np.array(op.input_size))
    pred = SamPredictor(sam, fast=fast)
    pred.load_embedding(path)
    assert pred.input_size == tuple(op.input_size) and pred.original_size == (H, W)
    run_prompts(model, op, pred, H, W, f"{name}/{geom}/{'fast' if fast else 'readable'}")


# ----------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("hw", [(40, 50), (300, 200), (97, 256)])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_set_image_end_to_end_tiny(name, hw):
    cfg = TINY_CONFIGS[name]
    model, sam = pair(cfg)
    image = make_image(*hw, seed=hw[0])
    op = OfficialPredictor(model)
    _, ref_trace = record(model, lambda: op.set_image(image))
    pred = SamPredictor(sam)
    pred.set_image(image)
    assert pred.input_size == tuple(op.input_size) and pred.original_size == tuple(op.original_size)
    a, r = rel_err(op.features.cpu().numpy(), pred.get_image_embedding())
    assert r <= RTOL, f"embedding off by {r:.3e}"
    run_prompts(model, op, pred, hw[0], hw[1], f"e2e {name}/{hw}", trace=False)
    # BGR input gives the same embedding as the flipped RGB image
    pred2 = SamPredictor(sam)
    pred2.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    np.testing.assert_array_equal(pred2.get_image_embedding(), pred.get_image_embedding())


def test_sam_call_two_images():
    """Batched Sam.__call__: two images of different sizes, different prompts, traced per image."""
    cfg = TINY_CONFIGS["pad_window"]
    model, sam = pair(cfg)
    S = cfg.img_size
    tf = OfficialResize(S)
    recs_np, recs_t = [], []
    rng = np.random.default_rng(9)
    for i, (h, w) in enumerate([(30, 52), (90, 61)]):
        image = tf.apply_image(make_image(h, w, seed=i))  # [h', w', 3] uint8, long side S
        x = np.ascontiguousarray(image.transpose(2, 0, 1))
        rec = {"image": x, "original_size": (h, w)}
        if i == 0:
            rec["point_coords"] = tf.apply_coords(rng.random((2, 3, 2)) * [w, h], (h, w)).astype(np.float32)
            rec["point_labels"] = np.array([[1, 0, 1], [1, 1, 0]])
        else:
            rec["boxes"] = tf.apply_boxes(np.array([[5, 10, 40, 80], [0, 0, 60, 60.]]), (h, w)).astype(np.float32)
            rec["mask_inputs"] = rng.standard_normal((2, 1, cfg.mask_input_size, cfg.mask_input_size)).astype(
                np.float32)
        recs_np.append(rec)
        recs_t.append({k: (_t(v) if isinstance(v, np.ndarray) else v) for k, v in rec.items()})
    for multimask in (True, False):
        ref, ref_trace = record(model, lambda: model(recs_t, multimask))
        ours = {}
        got = sam(recs_np, multimask, trace=ours)
        keys = [k for k in ours if not k.startswith("image_encoder") and ".attn_weights" not in k]
        compare(ref_trace, ours, RTOL, keys=keys, require=["mask_decoder", "mask_decoder#1", "prompt_encoder#1",
                                                           "image_encoder"], label=f"Sam.__call__ {multimask}")
        for i, (r, g) in enumerate(zip(ref, got)):
            check((r["masks"], r["iou_predictions"], r["low_res_logits"]),
                  (g["masks"], g["iou_predictions"], g["low_res_logits"]), f"Sam.__call__ image {i}")


@pytest.mark.vit_b
def test_predictor_end_to_end_vit_b(tmp_path):
    """One official encoder run on a non-square image larger than 1024, then every prompt kind."""
    model, sam = pair(VIT_B, 1234)
    image = make_image(1100, 1536, seed=4)  # larger than the model input, non-square
    op = OfficialPredictor(model)
    op.set_image(image)
    pred = SamPredictor(sam)
    pred.set_image(image)
    a, r = rel_err(op.features.cpu().numpy(), pred.get_image_embedding())
    print(f"vit_b embedding: abs {a:.3e} rel {r:.3e}")
    assert r <= LOGIT_RTOL
    run_prompts(model, op, pred, 1100, 1536, "e2e vit_b", trace=False)  # traces: test_mask_decoder vit_b
    # round trip through a file predicts identically
    pred.save_embedding(tmp_path / "vit_b.npz")
    p2 = SamPredictor(sam)
    p2.load_embedding(tmp_path / "vit_b.npz")
    kw = dict(point_coords=np.array([[700, 500]]), point_labels=np.array([1]))
    for a_, b_ in zip(pred.predict(**kw), p2.predict(**kw)):
        np.testing.assert_array_equal(a_, b_)


# ----------------------------------------------------------------------------- embeddings on disk

def test_save_load_embedding_round_trip(tmp_path):
    cfg = TINY_CONFIGS["one_head_global_first"]
    _, sam = pair(cfg)
    pred = SamPredictor(sam)
    pred.set_image(make_image(70, 45))
    path = tmp_path / "e.npz"
    pred.save_embedding(path)
    other = SamPredictor(sam)
    other.load_embedding(path)
    assert other.original_size == (70, 45) and other.input_size == pred.input_size
    np.testing.assert_array_equal(other.get_image_embedding(), pred.get_image_embedding())
    kw = dict(point_coords=np.array([[20, 30], [5, 5]]), point_labels=np.array([1, 0]), box=np.array([2, 3, 40, 60]))
    for a, b in zip(pred.predict(**kw), other.predict(**kw)):
        np.testing.assert_array_equal(a, b)


def test_load_embedding_refuses_bad_files(tmp_path):
    cfg = TINY_CONFIGS["pad_window"]
    _, sam = pair(cfg)
    pred = SamPredictor(sam)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ImageError, match="junk.npz"):
        pred.load_embedding(junk)
    with pytest.raises(ImageError, match="nothere.npz"):
        pred.load_embedding(tmp_path / "nothere.npz")
    G = cfg.image_embedding_size
    good = dict(format_version=1, embedding=np.zeros((1, cfg.prompt_embed_dim, G, G), np.float32),
                original_size=np.array([10, 20]), input_size=np.array([32, 64]))
    for bad_name, change, msg in [("missing.npz", {"embedding": None}, "missing embedding"),
                                  ("shape.npz", {"embedding": np.zeros((1, 3, G, G), np.float32)}, "needs float32"),
                                  ("version.npz", {"format_version": 99}, "version 99"),
                                  ("sizes.npz", {"input_size": np.array([10, 20])}, "bad sizes")]:
        d = {k: v for k, v in {**good, **change}.items() if v is not None}
        np.savez(tmp_path / bad_name, **d)
        with pytest.raises(ImageError, match=msg) as e:
            pred.load_embedding(tmp_path / bad_name)
        assert bad_name in str(e.value)
    assert not pred.is_image_set


# ----------------------------------------------------------------------------- bad prompts

def test_bad_prompts_raise_prompt_error():
    cfg = TINY_CONFIGS["pad_window"]
    _, sam = pair(cfg)
    pred = SamPredictor(sam)
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(point_coords=np.array([[1, 2]]), point_labels=np.array([1]))
    with pytest.raises(MinisamError):
        pred.get_image_embedding()
    assert issubclass(ImageNotSetError, MinisamError) and issubclass(ImageNotSetError, RuntimeError)
    pred.set_image(make_image(20, 30))
    M = cfg.mask_input_size
    cases = [
        (dict(point_coords=np.array([[1, 2], [3, 4]]), point_labels=np.array([1])), "one label per point"),
        (dict(point_coords=np.array([[1, 2]])), "point_labels must be supplied"),
        (dict(point_labels=np.array([1])), "without point_coords"),
        (dict(point_coords=np.array([[np.nan, 2]]), point_labels=np.array([1])), "NaN or inf"),
        (dict(point_coords=np.array([[np.inf, 2]]), point_labels=np.array([1])), "NaN or inf"),
        (dict(point_coords=np.array([1, 2, 3]), point_labels=np.array([1])), r"shape \[N, 2\]"),
        (dict(point_coords=np.array([[1, 2]]), point_labels=np.array([0.5])), "integers"),
        (dict(box=np.array([1, 2, 3])), "box must be 4 numbers"),
        (dict(box=["a", "b", "c", "d"]), "box must be numbers"),
        (dict(box=np.array([1, 2, np.nan, 4])), "NaN or inf"),
        (dict(mask_input=np.zeros((M, M))), rf"\[1, {M}, {M}\]"),
        (dict(mask_input=np.zeros((1, 1, M, M))), rf"\[1, {M}, {M}\]"),
    ]
    for kw, msg in cases:
        with pytest.raises(PromptError, match=msg):
            pred.predict(**kw)
    with pytest.raises(PromptError, match="batch sizes differ"):
        pred.predict_batch(boxes=np.zeros((2, 4)), point_coords=np.zeros((3, 1, 2)), point_labels=np.ones((3, 1)))
    with pytest.raises(PromptError, match=r"\[B, 4\]"):
        pred.predict_batch(boxes=np.zeros(4))
    with pytest.raises(ImageError):
        pred.set_image(np.zeros((5, 5, 3)), image_format="HSV")


def test_module_calls_of_the_official_notebooks():
    """``sam.to(device=...)`` and ``sam.eval()`` return the model; a non-CPU device warns once;
    ``sam.device``, ``predictor.device`` and ``predictor.model`` are there."""
    import warnings as w

    from minisam.errors import MinisamWarning
    cfg = TINY_CONFIGS["pad_window"]
    sam = Sam(cfg, nest({k: v.detach().numpy() for k, v in official_model(cfg, 0).state_dict().items()}))
    Sam._warned_device = False
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        assert sam.to(device="cpu") is sam and sam.eval() is sam
        assert not caught
        assert sam.to(device="cuda") is sam and sam.to("cuda:0") is sam
    assert [c.category for c in caught] == [MinisamWarning]
    predictor = SamPredictor(sam)
    assert sam.device == predictor.device == "cpu" and predictor.model is sam
