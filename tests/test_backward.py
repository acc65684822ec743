"""Gradient parity of the NumPy mask-decoder backward (:mod:`minisam.backward`) against torch autograd.

The official ``MaskDecoder``, every parameter and buffer randomized (``randomize``), runs forward
and ``backward()`` on the loss L = sum(masks * Rm) + sum(iou * Ri), with Rm and Ri random: every
output element gets its own random weight, so no gradient path can cancel out unseen. minisam's
forward and backward run on the same weights and inputs. Compared, key by key:
- the gradient of **every parameter** (a parameter minisam gives no gradient for fails the test).
  The key projections' biases have a true gradient of exactly 0 (softmax ignores a constant
  added to a row of scores); both sides must be 0 to the tolerance on the scale of the same
  layer's weight gradient;
- the gradient of every official module's output, keyed by its module path (forward hooks call
  ``retain_grad``), so a wrong step is named where it first goes wrong;
- the gradients of the inputs: the image embedding, the image PE, the sparse and dense prompt
  embeddings (a later encoder backward chains onto the first).

Tolerances, relative to max|ref| of each tensor (never loosened to pass; a failure is a bug):
- float64: 1e-9. Both sides compute the same sums in a different order; float64 rounding is
  ~1e-16 per operation and the decoder is a few hundred operations deep, LayerNorms with small
  variances amplifying it by at most ~1e3. Measured worst: printed per key.
- float32: 1e-4. The same argument at ~6e-8 per operation; the forward parity tests use the
  same bound for the decoder's intermediates (``tests/test_mask_decoder.py``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from minisam.backward.common import (gelu_backward, gelu_forward, layer_norm_backward, layer_norm_forward,
                                     linear_backward, linear_forward, softmax_backward, softmax_forward,
                                     upsample_bilinear_backward, upsample_bilinear_forward)
from minisam.backward.mask_decoder import mask_decoder_backward, mask_decoder_forward
from minisam.checkpoints.param_tree import flatten, nest
from minisam.config import VIT_B
from minisam.modeling.mask_decoder import mask_decoder as readable_mask_decoder

from conftest import TINY_CONFIGS, official_model
from official import assert_same_params, compare, grads_of, record_grads, rel_err, torch_device

RTOL = {np.float64: 1e-9, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}

# (prompts N, sparse tokens Ns): one point and its padding point, four points and a box, a batch of boxes
PROMPT_SHAPES = {"one_point": (1, 2), "points_and_box": (1, 6), "batch_of_boxes": (3, 2)}


def _numpy(t):
    return t.detach().cpu().numpy()


def decoder_grads_both(cfg, kind, multimask, dtype, seed=0):
    """Run the official decoder and minisam's on the same random inputs; return
    (reference, ours), each a dict of forward outputs, input grads, parameter grads and module grads."""
    tdtype, dev = TORCH_DTYPE[dtype], torch_device()
    decoder = copy.deepcopy(official_model(cfg).mask_decoder).to(tdtype)
    rng = np.random.default_rng(seed)
    N, Ns = PROMPT_SHAPES[kind]
    C, G = cfg.prompt_embed_dim, cfg.image_embedding_size
    K_out = cfg.num_multimask_outputs if multimask else 1
    R = 4 * G
    inputs = {"image_embeddings": rng.standard_normal((1, C, G, G)), "image_pe": rng.standard_normal((1, C, G, G)),
              "sparse": rng.standard_normal((N, Ns, C)), "dense": rng.standard_normal((N, C, G, G))}
    inputs = {k: v.astype(dtype) for k, v in inputs.items()}
    r_masks = rng.standard_normal((N, K_out, R, R)).astype(dtype)  # [N, K', R, R] the loss's weights
    r_iou = rng.standard_normal((N, K_out)).astype(dtype)  # [N, K']

    leaves = {k: torch.tensor(v, device=dev, requires_grad=True) for k, v in inputs.items()}
    outputs, remove = record_grads(decoder, prefix="mask_decoder.")
    try:
        masks, iou = decoder(leaves["image_embeddings"], leaves["image_pe"], leaves["sparse"], leaves["dense"],
                             multimask)
        masks.retain_grad()
        iou.retain_grad()
        loss = (masks * torch.tensor(r_masks, device=dev)).sum() + (iou * torch.tensor(r_iou, device=dev)).sum()
        loss.backward()
    finally:
        remove()
    ref = {"forward": {"masks": _numpy(masks), "iou": _numpy(iou)},
           "inputs": {k: _numpy(t.grad) for k, t in leaves.items()},
           "params": {k: _numpy(v.grad) for k, v in decoder.named_parameters()},
           "modules": {**grads_of(outputs), "mask_decoder": (_numpy(masks.grad), _numpy(iou.grad))}}

    p = nest({k: _numpy(v) for k, v in decoder.state_dict().items()})
    (m, i), cache = mask_decoder_forward(p, cfg, inputs["image_embeddings"], inputs["image_pe"], inputs["sparse"],
                                         inputs["dense"], multimask)
    trace = {}
    d_emb, d_pe, d_sparse, d_dense, g = mask_decoder_backward(r_masks, r_iou, cache, trace)
    ours = {"forward": {"masks": m, "iou": i},
            "inputs": {"image_embeddings": d_emb, "image_pe": d_pe, "sparse": d_sparse, "dense": d_dense},
            "params": flatten(g), "modules": trace}
    return ref, ours


def check_all(ref, ours, rtol, label):
    assert_same_params(ref["params"], ours["params"], label)
    unmatched = sorted(set(ours["modules"]) - set(ref["modules"]))
    assert not unmatched, f"{label}: module gradients with no reference: {unmatched}"
    # A key projection's bias adds q . b_k to every score of a softmax row, which the softmax
    # ignores: its true gradient is exactly 0 and both sides return rounding noise. Each is held
    # to the tolerance on the scale of the same projection's weight gradient instead.
    zero = [k for k in ref["params"] if k.endswith("k_proj.bias")]
    for k in zero:
        scale = np.abs(ref["params"][k[:-len("bias")] + "weight"]).max()
        worst = max(np.abs(ref["params"][k]).max(), np.abs(ours["params"][k]).max())
        assert worst <= rtol * scale, f"{label}: {k} should be ~0, got {worst:.3e} against weight grad {scale:.3e}"
    for part in ("forward", "inputs", "params", "modules"):
        keys = [k for k in ours[part] if k not in zero] if part == "params" else None
        compare(ref[part], ours[part], rtol, keys=keys, label=f"{label} {part}")
    # every official module on the loss's path has its gradient checked, not only those minisam names
    assert set(ref["modules"]) <= set(ours["modules"]), sorted(set(ref["modules"]) - set(ours["modules"]))


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", list(PROMPT_SHAPES))
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_decoder_backward_float64_tiny(name, kind, multimask):
    ref, ours = decoder_grads_both(TINY_CONFIGS[name], kind, multimask, np.float64)
    check_all(ref, ours, RTOL[np.float64], f"{name}/{kind}/multimask={multimask}/float64")


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_decoder_backward_float32_tiny(name):
    ref, ours = decoder_grads_both(TINY_CONFIGS[name], "points_and_box", True, np.float32)
    check_all(ref, ours, RTOL[np.float32], f"{name}/float32")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("multimask", [True, False])
def test_decoder_backward_vit_b(multimask, dtype):
    """At vit_b decoder size: C 256, G 64 (4096 image tokens), 8 heads, MLP 2048, R 256."""
    ref, ours = decoder_grads_both(VIT_B, "points_and_box", multimask, dtype)
    check_all(ref, ours, RTOL[dtype], f"vit_b/multimask={multimask}/{dtype.__name__}")


def test_decoder_forward_equals_readable_forward():
    """In float32 the forward that keeps the backward's cache is the readable forward of
    ``minisam.modeling.mask_decoder`` (same arithmetic; LayerNorm statistics in float32 here,
    float64 there, hence 1e-5 rather than bit equality)."""
    cfg = TINY_CONFIGS["pad_window"]
    decoder = official_model(cfg).mask_decoder
    p = nest({k: _numpy(v) for k, v in decoder.state_dict().items()})
    rng = np.random.default_rng(3)
    C, G = cfg.prompt_embed_dim, cfg.image_embedding_size
    emb, pe = (rng.standard_normal((1, C, G, G)).astype(np.float32) for _ in range(2))
    sparse = rng.standard_normal((2, 3, C)).astype(np.float32)
    dense = rng.standard_normal((2, C, G, G)).astype(np.float32)
    (m, i), _ = mask_decoder_forward(p, cfg, emb, pe, sparse, dense, True)
    m_ref, i_ref = readable_mask_decoder(p, cfg, emb, pe, sparse, dense, True)
    assert rel_err(m_ref, m)[1] <= 1e-5 and rel_err(i_ref, i)[1] <= 1e-5, (rel_err(m_ref, m), rel_err(i_ref, i))
