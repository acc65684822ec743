# %% [markdown]
# # Lesson 05: from a photo to a grid of patch tokens
#
# SAM's image encoder sees one fixed input: an S x S float image (S = 1024 for the official
# models, 128 for minisam's micro model). Any photo gets there in three steps (Kirillov et al.
# 2023, appendix A; official ``utils/transforms.py`` and ``modeling/sam.py``; minisam
# ``minisam/utils/transforms.py``):
#
# 1. resize so the LONGEST side is S, keeping the aspect ratio (Pillow bilinear, which
#    antialiases when shrinking);
# 2. normalize each channel with the ImageNet mean and std;
# 3. pad with zeros on the bottom and right up to S x S -- zeros *after* normalization, so
#    the padding looks like an "average grey" pixel to the network.
#
# Then the ViT cuts the square into P x P patches (P = 16 for the official models, 8 for
# micro) and maps each patch to a D-dim token with one linear layer (a stride-P conv is exactly that), and adds a learned absolute
# position embedding per grid cell. This lesson runs the real minisam code with the model's
# own weights (``--model micro`` by default, ``--model vit_b`` / ``--checkpoint PATH`` for
# the official ones) on a wide crop of a synthetic scene, and draws each step.
#
# Run:  python lessons/05_preprocessing_and_patches.py --out out/05

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("05", "Lesson 05: from a photo to a grid of patch tokens",
                          photo="the whole lesson, in place of the synthetic landscape crop")

import matplotlib.pyplot as plt  # noqa: E402

from minisam.training.shapes import make_scene  # noqa: E402
from minisam.modeling.image_encoder import patch_embed  # noqa: E402
from minisam.utils.images import to_rgb_uint8  # noqa: E402
from minisam.utils.transforms import ResizeLongestSide  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
S, P, D, G = cfg.img_size, cfg.patch_size, cfg.encoder_embed_dim, cfg.image_embedding_size
enc = sam.params["image_encoder"]


# %% [markdown]
# ## A "photo" that is not square: a landscape crop (2:3) of a synthetic scene
#
# Scenes come square; cutting a wide band out of one gives the aspect ratio that makes the
# padding visible. Its own size is unrelated to S, as a photo's would be. With
# ``--image PATH`` the lesson runs on your photo instead, and everything below holds for it too.

# %%
if args.photo is not None:
    photo = args.photo                                  # [H, W, 3] uint8, read by minisam.utils.images.read_image
else:
    scene = make_scene(np.random.default_rng(2), 450)
    photo = to_rgb_uint8(scene.image[75:375])           # [300, 450, 3]; checks dtype and shape
H, W = photo.shape[:2]
print("photo", photo.shape, photo.dtype, f"({args.image})" if args.image else "(synthetic)")


# %% [markdown]
# ## Step 1: resize the longest side to S

# %%
resize = ResizeLongestSide(S)
newh, neww = resize.get_preprocess_shape(H, W, S)
resized = resize.apply_image(photo)                     # [newh, neww, 3] uint8
print("resized", resized.shape, "= get_preprocess_shape", (newh, neww))
_lesson.claim(max(resized.shape[:2]) == S and resized.shape[:2] == (newh, neww)
              and abs(newh / neww - H / W) <= 1 / min(newh, neww),
              "the longest side becomes S and the aspect ratio is kept (to one pixel)")

# Prompts live in the same resized frame: a click moves with the image.
click = np.array([[W * 0.7, H * 0.4]])                  # [1, 2] (x, y) in the photo
moved = resize.apply_coords(click, (H, W))              # [1, 2] (x, y) in the resized image
print("click (x, y)", click[0], "-> in the resized image", moved[0])


# %% [markdown]
# ## Steps 2 and 3: normalize, then pad with zeros to a square

# %%
x = sam.preprocess(resized.transpose(2, 0, 1)[None])    # [1, 3, S, S] float32
print("model input", x.shape, x.dtype, "| pad rows", S - newh, "cols", S - neww,
      "| all zeros:", bool(np.all(x[:, :, newh:] == 0) and np.all(x[:, :, :, neww:] == 0)))
print("pixel mean", np.asarray(cfg.pixel_mean), "std", np.asarray(cfg.pixel_std),
      "-> a pad pixel reads as the mean colour")
mean_pixel = np.asarray(cfg.pixel_mean, np.float32)[:, None, None]                 # [3, 1, 1]
_lesson.claim(np.all(x[:, :, newh:] == 0) and np.all(x[:, :, :, neww:] == 0)
              and np.allclose(sam.preprocess(np.broadcast_to(mean_pixel, (3, 2, 2))[None])[0, :, :2, :2], 0),
              "the padding is zeros after normalization, the value a mean-colour pixel gets")


# %% [markdown]
# ## Patches: a PxP stride-P conv == cut into patches, flatten, one matmul

# %%
proj = enc["patch_embed"]["proj"]                       # weight [D, 3, P, P], bias [D]
tokens = patch_embed(enc["patch_embed"], x, P)          # [1, G, G, D]
print("patch tokens", tokens.shape, f"= a {G}x{G} grid of {D}-dim vectors")
# Check one token against the convolution written out by hand.
gy, gx = G // 4, G // 3
patch = x[0, :, gy * P:(gy + 1) * P, gx * P:(gx + 1) * P]                   # [3, P, P]
by_hand = np.einsum("dcij,cij->d", proj["weight"], patch) + proj["bias"]   # [D]
print(f"token ({gy}, {gx}) vs the conv by hand: max |diff| =",
      float(np.abs(by_hand - tokens[0, gy, gx]).max()))
# ...and as cut-flatten-matmul over the whole image at once.
cut = x[0].reshape(3, G, P, G, P).transpose(1, 3, 0, 2, 4).reshape(G * G, 3 * P * P)  # [G*G, 3*P*P]
as_matmul = cut @ proj["weight"].reshape(D, -1).T + proj["bias"]                    # [G*G, D]
print("all tokens as one matmul [G*G, 3*P*P] @ [3*P*P, D]:", as_matmul.shape, "max |diff| =",
      float(np.abs(as_matmul - tokens[0].reshape(G * G, D)).max()))
scale = float(np.abs(tokens).max())
# float32 sums of 3*P*P products in a different order: a few ulps of the largest token value
_lesson.claim(np.abs(by_hand - tokens[0, gy, gx]).max() <= 1e-5 * scale
              and np.abs(as_matmul - tokens[0].reshape(G * G, D)).max() <= 1e-5 * scale,
              "a stride-P conv is exactly cut into patches, flatten, one matmul (float32 rounding only)")

# The absolute position embedding: one learned D-vector per grid cell, added to the tokens.
# It starts at zero (official ``ImageEncoderViT.__init__``): any structure in it is learned.
pos = enc["pos_embed"]                                   # [1, G, G, D]
print("pos_embed", pos.shape, f"mean |value| {float(np.abs(pos).mean()):.4f}",
      "| tokens + pos_embed:", (tokens + pos).shape)


# %% [markdown]
# ## Figure 1: the three stages of the input

# %%
fig, axes = plt.subplots(1, 3, figsize=(8.6, 3.4))
axes[0].imshow(photo)
axes[0].plot(*click[0], "r+", ms=14, mew=2)
axes[0].set_title(f"photo {H}x{W}\n(+: a click)", fontsize=10)
axes[1].imshow(resized)
axes[1].plot(*moved[0], "r+", ms=14, mew=2)
axes[1].set_title(f"resized {newh}x{neww}\n(longest side {S})", fontsize=10)
im = axes[2].imshow(x[0, 0], cmap="coolwarm", vmin=-2.2, vmax=2.2)
axes[2].axhline(newh - 0.5, color="k", ls="--")
axes[2].set_title(f"red channel, normalized,\nzero-padded to {S}x{S}", fontsize=10)
cbar = fig.colorbar(im, ax=axes[2], fraction=0.046)
cbar.set_label("(value - mean) / std", fontsize=10)
for ax in axes:
    ax.tick_params(labelsize=10)
fig.tight_layout()
_lesson.save(fig, args, "05_padded_input.png")
plt.close(fig)


# %% [markdown]
# ## Figure 2: the patch grid, the learned patch filters, the tokens, the positions
#
# The tokens are drawn by their 3 principal components as RGB: tokens that look alike get
# alike colours, so the shapes (and the uniform padding) show up in the grid.

# %%
flat = tokens[0].reshape(G * G, D)                                          # [G*G, D]
centred = flat - flat.mean(0)                                               # [G*G, D]
_, _, vt = np.linalg.svd(centred, full_matrices=False)                      # vt [D, D]
pc = centred @ vt[:3].T                                                     # [G*G, 3]
pc = (pc - pc.min(0)) / (np.ptp(pc, 0) + 1e-9)
# Position embedding: cosine similarity of every cell's vector with the centre cell's.
pe = pos[0].reshape(G * G, D)                                               # [G*G, D]
pe = pe / (np.linalg.norm(pe, axis=1, keepdims=True) + 1e-9)
centre = (G // 2) * G + G // 2
similarity = (pe @ pe[centre]).reshape(G, G)                                # [G, G]
# The 16 filters with the largest weights, each [3, P, P] shown as an RGB patch.
strongest = np.argsort(-np.abs(proj["weight"]).reshape(D, -1).sum(1))[:16]
filters = proj["weight"][strongest].transpose(0, 2, 3, 1)                   # [16, P, P, 3]
filters = (filters - filters.min()) / (np.ptp(filters) + 1e-9)
mosaic = np.ones((4 * (P + 1), 4 * (P + 1), 3))                              # [4(P+1), 4(P+1), 3]
for n, f in enumerate(filters):
    r, c = divmod(n, 4)
    mosaic[r * (P + 1):r * (P + 1) + P, c * (P + 1):c * (P + 1) + P] = f

fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
shown = np.clip(x[0].transpose(1, 2, 0) * 0.25 + 0.5, 0, 1)
axes[0].imshow(shown)
for k in range(G + 1):
    axes[0].axhline(k * P - 0.5, color="w", lw=0.4)
    axes[0].axvline(k * P - 0.5, color="w", lw=0.4)
axes[0].add_patch(plt.Rectangle((gx * P - 0.5, gy * P - 0.5), P, P, fill=False, ec="r", lw=2))
axes[0].set_title(f"{G}x{G} patches of {P}x{P} px (red: token ({gy}, {gx}))")
axes[1].imshow(mosaic, interpolation="nearest")
axes[1].set_title(f"16 of the {D} learned patch filters [3, {P}, {P}]")
axes[2].imshow(pc.reshape(G, G, 3), interpolation="nearest")
axes[2].set_title("patch tokens: top 3 principal components as RGB")
im = axes[3].imshow(similarity, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
axes[3].plot(G // 2, G // 2, "r+", ms=12, mew=2)
axes[3].set_title("pos_embed: cosine similarity to the centre cell")
fig.colorbar(im, ax=axes[3], fraction=0.046)
for a in axes:
    a.axis("off")
fig.tight_layout()
_lesson.save(fig, args, "05_patch_grid.png")
plt.close(fig)
