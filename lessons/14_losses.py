# %% [markdown]
# # Lesson 14: the losses SAM is trained with (focal + dice at 20:1, IoU MSE, min over masks)
#
# Paper: Kirillov et al. 2023, section 3 and appendix A ("Losses"). Code: minisam/training/losses.py.
# Run: ``MPLBACKEND=Agg python lessons/14_losses.py --out out/14`` (about 5 s, no torch).
#
# SAM predicts, for every pixel, a logit x; p = sigmoid(x) is the probability that the pixel
# belongs to the object. Training compares these maps with a ground-truth mask g in {0, 1}.
# A mask is a very unbalanced classification problem: most pixels are far from the object's
# boundary and trivially right (the "easy" pixels), a thin band around the boundary is hard,
# and the object itself may cover 1% of the image. Plain binary cross-entropy (BCE) averages
# over all pixels, so thousands of easy pixels drown the few hard ones. SAM fixes this twice:
#
# - **focal loss** (Lin et al. 2017) multiplies BCE by (1 - p_t)^gamma, which is ~0 for a pixel
#   already right with confidence p_t -> 1, so the average is driven by the hard pixels;
# - **dice loss** scores the overlap of the whole mask, 1 - 2|P & G| / (|P| + |G|), which counts
#   no true negatives: background pixels predicted at p = 0 add nothing, however many there are
#   (on probabilities, each background pixel still adds its p to |P|: section 2).
#
# They are mixed 20:1 (focal:dice). The IoU head learns with a mean squared error against the
# IoU of the mask it scored. For an ambiguous click SAM outputs three masks and only the one
# with the lowest loss is trained ("we backprop only the minimum loss").
#
# In symbols, for one mask of $N$ pixels with logits $x_i$, probabilities $p_i = \sigma(x_i)$ and
# targets $y_i \in \{0, 1\}$ (minisam ``minisam/training/losses.py``, torchvision's
# ``sigmoid_focal_loss`` and the DETR / SAM 2 ``dice_loss``):
#
# $$
# \begin{aligned}
# \operatorname{BCE}_i &= -y_i \log p_i - (1 - y_i) \log (1 - p_i), \qquad
#   p_{t,i} = \begin{cases} p_i & y_i = 1 \\ 1 - p_i & y_i = 0 \end{cases}, \qquad
#   \alpha_{t,i} = \alpha y_i + (1 - \alpha)(1 - y_i), \\
# \mathcal{L}_{\text{focal}} &= \frac{1}{N} \sum_{i=1}^{N} \alpha_{t,i}\, (1 - p_{t,i})^{\gamma}\, \operatorname{BCE}_i
#   \qquad (\alpha = 0.25,\ \gamma = 2), \\
# \mathcal{L}_{\text{dice}} &= 1 - \frac{2 \sum_i p_i y_i + 1}{\sum_i p_i + \sum_i y_i + 1}, \qquad
#   \mathcal{L}_{\text{mask}} = 20\, \mathcal{L}_{\text{focal}} + \mathcal{L}_{\text{dice}}.
# \end{aligned}
# $$
#
# The $+1$ in the dice fraction makes an empty prediction of an empty mask cost 0 instead of
# $0/0$. Sections 1 and 2 derive the gradients; section 4 adds the IoU term and the minimum.

# %%
import sys

import numpy as np

import _lesson

args = _lesson.parse_args("14", "Lesson 14: the losses SAM is trained with (focal + dice at 20:1, IoU MSE, "
                          "min over masks)")

import matplotlib.pyplot as plt  # noqa: E402

from minisam.training.losses import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss  # noqa: E402

np.set_printoptions(precision=4, suppress=True)


def logit(p):
    return np.log(p) - np.log1p(-p)


def per_pixel_focal(logits, targets, **kw):
    """sigmoid_focal_loss averages each mask over its pixels; one-pixel masks give per-pixel values."""
    flat = np.asarray(logits, np.float64).reshape(-1, 1, 1)      # [HW, 1, 1] one "mask" per pixel
    return sigmoid_focal_loss(flat, np.asarray(targets, np.float64).reshape(-1, 1, 1), **kw
                              ).reshape(np.shape(logits))        # [HW] -> [H, W]


# %% [markdown]
# ## 1. BCE versus focal loss, pixel by pixel
#
# For a foreground pixel (y = 1) BCE = -log p. With gamma = 2 focal loss multiplies it by
# (1 - p)^2, and by alpha_t = 0.25 for positives (0.75 for negatives). The factor (1 - p)^2
# keeps 1e-4 of an easy pixel's BCE (p = 0.99) and 81% of a hard one's (p = 0.1); with
# alpha_t on top, the table's focal/BCE is a quarter of that.
#
# alpha = 0.25 and gamma = 2 are not SAM's own numbers: the SAM paper (Kirillov et al. 2023,
# section 3 and appendix A "Losses") states only the 20:1 focal:dice ratio. They are the
# defaults of the focal loss paper (Lin et al. 2017) and of torchvision's sigmoid_focal_loss.
# minisam's sigmoid_focal_loss takes them as its defaults, which sam_loss uses, and
# minisam/training/micro.py's sam_loss_torch, which trained the shipped micro model, writes
# them out (alpha_t = 0.25 t + 0.75 (1 - t), (1 - p_t) ** 2).

# %%
print("1. BCE vs focal loss (y = 1, alpha = 0.25, gamma = 2)")
print(f"{'p':>6} {'BCE':>9} {'focal':>10} {'focal/BCE':>10}")
table_p = np.array([0.1, 0.5, 0.9, 0.99, 0.999])
ratios, factors = [], []                                          # focal/BCE with alpha, and without
for p in table_p:
    x = np.array([[[logit(p)]]])                                 # [1, 1, 1]
    bce = float(sigmoid_focal_loss(x, np.ones_like(x), alpha=-1, gamma=0)[0])
    focal = float(sigmoid_focal_loss(x, np.ones_like(x))[0])
    factors.append(float(sigmoid_focal_loss(x, np.ones_like(x), alpha=-1)[0]) / bce)
    ratios.append(focal / bce)
    print(f"{p:6.3f} {bce:9.4f} {focal:10.2e} {focal / bce:10.2e}")
ratios, factors = np.array(ratios), np.array(factors)
# float64 throughout: the library and the formula agree to rounding
_lesson.claim(np.allclose(factors, (1 - table_p) ** 2, rtol=1e-9, atol=0)
              and np.allclose(ratios, 0.25 * (1 - table_p) ** 2, rtol=1e-9, atol=0),
              f"focal/BCE is (1 - p)^2 without alpha ({factors[3]:.1e} at p = 0.99, {factors[0]:.2f} at p = 0.1) "
              f"and 0.25 (1 - p)^2 with it ({ratios[3]:.1e} and {ratios[0]:.4f}), to 1e-9 relative")
table_x = logit(table_p)[:, None, None]                          # [5, 1, 1] the table's pixels
_lesson.claim(np.array_equal(sigmoid_focal_loss(table_x, np.ones_like(table_x)),
                             sigmoid_focal_loss(table_x, np.ones_like(table_x), alpha=0.25, gamma=2.0))
              and not np.array_equal(sigmoid_focal_loss(table_x, np.ones_like(table_x)),
                                     sigmoid_focal_loss(table_x, np.ones_like(table_x), alpha=0.5, gamma=1.0)),
              "sigmoid_focal_loss's defaults are alpha = 0.25, gamma = 2: a default call equals the explicit one")

# A mask of 10 000 pixels: 9 900 easy background pixels (p = 0.01) and 100 hard foreground
# pixels (p = 0.3). Which part of the loss do the hard pixels make?
easy = np.full(9900, logit(0.01))
hard = np.full(100, logit(0.3))
logits = np.concatenate([easy, hard])[None, :, None]             # [1, 10000, 1]
targets = np.concatenate([np.zeros(9900), np.ones(100)])[None, :, None]
hard_share = {}
for name, kw in [("BCE", dict(alpha=-1, gamma=0)), ("focal", dict())]:
    per_pixel = per_pixel_focal(logits, targets, **kw)           # [1, 10000, 1]
    hard_share[name] = share = per_pixel[0, 9900:].sum() / per_pixel.sum()
    print(f"   {name:5s}: the 1% hard pixels carry {100 * share:5.1f}% of the loss")
_lesson.claim(hard_share["focal"] >= 0.99 and hard_share["BCE"] < hard_share["focal"],
              f"focal loss is driven by the hard pixels: the 1% hard ones carry {hard_share['focal']:.1%} of it, "
              f"against {hard_share['BCE']:.1%} of BCE")


# %% [markdown]
# **The focal gradient.** Write $m_i = 1 - p_{t,i} = p_i (1 - y_i) + (1 - p_i) y_i$. With
# $\sigma'(x) = p (1 - p)$:
#
# $$
# \frac{\partial \operatorname{BCE}_i}{\partial x_i} = p_i - y_i, \qquad
# \frac{\partial m_i}{\partial x_i} = (1 - 2 y_i)\, p_i (1 - p_i),
# $$
#
# $$
# \frac{\partial \mathcal{L}_{\text{focal}}}{\partial x_i} = \frac{\alpha_{t,i}}{N}
# \Big[ \gamma\, m_i^{\gamma - 1} (1 - 2 y_i)\, p_i (1 - p_i)\, \operatorname{BCE}_i + m_i^{\gamma} (p_i - y_i) \Big].
# $$
#
# With $\gamma = 0$ and no $\alpha$ it is the BCE gradient $(p_i - y_i)/N$. ``sigmoid_focal_loss(...,
# grad=True)`` computes this; we check it with central differences (float64), no autograd needed.

# %%
rng = np.random.default_rng(0)
x = rng.normal(0, 3, (2, 4, 5))                                  # [M, H, W]
y = (rng.random((2, 4, 5)) < 0.4).astype(np.float64)             # [M, H, W]
_, grad = sigmoid_focal_loss(x, y, grad=True)                    # [M, H, W]
fd = np.zeros_like(x)
for idx in np.ndindex(x.shape):
    up, down = x.copy(), x.copy()
    up[idx] += 1e-6
    down[idx] -= 1e-6
    fd[idx] = (sigmoid_focal_loss(up, y).sum() - sigmoid_focal_loss(down, y).sum()) / 2e-6
fd_err = np.abs(fd - grad).max()
print(f"   focal gradient vs finite differences: max abs err {fd_err:.2e} "
      f"(gradient size {np.abs(grad).max():.2e})")
# central differences with step 1e-6 in float64: truncation and rounding stay far below 1e-6 relative
_lesson.claim(fd_err <= 1e-6 * np.abs(grad).max(),
              f"the hand-derived focal gradient matches central differences: max |diff| {fd_err:.1e}, "
              f"{fd_err / np.abs(grad).max():.1e} of the largest gradient")

# Figure 1: loss against p for y = 1 and y = 0, gamma = 0 (BCE), 1, 2, 5 (alpha off, as in
# Lin et al.'s figure 1, so only the modulating factor differs).
p = np.linspace(0.001, 0.999, 400)
fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8))
curves = []                                                      # [2 targets][4 gammas] of [400]
for ax, y_value in zip(axes, [1, 0]):
    curves.append([])
    for gamma in [0, 1, 2, 5]:
        x = logit(p)[:, None, None]                              # [400, 1, 1]
        loss = sigmoid_focal_loss(x, np.full_like(x, y_value), alpha=-1, gamma=gamma)   # [400]
        curves[-1].append(loss)
        ax.plot(p, loss, label=f"gamma = {gamma}" + (" (BCE)" if gamma == 0 else ""))
    ax.set(title=f"target y = {y_value}", xlabel="predicted p = sigmoid(x)", ylabel="loss", ylim=(0, 5))
    ax.axvspan(*((0.6, 1.0) if y_value == 1 else (0.0, 0.4)), color="g", alpha=0.08, label="well classified")
    ax.legend()
fig.suptitle("Focal loss (1 - p_t)^gamma * BCE: easy pixels stop counting")
fig.tight_layout()
_lesson.save(fig, args, "focal_curves.png", dpi=100, bbox_inches=None)
plt.close(fig)
curves = np.array(curves)                                        # [2, 4, 400]
well_classified = p > 0.6                                        # the green span for y = 1
kept = (curves[0, 3, well_classified] / curves[0, 0, well_classified]).max()
_lesson.claim(np.all(np.diff(curves, axis=1) < 0),
              f"at every p a larger gamma gives a smaller loss, for y = 1 and y = 0; well classified (p > 0.6, "
              f"y = 1), gamma = 5 keeps at most {kept:.1e} of BCE")


# %% [markdown]
# ## 2. Dice on unbalanced masks
#
# A 100 x 100 image whose object is a 10 x 10 square (1% of the pixels). Three predictions:
# "all background", "the object, half confident", "the object plus a ring around it".

# %%
h = w = 100
rows, cols = np.mgrid[0:h, 0:w]
obj = ((rows >= 45) & (rows < 55) & (cols >= 45) & (cols < 55)).astype(np.float64)   # [H, W]
ring = ((rows >= 40) & (rows < 60) & (cols >= 40) & (cols < 60)).astype(np.float64)  # [H, W]
predictions = {
    "all background (x = -4)": np.full((h, w), -4.0),
    "object at p = 0.6": np.where(obj > 0, logit(0.6), -4.0),
    "object + ring, confident": np.where(ring > 0, 4.0, -4.0),
}
print("\n2. Dice vs BCE when the object is 1% of the image")
print(f"{'prediction':28s} {'BCE':>7} {'focal':>8} {'dice':>6} {'IoU':>5}")
table = {}                                                       # name -> (BCE, dice)
for name, x in predictions.items():
    bce = sigmoid_focal_loss(x[None], obj[None], alpha=-1, gamma=0)[0]
    table[name] = (float(bce), float(dice_loss(x[None], obj[None])[0]))
    print(f"{name:28s} {bce:7.4f} {sigmoid_focal_loss(x[None], obj[None])[0]:8.5f} "
          f"{dice_loss(x[None], obj[None])[0]:6.3f} {mask_iou(x[None], obj[None])[0]:5.2f}")
print("   BCE barely minds missing the whole object (the background is right); dice is ~1.")
missed, ringed = table["all background (x = -4)"], table["object + ring, confident"]
_lesson.claim(missed[0] < ringed[0] and missed[1] > 0.95 and missed[1] == max(d for _, d in table.values()),
              f"missing the whole object costs BCE {missed[0]:.3f}, less than the ring that covers it "
              f"({ringed[0]:.3f}); dice gives it {missed[1]:.3f}, the worst of the three")
# Dice is computed on probabilities, not on thresholded masks: the 9 900 background pixels
# at p = sigmoid(-4) = 0.018 add up to ~178 pixels of "soft" false positive, more than the
# 100-pixel object. That is why the correct mask at p = 0.6 still has dice 0.64 and why dice
# pushes every background pixel towards p = 0, however many there are.
soft_background = float((1 / (1 + np.exp(4.0))) * (h * w - obj.sum()))
print(f"   soft false-positive mass of the background at x = -4: {soft_background:.0f} pixels")
half_sure = predictions["object at p = 0.6"]
dice_half = float(dice_loss(half_sure[None], obj[None])[0])
by_formula = 1 - (2 * 0.6 * obj.sum() + 1) / (0.6 * obj.sum() + soft_background + obj.sum() + 1)   # +1 smoothing
_lesson.claim(abs(dice_half - by_formula) <= 1e-9,
              f"the p = 0.6 mask's dice {dice_half:.4f} is 1 - (2 * {0.6 * obj.sum():.0f} + 1) / "
              f"({0.6 * obj.sum():.0f} + {soft_background:.0f} + {obj.sum():.0f} + 1) = {by_formula:.4f}: "
              f"the soft background counts in |P|")
# More background: with 4x the pixels (a 50-pixel border) dice is unchanged at p = 0, not at p = 0.018.
more_background = {}
for background in (-4.0, -40.0):
    x = np.where(obj > 0, logit(0.6), background)                # [H, W]
    small = dice_loss(x[None], obj[None])[0]
    big = dice_loss(np.pad(x, 50, constant_values=background)[None], np.pad(obj, 50)[None])[0]
    more_background[background] = (float(small), float(big))
at_zero, at_soft = more_background[-40.0], more_background[-4.0]
_lesson.claim(abs(at_zero[1] - at_zero[0]) <= 1e-12 and at_soft[1] - at_soft[0] > 0.1,
              f"4x the background pixels: dice stays {at_zero[0]:.4f} -> {at_zero[1]:.4f} at x = -40 (p ~ 0), "
              f"but goes {at_soft[0]:.3f} -> {at_soft[1]:.3f} at x = -4 (p = 0.018)")

# %% [markdown]
# **The dice gradient.** With $S = \sum_i p_i y_i$, $P = \sum_i p_i$, $Y = \sum_i y_i$, the fraction's
# numerator $u = 2S + 1$ and denominator $v = P + Y + 1$, the quotient rule gives
#
# $$
# \frac{\partial \mathcal{L}_{\text{dice}}}{\partial p_i} = -\frac{2 y_i v - u}{v^2} = \frac{u - 2 y_i v}{v^2},
# \qquad
# \frac{\partial \mathcal{L}_{\text{dice}}}{\partial x_i} = \frac{u - 2 y_i v}{v^2}\; p_i (1 - p_i).
# $$
#
# Every pixel's gradient depends on the whole mask through $u$ and $v$: dice is a loss of the
# overlap, not of pixels. For a background pixel ($y_i = 0$) it is $u\, p_i (1 - p_i) / v^2 > 0$: gradient
# descent lowers its logit, however many background pixels there are.

# %%
_, ddice = dice_loss(half_sure[None], obj[None], grad=True)      # [1, H, W]
_lesson.claim(np.all(ddice[0][obj == 0] > 0),
              f"dice pushes every background pixel towards p = 0: d dice / dx > 0 at all {int((obj == 0).sum())} "
              f"of them (smallest {ddice[0][obj == 0].min():.1e})")


# %% [markdown]
# ## 3. The 20:1 mix
#
# Focal loss is a per-pixel mean of small numbers (alpha_t <= 0.75, (1 - p_t)^2 <= 1), so on
# a real mask it is ~0.01-0.1 (section 5 measures it on a blurry disk), while dice is in
# [0, 1]. The factor 20 brings them to a comparable size, so that the pixel-wise and the
# overlap signal both count.

# %%
print("\n3. 20 * focal + dice")
worst_ratio = 0.0                                                # the largest per-pixel focal / BCE
for name, x in predictions.items():
    focal = sigmoid_focal_loss(x[None], obj[None])[0]
    dice = dice_loss(x[None], obj[None])[0]
    print(f"   {name:28s} 20 * focal = {20 * focal:6.3f}   dice = {dice:5.3f}   sum = {20 * focal + dice:6.3f}")
    worst_ratio = max(worst_ratio, float((per_pixel_focal(x, obj) / per_pixel_focal(x, obj, alpha=-1, gamma=0)).max()))
_lesson.claim(worst_ratio <= 0.75, f"per pixel, focal loss is at most 0.75 of BCE (alpha_t <= 0.75, "
                                   f"(1 - p_t)^2 <= 1): largest ratio here {worst_ratio:.3f}")


# %% [markdown]
# ## 4. The minimum over the three outputs
#
# A click on a shirt may mean the shirt or the whole person. SAM outputs three masks; the
# loss of each output is 20 * focal + dice, and only the smallest is trained, together with
# the IoU head's score for that output. The other two outputs get no gradient at all, so
# they remain free to specialise on the other plausible objects.
#
# For the $K$ outputs of one prompt (logits $x^{(k)}$, predicted IoU scores $s_k$, one target $y$):
#
# $$
# k^{*} = \arg\min_{k} \big( 20\, \mathcal{L}_{\text{focal}}(x^{(k)}, y) + \mathcal{L}_{\text{dice}}(x^{(k)}, y) \big),
# \qquad
# \mathcal{L} = 20\, \mathcal{L}_{\text{focal}}(x^{(k^*)}, y) + \mathcal{L}_{\text{dice}}(x^{(k^*)}, y)
#   + \big( s_{k^*} - \operatorname{IoU}_{k^*} \big)^2,
# $$
#
# $$
# \operatorname{IoU}_{k} = \frac{\big| \{ i : x^{(k)}_i > 0 \} \cap \{ i : y_i = 1 \} \big|}
#   {\max\big( \big| \{ i : x^{(k)}_i > 0 \} \cup \{ i : y_i = 1 \} \big|,\ 1 \big)}.
# $$
#
# The IoU target is measured on the thresholded mask, so it is a constant: the IoU term's only
# gradient is $\partial \mathcal{L} / \partial s_{k^*} = 2 (s_{k^*} - \operatorname{IoU}_{k^*})$, and it sends
# nothing into the mask logits. The minimum picks one branch: for $k \ne k^*$,
# $\partial \mathcal{L} / \partial x^{(k)} = 0$ and $\partial \mathcal{L} / \partial s_k = 0$ (the argmin itself has
# zero derivative almost everywhere).

# %%
candidates = np.stack([predictions["object at p = 0.6"], predictions["object + ring, confident"],
                       predictions["all background (x = -4)"]])          # [3, H, W]
iou_pred = np.array([0.7, 0.9, 0.1])                                     # [3] the IoU head
total, index, dlogits, diou = sam_loss(candidates, iou_pred, obj, grad=True)
per_output = [20 * sigmoid_focal_loss(c[None], obj[None])[0] + dice_loss(c[None], obj[None])[0]
              for c in candidates]
print("\n4. Minimum over masks: per-output 20 focal + dice =", np.array(per_output))
print(f"   sam_loss picks output {index}, total (with IoU MSE) = {total:.4f}")
print("   gradient norm per output:", np.sqrt((dlogits ** 2).sum(axis=(1, 2))), " d iou_pred:", diou)
# The recipe computed again from its parts, with alpha and gamma written out.
mask_losses = np.array([20 * sigmoid_focal_loss(c[None], obj[None], alpha=0.25, gamma=2.0)[0]
                        + dice_loss(c[None], obj[None])[0] for c in candidates])   # [3]
best = int(np.argmin(mask_losses))
iou_target = float(mask_iou(candidates[best][None], obj[None])[0])
recomputed = mask_losses[best] + (iou_pred[best] - iou_target) ** 2
others = [k for k in range(3) if k != best]
_lesson.claim(index == best and abs(total - recomputed) <= 1e-9,
              f"sam_loss = min over outputs of 20 * focal + dice ({mask_losses.round(4).tolist()} -> output {best}) "
              f"+ (IoU score {iou_pred[best]} - IoU {iou_target:.2f})^2 = {recomputed:.4f}, as sam_loss's {total:.4f}")
_lesson.claim(np.all(dlogits[others] == 0) and np.all(diou[others] == 0) and np.abs(dlogits[best]).max() > 0
              and abs(diou[best] - 2 * (iou_pred[best] - iou_target)) <= 1e-12,
              f"only output {best} gets a gradient (outputs {others} get exactly 0); its IoU score gets "
              f"2 (score - IoU) = {diou[best]:.2f}")


# %% [markdown]
# ## 5. Where the focal loss lives on a predicted mask
#
# A disk target and a prediction that is a slightly shifted, blurry disk: per-pixel focal
# loss and BCE on a log scale. On that scale BCE shows over the whole background, focal loss
# only in a band at the boundary, where the prediction is wrong or unsure. Summed, that band
# holds most of the BCE too (95%), but away from it focal loss is ~1e7 times smaller per pixel.

# %%
h = w = 96
rows, cols = np.mgrid[0:h, 0:w]
target = ((rows - 48) ** 2 + (cols - 44) ** 2 <= 24 ** 2).astype(np.float64)        # [H, W]
distance = np.sqrt((rows - 44.0) ** 2 + (cols - 50.0) ** 2)                        # [H, W]
pred_logits = (22.0 - distance) / 2.5                                              # [H, W]
focal_map = per_pixel_focal(pred_logits, target)                                   # [H, W]
bce_map = per_pixel_focal(pred_logits, target, alpha=-1, gamma=0)                  # [H, W]
_, grad_map = sigmoid_focal_loss(pred_logits[None], target[None], grad=True)       # [1, H, W]
print(f"\n5. heat map: mean BCE {bce_map.mean():.4f}, mean focal {focal_map.mean():.5f}, "
      f"IoU {mask_iou(pred_logits[None], target[None])[0]:.3f}")
p_map = 1 / (1 + np.exp(-pred_logits))                                             # [H, W]
band = ((p_map > 0.5) != (target > 0.5)) | ((p_map > 0.1) & (p_map < 0.9))         # wrong or unsure
away = ~band
focal_in_band, bce_in_band = focal_map[band].sum() / focal_map.sum(), bce_map[band].sum() / bce_map.sum()
_lesson.claim(focal_in_band >= 0.99 and 0.9 <= bce_in_band < focal_in_band
              and np.median(bce_map[away]) > 1e6 * np.median(focal_map[away]),
              f"focal loss sits in the band where the prediction is wrong or unsure ({band.mean():.0%} of the "
              f"pixels): {focal_in_band:.2%} of it, against {bce_in_band:.1%} of BCE; away from the band the "
              f"median pixel has BCE {np.median(bce_map[away]):.1e} and focal {np.median(focal_map[away]):.1e}")
dice_disk = float(dice_loss(pred_logits[None], target[None])[0])
_lesson.claim(0.01 <= focal_map.mean() <= 0.1 and 1 / 3 <= 20 * focal_map.mean() / dice_disk <= 3,
              f"on this mask focal is {focal_map.mean():.3f} (in 0.01-0.1), and 20 * focal = "
              f"{20 * focal_map.mean():.2f} is within a factor 3 of dice {dice_disk:.2f}")
fig, axes = plt.subplots(1, 4, figsize=(16, 4))
axes[0].imshow(target, cmap="gray")
axes[0].set_title("target mask")
axes[1].imshow(1 / (1 + np.exp(-pred_logits)), cmap="viridis", vmin=0, vmax=1)
axes[1].contour(target, levels=[0.5], colors="r")
axes[1].set_title("prediction p (red: target edge)")
for ax, data, title in [(axes[2], bce_map, "per-pixel BCE (log10)"), (axes[3], focal_map, "per-pixel focal loss (log10)")]:
    im = ax.imshow(np.log10(data + 1e-8), cmap="magma", vmin=-6, vmax=1)
    ax.contour(target, levels=[0.5], colors="c", linewidths=0.8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
_lesson.save(fig, args, "focal_heatmap.png", dpi=100, bbox_inches=None)
plt.close(fig)
print(f"figures written to {args.out}: focal_curves.png, focal_heatmap.png")
_lesson.claim("torch" not in sys.modules, "the lesson ran without importing torch")
