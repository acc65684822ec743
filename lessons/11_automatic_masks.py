# %% [markdown]
# # Lesson 11: segment everything: the automatic mask generator
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
# This lesson walks those steps by hand, batch by batch of points as the generator does,
# counting what each filter removes, then runs the real generator (with crops) on the same
# synthetic scene, with the official thresholds, and scores its masks against the scene's
# true objects. Default model: ``micro`` (``--model vit_b`` / ``--checkpoint PATH`` work too).
#
# Run:  python lessons/11_automatic_masks.py --out out/11

# %%
import time

import numpy as np

import _lesson

args = _lesson.parse_args("11", "Lesson 11: segment everything: the automatic mask generator")

import matplotlib.pyplot as plt  # noqa: E402

from minisam.modeling.common import mask_iou  # noqa: E402
from minisam import SamPredictor  # noqa: E402
from minisam.utils import amg  # noqa: E402
from minisam.automatic_mask_generator import SamAutomaticMaskGenerator  # noqa: E402
from minisam.training.shapes import make_scene  # noqa: E402
from minisam.cli.drawing import show_anns  # noqa: E402

sam = _lesson.load_model(args)
S = sam.config.img_size
settings = dict(pred_iou_thresh=0.88, stability_score_thresh=0.95, stability_score_offset=1.0,
                box_nms_thresh=0.7)  # the official defaults
print("settings:", settings)

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
# per 32 px; the same density here. (Each point costs a decoder pass over the whole image
# embedding: the point count, not the encoder, sets the generator's running time.)

# %%
n_side = max(4, S // 32)                                        # 8 for micro, 32 for vit_b
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
stages = ["masks from the decoder", f"predicted IoU > {settings['pred_iou_thresh']}",
          f"stability >= {settings['stability_score_thresh']}", "not at a crop edge"]
counts = dict.fromkeys(stages, 0)
kept_masks, kept_iou, kept_boxes, all_iou = [], [], [], []
for b0 in range(0, len(points), per_batch):
    batch = points[b0:b0 + per_batch]                                          # [n, 2]
    coords = predictor.transform.apply_coords(batch, (H, W))[:, None, :]       # [n, 1, 2] input frame
    sparse, dense = sam.prompt_encoder(points=(coords.astype(np.float32), np.ones((len(batch), 1), np.int64)))
    low_res, iou_pred = sam.mask_decoder(predictor.features, sam.get_dense_pe(), sparse, dense,
                                         multimask_output=True)               # [n, 3, M, M], [n, 3]
    M = low_res.shape[-1]
    low_res, iou_pred = low_res.reshape(-1, 1, M, M), iou_pred.reshape(-1)    # [3n, 1, M, M], [3n]
    if b0 == 0:  # the first 16 points' raw masks, for the figure
        raw = sam.postprocess_masks(low_res[:48], predictor.input_size, (H, W))[:, 0] > 0  # [48, H, W]
    counts[stages[0]] += len(iou_pred)
    all_iou.append(iou_pred)
    alive = np.nonzero(iou_pred > settings["pred_iou_thresh"])[0]             # cheap test first
    counts[stages[1]] += len(alive)
    logits = sam.postprocess_masks(low_res[alive], predictor.input_size, (H, W))[:, 0]  # [a, H, W]
    stability = amg.calculate_stability_score(logits, 0.0, settings["stability_score_offset"])  # [a]
    stable = stability >= settings["stability_score_thresh"]
    alive, masks = alive[stable], logits[stable] > 0                          # [a'], [a', H, W]
    counts[stages[2]] += len(alive)
    boxes = amg.batched_mask_to_box(masks)                                    # [a', 4] inclusive XYXY
    near = amg.is_box_near_crop_edge(boxes, [0, 0, W, H], [0, 0, W, H])       # the crop is the image: none
    counts[stages[3]] += int((~near).sum())
    kept_masks.append(masks[~near])
    kept_iou.append(iou_pred[alive[~near]])
    kept_boxes.append(boxes[~near])
masks = np.concatenate(kept_masks)                                            # [k, H, W] bool
scores = np.concatenate(kept_iou)                                             # [k]
boxes = np.concatenate(kept_boxes)                                            # [k, 4]
keep = amg.box_nms(boxes, scores, settings["box_nms_thresh"])                 # best predicted IoU first
counts[f"box NMS at IoU {settings['box_nms_thresh']}"] = len(keep)
print(f"decoded {len(points)} points in batches of {per_batch} in {time.perf_counter() - t0:.1f} s")
all_iou = np.concatenate(all_iou)                                             # [3P]
print("predicted IoU over all masks: min {:.2f}, median {:.2f}, max {:.2f}".format(*np.percentile(all_iou, [0, 50, 100])))
before = None
for what, n in counts.items():
    print(f"  {what:<28} {n:5d} masks" + ("" if before is None else f"  (removed {before - n})"))
    before = n
if not len(keep):
    print(f"  nothing survived: no mask is both confident (predicted IoU > {settings['pred_iou_thresh']}) and "
          f"stable (stability >= {settings['stability_score_thresh']}) at these thresholds")

colours = np.random.default_rng(0)
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
for a, shown, title in [(axes[0], raw, "raw masks of the first 16 points (48)"),
                        (axes[1], masks[keep], f"after the filters and NMS: {len(keep)}")]:
    canvas = np.zeros((H, W, 3))
    for m in shown:
        canvas[m] = 0.6 * canvas[m] + 0.4 * colours.random(3)
    a.imshow(canvas)
    a.set_title(title)
    a.axis("off")
_lesson.save(fig, args, "filters.png")
plt.close(fig)


# %% [markdown]
# ## 3. The generator, with one crop layer
#
# crop_n_layers=1 adds 2x2 overlapping crops, each re-encoded and prompted with a grid of
# n / crop_n_points_downscale_factor points per side. Masks touching a crop's inner border
# are dropped (they are cut objects); NMS across crops prefers the smaller crops.

# %%
crops, layers = amg.generate_crop_boxes((H, W), 1, 512 / 1500)
print("crop boxes (XYXY):", crops)
gen = SamAutomaticMaskGenerator(sam, points_per_side=n_side, crop_n_layers=1, crop_n_points_downscale_factor=2,
                                min_mask_region_area=S // 8, progress=False, **settings)
t0 = time.perf_counter()
records = gen.generate(image)
print(f"generator: {len(records)} masks in {time.perf_counter() - t0:.1f} s; "
      f"keys {sorted(records[0]) if records else []}")
for r in records[:3]:
    print(f"  area {r['area']}, bbox {r['bbox']}, predicted_iou {r['predicted_iou']:.3f}, "
          f"stability {r['stability_score']:.3f}, crop {r['crop_box']}")


# How many true objects did it find? Each true object's best IoU with any generated mask.
def iou(a, b):  # [H, W] bool x2 -> float
    return float(mask_iou(a, b))


best = [max([iou(r["segmentation"], t) for r in records] or [0.0]) for t in scene.instance_masks]
found = sum(b >= 0.75 for b in best)
print(f"true objects found (best IoU >= 0.75): {found} of {len(best)}; best IoUs {np.round(best, 2).tolist()}")

fig, axes = plt.subplots(1, 3, figsize=(15, 5))
axes[0].imshow(image)
for k, ((x0, y0, x1, y1), layer) in enumerate(zip(crops, layers)):
    inset = 2 + 3 * k                                           # the crops overlap: shift each a little
    axes[0].add_patch(plt.Rectangle((x0 + inset, y0 + inset), x1 - x0 - 2 * inset, y1 - y0 - 2 * inset,
                                    fill=False, lw=2, ls="-" if layer == 0 else "--",
                                    color="white" if layer == 0 else plt.cm.tab10(k)))
axes[0].set_title("crop boxes (layer 0 white, layer 1 dashed)")
axes[1].imshow(image)
show_anns(records, axes[1])                                     # largest first, as the notebook
axes[1].set_title(f"generator: {len(records)} masks")
truth = np.zeros((H, W, 4))
for k, t in enumerate(scene.instance_masks):
    truth[t] = np.r_[plt.cm.tab10(k % 10)[:3], 0.6]
axes[2].imshow(image)
axes[2].imshow(truth)
axes[2].set_title(f"true objects: {found} of {len(best)} found (IoU >= 0.75)")
for a in axes:
    a.axis("off")
_lesson.save(fig, args, "overlay.png")
plt.close(fig)
