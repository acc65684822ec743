"""The IoU head refit on frozen features: the last stage of ``minisam train-micro``.

SAM's IoU head (``MaskDecoder.iou_prediction_head`` in ``segment_anything/modeling/mask_decoder.py``,
paper section 3 "Resolving ambiguity" and appendix A) reads one token, the IoU token after the
two-way transformer, and scores each of the four masks. With every other weight frozen, the
masks and that token are fixed for a prompt, so refitting the head changes the scores and
nothing else: the masks a prompt produces, and so every mask metric, stay exactly as they were.

Why a separate stage: trained jointly for 25,000 steps, the head of the next micro picked the
best of the three masks for an object's centre click on 54% of the validation objects, less than
always taking the second mask would (56%); refit alone on the same features, 70%
(weights/training/v9/README.md gives the measured numbers). The loss is the paper's MSE against each mask's IoU, on all four
outputs (SAM 2's ``supervise_all_iou``), plus a ranking term: the cross-entropy of a softmax over
the three multimask scores, at temperature :data:`RANK_TEMPERATURE`, against the output of
highest IoU. MSE alone calibrates each score but spends little effort on the differences of a
few pixels that decide which of three near-equal masks is best; the ranking term is about
exactly those, and on validation features it raised the pick rate in the settings tried.

The refit head is then mixed with the jointly trained one, weight by weight:
``(1 - mix) * before + mix * refit`` (weight-space ensembling, as WiSE-FT does for a fine-tuned
model and its start: Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"). The mix is a
trade-off measured on validation scenes: the fully refit head picks the best mask most often,
but it changes which mask round 1 of the interactive loop passes on, and the decoder was trained
to refine the masks the joint head passed on (weights/training/v9/README.md gives both sides;
weights/README.md the mix chosen).

Prompts: every mask of a training scene (objects, parts and groups, as the main schedule
trains) clicked twice, at a uniform random pixel (as in training) and at its most interior
point (as a user clicks, and as :func:`minisam.training.micro.evaluate` does).

Shape alphabet (docs/shapes.md): P prompts, M masks of a scene, C prompt dim, K mask tokens (4),
G embedding grid, R low-res side, S input side, B a mini-batch.
"""

from __future__ import annotations

import time
from typing import Dict, Tuple

import numpy as np

from minisam.backward.common import upsample_bilinear_forward
from minisam.backward.mask_decoder import mlp_backward, mlp_forward
from minisam.modeling.common import mask_iou
from minisam.modeling.image_encoder import image_encoder
from minisam.modeling.mask_decoder import mlp, predict_masks
from minisam.modeling.prompt_encoder import get_dense_pe, prompt_encoder
from minisam.training.interactive import sample_foreground_point
from minisam.training.optim import adamw_init, adamw_step
from minisam.training.shapes import interior_point, make_scene

RANK_TEMPERATURE = 0.05   # scores 0.05 apart are e:1 in the ranking softmax
BATCH = 256


def iou_token_features(p, cfg, image, masks, points) -> Tuple[np.ndarray, np.ndarray]:
    """The IoU token after the transformer, and the IoU of each of the K masks with its target.

    ``p``: the model's nested params; ``image`` [S, S, 3] uint8; ``masks`` [P, S, S] bool targets;
    ``points`` [P, 2] one positive click per target, in input pixels. The masks and the token come
    from :func:`minisam.modeling.mask_decoder.predict_masks` (``MaskDecoder.predict_masks``),
    the token from its trace: the transformer's output tokens, of which the first is the IoU token.
    Returns (features [P, C], ious [P, K]), the IoU of the mask logits upsampled to [S, S], > 0.
    """
    from minisam.training.micro_numpy import preprocess
    dtype = p["mask_decoder"]["iou_token"]["weight"].dtype
    emb = image_encoder(p["image_encoder"], cfg, preprocess(image[None], cfg, dtype))  # [1, C, G, G]
    P = len(masks)
    sparse, dense = prompt_encoder(p["prompt_encoder"], cfg, points=(
        np.asarray(points, np.float32)[:, None], np.ones((P, 1), np.int64)))  # [P, 2, C], [P, C, G, G]
    trace = {}
    low, _ = predict_masks(p["mask_decoder"], cfg, emb, get_dense_pe(p["prompt_encoder"], cfg), sparse, dense,
                           trace)  # [P, K, R, R]
    tokens, _ = trace["mask_decoder.transformer"]  # [P, 1+K+2, C], [P, GG, C]
    pred = upsample_bilinear_forward(low, (cfg.img_size, cfg.img_size))[0] > 0  # [P, K, S, S]
    ious = mask_iou(pred, np.asarray(masks, bool)[:, None])  # [P, K, S, S] vs [P, 1, S, S] -> [P, K]
    return tokens[:, 0].astype(np.float32), ious.astype(np.float32)  # [P, C], [P, K]


def collect_features(p, cfg, rng, n_scenes: int, scene_min_area: int = 0,
                     progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Features and IoU targets for every mask of ``n_scenes`` scenes drawn from ``rng``, each mask
    clicked at a uniform random pixel and at its most interior point: ([2M, C], [2M, K])."""
    from tqdm import tqdm
    feats, ious = [], []
    for _ in tqdm(range(n_scenes), desc="IoU-head features", disable=not progress):
        s = make_scene(rng, cfg.img_size, min_area=scene_min_area)
        masks = np.stack(s.masks)  # [M, S, S]
        points = np.concatenate([np.stack([sample_foreground_point(m, rng) for m in masks]),  # [M, 2]
                                 np.stack([interior_point(m) - 0.5 for m in masks])])  # [2M, 2]
        f, y = iou_token_features(p, cfg, s.image, np.concatenate([masks, masks]), points)
        feats.append(f)
        ious.append(y)
    return np.concatenate(feats), np.concatenate(ious)


def iou_head_loss(scores, ious, rank_weight: float, grad: bool = False):
    """``mean((scores - ious)^2) + rank_weight * CE(softmax(scores[:, 1:] / T), argmax ious[:, 1:])``.

    scores, ious [P, K]. The MSE is the paper's IoU loss on all K outputs; the cross-entropy
    ranks the K-1 multimask outputs. Returns loss, and with ``grad`` also dscores [P, K].
    """
    P, K = scores.shape
    err = scores - ious  # [P, K]
    z = scores[:, 1:] / RANK_TEMPERATURE  # [P, K-1]
    z = z - z.max(1, keepdims=True)  # [P, K-1], shifted for a stable log-softmax
    log_soft = z - np.log(np.exp(z).sum(1, keepdims=True))  # [P, K-1]
    best = ious[:, 1:].argmax(1)  # [P]
    ce = -log_soft[np.arange(P), best]  # [P]
    loss = float((err ** 2).mean() + rank_weight * ce.mean())  # ()
    if not grad:
        return loss
    dscores = 2 * err / err.size  # [P, K]
    dz = np.exp(log_soft)  # [P, K-1]
    dz[np.arange(P), best] -= 1
    dscores[:, 1:] += rank_weight * dz / (P * RANK_TEMPERATURE)
    return loss, dscores.astype(scores.dtype)


def fit_iou_head(head, depth: int, features, ious, rng, epochs: int, lr: float, rank_weight: float) -> Dict:
    """AdamW (no weight decay) on the head's params ``head`` (``{"layers": ...}``, in place) over
    shuffled mini-batches of :data:`BATCH`. Returns {"loss": the last epoch's mean loss}."""
    state = adamw_init(head)
    last = []
    for _ in range(epochs):
        order = rng.permutation(len(features))  # [2M]
        last = []
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]  # [B]
            scores, caches = mlp_forward(head, features[idx], depth)  # [B, K]
            loss, dscores = iou_head_loss(scores, ious[idx], rank_weight, grad=True)
            _, grads = mlp_backward(dscores, caches)  # [B, C] (unused), the head's gradients
            adamw_step(head, grads, state, lr, weight_decay=0.0)
            last.append(loss)
    return {"loss": float(np.mean(last)) if last else float("nan")}


def pick_rate(head, depth: int, features, ious) -> float:
    """How often the highest of the three multimask scores marks the mask of highest IoU."""
    scores = mlp(head, features, depth)  # [P, K]
    return float(np.mean(scores[:, 1:].argmax(1) == ious[:, 1:].argmax(1)))


def calibrate_iou_head(p, cfg, rng, n_scenes: int, epochs: int, rank_weight: float, mix: float = 1.0,
                       lr: float = 1e-3, scene_min_area: int = 0, progress: bool = False, log=print) -> Dict:
    """The stage: features of ``n_scenes`` training scenes from ``rng``, :func:`fit_iou_head`, then
    ``p["mask_decoder"]["iou_prediction_head"]`` set in place to ``(1 - mix) * before + mix * refit``.
    Returns what the train log records."""
    from minisam.checkpoints.param_tree import flatten
    t0 = time.time()
    features, ious = collect_features(p, cfg, rng, n_scenes, scene_min_area, progress)
    head = p["mask_decoder"]["iou_prediction_head"]
    start = {k: v.copy() for k, v in flatten(head).items()}
    before = pick_rate(head, cfg.iou_head_depth, features, ious)
    fitted = fit_iou_head(head, cfg.iou_head_depth, features, ious, rng, epochs, lr, rank_weight)
    refit = pick_rate(head, cfg.iou_head_depth, features, ious)
    for name, value in flatten(head).items():   # the tree's own arrays: assigned in place
        value[...] = (1 - mix) * start[name] + mix * value
    after = pick_rate(head, cfg.iou_head_depth, features, ious)
    out = {"scenes": n_scenes, "prompts": int(len(features)), "epochs": epochs, "rank_weight": rank_weight,
           "mix": mix, "lr": lr, "train_pick_before": before, "train_pick_refit": refit, "train_pick_after": after,
           "loss": fitted["loss"], "seconds": time.time() - t0}
    log(f"IoU head refit on {len(features)} prompts of {n_scenes} scenes: picks the best of 3 "
        f"{before:.3f} -> {refit:.3f} refit, {after:.3f} mixed ({mix}) on them ({out['seconds']:.0f} s)")
    return out
