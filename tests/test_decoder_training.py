"""Training parity: the NumPy decoder trainer against the torch trainer, step by step.

Both sides start from the same randomized official model (micro's configuration) and train
its prompt encoder and mask decoder on frozen image embeddings, with the full 11-round
interactive simulation (a point or a box first, then clicks from the error region, the fed-back
logits), the paper's losses, gradient clipping and AdamW with the paper's betas:
- torch: :func:`minisam.training.micro._interactive_rounds` on the official modules, autograd,
  ``torch.nn.utils.clip_grad_norm_`` and ``torch.optim.AdamW``;
- NumPy: :func:`minisam.training.decoder_training.interactive_rounds`, the backward of
  :mod:`minisam.backward`, :mod:`minisam.training.optim`.
Each step draws its scenes' targets, first prompt and clicks from one seeded generator per side,
the same seed, so the two see the same batches as long as their predictions agree.

Bounds (stated before measuring, never loosened to pass):
- float64: the loss of every step within 1e-4 relative, and after the last step every trained
  weight within 1e-6 x max|weight| of torch's. Rounding differences are ~1e-15 per step; what
  the bounds allow for is a click drawn from an error region whose boundary pixel flips.
- float32: the loss of every step within 1e-2 relative (a flipped pixel of a float32 threshold
  moves a click, after which the two runs see slightly different prompts).
The measured worst values are printed.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from minisam.checkpoints.param_tree import flatten, nest
from minisam.config import MICRO, make_config
from minisam.training.decoder_training import TRAINED_PARTS, interactive_rounds
from minisam.training.micro import _interactive_rounds
from minisam.training.optim import adamw_init, adamw_step, clip_grad_norm
from minisam.training.shapes import make_scene

from conftest import official_model

# micro's decoder on a 64-pixel input (grid 8): the same widths, a quarter of the pixels
CFG = make_config(**{**MICRO.to_dict(), "img_size": 64})
LR, WEIGHT_DECAY, CLIP = 2e-3, 0.1, 1.0


def _batches(cfg, steps, seed=5, images=2, masks_per_image=2):
    """(embeddings [I, C, G, G] fixed, per step (owner, targets [P, S, S], first prompt))."""
    rng = np.random.default_rng(seed)
    C, G, S = cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.img_size
    scenes = [make_scene(rng, S) for _ in range(4)]
    embeddings = rng.standard_normal((len(scenes), C, G, G))
    batches = []
    for _ in range(steps):
        picks = rng.choice(len(scenes), images, replace=False)
        owner, targets = [], []
        for i in picks:
            chosen = rng.choice(len(scenes[i].masks), min(masks_per_image, len(scenes[i].masks)), replace=False)
            owner += [i] * len(chosen)
            targets += [scenes[i].masks[j] for j in chosen]
        batches.append((np.array(owner), np.stack(targets), "box" if rng.random() < 0.5 else "point"))
    return embeddings, batches


def _torch_model(dtype):
    model = copy.deepcopy(official_model(CFG)).cpu().to(dtype)
    pe_layer = model.prompt_encoder.pe_layer
    gaussian = pe_layer.positional_encoding_gaussian_matrix
    official_pe = pe_layer._pe_encoding  # promote the float32 coordinates (see test_backward_prompt_encoder)
    pe_layer._pe_encoding = lambda coords: official_pe(coords.to(gaussian.dtype))
    return model


def train_both(steps, dtype):
    tdtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    model = _torch_model(tdtype)
    trained = [p for part in TRAINED_PARTS for p in getattr(model, part).parameters()]
    opt = torch.optim.AdamW(trained, lr=LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.999), foreach=False)
    params = nest({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
    ours = {part: params[part] for part in TRAINED_PARTS}
    state = adamw_init(ours)
    embeddings, batches = _batches(CFG, steps)
    emb_t = torch.tensor(embeddings, dtype=tdtype)
    emb = embeddings.astype(dtype)
    losses = []
    for step, (owner, targets, first) in enumerate(batches):
        loss_t = _interactive_rounds(model, emb_t[owner], targets, np.random.default_rng(100 + step), first,
                                     CFG.img_size, graded_rounds=4, rounds=None, iou_outputs="all")
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(trained, CLIP)
        opt.step()
        loss, grads = interactive_rounds(params, CFG, emb[owner], targets, np.random.default_rng(100 + step), first,
                                         CFG.img_size, graded_rounds=4, rounds=None, iou_outputs="all")
        clip_grad_norm(grads, CLIP)
        adamw_step(ours, grads, state, lr=LR, weight_decay=WEIGHT_DECAY)
        losses.append((float(loss_t.detach()), float(loss)))
    ref_weights = {k: v.detach().numpy() for k, v in model.state_dict().items() if k.split(".")[0] in TRAINED_PARTS}
    return np.array(losses), ref_weights, flatten(ours)


def _report(losses, ref_weights, our_weights):
    loss_rel = np.abs(losses[:, 1] - losses[:, 0]) / np.abs(losses[:, 0])
    weight_rel = {k: np.abs(our_weights[k] - v).max() / max(np.abs(v).max(), 1e-30) for k, v in ref_weights.items()}
    worst = max(weight_rel, key=weight_rel.get)
    print(f"\nloss: first {losses[0, 0]:.6f} last {losses[-1, 0]:.6f}; worst step rel {loss_rel.max():.3e}; "
          f"weights: worst rel {weight_rel[worst]:.3e} ({worst})")
    return loss_rel, weight_rel


@pytest.mark.slow
def test_training_parity_float64():
    losses, ref_weights, our_weights = train_both(50, np.float64)
    assert set(ref_weights) == set(our_weights), set(ref_weights) ^ set(our_weights)
    loss_rel, weight_rel = _report(losses, ref_weights, our_weights)
    assert loss_rel.max() <= 1e-4, loss_rel
    assert max(weight_rel.values()) <= 1e-6, sorted(weight_rel.items(), key=lambda kv: -kv[1])[:5]
    assert losses[-10:, 0].mean() < losses[:10, 0].mean()  # it trains: the loss falls


def test_training_parity_float64_short():
    """The quick version of the above for the fast loop: 5 steps."""
    losses, ref_weights, our_weights = train_both(5, np.float64)
    loss_rel, weight_rel = _report(losses, ref_weights, our_weights)
    assert loss_rel.max() <= 1e-4 and max(weight_rel.values()) <= 1e-6


@pytest.mark.slow
def test_training_parity_float32():
    losses, ref_weights, our_weights = train_both(50, np.float32)
    loss_rel, _ = _report(losses, ref_weights, our_weights)
    assert loss_rel.max() <= 1e-2, loss_rel
