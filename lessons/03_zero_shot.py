# %% [markdown]
# # Lesson 03: zero-shot learning, and zero-shot transfer measured
#
# Deck: "Zero-shot learning" (background) and "From promptable task to zero-shot transfer".
# Paper: Kirillov et al. 2023, section 2 ("Zero-shot transfer"), section 7 (introduction) and
# appendix D.6 (probing SAM's latent space).
#
# **Zero-shot learning** is recognizing what was never seen in training. A classifier trained
# on cats and dogs cannot say "zebra" unless something links the new class to what it knows.
# The classic link is a **shared embedding**: images and class descriptions (attributes, or
# text) are mapped into one space, a model learns the image side on the seen classes, and an
# unseen class is recognized because its description lands near the new images. CLIP (cited by
# the paper, section 1) is the large-scale version: image and text encoders trained to align,
# so that a text prompt can name a class no classifier was trained on. Why bother: masks are
# costly to annotate, new or rare categories keep appearing, and a model that generalizes
# without new training adapts in minutes.
#
# SAM takes the other route: **prompts**. Its task never names a class ("return a valid
# segmentation mask given any prompt", section 2); a point or a box says *where*, so an object
# of a kind never seen in training is just another region to delineate. The paper's "zero-shot
# transfer" follows CLIP's usage (section 7): SAM is evaluated on datasets and tasks it was not
# trained on, with no new training, only with prompts (lesson 17 lists the results).
#
# This lesson measures it on the small model. ``micro`` was trained on ellipses, polygons,
# stars, rectangles and rings (``weights/README.md``). ``make_unseen_scene`` draws crosses and
# crescents, kinds it never saw, with the same fills and noise (the *shapes* are new, the
# textures are not). The protocol is the same for both (scenes of 128 px, every object at least
# 60 visible pixels):
#
# - a point at each object's most interior pixel, the best of SAM's 3 masks and the top-scored one;
# - the object's tight box, single-mask output;
# - a baseline that never looks at the image: the box itself, filled, as the mask.
#
# Then a look at the shared-embedding idea inside SAM: the mask embedding of appendix D.6 (the
# image embedding multiplied by the mask and averaged over locations; the appendix embeds a
# crop around the mask and its horizontal flip, this lesson the whole image), compared across
# crosses and crescents that micro never saw.
#
# Run:  python lessons/03_zero_shot.py --out out/03

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("03", "Lesson 03: zero-shot learning, and zero-shot transfer measured")

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.cli.drawing import show_mask  # noqa: E402
from minisam.modeling.common import mask_iou  # noqa: E402
from minisam.training.interactive import mask_box  # noqa: E402
from minisam.training.shapes import KINDS, UNSEEN_KINDS, interior_point, make_scene, make_unseen_scene  # noqa: E402

sam = _lesson.load_model(args)
S, G = sam.config.img_size, sam.config.image_embedding_size
predictor = SamPredictor(sam)
N_SEEN, N_UNSEEN, MIN_AREA = 16, 24, 60


def box_fill(box, shape):   # the box as a mask: [H, W] bool
    x0, y0, x1, y1 = np.round(box).astype(int)
    out = np.zeros(shape, bool)
    out[y0:y1 + 1, x0:x1 + 1] = True
    return out


def measure(scenes):
    """Every object of every scene through SAM: a point and a box each, in two batched calls
    per scene. -> (per-object records, mask embeddings [N, C], first scene's top-scored masks)"""
    records, embeddings, first = [], [], None
    for scene in scenes:
        objects = [scene.masks[i] for i in scene.objects]
        predictor.set_image(scene.image)
        points = np.stack([interior_point(m) - 0.5 for m in objects])[:, None]      # [N, 1, 2] (x, y)
        boxes = np.stack([mask_box(m) for m in objects]).astype(np.float32)         # [N, 4]
        p_masks, p_scores, _ = predictor.predict_batch(point_coords=points,
                                                       point_labels=np.ones((len(objects), 1), int))  # [N, 3, S, S]
        b_masks, _, _ = predictor.predict_batch(boxes=boxes, multimask_output=False)  # [N, 1, S, S]
        embedding = predictor.get_image_embedding()[0]                              # [C, G, G]
        for k, (truth, i) in enumerate(zip(objects, scene.objects)):
            ious = mask_iou(p_masks[k], truth[None])                                 # [3]
            records.append(dict(kind=scene.kinds[i], best=float(ious.max()),
                                top=float(ious[int(np.argmax(p_scores[k]))]),
                                box=float(mask_iou(b_masks[k, 0], truth)),
                                fill=float(mask_iou(box_fill(boxes[k], truth.shape), truth))))
            # Appendix D.6's mask embedding: the image embedding averaged over the mask
            # (here over the whole image rather than the appendix's crop and its flip, and
            # weighted by the fraction of each embedding cell the mask covers).
            cover = truth.reshape(G, S // G, G, S // G).mean(axis=(1, 3))           # [G, G]
            vector = (embedding * cover).sum(axis=(1, 2)) / cover.sum()              # [C]
            embeddings.append(vector / np.linalg.norm(vector))
        if first is None:
            first = (scene, [p_masks[k, int(np.argmax(p_scores[k]))] for k in range(len(objects))])
    print(f"  last scene: points {points.shape} -> masks {p_masks.shape}, boxes {boxes.shape} -> "
          f"{b_masks.shape}; image embedding {embedding.shape}")
    return records, np.array(embeddings), first


def mean(records, key, kinds=None):
    return float(np.mean([r[key] for r in records if kinds is None or r["kind"] in kinds]))


# %% [markdown]
# ## 1. The shapes micro was trained on, and the ones it never saw

# %%
rng_seen, rng_unseen = np.random.default_rng(2101), np.random.default_rng(2102)
seen_scenes = [make_scene(rng_seen, S, min_area=MIN_AREA) for _ in range(N_SEEN)]
unseen_scenes = [s for s in (make_unseen_scene(rng_unseen, S, min_area=MIN_AREA) for _ in range(N_UNSEEN)) if s.objects]
print(f"trained kinds {KINDS}: {N_SEEN} scenes")
seen, _, seen_first = measure(seen_scenes)
print(f"never-seen kinds {UNSEEN_KINDS}: {len(unseen_scenes)} scenes")
unseen, unseen_embeddings, unseen_first = measure(unseen_scenes)

print(f"\n{'':<10} {'objects':>7} {'point best-of-3':>16} {'point top':>10} {'box':>6} {'box filled':>11}")
for kind in KINDS + UNSEEN_KINDS:
    rs = [r for r in seen + unseen if r["kind"] == kind]
    if rs:
        print(f"{kind:<10} {len(rs):>7} {mean(rs, 'best'):>16.3f} {mean(rs, 'top'):>10.3f} {mean(rs, 'box'):>6.3f} "
              f"{mean(rs, 'fill'):>11.3f}")
summary = {name: {key: mean(rs, key) for key in ("best", "top", "box", "fill")}
           for name, rs in (("trained kinds", seen), ("never seen", unseen))}
for name, m in summary.items():
    print(f"{name:<14}: point best-of-3 {m['best']:.3f}, top-scored {m['top']:.3f}, box {m['box']:.3f}, "
          f"box filled {m['fill']:.3f}")
s, u = summary["trained kinds"], summary["never seen"]
_lesson.claim(u["best"] >= 0.6 and u["box"] >= 0.6,
              f"zero-shot on shapes it never saw ({len(unseen)} crosses and crescents), micro's masks follow "
              f"them: point IoU {u['best']:.2f} (best of 3), box IoU {u['box']:.2f}")
_lesson.claim(u["best"] >= s["best"] - 0.1 and u["box"] >= s["box"] - 0.1,
              f"the transfer costs at most 0.1 IoU: never seen {u['best']:.2f} / {u['box']:.2f} (point / box) "
              f"against {s['best']:.2f} / {s['box']:.2f} on the {len(seen)} objects of its training kinds")
_lesson.claim(u["box"] >= u["fill"] + 0.2,
              f"SAM does more than fill the prompt: on the new shapes its box masks score {u['box']:.2f}, the "
              f"filled box {u['fill']:.2f}")


# %% [markdown]
# ## 2. A shared embedding inside SAM
#
# SAM is never told what a cross is. Does its image embedding still tell crosses from
# crescents? Each never-seen object gets its mask embedding (section 1); it is assigned to the
# kind whose mean embedding (over the *other* objects, leave-one-out) is nearest in cosine
# similarity, and scored against the *majority baseline* (always answering the more common
# kind) with its binomial standard deviation. The same test on the objects' mean colours says
# how much colour alone gives away. The appendix's probe is qualitative, on ViT-H; here the
# lesson prints what micro's embedding does and makes no claim either way: with a few dozen
# objects, only a margin of two standard deviations over the baseline would mean anything.

# %%
kinds = np.array([r["kind"] for r in unseen])
colours = np.array([scene.image[scene.masks[i]].mean(axis=0) for scene in unseen_scenes
                    for i in scene.objects], np.float64)                        # [N, 3] mean RGB


def leave_one_out(vectors, labels):
    """Nearest-centroid accuracy, each item left out of its own centroid: vectors [N, d]."""
    hits = []
    for j in range(len(labels)):
        others = np.arange(len(labels)) != j
        centroids = {k: vectors[others & (labels == k)].mean(axis=0) for k in UNSEEN_KINDS}
        score = {k: vectors[j] @ c / (np.linalg.norm(c) * np.linalg.norm(vectors[j])) for k, c in centroids.items()}
        hits.append(max(score, key=score.get) == labels[j])
    return float(np.mean(hits))


embedding_accuracy = leave_one_out(unseen_embeddings, kinds)
colour_accuracy = leave_one_out(colours - colours.mean(axis=0), kinds)
majority = max(np.mean(kinds == k) for k in UNSEEN_KINDS)
spread = float(np.sqrt(majority * (1 - majority) / len(kinds)))             # binomial s.d. of an accuracy
verdict = ("above the majority baseline by more than two standard deviations"
           if embedding_accuracy > majority + 2 * spread else "within two standard deviations of the majority baseline")
print(f"mask embeddings {unseen_embeddings.shape}: nearest kind centroid right for {embedding_accuracy:.0%} of "
      f"{len(kinds)} never-seen objects; mean colour {colour_accuracy:.0%}; the larger kind alone {majority:.0%} "
      f"(s.d. {spread:.0%})")
print(f"measured, not claimed: the mask embedding is {verdict}")


# %% [markdown]
# ## 3. The figure

# %%
fig = plt.figure(figsize=(8.8, 8.8))
grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.05])
colours_tab = plt.cm.tab10(np.arange(10))
for col, (name, (scene, masks)) in enumerate((("trained kinds", seen_first), ("never seen", unseen_first))):
    ax = fig.add_subplot(grid[0, col])
    ax.imshow(scene.image)
    for k, (m, i) in enumerate(zip(masks, scene.objects)):
        show_mask(m, ax, color=np.r_[colours_tab[k % 10, :3], 0.55])
        ax.contour(scene.masks[i], levels=[0.5], colors="w", linewidths=1, linestyles="--")
    kinds_here = ", ".join(sorted({scene.kinds[i] for i in scene.objects}))
    ax.set_title(f"{name} ({kinds_here}):\none point per object, top-scored masks", fontsize=10)
    ax.axis("off")

ax = fig.add_subplot(grid[1, 0])
order = list(KINDS) + list(UNSEEN_KINDS)
x = np.arange(len(order))
for j, (key, label, colour) in enumerate((("best", "point (best of 3)", "tab:blue"), ("box", "box", "tab:orange"),
                                          ("fill", "box filled (baseline)", "tab:gray"))):
    ax.bar(x + (j - 1) * 0.27, [mean(seen + unseen, key, (k,)) for k in order], 0.27, label=label, color=colour)
ax.axvline(len(KINDS) - 0.5, color="k", lw=1, ls=":")
ax.set_xticks(x)
ax.set_xticklabels(order, rotation=35, fontsize=10)
for label in ax.get_xticklabels()[len(KINDS):]:
    label.set_color("tab:red")
ax.set_xlabel("kind (red: never seen in training)", fontsize=10)
ax.set_ylim(0, 1.3)
ax.set_ylabel("mean IoU with the true mask", fontsize=10)
ax.legend(fontsize=10, loc="upper left", ncol=2)
ax.set_title(f"zero-shot: point IoU {u['best']:.2f} on new shapes,\n{s['best']:.2f} on trained ones", fontsize=10)
ax.tick_params(labelsize=10)

ax = fig.add_subplot(grid[1, 1])
centred = unseen_embeddings - unseen_embeddings.mean(axis=0)                   # [N, C]
_, _, components = np.linalg.svd(centred, full_matrices=False)
xy = centred @ components[:2].T                                                 # [N, 2] first two PCs
for kind, marker, colour in zip(UNSEEN_KINDS, "Po", ("tab:purple", "tab:green")):
    sel = kinds == kind
    ax.scatter(xy[sel, 0], xy[sel, 1], marker=marker, s=40, color=colour, label=f"{kind} ({sel.sum()})")
ax.set_xlabel("principal component 1 of the mask embeddings", fontsize=10)
ax.set_ylabel("principal component 2", fontsize=10)
ax.legend(fontsize=10)
ax.tick_params(labelsize=10)
ax.set_title(f"mask embeddings of never-seen shapes: nearest kind\n{embedding_accuracy:.0%} right, majority "
             f"{majority:.0%} \u00b1 {spread:.0%}, colour {colour_accuracy:.0%}", fontsize=10)
fig.tight_layout()
_lesson.save(fig, args, "03_zero_shot.png")
plt.close(fig)
