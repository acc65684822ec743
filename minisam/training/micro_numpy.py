"""Training the small SAM in NumPy: ``minisam train-micro --engine numpy``.

The recipe of :mod:`minisam.training.micro` (Kirillov et al. 2023, section 3 "Losses and
training" and appendix A), every part of SAM trained without torch: the image encoder's backward
(:mod:`minisam.backward.image_encoder`), the prompt encoder's and mask decoder's
(:mod:`minisam.backward`), the losses with their gradients (:mod:`minisam.training.losses`),
AdamW and clipping (:mod:`minisam.training.optim`). The torch engine of
:func:`minisam.training.micro.train` stays as the witness: ``tests/test_train_micro_numpy.py``
runs both from the same weights and compares the loss of every step.

Step for step what the torch engine does, and draw for draw from the same generator
(``np.random.default_rng(seed)``): the scenes of the batch, the target masks of each image,
the first prompt, then for each target the rounds of
:func:`minisam.training.decoder_training.interactive_rounds` (the same as the torch
engine's ``_interactive_rounds``): a point and a box for the first ``single_round_steps`` steps,
the 11-round simulation after them. The gradient of the loss with respect to each target's
image embedding is summed per image (the torch engine indexes the embeddings by their owner
image) and sent through the image encoder's backward. Then global-norm clipping, AdamW
(betas 0.9, 0.999) at :func:`minisam.training.micro.recipe_lr`'s warm-up and cosine schedules.

What differs from the torch engine, and why:
- the initial weights: without torch, :func:`official_init` draws them from the same
  distributions as the official modules' ``reset_parameters`` (not the same numbers); ``init``
  starts from given weights instead (the parity tests pass the torch engine's);
- the resumable state is ``train_state.npz`` (format below) instead of ``train_state.pth``;
- ``dtype``: float32 (the default, as torch) or float64 (for the exact parity checks).

Files written to ``out_dir``, as by the torch engine: ``microsam_shapes.pth`` (the official
``.pth`` format, written by :func:`minisam.save_checkpoint` without torch), ``last_checkpoint.pth``
at each validation, ``train_log.json``, and the state:

``train_state.npz`` (written to a temporary file and renamed, so a killed run keeps the
previous one): ``param/<name>`` every tensor of the model's state dict by its official name;
``exp_avg/<name>`` and ``exp_avg_sq/<name>`` AdamW's moments of every trained parameter; ``meta``
a JSON string with ``format`` (``"minisam train-micro numpy"``), ``format_version``, ``step``,
``adam_steps`` (each parameter's AdamW step count), ``numpy_rng`` (the generator's
``bit_generator.state``), ``recipe``, ``config``, ``dtype``, ``history`` and ``runs``.

Shapes (``docs/shapes.md``): I images in a batch, M target masks, C, G, S the input side.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional

import numpy as np

from minisam.backward.common import add_grads, upsample_bilinear_forward
from minisam.backward.image_encoder import image_encoder_backward, image_encoder_forward
from minisam.backward.mask_decoder import mask_decoder_forward
from minisam.backward.prompt_encoder import GAUSSIAN, dense_pe_forward, prompt_encoder_forward
from minisam.checkpoints.param_tree import flatten, nest
from minisam.config import MICRO, expected_shapes
from minisam.errors import MinisamError
from minisam.training.decoder_training import interactive_rounds
from minisam.training.interactive import mask_box
from minisam.training.micro import (SHIPPED_RECIPE, VAL_SEED, _save_or_stop, _stopped, _validation_line,
                                    check_more_steps, draw_batch, iou_head_stage, recipe_lr, total_steps,
                                    with_new_recipe_keys)
from minisam.training.optim import adamw_init, adamw_step, clip_grad_norm
from minisam.training.shapes import interior_point, make_scene

STATE_NAME = "train_state.npz"
STATE_FORMAT, STATE_VERSION = "minisam train-micro numpy", 1
#: The one buffer of the official state dict (``PositionEmbeddingRandom``'s random Fourier
#: matrix): saved and loaded with the weights, never trained.
BUFFERS = (f"prompt_encoder.pe_layer.{GAUSSIAN}",)


# --------------------------------------------------------------------------- weights

_LAYER_NORMS = ("norm1", "norm2", "norm3", "norm4", "norm_final_attn", "neck.1", "neck.3", "mask_downscaling.1",
                "mask_downscaling.4", "output_upscaling.1")
_EMBEDDINGS = ("point_embeddings", "not_a_point_embed", "no_mask_embed", "iou_token", "mask_tokens")
_TRANSPOSED_CONVS = ("output_upscaling.0", "output_upscaling.3")


def official_init(cfg, rng: np.random.Generator, dtype=np.float32) -> Dict[str, np.ndarray]:
    """A flat state dict drawn as the official modules initialise themselves (no torch):

    - ``nn.Linear`` and ``nn.Conv2d`` weights: ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-b, b) with
      b = 1 / sqrt(fan_in), fan_in = in features x kernel area; biases U(-b, b), the same b;
    - ``nn.ConvTranspose2d`` (the decoder's upscaling): the same, its fan_in read from weight
      dim 1 (out channels x kernel area), as torch's ``_calculate_fan_in_and_fan_out`` does;
    - ``nn.LayerNorm`` and ``LayerNorm2d``: weight 1, bias 0;
    - ``nn.Embedding`` (point, not-a-point, no-mask, IoU and mask tokens): N(0, 1);
    - ``pos_embed`` and the rel-pos tables: 0 (``ImageEncoderViT`` and ``Attention`` zero them);
    - the random Fourier matrix: N(0, 1) (``PositionEmbeddingRandom``, scale 1).
    Draws come from ``rng`` in the state dict's order.
    """
    sd = {}
    for name, shape in expected_shapes(cfg).items():
        module, leaf = name.rsplit(".", 1)
        if any(module.endswith(n) for n in _LAYER_NORMS):
            value = np.full(shape, 1.0 if leaf == "weight" else 0.0)
        elif leaf in ("pos_embed", "rel_pos_h", "rel_pos_w"):
            value = np.zeros(shape)
        elif leaf == GAUSSIAN or any(e in module for e in _EMBEDDINGS):
            value = rng.standard_normal(shape)
        else:
            wshape = shape if leaf == "weight" else expected_shapes(cfg)[module + ".weight"]
            if any(module.endswith(t) for t in _TRANSPOSED_CONVS):
                fan_in = wshape[1] * int(np.prod(wshape[2:]))
            else:
                fan_in = int(np.prod(wshape[1:]))
            bound = 1.0 / np.sqrt(fan_in)
            value = rng.uniform(-bound, bound, shape)
        sd[name] = value.astype(dtype)
    return sd


def _trained(params) -> Dict:
    """The trained part of the parameter tree (every tensor but the buffers), sharing its arrays."""
    flat = {k: v for k, v in flatten(params).items() if k not in BUFFERS}
    return nest(flat)


def preprocess(images, cfg, dtype) -> np.ndarray:  # [I, S, S, 3] uint8 -> [I, 3, S, S]
    """``Sam.preprocess`` for square images of the input size: (x - pixel_mean) / pixel_std."""
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(dtype)  # [I, 3, S, S]
    mean = np.asarray(cfg.pixel_mean, dtype).reshape(1, 3, 1, 1)
    std = np.asarray(cfg.pixel_std, dtype).reshape(1, 3, 1, 1)
    return (x - mean) / std  # [I, 3, S, S]


# --------------------------------------------------------------------------- one step

def train_step(params, opt_state, cfg, rng, recipe: Dict, step: int, lr: float) -> Dict:
    """One optimizer step of the recipe, in place on ``params`` and ``opt_state``.

    Returns {"loss", "rounds", "grad_norm", "grads"} (``grads`` after clipping, keyed like
    ``params``). The draws from ``rng`` are the torch engine's, in its order: scenes, each
    image's targets, the first prompt, then the rounds.
    """
    size = cfg.img_size
    dtype = params["mask_decoder"]["iou_token"]["weight"].dtype
    scenes, owner, targets, first = draw_batch(rng, size, recipe)  # [M], [M, S, S]
    x = preprocess(np.stack([s.image for s in scenes]), cfg, dtype)  # [I, 3, S, S]
    embeddings, encoder_cache = image_encoder_forward(params["image_encoder"], cfg, x)  # [I, C, G, G]
    single = step < recipe["single_round_steps"]
    kw = dict(graded_rounds=recipe["graded_rounds"], iou_outputs=recipe["iou_outputs"], embedding_grad=True)
    if single:  # the curriculum's first phase: a point and a box for every target, one round each
        loss, grads, dprompt = 0.0, {}, 0.0
        for kind in ("point", "box"):
            loss_k, grads_k, demb_k = interactive_rounds(params, cfg, embeddings[owner], targets, rng, kind, size,
                                                         rounds=1, **kw)
            loss, dprompt = loss + 0.5 * loss_k, dprompt + 0.5 * demb_k  # [M, C, G, G]
            add_grads(grads, _scaled(grads_k, 0.5))
    else:
        loss, grads, dprompt = interactive_rounds(params, cfg, embeddings[owner], targets, rng, first, size,
                                                  rounds=None, **kw)  # [M, C, G, G]
    dembeddings = np.zeros_like(embeddings)  # [I, C, G, G]
    np.add.at(dembeddings, owner, dprompt)  # each image collects the gradients of its targets
    _, grads["image_encoder"] = image_encoder_backward(dembeddings, encoder_cache)
    trained = _trained(params)
    norm = clip_grad_norm(grads, recipe["clip_grad"]) if recipe["clip_grad"] else None
    adamw_step(trained, grads, opt_state, lr=lr, betas=(0.9, 0.999), weight_decay=recipe["weight_decay"])
    return {"loss": float(loss), "rounds": 1 if single else 11, "grad_norm": None if norm is None else float(norm),
            "grads": grads}


def _scaled(tree, factor):
    return {k: _scaled(v, factor) if isinstance(v, dict) else v * v.dtype.type(factor) for k, v in tree.items()}


# --------------------------------------------------------------------------- validation

def validate(params, cfg, scenes) -> tuple:
    """The torch engine's ``_val_torch`` in NumPy: mean best-of-3 IoU for each object's most
    interior point, and mean single-mask IoU for its box, on the logits upsampled to the input."""
    size = cfg.img_size
    dtype = params["mask_decoder"]["iou_token"]["weight"].dtype
    pe, _ = dense_pe_forward(params["prompt_encoder"], cfg)  # [1, C, G, G]
    pe = pe.astype(dtype, copy=False)
    ious = {"point": [], "box": []}
    for s in scenes:
        emb, _ = image_encoder_forward(params["image_encoder"], cfg, preprocess(s.image[None], cfg, dtype))  # [1, C, G, G]
        for m in s.instance_masks:
            pt = np.asarray(interior_point(m), np.float32)[None, None]  # [1, 1, 2]
            for kind in ("point", "box"):
                if kind == "point":
                    prompts = dict(points=(pt - np.float32(0.5), np.ones((1, 1), np.int64)))
                else:
                    prompts = dict(boxes=mask_box(m)[None])
                (sparse, dense), _ = prompt_encoder_forward(params["prompt_encoder"], cfg, **prompts)
                (low, _), _ = mask_decoder_forward(params["mask_decoder"], cfg, emb, pe, sparse, dense,
                                                   kind == "point")  # [1, K', R, R]
                up = upsample_bilinear_forward(low, (size, size))[0][0] > 0  # [K', S, S]
                inter = (up & m).reshape(len(up), -1).sum(1)
                union = np.maximum((up | m).reshape(len(up), -1).sum(1), 1)
                ious[kind].append(float((inter / union).max()))
    return float(np.mean(ious["point"])), float(np.mean(ious["box"]))


# --------------------------------------------------------------------------- state

def save_state(out_dir: str, params, opt_state, step: int, rng, recipe, cfg, history, runs, dtype) -> None:
    """``train_state.npz`` (module docstring), written to a temporary file and renamed."""
    path = os.path.join(out_dir, STATE_NAME)
    arrays = {f"param/{k}": v for k, v in flatten(params).items()}
    for k, st in opt_state.items():
        arrays[f"exp_avg/{k}"], arrays[f"exp_avg_sq/{k}"] = st["exp_avg"], st["exp_avg_sq"]
    meta = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "step": step,
            "adam_steps": {k: int(st["step"]) for k, st in opt_state.items()}, "numpy_rng": rng.bit_generator.state,
            "recipe": recipe, "config": cfg.to_dict(), "dtype": np.dtype(dtype).name, "history": history, "runs": runs}
    arrays["meta"] = np.array(json.dumps(meta))
    tmp = f"{path}.{os.getpid()}.part"
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        raise MinisamError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_state(out_dir: str):
    """(meta, flat state dict, AdamW state) from ``train_state.npz``; a clear error otherwise."""
    path = os.path.join(out_dir, STATE_NAME)
    if not os.path.isfile(path):
        other = os.path.join(out_dir, "train_state.pth")
        hint = " (it holds train_state.pth, a torch-engine run: resume it with --engine torch)" \
            if os.path.isfile(other) else " (a run writes it every save_every steps)"
        raise MinisamError(f"{path}: no NumPy training state to resume{hint}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data.pop("meta")))
    except Exception as exc:  # a truncated zip, a foreign file: say which file
        raise MinisamError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or meta.get("format_version") != STATE_VERSION:
        raise MinisamError(f"{path}: not a train-micro NumPy state of format version {STATE_VERSION}")
    params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    try:
        opt = {k: {"step": int(s), "exp_avg": data[f"exp_avg/{k}"], "exp_avg_sq": data[f"exp_avg_sq/{k}"]}
               for k, s in meta["adam_steps"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise MinisamError(f"{path}: training state with incomplete AdamW moments ({exc})") from None
    return meta, params, opt


def _check_weights(flat, cfg, source: str, dtype) -> Dict[str, np.ndarray]:
    """The given or saved weights must be exactly the model's tensors at ``cfg``."""
    want = expected_shapes(cfg)
    missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
    bad = sorted(k for k in set(want) & set(flat) if tuple(np.shape(flat[k])) != want[k])
    if missing or extra or bad:
        raise MinisamError(f"{source}: weights do not fit the model (missing {missing[:3]}, unexpected "
                           f"{extra[:3]}, mis-shaped {bad[:3]})")
    return {k: np.array(flat[k], dtype=dtype) for k in want}


# --------------------------------------------------------------------------- the run

def train(steps: int, out_dir: str, seed: int, batch_images: int, masks_per_image: int, lr: float,
          weight_decay: float, warmup: Optional[int], val_every: int, graded_rounds: int, clip_grad: Optional[float],
          single_round_steps: int, iou_outputs: str, scene_min_area: int,
          extra_round_steps: int = SHIPPED_RECIPE["extra_round_steps"],
          extra_round_lr: float = SHIPPED_RECIPE["extra_round_lr"],
          iou_head_scenes: int = SHIPPED_RECIPE["iou_head_scenes"],
          iou_head_epochs: int = SHIPPED_RECIPE["iou_head_epochs"],
          iou_head_rank_weight: float = SHIPPED_RECIPE["iou_head_rank_weight"],
          iou_head_mix: float = SHIPPED_RECIPE["iou_head_mix"], config=None, on_step=None,
          threads: Optional[int] = None, progress: bool = True, log=print, resume: bool = False,
          max_minutes: Optional[float] = None, save_every: int = 200, dtype="float32", init=None) -> Dict:
    """:func:`minisam.training.micro.train` with ``engine="numpy"``: the same arguments, files and
    return value, plus ``dtype`` ("float32" or "float64") and ``init`` (a flat or nested state
    dict, or a checkpoint path, to start from instead of :func:`official_init`'s draws)."""
    from tqdm import tqdm
    from minisam.checkpoints.formats import load_state_dict, save_checkpoint
    from minisam.config import make_config
    from minisam.kernels.threads import get_num_threads, set_num_threads

    if threads:
        set_num_threads(threads)
    os.makedirs(out_dir, exist_ok=True)
    stage_args = dict(extra_round_steps=extra_round_steps, extra_round_lr=extra_round_lr,
                      iou_head_scenes=iou_head_scenes, iou_head_epochs=iou_head_epochs,
                      iou_head_rank_weight=iou_head_rank_weight, iou_head_mix=iou_head_mix)
    if resume:
        meta, flat, opt_state = load_state(out_dir)
        recipe, cfg, dtype = (with_new_recipe_keys(dict(meta["recipe"]), stage_args), make_config(**meta["config"]),
                              np.dtype(meta["dtype"]))
        flat = _check_weights(flat, cfg, os.path.join(out_dir, STATE_NAME), dtype)
        history, runs, first_step = list(meta["history"]), list(meta["runs"]), int(meta["step"])
        check_more_steps(runs, first_step, recipe, os.path.join(out_dir, STATE_NAME))
    else:
        cfg = config or MICRO
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise MinisamError(f"dtype must be float32 or float64, got {dtype}")
        recipe = dict(steps=steps, seed=seed, batch_images=batch_images, masks_per_image=masks_per_image, lr=lr,
                      weight_decay=weight_decay, val_every=val_every, graded_rounds=graded_rounds,
                      clip_grad=clip_grad, single_round_steps=single_round_steps, iou_outputs=iou_outputs,
                      scene_min_area=scene_min_area, **stage_args,
                      warmup=warmup if warmup is not None else max(1, min(300, steps // 10)))
        if init is None:
            flat = official_init(cfg, np.random.default_rng([seed, 1]), dtype)  # a stream apart from the data's
            source = "official_init"
        elif isinstance(init, (str, os.PathLike)):
            flat, source = load_state_dict(init), os.fspath(init)
        else:
            flat, source = dict(init), "init"
            if any(isinstance(v, dict) for v in flat.values()):
                flat = flatten(flat)
        flat = _check_weights(flat, cfg, source, dtype)
        history, runs, first_step, opt_state = [], [], 0, None
    params = nest(flat)
    if opt_state is None:
        opt_state = adamw_init(_trained(params))
    steps = total_steps(recipe)
    rng = np.random.default_rng(recipe["seed"])
    if resume:
        rng.bit_generator.state = meta["numpy_rng"]
    size = cfg.img_size
    min_area = recipe.get("scene_min_area", 0)
    val_scenes = [make_scene(np.random.default_rng(VAL_SEED + i), size, min_area=min_area) for i in range(24)]
    run = {"run": len(runs) + 1, "start_step": first_step, "end_step": first_step, "seconds": 0.0,
           "threads": get_num_threads(), "engine": "numpy"}
    if first_step < steps:  # a finished run resumed only to evaluate adds no run
        runs.append(run)
    t0 = time.time()
    elapsed_before = sum(r["seconds"] for r in runs[:-1])

    def save_model(name):
        save_checkpoint(flatten(params), os.path.join(out_dir, name), force=True)

    bar = tqdm(range(first_step, steps), desc="train-micro numpy", disable=not progress, initial=first_step,
               total=steps)
    for step in bar:
        lr_now = recipe_lr(step, recipe)
        out = train_step(params, opt_state, cfg, rng, recipe, step, lr_now)
        run["end_step"], run["seconds"] = step + 1, time.time() - t0
        rec = {"step": step + 1, "rounds": out["rounds"], "loss": out["loss"], "lr": lr_now,
               "time_s": elapsed_before + run["seconds"], "run": run["run"]}
        if on_step is not None:
            on_step(step + 1, params)
        if (step + 1) % recipe["val_every"] == 0 or step + 1 == steps:
            save_model("last_checkpoint.pth")
            rec["val_point_iou"], rec["val_box_iou"] = validate(params, cfg, val_scenes)
            log(_validation_line(rec))
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        save_now, stop_now = _save_or_stop(step, steps, rec, run, save_every, max_minutes)
        if save_now:
            save_state(out_dir, params, opt_state, step + 1, rng, recipe, cfg, history, runs, dtype)
        if stop_now:
            return _stopped(log, step, steps, run, out_dir, history, runs)
    iou_head_stage(params, cfg, rng, recipe, runs, log, progress)
    path = os.path.join(out_dir, "microsam_shapes.pth")
    save_model("microsam_shapes.pth")
    save_state(out_dir, params, opt_state, steps, rng, recipe, cfg, history, runs, dtype)
    with open(os.path.join(out_dir, "train_log.json"), "w") as f:
        json.dump({"config": cfg.to_dict(), **recipe, "single_round_prompts": ["point", "box"], "engine": "numpy",
                   "dtype": np.dtype(dtype).name, "threads": get_num_threads(), "runs": runs,
                   "total_seconds": sum(r["seconds"] for r in runs), "history": history}, f)
    return {"checkpoint": path, "history": history, "runs": runs, "finished": True, "recipe": recipe}
