"""Lesson 05: the prompt encoder: where things are, and what they are.

SAM's decoder reads prompts as tokens of C = 256 numbers (Kirillov et al. 2023, section 3,
"Prompt encoder"; official ``modeling/prompt_encoder.py``; minisam ``minisam/prompt_encoder.py``).

- WHERE: a location (x, y) becomes a random-Fourier feature (Tancik et al. 2020): map it to
  [-1, 1]^2, project it on 128 random directions (a fixed 2 x 128 Gaussian matrix stored in
  the checkpoint), and take sin and cos of 2 pi times each projection: 256 numbers whose
  dot product with another location's features falls off with distance. Plain (x, y)
  numbers would give the network only two inputs; these give it many frequencies at once.
- WHAT: a learned vector is added: foreground point, background point, box top-left or
  box bottom-right corner. A padding "not a point" token (zeroed PE + its own vector) is
  appended when there is no box, as in training.
- The same PE evaluated at the centre of each of the 64 x 64 embedding cells is the *dense*
  PE that the decoder adds to the image embedding, so prompts and pixels speak the same
  positional language.
- Mask prompts (low-res logits of a previous prediction, 256 x 256) go through two strided
  2x2 convs (LayerNorm2d + GELU) and a 1x1 conv down to 256 x 64 x 64, added to the image
  embedding. Without a mask a learned "no mask" vector is added everywhere.

This lesson uses vit_b's prompt encoder shapes with random weights (the Gaussian matrix is
N(0, 1), exactly as the official init draws it, so the PE figures are the real thing).

Run:  MPLBACKEND=Agg python lessons/05_prompt_encoder.py --out out/05
"""

import argparse
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minisam.config import VIT_B, expected_shapes  # noqa: E402
from minisam.params import nest  # noqa: E402
from minisam.prompt_encoder import dense_pe, pe_with_coords, prompt_encoder  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="out/05")
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)


def random_prompt_decoder_params(cfg, seed=0):
    """Random prompt-encoder and mask-decoder weights at sensible scales (no image encoder)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for k, shape in expected_shapes(cfg).items():
        if k.startswith("image_encoder."):
            continue
        leaf = k.rsplit(".", 1)[1]
        if "norm" in k or any(s in k for s in ("downscaling.1.", "downscaling.4.", "upscaling.1.")):
            v = (1.0 if leaf == "weight" else 0.0) + 0.1 * rng.standard_normal(shape)
        elif leaf == "positional_encoding_gaussian_matrix" or "embed" in k.split(".")[1] \
                or k.startswith(("mask_decoder.iou_token", "mask_decoder.mask_tokens")):
            v = rng.standard_normal(shape)
        elif leaf == "bias":
            v = 0.02 * rng.standard_normal(shape)
        else:
            fan_in = shape[0] if "upscaling" in k else int(np.prod(shape[1:]))
            v = rng.standard_normal(shape) / np.sqrt(fan_in)
        flat[k] = v.astype(np.float32)
    return nest(flat)


cfg = VIT_B
p = random_prompt_decoder_params(cfg)["prompt_encoder"]
C, G, S = cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.img_size
gauss = p["pe_layer"]["positional_encoding_gaussian_matrix"]
print(f"Gaussian matrix: {gauss.shape} (2 coordinates x {C // 2} random directions)")

# --- 1. The dense PE: one C-vector per cell of the G x G embedding grid.
pe = dense_pe(p, cfg)  # [C, G, G]
print(f"dense PE: {pe.shape}  (channels 0..{C // 2 - 1} = sin, {C // 2}..{C - 1} = cos)")
freq = np.linalg.norm(gauss, axis=0)  # [C/2], spatial frequency of each sin/cos pair
order = np.argsort(freq)
picks = [order[0], order[len(order) // 3], order[2 * len(order) // 3], order[-1]]
fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
for j, c in enumerate(picks):
    for i, (off, name) in enumerate([(0, "sin"), (C // 2, "cos")]):
        ax = axes[i, j]
        ax.imshow(pe[c + off], cmap="RdBu", vmin=-1, vmax=1)
        ax.set_title(f"{name} ch {c + off}, |g| = {freq[c]:.2f}")
        ax.axis("off")
fig.suptitle("Dense positional encoding: low to high random frequencies (vit_b sizes, 64 x 64 grid)")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "05_dense_pe_channels.png"), dpi=90)
plt.close(fig)

# --- 2. Why random Fourier features: similarity falls off with distance.
flat_pe = pe.reshape(C, G * G)  # [C, N]
unit = flat_pe / np.linalg.norm(flat_pe, axis=0, keepdims=True)  # [C, N], unit vectors
refs = [(8, 8), (32, 32), (50, 20)]  # (row, col) cells
fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
for ax, (r, c) in zip(axes, refs):
    sim = (unit[:, r * G + c] @ unit).reshape(G, G)  # [G, G], cosine similarity to cell (r, c)
    im = ax.imshow(sim, cmap="magma", vmin=-0.3, vmax=1)
    ax.plot(c, r, "c+", ms=14, mew=2)
    ax.set_title(f"similarity to (y={r}, x={c})")
    ax.axis("off")
fig.colorbar(im, ax=axes[:3], shrink=0.8)
dist = np.hypot(*np.meshgrid(np.arange(G) - 32, np.arange(G) - 32, indexing="ij")).ravel()  # [N]
sim = unit[:, 32 * G + 32] @ unit  # [N]
bins = np.arange(0, 46, 2)
means = [sim[(dist >= a) & (dist < a + 2)].mean() for a in bins]
axes[3].plot(bins + 1, means, "o-")
axes[3].set_xlabel("distance from the centre cell (cells)")
axes[3].set_ylabel("mean cosine similarity")
axes[3].set_title("a kernel peaked at the position")
axes[3].grid(alpha=0.3)
fig.savefig(os.path.join(args.out, "05_pe_similarity.png"), dpi=90, bbox_inches="tight")
plt.close(fig)

# --- 3. Sparse tokens: points and a box.
pts = np.array([[[400.0, 300.0], [700.0, 650.0]]], np.float32)  # [B=1, N=2, 2] in the 1024 frame
labels = np.array([[1, 0]])  # foreground, background
sparse, dense = prompt_encoder(p, cfg, (pts, labels))
print(f"2 points, no box: sparse {sparse.shape} (2 points + 1 padding token), dense {dense.shape}")
box = np.array([[100.0, 120.0, 800.0, 900.0]], np.float32)
sparse_b, _ = prompt_encoder(p, cfg, (pts, labels), box)
print(f"2 points + box:   sparse {sparse_b.shape} (2 points + 2 corners, no padding)")
bare = pe_with_coords(p, cfg, pts + 0.5)[0]  # [2, C], the PE of the pixel centres
print("point token = PE + label vector:",
      np.allclose(sparse[0, 0] - bare[0], p["point_embeddings"][1]["weight"][0], atol=1e-5),
      "| background:", np.allclose(sparse[0, 1] - bare[1], p["point_embeddings"][0]["weight"][0], atol=1e-5),
      "| padding = not_a_point_embed:", np.array_equal(sparse[0, 2], p["not_a_point_embed"]["weight"][0]))

# --- 4. A mask prompt: 256 x 256 logits -> 256 x 64 x 64.
yy, xx = np.mgrid[0:4 * G, 0:4 * G]
mask_logits = (20.0 - np.hypot(yy - 100, xx - 140) / 2).astype(np.float32)[None, None]  # [1, 1, 256, 256]
trace = {}
_, dense_m = prompt_encoder(p, cfg, masks=mask_logits, trace=trace)
for i in range(7):
    print(f"  mask_downscaling.{i}: {trace[f'prompt_encoder.mask_downscaling.{i}'].shape}")
print(f"mask prompt -> dense {dense_m.shape}")
