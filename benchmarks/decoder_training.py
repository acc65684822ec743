"""Benchmark: one decoder training step, NumPy (minisam.backward) vs torch autograd, vit_b sizes.

A training step of SAM's prompt encoder and mask decoder on frozen image embeddings: the
11-round interactive simulation (4 rounds supervised, as ``minisam train-micro``), the paper's
losses on the logits upsampled to 1024 x 1024, gradient clipping and an AdamW step, for a batch
of 8 target masks from 2 images (vit_b: C 256, grid 64, 4096 image tokens, masks 256 -> 1024).
- numpy: :func:`minisam.training.decoder_training.interactive_rounds` +
  :mod:`minisam.training.optim`; the worker never imports torch;
- torch: :func:`minisam.training.micro._interactive_rounds` on the official modules, autograd,
  ``clip_grad_norm_`` and ``torch.optim.AdamW``.
Both sides load the same randomized vit_b and draw the same targets, prompts and rounds from
the same seeds; each timed step is interleaved between the sides. Reported: median and all
step times, the ratio (target: NumPy <= 1.5x torch), peak RSS (VmHWM) per worker, the BLAS kernel.

    python benchmarks/decoder_training.py [--repeats 3] [--threads N] [--keep-blas-env]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_worker_args, answer, describe_worker, fmt_times, header, interleaved,  # noqa: E402
                    minisam_env_info, print_ending, rss_mb, save_random_vit_b, start_worker, timed, verdict,
                    worker_env, workers)

TARGET = 1.5
LR, WEIGHT_DECAY, CLIP = 8e-4, 0.1, 1.0


def _batch(step: int, size: int, images: int = 2, masks_per_image: int = 4):
    """(owner [P], targets [P, S, S], first prompt) of one step, the same on both sides."""
    import numpy as np
    from minisam.training.shapes import make_scene
    rng = np.random.default_rng(1000 + step)
    owner, targets = [], []
    for i in range(images):
        scene = make_scene(rng, size)
        pick = rng.choice(len(scene.masks), min(masks_per_image, len(scene.masks)), replace=False)
        owner += [i] * len(pick)
        targets += [scene.masks[j] for j in pick]
    return np.array(owner), np.stack(targets), ("box" if step % 2 else "point")


class Side:
    def __init__(self, side: str, checkpoint: str):
        import numpy as np
        from minisam.config import VIT_B
        self.side, self.cfg, self.step_index = side, VIT_B, 0
        rng = np.random.default_rng(7)
        C, G = VIT_B.prompt_embed_dim, VIT_B.image_embedding_size
        self.embeddings = rng.standard_normal((2, C, G, G)).astype(np.float32)  # [I, C, G, G] frozen
        if side == "numpy":
            from minisam.checkpoints.formats import load_state_dict
            from minisam.checkpoints.param_tree import nest
            from minisam.training.decoder_training import TRAINED_PARTS
            from minisam.training.optim import adamw_init
            tree = nest(load_state_dict(checkpoint))
            self.params = {part: tree[part] for part in TRAINED_PARTS}
            self.state = adamw_init(self.params)
        else:
            import torch
            from common import load_official_vit_b
            self.torch = torch
            self.model = load_official_vit_b(checkpoint).train()
            self.trained = [p for part in ("prompt_encoder", "mask_decoder")
                            for p in getattr(self.model, part).parameters()]
            self.opt = torch.optim.AdamW(self.trained, lr=LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.999))
            self.emb_t = torch.from_numpy(self.embeddings)

    def step(self):
        import numpy as np
        owner, targets, first = _batch(self.step_index, self.cfg.img_size)
        rng = np.random.default_rng(self.step_index)
        self.step_index += 1
        if self.side == "numpy":
            from minisam.training.decoder_training import interactive_rounds
            from minisam.training.optim import adamw_step, clip_grad_norm
            loss, grads = interactive_rounds(self.params, self.cfg, self.embeddings[owner], targets, rng, first,
                                             self.cfg.img_size, graded_rounds=4, iou_outputs="all")
            clip_grad_norm(grads, CLIP)
            adamw_step(self.params, grads, self.state, lr=LR, weight_decay=WEIGHT_DECAY)
            return float(loss)
        from minisam.training.micro import _interactive_rounds
        loss = _interactive_rounds(self.model, self.emb_t[owner], targets, rng, first, self.cfg.img_size,
                                   graded_rounds=4, rounds=None, iou_outputs="all")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.trained, CLIP)
        self.opt.step()
        return float(loss.detach())


def serve(side: str, a) -> None:
    s = Side(side, a.checkpoint)
    loss, first_s = timed(s.step)  # warm-up
    info = dict(first_step_s=first_s, first_loss=loss)
    if side == "numpy":
        info.update(minisam_env_info())
    else:
        info.update(torch_threads=s.torch.get_num_threads(), torch=s.torch.__version__)
    answer(info)
    for line in sys.stdin:
        if line.split()[:1] != ["run"]:
            break
        loss, dt = timed(s.step)
        answer(dict(time=dt, loss=loss, peak_rss_mb=rss_mb()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per side")
    add_worker_args(ap, workers=("numpy", "torch", "prepare"))
    args = ap.parse_args(argv)
    if args.worker == "prepare":
        save_random_vit_b(args.checkpoint)
        return 0
    if args.worker:
        serve(args.worker, args)
        return 0

    print(header("decoder training step at vit_b sizes: 8 masks from 2 images, 11 rounds (4 supervised), "
                 "losses at 1024 x 1024, clip + AdamW", args.threads), flush=True)
    sides = ("numpy", "torch")
    times, losses, rss = {s: [] for s in sides}, {s: [] for s in sides}, {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "vit_b_random.pth")
        if start_worker(__file__, ["--worker", "prepare", "--checkpoint", ckpt], worker_env("official")).wait():
            raise RuntimeError("could not prepare the random vit_b checkpoint")
        with workers(__file__, sides, lambda side: ["--worker", side, "--checkpoint", ckpt],
                     lambda side: worker_env("minisam" if side == "numpy" else "official", args.threads,
                                             args.keep_blas_env)) as (procs, info):
            for side, _, r in interleaved(procs, ["run"], args.repeats):
                times[side].append(r["time"])
                losses[side].append(r["loss"])
                rss[side] = r["peak_rss_mb"]
    for side in sides:
        i = info[side]
        print(f"\n[{side}] first step {i['first_step_s']:.2f} s (loss {i['first_loss']:.4f}); peak RSS {rss[side]:.0f} MB")
        print(f"  step median {statistics.median(times[side]):.2f} s  (runs: {fmt_times(times[side])} s; "
              f"losses {', '.join(f'{x:.4f}' for x in losses[side])})")
        for line in describe_worker(i):
            print("  " + line)
    tn, tt = statistics.median(times["numpy"]), statistics.median(times["torch"])
    print(f"\nstep time numpy/torch: {tn / tt:.2f}x (target <= {TARGET}x: {verdict(tn / tt <= TARGET)})")
    print_ending(rss, sides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
