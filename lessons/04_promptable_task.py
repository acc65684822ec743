# %% [markdown]
# # Lesson 04: why a promptable task: one pre-trained model, many tasks, chosen by the prompt
#
# Deck: "Promptable segmentation task", "Why promptable segmentation?", "From promptable task
# to zero-shot transfer", "Relation to existing tasks". Paper: Kirillov et al. 2023, section 2
# (task, pre-training, zero-shot transfer, related tasks, discussion) and section 8
# ("Foundation models", "Compositionality").
#
# **The analogy with language models** (section 2: "We take inspiration from NLP, where the
# next token prediction task is used for foundation model pre-training and to solve diverse
# downstream tasks via prompt engineering"):
#
# | | language model | SAM |
# |---|---|---|
# | input | a text prompt | an image and a prompt: points, a box, a mask (text, as a proof of concept) |
# | output | a coherent continuation | a *valid* mask: reasonable for at least one object the prompt could mean |
# | pre-training task | predict the next token, on web text | promptable segmentation: a sequence of simulated prompts per mask, on SA-1B |
# | a new task at inference | write a prompt, no fine-tuning | design a prompt, or compose SAM with another model |
#
# The pre-training task is *general*: predicting the next token covers translation, summaries
# and answers at once; answering "which mask does this prompt mean?" covers interactive
# clicking, boxes from a detector, refining a rough mask and segmenting everything. The
# "valid" requirement matters: an ambiguous prompt still gets a sensible answer, as a language
# model answers an ambiguous question coherently (lesson 13).
#
# A **foundation model** is one "trained on broad data at scale and are adaptable to a wide
# range of downstream tasks" (section 8, quoting Bommasani et al. 2021). The paper's bet is
# that a promptable model is adaptable by *composition*: "a model trained for promptable
# segmentation can perform a new, different task at inference time by acting as a component
# in a larger system" (section 2): an object detector's boxes as prompts give instance
# segmentation, a user's clicks give interactive segmentation, a grid of points gives every
# object, gaze points from a wearable device give what the wearer looks at (section 8).
# Unlike a multi-task model, the set of tasks is not fixed at training time.
#
# Below, one model (``micro`` by default) and one set of images; only the prompt changes.
#
# 1. **one click** (interactive segmentation): a point at the object's most interior pixel,
#    three masks, the top-scored one kept;
# 2. **a box** (composition with a detector): the object's tight box, standing in for a
#    perfect detector's output, single-mask output;
# 3. **three clicks**: the first click, then twice a click at the most interior pixel of the
#    larger error (positive in a missed region, negative in a wrongly taken one), with the
#    previous low-res logits as the mask prompt. The click follows the paper's evaluation
#    (appendix D.1 "Point sampling": the point farthest from the boundary of the error region;
#    choosing the larger of the two regions is this lesson's), the mask prompt its training
#    (appendix A "Training algorithm", which samples its points uniformly in the error region);
# 4. **a mask alone**: the one-click prediction's low-res logits fed back as the only prompt,
#    with no point. This is the edge of the task: in training (appendix A; minisam's
#    ``minisam/training/interactive.py``), the two rounds without a new point supply "no new
#    external information"; as minisam reads it, they keep the earlier points and box *with*
#    the mask, so a mask with no point at all is a prompt the model was never trained on.
#    The prompt chooses among the tasks that pre-training covered; the check below measures
#    what happens outside them;
# 5. **everything**: the automatic mask generator's grid of points (lesson 19), scored by how
#    many objects it finds at IoU >= 0.5 (on the first few scenes: it is the slow one).
#
# Run:  python lessons/04_promptable_task.py --out out/04

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("04", "Lesson 04: why a promptable task: one pre-trained model, many tasks, chosen "
                                "by the prompt")

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamAutomaticMaskGenerator, SamPredictor  # noqa: E402
from minisam.cli.drawing import show_box, show_mask, show_points  # noqa: E402
from minisam.modeling.common import mask_iou  # noqa: E402
from minisam.training.interactive import error_regions, mask_box  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402

sam = _lesson.load_model(args)
S = sam.config.img_size
N_SCENES, N_AUTO, MIN_AREA, GRID_SIDE = 8, 4, 60, 16
predictor = SamPredictor(sam)
generator = SamAutomaticMaskGenerator(sam, points_per_side=GRID_SIDE)
print(f"automatic generator: {GRID_SIDE}x{GRID_SIDE} grid, pred_iou_thresh {generator.pred_iou_thresh}, "
      f"stability_score_thresh {generator.stability_score_thresh}")


def iou(a, b):  # [H, W] bool x2 -> float
    return float(mask_iou(a, b))


def correction(mask, truth):
    """The next click of the evaluation protocol: the most interior pixel of the larger error
    region, positive (1) where the object was missed, negative (0) where background was taken."""
    missed, taken = error_regions(mask, truth)                                   # [H, W] bool each
    region, label = (missed, 1) if missed.sum() >= taken.sum() else (taken, 0)
    return interior_point(region) - 0.5, label                                   # [2] (x, y), int


# %% [markdown]
# ## 1. Five tasks, one model, only the prompt changes

# %%
scenes = [make_scene(np.random.default_rng(2200 + k), S, min_area=MIN_AREA) for k in range(N_SCENES)]
results = {name: [] for name in ("one click", "box", "three clicks", "mask alone")}
found, n_auto_masks, example, auto_anns = [], [], None, {}
for scene in scenes:
    predictor.set_image(scene.image)
    for i in scene.objects:
        truth = scene.masks[i]                                                   # [S, S] bool
        point = interior_point(truth) - 0.5                                      # [2]
        masks, scores, low_res = predictor.predict(point_coords=point[None], point_labels=np.array([1]))
        k = int(np.argmax(scores))
        click_mask, click_logits = masks[k], low_res[k][None]                    # [S, S], [1, M, M]
        results["one click"].append(iou(click_mask, truth))
        box = mask_box(truth).astype(np.float32)                                 # [4] x0, y0, x1, y1
        box_mask = predictor.predict(box=box, multimask_output=False)[0][0]      # [S, S]
        results["box"].append(iou(box_mask, truth))
        points, labels, mask, logits = [point], [1], click_mask, click_logits
        for _ in range(2):                                                       # clicks 2 and 3
            if mask_iou(mask, truth) == 1:
                break
            p, lab = correction(mask, truth)
            points.append(p)
            labels.append(lab)
            out, _, low = predictor.predict(point_coords=np.stack(points), point_labels=np.array(labels),
                                            mask_input=logits, multimask_output=False)
            mask, logits = out[0], low                                           # [S, S], [1, M, M]
        results["three clicks"].append(iou(mask, truth))
        only_mask = predictor.predict(mask_input=click_logits, multimask_output=False)[0][0]   # [S, S]
        results["mask alone"].append(iou(only_mask, truth))
        # The object drawn below: the largest one (no parts in its scene) where the clicks helped.
        helped = iou(mask, truth) >= iou(click_mask, truth) + 0.05
        better = example is None or (helped and ("fallback" in example or truth.sum() > example["truth"].sum()))
        if better and scene.levels.count("part") == 0:
            example = dict(scene=scene, truth=truth, point=point, click=click_mask, box=box, box_mask=box_mask,
                           points=np.stack(points), labels=np.array(labels), clicks=mask)
            if not helped:
                example["fallback"] = True                                       # replaced if one helps
    if len(n_auto_masks) < N_AUTO:
        anns = generator.generate(scene.image)
        auto_anns[id(scene)] = anns
        n_auto_masks.append(len(anns))
        for i in scene.objects:
            found.append(max([iou(a["segmentation"], scene.masks[i]) for a in anns] or [0.0]) >= 0.5)
mean = {name: float(np.mean(v)) for name, v in results.items()}
recall = float(np.mean(found))
n_objects = len(results["box"])
print(f"{n_objects} objects in {N_SCENES} scenes; last prompt shapes: points {np.stack(points).shape}, "
      f"mask prompt {click_logits.shape}, box {box.shape}")
for name, value in mean.items():
    print(f"  {name:<13s} mean IoU {value:.3f}")
print(f"  everything    {np.mean(n_auto_masks):.1f} masks a scene; {recall:.0%} of the {len(found)} objects of the "
      f"first {N_AUTO} scenes found at IoU >= 0.5")
gain = mean["three clicks"] - mean["one click"]
_lesson.claim(mean["one click"] >= 0.6 and mean["box"] >= 0.6,
              f"interactive and detector-composed segmentation from the same model: one click gives mean IoU "
              f"{mean['one click']:.2f}, a box {mean['box']:.2f} ({n_objects} objects)")
_lesson.claim(gain >= 0.02,
              f"more prompts, better masks: three clicks bring the mean IoU from {mean['one click']:.2f} to "
              f"{mean['three clicks']:.2f}")
_lesson.claim(recall >= 0.6,
              f"a grid of points segments everything: the automatic generator finds {recall:.0%} of the "
              f"{len(found)} objects at IoU >= 0.5 ({np.mean(n_auto_masks):.1f} masks a scene)")
_lesson.claim(mean["mask alone"] <= mean["one click"] - 0.3,
              f"a prompt outside pre-training does not carry the task: the click's own mask fed back alone gives "
              f"mean IoU {mean['mask alone']:.2f}, against {mean['one click']:.2f} for the click that made it")


# %% [markdown]
# ## 2. The figure
#
# Top left: the largest object where the two correction clicks helped (the bars give the mean
# over all objects, where the gain is smaller). The low "mask alone" bar is the last check above.

# %%
ex = example
anns = auto_anns.get(id(ex["scene"])) or generator.generate(ex["scene"].image)   # the example scene's masks
fig, axes = plt.subplots(2, 2, figsize=(9.2, 9.0))
image = ex["scene"].image
ax = axes[0, 0]
ax.imshow(image)
show_mask(ex["clicks"], ax)
ax.contour(ex["truth"], levels=[0.5], colors="w", linewidths=1.2, linestyles="--")
show_points(ex["points"], ex["labels"], ax)
ax.set_title(f"clicks (interactive): one click IoU {iou(ex['click'], ex['truth']):.2f},\n"
             f"after the corrections (shown) {iou(ex['clicks'], ex['truth']):.2f}; dashed: object", fontsize=10)
ax = axes[0, 1]
ax.imshow(image)
show_mask(ex["box_mask"], ax, color=np.array([1.0, 0.55, 0.0, 0.6]))
show_box(ex["box"], ax)
ax.set_title(f"a box, as a detector would give it:\nIoU {iou(ex['box_mask'], ex['truth']):.2f}", fontsize=10)
ax = axes[1, 0]
ax.imshow(image)
rng = np.random.default_rng(0)
for a in sorted(anns, key=lambda a: -a["area"]):
    show_mask(a["segmentation"], ax, color=np.r_[rng.random(3), 0.5])
grid = (np.arange(GRID_SIDE) + 0.5) * S / GRID_SIDE
ax.scatter(*np.meshgrid(grid, grid), s=2, c="w")
ax.set_title(f"a {GRID_SIDE}x{GRID_SIDE} grid of points: everything\n"
             f"({len(anns)} masks in this scene)", fontsize=10)
for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
    ax.axis("off")
ax = axes[1, 1]
names = ["one click", "box", "three clicks", "mask alone"]
values = [mean[n] for n in names] + [recall]
bars = ax.bar(range(5), values, color=["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:gray"])
for x, v in enumerate(values):
    ax.text(x, v + 0.02, f"{v:.2f}", ha="center", fontsize=10)
ax.set_xticks(range(5))
ax.set_xticklabels(["one\nclick", "box", "three\nclicks", "mask\nalone\n(untrained\nprompt)", "grid\n(recall)"], fontsize=10)
ax.set_ylim(0, 1.1)
ax.set_ylabel("mean IoU with the object (recall: found\nat IoU >= 0.5)", fontsize=10)
ax.tick_params(labelsize=10)
ax.set_title(f"one model, five prompts ({n_objects} objects; recall:\n{len(found)} objects of {N_AUTO} scenes)", fontsize=10)
fig.suptitle("The task is chosen by the prompt, not by retraining", fontsize=11.5)
fig.tight_layout()
_lesson.save(fig, args, "04_promptable_task.png")
plt.close(fig)
