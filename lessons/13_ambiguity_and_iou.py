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
                          photo="section 6, the three masks of one click on a photo", photo_click=True)

import matplotlib.pyplot as plt  # noqa: E402

from minisam.modeling.common import mask_iou  # noqa: E402
from minisam import SamPredictor  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402
from minisam.cli.drawing import show_mask, show_points  # noqa: E402
from minisam.training.micro import SHIPPED_RECIPE  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
S, M = cfg.img_size, cfg.mask_input_size
MIN_AREA = SHIPPED_RECIPE["scene_min_area"]    # micro's domain: every part, object and group >= 100 px


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
scene = make_scene(np.random.default_rng(21), S, min_area=MIN_AREA)
# (A scene without parts, as at small input sizes, falls back to its largest object.)
part = next((i for i, l in enumerate(scene.levels) if l == "part"),
            max(scene.objects, key=lambda i: scene.masks[i].sum()))
image, gts, levels, kept = crop_scene(scene, scene.masks[part], (3 * S) // 4)
H, W = image.shape[:2]
part_mask = gts[kept.index(part)]                                 # [H, W] bool
point = interior_point(part_mask)[None] - 0.5                     # [1, 2] (x, y), the pixel's index
valid = [k for k, m in enumerate(gts) if m[int(point[0, 1]), int(point[0, 0])]]
print(f"original image {image.shape} (cut from a {S} x {S} scene, enlarged 2x); the click {point[0].tolist()} lies in "
      f"{len(valid)} true masks: {[levels[k] for k in valid]} of {[int(gts[k].sum()) for k in valid]} pixels")

predictor = SamPredictor(sam)
predictor.set_image(image)
print(f"set_image: original_size {predictor.original_size} -> input_size {predictor.input_size} "
      f"(long side {S}), padded to {S} x {S}; embedding {predictor.get_image_embedding().shape}")
masks, scores, low_res = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)
print(f"one point, multimask: masks {masks.shape} {masks.dtype}, scores {np.round(scores, 3)}, low-res {low_res.shape}")
single, s_single, single_low = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=False)
print(f"one point, single mask (token 0): {single.shape}, score {np.round(s_single, 3)}, low-res {single_low.shape}")
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



# %% [markdown]
# ## 2. Many ambiguous clicks: what each token gives
#
# One scene proves little. Here every *part* of 120 scenes (an inlaid shape inside an object, in
# the model's domain: every mask of at least 100 pixels) gets one click at its most interior
# pixel (4 scenes for a model with the official 1024-pixel input, whose ``set_image`` takes tens
# of seconds on a CPU: enough to run the code, not to measure). Each click has two right answers, the part and its object, and we score each of the
# four tokens against both.

# %%
MEASURED = S <= 256          # micro-sized input: the 120 scenes run in seconds
N_SCENES, FIRST_SEED = (120 if MEASURED else 4), 1300
print(f"{N_SCENES} scenes" + ("" if MEASURED else f" (a {S}-pixel input: too slow on a CPU for the 120)"))
clicks = []          # one dict a part click
calibration = []     # (score, real IoU, is the best of the three) for every mask of every click
for seed in range(FIRST_SEED, FIRST_SEED + N_SCENES):
    sc = make_scene(np.random.default_rng(seed), S, min_area=MIN_AREA)
    predictor.set_image(sc.image)
    for i, m in enumerate(sc.masks):
        p = interior_point(m) - 0.5                                 # [2] (x, y), the pixel's index
        under = [t for t in sc.masks if t[int(p[1]), int(p[0])]]
        ms, sc_scores, _ = predictor.predict(point_coords=p[None], point_labels=np.array([1]))   # [3, S, S], [3]
        real = [max(iou(mk, t) for t in under) for mk in ms]
        calibration += [(s_, r_, r_ >= max(real) - 1e-9) for s_, r_ in zip(sc_scores, real)]
        parents = [k for k in sc.objects if k != i and sc.masks[k][int(p[1]), int(p[0])]]
        if sc.levels[i] != "part" or not parents:
            continue
        part_m, obj_m = m, sc.masks[parents[0]]                     # [S, S] bool each
        one, _, _ = predictor.predict(point_coords=p[None], point_labels=np.array([1]), multimask_output=False)
        off = obj_m & ~part_m                                        # the object off the part
        second = interior_point(off if off.sum() >= 10 else obj_m) - 0.5                     # [2]
        two, _, _ = predictor.predict(point_coords=np.stack([p, second]), point_labels=np.array([1, 1]),
                                      multimask_output=False)       # [1, S, S]
        clicks.append(dict(part=[iou(mk, part_m) for mk in (one[0], *ms)],       # tokens 0, 1, 2, 3
                           object=[iou(mk, obj_m) for mk in (one[0], *ms)],
                           two_clicks_object=iou(two[0], obj_m), seed=seed, points=np.stack([p, second]),
                           object_mask=obj_m, one=one[0], two=two[0]))
part_iou = np.array([c["part"] for c in clicks])                  # [P, 4] tokens 0..3
object_iou = np.array([c["object"] for c in clicks])              # [P, 4]
P = len(clicks)
print(f"{P} part clicks in {N_SCENES} scenes; mean IoU with the part / with its object:")
for k in range(4):
    print(f"   token {k}{' (single mask)' if k == 0 else ''}: {part_iou[:, k].mean():.3f} / {object_iou[:, k].mean():.3f}")
best3_part, best3_object = part_iou[:, 1:].max(1), object_iou[:, 1:].max(1)                # [P] each
MATCH = 0.5      # a mask "is" a reading when its IoU with it is at least 0.5, the detection convention
both_three = (best3_part >= MATCH) & (best3_object >= MATCH)                                 # [P] bool
either_token0 = (part_iou[:, 0] >= MATCH) | (object_iou[:, 0] >= MATCH)                      # [P] bool
part_token, object_token = np.argmax(part_iou[:, 1:], 1) + 1, np.argmax(object_iou[:, 1:], 1) + 1   # [P] each
print(f"best of the three masks: part {best3_part.mean():.3f}, object {best3_object.mean():.3f}; both readings "
      f"(IoU >= {MATCH}) among the three in {both_three.mean():.0%} of clicks; token 0 gives one of them in "
      f"{either_token0.mean():.0%}")
print(f"the token that fits the part best is not the one that fits the object best in "
      f"{np.mean(part_token != object_token):.0%} of clicks")


def share_se(flags):  # [N] bool -> the standard error of their mean
    return float(np.sqrt(np.mean(flags) * (1 - np.mean(flags)) / len(flags)))


fig, axes = plt.subplots(2, 2, figsize=(9, 8.2))
colours = {"part": "yellow", "object": "white", "group": "magenta"}
best = int(np.argmax(scores))
for k, ax in enumerate(axes.flat[:3]):
    level, q = match(masks[k])
    ax.imshow(image)
    show_mask(masks[k], ax)
    for v in valid:
        ax.contour(gts[v], levels=[0.5], colors=[colours[levels[v]]], linewidths=1)
    show_points(point, np.array([1]), ax)
    ax.set_title(f"token {k + 1}: score {scores[k]:.2f}{' (top)' if k == best else ''}\n"
                 f"closest truth: {level}, IoU {q:.2f}", fontsize=11)
    ax.axis("off")
ax = axes[1, 1]
x = np.arange(4)
ax.bar(x - 0.2, part_iou.mean(0), 0.4, color="gold", edgecolor="k", label="the part")
ax.bar(x + 0.2, object_iou.mean(0), 0.4, color="lightgrey", edgecolor="k", label="its object")
ax.set_xticks(x)
ax.set_xticklabels(["token 0\n(single)", "token 1", "token 2", "token 3"], fontsize=10)
ax.set_ylabel("mean IoU with the reading", fontsize=11)
ax.set_ylim(0, 1.18)
ax.tick_params(labelsize=10)
ax.legend(fontsize=10, loc="upper left", ncol=2)
ax.set_title(f"{P} clicks on parts: the three masks hold\nboth readings in {both_three.mean():.0%}, "
             f"token 0 one in {either_token0.mean():.0%}", fontsize=11)
fig.suptitle("One click on a part: three masks for three readings (outlines: yellow part, white object, "
             "magenta group)", fontsize=11)
fig.tight_layout()
_lesson.save(fig, args, "13_three_masks.png")
plt.close(fig)


# %% [markdown]
# ## 3. Several points: not ambiguous, use the single-mask token
#
# The paper's rule: with more than one point the prompt says what is meant, so SAM returns the
# single-mask token. A second positive click on the object, off the part, should turn token 0's
# guess into the object. Paired per click: the same part click alone, and with the second click.

# %%
two_object = np.array([c["two_clicks_object"] for c in clicks])   # [P]
gain = two_object - object_iou[:, 0]                              # [P] paired
gain_se = float(gain.std(ddof=1) / np.sqrt(P)) if P > 1 else float("nan")
print(f"token 0's IoU with the object: one click on the part {object_iou[:, 0].mean():.3f}, plus a click on the "
      f"object {two_object.mean():.3f} (paired gain {gain.mean():+.3f} +- {gain_se:.3f} SE, {P} clicks)")

# The figure's example: among the clicks where one click left token 0 off the object (IoU < 0.5,
# the ambiguous ones), the one of median gain: neither the best case nor the worst.
missed = np.flatnonzero(object_iou[:, 0] < 0.5)                   # [A] indexes into clicks
example = clicks[int(missed[np.argsort(gain[missed])[len(missed) // 2]])] if len(missed) else clicks[0]
example_image = make_scene(np.random.default_rng(example["seed"]), S, min_area=MIN_AREA).image   # [S, S, 3]
print(f"{len(missed)} clicks left token 0 off the object; their mean gain from the second click "
      f"{gain[missed].mean() if len(missed) else float('nan'):+.3f}; the median one (scene seed {example['seed']}): "
      f"{example['object'][0]:.3f} -> {example['two_clicks_object']:.3f}")

fig, axes = plt.subplots(1, 3, figsize=(12, 4.3), gridspec_kw={"width_ratios": [1, 1, 1.1]})
for ax, m, p_, title in ((axes[0], example["one"], example["points"][:1], "one click on the part, token 0"),
                         (axes[1], example["two"], example["points"], "plus a click on the object")):
    ax.imshow(example_image)
    show_mask(m, ax)
    ax.contour(example["object_mask"], levels=[0.5], colors="w", linewidths=1)
    show_points(p_, np.ones(len(p_), int), ax)
    ax.set_title(f"{title}:\nIoU with the object (white) {iou(m, example['object_mask']):.2f}", fontsize=11)
    ax.axis("off")
ax = axes[2]
ax.scatter(object_iou[:, 0], two_object, s=16, alpha=0.7)
ax.plot([0, 1], [0, 1], "k:", lw=1)
ax.set_xlabel("one click on the part", fontsize=11)
ax.set_ylabel("plus a click on the object", fontsize=11)
ax.set_title(f"token 0's IoU with the object, {P} clicks:\nmean {object_iou[:, 0].mean():.2f} -> "
             f"{two_object.mean():.2f}", fontsize=11)
ax.tick_params(labelsize=10)
ax.grid(alpha=0.3)
fig.suptitle(f"Two points are not ambiguous: the median of the {len(missed)} clicks where one click missed the "
             f"object, and all {P} clicks", fontsize=11)
fig.tight_layout()
_lesson.save(fig, args, "13_single_mask_multi_point.png")
plt.close(fig)


# %% [markdown]
# ## 4. How good is the IoU head? Predicted score against the real IoU
#
# Every click of section 2 (on parts, objects and groups alike) returned three masks with a
# score each; here each mask is scored against the closest true mask under the click. A useful
# head puts the points near the diagonal, and its top score picks the best of the three masks
# far more often than a random pick (one in three).

# %%
predicted = np.array([c[0] for c in calibration])                  # [3 x clicks]
actual = np.array([c[1] for c in calibration])                     # [3 x clicks]
picked_best = np.array([max(range(3), key=lambda k: calibration[j + k][0]) == max(
    range(3), key=lambda k: calibration[j + k][1]) for j in range(0, len(calibration), 3)])  # [clicks] bool
corr = np.corrcoef(predicted, actual)[0, 1] if predicted.std() > 0 and actual.std() > 0 else float("nan")
print(f"IoU head over {len(picked_best)} clicks ({len(predicted)} masks): correlation {corr:.2f}, "
      f"mean |score - IoU| {np.abs(predicted - actual).mean():.3f}; the top score picked the best mask "
      f"in {picked_best.mean():.0%} +- {share_se(picked_best):.0%} SE of clicks (a random pick: 33%)")
fig, ax = plt.subplots(figsize=(5.2, 5))
ax.scatter(actual, predicted, s=8, alpha=0.4)
ax.plot([0, 1], [0, 1], "k:", lw=1)
ax.set_xlabel("real IoU with the closest true mask under the click")
ax.set_ylabel("IoU head score")
ax.set_title(f"IoU head, {len(picked_best)} clicks: correlation {corr:.2f};\n"
             f"the top score is the best mask in {picked_best.mean():.0%}")
ax.grid(alpha=0.3)
fig.tight_layout()
_lesson.save(fig, args, "13_iou_calibration.png")
plt.close(fig)


# %% [markdown]
# ## 5. What this lesson measured
#
# On the registered micro (a ``--checkpoint`` may hold any weights, so its numbers are printed
# above but not checked), over the part clicks of section 2:
#
# - the three masks hold both readings, the part and its object (each at IoU >= 0.5), in most
#   clicks: more than half, by more than two standard errors;
# - the tokens specialise: the token that fits the part best is another token than the one that
#   fits the object best more often than if the three were interchangeable (two in three);
# - a second click on the object raises token 0's IoU with the object, paired per click, by more
#   than two standard errors;
# - the IoU head's top score picks the best of the three masks more often than a random pick
#   (one in three), by more than two standard errors.

# %%
if args.checkpoint is None and MEASURED:
    _lesson.claim(both_three.mean() > 0.5 + 2 * share_se(both_three),
                  f"one click on a part: the three masks hold both readings (IoU >= {MATCH} with the part and with "
                  f"its object) in {both_three.mean():.0%} +- {share_se(both_three):.0%} of {P} clicks, most of them")
    differ = part_token != object_token                                # [P] bool
    _lesson.claim(differ.mean() > 2 / 3 + 2 * share_se(differ),
                  f"the tokens specialise: the part's best token is not the object's in {differ.mean():.0%} +- "
                  f"{share_se(differ):.0%} of clicks (interchangeable tokens: 67%)")
    _lesson.claim(gain.mean() > 2 * gain_se,
                  f"a second click on the object raises token 0's IoU with it from {object_iou[:, 0].mean():.2f} to "
                  f"{two_object.mean():.2f} ({gain.mean():+.3f} +- {gain_se:.3f} SE, paired, {P} clicks)")
    _lesson.claim(picked_best.mean() > 1 / 3 + 2 * share_se(picked_best),
                  f"the IoU head's top score picks the best of the three masks in {picked_best.mean():.0%} +- "
                  f"{share_se(picked_best):.0%} of {len(picked_best)} clicks (a random pick: 33%)")


# %% [markdown]
# ## 6. Your photo (``--image PATH``, best with ``--model vit_b``)
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
    print("no --image given: section 6 runs on your photo (python lessons/13_ambiguity_and_iou.py --image PATH "
          "--model vit_b)")
