"""Training SAM's prompt encoder and mask decoder in NumPy, on frozen image embeddings.

Paper: Kirillov et al. 2023, section 3 ("Losses and training") and appendix A ("Training
algorithm"): each target mask is prompted by a point or a box, then 10 more rounds follow,
each adding a click sampled from the error region of the previous prediction, or (rounds 8
and last) feeding back only the previous low-res logits; every round's masks are supervised
with 20 focal : 1 dice on the best of the outputs, plus the IoU head's MSE.

:func:`interactive_rounds` is :func:`minisam.training.micro._interactive_rounds` (the torch
trainer of ``minisam train-micro``) in NumPy, step for step and draw for draw from the same
``rng``: the forwards of :mod:`minisam.backward`, the losses of :mod:`minisam.training.losses`
with their hand-derived gradients, and the backwards of :mod:`minisam.backward`.
``tests/test_decoder_training.py`` runs both from the same weights and batches and compares
the losses and the weights after every AdamW step.

What is trained: every parameter of ``prompt_encoder`` and ``mask_decoder``. The prompt
encoder's Gaussian matrix is a buffer in the official code (never trained), so its gradient
is not computed here; gradients do not flow from one round into the next (the fed-back logits
are detached, as in the torch trainer). The image embeddings are frozen here; with
``embedding_grad`` :func:`interactive_rounds` also returns their gradient, which the whole-model
trainer (:mod:`minisam.training.micro_numpy`) sends on into the image encoder's backward.

Shapes (``docs/shapes.md``): N target masks (one prompt each), C, G, R = 4G the low-res side,
S the input side, K' masks per prompt, Np clicks so far, Ns sparse tokens.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from minisam.backward.common import add_grads, upsample_bilinear_backward, upsample_bilinear_forward
from minisam.backward.mask_decoder import mask_decoder_backward, mask_decoder_forward
from minisam.backward.prompt_encoder import dense_pe_forward, prompt_encoder_backward, prompt_encoder_forward
from minisam.training.interactive import (MASK_ONLY, next_click, noisy_box, round_schedule, sample_foreground_point,
                                          use_multimask)
from minisam.training.losses import sam_loss

#: The parts of the parameter tree this trainer updates.
TRAINED_PARTS = ("prompt_encoder", "mask_decoder")


def interactive_rounds(params, cfg, embeddings, targets, rng, first_prompt: str, size: int, graded_rounds: int = 4,
                       rounds: Optional[int] = None, iou_outputs: str = "best", embedding_grad: bool = False) -> Tuple:
    """The 11 rounds for N target masks, with the gradient of their loss.

    params: the model's parameter tree (``prompt_encoder`` and ``mask_decoder`` are used);
    embeddings [N, C, G, G] (each target's image embedding), targets [N, S, S] bool.
    Only ``graded_rounds`` rounds are supervised (round 1 and a random choice of the others),
    as in the torch trainer. Returns ``(loss, grads)``: the mean over the supervised rounds of
    the mean over N of :func:`sam_loss` on the low-res logits upsampled to S x S, and its
    gradient as ``{"prompt_encoder": ..., "mask_decoder": ...}`` keyed like ``params``.
    With ``embedding_grad``, ``(loss, grads, dembeddings [N, C, G, G])``: the gradient of the
    loss with respect to each target's image embedding, for the encoder's backward.
    """
    pe_params, dec_params = params["prompt_encoder"], params["mask_decoder"]
    dtype = dec_params["iou_token"]["weight"].dtype
    N = len(targets)
    dense_pe, _ = dense_pe_forward(pe_params, cfg)  # [1, C, G, G]
    dense_pe = dense_pe.astype(dtype, copy=False)
    coords = np.zeros((N, 0, 2), np.float32)  # [N, Np, 2]
    labels = np.zeros((N, 0), np.int64)  # [N, Np]
    boxes = None
    if first_prompt == "box":
        boxes = np.stack([noisy_box(t, rng) for t in targets])  # [N, 4]
    else:
        coords = np.stack([sample_foreground_point(t, rng) for t in targets])[:, None]  # [N, 1, 2]
        labels = np.ones((N, 1), np.int64)  # [N, 1]
    schedule = round_schedule(rng)[:rounds]
    graded = {0} | set(rng.choice(np.arange(1, len(schedule)), size=max(0, min(graded_rounds, len(schedule)) - 1),
                                  replace=False).tolist())
    mask_input, preds, total, grads = None, None, 0.0, {}
    dembeddings = np.zeros_like(embeddings) if embedding_grad else None  # [N, C, G, G]
    weight = 1.0 / (N * len(graded))  # the loss is a mean over prompts and supervised rounds
    for r, kind in enumerate(schedule):
        if r > 0 and kind != MASK_ONLY:
            clicks = [next_click(preds[k], targets[k], rng) for k in range(N)]
            coords = np.concatenate([coords, np.stack([pt for pt, _ in clicks])[:, None]], 1)  # [N, Np+1, 2]
            labels = np.concatenate([labels, np.array([lb for _, lb in clicks])[:, None]], 1)  # [N, Np+1]
        multimask = use_multimask(coords.shape[1], boxes is not None, mask_input is not None)
        points = (coords, labels) if coords.shape[1] else None
        (sparse, dense), prompt_cache = prompt_encoder_forward(pe_params, cfg, points=points, boxes=boxes,
                                                               masks=mask_input)  # [N, Ns, C], [N or 1, C, G, G]
        dense = np.broadcast_to(dense, (N,) + dense.shape[1:])  # [N, C, G, G]
        (low, iou), decoder_cache = mask_decoder_forward(dec_params, cfg, embeddings, dense_pe, sparse, dense,
                                                         multimask)  # [N, K', R, R], [N, K']
        if r in graded:
            up, up_cache = upsample_bilinear_forward(low, (size, size))  # [N, K', S, S]
            dup = np.zeros_like(up)  # [N, K', S, S]
            diou = np.zeros_like(iou)  # [N, K']
            round_loss = 0.0
            for k in range(N):
                loss_k, _, dup[k], diou[k] = sam_loss(up[k], iou[k], targets[k], grad=True, iou_outputs=iou_outputs)
                round_loss += loss_k
            total += round_loss / N
            dlow = upsample_bilinear_backward(dup * weight, up_cache)  # [N, K', R, R]
            demb, _, dsparse, ddense, g_dec = mask_decoder_backward(dlow, diou * weight, decoder_cache)
            if embedding_grad:
                dembeddings += demb  # [N, C, G, G]
            add_grads(grads, {"mask_decoder": g_dec,
                              "prompt_encoder": prompt_encoder_backward(dsparse, ddense, prompt_cache)})
        # "the mask passed to the next iteration ... is the one with the highest predicted IoU"
        best = iou.argmax(1)  # [N]
        mask_input = low[np.arange(N), best][:, None]  # [N, 1, R, R]
        preds = upsample_bilinear_forward(mask_input, (size, size))[0][:, 0] > 0  # [N, S, S]
    grads["prompt_encoder"].get("pe_layer", {}).pop("positional_encoding_gaussian_matrix", None)
    if not grads["prompt_encoder"].get("pe_layer", True):
        del grads["prompt_encoder"]["pe_layer"]
    if embedding_grad:
        return total / len(graded), grads, dembeddings
    return total / len(graded), grads
