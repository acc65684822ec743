"""Lesson 10: SAM's training algorithm, 11 rounds of simulated interactive segmentation.

Paper: Kirillov et al. 2023, appendix A ("Training algorithm"). Code: minisam/training.py.
Run: ``MPLBACKEND=Agg python lessons/10_training_algorithm.py --out out/10`` (no torch;
about 10 s, more on a first run, which compiles minisam's Numba kernels).

SAM is trained the way it is used: a person clicks, looks at the mask, clicks again where
it is wrong. For every (image, object) pair of a batch the trainer plays this game with
itself for 11 rounds:

1. round 1: one prompt from the ground truth, a point (uniform on the object) or a box (the
   object's box with ~10% noise, at most 20 px per side), with equal probability;
2. 8 rounds that each add one click, drawn uniformly from the error region of the last
   mask: a positive click where the object was missed (false negative), a negative click
   where background was taken (false positive);
3. 2 rounds that add nothing: one at a random place among the 8 click rounds, one at the end.

From round 2 on, the model also gets its own previous prediction back as a mask prompt
(the unthresholded low-res logits of the mask with the highest predicted IoU), so it learns
to refine. Every round's output is scored with the loss of lesson 09 (the paper does not
say how the rounds are combined; SAM 2's trainer sums the losses of all rounds). Only the light prompt encoder and mask decoder run per round: the
image embedding is computed once, which is what makes 11 rounds per example affordable.

This lesson runs the algorithm's forward half (prompts, predictions, losses) on one
synthetic example, with minisam's real ``SamPredictor`` on a **randomized, untrained** tiny
model built here from NumPy random numbers: its masks are arbitrary, which is exactly the
situation at the start of training. For contrast, a toy "model" that grows or erases the
region of similar colour around each click shows what the same loop does once predictions
follow the prompts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402

from minisam.training import (error_regions, mask_box, noisy_box, round_schedule,  # noqa: E402
                              sample_error_point, simulate_interactive)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=os.path.join("out", "10"), help="folder for the figures")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
np.set_printoptions(precision=3, suppress=True)

# ---------------------------------------------------------------------------------------------
# 1. A synthetic scene: three shapes on a textured background; the target is the disk.
# ---------------------------------------------------------------------------------------------
H, W = 96, 128
rng = np.random.default_rng(args.seed)
rows, cols = np.mgrid[0:H, 0:W]                                  # [H, W] each
image = (60 + 30 * rng.random((H, W, 3))).astype(np.float32)     # [H, W, 3] background texture
disk = (rows - 50) ** 2 + (cols - 45) ** 2 <= 22 ** 2            # [H, W] the target object
square = (rows >= 20) & (rows < 55) & (cols >= 75) & (cols < 115)
triangle = (rows >= 60) & (rows < 90) & (cols - 80 >= 0) & (cols - 80 <= rows - 60)
image[square] = [200, 180, 40]
image[triangle] = [40, 90, 210]
image[disk] = [210, 60, 50]
image = np.clip(image + 10 * rng.normal(size=image.shape), 0, 255).astype(np.uint8)   # [H, W, 3]
target = disk
print(f"image {image.shape} {image.dtype}, target {target.shape}, {target.sum()} pixels "
      f"({100 * target.mean():.1f}%)")

# ---------------------------------------------------------------------------------------------
# 2. The pieces, as pure functions
# ---------------------------------------------------------------------------------------------
print("round kinds (paper schedule):", round_schedule(np.random.default_rng(args.seed)))
print("tight box of the target (x0, y0, x1, y1):", mask_box(target))
print("three noisy boxes:", [noisy_box(target, rng).astype(np.float64).round(1).tolist() for _ in range(3)])
guess = (rows - 45) ** 2 + (cols - 55) ** 2 <= 20 ** 2           # [H, W] a wrong first mask
false_neg, false_pos = error_regions(guess, target)
print(f"a guess shifted 10 px: {false_neg.sum()} false-negative and {false_pos.sum()} "
      f"false-positive pixels")
for _ in range(4):
    point, label = sample_error_point(guess, target, rng)
    print(f"   sampled click at (x, y) = {point}, {'positive' if label else 'negative'}")

# ---------------------------------------------------------------------------------------------
# 3. The real predictor on a randomized tiny SAM
# ---------------------------------------------------------------------------------------------
# Every tensor of the official state dict at a small configuration, filled with random
# numbers at sensible scales (no checkpoint, no torch): 1/sqrt(fan_in) for weights, ~1 for
# LayerNorm scales, N(0, 1) for learned embeddings and tokens.
from minisam.config import expected_shapes, make_config  # noqa: E402
from minisam.params import nest  # noqa: E402


def random_sam(cfg, seed):
    from minisam.sam import Sam
    r = np.random.default_rng(seed)
    flat = {}
    for name, shape in expected_shapes(cfg).items():
        if name.endswith("bias"):
            value = 0.02 * r.normal(size=shape)
        elif "norm" in name or "neck.1" in name or "neck.3" in name or "output_upscaling.1" in name:
            value = 1 + 0.1 * r.normal(size=shape)               # LayerNorm scales
        elif "embed" in name or "token" in name or "gaussian" in name or "rel_pos" in name:
            value = r.normal(size=shape) * (0.1 if "rel_pos" in name or "pos_embed" in name else 1.0)
        else:
            value = r.normal(size=shape) / np.sqrt(np.prod(shape[1:]))
        flat[name] = value.astype(np.float32)
    return Sam(cfg, nest(flat))


cfg = make_config(encoder_embed_dim=48, encoder_depth=2, encoder_num_heads=2,
                  encoder_global_attn_indexes=(1,), img_size=128, patch_size=16, window_size=4,
                  prompt_embed_dim=32, mask_in_chans=8, decoder_mlp_dim=64, decoder_num_heads=2,
                  iou_head_hidden_dim=32)
runs = {}
try:
    from minisam.predictor import SamPredictor
    predictor = SamPredictor(random_sam(cfg, seed=args.seed))
    start = time.perf_counter()
    records = simulate_interactive(predictor, image, target, np.random.default_rng(args.seed),
                                   first_prompt="point")
    print(f"\nreal SamPredictor, random tiny SAM (img_size {cfg.img_size}, embedding "
          f"{cfg.image_embedding_size}x{cfg.image_embedding_size}, low-res masks "
          f"{cfg.mask_input_size}x{cfg.mask_input_size}): 11 rounds in "
          f"{time.perf_counter() - start:.1f} s (includes Numba compilation on a first run)")
    runs["minisam SamPredictor, random untrained tiny SAM"] = records
except ImportError as exc:   # the predictor is not available in this checkout
    print(f"\nNOTE: minisam.predictor is not available ({exc}); only the toy model runs below.")


# ---------------------------------------------------------------------------------------------
# 4. A toy model that follows the clicks
# ---------------------------------------------------------------------------------------------
class ClickColorModel:
    """Not SAM: starts from the previous mask prompt; a positive click adds the pixels of
    similar colour within 20 px of it, a negative click removes them (a box fills them in)."""

    low = 64

    def set_image(self, image):
        self.image = image.astype(np.float32)
        self.h, self.w = image.shape[:2]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output=True, return_logits=False):
        r, c = np.mgrid[0:self.h, 0:self.w]                      # [H, W] each
        logit = (np.full((self.h, self.w), -4.0) if mask_input is None else
                 mask_input[0][r * self.low // self.h, c * self.low // self.w])   # [S, S] -> [H, W]
        if box is not None:
            x0, y0, x1, y1 = box
            inside = (c >= x0) & (c <= x1) & (r >= y0) & (r <= y1)
            centre = self.image[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            logit = np.where(inside & (np.abs(self.image - centre).max(-1) < 50), 4.0, logit)
        for (x, y), label in zip(*(() if point_coords is None else (point_coords, point_labels))):
            similar = np.abs(self.image - self.image[int(y), int(x)]).max(-1) < 50   # [H, W]
            near = (c - x) ** 2 + (r - y) ** 2 <= 20 ** 2
            logit = np.where(similar & near, 4.0 if label else -4.0, logit)
        low = logit[(np.arange(self.low) * self.h) // self.low][:, (np.arange(self.low) * self.w) // self.low]
        return logit[None].astype(np.float32), np.ones(1, np.float32), low[None].astype(np.float32)


runs["toy click-colour model (not SAM)"] = simulate_interactive(
    ClickColorModel(), image, target, np.random.default_rng(args.seed), first_prompt="point")

for name, records in runs.items():
    print(f"\n{name}")
    print(f"{'round':>5} {'kind':>10} {'points':>6} {'new click':>18} {'K':>2} {'chosen':>6} "
          f"{'IoU':>6} {'loss':>8} {'loss idx':>8}")
    for rec in records:
        click = "-" if rec.new_point is None else f"{rec.new_point.tolist()} {'+' if rec.new_label else '-'}"
        print(f"{rec.round:5d} {rec.kind:>10} {len(rec.point_labels):6d} {click:>18} "
              f"{len(rec.iou_pred):2d} {rec.chosen_index:6d} {rec.iou:6.3f} {rec.loss:8.3f} {rec.loss_index:8d}")
    print(f"   training would backpropagate the sum of the 11 losses: {sum(r.loss for r in records):.3f}")

# ---------------------------------------------------------------------------------------------
# 5. Figures: the 11 rounds of each run, and IoU / loss per round
# ---------------------------------------------------------------------------------------------
fig, axes = plt.subplots(len(runs), 11, figsize=(22, 2.3 * len(runs) + 0.5), squeeze=False)
for row, (name, records) in enumerate(runs.items()):
    for ax, rec in zip(axes[row], records):
        ax.imshow(image)
        overlay = np.zeros((H, W, 4))
        overlay[rec.mask] = [0.1, 0.9, 1.0, 0.5]                 # chosen mask in cyan
        ax.imshow(overlay)
        ax.contour(target, levels=[0.5], colors="yellow", linewidths=0.8)
        if rec.box is not None:
            x0, y0, x1, y1 = rec.box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="w", lw=1))
        for (x, y), label in zip(rec.point_coords, rec.point_labels):
            ax.plot(x, y, "g+" if label else "rx", ms=8, mew=2)
        if rec.new_point is not None:
            ax.plot(*rec.new_point, "o", mfc="none", mec="w", ms=10)
        ax.set_title(f"{rec.round}: {rec.kind}\nIoU {rec.iou:.2f}", fontsize=8)
        ax.axis("off")
    axes[row][0].text(0.0, 1.45, name, transform=axes[row][0].transAxes, ha="left",
                      fontsize=10, weight="bold")
fig.suptitle("11 training rounds: chosen mask (cyan), target (yellow), + positive / x negative "
             "clicks, o = this round's click")
fig.subplots_adjust(left=0.01, right=0.99, top=0.8, bottom=0.02, wspace=0.05, hspace=0.6)
fig.savefig(os.path.join(args.out, "rounds_strip.png"), dpi=90)
plt.close(fig)

fig, (ax_iou, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.5))
for name, records in runs.items():
    ax_iou.plot([r.round for r in records], [r.iou for r in records], "o-", label=name)
    ax_loss.plot([r.round for r in records], [r.loss for r in records], "o-", label=name)
ax_iou.set(xlabel="round", ylabel="IoU of chosen mask", ylim=(0, 1.05), title="IoU per round")
ax_loss.set(xlabel="round", ylabel="20 focal + dice + IoU MSE", title="sam_loss per round")
ax_iou.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "rounds_curves.png"), dpi=100)
plt.close(fig)
print(f"\nfigures written to {args.out}: rounds_strip.png, rounds_curves.png")
