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
# This lesson runs the algorithm's forward half (prompts, predictions, losses) with minisam's real
# ``SamPredictor`` on the default model (``micro``, trained on such scenes with exactly this loop
# by ``minisam train-micro``; ``--model vit_b`` for the official weights): first on one object of
# a synthetic scene, once starting from a point and once from a box, then on every object of 30
# scenes, where the mean IoU per round shows what the loop does beyond one random draw. For
# contrast, a toy "model" that grows or erases the region of similar colour around each click
# shows what the same loop does with a predictor that follows the clicks but knows nothing of shapes.
#
# The checks at the end measure, over those objects, each difference against twice its paired
# standard error: whether the toy model's IoU rises from round 1 to round 11 (the clicks carry what
# is needed to fix a mask); whether SAM's first mask is the object (mean IoU above 0.5) from a point
# and from a box; whether a box starts better than a point; whether from a point the mean IoU after
# round 11 is above round 1's, and from a box not below it; and whether the box start's lead over
# the point start shrinks by round 11. Refining is learned, from this loop: micro's recipe trains
# the first prompt alone for most of its steps, and a model from that phase, fed its own mask back,
# loses the object, so that the refinement checks fail on it.
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
# ## 5. The same loop on many objects
#
# One object is one draw of a random process: the first point, each click and the place of the
# mask-only round are random. What the loop does is a curve over many objects: every object of
# 30 scenes (``make_scene`` with the seeds 1500 to 1529, none of them the held-out evaluation's),
# 11 rounds each from a point and from a box with SAM, and from a point with the toy model. The
# per-round curve averages round $r$ over the objects, though round $r$ is not the same kind of
# round in every run (the first mask-only round falls at a random place among the click rounds);
# the IoU against the number of clicks so far lines the runs up by clicks instead (a mask-only
# round counts towards the click before it, as ``evaluate_refinement`` does). Each point of a
# curve has its standard error, the spread over objects divided by $\sqrt{n}$. A difference
# between two rounds, or between the box and the point start, is measured on the same objects, so
# its noise is the standard error of the per-object differences (paired), which is smaller than
# that of either mean because hard objects are hard in both. Round 2 of a point start is the first
# with a single output instead of the best of three, and with the previous mask as a prompt; the
# printout gives its paired change from round 1.

# %%
def clicks_curve(records):
    """The IoU after each click round, [9]: after 1 .. 9 clicks from a point start, after the box
    and 0 .. 8 clicks from a box start. A mask-only round replaces the IoU of the click before it."""
    curve = []
    for rec in records:
        if rec.kind == "mask_only":
            curve[-1] = rec.iou
        else:
            curve.append(rec.iou)
    return curve


toy = ClickColorModel()
rounds_rng = {name: np.random.default_rng([args.seed, j]) for j, name in enumerate(("point", "box", "toy"))}
iou = {"point": [], "box": [], "toy": []}                         # each: per object [11]
loss = {"point": [], "box": []}                                   # each: per object [11]
by_clicks = {"point": [], "box": [], "toy": []}                   # each: per object [9]
mask_only_round = []                                              # per object: round of the first mask-only round
start = time.perf_counter()
for i in range(30):
    many = make_scene(np.random.default_rng(1500 + i), S)
    predictor.set_image(many.image)
    toy.set_image(many.image)
    for k in many.objects:
        for name, model, first in (("point", predictor, "point"), ("box", predictor, "box"), ("toy", toy, "point")):
            records = simulate_interactive(model, None, many.masks[k], rounds_rng[name], first_prompt=first)
            iou[name].append([rec.iou for rec in records])
            by_clicks[name].append(clicks_curve(records))
            if name in loss:
                loss[name].append([rec.loss for rec in records])
            if name == "point":
                mask_only_round.append(next(rec.round for rec in records if rec.kind == "mask_only"))
iou = {name: np.array(v) for name, v in iou.items()}              # [n, 11] each
loss = {name: np.array(v) for name, v in loss.items()}            # [n, 11] each
by_clicks = {name: np.array(v) for name, v in by_clicks.items()}  # [n, 9] each
n = len(iou["point"])
print(f"\n{n} objects of 30 scenes, 3 x 11 rounds each, in {time.perf_counter() - start:.1f} s")
print(f"first mask-only round of the point runs at round: "
      f"{ {int(r): int(c) for r, c in zip(*np.unique(mask_only_round, return_counts=True))} } (round: objects)")


def mean_se(values):
    """Mean and standard error over objects (axis 0)."""
    return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(len(values))


def paired(a, b):
    """Mean of the per-object difference a - b [n] and its standard error."""
    diff = a - b                                                  # [n]
    return diff.mean(), diff.std(ddof=1) / np.sqrt(len(diff))


for name in iou:
    mean, se = mean_se(iou[name])
    print(f"{name:>5} start, mean IoU per round: {mean.round(3)}  (SE {se.max():.3f} or less)")
for name in by_clicks:
    mean, _ = mean_se(by_clicks[name])
    print(f"{name:>5} start, mean IoU after {'the box and 0 .. 8' if name == 'box' else '1 .. 9'} clicks: "
          f"{mean.round(3)}")
gain = {name: paired(iou[name][:, -1], iou[name][:, 0]) for name in iou}      # round 11 - round 1
lead_first = paired(iou["box"][:, 0], iou["point"][:, 0])                     # box - point, round 1
lead_last = paired(iou["box"][:, -1], iou["point"][:, -1])                    # box - point, round 11
second_round = paired(iou["point"][:, 1], iou["point"][:, 0])                  # round 2 - round 1
lead_shrinks = paired(iou["box"][:, 0] - iou["point"][:, 0], iou["box"][:, -1] - iou["point"][:, -1])
point_se0 = mean_se(iou["point"])[1][0]
box_se0 = mean_se(iou["box"])[1][0]
after_mask_only = [iou["point"][j, r - 1] - iou["point"][j, r - 2] for j, r in enumerate(mask_only_round)]
mask_only_change = (np.mean(after_mask_only), np.std(after_mask_only, ddof=1) / np.sqrt(n))
for name, (d, se) in gain.items():
    print(f"{name:>5} start, round 11 - round 1: {d:+.3f} (paired SE {se:.3f})")
print(f"box - point start: {lead_first[0]:+.3f} (SE {lead_first[1]:.3f}) in round 1, "
      f"{lead_last[0]:+.3f} (SE {lead_last[1]:.3f}) in round 11")
print(f"point start, round 2 (one output, mask prompt) - round 1 (best of three): {second_round[0]:+.3f} "
      f"(paired SE {second_round[1]:.3f})")
print(f"first mask-only round of the point runs, IoU minus the round before: {mask_only_change[0]:+.4f} "
      f"(SE {mask_only_change[1]:.4f})")
print(f"mean sam_loss per round, point start: {loss['point'].mean(0).round(3)}")


# %% [markdown]
# ## 6. Figures
#
# The main figure: three rounds of the point run on the object of section 3, and the curves over
# all objects. The full 11 rounds of the three runs on that object are in ``rounds_strip_all.png``,
# the IoU against the clicks and the loss per round in ``rounds_curves.png``.

# %%
tx0, ty0, tx1, ty1 = mask_box(target).astype(int)
side = min(max(tx1 - tx0, ty1 - ty0) * 2 + 8, S)                 # a square twice the target's size
left = int(np.clip((tx0 + tx1 - side) // 2, 0, S - side))         # centred on it, kept in the image
top = int(np.clip((ty0 + ty1 - side) // 2, 0, S - side))


def draw_round(ax, rec, size=8):
    """The image, the chosen mask (cyan), the target's outline (yellow), the box, the clicks,
    around the target."""
    ax.imshow(image)
    overlay = np.zeros((H, W, 4))                                 # [H, W, RGBA]
    overlay[rec.mask] = [0.1, 0.9, 1.0, 0.5]                      # chosen mask in cyan
    ax.imshow(overlay)
    ax.contour(target, levels=[0.5], colors="yellow", linewidths=1.2)
    if rec.box is not None:
        x0, y0, x1, y1 = rec.box
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="w", lw=1))
    for (x, y), label in zip(rec.point_coords, rec.point_labels):
        if label >= 0:                                            # a pad token (-1) is no click
            ax.plot(x, y, "g+" if label else "rx", ms=size, mew=2)
    if rec.new_point is not None and rec.new_label >= 0:
        ax.plot(*rec.new_point, "o", mfc="none", mec="w", ms=size + 2)
    ax.set_xlim(left - 0.5, left + side - 0.5)
    ax.set_ylim(top + side - 0.5, top - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])


point_run = runs[f"minisam SamPredictor ({args.checkpoint or args.model}), point first"]
middle = 4
fig, axes = plt.subplots(2, 2, figsize=(9, 9))
for ax, rec in zip(axes.flat, (point_run[0], point_run[middle - 1], point_run[-1])):
    draw_round(ax, rec, size=11)
    clicks = int(np.sum(rec.point_labels >= 0))
    ax.set_title(f"round {rec.round} ({clicks} click{'s' if clicks > 1 else ''}): IoU {rec.iou:.2f}", fontsize=12)
ax = axes[1, 1]
rounds = np.arange(1, 12)
for name, label, colour in (("point", "SAM, point start", "C0"), ("box", "SAM, box start", "C1"),
                            ("toy", "toy model, point start", "C2")):
    mean, se = mean_se(iou[name])
    ax.fill_between(rounds, mean - se, mean + se, color=colour, alpha=0.25, lw=0)
    ax.plot(rounds, mean, "o-", color=colour, ms=4, label=f"{label}: {mean[0]:.2f} \u2192 {mean[-1]:.2f}")
ax.set(xlabel="round", ylabel="mean IoU of the chosen mask", ylim=(0, 1), xticks=[1, 3, 5, 7, 9, 11])
ax.xaxis.label.set_fontsize(11)
ax.yaxis.label.set_fontsize(11)
ax.tick_params(labelsize=11)
ax.legend(fontsize=10.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
ax.set_title(f"{n} objects (band: \u00b11 SE): point start\n{gain['point'][0]:+.2f} from round 1 to 11, "
             f"box start {gain['box'][0]:+.2f}", fontsize=12)
fig.suptitle(f"Point start on one object (chosen mask cyan, target yellow,\n+ positive / x negative clicks, "
             f"o this round's click), and the mean over {n} objects", fontsize=12)
fig.tight_layout()
_lesson.save(fig, args, "rounds_strip.png")
plt.close(fig)

fig, axes = plt.subplots(len(runs), 11, figsize=(22, 2.3 * len(runs) + 0.5), squeeze=False)
for row, (name, records) in enumerate(runs.items()):
    for ax, rec in zip(axes[row], records):
        draw_round(ax, rec)
        ax.set_title(f"{rec.round}: {rec.kind}\nIoU {rec.iou:.2f}", fontsize=11)
        ax.axis("off")
    axes[row][0].text(0.0, 1.5, name, transform=axes[row][0].transAxes, ha="left", fontsize=13, weight="bold")
fig.suptitle("11 training rounds: chosen mask (cyan), target (yellow), + positive / x negative "
             "clicks, o = this round's click", fontsize=13)
fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.02, wspace=0.05, hspace=0.75)
_lesson.save(fig, args, "rounds_strip_all.png")
plt.close(fig)

fig, (ax_clicks, ax_loss) = plt.subplots(1, 2, figsize=(10, 4.2))
for name, label, colour in (("point", "SAM, point start", "C0"), ("box", "SAM, box start", "C1"),
                            ("toy", "toy model, point start", "C2")):
    mean, se = mean_se(by_clicks[name])
    clicks = np.arange(9) + (name != "box")                        # [9] a point start's first click is the point
    ax_clicks.fill_between(clicks, mean - se, mean + se, color=colour, alpha=0.25, lw=0)
    ax_clicks.plot(clicks, mean, "o-", color=colour, ms=4, label=label)
for name, label, colour in (("point", "SAM, point start", "C0"), ("box", "SAM, box start", "C1")):
    mean, se = mean_se(loss[name])
    ax_loss.fill_between(rounds, mean - se, mean + se, color=colour, alpha=0.25, lw=0)
    ax_loss.plot(rounds, mean, "o-", color=colour, ms=4, label=label)
ax_clicks.set(xlabel="clicks so far (0: the box alone)", ylabel="mean IoU of the chosen mask",
              ylim=(0, 1), xticks=range(10))
ax_clicks.set_title(f"IoU against clicks, {n} objects (\u00b11 SE)", fontsize=12)
ax_loss.set(xlabel="round", ylabel="mean sam_loss", xticks=[1, 3, 5, 7, 9, 11])
ax_loss.set_title(f"the loss of each round, {n} objects (\u00b11 SE)", fontsize=12)
for ax in (ax_clicks, ax_loss):
    ax.xaxis.label.set_fontsize(11)
    ax.yaxis.label.set_fontsize(11)
    ax.tick_params(labelsize=11)
    ax.legend(fontsize=11, loc="best")
fig.tight_layout()
_lesson.save(fig, args, "rounds_curves.png")
plt.close(fig)


# %% [markdown]
# ## The checks
#
# Each check compares a difference with twice its paired standard error: a gain smaller than that
# is within the noise of which objects, points and clicks were drawn. The toy model checks the
# loop itself: its clicks carry what a model needs to fix its mask. The next four check what SAM
# learned, and fail on an untrained model, whose masks are not the objects. The refinement check
# also asks that the masks after round 11 are the objects (mean IoU above 0.5, the usual bar for a
# mask to count as the object): more prompts move an untrained model's IoU too, by a little. The
# box check asks only that the rounds do no harm, which an untrained model meets as well.

# %%
mean_iou = {name: (iou[name][:, 0].mean(), iou[name][:, -1].mean()) for name in iou}   # (round 1, round 11)
_lesson.claim(gain["toy"][0] > 2 * gain["toy"][1],
              f"the loop's clicks fix a mask: over {n} objects the toy model, which only follows them, gains IoU "
              f"from round 1 to round 11 by more than twice the paired SE (measured {mean_iou['toy'][0]:.3f} -> "
              f"{mean_iou['toy'][1]:.3f}, {gain['toy'][0]:+.3f}, SE {gain['toy'][1]:.3f})")
if args.checkpoint is None:   # SAM's behaviour claims: about the registered, trained micro
    _lesson.claim(min(mean_iou["point"][0] - 2 * point_se0, mean_iou["box"][0] - 2 * box_se0) > 0.5,
                  f"SAM's first mask is the object: the mean IoU of round 1 is more than 2 SE above 0.5 from a point "
                  f"and from a box (measured {mean_iou['point'][0]:.3f}, SE {point_se0:.3f}, and "
                  f"{mean_iou['box'][0]:.3f}, SE {box_se0:.3f})")
    _lesson.claim(lead_first[0] > 2 * lead_first[1],
                  f"a box starts better than a point: in round 1 the box start's IoU exceeds the point start's by "
                  f"more than twice the paired SE (measured {lead_first[0]:+.3f}, SE {lead_first[1]:.3f})")
    _lesson.claim(gain["point"][0] > 2 * gain["point"][1] and mean_iou["point"][1] > 0.5,
                  f"the rounds improve the mask from a point: the mean IoU rises from round 1 to round 11 by more "
                  f"than twice the paired SE and ends above 0.5 (measured {mean_iou['point'][0]:.3f} -> "
                  f"{mean_iou['point'][1]:.3f}, {gain['point'][0]:+.3f}, SE {gain['point'][1]:.3f})")
    _lesson.claim(lead_shrinks[0] > 2 * lead_shrinks[1],
                  f"the box start's lead over the point start shrinks from round 1 to round 11 by more than twice "
                  f"the paired SE (measured {lead_first[0]:+.3f} -> {lead_last[0]:+.3f}, SE {lead_shrinks[1]:.3f})")
    _lesson.claim(gain["box"][0] > -2 * gain["box"][1],
                  f"from a box the rounds do not make the mask worse: the change of the mean IoU from round 1 to "
                  f"round 11 is not below minus twice the paired SE (measured {mean_iou['box'][0]:.3f} -> "
                  f"{mean_iou['box'][1]:.3f}, {gain['box'][0]:+.3f}, SE {gain['box'][1]:.3f})")
