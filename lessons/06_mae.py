# %% [markdown]
# # Lesson 06: MAE pre-training, the starting point of SAM's image encoder
#
# Deck: "Image encoder: ViT-H/16 pre-trained with MAE". Papers: He et al. 2022, "Masked
# Autoencoders Are Scalable Vision Learners" (MAE); Kirillov et al. 2023, section 3 ("Image
# encoder"), appendix A ("Image encoder", "Training recipe") and section 8 ("Foundation models").
#
# SAM's image encoder does not start from random numbers: "we use an MAE pre-trained Vision
# Transformer (ViT) minimally adapted to process high resolution inputs" (section 3), and
# training "initialize[s] SAM from an MAE pre-trained ViT-H" (appendix A). MAE is
# *self-supervised*: it needs images, no labels.
#
# 1. Cut the image into patches (16 x 16 pixels for ViT-H/16) and **mask 75% of them at random**.
# 2. The **encoder**, a ViT, sees only the visible 25%: no mask tokens, so it runs on a quarter
#    of the tokens (He et al. report that this speeds pre-training up 3x or more, abstract).
# 3. A small **decoder** gets the encoded visible patches plus a shared learned "mask token" at
#    every masked position (with positional embeddings), and predicts the pixels of every patch.
# 4. The **loss** is the mean squared error between predicted and true pixels, computed **only
#    on the masked patches** (as BERT scores only its masked words). A loss on the visible
#    patches can be lowered by copying what the encoder was given; He et al. (section 3,
#    footnote 1) report that a loss on all pixels gives slightly lower accuracy (about 0.5%).
# 5. After pre-training the decoder is thrown away; the encoder is kept.
#
# In symbols, for an image cut into patches $x_1, \dots, x_N$ with a random set $M$ of masked
# indexes, $|M| = 0.75 N$, and a model $f$ that sees only the visible patches $x_{\bar M}$:
#
# $$
# \mathcal{L}_{\text{MAE}} = \frac{1}{|M|} \sum_{i \in M} \frac{1}{P}
# \big\lVert f_i(x_{\bar M}) - x_i \big\rVert^2 ,
# $$
#
# with $P$ the number of values in a patch. With 75% masked, neighbours are often masked too,
# so the task cannot be solved by copying the next patch: the encoder must describe every
# visible patch well enough, in context, for the missing ones to be guessed. That is the
# property SAM wants from its encoder: a description of *every* location of the image (a dense
# embedding) from which a light decoder can draw any mask. Note the paper's own caveat
# (section 8): "while our model is initialized with a self-supervised technique (MAE), the
# vast majority of its capabilities come from large-scale supervised training" on SA-1B.
#
# **The toy here** is far smaller than MAE and says so. On 64 x 64 synthetic scenes cut into
# 8 x 8 patches (an 8 x 8 grid, 64 tokens), 75% are masked; a *linear* model predicts each
# masked patch's 192 pixel values from the visible patches around it (a 5 x 5 window, each
# visible patch summarized by its 2 x 2 x 3 block means, plus a flag per position), fitted in
# closed form by least squares on the masked patches only. It shows the objective, the masking
# and why the loss is taken on the masked patches. It does not show a ViT, representation
# learning that transfers to segmentation, or anything about scale.
#
# Run:  python lessons/06_mae.py --out out/06

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("06", "Lesson 06: MAE pre-training, the starting point of SAM's image encoder")

import matplotlib.pyplot as plt  # noqa: E402

from minisam.checkpoints.param_tree import flatten  # noqa: E402
from minisam.config import VIT_H, expected_shapes  # noqa: E402
from minisam.training.shapes import make_scene  # noqa: E402

IMAGE, PATCH, RATIO, WINDOW = 64, 8, 0.75, 5
GRID = IMAGE // PATCH                                  # 8 x 8 patches
N_TOKENS = GRID * GRID                                 # 64
N_MASKED = int(round(RATIO * N_TOKENS))                # 48
N_TRAIN, N_TEST = 240, 40
P = PATCH * PATCH * 3                                  # 192 values per patch
rng = np.random.default_rng(23)


# %% [markdown]
# ## 1. Patches and a 75% mask

# %%
def patchify(image):
    """[IMAGE, IMAGE, 3] uint8 -> [GRID, GRID, PATCH*PATCH*3] float in [0, 1] (row-major patches)."""
    x = image.astype(np.float64) / 255.0
    return x.reshape(GRID, PATCH, GRID, PATCH, 3).transpose(0, 2, 1, 3, 4).reshape(GRID, GRID, -1)


def unpatchify(patches):   # [GRID, GRID, P] -> [IMAGE, IMAGE, 3]
    return patches.reshape(GRID, GRID, PATCH, PATCH, 3).transpose(0, 2, 1, 3, 4).reshape(IMAGE, IMAGE, 3)


def random_mask(rng):
    """MAE's per-image random masking: shuffle the tokens, mask the first 75%. -> [GRID, GRID] bool"""
    masked = np.zeros(N_TOKENS, bool)
    masked[rng.permutation(N_TOKENS)[:N_MASKED]] = True
    return masked.reshape(GRID, GRID)


def summary(patches):
    """Each patch as its 2 x 2 x 3 block means (what the toy's context sees of a visible patch):
    [GRID, GRID, P] -> [GRID, GRID, 12]"""
    blocks = patches.reshape(GRID, GRID, 2, PATCH // 2, 2, PATCH // 2, 3)
    return blocks.mean(axis=(3, 5)).reshape(GRID, GRID, 12)


def image_colour(patches, masked):
    """The mean colour of the visible patches: [3]. Every guess below starts from it."""
    return patches[~masked].reshape(-1, PATCH * PATCH, 3).mean(axis=(0, 1))


def context(patches, masked, with_centre=False):
    """For every position: the visible patches of the 5 x 5 window around it (summaries minus
    the image's visible mean colour, zero where masked or off the image), one visibility flag
    per window position, that mean colour itself, and a bias.
    -> [GRID, GRID, F], F = 24 x 13 + 4 (25 x 13 + 4 with the centre included)."""
    half = WINDOW // 2
    visible = ~masked                                                             # [GRID, GRID]
    colour = image_colour(patches, masked)                                        # [3]
    summ = (summary(patches) - np.tile(colour, 4)) * visible[..., None]          # [GRID, GRID, 12]
    padded = np.pad(summ, ((half, half), (half, half), (0, 0)))
    flags = np.pad(visible.astype(np.float64), half)[..., None]                  # [GRID+4, GRID+4, 1]
    parts = []
    for dy in range(WINDOW):
        for dx in range(WINDOW):
            if dy == half and dx == half and not with_centre:
                continue
            parts += [padded[dy:dy + GRID, dx:dx + GRID], flags[dy:dy + GRID, dx:dx + GRID]]
    parts += [np.broadcast_to(colour, (GRID, GRID, 3)), np.ones((GRID, GRID, 1))]
    return np.concatenate(parts, axis=-1)                                        # [GRID, GRID, F]


def residual(patches, masked):
    """The targets: each patch minus the image's visible mean colour, [GRID, GRID, P]."""
    return patches - np.tile(image_colour(patches, masked), P // 3)


scenes = [make_scene(rng, IMAGE) for _ in range(N_TRAIN + N_TEST)]
patches = np.stack([patchify(s.image) for s in scenes])                          # [N, GRID, GRID, P]
masks = np.stack([random_mask(rng) for _ in scenes])                             # [N, GRID, GRID]
print(f"{len(scenes)} scenes of {IMAGE}x{IMAGE}: patches {patches.shape} ({GRID}x{GRID} tokens of "
      f"{PATCH}x{PATCH}x3 = {P} values), masks {masks.shape}")
print(f"per image: {N_MASKED} of {N_TOKENS} patches masked; the encoder would see {N_TOKENS - N_MASKED} tokens")
_lesson.claim(np.all(masks.reshape(len(masks), -1).sum(axis=1) == N_MASKED)
              and len({m.tobytes() for m in masks}) == len(masks),
              f"every image has exactly {RATIO:.0%} of its patches masked ({N_MASKED} of {N_TOKENS}), a different "
              f"random set for each of the {len(masks)} images")
# How often is a masked patch's neighbourhood masked too? (Why copying the next patch fails.)
OFFSETS = [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]   # the 8 neighbours
hidden = np.pad(masks, ((0, 0), (1, 1), (1, 1)), constant_values=True)           # [N, GRID+2, GRID+2], off-image: hidden
inside = np.pad(np.ones((GRID, GRID), bool), 1)                                  # [GRID+2, GRID+2]
visible_neighbours = sum(~hidden[:, dy:dy + GRID, dx:dx + GRID] for dy, dx in OFFSETS)   # [N, GRID, GRID]
neighbours = sum(inside[dy:dy + GRID, dx:dx + GRID] for dy, dx in OFFSETS)                # [GRID, GRID] 3..8
share_visible = float((visible_neighbours / neighbours)[masks].mean())
print(f"a masked patch has on average {share_visible:.0%} of its neighbours visible (the rest are masked too)")
_lesson.claim(share_visible < 0.35,
              f"with {RATIO:.0%} masked, neighbours are mostly masked too: on average only {share_visible:.0%} of a "
              f"masked patch's 8 neighbours are visible")
vit_h_tokens = (VIT_H.img_size // VIT_H.patch_size) ** 2
print(f"at SAM's scale (ViT-H/16 at {VIT_H.img_size}): {vit_h_tokens} tokens, of which an MAE encoder would see "
      f"{vit_h_tokens // 4}; a global attention map, quadratic in tokens, has 16x fewer entries "
      f"({vit_h_tokens ** 2:,} -> {(vit_h_tokens // 4) ** 2:,}). (MAE itself pre-trains at 224 x 224.)")


# %% [markdown]
# ## 2. Fit the reconstruction on the masked patches only
#
# Least squares in closed form, $W = (A^\top A + \lambda I)^{-1} A^\top B$, with one row of $A$
# per masked patch of the training images (its context) and the same row of $B$ its true
# pixels. A second model is fitted the way MAE argues against: the loss on *all* patches,
# with the patch itself among its inputs when it is visible. What the toy can show is where
# that model's loss goes: on the visible patches, which it can copy. What it cannot show is
# MAE's finding about downstream accuracy, which needs a learned representation; on the
# masked patches the two linear models are printed side by side, with no claim.

# %%
def fit(rows, targets, ridge=1e-3):
    A, B = np.concatenate(rows), np.concatenate(targets)                        # [n, F], [n, P]
    return np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ B)       # [F, P]


train_ids, test_ids = range(N_TRAIN), range(N_TRAIN, N_TRAIN + N_TEST)
ctx = [context(patches[i], masks[i]) for i in range(len(scenes))]                # each [GRID, GRID, F]
ctx_centre = [context(patches[i], masks[i], with_centre=True) for i in range(len(scenes))]
targets = [residual(patches[i], masks[i]) for i in range(len(scenes))]        # each [GRID, GRID, P]
W_masked = fit([ctx[i][masks[i]] for i in train_ids], [targets[i][masks[i]] for i in train_ids])
W_all = fit([ctx_centre[i].reshape(N_TOKENS, -1) for i in train_ids],
            [targets[i].reshape(N_TOKENS, -1) for i in train_ids])
print(f"context features: {ctx[0].shape[-1]} per patch; W {W_masked.shape} fitted on "
      f"{N_TRAIN * N_MASKED} masked patches; the all-patch model {W_all.shape} on {N_TRAIN * N_TOKENS}")


def neighbour_fill(p, m):
    """Baseline: each masked patch painted with the mean colour of the visible patches among its
    8 neighbours, or of the whole image if none is visible. -> [GRID, GRID, P]"""
    colours = p.reshape(GRID, GRID, -1, 3).mean(axis=2)                         # [GRID, GRID, 3]
    vis = (~m).astype(np.float64)
    whole = (colours * vis[..., None]).sum(axis=(0, 1)) / vis.sum()
    pc, pv = np.pad(colours * vis[..., None], ((1, 1), (1, 1), (0, 0))), np.pad(vis, 1)
    total = sum(pc[dy:dy + GRID, dx:dx + GRID] for dy in range(3) for dx in range(3))   # [GRID, GRID, 3]
    count = sum(pv[dy:dy + GRID, dx:dx + GRID] for dy in range(3) for dx in range(3))   # [GRID, GRID]
    fill = np.where(count[..., None] > 0, total / np.maximum(count, 1)[..., None], whole)
    return np.repeat(fill[:, :, None, :], P // 3, axis=2).reshape(GRID, GRID, P)


errors = {"image mean colour": [], "neighbour colour": [], "linear, loss on masked": [], "linear, loss on all": []}
for i in test_ids:
    p, m = patches[i], masks[i]
    base = np.tile(image_colour(p, m), P // 3)                                   # [P]
    guesses = {"image mean colour": base,
               "neighbour colour": neighbour_fill(p, m)[m],
               "linear, loss on masked": base + ctx[i][m] @ W_masked,
               "linear, loss on all": base + ctx_centre[i][m] @ W_all}
    for name, guess in guesses.items():
        errors[name].append(np.mean((guess - p[m]) ** 2))                        # MSE on masked patches
    copied = base + ctx_centre[i][~m] @ W_all                                    # [visible, P]
    errors.setdefault("loss on all: visible", []).append(np.mean((copied - p[~m]) ** 2))
mse = {name: float(np.mean(e)) for name, e in errors.items()}
for name, e in mse.items():
    where = "visible" if name.endswith("visible") else "masked"
    print(f"  {name:<24s} MSE on the {where} patches of {N_TEST} test images: {e:.5f}")
_lesson.claim(mse["linear, loss on masked"] < min(mse["neighbour colour"], mse["image mean colour"]),
              f"context predicts what is hidden: the fitted model's error on masked patches is "
              f"{mse['linear, loss on masked']:.4f}, against {mse['neighbour colour']:.4f} for the neighbours' colour "
              f"and {mse['image mean colour']:.4f} for the image's mean colour")
_lesson.claim(mse["loss on all: visible"] < 0.5 * mse["linear, loss on all"],
              f"a loss on all patches is easiest on the visible ones, which the model is shown: the all-patch "
              f"model's error there is {mse['loss on all: visible']:.4f}, against {mse['linear, loss on all']:.4f} on "
              f"the masked ones")
print(f"on the masked patches, the two linear models: loss on masked {mse['linear, loss on masked']:.4f}, loss on all "
      f"{mse['linear, loss on all']:.4f} (printed, not claimed: MAE's argument is about representations)")


# %% [markdown]
# ## 3. SAM's encoder, and this project's small one
#
# SAM's ViT-H starts from MAE weights. ``micro``, the small model these lessons run on, was
# trained from the official random initialization on synthetic shapes (``weights/README.md``):
# no MAE pre-training, which a 2-core CPU budget could not afford. ViT-H's numbers below are
# counted from the architecture's tensor shapes (``minisam.config.expected_shapes``, the
# official ``build_sam.py`` settings); the loaded model's encoder is counted both ways, to
# check that the count is the model's.

# %%
sam = _lesson.load_model(args)


def encoder_parameters(cfg):
    """Parameters of the image encoder, counted from the shapes the architecture needs."""
    return sum(int(np.prod(shape)) for key, shape in expected_shapes(cfg).items() if key.startswith("image_encoder."))


for name, cfg in (("ViT-H (SAM)", VIT_H), (args.checkpoint or args.model, sam.config)):
    print(f"  {name:<14s} encoder: {cfg.encoder_depth} blocks, width {cfg.encoder_embed_dim}, "
          f"{cfg.encoder_num_heads} heads, global attention in blocks {tuple(cfg.encoder_global_attn_indexes)}, "
          f"patch {cfg.patch_size}, {(cfg.img_size // cfg.patch_size) ** 2} tokens, "
          f"{encoder_parameters(cfg) / 1e6:.1f}M parameters")
loaded = sum(v.size for v in flatten(sam.params["image_encoder"]).values())
_lesson.claim(loaded == encoder_parameters(sam.config),
              f"the count from the architecture's shapes is the loaded encoder's: {loaded:,} parameters")


# %% [markdown]
# ## 4. The figure: one test image, masked and reconstructed

# %%
i = test_ids[0]
p, m = patches[i], masks[i]
masked_view = p.copy()
masked_view[m] = 0.5                                                          # grey where masked
reconstruction = p.copy()
reconstruction[m] = np.clip(np.tile(image_colour(p, m), P // 3) + ctx[i][m] @ W_masked, 0, 1)
fig, axes = plt.subplots(2, 2, figsize=(9.0, 9.0))
for ax, img, title in ((axes[0, 0], unpatchify(p), f"a test scene, {IMAGE}x{IMAGE}: {GRID}x{GRID} patches"),
                       (axes[0, 1], unpatchify(masked_view), f"{RATIO:.0%} of the patches masked:\n"
                        f"the encoder sees {N_TOKENS - N_MASKED} of {N_TOKENS}"),
                       (axes[1, 0], unpatchify(reconstruction), "masked patches predicted from context\n"
                        f"(linear toy; MSE {errors['linear, loss on masked'][0]:.4f} here)")):
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, IMAGE, PATCH), minor=True)
    ax.set_yticks(np.arange(-0.5, IMAGE, PATCH), minor=True)
    ax.grid(which="minor", color="w", lw=0.4, alpha=0.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=10.5)
ax = axes[1, 1]
names = list(mse)
ax.barh(range(len(names)), [mse[n] for n in names], color=["tab:gray", "tab:gray", "tab:blue", "tab:orange",
                                                           "tab:red"])
ax.set_yticks(range(len(names)))
ax.set_yticklabels([n.replace(", ", ",\n") for n in names], fontsize=10)
ax.invert_yaxis()
ax.set_xlabel("MSE (pixel values in [0, 1]); on masked patches\nexcept the last bar (visible patches)", fontsize=10)
for k, n in enumerate(names):
    ax.text(mse[n], k, f" {mse[n]:.4f}", va="center", fontsize=10)
ax.set_xlim(0, 1.3 * max(mse.values()))
ax.tick_params(labelsize=10)
ax.set_title(f"{N_TEST} test images: context beats a guess;\na loss on all patches is easy on visible ones",
             fontsize=10.5)
fig.suptitle("MAE's objective in miniature: hide 75% of the patches, predict them from the rest", fontsize=11.5)
fig.tight_layout()
_lesson.save(fig, args, "06_mae.png")
plt.close(fig)
