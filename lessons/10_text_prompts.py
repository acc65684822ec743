# %% [markdown]
# # Lesson 10: text prompts: how the paper fed CLIP embeddings to SAM
#
# Deck: "Promptable segmentation task" (prompt types: "text (PoC)") and "Prompt encoder"
# (the speaker notes: "Text prompts: CLIP text encoder (proof-of-concept)"). Paper: Kirillov et
# al. 2023, section 3 ("Prompt encoder"), section 7.5 ("Zero-Shot Text-to-Mask") and appendix
# D.5 ("Zero-Shot Text-to-Mask").
#
# SAM's prompt encoder takes points, boxes and masks. The paper adds, as a proof of concept,
# free-form text "with an off-the-shelf text encoder from CLIP" (section 3). The trick is that
# it needs **no text annotations** (section 7.5, appendix D.5):
#
# - **CLIP** (Radford et al. 2021) trains an image encoder and a text encoder so that an image
#   and a caption of it land close together in one embedding space;
# - **training**: for each mask of the first two data-engine stages with area larger than
#   $100^2$ pixels, the box around the mask is expanded by a random factor from 1x to 2x,
#   square-cropped, resized to 336 x 336 and, with 50% probability, the pixels outside the mask
#   are zeroed. The crop goes through CLIP's image encoder (the largest public one, ViT-L/14 at
#   336 px), with attention in its last layer restricted to positions inside the mask; the
#   output embedding, l2-normalized, is SAM's *first prompt*, followed by point prompts to
#   refine. SAM is trained this way for 120k iterations at batch size 128;
# - **inference**: text goes through CLIP's text encoder, unchanged, and its l2-normalized
#   embedding is given to SAM in the same place. Because CLIP aligned the two spaces, a model
#   trained on image embeddings responds to text embeddings.
#
# Where the embedding enters: it is a *sparse* prompt, one token among the point and box
# tokens that the mask decoder's two-way transformer attends over (section 3 lists text with
# the sparse prompts). The paper does not describe the layer that maps CLIP's embedding to
# the decoder's width C = 256; a learned linear projection is the obvious choice, and it is
# drawn dashed below. Results are qualitative only (section 7.5 and figure 12: prompts such as
# "a wheel" or "beaver tooth grille"; when the text alone picks the wrong object, an additional
# point often fixes it), and section 8 calls the text-to-mask work exploratory and not
# entirely robust. **The released code and checkpoints have no text input** (the official
# ``PromptEncoder.forward`` takes points, boxes and masks), and no CLIP weights are used here.
#
# The runnable part uses stand-ins, and says so:
#
# 1. **where the token goes**: a stand-in embedding (an object's mean colour, 3 numbers, a toy
#    of CLIP's joint space), projected by a fixed random matrix to C numbers and appended to
#    micro's sparse tokens. The decoder accepts it and attends to it: its output changes. The
#    mask is meaningless, because micro was never trained with such a token.
# 2. **why alignment is the trick**: a "text encoder" that maps a colour *name* to a point of
#    the same colour space (the named colour), and an "image encoder" that maps a mask to its
#    mean colour. They are aligned by construction, as CLIP's are by training. With no
#    training at all, text can then pick an object: among the masks of SAM's automatic
#    generator, take the one whose image embedding is nearest to the text embedding. This is
#    composition (text model + SAM), not the paper's trained text prompt; it is measured.
#
# Run:  python lessons/10_text_prompts.py --out out/10

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("10", "Lesson 10: text prompts: how the paper fed CLIP embeddings to SAM")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from minisam import SamAutomaticMaskGenerator, SamPredictor  # noqa: E402
from minisam.cli.drawing import show_mask  # noqa: E402
from minisam.modeling.common import mask_iou  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
S, C = cfg.img_size, cfg.prompt_embed_dim
predictor = SamPredictor(sam)

# The stand-in "text encoder": colour names and the point of RGB space each one names.
COLOURS = {"red": (200, 40, 40), "orange": (230, 140, 30), "yellow": (220, 210, 50), "green": (50, 170, 60),
           "cyan": (50, 190, 200), "blue": (40, 70, 200), "purple": (140, 60, 180), "pink": (230, 120, 170),
           "white": (235, 235, 235), "grey": (128, 128, 128), "black": (30, 30, 30), "brown": (120, 80, 40)}


def text_embedding(name):   # "the <colour> one" -> [3], the named colour in [0, 1]
    return np.array(COLOURS[name], np.float64) / 255.0


def image_embedding(image, mask):   # a mask of an image -> [3], its mean colour in [0, 1]
    return image[mask].mean(axis=0) / 255.0


def colour_name(image, mask):   # what a describer would call the mask: the nearest named colour
    e = image_embedding(image, mask)
    return min(COLOURS, key=lambda n: np.linalg.norm(text_embedding(n) - e))


# %% [markdown]
# ## 1. Where a text token would enter the decoder

# %%
scene = make_scene(np.random.default_rng(2401), S, min_area=60)
target = max(scene.objects, key=lambda i: scene.masks[i].sum())
predictor.set_image(scene.image)
embedding = predictor.get_image_embedding()                                      # [1, C, G, G]
point = interior_point(scene.masks[target]) - 0.5                                # [2] (x, y)
coords = predictor.transform.apply_coords(point[None], scene.image.shape[:2])[None].astype(np.float32)  # [1, 1, 2]
sparse, dense = sam.prompt_encoder(points=(coords, np.array([[1]])))              # [1, 2, C], [1, C, G, G]
projection = np.random.default_rng(0).standard_normal((3, C)).astype(np.float32)  # [3, C] stand-in for the learned map
stand_in = image_embedding(scene.image, scene.masks[target])                      # [3]
token = (stand_in / np.linalg.norm(stand_in)).astype(np.float32) @ projection     # [C]
with_text = np.concatenate([token[None, None], sparse], axis=1)                   # [1, 3, C]: text token first
pe = sam.get_dense_pe()                                                           # [1, C, G, G]
low, scores = sam.mask_decoder(embedding, pe, sparse, dense, multimask_output=True)              # [1, 3, M, M], [1, 3]
low_text, scores_text = sam.mask_decoder(embedding, pe, with_text, dense, multimask_output=True)  # same shapes
print(f"image embedding {embedding.shape}; point prompt -> sparse {sparse.shape} (point + padding), dense {dense.shape}")
print(f"stand-in embedding {stand_in.shape} -> projection {projection.shape} -> token {token.shape}; "
      f"sparse with the token {with_text.shape}")
print(f"decoder outputs: without {low.shape} {scores.shape}, with the token {low_text.shape} {scores_text.shape}")
change = float(np.abs(low_text - low).max())
print(f"largest change of a mask logit when the token is added: {change:.3f}")
_lesson.claim(with_text.shape == (1, sparse.shape[1] + 1, C) and low_text.shape == low.shape and change > 1e-3,
              f"a text embedding enters as one more sparse token ({sparse.shape[1]} -> {with_text.shape[1]} tokens "
              f"of {C}); the decoder attends to it: the mask logits move by up to {change:.2f}")


# %% [markdown]
# ## 2. Alignment without training: text picks one of SAM's masks
#
# On each scene, the target is an object whose colour name no other object of the scene
# shares, drawn at random among those (not the largest, which would favour the
# largest-proposal baseline). The "text" is that name; the automatic generator (a 16 x 16 grid, micro's
# thresholds) proposes masks; the one nearest to the text in the shared colour space is the
# answer. Two baselines use no text: a mask drawn at random among the proposals, and the
# largest proposal.

# %%
generator = SamAutomaticMaskGenerator(sam, points_per_side=16)
picked, random_pick, largest, examples = [], [], [], []
for k in range(12):
    sc = make_scene(np.random.default_rng(2410 + k), S, min_area=60)
    names = {i: colour_name(sc.image, sc.masks[i]) for i in sc.objects}
    unique = [i for i, n in names.items() if list(names.values()).count(n) == 1]
    if not unique:
        continue
    goal = unique[int(np.random.default_rng(2420 + k).integers(len(unique)))]
    anns = generator.generate(sc.image)
    query = text_embedding(names[goal])                                          # [3]
    if anns:
        distances = [np.linalg.norm(image_embedding(sc.image, a["segmentation"]) - query) for a in anns]
        choice = anns[int(np.argmin(distances))]["segmentation"]                 # [S, S] bool
        ious = [float(mask_iou(a["segmentation"], sc.masks[goal])) for a in anns]
        random_pick.append(float(np.mean(ious)))
        largest.append(ious[int(np.argmax([a["area"] for a in anns]))])
    else:
        choice = np.zeros((S, S), bool)
        random_pick.append(0.0)
        largest.append(0.0)
    picked.append(float(mask_iou(choice, sc.masks[goal])))
    examples.append((sc, goal, names[goal], choice, len(anns)))
text_iou, random_iou, largest_iou = (float(np.mean(v)) for v in (picked, random_pick, largest))
print(f"{len(picked)} scenes with a uniquely named object: IoU of the text-picked mask {text_iou:.3f}; "
      f"a random proposal {random_iou:.3f}; the largest proposal {largest_iou:.3f}")
_lesson.claim(text_iou >= 0.5 and text_iou >= max(random_iou, largest_iou) + 0.2,
              f"with aligned embeddings, a colour name picks its object among SAM's masks: IoU {text_iou:.2f}, "
              f"against {random_iou:.2f} for a random proposal and {largest_iou:.2f} for the largest "
              f"({len(picked)} scenes, no training)")


# %% [markdown]
# ## 3. The figure: the paper's text path, and the stand-in

# %%
def box(ax, x, y, w, h, text, colour, dashed=False):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=colour,
                                ec="#333333", lw=1.2, ls="--" if dashed else "-"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=10, linespacing=1.25)


def arrow(ax, start, end):
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="-|>", lw=1.4, color="#333333"))


def draw_text_path(ax):
    ax.set_xlim(0, 10.4)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    ax.text(0.05, 4.35, "training (no text needed)", fontsize=10, weight="bold")
    box(ax, 0.05, 2.85, 2.0, 1.2, "mask from data-engine\nstages 1-2, area > 100²\n-> crop: box x1-2,\n"
        "336x336, 50%: outside\nzeroed", "#e0e0e0")
    box(ax, 2.45, 3.0, 1.9, 0.9, "CLIP image encoder\nViT-L/14@336px, last\nlayer masked attention", "#fdd0a2")
    box(ax, 4.75, 3.05, 1.55, 0.8, "image embedding\nl2-normalized", "#fee6ce")
    ax.text(0.05, 1.55, "inference", fontsize=10, weight="bold")
    box(ax, 0.05, 0.35, 2.0, 0.9, 'text: "a wheel"', "#e0e0e0")
    box(ax, 2.45, 0.35, 1.9, 0.9, "CLIP text encoder\n(unchanged)", "#c6dbef")
    box(ax, 4.75, 0.4, 1.55, 0.8, "text embedding\nl2-normalized", "#deebf7")
    ax.text(5.5, 2.1, "aligned by CLIP", ha="center", va="center", fontsize=10, style="italic", color="#555555")
    ax.annotate("", (5.5, 1.3), (5.5, 2.95), arrowprops=dict(arrowstyle="<|-|>", lw=1.2, ls=":", color="#555555"))
    box(ax, 6.75, 1.65, 1.45, 1.2, "map to C = 256\n(not described\nin the paper)", "#ffffff", dashed=True)
    box(ax, 8.6, 1.3, 1.75, 1.9, "mask decoder:\nthe embedding is\none sparse token,\nwith point tokens\n"
        "(later rounds)", "#a1d99b")
    for y0, y1 in ((3.45, 2.5), (0.8, 2.0)):
        arrow(ax, (6.35, y0), (6.7, y1))
    arrow(ax, (2.1, 3.45), (2.4, 3.45))
    arrow(ax, (4.4, 3.45), (4.7, 3.45))
    arrow(ax, (2.1, 0.8), (2.4, 0.8))
    arrow(ax, (4.4, 0.8), (4.7, 0.8))
    arrow(ax, (8.25, 2.25), (8.55, 2.25))
    ax.set_title("The paper's text prompt (section 7.5, appendix D.5): train on CLIP image embeddings of mask "
                 "crops,\nprompt with CLIP text embeddings; released code and weights have no text input",
                 fontsize=10.5)


fig = plt.figure(figsize=(9.12, 8.93))
grid = fig.add_gridspec(2, 2, height_ratios=[1.0, 1.15])
draw_text_path(fig.add_subplot(grid[0, :]))
typical = int(np.argsort(picked)[len(picked) // 2])                             # the scene of median IoU
sc, goal, name, choice, n_anns = examples[typical]
ax = fig.add_subplot(grid[1, 0])
ax.imshow(sc.image)
show_mask(choice, ax, color=np.array([0.1, 0.45, 1.0, 0.6]))
ax.contour(sc.masks[goal], levels=[0.5], colors="w", linewidths=1.2, linestyles="--")
ax.set_title(f'the median scene: stand-in text "the {name} one",\nnearest of {n_anns} proposals (blue), IoU '
             f"{float(mask_iou(choice, sc.masks[goal])):.2f} (dashed: the object)", fontsize=10)
ax.axis("off")
ax = fig.add_subplot(grid[1, 1])
values = [text_iou, random_iou, largest_iou]
ax.bar(range(3), values, color=["tab:orange", "tab:gray", "tab:gray"])
for x, v in enumerate(values):
    ax.text(x, v + 0.02, f"{v:.2f}", ha="center", fontsize=10)
ax.set_xticks(range(3))
ax.set_xticklabels(["picked by\nthe text", "random\nproposal", "largest\nproposal"], fontsize=10)
ax.set_ylim(0, 1.05)
ax.set_ylabel("mean IoU with the named object", fontsize=10)
ax.tick_params(labelsize=10)
ax.set_title(f"aligned stand-in embeddings, no training:\n{len(picked)} scenes, composition with SAM's masks",
             fontsize=10)
fig.tight_layout()
_lesson.save(fig, args, "10_text_prompts.png")
plt.close(fig)
