# %% [markdown]
# # Lesson 01: segmentation, the promptable task, and SAM's three parts as data flows through them
#
# Deck: "Background knowledge" (segmentation kinds, encoder-decoder models), "Promptable
# segmentation task" and "Model architecture". Paper: Kirillov et al. 2023, sections 2 and 3.
#
# Segmentation partitions an image, pixel by pixel, into regions. Three kinds:
# - semantic: every pixel gets a *class* (all ellipses are "ellipse"), instances are merged;
# - instance: every *object* gets its own mask, the background is ignored;
# - panoptic: both at once: "stuff" (here the background) by class, "things" by instance.
#
# SAM solves none of these directly. Its task is *promptable* segmentation: given an image
# and a prompt (points, a box, a rough mask) return a valid mask for what the prompt points
# at. "Valid" matters: one click on a shape inside a shape can mean the inner shape, the
# whole shape, or a group of shapes. SAM answers with three masks and a score for each.
#
# The model has three parts in two branches (figure 4 of the paper) that meet only in the decoder:
# - the image branch: image -> image encoder (a ViT and a neck) -> image embedding [1, C, G, G].
#   It is the heavy part, and it depends on the image alone: ``SamPredictor.set_image`` runs it
#   once per image and keeps the embedding for every prompt that follows;
# - the prompt branch: points, a box and/or a mask -> prompt encoder -> sparse embeddings (one
#   token per point or box corner, [1, Np, C]) and a dense embedding (the mask prompt, or a
#   learned "no mask" vector, [1, C, G, G]);
# - the mask decoder takes both: it adds the dense embedding to the image embedding, lets the
#   prompt tokens and the image tokens attend to each other, and outputs three masks (low-res
#   logits [1, 3, 4G, 4G]) and an IoU score for each ([1, 3]). It is light, so each new
#   prompt costs a fraction of the encoder run: that is why the model is split this way.
# Below, a synthetic scene goes through both branches, with every shape printed, and the
# encoder run and one prompt's decoder run are timed.
#
# Run:  python lessons/01_segmentation_and_the_promptable_task.py --out out/01

# %%
import time

import numpy as np

import _lesson

args = _lesson.parse_args("01", "Lesson 01: segmentation, the promptable task, and SAM's three parts as "
                                "data flows through them")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402


# %% [markdown]
# ## 1. A scene with ground truth at three levels: parts, objects, groups

# %%
sam = _lesson.load_model(args)
S = sam.config.img_size
scene = make_scene(np.random.default_rng(11), S)
print("image", scene.image.shape, scene.image.dtype, "| masks:",
      ", ".join(f"{k}/{l}" for k, l in zip(scene.kinds, scene.levels)))

# Semantic map: one class id per shape kind (the background is class 0).
classes = ["background", "ellipse", "polygon", "star", "rect", "ring"]
semantic = np.zeros((S, S), np.int64)                       # [S, S] class ids
instance = np.zeros((S, S), np.int64)                       # [S, S] instance ids (0 = none)
for n, i in enumerate(scene.objects, start=1):
    semantic[scene.masks[i]] = classes.index(scene.kinds[i])
    instance[scene.masks[i]] = n
# Panoptic: (class, instance) per pixel; the background is "stuff" with no instance.
panoptic = semantic * 1000 + instance                       # [S, S]
print("semantic classes present:", sorted({classes[c] for c in np.unique(semantic)}))
print("instances:", int(instance.max()), "| panoptic segments:", len(np.unique(panoptic)))
_lesson.claim(len(np.unique(semantic[instance > 0])) <= int(instance.max()),
              "semantic segmentation merges instances: no more object classes than objects")
_lesson.claim(len(np.unique(panoptic)) == int(instance.max()) + int((instance == 0).any()),
              "panoptic = one segment per object (things) + the background as one class (stuff)")

fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
axes[0].imshow(scene.image); axes[0].set_title("image")
axes[1].imshow(semantic, cmap="tab10", vmin=0, vmax=9); axes[1].set_title("semantic: a class per pixel")
axes[2].imshow(np.where(instance > 0, instance, np.nan), cmap="tab20"); axes[2].set_title("instance: a mask per object")
axes[3].imshow(semantic, cmap="tab10", vmin=0, vmax=9, alpha=0.5)
axes[3].imshow(np.where(instance > 0, instance, np.nan), cmap="tab20", alpha=0.7)
axes[3].set_title("panoptic: stuff by class + things by instance")
for ax in axes:
    ax.axis("off")
_lesson.save(fig, args, "segmentation_kinds.png")


# %% [markdown]
# ## 2. The promptable task: one point, several valid masks
#
# Pick the point inside a part if the scene has one (the ambiguous case), else an object.

# %%
part = next((i for i, l in enumerate(scene.levels) if l == "part"), scene.objects[0])
point = interior_point(scene.masks[part]) - 0.5             # [2] (x, y) pixel index
valid = [i for i, m in enumerate(scene.masks) if m[int(point[1]), int(point[0])]]
print("point", point.tolist(), "lies in", len(valid), "true masks:",
      [f"{scene.kinds[i]}/{scene.levels[i]}" for i in valid])

predictor = SamPredictor(sam)
predictor.set_image(scene.image)
masks, scores, low_res = predictor.predict(point_coords=point[None], point_labels=np.array([1]))
print("predict ->", "masks", masks.shape, masks.dtype, "| scores", scores.shape, np.round(scores, 3),
      "| low-res logits", low_res.shape)
_lesson.claim(masks.shape[0] == 3 and scores.shape == (3,), "SAM answers with three masks and a score for each")
if scene.levels[part] == "part":
    _lesson.claim(len(valid) >= 2, "a click on a shape inside a shape lies in more than one valid mask")

fig, axes = plt.subplots(1, 1 + len(valid) + 3, figsize=(3.2 * (4 + len(valid)), 3.4))
axes[0].imshow(scene.image); axes[0].plot(*point, "g*", ms=14, mec="w"); axes[0].set_title("the prompt")
for ax, i in zip(axes[1:], valid):
    ax.imshow(scene.masks[i], cmap="gray"); ax.set_title(f"valid: {scene.levels[i]}")
for k, ax in enumerate(axes[1 + len(valid):]):
    iou = max(((masks[k] & scene.masks[i]).sum() / max((masks[k] | scene.masks[i]).sum(), 1)) for i in valid)
    ax.imshow(masks[k], cmap="gray"); ax.set_title(f"SAM mask {k}: score {scores[k]:.2f}\nbest IoU {iou:.2f}")
for ax in axes:
    ax.axis("off")
_lesson.save(fig, args, "promptable_task.png")


# %% [markdown]
# ## 3. Two branches that meet in the decoder, with the shape of every stage
#
# The image branch, run by hand with a trace so the inner stages can be shown.

# %%
x = sam.preprocess(predictor.transform.apply_image(scene.image).transpose(2, 0, 1)[None])  # [1, 3, S, S]
trace = {}
embedding = sam.image_encoder(x, trace=trace)              # [1, C, G, G]
# The prompt branch: it never sees the image, only the prompt (here one point, no box, no mask).
coords = predictor.transform.apply_coords(point[None], scene.image.shape[:2])[None].astype(np.float32)  # [1, 1, 2]
sparse, dense = sam.prompt_encoder(points=(coords, np.array([[1]])))   # [1, Np+1, C], [1, C, G, G]
pe = sam.get_dense_pe()                                     # [1, C, G, G] positional encoding of the grid
# Where the branches meet: the decoder adds `dense` to `embedding` and decodes against `sparse`.
low, iou = sam.mask_decoder(embedding, pe, sparse, dense, multimask_output=True)  # [1, 3, 4G, 4G], [1, 3]
full = sam.postprocess_masks(low, predictor.input_size, predictor.original_size)  # [1, 3, H, W]
c = sam.config
G = c.image_embedding_size
patches = trace["image_encoder.patch_embed"]                # [1, G, G, D]
stages = [
    ("image (uint8)", scene.image.shape),
    ("preprocess: resize, normalize, pad", x.shape),
    (f"patch embedding (conv {c.patch_size}x{c.patch_size} / {c.patch_size})", patches.shape),
    (f"{c.encoder_depth} ViT blocks (windowed + global attention)",
     trace[f"image_encoder.blocks.{c.encoder_depth - 1}"].shape),
    ("neck -> image embedding", embedding.shape),
    ("prompt: point coordinates (model frame)", coords.shape),
    ("prompt encoder: sparse tokens (point + pad)", sparse.shape),
    ("prompt encoder: dense (no mask)", dense.shape),
    ("dense positional encoding", pe.shape),
    ("mask decoder: low-res mask logits", low.shape),
    ("mask decoder: IoU scores", iou.shape),
    ("postprocess: logits at image size", full.shape),
]
for name, shape in stages:
    print(f"  {name:<48s} {tuple(shape)}")
_lesson.claim(np.array_equal(embedding, predictor.features),
              "the image encoder runs once per image: the predictor's embedding is this one, bit for bit")
_lesson.claim(embedding.shape == (1, c.prompt_embed_dim, G, G) and low.shape == (1, 3, 4 * G, 4 * G)
              and full.shape[-2:] == scene.image.shape[:2],
              "embedding [1, C, G, G]; low-res logits at 4G; masks back at the image size")


# %% [markdown]
# ## 4. Why split the model: one encoder run per image, then cheap prompts
#
# The predictor runs the encoder in set_image and never again for the prompts that follow:
# count the encoder calls over one image and three prompts.

# %%
encoder_calls = []
run_encoder = sam.image_encoder
sam.image_encoder = lambda *a, **k: encoder_calls.append(1) or run_encoder(*a, **k)
predictor.set_image(scene.image)
for _ in range(3):
    predictor.predict(point_coords=point[None], point_labels=np.array([1]))
sam.image_encoder = run_encoder
_lesson.claim(len(encoder_calls) == 1,
              f"one image and three prompts ran the image encoder {len(encoder_calls)} time(s)")
# What the split saves, timed on the machine running this lesson (printed and drawn, not
# asserted: wall-clock times depend on the machine and its load). Each repeat times a fresh
# set_image, then the first prompt after it, which also pays for the decoder's once-per-image
# preparation, so the decoder time is, if anything, overstated.
encoder_s, decoder_s = [], []
for _ in range(5):
    t0 = time.perf_counter()
    predictor.set_image(scene.image)
    t1 = time.perf_counter()
    predictor.predict(point_coords=point[None], point_labels=np.array([1]))
    t2 = time.perf_counter()
    encoder_s.append(t1 - t0)
    decoder_s.append(t2 - t1)
encoder_ms, decoder_ms = 1e3 * np.median(encoder_s), 1e3 * np.median(decoder_s)
print(f"measured, median of {len(encoder_s)}: set_image (image encoder) {encoder_ms:.1f} ms, "
      f"predict (prompt encoder + mask decoder) {decoder_ms:.1f} ms, ratio {encoder_ms / decoder_ms:.1f}x")

def box(ax, x0, y0, width, height, colour, title, body):
    """A stage of the model: a coloured box with a bold title line and its details below."""
    ax.add_patch(FancyBboxPatch((x0, y0), width, height, boxstyle="round,pad=0.05", fc=colour, ec="k"))
    ax.text(x0 + width / 2, y0 + height - 0.12, title, ha="center", va="top", fontsize=12, weight="bold")
    ax.text(x0 + width / 2, y0 + height - 0.45, body, ha="center", va="top", fontsize=10.5, linespacing=1.4)


def arrow(ax, start, end, label, dx=0.12):
    """A tensor passed between stages, labelled with its shape to the right of the arrow."""
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="-|>", lw=1.8, color="k", mutation_scale=18))
    ax.text(start[0] + dx, (start[1] + end[1]) / 2, label, ha="left", va="center", fontsize=10.5)


def dims(shape):
    return "[" + ", ".join(str(n) for n in shape) + "]"


windowed = sum(c.block_window_size(i) > 0 for i in range(c.encoder_depth))
M = c.mask_input_size
fig, ax = plt.subplots(figsize=(9.6, 8.4))
ax.set_xlim(0, 9.6); ax.set_ylim(-0.3, 8.4); ax.axis("off")
# image branch (left)
box(ax, 0.2, 7.0, 3.8, 1.1, "#dddddd", "image", f"{dims(scene.image.shape)} uint8 (any H x W)")
arrow(ax, (1.2, 6.95), (1.2, 6.1), f"resize, normalize, pad\n{dims(x.shape)}")
box(ax, 0.2, 4.3, 3.8, 1.75, "#9ecae1", "image encoder",
    f"ViT, {c.encoder_depth} blocks, D={c.encoder_embed_dim}\n({windowed} windowed, "
    f"{c.encoder_depth - windowed} global) + neck\nset_image: {encoder_ms:.0f} ms, once per image")
arrow(ax, (1.2, 4.25), (1.2, 3.05), f"image embedding {dims(embedding.shape)}\ncomputed once,\n"
      "reused for every prompt")
# prompt branch (right)
box(ax, 4.6, 7.0, 4.8, 1.1, "#dddddd", "prompts",
    f"points {dims(coords.shape)} + labels {dims(coords.shape[:2])}, box [1, 4],\nmask [1, 1, {M}, {M}] (any of them)")
arrow(ax, (5.2, 6.95), (5.2, 6.1), "")
box(ax, 4.6, 4.3, 4.8, 1.75, "#fdd0a2", "prompt encoder",
    "runs for every prompt: points, box corners\n-> tokens (Fourier PE + learned type vectors);\n"
    "mask -> convs (no mask: a learned vector)")
arrow(ax, (5.0, 4.25), (5.0, 3.05), f"sparse\n{dims(sparse.shape)}", dx=0.08)
arrow(ax, (6.5, 4.25), (6.5, 3.05), f"dense\n{dims(dense.shape)}", dx=0.08)
arrow(ax, (8.0, 4.25), (8.0, 3.05), f"grid PE\n{dims(pe.shape)}", dx=0.08)
# where they meet
box(ax, 0.2, 1.3, 9.2, 1.7, "#a1d99b", "mask decoder",
    "image embedding + dense; two-way transformer: prompt tokens <-> image tokens;\n"
    "4x upscaling; 3 mask tokens -> 3 masks (hypernetworks); IoU head -> 3 scores\n"
    f"predict (prompt encoder + decoder): {decoder_ms:.1f} ms per prompt")
arrow(ax, (1.2, 1.25), (1.2, 0.95), "")
box(ax, 0.2, -0.2, 9.2, 1.1, "#dddddd", "outputs",
    f"3 masks {dims(low.shape)} (low-res logits) + IoU scores {dims(iou.shape)}\n"
    f"-> postprocess -> masks at the image size {dims(full.shape)}")
ax.set_title(f"SAM: an image branch and a prompt branch that meet only in the mask decoder\n"
             f"the embedding is computed once ({encoder_ms:.0f} ms); each prompt then costs "
             f"{decoder_ms:.1f} ms ({encoder_ms / decoder_ms:.1f}x less)", fontsize=13)
_lesson.save(fig, args, "architecture.png")
