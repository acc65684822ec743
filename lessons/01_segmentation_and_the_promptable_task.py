"""Lesson 01: segmentation, the promptable task, and SAM's three parts as data flows through them.

Deck: "Background knowledge" (segmentation kinds, encoder-decoder models), "Promptable
segmentation task" and "Model architecture". Paper: Kirillov et al. 2023, sections 2 and 3.

Segmentation partitions an image, pixel by pixel, into regions. Three kinds:
- semantic: every pixel gets a *class* (all ellipses are "ellipse"), instances are merged;
- instance: every *object* gets its own mask, the background is ignored;
- panoptic: both at once: "stuff" (here the background) by class, "things" by instance.

SAM solves none of these directly. Its task is *promptable* segmentation: given an image
and a prompt (points, a box, a rough mask) return a valid mask for what the prompt points
at. "Valid" matters: one click on a shape inside a shape can mean the inner shape, the
whole shape, or a group of shapes. SAM answers with three masks and a score for each.

The model has three parts (figure 4 of the paper):
1. an image encoder (a ViT) that runs once per image and gives an embedding;
2. a prompt encoder that turns points/boxes into tokens and masks into a dense map;
3. a light mask decoder that combines both into masks and IoU scores, in milliseconds.
Below, a synthetic scene goes through all three, with every shape printed.

Run:  python lessons/01_segmentation_and_the_promptable_task.py --out out/01
"""

import numpy as np

import _lesson

args = _lesson.parse_args("01", __doc__.splitlines()[0])

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402

# --- 1. A scene with ground truth at three levels: parts, objects, groups ---------------
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

# --- 2. The promptable task: one point, several valid masks -----------------------------
# Pick the point inside a part if the scene has one (the ambiguous case), else an object.
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

# --- 3. The three parts, with the shape of every stage ---------------------------------
x = sam.preprocess(predictor.transform.apply_image(scene.image).transpose(2, 0, 1)[None])  # [1, 3, S, S]
trace = {}
embedding = sam.image_encoder(x, trace=trace)              # [1, C, G, G]
coords = predictor.transform.apply_coords(point[None], scene.image.shape[:2])[None].astype(np.float32)  # [1, 1, 2]
sparse, dense = sam.prompt_encoder(points=(coords, np.array([[1]])))   # [1, N+1, C], [1, C, G, G]
pe = sam.get_dense_pe()                                     # [1, C, G, G]
low, iou = sam.mask_decoder(embedding, pe, sparse, dense, multimask_output=True)  # [1, 3, 4G, 4G], [1, 3]
full = sam.postprocess_masks(low, predictor.input_size, predictor.original_size)  # [1, 3, H, W]
c = sam.config
stages = [
    ("image (uint8)", scene.image.shape),
    ("preprocess: resize, normalize, pad", x.shape),
    (f"patch embedding (conv {c.patch_size}x{c.patch_size} / {c.patch_size})", trace.get("image_encoder.patch_embed", np.empty(0)).shape),
    (f"{c.encoder_depth} ViT blocks (windowed + global attention)",
     trace.get(f"image_encoder.blocks.{c.encoder_depth - 1}", np.empty(0)).shape),
    ("neck -> image embedding", embedding.shape),
    ("prompt encoder: sparse tokens (point + pad)", sparse.shape),
    ("prompt encoder: dense (no mask)", dense.shape),
    ("dense positional encoding", pe.shape),
    ("mask decoder: low-res mask logits", low.shape),
    ("mask decoder: IoU scores", iou.shape),
    ("postprocess: logits at image size", full.shape),
]
for name, shape in stages:
    print(f"  {name:<48s} {tuple(shape)}")
G = c.image_embedding_size
_lesson.claim(np.array_equal(embedding, predictor.features),
              "the image encoder runs once per image: the predictor's embedding is this one, bit for bit")
_lesson.claim(embedding.shape == (1, c.prompt_embed_dim, G, G) and low.shape == (1, 3, 4 * G, 4 * G)
              and full.shape[-2:] == scene.image.shape[:2],
              "embedding [1, C, G, G]; low-res logits at 4G; masks back at the image size")

fig, ax = plt.subplots(figsize=(12, 6.5))
ax.axis("off")
ax.set_xlim(0, 12); ax.set_ylim(0, len(stages) + 1)
colours = ["#dddddd", "#dddddd", "#9ecae1", "#9ecae1", "#9ecae1", "#fdd0a2", "#fdd0a2", "#fdd0a2",
           "#a1d99b", "#a1d99b", "#dddddd"]
for k, ((name, shape), col) in enumerate(zip(stages, colours)):
    y = len(stages) - k
    ax.add_patch(plt.Rectangle((0.5, y - 0.35), 11, 0.7, color=col, ec="k"))
    ax.text(0.7, y, name, va="center", fontsize=11)
    ax.text(11.3, y, str(tuple(shape)), va="center", ha="right", fontsize=11, family="monospace")
    if k:
        ax.annotate("", (6, y + 0.35), (6, y + 0.65), arrowprops=dict(arrowstyle="->"))
ax.set_title("SAM as data flows through it: image encoder (blue), prompt encoder (orange), "
             "mask decoder (green)")
_lesson.save(fig, args, "architecture.png")
