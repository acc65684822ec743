# %% [markdown]
# # Lesson 15: SAM's training algorithm, 11 rounds of simulated interactive segmentation
#
# Paper: Kirillov et al. 2023, appendix A ("Training algorithm"). Code: minisam/training/interactive.py.
# Deck: "Training Algorithm".
#
# SAM is trained the way it is used: a person clicks, looks at the mask, clicks again where
# it is wrong. For every (image, object) pair of a batch the trainer plays this game with
# itself for 11 rounds:
#
# 1. round 1: one prompt from the ground truth, a point (uniform on the object) or a box (the
#    object's box with ~10% noise, at most 20 px per side), with equal probability;
# 2. 8 rounds that each add one click, drawn uniformly from the error region of the last
#    mask: a positive click where the object was missed (false negative), a negative click
#    where background was taken (false positive);
# 3. 2 rounds that add nothing: one at a random place among the 8 click rounds, one at the end.
#
# From round 2 on, the model also gets its own previous prediction back as a mask prompt
# (the unthresholded low-res logits of the mask with the highest predicted IoU), so it learns
# to refine. Every round's output is scored with the loss of lesson 14 (the paper does not
# say how the rounds are combined; SAM 2's trainer sums the losses of all rounds). Only the
# light prompt encoder and mask decoder run per round: the image embedding is computed once,
# which is what makes 11 rounds per example affordable.
#
# The sampling, written out for one target mask $Y \subset \Omega$ (the set of its pixels, $\Omega$
# the image's pixels). Round $r$ gives the predictor the prompt set $\mathcal{P}_r$ and, from round 2
# on, the previous low-res logits $\ell_{r-1}$; it returns masks $\hat M_r^{(k)}$ with predicted IoUs
# $s_r^{(k)}$, and the mask passed on is the one it rates best:
#
# $$
# \begin{aligned}
# \mathcal{P}_1 &= \{ (c, +) \},\ \ c \sim \mathcal{U}(Y) \qquad \text{(with probability } 1/2\text{), or else} \\
# \mathcal{P}_1 &= \{ \operatorname{box}(Y) + \operatorname{clip}(\varepsilon \odot \sigma, -20, 20) \},\ \
#   \varepsilon \sim \mathcal{N}(0, I_4),\ \sigma = 0.1\,(w, h, w, h), \\
# k_r &= \arg\max_k s_r^{(k)}, \qquad M_r = \hat M_r^{(k_r)}, \qquad \ell_r = \text{its low-res logits}, \\
# \text{FN}_r &= Y \setminus M_r, \qquad \text{FP}_r = M_r \setminus Y, \\
# \text{click round: } \mathcal{P}_{r+1} &= \mathcal{P}_r \cup \{ (c, \lambda) \},\ \
#   c \sim \mathcal{U}(\text{FN}_r \cup \text{FP}_r),\ \ \lambda = \begin{cases} + & c \in \text{FN}_r \\
#   - & c \in \text{FP}_r \end{cases} \\
# \text{mask-only round: } \mathcal{P}_{r+1} &= \mathcal{P}_r \quad (\text{only } \ell_r \text{ is new}),
# \end{aligned}
# $$
#
# with $w, h$ the box's width and height, $\mathcal{U}$ the uniform distribution over a set of pixels,
# and rounds $2, \dots, 11$ made of 8 click rounds and 2 mask-only rounds: one at a uniformly random
# one of the 9 places among the click rounds (before the first, between two, or after the last), the
# other last. Every round is scored with lesson 14's loss $\mathcal{L}\big(\hat M_r, s_r; Y\big)$, and the
# rounds are combined by their sum $\sum_{r=1}^{11} \mathcal{L}\big(\hat M_r, s_r; Y\big)$ (SAM 2's trainer;
# minisam's decoder trainer takes the mean over rounds and prompts, the same up to a constant
# factor). When $M_r = Y$ a click round has nothing to correct and adds a padding token instead.
#
# This lesson runs the algorithm's forward half (prompts, predictions, losses) on one object of
# a synthetic scene, with minisam's real ``SamPredictor`` on the default model (``micro``,
# trained on such scenes with exactly this loop by ``minisam train-micro``; ``--model vit_b``
# for the official weights), once starting from a point and once from a box. For contrast, a
# toy "model" that grows or erases the region of similar colour around each click shows what
# the same loop does with a predictor that follows the clicks but knows nothing of shapes.
#
# Run:  python lessons/15_training_algorithm.py --out out/15

# %%
import time

import numpy as np

import _lesson

args = _lesson.parse_args("15", "Lesson 15: SAM's training algorithm, 11 rounds of simulated interactive segmentation",
                          extra=lambda p: p.add_argument("--seed", type=int, default=0, help="scene and rounds"))

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.training.shapes import make_scene  # noqa: E402
from minisam.training.interactive import (error_regions, mask_box, noisy_box, round_schedule,  # noqa: E402
                              sample_error_point, simulate_interactive)

np.set_printoptions(precision=3, suppress=True)
sam = _lesson.load_model(args)
S, M = sam.config.img_size, sam.config.mask_input_size


# %% [markdown]
# ## 1. A synthetic scene; the target is its largest object

# %%
rng = np.random.default_rng(args.seed)
scene = make_scene(rng, S)
obj = max(scene.objects, key=lambda i: scene.masks[i].sum())
image, target = scene.image, scene.masks[obj]                     # [S, S, 3] uint8, [S, S] bool
H, W = target.shape
print(f"image {image.shape} {image.dtype}, target '{scene.kinds[obj]}' {target.shape}, {target.sum()} pixels "
      f"({100 * target.mean():.1f}%)")


# %% [markdown]
# ## 2. The pieces, as pure functions

# %%
print("round kinds (paper schedule):", round_schedule(np.random.default_rng(args.seed)))
print("tight box of the target (x0, y0, x1, y1):", mask_box(target))
print("three noisy boxes:", [noisy_box(target, rng).astype(np.float64).round(1).tolist() for _ in range(3)])
shift = max(1, S // 24)
guess = np.roll(target, (shift, shift), axis=(0, 1))              # [H, W] a wrong first mask
false_neg, false_pos = error_regions(guess, target)
print(f"a guess shifted {shift} px down and right: {false_neg.sum()} false-negative and {false_pos.sum()} "
      f"false-positive pixels")
for _ in range(4):
    point, label = sample_error_point(guess, target, rng)
    print(f"   sampled click at (x, y) = {point}, {'positive' if label else 'negative'}")


# %% [markdown]
# ## 3. The real predictor: 11 rounds from a point, 11 from a box
#
# set_image runs the encoder once; every round after that is prompt encoder + decoder only.

# %%
predictor = SamPredictor(sam)
start = time.perf_counter()
predictor.set_image(image)
encoder_s = time.perf_counter() - start
print(f"\nimage embedding {predictor.get_image_embedding().shape} in {encoder_s:.2f} s")
runs = {}
for first in ("point", "box"):
    start = time.perf_counter()
    records = simulate_interactive(predictor, None, target, np.random.default_rng(args.seed), first_prompt=first)
    print(f"real SamPredictor ({args.checkpoint or args.model}), first prompt a {first}: 11 rounds in "
          f"{time.perf_counter() - start:.2f} s; masks {records[-1].mask.shape}, mask prompts "
          f"{(1, M, M)} (the previous round's low-res logits)")
    runs[f"minisam SamPredictor ({args.checkpoint or args.model}), {first} first"] = records


# %% [markdown]
# ## 4. A toy model that follows the clicks

# %%
class ClickColorModel:
    """Not SAM: starts from the previous mask prompt; a positive click adds the pixels of
    similar colour within ``radius`` px of it, a negative click removes them (a box fills them in)."""

    low = M                                                       # the same low-res size as SAM
    radius = S // 12

    def set_image(self, image):
        self.image = image.astype(np.float32)
        self.h, self.w = image.shape[:2]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output=True, return_logits=False):
        r, c = np.mgrid[0:self.h, 0:self.w]                      # [H, W] each
        logit = (np.full((self.h, self.w), -4.0) if mask_input is None else
                 mask_input[0][r * self.low // self.h, c * self.low // self.w])   # [M, M] -> [H, W]
        if box is not None:
            x0, y0, x1, y1 = box
            inside = (c >= x0) & (c <= x1) & (r >= y0) & (r <= y1)
            centre = self.image[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            logit = np.where(inside & (np.abs(self.image - centre).max(-1) < 50), 4.0, logit)
        for (x, y), label in zip(*(() if point_coords is None else (point_coords, point_labels))):
            similar = np.abs(self.image - self.image[int(y), int(x)]).max(-1) < 50   # [H, W]
            near = (c - x) ** 2 + (r - y) ** 2 <= self.radius ** 2
            logit = np.where(similar & near, 4.0 if label else -4.0, logit)
        low = logit[(np.arange(self.low) * self.h) // self.low][:, (np.arange(self.low) * self.w) // self.low]
        return logit[None].astype(np.float32), np.ones(1, np.float32), low[None].astype(np.float32)


runs["toy click-colour model (not SAM), point first"] = simulate_interactive(
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


# %% [markdown]
# ## 5. Figures: the 11 rounds of each run, and IoU / loss per round

# %%
fig, axes = plt.subplots(len(runs), 11, figsize=(22, 2.3 * len(runs) + 0.5), squeeze=False)
for row, (name, records) in enumerate(runs.items()):
    for ax, rec in zip(axes[row], records):
        ax.imshow(image)
        overlay = np.zeros((H, W, 4))                             # [H, W, RGBA]
        overlay[rec.mask] = [0.1, 0.9, 1.0, 0.5]                  # chosen mask in cyan
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
fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.02, wspace=0.05, hspace=0.6)
_lesson.save(fig, args, "rounds_strip.png")
plt.close(fig)

fig, (ax_iou, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.8))
for name, records in runs.items():
    ax_iou.plot([r.round for r in records], [r.iou for r in records], "o-", label=name)
    ax_loss.plot([r.round for r in records], [r.loss for r in records], "o-", label=name)
ax_iou.set(xlabel="round", ylabel="IoU of chosen mask", ylim=(0, 1.05), title="IoU per round")
ax_loss.set(xlabel="round", ylabel="20 focal + dice + IoU MSE", title="sam_loss per round")
ax_iou.legend(fontsize=7)
fig.tight_layout()
_lesson.save(fig, args, "rounds_curves.png")
plt.close(fig)
