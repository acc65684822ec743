# %% [markdown]
# # Lesson 17: the paper's zero-shot results, and what each experiment tests
#
# Deck: "Discussion: results". Paper: Kirillov et al. 2023 (arXiv 2304.02643), section 7
# ("Zero-Shot Transfer Experiments"), tables 3-5, figures 9 and 11, appendix D. Every number in
# the table below is the paper's, with its table or section; none is measured here.
#
# Section 7 evaluates SAM on "datasets and tasks that were not seen during training (our usage
# of 'zero-shot transfer' follows its usage in CLIP)", with the same model (an MAE ViT-H
# trained on SA-1B) and only prompt engineering. The experiments climb from low-level to
# high-level vision:
#
# - **7.1, single point -> valid mask** (the task SAM was trained for, on new image
#   distributions): 23 datasets (egocentric, microscopy, X-ray, underwater, aerial, painting,
#   driving, ...), one point at the "center" of each ground-truth mask (the maximum of its
#   distance transform), SAM's most confident mask against RITM, the strongest interactive
#   segmenter at one point. It tests *validity from an ambiguous prompt*. Because a point can
#   mean several objects and the ground truth lists one, the paper also reports an "oracle"
#   (the best of SAM's 3 masks) and a human study rating masks from 1 to 10.
# - **7.2, edge detection** on BSDS500 (low level): a 16 x 16 grid of points, 768 masks, NMS,
#   Sobel filtering of the unthresholded mask probabilities, pixel-wise max, edge NMS. It
#   tests whether mask boundaries, never trained as edges, make sensible edges.
# - **7.3, object proposals** on LVIS v1 (mid level): SAM's automatic mask pipeline, adapted
#   to output proposals (appendix D.3), scored by mask AR@1000. The baseline is a ViTDet-H
#   detector trained on LVIS; an ablation with a single output ("single out.") tests whether
#   the 3 outputs help.
# - **7.4, instance segmentation** on COCO and LVIS (high level): SAM prompted with ViTDet-H's
#   boxes (plus one refinement with its own mask). It tests *composition*. The AP is below the
#   fully supervised ViTDet-H, but annotators rate SAM's masks higher (figure 11; in that
#   study both models get LVIS's ground-truth boxes, appendix E), which the paper reads as
#   ViTDet learning the datasets' annotation biases.
# - **7.5, text-to-mask**: a proof of concept with CLIP embeddings, qualitative only (lesson 10).
#
# Then small **measured analogues on micro**, each on held-out synthetic scenes and each
# named for what it imitates, not for what it equals:
#
# 1. one point at each object's most interior pixel: the top-scored mask and the oracle (best
#    of 3), as in 7.1 (the gap is what ambiguity costs an automatic metric);
# 2. edges as in 7.2: a 16 x 16 grid, 3 masks a point, Sobel of each mask's probability map,
#    pixel-wise max, normalized; against a Sobel filter of the image itself. Scored by the
#    best F-measure over thresholds on all scenes (ODS-like), a predicted pixel counting as
#    right within 2 pixels of a true boundary (any part, object or group mask);
# 3. proposals as in 7.3: the same 768 unfiltered masks, average recall over IoU thresholds
#    0.5:0.05:0.95 against the objects, and the single-output ablation (256 masks, the same
#    grid). Both are printed and drawn; this one is not a claim, because on micro's scenes the
#    two come out close (the paper's gap, 59.3 against 54.9, is on LVIS with ViT-H);
# 4. boxes as in 7.4: each object's tight box (a perfect detector), then one refinement round
#    with the box and the predicted mask's logits (appendix D.4).
#
# Run:  python lessons/17_zero_shot_results.py --out out/17

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("17", "Lesson 17: the paper's zero-shot results, and what each experiment tests")

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.modeling.common import mask_iou  # noqa: E402
from minisam.training.interactive import mask_box  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402


# %% [markdown]
# ## 1. The paper's numbers

# %%
# Table 3 (section 7.2): zero-shot transfer to edge detection on BSDS500: ODS, OIS, AP, R50.
EDGES = {"HED (trained on BSDS500)": (.788, .808, .840, .923), "EDETR (trained)": (.840, .858, .896, .930),
         "Sobel filter": (.539, None, None, None), "Canny": (.600, .640, .580, None),
         "Felz-Hutt": (.610, .640, .560, None), "SAM (zero-shot)": (.768, .786, .794, .928)}
# Table 4 (section 7.3): object proposals on LVIS v1, mask AR@1000: all, small, medium, large,
# frequent, common, rare.
PROPOSALS = {"ViTDet-H (trained on LVIS)": (63.0, 51.7, 80.8, 87.0, 63.1, 63.3, 58.3),
             "SAM, single output": (54.9, 42.8, 76.7, 74.4, 54.7, 59.8, 62.0),
             "SAM": (59.3, 45.5, 81.6, 86.9, 59.1, 63.9, 65.8)}
# Table 5 (section 7.4): instance segmentation, mask AP (AP, APS, APM, APL) on COCO and LVIS v1.
INSTANCES = {"ViTDet-H": {"COCO": (51.0, 32.0, 54.3, 68.9), "LVIS v1": (46.6, 35.0, 58.0, 66.3)},
             "SAM (ViTDet-H boxes)": {"COCO": (46.5, 30.8, 51.0, 61.7), "LVIS v1": (44.7, 32.5, 57.6, 65.5)}}
# Figure 11 (section 7.4): mean mask quality rating (1-10) in the paper's human study on LVIS v1,
# both models prompted with LVIS ground-truth boxes (appendix E).
RATINGS = {"LVIS ground truth": 8.6, "SAM": 8.1, "ViTDet-H": 7.9, "COCO ground truth": 7.6}
# Section 7.1 (figure 9a): SAM beats RITM at one center point on 16 of the 23 datasets, "by as
# much as ~47 IoU"; with the oracle on all 23; mean human ratings of SAM's masks between 7 and
# 9 (figure 9b, on the 7 datasets of the human study, appendix E).
SINGLE_POINT = {"datasets": 23, "SAM above RITM": 16, "oracle above RITM": 23, "largest gain (IoU)": 47}

coco_gap = INSTANCES["ViTDet-H"]["COCO"][0] - INSTANCES["SAM (ViTDet-H boxes)"]["COCO"][0]
lvis_gap = INSTANCES["ViTDet-H"]["LVIS v1"][0] - INSTANCES["SAM (ViTDet-H boxes)"]["LVIS v1"][0]
better = [c for c, sam_v, det in zip(("all", "small", "medium", "large", "frequent", "common", "rare"),
                                     PROPOSALS["SAM"], PROPOSALS["ViTDet-H (trained on LVIS)"]) if sam_v > det]
print(f"paper, section 7.1: SAM above RITM on {SINGLE_POINT['SAM above RITM']} of {SINGLE_POINT['datasets']} datasets at one point")
# What the quoted numbers say (read from the tables above, not measured here, so not claims):
print(f"paper, table 5: SAM's mask AP gap to ViTDet-H is {coco_gap:.1f} on COCO and {lvis_gap:.1f} on LVIS; "
      f"figure 11: annotators rate SAM's masks {RATINGS['SAM']} against ViTDet-H's {RATINGS['ViTDet-H']}")
print(f"paper, table 3: SAM's R50 {EDGES['SAM (zero-shot)'][3]} is above HED's {EDGES['HED (trained on BSDS500)'][3]}, "
      f"its ODS {EDGES['SAM (zero-shot)'][0]} below HED's {EDGES['HED (trained on BSDS500)'][0]}")
print(f"paper, table 4: SAM's AR@1000 is above ViTDet-H's on {', '.join(better)} objects; large: "
      f"{PROPOSALS['SAM'][3]} against {PROPOSALS['ViTDet-H (trained on LVIS)'][3]}")


# %% [markdown]
# ## 2. The analogues on micro
#
# The numbers above are quoted, so the lesson checks none of them; it checks only what it
# measures on micro below. (One reading note: the paper's text says SAM outperforms ViTDet-H
# "on medium and large objects"; its table 4 has 86.9 against 87.0 on large ones.)

# %%
sam = _lesson.load_model(args)
S = sam.config.img_size
predictor = SamPredictor(sam)
N_SCENES, GRID_SIDE, TOLERANCE = 6, 16, 2
side = (np.arange(GRID_SIDE) + 0.5) * S / GRID_SIDE
grid = np.stack(np.meshgrid(side, side), axis=-1).reshape(-1, 1, 2)                  # [256, 1, 2] (x, y)


def sobel(maps):   # [..., H, W] -> [..., H, W] gradient magnitude (zero on the border)
    p = np.pad(maps, [(0, 0)] * (maps.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    gx = (p[..., :-2, 2:] + 2 * p[..., 1:-1, 2:] + p[..., 2:, 2:]) - (p[..., :-2, :-2] + 2 * p[..., 1:-1, :-2] + p[..., 2:, :-2])
    gy = (p[..., 2:, :-2] + 2 * p[..., 2:, 1:-1] + p[..., 2:, 2:]) - (p[..., :-2, :-2] + 2 * p[..., :-2, 1:-1] + p[..., :-2, 2:])
    return np.hypot(gx, gy)


def dilate(m, r):   # [H, W] bool, square structuring element of radius r
    out = m.copy()
    for _ in range(r):
        grown = out.copy()
        grown[1:] |= out[:-1]; grown[:-1] |= out[1:]; grown[:, 1:] |= out[:, :-1]; grown[:, :-1] |= out[:, 1:]
        grown[1:, 1:] |= out[:-1, :-1]; grown[:-1, :-1] |= out[1:, 1:]; grown[1:, :-1] |= out[:-1, 1:]; grown[:-1, 1:] |= out[1:, :-1]
        out = grown
    return out


def boundaries(masks):   # the true edges: pixels of a mask with a 4-neighbour outside it, [H, W] bool
    edge = np.zeros(masks[0].shape, bool)
    for m in masks:
        inner = m.copy()
        inner[1:] &= m[:-1]; inner[:-1] &= m[1:]; inner[:, 1:] &= m[:, :-1]; inner[:, :-1] &= m[:, 1:]
        edge |= m & ~inner
    return edge


THRESHOLDS = np.linspace(0.05, 0.95, 19)


def edge_counts(strength, truth):
    """Per threshold: (predicted pixels near a true edge, predicted pixels, true edge pixels
    near a prediction, true edge pixels) -> [len(THRESHOLDS), 4]"""
    near_truth = dilate(truth, TOLERANCE)
    rows = []
    for t in THRESHOLDS:
        pred = strength > t
        rows.append([(pred & near_truth).sum(), pred.sum(), (truth & dilate(pred, TOLERANCE)).sum(), truth.sum()])
    return np.array(rows, np.float64)


def best_f(counts):   # counts summed over scenes [T, 4] -> the best F-measure over thresholds (ODS-like)
    precision = counts[:, 0] / np.maximum(counts[:, 1], 1)
    recall = counts[:, 2] / np.maximum(counts[:, 3], 1)
    return float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-9)))


def average_recall(proposals, objects):   # [P, H, W] bool, list of [H, W] -> AR over IoU 0.5:0.95
    flat = proposals.reshape(len(proposals), -1).astype(np.float32)                 # [P, HW]
    best = []
    for obj in objects:
        o = obj.ravel().astype(np.float32)                                          # [HW]
        inter = flat @ o
        union = flat.sum(axis=1) + o.sum() - inter
        best.append(float((inter / np.maximum(union, 1)).max()) if len(flat) else 0.0)
    best = np.array(best)
    return [float((best >= t).mean()) for t in np.arange(0.5, 0.951, 0.05)]


top, oracle, box_iou, refined_iou, recalls3, recalls1 = [], [], [], [], [], []
sam_counts, image_counts, shown = 0, 0, None
for k in range(N_SCENES):
    scene = make_scene(np.random.default_rng(2500 + k), S, min_area=60)
    objects = [scene.masks[i] for i in scene.objects]
    predictor.set_image(scene.image)
    # 7.1: one point per object at its most interior pixel
    points = np.stack([interior_point(m) - 0.5 for m in objects])[:, None]          # [N, 1, 2]
    masks, scores, _ = predictor.predict_batch(point_coords=points, point_labels=np.ones((len(objects), 1), int))
    for m, s, truth in zip(masks, scores, objects):                                  # m [3, S, S], s [3]
        ious = mask_iou(m, truth[None])                                              # [3]
        top.append(float(ious[int(np.argmax(s))]))
        oracle.append(float(ious.max()))
    # 7.4: boxes, then one refinement round with the box and the predicted logits
    boxes = np.stack([mask_box(m) for m in objects]).astype(np.float32)              # [N, 4]
    b_masks, _, b_low = predictor.predict_batch(boxes=boxes, multimask_output=False)  # [N, 1, S, S], [N, 1, M, M]
    r_masks, _, _ = predictor.predict_batch(boxes=boxes, mask_input=b_low, multimask_output=False)
    box_iou += [float(mask_iou(m[0], t)) for m, t in zip(b_masks, objects)]
    refined_iou += [float(mask_iou(m[0], t)) for m, t in zip(r_masks, objects)]
    # 7.2 and 7.3: the grid, 3 masks a point, unthresholded
    logits, _, _ = predictor.predict_batch(point_coords=grid, point_labels=np.ones((len(grid), 1), int),
                                           return_logits=True)                       # [256, 3, S, S]
    probabilities = 1 / (1 + np.exp(-logits.reshape(-1, S, S)))                      # [768, S, S]
    strength = sobel(probabilities).max(axis=0)                                      # [S, S] pixel-wise max
    strength /= max(strength.max(), 1e-9)                                            # normalized to [0, 1]
    grey = scene.image.astype(np.float64).mean(axis=-1)                              # [S, S]
    image_strength = sobel(grey)
    image_strength /= max(image_strength.max(), 1e-9)
    truth_edges = boundaries(scene.masks)
    sam_counts = sam_counts + edge_counts(strength, truth_edges)
    image_counts = image_counts + edge_counts(image_strength, truth_edges)
    recalls3.append(average_recall(logits.reshape(-1, S, S) > 0, objects))
    single, _, _ = predictor.predict_batch(point_coords=grid, point_labels=np.ones((len(grid), 1), int),
                                           multimask_output=False)                   # [256, 1, S, S]
    recalls1.append(average_recall(single[:, 0], objects))
    if shown is None:
        shown = (scene, strength, image_strength, truth_edges)
print(f"grid {grid.shape} -> logits {logits.shape} -> probability maps {probabilities.shape}; single output "
      f"{single.shape}")
f_sam, f_image = best_f(sam_counts), best_f(image_counts)
ar3, ar1 = float(np.mean(recalls3)), float(np.mean(recalls1))
measured = {"7.1 one point, top-scored": np.mean(top), "7.1 one point, oracle": np.mean(oracle),
            "7.2 edges: SAM masks (F)": f_sam, "7.2 edges: image Sobel (F)": f_image,
            "7.3 proposals, 3 outputs (AR)": ar3, "7.3 proposals, 1 output (AR)": ar1,
            "7.4 tight box": np.mean(box_iou), "7.4 box + refinement": np.mean(refined_iou)}
for name, value in measured.items():
    print(f"  {name:<32s} {value:.3f}")
print(f"({len(top)} objects in {N_SCENES} scenes)")
_lesson.claim(measured["7.1 one point, top-scored"] >= 0.6
              and measured["7.1 one point, oracle"] >= measured["7.1 one point, top-scored"] + 0.02,
              f"as in 7.1, one point gives a valid mask (top-scored IoU {np.mean(top):.2f}) and ambiguity costs the "
              f"automatic metric: the oracle reaches {np.mean(oracle):.2f}")
_lesson.claim(f_sam >= f_image + 0.1,
              f"as in 7.2, edges from masks beat a Sobel filter of the image: best F {f_sam:.2f} against "
              f"{f_image:.2f} (the image's textures make edges too)")
# 7.3's ablation (3 outputs against 1) is printed, not claimed: on these scenes micro's gap is
# small, and which way it goes is a property of the trained weights and the scenes.
print(f"7.3's ablation on micro (measured, not claimed): AR {ar3:.2f} with 3 outputs a point, {ar1:.2f} with one; "
      f"the paper's table 4: {PROPOSALS['SAM'][0]} against {PROPOSALS['SAM, single output'][0]} (AR@1000, LVIS v1)")
_lesson.claim(measured["7.4 tight box"] >= 0.6,
              f"as in 7.4, boxes become masks: mean IoU {np.mean(box_iou):.2f} from tight boxes "
              f"({np.mean(refined_iou):.2f} after one refinement round)")


# %% [markdown]
# ## 3. The figure: the paper's table, and micro's analogues

# %%
def fmt(v):
    return " - " if v is None else f"{v:.3f}".lstrip("0")


# The table is at most 78 characters wide, so that it fits the figure at a readable size.
lines = ["§7.1 one point -> valid mask, 23 datasets (fig. 9): SAM above RITM on 16 of 23",
         "     (by up to ~47 IoU), with the oracle (best of 3) on all 23; mean rating",
         "     7-9 of 10 on the 7 rated datasets",
         f"§7.2 edges, BSDS500 (table 3)   {'ODS':>5s} {'OIS':>5s} {'AP':>5s} {'R50':>5s}"]
lines += [f"     {name:<26s} {' '.join(f'{fmt(v):>5s}' for v in vals)}" for name, vals in EDGES.items()]
lines += ["§7.3 proposals, LVIS v1, mask AR@1000 (table 4)",
          f"     {'':<26s}" + "".join(f"{h:>6s}" for h in ("all", "small", "med", "large", "freq", "com", "rare"))]
lines += [f"     {name:<26s}" + "".join(f"{v:6.1f}" for v in vals) for name, vals in PROPOSALS.items()]
lines += [f"§7.4 instances, mask AP (table 5) {'COCO':>6s} {'LVIS v1':>8s}   rating (fig. 11)"]
lines += [f"     {name:<28s} {v['COCO'][0]:6.1f} {v['LVIS v1'][0]:8.1f}   "
          f"{RATINGS['SAM' if name.startswith('SAM') else 'ViTDet-H']:6.1f}" for name, v in INSTANCES.items()]
lines += ["§7.5 text-to-mask: qualitative only (fig. 12); see lesson 10"]
print("the paper's numbers, as in the figure:")
print("\n".join(lines))
ods_gap = EDGES["HED (trained on BSDS500)"][0] - EDGES["SAM (zero-shot)"][0]
ar_gap = PROPOSALS["ViTDet-H (trained on LVIS)"][0] - PROPOSALS["SAM"][0]

fig = plt.figure(figsize=(8.2, 8.8))
layout = fig.add_gridspec(2, 2, height_ratios=[0.75, 1.0])
ax = fig.add_subplot(layout[0, :])
ax.axis("off")
ax.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=10, va="top", linespacing=1.35)
ax.set_title(f"The paper (section 7, quoted): zero-shot SAM comes within {ods_gap:.3f} ODS of HED on edges,\n"
             f"{ar_gap:.1f} AR of ViTDet-H on proposals, {coco_gap:.1f} / {lvis_gap:.1f} AP of it on COCO / LVIS",
             fontsize=10.5, loc="left")
scene, strength, image_strength, truth_edges = shown
ax = fig.add_subplot(layout[1, 0])
im = ax.imshow(strength, cmap="magma", vmin=0, vmax=1)
ax.contour(truth_edges, levels=[0.5], colors="c", linewidths=0.6)
cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
cbar.set_label("edge strength (max Sobel of the\nmask probabilities, normalized)", fontsize=10)
ax.set_title(f"micro, as in 7.2: edges from {len(probabilities)}\nmasks, best F {f_sam:.2f} (image Sobel "
             f"{f_image:.2f});\ncyan: true boundaries", fontsize=10)
ax.axis("off")
ax = fig.add_subplot(layout[1, 1])
names = list(measured)
colours = ["tab:blue", "tab:blue", "tab:orange", "tab:gray", "tab:green", "tab:gray", "tab:purple", "tab:purple"]
ax.barh(range(len(names)), [measured[n] for n in names], color=colours)
for y, n in enumerate(names):
    ax.text(measured[n] + 0.01, y, f"{measured[n]:.2f}", va="center", fontsize=10)
ax.set_yticks(range(len(names)))
ax.set_yticklabels([n.replace(": ", ":\n", 1) if len(n) > 24 else n for n in names], fontsize=10)
ax.invert_yaxis()
ax.set_xlim(0, 1.12)
ax.set_xlabel("IoU (7.1, 7.4), best F (7.2),\naverage recall (7.3)", fontsize=10)
ax.tick_params(labelsize=10)
ax.set_title(f"micro's analogues ({len(top)} objects, {N_SCENES} scenes):\none point {np.mean(top):.2f}, "
             f"oracle {np.mean(oracle):.2f}, tight box {np.mean(box_iou):.2f}", fontsize=10)
fig.tight_layout()
_lesson.save(fig, args, "17_zero_shot_results.png")
plt.close(fig)
