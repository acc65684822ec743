"""Benchmark: one ``minisam train-micro`` step, NumPy engine vs torch engine, on this CPU.

A training step of the whole micro model (:data:`minisam.config.MICRO`) with the shipped recipe's
batch (4 images, 8 target masks each): the image encoder forward, the prompt encoder and mask
decoder for every round, the losses on the logits upsampled to 128 x 128, the backward of all
of it, clipping and an AdamW step. Two kinds of step, timed separately:
- ``single``: the first phase of the recipe (a point and a box per target, one round each);
- ``rounds``: the 11-round interactive simulation (4 rounds supervised).

- numpy: :func:`minisam.training.micro_numpy.train_step`; the worker never imports torch;
- torch: the torch engine's step (:func:`minisam.training.micro.train`'s loop body) on the
  official modules, autograd, ``clip_grad_norm_`` and ``torch.optim.AdamW``.
Both sides start from the same weights (drawn once with :func:`minisam.training.micro_numpy.official_init`)
and draw each step's batch from the same seed; the timed steps are interleaved between the sides.

Reported: median and all step times per kind; the ratio of the medians (target: NumPy <= 1.5x
torch) and the median of the per-batch ratios (a step's time depends on its batch: how many
targets, how many clicks); the largest relative difference between the two sides' losses on
the same batch (a check that both did the same work); the step's floating-point work as
torch's ``FlopCounterMode`` counts it (matmuls and convolutions of the forward and backward;
the NumPy engine also recomputes the attention probabilities and the GELUs, not counted), each
side's GFLOP/s on it against that side's measured float32 GEMM peak (a 2048^3 GEMM), peak
RSS, and the BLAS kernel (threadpoolctl).

    python benchmarks/train_micro_step.py [--repeats 7] [--threads N] [--keep-blas-env] [--tiny]

``--tiny`` runs a 2-block model on a batch of 1 image x 2 masks: a check that the script runs,
not a measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_worker_args, answer, describe_worker, fmt_times, header, interleaved,  # noqa: E402
                    minisam_env_info, numpy_gemm_gflops, print_ending, rss_mb, timed, torch_gemm_gflops, verdict,
                    worker_env, workers)

TARGET = 1.5
KINDS = ("single", "rounds")


def _setup(tiny: bool):
    from minisam.config import MICRO
    from minisam.training.micro import SHIPPED_RECIPE
    cfg = MICRO.replace(encoder_depth=2, encoder_global_attn_indexes=(1,)) if tiny else MICRO
    recipe = dict(SHIPPED_RECIPE, seed=0, batch_images=1 if tiny else SHIPPED_RECIPE["batch_images"],
                  masks_per_image=2 if tiny else SHIPPED_RECIPE["masks_per_image"])
    return cfg, recipe


class Side:
    def __init__(self, side: str, checkpoint: str, tiny: bool):
        self.side, self.index = side, 0
        self.cfg, self.recipe = _setup(tiny)
        if side == "numpy":
            from minisam.checkpoints.formats import load_state_dict
            from minisam.checkpoints.param_tree import nest
            from minisam.training.micro_numpy import _trained
            from minisam.training.optim import adamw_init
            self.params = nest(load_state_dict(checkpoint))
            self.state = adamw_init(_trained(self.params))
        else:
            import torch
            from minisam.reference.official import build_official
            self.torch = torch
            self.model = build_official(self.cfg)
            self.model.load_state_dict(torch.load(checkpoint, weights_only=True))
            self.model.train()
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.recipe["lr"],
                                         weight_decay=self.recipe["weight_decay"], betas=(0.9, 0.999))

    def step(self, kind: str) -> float:
        import numpy as np
        rng = np.random.default_rng(1000 + self.index)
        step = 0 if kind == "single" else self.recipe["single_round_steps"]  # the phase of the recipe
        self.index += 1
        lr = self.recipe["lr"]
        if self.side == "numpy":
            from minisam.training.micro_numpy import train_step
            return train_step(self.params, self.state, self.cfg, rng, self.recipe, step, lr)["loss"]
        return self._torch_step(rng, step, lr)

    def _torch_step(self, rng, step, lr):
        """The loop body of minisam.training.micro.train (torch engine), one step."""
        import numpy as np
        from minisam.training.micro import _interactive_rounds, draw_batch
        torch, model, r, size = self.torch, self.model, self.recipe, self.cfg.img_size
        for g in self.opt.param_groups:
            g["lr"] = lr
        scenes, owner, targets, first = draw_batch(rng, size, r)  # [M], [M, S, S]
        images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float()  # [B, 3, S, S]
        embeddings = model.image_encoder(model.preprocess(images))  # [B, C, G, G]
        if step < r["single_round_steps"]:
            loss = 0.5 * sum(_interactive_rounds(model, embeddings[owner], targets, rng, kind, size,
                                                 r["graded_rounds"], 1, r["iou_outputs"]) for kind in ("point", "box"))
        else:
            loss = _interactive_rounds(model, embeddings[owner], targets, rng, first, size,
                                       r["graded_rounds"], None, r["iou_outputs"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["clip_grad"])
        self.opt.step()
        return float(loss.detach())

    def count_flops(self, kind: str) -> float:
        """The step's FLOPs as torch counts them (torch side only): one extra, untimed step on the
        batch of the next timed step, undone afterwards (weights, AdamW state, batch index), so
        that both sides go on from the same weights on the same batches."""
        import copy
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        saved = self.index, copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict())
        with counter:
            self.step(kind)
        self.index = saved[0]
        self.model.load_state_dict(saved[1])
        self.opt.load_state_dict(saved[2])
        return float(counter.get_total_flops())


def serve(side: str, a) -> None:
    s = Side(side, a.checkpoint, a.tiny)
    info = {}
    for kind in KINDS:  # warm-up: Numba compiles, BLAS starts its threads
        loss, seconds = timed(lambda: s.step(kind))
        info[f"first_{kind}_s"], info[f"first_{kind}_loss"] = seconds, loss
    if side == "numpy":
        info.update(minisam_env_info(), gemm_gflops=numpy_gemm_gflops())
    else:
        info.update(torch_threads=s.torch.get_num_threads(), torch=s.torch.__version__, gemm_gflops=torch_gemm_gflops(),
                    flops={kind: s.count_flops(kind) for kind in KINDS})
    answer(info)
    for line in sys.stdin:
        words = line.split()
        if words[:1] != ["run"]:
            break
        loss, dt = timed(lambda: s.step(words[1]))
        answer(dict(time=dt, loss=loss, peak_rss_mb=rss_mb()))


def prepare(path: str, tiny: bool) -> None:
    """The shared initial weights, drawn without torch and written in the official .pth format."""
    import numpy as np
    from minisam.checkpoints.formats import save_checkpoint
    from minisam.training.micro_numpy import official_init
    cfg, _ = _setup(tiny)
    save_checkpoint(official_init(cfg, np.random.default_rng(0)), path, force=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per side and kind (each on its own batch)")
    ap.add_argument("--tiny", action="store_true", help="a 2-block model on 1 image x 2 masks: check the script runs")
    add_worker_args(ap, workers=("numpy", "torch"))
    args = ap.parse_args(argv)
    if args.worker:
        serve(args.worker, args)
        return 0

    print(header("train-micro step (micro, 4 images x 8 masks; encoder, prompt encoder, decoder, losses at "
                 "128 x 128, backward, clip + AdamW)" + (" [--tiny: not a measurement]" if args.tiny else ""),
                 args.threads), flush=True)
    sides = ("numpy", "torch")
    rss = {}
    times = {(s, k): [] for s in sides for k in KINDS}
    losses = {(s, k): [] for s in sides for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "micro_init.pth")
        prepare(ckpt, args.tiny)
        extra = ["--tiny"] if args.tiny else []
        with workers(__file__, sides, lambda side: ["--worker", side, "--checkpoint", ckpt] + extra,
                     lambda side: worker_env("minisam" if side == "numpy" else "official", args.threads,
                                             args.keep_blas_env)) as (procs, info):
            for side, command, r in interleaved(procs, [f"run {kind}" for kind in KINDS], args.repeats):
                times[side, command.split()[1]].append(r["time"])
                losses[side, command.split()[1]].append(r["loss"])
                rss[side] = r["peak_rss_mb"]
    flops = info["torch"]["flops"]
    for side in sides:
        i = info[side]
        print(f"\n[{side}] peak RSS {rss[side]:.0f} MB; float32 GEMM peak {i['gemm_gflops']:.1f} GFLOP/s")
        for kind in KINDS:
            med = statistics.median(times[side, kind])
            print(f"  {kind:>6} step: median {med:.3f} s (runs: {fmt_times(times[side, kind])} s; first "
                  f"{i[f'first_{kind}_s']:.2f} s), {flops[kind] / med / 1e9:.1f} GFLOP/s "
                  f"= {flops[kind] / med / 1e9 / i['gemm_gflops']:.0%} of the GEMM peak")
        for line in describe_worker(i):
            print("  " + line)
    print()
    for kind in KINDS:
        tn, tt = statistics.median(times["numpy", kind]), statistics.median(times["torch", kind])
        paired = statistics.median(a / b for a, b in zip(times["numpy", kind], times["torch", kind]))
        loss_gap = max(abs(a - b) / abs(b) for a, b in zip(losses["numpy", kind], losses["torch", kind]))
        print(f"{kind:>6} step ({flops[kind] / 1e9:.2f} GFLOP): numpy/torch {tn / tt:.2f}x "
              f"(target <= {TARGET}x: {verdict(tn / tt <= TARGET)}); median of the per-batch ratios "
              f"{paired:.2f}x; same batches: losses within {loss_gap:.1e} relative"
              + ("" if loss_gap <= 0.02 else " -- NOT the same batches, the ratio compares different work"))
    print_ending(rss, sides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
