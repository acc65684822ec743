"""Lesson 02: from a photo to a grid of patch tokens.

SAM's image encoder sees one fixed input: a 1024x1024 float image. Any photo gets there in
three steps (Kirillov et al. 2023, appendix A; official ``utils/transforms.py`` and
``modeling/sam.py``):

1. resize so the LONGEST side is 1024, keeping the aspect ratio (Pillow bilinear, which
   antialiases when shrinking);
2. normalize each channel with the ImageNet mean and std;
3. pad with zeros on the bottom and right up to 1024x1024 -- zeros *after* normalization,
   so the padding looks like an "average grey" pixel to the network.

Then the ViT cuts the square into 16x16 patches and maps each patch to a D-dim token with
one linear layer (a stride-16 conv is exactly that). This lesson runs the real minisam
code at a small size (input 256, so the figures stay legible) and draws each step.

Run:  MPLBACKEND=Agg python lessons/02_preprocessing_and_patches.py --out out/02
"""

import argparse
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minisam.config import make_config  # noqa: E402
from minisam.image_encoder import patch_embed  # noqa: E402
from minisam.transforms import ResizeLongestSide, as_rgb_uint8, preprocess  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="out/02")
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)

# --- A synthetic "photo": landscape 300 x 450, a sky gradient, a sun and a house.
H, W = 300, 450
yy, xx = np.mgrid[0:H, 0:W]
photo = np.zeros((H, W, 3), np.uint8)
photo[..., 2] = 255 - yy * 120 // H                      # blue sky, darker at the bottom
photo[..., 1] = 120 + yy * 60 // H
photo[(xx - 340) ** 2 + (yy - 70) ** 2 < 35 ** 2] = (250, 210, 40)    # sun
photo[170:290, 80:230] = (150, 60, 40)                                 # house
photo[200:250, 130:170] = (60, 40, 30)                                 # door
photo = as_rgb_uint8(photo)              # checks dtype/shape; greyscale or RGBA would be converted
print("photo", photo.shape, photo.dtype)

# --- Step 1: resize the longest side. A small model (input 256) keeps the figures readable;
# the official models use 1024 and the code is the same.
cfg = make_config(img_size=256, patch_size=16, encoder_embed_dim=32, encoder_depth=1,
                  encoder_num_heads=2, encoder_global_attn_indexes=(), window_size=4)
resize = ResizeLongestSide(cfg.img_size)
newh, neww = resize.get_preprocess_shape(H, W, cfg.img_size)
resized = resize.apply_image(photo)                     # [h, w, 3] uint8
print("resized", resized.shape, "= get_preprocess_shape", (newh, neww))

# Prompts live in the same resized frame: a click at the sun's centre moves with the image.
sun = resize.apply_coords(np.array([[340.0, 70.0]]), (H, W))
print("sun centre (x, y) in the resized image", sun[0])

# --- Steps 2 and 3: normalize, then pad with zeros to a square.
x = preprocess(resized.transpose(2, 0, 1)[None], cfg)   # [1, 3, 256, 256] float32
print("model input", x.shape, x.dtype, "pad rows", cfg.img_size - newh, "(all zeros:",
      bool(np.all(x[:, :, newh:] == 0)), ")")

# --- Patches: a 16x16 stride-16 conv == cut into patches, flatten, one matmul.
rng = np.random.default_rng(0)
D, P = cfg.encoder_embed_dim, cfg.patch_size
proj = {"proj": {"weight": (rng.standard_normal((D, 3, P, P)) / np.sqrt(3 * P * P)).astype(np.float32),
                 "bias": np.zeros(D, np.float32)}}
tokens = patch_embed(proj, x, P)                        # [1, G, G, D]
G = cfg.image_embedding_size
print("patch tokens", tokens.shape, f"= a {G}x{G} grid of {D}-dim vectors")
# Check one token against the convolution written out by hand.
gy, gx = 3, 5
patch = x[0, :, gy * P:(gy + 1) * P, gx * P:(gx + 1) * P]                # [3, P, P]
by_hand = np.einsum("dcij,cij->d", proj["proj"]["weight"], patch)       # [D]
print("token (3, 5) vs the conv by hand: max |diff| =", float(np.abs(by_hand - tokens[0, gy, gx]).max()))

# --- Figure 1: the three stages of the input.
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
axes[0].imshow(photo)
axes[0].set_title(f"photo {H}x{W}")
axes[1].imshow(resized)
axes[1].plot(*sun[0], "r+", ms=14, mew=2)
axes[1].set_title(f"resized {newh}x{neww} (longest side {cfg.img_size})")
im = axes[2].imshow(x[0, 0], cmap="coolwarm", vmin=-2.2, vmax=2.2)
axes[2].axhline(newh - 0.5, color="k", ls="--")
axes[2].set_title("normalized red channel, zero-padded")
fig.colorbar(im, ax=axes[2], fraction=0.046)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "02_padded_input.png"), dpi=80)

# --- Figure 2: the patch grid, and what the tokens look like (3 random projections -> RGB).
fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
shown = np.clip(x[0].transpose(1, 2, 0) * 0.25 + 0.5, 0, 1)
axes[0].imshow(shown)
for k in range(G + 1):
    axes[0].axhline(k * P - 0.5, color="w", lw=0.5)
    axes[0].axvline(k * P - 0.5, color="w", lw=0.5)
axes[0].add_patch(plt.Rectangle((gx * P - 0.5, gy * P - 0.5), P, P, fill=False, ec="r", lw=2))
axes[0].set_title(f"{G}x{G} patches of {P}x{P} px (red: token (3, 5))")
pc = tokens[0].reshape(-1, D) @ rng.standard_normal((D, 3))             # [G*G, 3]
pc = (pc - pc.min(0)) / (np.ptp(pc, 0) + 1e-9)
axes[1].imshow(pc.reshape(G, G, 3), interpolation="nearest")
axes[1].set_title("patch tokens (3 random projections as RGB)")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "02_patch_grid.png"), dpi=80)
print("wrote", sorted(f for f in os.listdir(args.out) if f.startswith("02_")))
