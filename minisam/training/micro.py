"""Training a small SAM on synthetic shapes: the offline default model (``minisam train-micro``).

The official checkpoints are 375 MB to 2.5 GB and come from a host many machines cannot
reach, so minisam ships its own small model with SAM's architecture, trained here with the
paper's recipe (Kirillov et al. 2023, section 3 "Losses and training", appendix A):

- the model is the official ``segment_anything.modeling`` code at a small configuration
  (:data:`minisam.config.MICRO`), trained with torch autograd; minisam then loads the saved
  ``state_dict`` with its own torch-free loader, like any official checkpoint;
- mask loss ``20 * focal + dice``, IoU head trained with MSE against the IoU of the predicted
  mask, and with three outputs only the lowest-loss one is supervised (:func:`sam_loss_torch`,
  equal to :func:`minisam.training.losses.sam_loss`, tested);
- the 11-round interactive simulation of :mod:`minisam.training.interactive`: a point or a noisy box,
  then points sampled from the error region with the previous logits fed back as the mask
  prompt, and mask-only rounds (in the shipped recipe the last 3000 of the first 25000 steps and
  all 4300 steps of the second schedule; the first 22000 supervise the first prompt only, a point
  and a box for every target);
- AdamW with linear warm-up and cosine decay, then a second schedule of 11-round steps with its
  own warm-up and cosine (``extra_round_steps``);
- a last stage that refits the IoU head alone on frozen features and mixes it with the jointly
  trained head (:mod:`minisam.training.iou_head`; ``iou_head_scenes``, ``iou_head_mix``).

The shipped model's recipe is :data:`SHIPPED_RECIPE`: ``train(out_dir=...)`` with no other
argument and ``minisam train-micro --out DIR`` both run it.

torch is needed only here (the ``train`` extra); :func:`evaluate` uses minisam alone.
Shape alphabet: B images, K target masks per image, M mask outputs (3 or 1), N points,
H, W image pixels (128 for micro), S low-res side (64), C prompt dim.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Dict, List, Optional

import numpy as np

from minisam.config import MICRO
from minisam.training.shapes import interior_point, make_scene
from minisam.training.interactive import (MASK_ONLY, mask_box, next_click, noisy_box, round_schedule,
                                          sample_foreground_point, use_multimask)

# The recipe of the shipped weights/microsam_shapes.pth: the defaults of train() and of
# ``minisam train-micro``. ``single_round_steps``: a curriculum, the first steps supervise the
# initial prompt only (a point and a box for every target); the rest run all 11 rounds.
# ``warmup=None``: min(300, steps // 10) linear warm-up steps (300 for the shipped 25000).
# ``extra_round_*``: a second schedule after the first ``steps``: ``extra_round_steps`` more
# 11-round steps with the same AdamW moments, warm-up over EXTRA_WARMUP steps to ``extra_round_lr``
# then the same cosine (:func:`recipe_lr`); 0 steps skips it.
# ``iou_head_*``: a last stage that refits the IoU head alone on frozen features of
# ``iou_head_scenes`` training scenes (:mod:`minisam.training.iou_head`), mixed ``iou_head_mix`` :
# 1 - ``iou_head_mix`` with the jointly trained head; 0 scenes skips it.
SHIPPED_RECIPE = dict(steps=25000, single_round_steps=22000, batch_images=4, masks_per_image=8, lr=8e-4,
                      weight_decay=0.05, warmup=None, graded_rounds=4, clip_grad=1.0, iou_outputs="all",
                      val_every=500, scene_min_area=100, extra_round_steps=4300, extra_round_lr=1.5e-4,
                      iou_head_scenes=3000, iou_head_epochs=30, iou_head_rank_weight=0.1, iou_head_mix=0.15)
EXTRA_WARMUP = 50   # warm-up steps of the second schedule (at most half of it)

# Scene seeds: training draws from TRAIN_SEED's stream; validation and the held-out evaluation
# use seeds that training never touches.
TRAIN_SEED, VAL_SEED, EVAL_SEED = 0, 7_000_001, 9_000_017


def sam_loss_torch(logits, iou_pred, targets, iou_outputs: str = "best"):
    """The paper's loss for K prompts at once, in torch (mirrors :func:`minisam.training.losses.sam_loss`).

    logits [K, M, H, W], iou_pred [K, M], targets [K, H, W] float 0/1. ``iou_outputs="all"``
    trains the IoU head on all M outputs (SAM 2's ``supervise_all_iou``), so it learns to rank them.
    Returns (mean over K of the total loss, index [K] of the supervised output per prompt).
    """
    import torch
    import torch.nn.functional as F
    t = targets[:, None].expand_as(logits)                               # [K, M, H, W]
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = 0.25 * t + 0.75 * (1 - t)
    focal = (alpha_t * (1 - p_t) ** 2 * bce).flatten(2).mean(-1)        # [K, M]
    inter = (p * t).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (p.flatten(2).sum(-1) + t.flatten(2).sum(-1) + 1)   # [K, M]
    mask_loss = 20.0 * focal + dice                                      # [K, M]
    index = mask_loss.detach().argmin(1)                                 # [K]
    rows = torch.arange(len(index))
    with torch.no_grad():
        pred = logits > 0                                                # [K, M, H, W]
        tb = (targets > 0.5)[:, None]                                    # [K, 1, H, W]
        iou_t = (pred & tb).flatten(2).sum(-1) / (pred | tb).flatten(2).sum(-1).clamp(min=1)   # [K, M]
    sq_err = (iou_pred - iou_t.to(iou_pred.dtype)) ** 2                  # [K, M]
    iou_loss = sq_err[rows, index] if iou_outputs == "best" else sq_err.mean(1)   # [K]
    return (mask_loss[rows, index] + iou_loss).mean(), index


def _predict_masks(decoder, embeddings, image_pe, sparse, dense, multimask):
    """``MaskDecoder.predict_masks`` + the multimask slice, for prompts on *different* images.

    The official code repeats one image's embedding for every prompt
    (``repeat_interleave(image_embeddings, B)``); training batches prompts from several
    images, so here ``embeddings`` is already per prompt [P, C, G, G]. Otherwise line for line
    ``mask_decoder.py`` L71-149.
    """
    import torch
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], 0)        # [1+T, C]
    tokens = torch.cat([tokens[None].expand(sparse.shape[0], -1, -1), sparse], 1)      # [P, 1+T+N, C]
    src = embeddings + dense                                                            # [P, C, G, G]
    pos = image_pe.expand(src.shape[0], -1, -1, -1)                                     # [P, C, G, G]
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos, tokens)                                     # [P, 1+T+N, C], [P, GG, C]
    mask_tokens_out = hs[:, 1:1 + decoder.num_mask_tokens]                              # [P, T, C]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))        # [P, C/8, S, S]
    hyper = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in
                         enumerate(decoder.output_hypernetworks_mlps)], 1)              # [P, T, C/8]
    b, c, h, w = upscaled.shape
    masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)                     # [P, T, S, S]
    iou = decoder.iou_prediction_head(hs[:, 0])                                         # [P, T]
    sl = slice(1, None) if multimask else slice(0, 1)
    return masks[:, sl], iou[:, sl]


def _interactive_rounds(model, embeddings, targets_np, rng, first_prompt, size, graded_rounds=4, rounds=None,
                        iou_outputs="best"):
    """The 11 rounds for P target masks (each with its image's embedding [P, C, G, G]).

    Losses are taken where the masks are used: the low-res logits [P, M, S, S] upsampled
    bilinearly to the input side, as ``Sam.postprocess_masks`` does for a square image, against
    the full-resolution targets. Supervising the upsampled logits teaches the decoder edges
    finer than one low-res pixel (a plain S x S target caps a perfect model's IoU at ~0.94 on
    these shapes at 4x). The next point is sampled from the upsampled best mask, as a user
    would click on it.

    All 11 rounds run, but to fit a CPU budget only ``graded_rounds`` of them are supervised
    (round 1 and a random choice of the others; the rest run under no_grad). Returns the mean
    loss over the supervised rounds.
    """
    import torch
    import torch.nn.functional as F
    P = len(targets_np)
    full_targets = torch.from_numpy(targets_np).float()                 # [P, H, W]
    dense_pe = model.prompt_encoder.get_dense_pe()                       # [1, C, G, G]
    coords = np.zeros((P, 0, 2), np.float32)                             # [P, N, 2]
    labels = np.zeros((P, 0), np.int64)                                  # [P, N]
    boxes = None
    if first_prompt == "box":
        boxes = torch.from_numpy(np.stack([noisy_box(t, rng) for t in targets_np]))        # [P, 4]
    else:
        coords = np.stack([sample_foreground_point(t, rng) for t in targets_np])[:, None]   # [P, 1, 2]
        labels = np.ones((P, 1), np.int64)
    mask_input, preds, total = None, None, 0.0
    schedule = round_schedule(rng)[:rounds]
    graded = {0} | set(rng.choice(np.arange(1, len(schedule)), size=max(0, min(graded_rounds, len(schedule)) - 1),
                                  replace=False).tolist())
    for r, kind in enumerate(schedule):
        if r > 0 and kind != MASK_ONLY:
            clicks = [next_click(preds[k], targets_np[k], rng) for k in range(P)]
            new_pts = [point for point, _ in clicks]
            new_lbl = [label for _, label in clicks]
            coords = np.concatenate([coords, np.stack(new_pts)[:, None]], 1)          # [P, N+1, 2]
            labels = np.concatenate([labels, np.array(new_lbl)[:, None]], 1)          # [P, N+1]
        multimask = use_multimask(coords.shape[1], boxes is not None, mask_input is not None)
        points = (torch.from_numpy(coords), torch.from_numpy(labels)) if coords.shape[1] else None
        with torch.set_grad_enabled(torch.is_grad_enabled() and r in graded):
            sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
            if dense.shape[0] != P:
                dense = dense.expand(P, -1, -1, -1)
            low, iou = _predict_masks(model.mask_decoder, embeddings, dense_pe, sparse, dense, multimask)
            if r in graded:
                up = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)   # [P, M, H, W]
                loss, _ = sam_loss_torch(up, iou, full_targets, iou_outputs)   # [P, M, H, W] vs [P, H, W]
                total = total + loss
        # "the mask passed to the next iteration ... is the one with the highest predicted IoU"
        best = iou.detach().argmax(1)                                    # [P]
        rows = torch.arange(P)
        mask_input = low.detach()[rows, best][:, None]                   # [P, 1, S, S]
        with torch.no_grad():
            preds = (F.interpolate(mask_input, (size, size), mode="bilinear",
                                   align_corners=False)[:, 0] > 0).numpy()   # [P, H, W]
    return total / len(graded)


def draw_batch(rng, size, recipe):
    """One training step's batch, drawn from ``rng`` in the order both engines share (and a resumed
    run repeats): the scenes, each image's targets (up to ``masks_per_image`` of its masks), then
    the kind of the first prompt. The rounds draw after these.

    Returns (scenes, owner, targets, first_prompt): ``owner[m]`` is the image of target ``m``,
    ``targets`` the target masks, ``first_prompt`` "box" or "point".
    """
    scenes = [make_scene(rng, size, min_area=recipe.get("scene_min_area", 0)) for _ in range(recipe["batch_images"])]
    owner, targets = [], []
    for b, s in enumerate(scenes):
        pick = rng.choice(len(s.masks), size=min(recipe["masks_per_image"], len(s.masks)), replace=False)
        owner += [b] * len(pick)
        targets += [s.masks[i] for i in pick]
    first_prompt = "box" if rng.random() < 0.5 else "point"
    return scenes, np.array(owner), np.stack(targets), first_prompt  # [M], [M, S, S]


def _validation_line(rec) -> str:
    return (f"step {rec['step']}: loss {rec['loss']:.4f}  val point IoU {rec['val_point_iou']:.3f}  "
            f"box IoU {rec['val_box_iou']:.3f}  ({rec['time_s']:.0f} s)")


def _save_or_stop(step, steps, rec, run, save_every, max_minutes):
    """(save the training state now, end this run now) after step ``step + 1`` of ``steps``: the
    state is saved every ``save_every`` steps, at each validation (``rec`` has its IoU) and when
    the run has used its ``max_minutes``, where it ends unless that was the last step."""
    out_of_time = max_minutes is not None and run["seconds"] >= 60 * max_minutes
    save = (step + 1) % save_every == 0 or "val_point_iou" in rec or out_of_time
    return save, out_of_time and step + 1 < steps


def _stopped(log, step, steps, run, out_dir, history, runs):
    """What an unfinished run returns, after telling how to continue it."""
    log(f"stopping after step {step + 1} of {steps} ({run['seconds'] / 60:.1f} min); "
        f"continue with --resume {out_dir}")
    return {"checkpoint": None, "history": history, "runs": runs, "finished": False}


def _lr(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def total_steps(recipe: Dict) -> int:
    """Every optimizer step of ``recipe``: the first schedule's and the second's."""
    return recipe["steps"] + recipe.get("extra_round_steps", 0)


def recipe_lr(step: int, recipe: Dict) -> float:
    """The learning rate of step ``step`` (from 0): linear warm-up and cosine down to 5% over the
    first ``steps``, then the same shape over the ``extra_round_steps`` of the second schedule."""
    if step < recipe["steps"]:
        return _lr(step, recipe["steps"], recipe["lr"], recipe["warmup"])
    extra = recipe["extra_round_steps"]
    return _lr(step - recipe["steps"], extra, recipe["extra_round_lr"], max(1, min(EXTRA_WARMUP, extra // 2)))


def check_more_steps(runs: List[Dict], first_step: int, recipe: Dict, path: str) -> None:
    """Refuse to resume into more steps a run whose IoU head was already refit (the stage after
    the last step): the steps would train the refit head away, and the stage does not run twice."""
    done = [r for r in runs if r.get("stage") == "iou_head"]
    if done and first_step < total_steps(recipe):
        from minisam.errors import MinisamError
        raise MinisamError(f"{path}: this run's IoU head was refit after step {done[0]['end_step']}; it cannot "
                           f"continue to step {total_steps(recipe)} (resume a state saved before the stage)")


def _val_torch(model, scenes, size):
    """Quick validation with the torch model: best-of-3 IoU for an interior point, box IoU."""
    import torch
    import torch.nn.functional as F
    ious_pt, ious_box = [], []
    with torch.no_grad():
        for s in scenes:
            x = model.preprocess(torch.from_numpy(s.image).permute(2, 0, 1)[None].float())
            emb = model.image_encoder(x)
            pe = model.prompt_encoder.get_dense_pe()
            for m in s.instance_masks:
                pt = torch.tensor(interior_point(m), dtype=torch.float32)[None, None]
                for kind in ("point", "box"):
                    if kind == "point":
                        sp, de = model.prompt_encoder(points=(pt - 0.5, torch.ones(1, 1, dtype=torch.int64)),
                                                      boxes=None, masks=None)
                    else:
                        sp, de = model.prompt_encoder(points=None, boxes=torch.from_numpy(mask_box(m))[None], masks=None)
                    low, _ = model.mask_decoder(emb, pe, sp, de, multimask_output=(kind == "point"))
                    up = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)[0] > 0
                    mt = torch.from_numpy(m)
                    iou = ((up & mt).flatten(1).sum(1) / (up | mt).flatten(1).sum(1).clamp(min=1)).max().item()
                    (ious_pt if kind == "point" else ious_box).append(iou)
    return float(np.mean(ious_pt)), float(np.mean(ious_box))


STATE_NAME = "train_state.pth"   # the resumable state of a run, in out_dir
RECIPE_KEYS = ("steps", "seed", "batch_images", "masks_per_image", "lr", "weight_decay", "warmup", "val_every",
               "graded_rounds", "clip_grad", "single_round_steps", "iou_outputs", "scene_min_area",
               "extra_round_steps", "extra_round_lr",
               "iou_head_scenes", "iou_head_epochs", "iou_head_rank_weight", "iou_head_mix")


def iou_head_stage(params, cfg, rng, recipe, runs, log, progress) -> bool:
    """The recipe's last stage, once per run (both engines): refit the IoU head of ``params``
    (nested NumPy params, in place) and append the stage to ``runs`` with its compute time.
    Returns whether it ran (not when ``iou_head_scenes`` is 0, nor a second time)."""
    if not recipe.get("iou_head_scenes") or any(r.get("stage") == "iou_head" for r in runs):
        return False
    from minisam.training.iou_head import calibrate_iou_head
    info = calibrate_iou_head(params, cfg, rng, recipe["iou_head_scenes"], recipe["iou_head_epochs"],
                              recipe["iou_head_rank_weight"], recipe["iou_head_mix"],
                              scene_min_area=recipe.get("scene_min_area", 0), progress=progress, log=log)
    step = total_steps(recipe)
    runs.append({"run": len(runs) + 1, "stage": "iou_head", "start_step": step, "end_step": step,
                 "seconds": info.pop("seconds"), **info})
    return True


def with_new_recipe_keys(stored: Dict, given: Dict) -> Dict:
    """A saved recipe, completed with the recipe keys added after it was saved (taken from
    ``given``, the arguments of the resuming call): a run saved before the IoU-head stage or the
    second schedule existed resumes into them."""
    return {**{k: given[k] for k in RECIPE_KEYS if k not in stored and k in given}, **stored}


def _save_state(out_dir, model, opt, step, rng, recipe, cfg, history, runs):
    """Everything a resumed run needs, written atomically (temp file + rename): a run killed
    while writing keeps the previous state."""
    import torch
    path = os.path.join(out_dir, STATE_NAME)
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "recipe": recipe, "config": cfg.to_dict(), "history": history, "runs": runs}, tmp)
    os.replace(tmp, path)


def _load_state(out_dir):
    import torch
    from minisam.errors import MinisamError
    path = os.path.join(out_dir, STATE_NAME)
    if not os.path.isfile(path):
        raise MinisamError(f"{path}: no training state to resume (a run writes it every save_every steps)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a damaged file: say which one
        raise MinisamError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from None


def train(steps: int = SHIPPED_RECIPE["steps"], out_dir: str = "train-micro", seed: int = TRAIN_SEED,
          batch_images: int = SHIPPED_RECIPE["batch_images"], masks_per_image: int = SHIPPED_RECIPE["masks_per_image"],
          lr: float = SHIPPED_RECIPE["lr"], weight_decay: float = SHIPPED_RECIPE["weight_decay"],
          warmup: Optional[int] = SHIPPED_RECIPE["warmup"], val_every: int = SHIPPED_RECIPE["val_every"],
          graded_rounds: int = SHIPPED_RECIPE["graded_rounds"], clip_grad: Optional[float] = SHIPPED_RECIPE["clip_grad"],
          single_round_steps: int = SHIPPED_RECIPE["single_round_steps"],
          iou_outputs: str = SHIPPED_RECIPE["iou_outputs"],
          scene_min_area: int = SHIPPED_RECIPE["scene_min_area"],
          extra_round_steps: int = SHIPPED_RECIPE["extra_round_steps"],
          extra_round_lr: float = SHIPPED_RECIPE["extra_round_lr"],
          iou_head_scenes: int = SHIPPED_RECIPE["iou_head_scenes"],
          iou_head_epochs: int = SHIPPED_RECIPE["iou_head_epochs"],
          iou_head_rank_weight: float = SHIPPED_RECIPE["iou_head_rank_weight"],
          iou_head_mix: float = SHIPPED_RECIPE["iou_head_mix"], config=None, on_step=None,
          threads: Optional[int] = None, progress: bool = True, log=print, resume: bool = False,
          max_minutes: Optional[float] = None, save_every: int = 200, engine: str = "torch") -> Dict:
    """Train :data:`minisam.config.MICRO` for ``steps`` steps; write ``microsam_shapes.pth`` and a
    log to ``out_dir``. The defaults are :data:`SHIPPED_RECIPE`.

    ``engine``: "torch" (the official modules and autograd; this function) or "numpy" (the same
    recipe without torch: :func:`minisam.training.micro_numpy.train`, which takes the same arguments).

    The first ``single_round_steps`` steps supervise the initial prompt only, and give every
    target both a point and a box: two decoder passes on one encoder pass (2.3x the supervised
    prompts for 1.5x the time of one prompt, measured with 2 threads and 4 images). The rest
    run the full 11-round simulation from a point or a box. ``iou_outputs`` is passed to :func:`sam_loss_torch`.
    ``extra_round_steps`` more 11-round steps follow on a second warm-up and cosine schedule
    (:func:`recipe_lr`), so that a finished run's state can be resumed into more interactive
    training (its stored recipe completed by :func:`with_new_recipe_keys`).
    After the last step, :func:`iou_head_stage` refits the IoU head alone (``iou_head_*``), in
    NumPy for both engines.

    Resumable: every ``save_every`` steps (and at each validation) the run writes
    ``train_state.pth``: weights, AdamW moments, the step, both RNG streams, the recipe, the log
    and the list of runs. ``max_minutes`` ends this run at the first step past that wall time,
    after saving; ``resume=True`` continues from ``out_dir``'s state with its stored recipe (the
    recipe arguments are then ignored), so several runs make one schedule, step for step the
    same as one uninterrupted run. ``train_log.json`` lists the runs and their compute time.
    Returns {"checkpoint": path or None while unfinished, "history", "runs", "finished"}.
    """
    if engine == "numpy":
        from minisam.training.micro_numpy import train as train_numpy
        return train_numpy(steps, out_dir, seed, batch_images, masks_per_image, lr, weight_decay, warmup, val_every,
                           graded_rounds, clip_grad, single_round_steps, iou_outputs, scene_min_area,
                           extra_round_steps=extra_round_steps, extra_round_lr=extra_round_lr,
                           iou_head_scenes=iou_head_scenes, iou_head_epochs=iou_head_epochs,
                           iou_head_rank_weight=iou_head_rank_weight, iou_head_mix=iou_head_mix, config=config,
                           on_step=on_step, threads=threads, progress=progress, log=log, resume=resume,
                           max_minutes=max_minutes, save_every=save_every)
    if engine != "torch":
        from minisam.errors import MinisamError
        raise MinisamError(f"train-micro engine must be 'torch' or 'numpy', got {engine!r}")
    import torch
    from tqdm import tqdm
    from minisam.config import make_config
    from minisam.reference.official import build_official

    if threads:
        torch.set_num_threads(threads)
    os.makedirs(out_dir, exist_ok=True)
    state = _load_state(out_dir) if resume else None
    stage_args = dict(extra_round_steps=extra_round_steps, extra_round_lr=extra_round_lr,
                      iou_head_scenes=iou_head_scenes, iou_head_epochs=iou_head_epochs,
                      iou_head_rank_weight=iou_head_rank_weight, iou_head_mix=iou_head_mix)
    if state is not None:
        recipe = with_new_recipe_keys(dict(state["recipe"]), stage_args)
        cfg = make_config(**state["config"])
    else:
        cfg = config or MICRO
        recipe = dict(steps=steps, seed=seed, batch_images=batch_images, masks_per_image=masks_per_image, lr=lr,
                      weight_decay=weight_decay, val_every=val_every, graded_rounds=graded_rounds,
                      clip_grad=clip_grad, single_round_steps=single_round_steps, iou_outputs=iou_outputs,
                      scene_min_area=scene_min_area, **stage_args,
                      warmup=warmup if warmup is not None else max(1, min(300, steps // 10)))
    steps, seed = total_steps(recipe), recipe["seed"]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = cfg.img_size
    model = build_official(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                            betas=(0.9, 0.999))
    history: List[Dict] = []
    runs: List[Dict] = []
    first_step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        history, runs, first_step = list(state["history"]), list(state["runs"]), int(state["step"])
        check_more_steps(runs, first_step, recipe, os.path.join(out_dir, STATE_NAME))
    model.train()
    min_area = recipe.get("scene_min_area", 0)    # the scene domain (make_scene's min_area)
    val_scenes = [make_scene(np.random.default_rng(VAL_SEED + i), size, min_area=min_area) for i in range(24)]
    run = {"run": len(runs) + 1, "start_step": first_step, "end_step": first_step, "seconds": 0.0,
           "threads": torch.get_num_threads()}
    if first_step < steps:                          # a finished run resumed only to evaluate adds no run
        runs.append(run)
    t0 = time.time()
    elapsed_before = sum(r["seconds"] for r in runs[:-1])
    bar = tqdm(range(first_step, steps), desc="train-micro", disable=not progress, initial=first_step, total=steps)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = recipe_lr(step, recipe)
        scenes, owner, targets, first = draw_batch(rng, size, recipe)  # [M], [M, H, W]
        images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float()  # [B, 3, H, W]
        embeddings = model.image_encoder(model.preprocess(images))      # [B, C, G, G]
        single = step < recipe["single_round_steps"]   # the curriculum's first phase: the initial prompt only
        if single:
            loss = 0.5 * sum(_interactive_rounds(model, embeddings[owner], targets, rng, kind, size,
                                                 recipe["graded_rounds"], 1, recipe["iou_outputs"])
                             for kind in ("point", "box"))
        else:
            loss = _interactive_rounds(model, embeddings[owner], targets, rng, first, size,
                                       recipe["graded_rounds"], None, recipe["iou_outputs"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recipe["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["clip_grad"])
        opt.step()
        run["end_step"], run["seconds"] = step + 1, time.time() - t0
        rec = {"step": step + 1, "rounds": 1 if single else 11, "loss": float(loss.detach()),
               "lr": opt.param_groups[0]["lr"], "time_s": elapsed_before + run["seconds"], "run": run["run"]}
        if on_step is not None:
            on_step(step + 1, model)
        if (step + 1) % recipe["val_every"] == 0 or step + 1 == steps:
            torch.save(model.state_dict(), os.path.join(out_dir, "last_checkpoint.pth"))
            model.eval()
            rec["val_point_iou"], rec["val_box_iou"] = _val_torch(model, val_scenes, size)
            model.train()
            log(_validation_line(rec))
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        save_now, stop_now = _save_or_stop(step, steps, rec, run, save_every, max_minutes)
        if save_now:
            _save_state(out_dir, model, opt, step + 1, rng, recipe, cfg, history, runs)
        if stop_now:
            return _stopped(log, step, steps, run, out_dir, history, runs)
    model.eval()
    from minisam.checkpoints.param_tree import flatten, nest
    params = nest({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
    if iou_head_stage(params, cfg, rng, recipe, runs, log, progress):
        head = flatten(params["mask_decoder"]["iou_prediction_head"])   # "layers.0.weight", ...
        model.mask_decoder.iou_prediction_head.load_state_dict({k: torch.from_numpy(v) for k, v in head.items()})
    path = os.path.join(out_dir, "microsam_shapes.pth")
    torch.save(model.state_dict(), path)
    _save_state(out_dir, model, opt, steps, rng, recipe, cfg, history, runs)
    with open(os.path.join(out_dir, "train_log.json"), "w") as f:
        json.dump({"config": cfg.to_dict(), **recipe, "single_round_prompts": ["point", "box"],
                   "threads": torch.get_num_threads(), "runs": runs,
                   "total_seconds": sum(r["seconds"] for r in runs), "history": history}, f)
    return {"checkpoint": path, "history": history, "runs": runs, "finished": True, "recipe": recipe}


# The shipped model's quality targets (weights/README.md), on held-out scenes of its domain.
TARGETS = {"point_best_of_3_iou": 0.85, "box_iou": 0.87, "iou_head_picks_best": 0.65,
           "gain_after_3_clicks": 0.05, "gain_after_8_clicks": 0.08, "negative_click_lowers_hole": 0.80,
           "recall": 0.85, "precision": 0.70}


def meets_targets(metrics: Dict) -> bool:
    """Whether every target of :data:`TARGETS` that ``metrics`` measures is met (>=)."""
    return all(metrics[k] >= v for k, v in TARGETS.items() if k in metrics)


SIZE_BINS = (0, 100, 300, 800)   # visible-area bins (pixels) of the model card's by-size table


def lowres_ceiling_iou(mask: np.ndarray, low_res: int) -> float:
    """IoU of ``mask`` [H, W] with itself after area-downsampling to ``low_res`` and bilinear upsampling.

    What a perfect low-res logit map could give: the decoder's masks are ``low_res`` x
    ``low_res`` logits upsampled as :func:`minisam.kernels.resize.resize_bilinear` does.
    """
    from minisam.kernels.resize import resize_bilinear
    h, w = mask.shape
    f = h // low_res
    area = mask.reshape(low_res, f, low_res, f).mean((1, 3)).astype(np.float32)      # [S, S] in [0, 1]
    up = resize_bilinear(area - 0.5, (h, w)) > 0                                     # [H, W]
    return float((up & mask).sum() / max((up | mask).sum(), 1))


def evaluate(sam, n_scenes: int = 500, seed: int = EVAL_SEED, progress: bool = False,
             scene_min_area: int = SHIPPED_RECIPE["scene_min_area"], per_object: bool = False) -> Dict[str, float]:
    """Held-out metrics with minisam's own predictor (no torch), on scenes from ``seed`` drawn
    with :func:`make_scene`'s ``min_area=scene_min_area`` (the scene domain).

    - ``point_best_of_3_iou``: mean over objects of the best IoU among the 3 masks for the
      object's most interior point;
    - ``box_iou``: mean IoU of the single-mask output for the object's tight box;
    - ``iou_head_picks_best``: how often the highest predicted IoU is the best of the 3;
    - ``iou_head_picks_within_0.02``: how often the pick is within 0.02 IoU of the best (the
      three masks of an object without parts or groups are often near-identical, and then
      which of them is "the best" is decided by a few pixels);
    - ``iou_head_regret``: the mean IoU lost by taking the IoU head's pick instead of the best;
    - ``by_size``: point, box and pick per visible-area bin (:data:`SIZE_BINS`), with
      ``ceiling``, the mean :func:`lowres_ceiling_iou` of the bin's objects;
    - with ``per_object``, ``per_object``: the point and box IoUs of every object, in scene order
      (two models evaluated on the same scenes can then be compared object by object).
    """
    from tqdm import tqdm
    from minisam.predictor import SamPredictor

    predictor = SamPredictor(sam)
    low_res = 4 * sam.config.img_size // sam.config.patch_size   # the decoder's 4x upscaled grid side
    best3, boxes, picks, regret, areas, ceilings = [], [], [], [], [], []
    for i in tqdm(range(n_scenes), disable=not progress, desc="evaluate"):
        s = make_scene(np.random.default_rng(seed + i), sam.config.img_size, min_area=scene_min_area)
        predictor.set_image(s.image)
        for m in s.instance_masks:
            pt = interior_point(m) - 0.5                                 # pixel index of the centre
            masks, iou_pred, _ = predictor.predict(point_coords=pt[None], point_labels=np.array([1]))
            ious = [(mk & m).sum() / max((mk | m).sum(), 1) for mk in masks]
            best3.append(max(ious))
            picks.append(float(int(np.argmax(iou_pred)) == int(np.argmax(ious))))
            regret.append(max(ious) - ious[int(np.argmax(iou_pred))])
            bm, _, _ = predictor.predict(box=mask_box(m), multimask_output=False)
            boxes.append((bm[0] & m).sum() / max((bm[0] | m).sum(), 1))
            areas.append(int(m.sum()))
            ceilings.append(lowres_ceiling_iou(m, low_res))
    out = {"seed": seed, "scenes": n_scenes, "scene_min_area": scene_min_area, "objects": len(best3),
           "point_best_of_3_iou": float(np.mean(best3)), "box_iou": float(np.mean(boxes)),
           "iou_head_picks_best": float(np.mean(picks)),
           "iou_head_picks_within_0.02": float(np.mean(np.array(regret) <= 0.02)),
           "iou_head_regret": float(np.mean(regret))}
    out["std"] = _std(point_best_of_3_iou=best3, box_iou=boxes, iou_head_picks_best=picks)
    if per_object:
        out["per_object"] = {"point_best_of_3_iou": [float(x) for x in best3], "box_iou": [float(x) for x in boxes]}
    out["meets_targets"] = meets_targets(out)
    areas = np.array(areas)
    edges = list(SIZE_BINS) + [np.inf]
    out["by_size"] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (areas >= lo) & (areas < hi)
        if sel.any():
            out["by_size"].append({"area_min": int(lo), "area_max": None if hi == np.inf else int(hi),
                                   "objects": int(sel.sum()),
                                   **{k: float(np.mean(np.array(v)[sel])) for k, v in
                                      (("point_best_of_3_iou", best3), ("box_iou", boxes),
                                       ("iou_head_picks_best", picks), ("ceiling", ceilings))}})
    return out


def _std(**samples) -> Dict[str, float]:
    """The standard deviation over the items of each metric (objects, cases or masks): with the
    item count it gives the standard error of a mean measured on fewer scenes."""
    return {k: float(np.std(np.asarray(v, dtype=np.float64))) if len(v) else float("nan")
            for k, v in samples.items()}


def _enclosed_holes(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels outside ``mask`` [H, W] in background regions (8-connected, as
    :func:`minisam.utils.amg.connected_components`) that do not touch the image border: a ring's hole."""
    from minisam.utils.amg import connected_components
    _, labels, _ = connected_components(~mask)                          # [H, W] 0 = mask, 1.. regions
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return (labels > 0) & ~np.isin(labels, border)                      # [H, W]


def evaluate_refinement(sam, n_scenes: int = 100, seed: int = EVAL_SEED, min_hole: int = 20,
                        progress: bool = False, scene_min_area: int = SHIPPED_RECIPE["scene_min_area"]) -> Dict:
    """Interactive refinement on held-out scenes, with minisam's own predictor (no torch).

    - ``iou_after_clicks[k - 1]``: mean IoU with the object after ``k`` clicks, the first one a
      positive point at a random foreground pixel (round 1), then one click a round drawn from
      the error region with the previous best logits fed back, in the paper's 11-round
      schedule (:func:`minisam.training.interactive.simulate_interactive`); the two mask-only
      rounds refine without a click, and count towards the click before them. k = 1 .. 9.
    - ``gain_after_3_clicks`` and ``gain_after_8_clicks``: ``iou_after_clicks`` at 3 and 8
      (the first click included) minus round 1.
    - ``negative_click_lowers_hole``: for every object with an enclosed hole of at least
      ``min_hole`` pixels (rings) that the first point's mask covers in part, the share of
      cases where adding a negative click at the hole's most interior pixel, with the first
      round's logits fed back, lowers the predicted area inside the hole.
    """
    from tqdm import tqdm
    from minisam.predictor import SamPredictor
    from minisam.training.interactive import INITIAL, POINT, simulate_interactive

    predictor = SamPredictor(sam)
    curves, lowered = [], []
    for i in tqdm(range(n_scenes), disable=not progress, desc="refinement"):
        s = make_scene(np.random.default_rng(seed + i), sam.config.img_size, min_area=scene_min_area)
        rng = np.random.default_rng(seed + 10_000_000 + i)
        predictor.set_image(s.image)
        for m in s.instance_masks:
            records = simulate_interactive(predictor, None, m, rng, first_prompt="point")
            by_clicks: List[float] = []
            for r in records:
                if r.kind in (INITIAL, POINT):
                    by_clicks.append(r.iou)
                else:
                    by_clicks[-1] = r.iou                               # a mask-only round refines the last click
            curves.append(by_clicks)
            hole = _enclosed_holes(m)
            if hole.sum() < min_hole:
                continue
            pos = interior_point(m) - 0.5                               # [2] (x, y)
            neg = interior_point(hole) - 0.5
            masks, iou_pred, low = predictor.predict(point_coords=pos[None], point_labels=np.array([1]))
            best = int(np.argmax(iou_pred))
            before = int((masks[best] & hole).sum())
            if before == 0:
                continue                                                # nothing in the hole to clear
            after_masks, _, _ = predictor.predict(point_coords=np.stack([pos, neg]), point_labels=np.array([1, 0]),
                                                  mask_input=low[best][None], multimask_output=False)
            lowered.append(float(int((after_masks[0] & hole).sum()) < before))
    per_object = np.array(curves, dtype=np.float64)                    # [objects, 9]
    curve = per_object.mean(0)                                          # [9]
    return {"seed": seed, "scenes": n_scenes, "scene_min_area": scene_min_area, "objects": len(curves),
            "iou_after_clicks": [float(v) for v in curve],
            "gain_after_3_clicks": float(curve[2] - curve[0]), "gain_after_8_clicks": float(curve[7] - curve[0]),
            "hole_cases": len(lowered),
            "negative_click_lowers_hole": float(np.mean(lowered)) if lowered else float("nan"),
            "std": _std(gain_after_3_clicks=per_object[:, 2] - per_object[:, 0],
                        gain_after_8_clicks=per_object[:, 7] - per_object[:, 0],
                        negative_click_lowers_hole=lowered)}


# A returned mask matches a true one at this IoU (the model card's automatic recall and precision,
# and the demo's "found").
MATCH_IOU = 0.75


def evaluate_automatic(sam, n_scenes: int = 50, seed: int = EVAL_SEED, min_area: int = 300,
                       match_iou: float = MATCH_IOU, progress: bool = False,
                       scene_min_area: int = SHIPPED_RECIPE["scene_min_area"], **generator_kwargs) -> Dict:
    """The automatic mask generator on held-out scenes (minisam alone).

    - ``recall``: the share of objects of at least ``min_area`` visible pixels that some
      returned mask matches at IoU >= ``match_iou``;
    - ``precision``: the share of returned masks that match an object, a part or a group of
      the scene (every mask in ``Scene.masks``) at IoU >= ``match_iou``;
    - ``masks_per_scene``. ``generator_kwargs`` go to :class:`SamAutomaticMaskGenerator`; none
      given means the generator's defaults for this model.
    """
    from tqdm import tqdm
    from minisam.automatic_mask_generator import SamAutomaticMaskGenerator
    from minisam.modeling.common import mask_iou

    generator = SamAutomaticMaskGenerator(sam, **generator_kwargs)
    found, matched = [], []
    for i in tqdm(range(n_scenes), disable=not progress, desc="automatic"):
        s = make_scene(np.random.default_rng(seed + i), sam.config.img_size, min_area=scene_min_area)
        got = [r["segmentation"] for r in generator.generate(s.image)]
        if got:
            pred = np.stack(got)                                        # [R, H, W]
            everything = np.stack(s.masks)                              # [L, H, W]
            ious = mask_iou(pred[:, None], everything[None])            # [R, L]
            matched += (ious.max(1) >= match_iou).tolist()
        for m in s.instance_masks:
            if m.sum() >= min_area:
                found.append(bool(got) and float(mask_iou(pred, m[None]).max()) >= match_iou)
    return {"seed": seed, "scenes": n_scenes, "scene_min_area": scene_min_area, "objects": len(found),
            "min_area": min_area, "match_iou": match_iou,
            "recall": float(np.mean(found)) if found else float("nan"),
            "precision": float(np.mean(matched)) if matched else float("nan"),
            "masks_per_scene": len(matched) / n_scenes,
            "std": _std(recall=found, precision=matched)}


def model_card_metrics(sam, n_scenes: int = 500, seed: int = EVAL_SEED, progress: bool = False,
                       scene_min_area: int = SHIPPED_RECIPE["scene_min_area"],
                       generator_settings: Optional[Dict] = None) -> Dict:
    """Everything the model card reports, on ``n_scenes`` held-out scenes of the model's domain:
    :func:`evaluate` (its keys at the top level), ``refinement`` (:func:`evaluate_refinement`),
    ``automatic`` (:func:`evaluate_automatic` with ``generator_settings``, or with the generator's
    defaults for this model when none are given) and ``original_domain`` (:func:`evaluate` on the
    scenes of ``make_scene(min_area=0)``, so that numbers measured before the domain changed keep
    their meaning)."""
    out = evaluate(sam, n_scenes, seed, progress, scene_min_area=scene_min_area)
    out["refinement"] = evaluate_refinement(sam, n_scenes, seed, progress=progress, scene_min_area=scene_min_area)
    out["automatic"] = evaluate_automatic(sam, n_scenes, seed, progress=progress, scene_min_area=scene_min_area,
                                          **(generator_settings or {}))
    if scene_min_area:
        out["original_domain"] = evaluate(sam, n_scenes, seed, progress, scene_min_area=0)
    out["meets_targets"] = meets_targets({**out, **out["refinement"], **out["automatic"]})
    return out


# The generator settings a model may tune (the registry's ``generator_defaults``), and the
# values tried when choosing them on validation scenes.
GENERATOR_GRID = {"points_per_side": (16, 24, 32), "pred_iou_thresh": (0.5, 0.6, 0.7, 0.8, 0.88),
                  "stability_score_thresh": (0.7, 0.8, 0.9, 0.95)}


def sweep_generator_settings(sam, n_scenes: int = 24, seed: int = VAL_SEED, grid: Optional[Dict] = None,
                             scene_min_area: int = SHIPPED_RECIPE["scene_min_area"], progress: bool = False) -> Dict:
    """:func:`evaluate_automatic` for every combination of ``grid`` (default
    :data:`GENERATOR_GRID`) on validation scenes (``seed``; never the held-out seed), and the
    chosen setting: among those that meet both the recall and the precision target, the one with
    the highest recall + precision; if none meets both, the one closest to meeting them (the
    largest of the smaller margins). Returns {"rows": [...], "chosen": {...}}."""
    import itertools
    grid = grid or GENERATOR_GRID
    names = sorted(grid)
    rows = []
    for values in itertools.product(*(grid[k] for k in names)):
        setting = dict(zip(names, values))
        m = evaluate_automatic(sam, n_scenes, seed, scene_min_area=scene_min_area, **setting)
        rows.append({**setting, "recall": m["recall"], "precision": m["precision"],
                     "masks_per_scene": m["masks_per_scene"]})
        if progress:
            print(rows[-1], flush=True)

    def margin(r):
        return min(r["recall"] - TARGETS["recall"], r["precision"] - TARGETS["precision"])
    meeting = [r for r in rows if margin(r) >= 0]
    chosen = max(meeting, key=lambda r: r["recall"] + r["precision"]) if meeting else max(rows, key=margin)
    return {"seed": seed, "scenes": n_scenes, "rows": rows, "chosen": {k: chosen[k] for k in names},
            "chosen_meets_targets": margin(chosen) >= 0}


# The generator settings tried for a newly trained model: the coarse corners of GENERATOR_GRID,
# 9 settings where the full grid has 60 (each setting runs the generator on every validation
# scene). One grid side, 16: one point per 8 x 8 pixels of these 128-pixel scenes, whose masks
# have at least 100 pixels; a 32-point side costs four times the decoder passes.
SHIP_SWEEP_GRID = {"points_per_side": (16,), "pred_iou_thresh": (0.5, 0.7, 0.88),
                   "stability_score_thresh": (0.7, 0.8, 0.9)}


def find_metric(metrics: Dict, key: str) -> float:
    """A metric by name at the top level of :func:`model_card_metrics`' result or in one of its
    sections (``refinement``, ``automatic``)."""
    for section in (metrics, metrics.get("refinement", {}), metrics.get("automatic", {})):
        if key in section:
            return section[key]
    raise KeyError(key)


def evaluate_trained(sam, n_scenes: int = 500, scene_min_area: int = SHIPPED_RECIPE["scene_min_area"],
                     sweep_grid: Optional[Dict] = None, sweep_scenes: int = 24, progress: bool = False) -> Dict:
    """What ``minisam train-micro --evaluate N`` writes to eval.json for a newly trained model:
    first the automatic generator's settings are chosen on validation scenes
    (:func:`sweep_generator_settings` over ``sweep_grid``, default :data:`SHIP_SWEEP_GRID`; the
    held-out scenes never choose anything), then :func:`model_card_metrics` with those settings,
    plus ``generator_sweep`` and ``targets`` (each of :data:`TARGETS` with its value and whether
    it is met). The registry entry that ships the model takes ``generator_sweep["chosen"]`` as
    its ``generator_defaults``."""
    sweep = sweep_generator_settings(sam, sweep_scenes, grid=sweep_grid or SHIP_SWEEP_GRID,
                                     scene_min_area=scene_min_area, progress=progress)
    metrics = model_card_metrics(sam, n_scenes, progress=progress, scene_min_area=scene_min_area,
                                 generator_settings=sweep["chosen"])
    metrics["generator_sweep"] = sweep
    metrics["targets"] = {k: {"target": v, "value": find_metric(metrics, k), "met": find_metric(metrics, k) >= v}
                          for k, v in TARGETS.items()}
    return metrics


def training_curve_figure(train_log: Dict, path: str, targets: Optional[Dict] = None) -> str:
    """The validation curve of a run over all its resumed runs (``train_log.json``'s history and
    runs): best-of-3 point IoU and box IoU against the step, the runs shaded, the phase where the
    11 interactive rounds start marked, and the learning rate. Writes ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    history = train_log["history"]
    val = [h for h in history if "val_point_iou" in h]
    fig, (ax, lr_ax) = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    step_runs = [r for r in train_log["runs"] if not r.get("stage")]   # a stage after the steps has no width
    stages = [r for r in train_log["runs"] if r.get("stage")]
    for i, r in enumerate(step_runs):
        ax.axvspan(r["start_step"], r["end_step"], color="0.93" if i % 2 else "0.86", zorder=0)
        ax.text((r["start_step"] + r["end_step"]) / 2, 0.02, f"run {r['run']}\n{r['seconds'] / 60:.0f} min",
                ha="center", va="bottom", fontsize=9, transform=ax.get_xaxis_transform())
    steps = [h["step"] for h in val]
    ax.plot(steps, [h["val_point_iou"] for h in val], "o-", ms=3, label="point, best of 3")
    ax.plot(steps, [h["val_box_iou"] for h in val], "s-", ms=3, label="box")
    for name, key, colour in (("point target", "point_best_of_3_iou", "C0"), ("box target", "box_iou", "C1")):
        if targets and key in targets:
            ax.axhline(targets[key], color=colour, ls=":", lw=1, label=f"{name} (held-out)")
    if train_log.get("single_round_steps", 0) < train_log["steps"]:
        ax.axvline(train_log["single_round_steps"], color="k", lw=1, ls="--")
        ax.text(train_log["single_round_steps"], 0.2, " 11 rounds\n from here", va="bottom", fontsize=9,
                transform=ax.get_xaxis_transform())
    if train_log.get("extra_round_steps"):
        ax.axvline(train_log["steps"], color="k", lw=1, ls="-.")
        ax.text(train_log["steps"], 0.42, " second\n schedule", va="bottom", fontsize=9,
                transform=ax.get_xaxis_transform())
    ax.set_ylabel("validation IoU (24 scenes)")
    total = sum(r["seconds"] for r in train_log["runs"]) / 3600
    after = "".join(f" + the {r['stage'].replace('_', '-').replace('iou', 'IoU')} stage ({r['seconds'] / 60:.0f} min)"
                    for r in stages)
    ax.set_title(f"micro: validation IoU over {len(step_runs)} runs{after}, {total:.2f} h of training in all",
                 fontsize=11)
    ax.legend(loc="center", fontsize=9)
    ax.grid(alpha=0.3)
    lr_ax.plot([h["step"] for h in history], [h["lr"] for h in history], lw=1, color="k")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
