"""Prompt encoder backward: every parameter gradient against torch autograd on the official module.

For each prompt kind (one point; several points labelled 1 / 0 / -1 with the padding point; a
box; a box with points; a mask with points; a batch of boxes) on every ``TINY_CONFIGS`` entry,
the randomized official ``PromptEncoder`` runs ``forward`` and ``get_dense_pe``, and autograd
differentiates the random linear functional L = sum(sparse Rs) + sum(dense Rd) + sum(pe Rp). The
Gaussian matrix is a buffer in the official code; ``requires_grad_`` is set on it so that its
gradient is checked too. minisam's ``prompt_encoder_backward(Rs, Rd)`` plus
``dense_pe_backward(Rp)`` must give the same gradients for the same set of parameters (a
parameter the forward did not use has no gradient on either side), and the forwards must agree.

Bounds, max|ours - ref| <= rtol * max|ref| per key:

- float64, rtol 1e-9: float64 rounding is ~1e-16 per op, and the longest chain (three convs,
  two LayerNorms, two GELUs, sums over a few hundred pixels) is a few dozen ops deep, so
  agreement is ~1e-14; 1e-9 leaves room while catching any wrong term, which is O(1).
- float32, rtol 1e-4: float32 rounding is ~1e-7 per op over a few dozen ops, and sin / cos of
  arguments of size ~20 carry ~ulp(20) ~ 2e-6 absolute error in both libraries. The float32
  gradients are measured against float64 autograd on the same float32 values (the truth), and
  where torch's own float32 gradient is itself off the truth by more than 1e-5 (an
  ill-conditioned LayerNorm2d over 2 channels, see ``test_prompt_encoder_backward``) the bound
  is 10x torch's own error instead.

float64 and the official code: the official PE forces float32 in two places, the normalised
coordinates (``forward_with_coords`` calls ``coords.to(torch.float)``) and the dense grid
(``forward`` builds it with ``dtype=torch.float32``), so a ``.double()`` module raises in the
projection ("expected m1 and m2 to have the same dtype"). The float64 reference therefore wraps
``pe_layer._pe_encoding`` to promote its coordinates to the Gaussian's dtype first, the promotion
the matmul lacks; everything after it (projection, sin / cos, the sums into every gradient) runs
in float64 on the official code. minisam mirrors the cast: its coordinates are rounded to float32
and then promoted, so both sides encode the same points. The coordinates are data and are not
differentiated, so the float64 checks are exact for every gradient; only the points encoded are
float32-rounded. ``test_pe_encoding_coords_grad`` checks the coordinate gradient of the PE on the
unwrapped ``_pe_encoding``, which has no cast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minisam.backward.prompt_encoder import (dense_pe_backward, dense_pe_forward, pe_encoding_backward,
                                             pe_encoding_forward, prompt_encoder_backward, prompt_encoder_forward)
from minisam.checkpoints.param_tree import flatten, nest
from minisam.modeling.prompt_encoder import get_dense_pe, prompt_encoder

from conftest import TINY_CONFIGS
from official import build_official, randomize, rel_err, torch_device

RTOL = {np.float64: 1e-9, np.float32: 1e-4}
FORWARD_RTOL = 1e-5  # float32 forward against minisam.modeling (same arithmetic, other kernels)
GAUSSIAN = "pe_layer.positional_encoding_gaussian_matrix"
KINDS = ["one_point", "points_labels", "box", "box_points", "mask_points", "boxes_batch"]

_MODELS = {}


def _official(name, dtype):
    """(official PromptEncoder in ``dtype`` with the Gaussian requiring grad, minisam params)."""
    key = (name, dtype)
    if key not in _MODELS:
        cfg = TINY_CONFIGS[name]
        sam = randomize(build_official(cfg), list(TINY_CONFIGS).index(name))
        sam = sam.to(torch_device(), torch.float64 if dtype == np.float64 else torch.float32)
        p = nest({k: v.detach().cpu().numpy() for k, v in sam.state_dict().items()})["prompt_encoder"]
        enc = sam.prompt_encoder
        gaussian = enc.pe_layer.positional_encoding_gaussian_matrix
        gaussian.requires_grad_(True)
        if dtype == np.float64:
            official_pe = enc.pe_layer._pe_encoding  # the bound official method
            enc.pe_layer._pe_encoding = lambda coords: official_pe(coords.to(gaussian.dtype))
        _MODELS[key] = (enc, p)
    return _MODELS[key]


def _prompts(cfg, kind, dtype, rng):
    """(points, boxes, masks) as numpy arrays in the model input frame."""
    S, R = cfg.img_size, cfg.mask_input_size

    def pts(B, labels):
        return (rng.random((B, len(labels[0]), 2)) * S).astype(dtype), np.array(labels, np.int64)

    def box(B):
        return np.sort(rng.random((B, 2, 2)) * S, axis=1).reshape(B, 4).astype(dtype)

    if kind == "one_point":
        return pts(1, [[1]]), None, None
    if kind == "points_labels":
        return pts(2, [[1, 0, -1, 1], [0, -1, 1, 1]]), None, None
    if kind == "box":
        return None, box(1), None
    if kind == "box_points":
        return pts(2, [[1, 0, -1], [0, 1, 1]]), box(2), None
    if kind == "mask_points":
        return pts(2, [[1, 0], [-1, 1]]), None, (rng.standard_normal((2, 1, R, R)) * 4).astype(dtype)
    if kind == "boxes_batch":
        return None, box(3), None
    raise ValueError(kind)


def _t(a):
    return None if a is None else torch.as_tensor(a).to(torch_device())


def _report(label, rows, rtol):
    print(f"\n[{label}] tolerance {rtol:g} x max|ref|")
    bad = []
    for key, (a, r) in rows.items():
        ok = r <= rtol
        print(f"  {key:<48s} abs {a:.3e}  rel {r:.3e}  {'ok' if ok else 'FAIL'}")
        if not ok:
            bad.append(key)
    assert not bad, f"{label}: over tolerance {rtol:g}: {bad}"


def _autograd(name, dtype, points, boxes, masks, Rs, Rd, Rp):
    """Official forward outputs (sparse, dense, pe) and the gradients of L, keyed like the state dict."""
    enc, _ = _official(name, dtype)
    tensors = dict(enc.named_parameters())
    tensors[GAUSSIAN] = enc.pe_layer.positional_encoding_gaussian_matrix
    for t in tensors.values():
        t.grad = None

    def cast(a):  # float arrays to the model's dtype (exact from float32 to float64), labels unchanged
        return None if a is None else _t(a.astype(dtype) if a.dtype.kind == "f" else a)
    tp = None if points is None else (cast(points[0]), cast(points[1]))
    sparse, dense = enc(points=tp, boxes=cast(boxes), masks=cast(masks))
    pe = enc.get_dense_pe()
    loss = (sparse * cast(Rs)).sum() + (dense * cast(Rd)).sum() + (pe * cast(Rp)).sum()
    loss.backward()
    outs = [t.detach().cpu().numpy() for t in (sparse, dense, pe)]
    return outs, {k: t.grad.detach().cpu().numpy() for k, t in tensors.items() if t.grad is not None}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_prompt_encoder_backward(name, kind, dtype):
    """float64: ours against float64 autograd. float32: ours against float64 autograd on the same
    (float32-representable) parameters and inputs, bound max(1e-4, 10 x torch's own float32
    error), the error against torch's float32 gradient printed beside it. The max() is for the
    first LayerNorm2d of the mask convs, over m/4 = 2 channels in two configs: where a pixel's two
    channels nearly coincide its rstd nears 1 / sqrt(eps) = 1e3, so float32 rounding is amplified
    and torch's own float32 gradient of ``mask_downscaling.0`` is ~2e-4 off the float64 one."""
    cfg = TINY_CONFIGS[name]
    _, p = _official(name, dtype)
    rng = np.random.default_rng(list(KINDS).index(kind))
    points, boxes, masks = _prompts(cfg, kind, dtype, rng)

    # minisam: the gradient of L, with Rs, Rd, Rp being dL/dsparse, dL/ddense, dL/dpe.
    (sparse, dense), cache = prompt_encoder_forward(p, cfg, points, boxes, masks)
    pe, pe_cache = dense_pe_forward(p, cfg)
    Rs, Rd, Rp = (rng.standard_normal(a.shape).astype(dtype) for a in (sparse, dense, pe))
    ours = flatten(prompt_encoder_backward(Rs, Rd, cache))
    ours[GAUSSIAN] = ours.get(GAUSSIAN, 0) + flatten(dense_pe_backward(Rp, pe_cache))[GAUSSIAN]

    ref_outs, ref = _autograd(name, dtype, points, boxes, masks, Rs, Rd, Rp)
    assert sorted(ours) == sorted(ref), f"gradient keys differ: ours {sorted(ours)}, autograd {sorted(ref)}"
    for k, g in ours.items():
        assert g.dtype == dtype, f"{k}: {g.dtype}"
    label = f"prompt encoder backward {name}/{kind}/{np.dtype(dtype).name}"
    outs = dict(zip(("sparse", "dense", "dense_pe"), (sparse, dense, pe)))
    if dtype == np.float64:
        rows = {f"forward {n}": rel_err(r, o) for (n, o), r in zip(outs.items(), ref_outs)}
        rows.update({f"grad {k}": rel_err(ref[k], ours[k]) for k in sorted(ref)})
        _report(label, rows, RTOL[dtype])
        return
    truth_outs, truth = _autograd(name, np.float64, points, boxes, masks, Rs, Rd, Rp)
    assert sorted(truth) == sorted(ref)
    print(f"\n[{label}] vs float64 autograd: max(1e-4, 10 x torch float32's error) x max|ref|")
    bad = []
    pairs = [(f"forward {n}", o, r, t) for (n, o), r, t in zip(outs.items(), ref_outs, truth_outs)]
    pairs += [(f"grad {k}", ours[k], ref[k], truth[k]) for k in sorted(ref)]
    for key, o, r, t in pairs:
        a, rel = rel_err(t, o)
        torch_rel = rel_err(t, r)[1]
        bound = max(RTOL[dtype], 10 * torch_rel)
        ok = rel <= bound
        print(f"  {key:<48s} abs {a:.3e}  rel {rel:.3e} (torch f32 {torch_rel:.3e}; ours vs torch f32 "
              f"{rel_err(r, o)[1]:.3e})  {'ok' if ok else 'FAIL'}")
        if not ok:
            bad.append(key)
    assert not bad, f"{label}: over tolerance: {bad}"


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_pe_encoding_coords_grad(name):
    """The coordinate gradient of the PE (not used by the prompt encoder's backward, whose
    coordinates are data) against autograd on the official ``_pe_encoding``, in float64."""
    enc, p = _official(name, np.float64)
    rng = np.random.default_rng(11)
    coords = rng.random((3, 5, 2))
    dout = rng.standard_normal((3, 5, TINY_CONFIGS[name].prompt_embed_dim))
    gaussian = enc.pe_layer.positional_encoding_gaussian_matrix
    gaussian.grad = None
    ct = _t(coords).requires_grad_(True)
    (type(enc.pe_layer)._pe_encoding(enc.pe_layer, ct) * _t(dout)).sum().backward()
    out, cache = pe_encoding_forward(p["pe_layer"]["positional_encoding_gaussian_matrix"], coords)
    dcoords, grads = pe_encoding_backward(dout, cache)
    rows = {"grad coords": rel_err(ct.grad.cpu().numpy(), dcoords),
            "grad gaussian": rel_err(gaussian.grad.cpu().numpy(), grads["positional_encoding_gaussian_matrix"])}
    _report(f"pe encoding {name}", rows, RTOL[np.float64])


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_forward_equals_modeling_float32(name):
    """In float32 the backward module's forward is the readable forward of minisam.modeling."""
    cfg = TINY_CONFIGS[name]
    _, p = _official(name, np.float32)
    rng = np.random.default_rng(5)
    rows = {}
    for kind in KINDS:
        points, boxes, masks = _prompts(cfg, kind, np.float32, rng)
        (sparse, dense), _ = prompt_encoder_forward(p, cfg, points, boxes, masks)
        ref_sparse, ref_dense = prompt_encoder(p, cfg, points, boxes, masks)
        assert sparse.dtype == dense.dtype == np.float32
        rows[f"{kind} sparse"] = rel_err(ref_sparse, sparse)
        rows[f"{kind} dense"] = rel_err(ref_dense, dense)
    rows["dense_pe"] = rel_err(get_dense_pe(p, cfg), dense_pe_forward(p, cfg)[0])
    _report(f"forward vs minisam.modeling {name}", rows, FORWARD_RTOL)
