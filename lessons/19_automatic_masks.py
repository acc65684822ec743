# %% [markdown]
# # Lesson 19: segment everything: the automatic mask generator
#
# SAM answers one prompt at a time. To segment *everything*, SA-1B's data engine (Kirillov
# et al. 2023, section 4) prompted the model with a regular 32 x 32 grid of foreground points
# and kept only the good, distinct masks. That fully automatic stage produced 1.1 B masks on
# 11 M images (99.1 % of SA-1B's masks), after two earlier stages:
#   1. assisted-manual: annotators click, SAM proposes, annotators fix (4.3 M masks);
#   2. semi-automatic: SAM pre-fills confident masks, annotators add the missed objects
#      (5.9 M more masks), for diversity;
#   3. fully automatic: the grid, the filters and NMS below, with no human in the loop.
# Appendix B gives the recipe; the official code is ``automatic_mask_generator.py`` and
# ``utils/amg.py``, and minisam's is ``minisam/automatic_mask_generator.py`` and ``minisam/utils/amg.py``.
#
# Per point SAM returns three masks (whole, part, sub-part). A mask is kept if
#   - its predicted IoU (the model's own quality guess) is > ``pred_iou_thresh`` (0.88);
#   - it is *stable*: thresholding its logits at -1 and +1 gives nearly the same mask
#     (IoU >= ``stability_score_thresh``, 0.95);
#   - its box does not touch the border of a crop (unless that is the image border);
#
# then box NMS (IoU > 0.7) removes duplicates, ranking by predicted IoU. Optional crop layers
# re-run everything on zoomed-in overlapping crops (small objects get more points), with a
# second NMS that prefers masks from smaller crops. Finally, holes and islands smaller than
# ``min_mask_region_area`` are cleaned.
#
# The stability score (official ``utils/amg.py`` ``calculate_stability_score``) of a mask's logits
# $\ell$ (upsampled to the image), with the mask threshold $t = 0$ and the offset $\delta = 1$
# (``stability_score_offset``), is
#
# $$
# \operatorname{stability}(\ell)
# = \frac{\big| \{ i : \ell_i > t + \delta \} \big|}{\big| \{ i : \ell_i > t - \delta \} \big|}
# = \operatorname{IoU}\big( \{ \ell > t + \delta \},\ \{ \ell > t - \delta \} \big),
# $$
#
# the IoU of the two masks because the first lies inside the second. It is 1 when no logit lies in
# $(t - \delta, t + \delta]$: a mask whose logits cross the threshold steeply, so that its boundary
# hardly moves when the threshold does. A mask survives the two score filters if
#
# $$
# s > 0.88 \quad\text{and}\quad \operatorname{stability}(\ell) \ge 0.95,
# $$
#
# $s$ being its predicted IoU. The point grid has $n^2$ points
# $\big( \tfrac{j + 1/2}{n} W,\ \tfrac{i + 1/2}{n} H \big)$, $i, j \in \{0, \dots, n-1\}$ ($n = 32$ by default).
#
# Those thresholds are the official defaults, tuned for ViT-H on photos. A model may carry its
# own in the registry (micro does: chosen on validation scenes, ``weights/README.md``), and the
# generator uses them when the caller gives none; so does this lesson.
#
# This lesson walks those steps by hand, batch by batch of points as the generator does,
# counting what each filter removes, checks that the real generator returns the same masks,
# runs it once more with a crop layer, and scores the masks against the scene's true objects.
# Then it sweeps the predicted-IoU threshold, which shows why micro needs its own.
# Default model: ``micro`` (``--model vit_b`` / ``--checkpoint PATH`` work too).
#
# Run:  python lessons/19_automatic_masks.py --out out/19

# %%
import os
import time

import numpy as np

import _lesson

args = _lesson.parse_args("19", "Lesson 19: segment everything: the automatic mask generator",
                          photo="section 5, every mask the generator finds on a photo")

import matplotlib.pyplot as plt  # noqa: E402

from minisam.modeling.common import mask_iou  # noqa: E402
from minisam import SamPredictor  # noqa: E402
from minisam.utils import amg  # noqa: E402
from minisam.automatic_mask_generator import SamAutomaticMaskGenerator  # noqa: E402
from minisam.training.shapes import make_scene  # noqa: E402
from minisam.cli.drawing import show_anns  # noqa: E402

sam = _lesson.load_model(args)
S = sam.config.img_size
# The official defaults are tuned for ViT-H on photos. A registered model may carry its own
# (``generator_defaults`` in the registry: micro's were chosen on validation scenes); the
# generator takes them when the caller gives no value, and so does this lesson.
OFFICIAL = dict(points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95)
tuned = getattr(sam, "generator_defaults", None) or {}
settings = dict(OFFICIAL, **tuned, stability_score_offset=1.0, box_nms_thresh=0.7)
print("settings:", settings, "(the model's own)" if tuned else "(the official defaults)")

scene = make_scene(np.random.default_rng(6), S)
image = scene.image                                             # [H, W, 3] uint8
H, W = image.shape[:2]
print(f"image: {image.shape}, {len(scene.objects)} true objects "
      f"({', '.join(scene.kinds[i] for i in scene.objects)}), {len(scene.masks)} true masks in all")


# %% [markdown]
# ## 1. The grid
#
# build_point_grid(n): n x n points at the centres of an n x n tiling of [0, 1]^2, scaled
# to pixels. The official default is 32 x 32 = 1024 points for a 1024 px input, one point
# per 32 px. micro keeps 32 x 32 on its 128 px input, one point per 4 px: its objects are
# small in pixels, and a sparser grid misses them. (Each point costs a decoder pass over the
# whole image embedding: the point count, not the encoder, sets the generator's running time.)

# %%
n_side = settings["points_per_side"]                            # 32 for micro and the official models
grid = amg.build_point_grid(n_side)                             # [n*n, 2] in [0, 1]
points = grid * np.array([W, H])                                # [n*n, 2] (x, y) pixels
print(f"grid: {grid.shape} -> first points {points[:2].tolist()}")

fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(image)
ax.scatter(points[:, 0], points[:, 1], s=6, c="lime")
ax.set_title(f"{n_side}x{n_side} point prompts")
ax.axis("off")
_lesson.save(fig, args, "grid.png")
plt.close(fig)


# %% [markdown]
# ## 2. By hand: decode a batch, filter it, keep the survivors; NMS at the end

# %%
t0 = time.perf_counter()
predictor = SamPredictor(sam)
predictor.set_image(image)
print(f"image embedding {predictor.features.shape} in {time.perf_counter() - t0:.1f} s")
t0 = time.perf_counter()
per_batch = 64                                                  # points_per_batch
# The loop keeps every mask that passes the loosest thresholds used below (the sweep of section
# 4 and the official defaults), with its scores, so that each setting is a selection of these
# candidates plus NMS: the same steps, without decoding the grid again for each.
loosest_iou = min(0.5, settings["pred_iou_thresh"])
loosest_stability = min(0.95, settings["stability_score_thresh"])
all_iou, cand_iou, cand_stability, cand_masks, cand_boxes = [], [], [], [], []
for b0 in range(0, len(points), per_batch):
    batch = points[b0:b0 + per_batch]                                          # [n, 2]
    coords = predictor.transform.apply_coords(batch, (H, W))[:, None, :]       # [n, 1, 2] input frame
    sparse, dense = sam.prompt_encoder(points=(coords.astype(np.float32), np.ones((len(batch), 1), np.int64)))
    low_res, iou_pred = sam.mask_decoder(predictor.features, sam.get_dense_pe(), sparse, dense,
                                         multimask_output=True)               # [n, 3, M, M], [n, 3]
    M = low_res.shape[-1]
    low_res, iou_pred = low_res.reshape(-1, 1, M, M), iou_pred.reshape(-1)    # [3n, 1, M, M], [3n]
    all_iou.append(iou_pred)
    alive = np.nonzero(iou_pred > loosest_iou)[0]                             # cheap test first
    logits = sam.postprocess_masks(low_res[alive], predictor.input_size, (H, W))[:, 0]  # [a, H, W]
    stability = amg.calculate_stability_score(logits, 0.0, settings["stability_score_offset"])  # [a]
    stable = stability >= loosest_stability
    alive, stability, masks = alive[stable], stability[stable], logits[stable] > 0  # [a'], [a'], [a', H, W]
    boxes = amg.batched_mask_to_box(masks)                                    # [a', 4] inclusive XYXY
    near = amg.is_box_near_crop_edge(boxes, [0, 0, W, H], [0, 0, W, H])       # the crop is the image: none
    cand_iou.append(iou_pred[alive[~near]])
    cand_stability.append(stability[~near])
    cand_masks.append(masks[~near])
    cand_boxes.append(boxes[~near])
print(f"decoded {len(points)} points in batches of {per_batch} in {time.perf_counter() - t0:.1f} s")
all_iou, cand_iou, cand_stability = (np.concatenate(a) for a in (all_iou, cand_iou, cand_stability))  # [3P], [c], [c]
cand_masks, cand_boxes = np.concatenate(cand_masks), np.concatenate(cand_boxes)  # [c, H, W] bool, [c, 4]
print("predicted IoU over all masks: min {:.2f}, median {:.2f}, max {:.2f}".format(*np.percentile(all_iou, [0, 50, 100])))


def select(pred_iou_thresh, stability_score_thresh, report=False):
    """The generator's filters and NMS on the candidates -> indices, best predicted IoU first."""
    confident = cand_iou > pred_iou_thresh                                    # [c]
    stable = confident & (cand_stability >= stability_score_thresh)           # [c]
    idx = np.nonzero(stable)[0]
    keep = idx[amg.box_nms(cand_boxes[idx], cand_iou[idx], settings["box_nms_thresh"])]
    if report:
        counts = {"masks from the decoder": len(all_iou),
                  f"predicted IoU > {pred_iou_thresh}": int((all_iou > pred_iou_thresh).sum()),
                  f"stability >= {stability_score_thresh}": int(stable.sum()),
                  f"box NMS at IoU {settings['box_nms_thresh']}": len(keep)}
        before = None
        for what, n in counts.items():
            print(f"  {what:<28} {n:5d} masks" + ("" if before is None else f"  (removed {before - n})"))
            before = n
    return keep


keep = select(settings["pred_iou_thresh"], settings["stability_score_thresh"], report=True)
by_hand = cand_masks[keep]                                                    # [K, H, W]


# %% [markdown]
# The generator itself, without crops and with the same settings, runs exactly these steps:
# its masks must be the ones kept by hand, in the same order.

# %%
plain = SamAutomaticMaskGenerator(sam, points_per_side=n_side, progress=False, **{
    k: settings[k] for k in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                             "box_nms_thresh")}).generate(image)
same = len(plain) == len(by_hand) and all(np.array_equal(r["segmentation"], m)
                                          for r, m in zip(sorted(plain, key=lambda r: -r["predicted_iou"]), by_hand))
print(f"generator without crops: {len(plain)} masks; by hand: {len(by_hand)}; identical: {same}")


# %% [markdown]
# ## 3. The generator, with one crop layer
#
# crop_n_layers=1 adds 2x2 overlapping crops, each re-encoded and prompted with a grid of
# n / crop_n_points_downscale_factor points per side. Masks touching a crop's inner border
# are dropped (they are cut objects); NMS across crops prefers the smaller crops. (Here with
# half the grid, 16 x 16 on the whole image and 8 x 8 on each crop, to keep the lesson short.)

# %%
crops, layers = amg.generate_crop_boxes((H, W), 1, 512 / 1500)
print("crop boxes (XYXY):", crops)
gen = SamAutomaticMaskGenerator(sam, points_per_side=n_side // 2, crop_n_layers=1, crop_n_points_downscale_factor=2,
                                min_mask_region_area=S // 8, progress=False,
                                **{k: v for k, v in settings.items() if k != "points_per_side"})
t0 = time.perf_counter()
records = gen.generate(image)
print(f"generator: {len(records)} masks in {time.perf_counter() - t0:.1f} s; "
      f"keys {sorted(records[0]) if records else []}")
for r in records[:3]:
    print(f"  area {r['area']}, bbox {r['bbox']}, predicted_iou {r['predicted_iou']:.3f}, "
          f"stability {r['stability_score']:.3f}, crop {r['crop_box']}")


# How many true objects does each run find? Each true object's best IoU with any returned mask.
def iou(a, b):  # [H, W] bool x2 -> float
    return float(mask_iou(a, b))


def objects_found(masks):  # [k, H, W] bool -> (found, best IoU per true object)
    best = [max([iou(m, t) for m in masks] or [0.0]) for t in scene.instance_masks]
    return sum(b >= 0.75 for b in best), best


crop_found, crop_best = objects_found([r["segmentation"] for r in records])
print(f"with the crop layer: {crop_found} of {len(crop_best)} true objects found (best IoU >= 0.75)")
found, best = objects_found([r["segmentation"] for r in plain])
print(f"without crops (the generator's default): {found} of {len(best)} found; best IoUs {np.round(best, 2).tolist()}")

fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(image)
for k, ((x0, y0, x1, y1), layer) in enumerate(zip(crops, layers)):
    inset = 2 + 3 * k                                           # the crops overlap: shift each a little
    ax.add_patch(plt.Rectangle((x0 + inset, y0 + inset), x1 - x0 - 2 * inset, y1 - y0 - 2 * inset,
                               fill=False, lw=2, ls="-" if layer == 0 else "--",
                               color="white" if layer == 0 else plt.cm.tab10(k)))
ax.set_title(f"crop boxes (layer 0 white, layer 1 dashed)\n{len(records)} masks, {crop_found} of {len(crop_best)} found")
ax.axis("off")
_lesson.save(fig, args, "crops.png")
plt.close(fig)


# %% [markdown]
# ## 4. Why micro has its own thresholds: the predicted-IoU threshold swept
#
# The model's own quality guess decides what survives. A model whose IoU head rarely says
# "0.88" loses most masks at the official threshold, however good they are. The sweep applies
# the generator's filters and NMS to the candidates of section 2 at several ``pred_iou_thresh``
# values (stability fixed at the model's setting) and counts the masks kept and the true
# objects found; then the official pair (0.88, 0.95).

# %%
thresholds = sorted({0.5, 0.6, 0.7, 0.8, 0.88, settings["pred_iou_thresh"]})
sweep = {}
for thr in thresholds:
    kept = select(thr, settings["stability_score_thresh"])
    sweep[thr] = (len(kept), objects_found(cand_masks[kept])[0])
    print(f"  pred_iou_thresh {thr:.2f}: {sweep[thr][0]:3d} masks, {sweep[thr][1]} of {len(best)} objects found")
official = select(0.88, 0.95)
found_official = objects_found(cand_masks[official])[0]
print(f"the official thresholds (0.88, 0.95) on the same {n_side}x{n_side} grid: {len(official)} masks, "
      f"{found_official} of {len(best)} objects found")
above = float(np.mean(all_iou > 0.88))

fig, axes = plt.subplots(2, 2, figsize=(9, 8.8))
axes[0, 0].imshow(image)
show_anns(plain, axes[0, 0])                                    # largest first, as the notebook
who = "micro's" if tuned else "the official"
axes[0, 0].set_title(f"SamAutomaticMaskGenerator, {who} settings:\n{len(plain)} masks", fontsize=11)
truth = np.zeros((H, W, 4))
for k, (t, b) in enumerate(zip(scene.instance_masks, best)):
    truth[t] = np.r_[plt.cm.tab10(k % 10)[:3], 0.7 if b >= 0.75 else 0.2]
axes[0, 1].imshow(image)
axes[0, 1].imshow(truth)
axes[0, 1].set_title(f"true objects: {found} of {len(best)} found\n(faint: missed; found = best IoU >= 0.75)",
                     fontsize=11)
for a in axes[0]:
    a.axis("off")
axes[1, 0].hist(all_iou, bins=40, color="C0")
axes[1, 0].axvline(0.88, color="C3", ls="--", label="official threshold 0.88")
if tuned:
    axes[1, 0].axvline(settings["pred_iou_thresh"], color="C2", label=f"micro's {settings['pred_iou_thresh']}")
axes[1, 0].set_xlabel("predicted IoU (the IoU head's output)")
axes[1, 0].set_ylabel("masks (3 per grid point)")
axes[1, 0].set_title(f"{len(all_iou)} masks: {above:.0%} predicted above 0.88", fontsize=11)
axes[1, 0].legend(fontsize=10)
axes[1, 1].plot(thresholds, [sweep[t][1] for t in thresholds], "o-", color="C2", label="objects found")
axes[1, 1].axhline(len(best), color="k", lw=0.8, ls=":", label=f"objects in the scene ({len(best)})")
axes[1, 1].set_ylim(-0.2, len(best) + 0.5)
axes[1, 1].yaxis.get_major_locator().set_params(integer=True)
axes[1, 1].set_xlabel("pred_iou_thresh")
axes[1, 1].set_ylabel("true objects found", color="C2")
ax2 = axes[1, 1].twinx()
ax2.plot(thresholds, [sweep[t][0] for t in thresholds], "s--", color="C1")
ax2.set_ylabel("masks kept (dashed)", color="C1")
axes[1, 1].legend(fontsize=10, loc="lower left")
axes[1, 1].set_title("the threshold swept: objects found, masks kept", fontsize=11)
_lesson.save(fig, args, "overlay.png")
plt.close(fig)

# %% [markdown]
# ## The checks

# %%
_lesson.claim(same, f"the generator without crops returns exactly the {len(by_hand)} masks kept by hand")
# What the trained micro finds, checked on the registered micro (a --checkpoint may hold any weights).
if args.checkpoint is None and tuned:
    _lesson.claim(found >= 0.75 * len(best), f"SamAutomaticMaskGenerator(sam) with {who} settings finds at least "
                                             f"three quarters of the scene's true objects ({found} of {len(best)})")
    _lesson.claim(found_official < found, f"with the official thresholds it finds fewer ({found_official} of "
                                          f"{len(best)}): only {above:.0%} of the masks have a predicted IoU above 0.88")


# %% [markdown]
# ## 5. Your photo (``--image PATH``, best with ``--model vit_b``)
#
# With ``--image`` the generator runs on your photo with the model's settings, as
# ``SamAutomaticMaskGenerator(sam).generate(photo)`` does, and the masks are drawn as the
# official notebook draws them. A photo comes without true masks, so nothing here is checked;
# micro has never seen a photo, so the official weights show what SAM does.

# %%
if args.photo is not None:
    t0 = time.perf_counter()
    photo_records = SamAutomaticMaskGenerator(sam, progress=False).generate(args.photo)
    seconds = time.perf_counter() - t0
    areas = sorted((r["area"] for r in photo_records), reverse=True)
    print(f"photo {args.photo.shape}: {len(photo_records)} masks in {seconds:.1f} s, largest areas {areas[:5]}")
    fig, ax = plt.subplots(figsize=(9, 9 * args.photo.shape[0] / args.photo.shape[1]))
    ax.imshow(args.photo)
    show_anns(photo_records, ax)
    ax.set_title(f"{os.path.basename(args.image)}: {len(photo_records)} masks, {who} settings "
                 f"({os.path.basename(args.checkpoint or args.model)})")
    ax.axis("off")
    _lesson.save(fig, args, "photo.png")
    plt.close(fig)
else:
    print("no --image given: section 5 runs the generator on your photo (python lessons/19_automatic_masks.py "
          "--image PATH --model vit_b)")
