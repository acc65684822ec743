"""Lesson 06: the two-way transformer: prompts read the image, the image reads the prompts.

The mask decoder (Kirillov et al. 2023, section 3 and appendix A, figure 14; official
``modeling/transformer.py``; minisam ``minisam/transformer.py``) works on two sets of tokens:
- T prompt-side tokens: 1 IoU token + 4 mask tokens (learned) + the sparse prompt tokens
  (lesson 05);
- N = 64 x 64 = 4096 image tokens: the image embedding plus the dense prompt embedding.
Each of the 2 blocks runs, in order:
  1. self-attention among the T tokens (block 0: no residual and no PE, it *replaces* them);
  2. token -> image cross-attention: each token is a query over the 4096 image positions
     (q = token + its PE, k = image + dense PE, v = image *without* PE);
  3. an MLP on the tokens (256 -> 2048 -> 256, ReLU);
  4. image -> token cross-attention: each image position queries the T tokens, so the image
     embedding is updated by the prompt (this is what makes the mask depend on the prompt).
After the blocks, one more token -> image attention and a LayerNorm. The positional
encodings are re-added before *every* attention: the prompt tokens' original values stand
in as their PE. Cross-attentions work in 128 channels (downsample rate 2), 8 heads of 16.

The figures show the softmax weights of token -> image attention for the point token, per
layer and head, as 64 x 64 maps, and where the image looks at each token. Weights are random
(vit_b shapes); the image embedding is synthetic: a smooth random field with a disc that
carries its own vector, so that content-based attention has something to find.

Run:  MPLBACKEND=Agg python lessons/06_two_way_transformer.py --out out/06
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
ap.add_argument("--out", default="out/06")
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
params = random_prompt_decoder_params(cfg, seed=1)
sam = Sam(cfg, params)
emb, inside = synthetic_embedding(cfg)
G, K = cfg.image_embedding_size, cfg.num_mask_tokens
point = np.array([[[640.0, 330.0]]], np.float32)  # inside the disc: cell (y=20, x=40) * 16 + 8
trace = {}
sparse, dense = sam.prompt_encoder(points=(point, np.array([[1]])), trace=trace)
masks, iou = sam.mask_decoder(emb, sam.get_dense_pe(), sparse, dense, multimask_output=True, trace=trace)
T = 1 + K + sparse.shape[1]
print(f"tokens: 1 IoU + {K} mask + {sparse.shape[1]} prompt (point + padding) = {T}; image tokens: {G * G}")
t = "mask_decoder.transformer"
for i in range(cfg.decoder_depth):
    L = f"{t}.layers.{i}"
    for name in ("self_attn", "cross_attn_token_to_image", "mlp", "cross_attn_image_to_token"):
        print(f"  layer {i} {name:<28} out {trace[f'{L}.{name}'].shape}")
    print(f"  layer {i} -> (tokens {trace[L][0].shape}, image {trace[L][1].shape})")
print(f"  final token->image attention {trace[t + '.final_attn_token_to_image'].shape}, "
      f"norm -> {trace[t + '.norm_final_attn'].shape}")

# --- Token -> image attention of the point token, per layer and head.
names = [f"{t}.layers.{i}.cross_attn_token_to_image" for i in range(cfg.decoder_depth)]
names.append(f"{t}.final_attn_token_to_image")
heads = cfg.decoder_num_heads
point_tok = 1 + K  # index of the point token among the T tokens
fig, axes = plt.subplots(len(names), heads, figsize=(2.0 * heads, 2.2 * len(names)))
for r, name in enumerate(names):
    w = trace[name + ".attn_weights"]  # [B, h, T, N]
    print(f"{name}.attn_weights {w.shape}: row sums = {w[0, 0, point_tok].sum():.4f}")
    for h in range(heads):
        ax = axes[r, h]
        ax.imshow(w[0, h, point_tok].reshape(G, G), cmap="viridis")  # [N] -> [G, G]
        ax.contour(inside, levels=[0.5], colors="w", linewidths=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(f"head {h}")
    axes[r, 0].set_ylabel(["layer 0", "layer 1", "final"][r] if r < 3 else name, fontsize=11)
fig.suptitle("Token -> image attention of the point token (64 x 64 softmax weights; white: the disc)")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "06_token_to_image_attention.png"), dpi=80)
plt.close(fig)

# --- Image -> token attention: which token does each image position read? (layer 0, head-averaged)
w = trace[f"{t}.layers.0.cross_attn_image_to_token.attn_weights"][0].mean(0)  # [h, N, T] -> [N, T]
labels = ["IoU"] + [f"mask {k}" for k in range(K)] + ["point", "pad"]
fig, axes = plt.subplots(1, T, figsize=(2.2 * T, 2.6))
for j in range(T):
    axes[j].imshow(w[:, j].reshape(G, G), cmap="viridis", vmin=0, vmax=w.max())
    axes[j].set_title(labels[j] if j < len(labels) else f"token {j}")
    axes[j].axis("off")
fig.suptitle("Image -> token attention, layer 0 (mean over heads): each map sums to 1 across tokens")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "06_image_to_token_attention.png"), dpi=80)
plt.close(fig)
print(f"masks {masks.shape}, IoU predictions {np.round(iou, 3)}")
