"""Lesson 11: segment everything: the automatic mask generator.

SAM answers one prompt at a time. To segment *everything*, SA-1B's data engine (Kirillov
et al. 2023, section 4) prompted the model with a regular 32 x 32 grid of foreground points
and kept only the good, distinct masks. That fully automatic stage produced 1.1 B masks on
11 M images (99.1 % of SA-1B's masks), after two earlier stages:
  1. assisted-manual: annotators click, SAM proposes, annotators fix (4.3 M masks);
  2. semi-automatic: SAM pre-fills confident masks, annotators add the missed objects
     (5.9 M more masks), for diversity;
  3. fully automatic: the grid, the filters and NMS below, with no human in the loop.
Appendix B gives the recipe; the official code is ``automatic_mask_generator.py`` and
``utils/amg.py``, and minisam's is ``minisam/automatic_mask_generator.py`` and ``minisam/amg.py``.

Per point SAM returns three masks (whole, part, sub-part). A mask is kept if
  - its predicted IoU (the model's own quality guess) is > ``pred_iou_thresh`` (0.88);
  - it is *stable*: thresholding its logits at -1 and +1 gives nearly the same mask
    (IoU >= ``stability_score_thresh``, 0.95);
  - its box does not touch the border of a crop (unless that is the image border);
then box NMS (IoU > 0.7) removes duplicates, ranking by predicted IoU. Optional crop layers
re-run everything on zoomed-in overlapping crops (small objects get more points), with a
second NMS that prefers masks from smaller crops. Finally, holes and islands smaller than
``min_mask_region_area`` are cleaned.

This lesson walks those steps by hand on one batch of points, counting what each filter
removes, then runs the real generator (with crops) and draws the result. It runs on the
``micro`` model when its weights are present, else on a randomized small model built
in-process (whose masks are blobs, not objects: the steps are the same, the thresholds are
lowered so that something survives).

Run:  MPLBACKEND=Agg python lessons/11_automatic_masks.py --out out/11
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _lesson  # noqa: E402  (sets MPLBACKEND=Agg and the import path)

import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minisam import amg  # noqa: E402
from minisam.automatic_mask_generator import SamAutomaticMaskGenerator  # noqa: E402
from minisam.config import expected_shapes, make_config  # noqa: E402
from minisam.errors import MinisamError  # noqa: E402
from minisam.params import nest  # noqa: E402
from minisam.predictor import SamPredictor  # noqa: E402
from minisam.sam import Sam  # noqa: E402

args = _lesson.parse_args("11", "Lesson 11: the automatic mask generator")


def random_sam(seed=0):
    """A small SAM with random weights at sensible scales (no torch needed)."""
    cfg = make_config(encoder_embed_dim=48, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                      img_size=256, patch_size=16, window_size=8, prompt_embed_dim=32, mask_in_chans=8,
                      decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)
    rng = np.random.default_rng(seed)
    flat = {}
    for k, shape in expected_shapes(cfg).items():
        leaf = k.rsplit(".", 1)[1]
        if "norm" in k or ".neck.1." in k or ".neck.3." in k or "output_upscaling.1." in k:
            v = (1.0 if leaf == "weight" else 0.0) + 0.1 * rng.standard_normal(shape)
        elif leaf == "bias":
            v = 0.02 * rng.standard_normal(shape)
        elif len(shape) >= 2 and "embed" not in k and "token" not in k and "gaussian" not in k and "rel_pos" not in k:
            v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))  # N(0, 1/fan_in)
        else:
            v = rng.standard_normal(shape)  # embeddings, tokens, PE matrix, rel-pos tables
        flat[k] = v.astype(np.float32)
    return Sam(cfg, nest(flat))


try:
    sam = _lesson.load_model(args)
    trained = True
except MinisamError as exc:
    print(f"({exc}) -> using a randomized small model instead")
    sam = random_sam()
    trained = False

# Thresholds: the official ones for a trained model; a randomized model's logits are ~0.1 in
# size, so its stability offset must shrink with them and the IoU head means nothing.
settings = (dict(pred_iou_thresh=0.88, stability_score_thresh=0.95, stability_score_offset=1.0) if trained else
            dict(pred_iou_thresh=0.0, stability_score_thresh=0.3, stability_score_offset=0.05))
print("settings:", settings)

# A synthetic scene: background, a disc, a square, a small triangle, a bar.
H, W = 240, 320
yy, xx = np.mgrid[0:H, 0:W]
image = np.zeros((H, W, 3), np.uint8)
image[:] = (40, 60, 90)
image[(xx - 90) ** 2 + (yy - 120) ** 2 < 55 ** 2] = (230, 180, 40)
image[40:130, 180:280] = (60, 170, 90)
image[(yy > 160) & (yy < 220) & (xx - 200 > -(yy - 220)) & (xx - 200 < (yy - 160))] = (200, 60, 60)
image[200:215, 20:150] = (220, 220, 220)
print(f"image: {image.shape}")

# --- 1. The grid ------------------------------------------------------------------------
# build_point_grid(n): n x n points at the centres of an n x n tiling of [0, 1]^2, scaled
# to pixels. The official default is 32 x 32 = 1024 points; we use 12 x 12 here.
n_side = 12
grid = amg.build_point_grid(n_side)  # [n*n, 2] in [0, 1]
points = grid * np.array([W, H])  # [n*n, 2] (x, y) pixels
print(f"grid: {grid.shape} -> first points {points[:2].tolist()}")

fig, ax = plt.subplots(figsize=(5, 4))
ax.imshow(image)
ax.scatter(points[:, 0], points[:, 1], s=8, c="lime")
ax.set_title(f"{n_side}x{n_side} point prompts")
ax.axis("off")
_lesson.save(fig, args, "grid.png")

# --- 2. One batch by hand: decode, then each filter in turn -----------------------------
t0 = time.perf_counter()
predictor = SamPredictor(sam)
predictor.set_image(image)
in_points = predictor.transform.apply_coords(points, (H, W))  # [P, 2] model-input frame
sparse, dense = sam.prompt_encoder(points=(in_points[:, None, :], np.ones((len(points), 1), np.int64)))
low_res, iou_pred = sam.mask_decoder(predictor.features, sam.get_dense_pe(), sparse, dense,
                                     multimask_output=True)  # [P, 3, M, M], [P, 3]
logits = sam.postprocess_masks(low_res, predictor.input_size, (H, W))  # [P, 3, H, W]
logits = logits.reshape(-1, H, W)  # [3P, H, W], each point's 3 masks together
iou_pred = iou_pred.reshape(-1)  # [3P]
print(f"decoded {len(points)} points -> {logits.shape[0]} masks of {H}x{W} in {time.perf_counter() - t0:.1f} s")

alive = np.arange(len(iou_pred))
counts = [("masks from the decoder", len(alive))]
alive = alive[iou_pred[alive] > settings["pred_iou_thresh"]]
counts.append((f"predicted IoU > {settings['pred_iou_thresh']}", len(alive)))
stability = amg.calculate_stability_score(logits[alive], 0.0, settings["stability_score_offset"])  # [n]
alive = alive[stability >= settings["stability_score_thresh"]]
counts.append((f"stability >= {settings['stability_score_thresh']}", len(alive)))
masks = logits[alive] > 0  # [n, H, W]
boxes = amg.batched_mask_to_box(masks)  # [n, 4] inclusive XYXY
near = amg.is_box_near_crop_edge(boxes, [0, 0, W, H], [0, 0, W, H])  # the whole image is the crop: none
alive, masks, boxes = alive[~near], masks[~near], boxes[~near]
counts.append(("not at a crop edge", len(alive)))
keep = amg.box_nms(boxes, iou_pred[alive], 0.7)  # indexes, best predicted IoU first
counts.append(("box NMS at IoU 0.7", len(keep)))
for (what, n), (_, before) in zip(counts, [counts[0]] + counts[:-1]):
    print(f"  {what:<28} {n:4d} masks  (removed {before - n})")

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
before = np.zeros((H, W, 3))
rng = np.random.default_rng(0)
for m in logits[:48] > 0:  # the first 16 points' raw masks
    before[m] = 0.6 * before[m] + 0.4 * rng.random(3)
after = np.zeros((H, W, 3))
for m in masks[keep]:
    after[m] = 0.6 * after[m] + 0.4 * rng.random(3)
axes[0].imshow(before)
axes[0].set_title("raw masks (first 16 points)")
axes[1].imshow(after)
axes[1].set_title(f"after the filters and NMS: {len(keep)}")
for a in axes:
    a.axis("off")
_lesson.save(fig, args, "filters.png")

# --- 3. The generator, with one crop layer ----------------------------------------------
# crop_n_layers=1 adds 2x2 overlapping crops, each re-encoded and prompted with a grid of
# n / crop_n_points_downscale_factor points per side. Masks touching a crop's inner border
# are dropped (they are cut objects); NMS across crops prefers the smaller crops.
crops, layers = amg.generate_crop_boxes((H, W), 1, 512 / 1500)
print("crop boxes (XYXY):", crops)
gen = SamAutomaticMaskGenerator(sam, points_per_side=n_side, crop_n_layers=1, crop_n_points_downscale_factor=2,
                                min_mask_region_area=20, progress=False, **settings)
t0 = time.perf_counter()
records = gen.generate(image)
print(f"generator: {len(records)} masks in {time.perf_counter() - t0:.1f} s; "
      f"keys {sorted(records[0]) if records else []}")
for r in records[:3]:
    print(f"  area {r['area']}, bbox {r['bbox']}, predicted_iou {r['predicted_iou']:.3f}, "
          f"stability {r['stability_score']:.3f}, crop {r['crop_box']}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].imshow(image)
for (x0, y0, x1, y1), layer in zip(crops, layers):
    axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2,
                                    color="white" if layer == 0 else "orange"))
axes[0].set_title("crop boxes (layer 0 white, layer 1 orange)")
axes[1].imshow(image)
layer_rgba = np.zeros((H, W, 4))
for r in sorted(records, key=lambda r: -r["area"]):  # show_anns: largest first
    layer_rgba[r["segmentation"]] = np.concatenate([rng.random(3), [0.35]])
axes[1].imshow(layer_rgba)
axes[1].set_title(f"final: {len(records)} masks")
for a in axes:
    a.axis("off")
_lesson.save(fig, args, "overlay.png")
