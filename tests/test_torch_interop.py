"""The torch-flavoured methods of the official API, without torch as a dependency.

``predict_torch``, ``set_torch_image``, ``apply_coords_torch``, ``apply_boxes_torch`` and
``Sam.__call__`` take ndarrays or torch tensors and return the kind they were given. Tensors
are read and written with no cast (``minisam.utils.tensors``), so the outputs are compared
**bit for bit** with the ndarray path: ``np.array_equal`` on every output, dtypes included.
``apply_*_torch`` are also bit-equal to the official tensor methods. And ``import minisam``,
with a prediction on ndarrays, runs in a process where ``import torch`` raises.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide as OfficialResize

from conftest import TINY_CONFIGS
from minisam import SamPredictor, build_sam
from minisam.utils.tensors import is_tensor
from minisam.utils.transforms import ResizeLongestSide
from test_checkpoint import BLOCK_TORCH
from test_predictor import make_image

CFG = TINY_CONFIGS["pad_window"]


@pytest.fixture(scope="module")
def sam(tiny_checkpoints):
    return build_sam(tiny_checkpoints["pad_window"][1])


def _same(a, b, label):
    a = a.numpy() if is_tensor(a) else a
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), label
    assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), f"{label}: not bit-equal"


def test_apply_torch_transforms_bit_equal_official():
    ours, ref = ResizeLongestSide(CFG.img_size), OfficialResize(CFG.img_size)
    rng = np.random.default_rng(0)
    for size in ((37, 91), (64, 64), (480, 353)):
        coords = rng.uniform(-5, 500, size=(4, 3, 2))                     # float64 pixels
        boxes = rng.uniform(0, 500, size=(5, 4)).astype(np.float32)
        for fn, x in (("apply_coords_torch", coords), ("apply_boxes_torch", boxes)):
            want = getattr(ref, fn)(torch.as_tensor(x), size)
            got_t = getattr(ours, fn)(torch.as_tensor(x), size)
            got_n = getattr(ours, fn)(x, size)
            assert is_tensor(got_t) and got_t.dtype == torch.float32 and isinstance(got_n, np.ndarray)
            _same(got_t, want.numpy(), f"{fn} tensor {size}")
            _same(got_n, want.numpy(), f"{fn} ndarray {size}")


def test_predict_torch_takes_and_returns_tensors(sam):
    pred = SamPredictor(sam)
    image = make_image(45, 70, seed=3)
    pred.set_image(image)
    t = pred.transform
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 70, size=(3, 2, 2))
    labs = np.array([[1, 0], [1, 1], [0, -1]])
    boxes = np.array([[5, 5, 40, 30], [10, 2, 60, 44], [0, 0, 70, 45]], np.float32)
    low = pred.predict_batch(pts, labs, multimask_output=False)[2]      # [3, 1, R, R] logits to feed back
    cases = {
        "points": dict(point_coords=t.apply_coords_torch(pts, image.shape[:2]), point_labels=labs),
        "boxes": dict(point_coords=None, point_labels=None, boxes=t.apply_boxes_torch(boxes, image.shape[:2])),
        "points+boxes+masks": dict(point_coords=t.apply_coords_torch(pts, image.shape[:2]), point_labels=labs,
                                   boxes=t.apply_boxes_torch(boxes, image.shape[:2]), mask_input=low),
    }
    for name, kw in cases.items():
        for multi in (True, False):
            for logits in (False, True):
                arrays = pred.predict_torch(**kw, multimask_output=multi, return_logits=logits)
                tensors = pred.predict_torch(**{k: None if v is None else torch.as_tensor(v) for k, v in kw.items()},
                                             multimask_output=multi, return_logits=logits)
                assert all(isinstance(a, np.ndarray) for a in arrays)
                assert all(is_tensor(x) for x in tensors)
                for a, x, what in zip(arrays, tensors, ("masks", "iou", "low_res")):
                    _same(x, a, f"{name} multimask={multi} logits={logits} {what}")
    # predict_batch (pixels) is apply_coords_torch + predict_torch, to the bit
    for a, b in zip(pred.predict_batch(pts, labs, boxes=boxes),
                    pred.predict_torch(**{k: v for k, v in cases["points+boxes+masks"].items() if k != "mask_input"})):
        _same(a, b, "predict_batch vs predict_torch")
    # the notebook's line: masks[0].cpu().numpy()
    masks, _, _ = pred.predict_torch(None, None, boxes=torch.as_tensor(cases["boxes"]["boxes"]), multimask_output=False)
    assert masks[0].cpu().numpy().dtype == np.bool_ and masks.shape == (3, 1, 45, 70)


def test_set_torch_image_equals_set_image(sam):
    image = make_image(50, 33, seed=4)
    a, b, c = SamPredictor(sam), SamPredictor(sam), SamPredictor(sam)
    a.set_image(image)
    resized = b.transform.apply_image(image)                             # [h, w, 3] uint8
    b.set_torch_image(torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :], image.shape[:2])
    c.set_torch_image(resized.transpose(2, 0, 1)[None], image.shape[:2])
    for p in (b, c):
        _same(p.get_image_embedding(), a.get_image_embedding(), "set_torch_image embedding")
        assert p.original_size == a.original_size and p.input_size == a.input_size


def test_sam_call_with_tensors(sam):
    t = ResizeLongestSide(CFG.img_size)
    images = [make_image(40, 60, seed=5), make_image(64, 31, seed=6)]
    rng = np.random.default_rng(2)

    def record(img, as_tensor):
        conv = torch.as_tensor if as_tensor else np.asarray
        boxes = t.apply_boxes_torch(np.array([[2, 3, 30, 25], [10, 10, 20, 20]], np.float32), img.shape[:2])
        pts = t.apply_coords_torch(rng.uniform(0, 30, size=(2, 1, 2)), img.shape[:2])
        return {"image": conv(np.ascontiguousarray(t.apply_image(img).transpose(2, 0, 1))),
                "boxes": conv(boxes), "point_coords": conv(pts), "point_labels": conv(np.ones((2, 1), np.int64)),
                "original_size": img.shape[:2]}

    state = rng.bit_generator.state
    arrays = sam([record(i, False) for i in images], multimask_output=False)
    rng.bit_generator.state = state
    tensors = sam([record(i, True) for i in images], multimask_output=False)
    for ra, rt in zip(arrays, tensors):
        assert set(ra) == set(rt) == {"masks", "iou_predictions", "low_res_logits"}
        for k in ra:
            assert isinstance(ra[k], np.ndarray) and is_tensor(rt[k])
            _same(rt[k], ra[k], f"Sam.__call__ {k}")


def test_import_and_predict_without_torch(tiny_checkpoints):
    """The NumPy path never imports torch, also inside the methods that accept tensors."""
    path = tiny_checkpoints["pad_window"][1]
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import sys, numpy as np
        try:
            import torch
            raise SystemExit("torch was importable")
        except ImportError:
            pass
        import minisam
        from minisam import SamPredictor, build_sam
        sam = build_sam({path!r})
        p = SamPredictor(sam)
        p.set_image(np.full((40, 30, 3), 120, np.uint8))
        c = p.transform.apply_coords_torch(np.array([[[10.0, 12.0]]]), (40, 30))
        b = p.transform.apply_boxes_torch(np.array([[1, 2, 20, 30]]), (40, 30))
        m, s, l = p.predict_torch(c, np.array([[1]]), boxes=b)
        out = sam([{{"image": np.zeros((3, 64, 48), np.uint8), "original_size": (40, 30), "boxes": b}}], False)
        print(type(m).__name__, m.shape, type(out[0]["masks"]).__name__, "torch" in sys.modules)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ndarray", "(1,", "3,", "40,", "30)", "ndarray", "False"]


def test_apply_image_torch_is_refused_by_name():
    from minisam import NotSupportedError
    with pytest.raises(NotSupportedError, match="apply_image_torch .* use|apply_image_torch"):
        ResizeLongestSide(64).apply_image_torch(torch.zeros(1, 3, 10, 10))
    assert issubclass(NotSupportedError, NotImplementedError)
