# %% [markdown]
# # Lesson 13: ambiguity: three masks and a predicted IoU for each
#
# One click is ambiguous: a point on a shirt could mean the shirt, the person, or a button.
# SAM's answer (Kirillov et al. 2023, section 3 "Resolving ambiguity"; official
# ``modeling/mask_decoder.py`` forward; minisam ``minisam/modeling/mask_decoder.py``):
#
# - the decoder always predicts 4 masks, one per mask token. Token 0 is trained for the
#   *unambiguous* case; tokens 1..3 are trained as a set, with only the best of the three
#   receiving the mask loss (minimum over the three) so they specialize (whole, part, subpart);
# - the IoU head predicts, for each mask, its IoU with the object the user meant. The scores
#   are raw MLP outputs (no sigmoid): they can leave [0, 1];
# - ``multimask_output=True`` returns tokens 1..3 (``masks[:, 1:]``): use it for a single
#   point, pick the highest score. With several points (or a box) the prompt is not ambiguous
#   and ``multimask_output=False`` returns token 0 (``masks[:, 0:1]``).
# - the low-res logits (4G x 4G) are upsampled to the model input size, the padding is
#   cropped, and the result is resized to the original image (both bilinear,
#   align_corners=False); > 0 is the mask.
#
# The synthetic scenes have ground truth at three levels (part, object, group), so a click on
# an inlaid part is ambiguous in exactly SAM's sense, and we can measure how good the IoU
# scores are. Default model: ``micro`` (``--model vit_b`` for the official weights).
#
# Run:  python lessons/13_ambiguity_and_iou.py --out out/13

# %%
import os

import numpy as np

import _lesson

args = _lesson.parse_args("13", "Lesson 13: ambiguity: three masks and a predicted IoU for each",
                          photo="section 4, the three masks of one click on a photo", photo_click=True)

import matplotlib.pyplot as plt  # noqa: E402

from minisam.modeling.common import mask_iou  # noqa: E402
from minisam import SamPredictor  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402
from minisam.cli.drawing import show_mask, show_points  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
S, M = cfg.img_size, cfg.mask_input_size


def iou(a, b):  # [H, W] bool x2 -> float
    return float(mask_iou(a, b))


def crop_scene(scene, focus, height, zoom=2):
    """The scene cut to ``height`` rows around ``focus`` [S, S] and enlarged ``zoom`` times:
    a landscape original image larger than the model input, so that the predictor has to
    resize, pad, and crop and resize back. -> (image [zoom*h, zoom*S, 3], masks, levels,
    kept indexes into scene.masks)."""
    rows = np.flatnonzero(focus.any(axis=1))
    top = int(np.clip((rows[0] + rows[-1]) // 2 - height // 2, 0, scene.image.shape[0] - height))
    keep = [i for i, m in enumerate(scene.masks) if m[top:top + height].sum() >= 20]

    def enlarge(a):                                               # [h, w, ...] -> [zoom*h, zoom*w, ...]
        return np.repeat(np.repeat(a[top:top + height], zoom, axis=0), zoom, axis=1)
    return enlarge(scene.image), [enlarge(scene.masks[i]) for i in keep], [scene.levels[i] for i in keep], keep


# %% [markdown]
# ## 1. An ambiguous click: on a part inside an object

# %%
scene = make_scene(np.random.default_rng(21), S)
# (A scene without parts, as at small input sizes, falls back to its largest object.)
part = next((i for i, l in enumerate(scene.levels) if l == "part"),
            max(scene.objects, key=lambda i: scene.masks[i].sum()))
image, gts, levels, kept = crop_scene(scene, scene.masks[part], (3 * S) // 4)
H, W = image.shape[:2]
part_mask = gts[kept.index(part)]                                 # [H, W] bool
point = interior_point(part_mask)[None]                           # [1, 2] (x, y)
valid = [k for k, m in enumerate(gts) if m[int(point[0, 1]), int(point[0, 0])]]
print(f"original image {image.shape} (cut from a {S} x {S} scene, enlarged 2x); the click {point[0].tolist()} lies in "
      f"{len(valid)} true masks: {[levels[k] for k in valid]} of {[int(gts[k].sum()) for k in valid]} pixels")

predictor = SamPredictor(sam)
predictor.set_image(image)
print(f"set_image: original_size {predictor.original_size} -> input_size {predictor.input_size} "
      f"(long side {S}), padded to {S} x {S}; embedding {predictor.get_image_embedding().shape}")
masks, scores, low_res = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)
print(f"one point, multimask: masks {masks.shape} {masks.dtype}, scores {np.round(scores, 3)}, low-res {low_res.shape}")
single, s_single, _ = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=False)
print(f"one point, single mask (token 0): {single.shape}, score {np.round(s_single, 3)}")
trace = {}
predictor.predict(point_coords=point, point_labels=np.array([1]), trace=trace)
all_iou = trace["mask_decoder.iou_prediction_head"]               # [1, 4] before the [1:] selection
print(f"IoU head, all 4 tokens: {np.round(all_iou, 3)} -> multimask keeps [1:], single keeps [0:1]")
print(f"postprocess: low-res {trace['mask_decoder'][0].shape} -> {S} x {S} -> crop to {predictor.input_size} "
      f"-> original {(H, W)}")


def match(mask):
    """The true mask (among those under the click) this mask is closest to, and the IoU."""
    k = max(valid, key=lambda k: iou(mask, gts[k]))
    return levels[k], iou(mask, gts[k])


fig, axes = plt.subplots(1, 5, figsize=(22, 4.2))
axes[0].imshow(image)
for k in valid:
    axes[0].contour(gts[k], levels=[0.5], colors=[{"part": "y", "object": "w", "group": "m"}[levels[k]]])
show_points(point, np.array([1]), axes[0])
axes[0].set_title("the click; true masks under it:\nyellow part, white object, magenta group")
best = int(np.argmax(scores))
for k in range(3):
    level, q = match(masks[k])
    axes[k + 1].imshow(image)
    show_mask(masks[k], axes[k + 1])
    show_points(point, np.array([1]), axes[k + 1])
    axes[k + 1].set_title(f"token {k + 1}: score {scores[k]:.3f}" + ("  (best)" if k == best else "")
                          + f"\nclosest truth: {level}, IoU {q:.2f}")
level, q = match(single[0])
axes[4].imshow(image)
show_mask(single[0], axes[4])
show_points(point, np.array([1]), axes[4])
axes[4].set_title(f"token 0 (single): score {s_single[0]:.3f}\nclosest truth: {level}, IoU {q:.2f}")
for ax in axes:
    ax.axis("off")
fig.suptitle("One point: the three ambiguity-aware masks and the single-mask token")
fig.tight_layout()
_lesson.save(fig, args, "13_three_masks.png")
plt.close(fig)


# %% [markdown]
# ## 2. Several points: not ambiguous, use the single-mask token
#
# Two clicks on the object (one on the part, one off it) and one on the background; then the
# same prompt again with the previous low-res logits as mask_input (as in lesson 15's rounds).

# %%
obj = max((k for k in valid if levels[k] == "object"), key=lambda k: gts[k].sum(), default=valid[-1])
off_part = interior_point(gts[obj] & ~part_mask if (gts[obj] & ~part_mask).any() else gts[obj])   # [2] off the part
bg = interior_point(~np.logical_or.reduce(gts))                   # [2] on no shape at all
pts = np.stack([point[0], off_part, bg])                          # [3, 2]
labs = np.array([1, 1, 0])
m1, s1, low1 = predictor.predict(point_coords=pts, point_labels=labs, multimask_output=False)
m2, s2, _ = predictor.predict(point_coords=pts, point_labels=labs, mask_input=low1, multimask_output=False)
print(f"3 points, single mask: score {s1[0]:.3f}, IoU with the object {iou(m1[0], gts[obj]):.3f}; again with "
      f"its own low-res logits {low1.shape} as mask_input: {s2[0]:.3f}, IoU {iou(m2[0], gts[obj]):.3f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, m, s, title in [(axes[0], m1, s1, "3 points, token 0"), (axes[1], m2, s2, "+ previous logits as mask_input")]:
    ax.imshow(image)
    show_mask(m[0], ax)
    ax.contour(gts[obj], levels=[0.5], colors="w", linewidths=0.8)
    show_points(pts, labs, ax)
    ax.set_title(f"{title}: score {s[0]:.3f}\nIoU with the object (white) {iou(m[0], gts[obj]):.2f}")
    ax.axis("off")
fig.tight_layout()
_lesson.save(fig, args, "13_single_mask_multi_point.png")
plt.close(fig)


# %% [markdown]
# ## 3. How good is the IoU head? Predicted score against the real IoU
#
# One click at the most interior pixel of every true mask in three scenes; each of the three
# masks is scored against the closest true mask under the click. A useful head puts the
# points near the diagonal; the best-scored mask should usually be the best mask.

# %%
predicted, actual, picked_best = [], [], []
for seed in (21, 22, 23):
    sc = make_scene(np.random.default_rng(seed), S)
    predictor.set_image(sc.image)
    for m in sc.masks:
        p = interior_point(m)
        under = [t for t in sc.masks if t[int(p[1]), int(p[0])]]
        ms, sc_scores, _ = predictor.predict(point_coords=p[None], point_labels=np.array([1]))
        real = [max(iou(mk, t) for t in under) for mk in ms]
        predicted += sc_scores.tolist()
        actual += real
        picked_best.append(real[int(np.argmax(sc_scores))] >= max(real) - 1e-9)
predicted, actual = np.array(predicted), np.array(actual)
corr = np.corrcoef(predicted, actual)[0, 1] if predicted.std() > 0 and actual.std() > 0 else float("nan")
print(f"IoU head over {len(picked_best)} clicks ({len(predicted)} masks): correlation {corr:.2f}, "
      f"mean |score - IoU| {np.abs(predicted - actual).mean():.3f}; the top score picked the best mask "
      f"in {np.mean(picked_best):.0%} of clicks")
fig, ax = plt.subplots(figsize=(5, 5))
ax.scatter(actual, predicted, s=14, alpha=0.7)
ax.plot([0, 1], [0, 1], "k:", lw=1)
ax.set_xlabel("real IoU with the closest true mask under the click")
ax.set_ylabel("IoU head score")
ax.set_title(f"IoU head: correlation {corr:.2f}, top score = best mask {np.mean(picked_best):.0%}")
ax.grid(alpha=0.3)
_lesson.save(fig, args, "13_iou_calibration.png")
plt.close(fig)


# %% [markdown]
# ## 4. Your photo (``--image PATH``, best with ``--model vit_b``)
#
# On a photo the ambiguity is the everyday kind: a click on a shirt may mean the shirt, the
# person or a pocket. With ``--image`` (and ``--point X Y``, by default the photo's centre) this
# section shows the three masks the model returns for that one click, each with its score. A
# photo comes without true masks, so nothing in this section is checked; and micro has never
# seen a photo, so the official weights show what SAM does.

# %%
if args.photo is not None:
    predictor.set_image(args.photo)
    photo_masks, photo_scores, _ = predictor.predict(point_coords=args.photo_point, point_labels=np.array([1]))
    print(f"photo {args.photo.shape}, click {args.photo_point[0].tolist()}: masks {photo_masks.shape}, "
          f"scores {np.round(photo_scores, 3)}, areas {[int(m.sum()) for m in photo_masks]} px")
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for k, ax in enumerate(axes):
        ax.imshow(args.photo)
        show_mask(photo_masks[k], ax)
        show_points(args.photo_point, np.array([1]), ax)
        ax.set_title(f"mask {k + 1}: score {photo_scores[k]:.3f}, {photo_masks[k].mean():.1%} of the photo")
        ax.axis("off")
    fig.suptitle(f"{os.path.basename(args.image)}: one click, three masks ({os.path.basename(args.checkpoint or args.model)})")
    fig.tight_layout()
    _lesson.save(fig, args, "13_photo.png")
    plt.close(fig)
else:
    print("no --image given: section 4 runs on your photo (python lessons/13_ambiguity_and_iou.py --image PATH "
          "--model vit_b)")
