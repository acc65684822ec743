"""Lesson 07: from tokens to pixels: upscaling and hypernetworks.

After the two-way transformer (lesson 06) the decoder holds an updated image embedding
(256 x 64 x 64) and updated output tokens. Masks come out in two moves (Kirillov et al. 2023,
section 3 "Mask decoder", appendix A; official ``modeling/mask_decoder.py`` predict_masks;
minisam ``minisam/mask_decoder.py``):

1. Upscale the image embedding 4x with two transposed convolutions, kernel 2 stride 2
   (256 -> 64 channels at 128 x 128, LayerNorm2d, GELU; -> 32 channels at 256 x 256, GELU).
   With kernel = stride = 2 the patches do not overlap: every input pixel paints its own 2x2
   output patch, so each transposed conv is a single matrix product.
2. Each of the 4 mask tokens goes through its own 3-layer MLP (a "hypernetwork") to a
   32-vector. The mask logits are the dot product of that vector with the 32 upscaled
   channels at every pixel: a 1x1 convolution whose weights are *computed from the prompt*.
   One matrix product makes all 4 masks: [4, 32] @ [32, 256*256].

The figures show the upscaled channels and, for each mask token, its 32 weights and the
resulting 256 x 256 logits (random vit_b-sized weights, synthetic embedding as in lesson 06).

Run:  MPLBACKEND=Agg python lessons/07_upsampling_and_hypernetworks.py --out out/07
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
from minisam.sam import Sam  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="out/07")
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


def synthetic_embedding(cfg, seed=0, disc=(20, 40, 9)):
    """[1, C, G, G]: a smooth random field (low-pass noise) plus one vector inside a disc."""
    rng = np.random.default_rng(seed)
    C, G = cfg.prompt_embed_dim, cfg.image_embedding_size
    noise = rng.standard_normal((C, G, G))
    k = np.exp(-0.5 * (np.arange(-6, 7) / 2.5) ** 2)
    k /= k.sum()
    for axis in (1, 2):  # separable Gaussian blur: smooth over ~3 cells
        noise = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), axis, noise)
    noise /= noise.std()
    yy, xx = np.mgrid[0:G, 0:G]
    inside = np.hypot(yy - disc[0], xx - disc[1]) < disc[2]  # [G, G]
    noise[:, inside] += 2.0 * rng.standard_normal((C, 1))
    return noise[None].astype(np.float32), inside


cfg = VIT_B
sam = Sam(cfg, random_prompt_decoder_params(cfg, seed=1))
emb, inside = synthetic_embedding(cfg)
K = cfg.num_mask_tokens
trace = {}
sparse, dense = sam.prompt_encoder(points=(np.array([[[640.0, 330.0]]], np.float32), np.array([[1]])), trace=trace)
masks, iou = sam.mask_decoder(emb, sam.get_dense_pe(), sparse, dense, multimask_output=True, trace=trace)

up = "mask_decoder.output_upscaling"
names = ["ConvTranspose2d 2x2/2", "LayerNorm2d", "GELU", "ConvTranspose2d 2x2/2", "GELU"]
print(f"image embedding after the transformer: {trace['mask_decoder.transformer'][1].shape} -> [1, 256, 64, 64]")
for i, n in enumerate(names):
    print(f"  output_upscaling.{i} {n:<22} -> {trace[f'{up}.{i}'].shape}")
upscaled = trace[up]  # [1, 32, 256, 256]
hyper = np.stack([trace[f"mask_decoder.output_hypernetworks_mlps.{k}"] for k in range(K)], axis=1)  # [1, K, 32]
print(f"hypernetwork outputs: {K} x {trace['mask_decoder.output_hypernetworks_mlps.0'].shape} -> {hyper.shape}")
all_masks = (hyper @ upscaled.reshape(1, 32, -1)).reshape(1, K, 256, 256)  # [1, K, 32] @ [1, 32, 65536]
print(f"masks = hyper @ upscaled: {all_masks.shape}; the multimask output keeps tokens 1..3: "
      f"max |difference| = {np.abs(all_masks[:, 1:] - masks).max():.2e}")

# --- Upscaled feature channels.
fig, axes = plt.subplots(2, 6, figsize=(15, 5.4))
for j, ax in enumerate(axes[0]):
    ax.imshow(trace[f"{up}.2"][0, j], cmap="magma")
    ax.set_title(f"128x128 ch {j}")
    ax.axis("off")
for j, ax in enumerate(axes[1]):
    ax.imshow(upscaled[0, j], cmap="magma")
    ax.set_title(f"256x256 ch {j}")
    ax.axis("off")
fig.suptitle("Upscaled image embedding: after the first (top) and second (bottom) transposed conv + GELU")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "07_upscaled_channels.png"), dpi=80)
plt.close(fig)

# --- Hypernetwork weights and the mask logits they make.
fig, axes = plt.subplots(2, K, figsize=(4 * K, 7))
lim = np.abs(all_masks).max()
for k in range(K):
    axes[0, k].bar(np.arange(32), hyper[0, k], color="C0" if k == 0 else "C1")
    axes[0, k].set_title(f"mask token {k}: 32 weights" + (" (single-mask)" if k == 0 else ""))
    im = axes[1, k].imshow(all_masks[0, k], cmap="RdBu_r", vmin=-lim, vmax=lim)
    # random transposed-conv weights leave a 2x2 checkerboard: each input pixel paints its own patch
    axes[1, k].set_title(f"mask {k} logits, {100 * (all_masks[0, k] > 0).mean():.0f}% > 0")
    axes[1, k].axis("off")
fig.colorbar(im, ax=axes[1, :], shrink=0.8)
fig.suptitle("Each mask = its token's hypernetwork vector . the 32 upscaled channels, per pixel")
fig.savefig(os.path.join(args.out, "07_mask_logits.png"), dpi=80, bbox_inches="tight")
plt.close(fig)
