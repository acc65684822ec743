"""Lesson 04: global attention blocks and the neck.

Windows (lesson 03) never let information cross a window border. SAM's ViT therefore makes
four of its blocks global (ViT-B: blocks 2, 5, 8, 11): the same attention with decomposed
relative positions, but over the whole 64 x 64 grid, so every token sees every other.
After the last block, the "neck" turns the D-dim tokens into the 256-channel image
embedding the mask decoder reads: 1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d.
Kirillov et al. 2023, appendix A; official ``modeling/image_encoder.py`` (Block with
window_size 0, ImageEncoderViT.neck) and ``modeling/common.py`` (LayerNorm2d).

Memory: a global block at full size holds nH x 4096 x 4096 scores, 805 MB for ViT-B in
float32. minisam computes them in chunks of query rows (``image_encoder._SCORE_BUDGET``
floats at a time): softmax is per query row, so chunking changes nothing in the result.

This lesson runs the whole minisam encoder on a small random model with a trace, then
recomputes one global attention map and draws it with the embedding channels.

Run:  MPLBACKEND=Agg python lessons/04_global_attention_and_neck.py --out out/04
"""

import argparse
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minisam import image_encoder as enc  # noqa: E402
from minisam.config import VIT_B, expected_shapes, make_config  # noqa: E402
from minisam.kernels import softmax_rel_pos_  # noqa: E402
from minisam.params import nest  # noqa: E402
from minisam.transforms import ResizeLongestSide, preprocess  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="out/04")
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)


def random_params(cfg, seed=0):
    """Random image-encoder weights at sensible scales (LayerNorms near 1/0, rel-pos tables
    with a smooth distance-dependent part, so the maps below have some structure)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for k, shape in expected_shapes(cfg).items():
        if not k.startswith("image_encoder."):
            continue
        leaf = k.rsplit(".", 1)[1]
        if ".norm" in k or ".neck.1." in k or ".neck.3." in k:
            v = (1.0 if leaf == "weight" else 0.0) + 0.1 * rng.standard_normal(shape)
        elif leaf.startswith("rel_pos"):
            L, hd = shape
            u = rng.standard_normal(hd)
            v = -np.abs(np.arange(L) - (L - 1) / 2)[:, None] * u / np.sqrt(hd) / 3 + 0.05 * rng.standard_normal(shape)
        elif leaf == "pos_embed":
            v = 0.5 * rng.standard_normal(shape)
        elif leaf == "bias":
            v = 0.02 * rng.standard_normal(shape)
        else:
            v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        flat[k] = v.astype(np.float32)
    return nest(flat)["image_encoder"]


cfg = make_config(img_size=256, patch_size=16, encoder_embed_dim=32, encoder_depth=3,
                  encoder_num_heads=2, encoder_global_attn_indexes=(1,), window_size=4,
                  prompt_embed_dim=16)
p = random_params(cfg)
G, D, nH = cfg.image_embedding_size, cfg.encoder_embed_dim, cfg.encoder_num_heads
hd = D // nH
gb = cfg.encoder_global_attn_indexes[0]
print(f"grid {G}x{G}; blocks {list(range(cfg.encoder_depth))}, global: {gb}")

yy, xx = np.mgrid[0:320, 0:480]
img = np.zeros((320, 480, 3), np.uint8)
img[..., 2] = 210
img[(xx - 380) ** 2 + (yy - 80) ** 2 < 45 ** 2] = (240, 200, 30)
img[170:300, 60:220] = (140, 50, 40)
x = preprocess(ResizeLongestSide(cfg.img_size).apply_image(img).transpose(2, 0, 1)[None], cfg)

# --- The whole encoder, with a trace of every official module output.
trace = {}
emb = enc.image_encoder(p, cfg, x, trace=trace)                  # [1, C, G, G]
for key in (f"image_encoder.blocks.{gb - 1}.attn", f"image_encoder.blocks.{gb}.attn",
            *(f"image_encoder.neck.{i}" for i in range(4))):
    print(f"{key:<34s} {trace[key].shape}")
print("image embedding", emb.shape, emb.dtype)

# --- One global attention map, recomputed from the traced norm1 output of the global block.
blk = p["blocks"][gb]
normed = trace[f"image_encoder.blocks.{gb}.norm1"]              # [1, G, G, D]
qkv = enc.linear(normed, blk["attn"]["qkv"]["weight"], blk["attn"]["qkv"]["bias"])  # [1, G, G, 3D]
q, k, v = qkv.reshape(G * G, 3, nH, hd).transpose(1, 2, 0, 3)   # [nH, G*G, hd] each
rel_h, rel_w = enc.rel_pos_terms(np.ascontiguousarray(q), blk["attn"]["rel_pos_h"],
                                 blk["attn"]["rel_pos_w"], (G, G))  # [nH, G*G, G] x2
token = (5, 11)                                                  # (row, col) of the chosen query
t = token[0] * G + token[1]
scores = (q[:, t:t + 1] * np.float32(hd ** -0.5)) @ k.transpose(0, 2, 1)  # [nH, 1, G*G] one query row
probs = softmax_rel_pos_(np.ascontiguousarray(scores.reshape(nH, G * G)), rel_h[:, t], rel_w[:, t])
print(f"query token {token}: attention over all {G * G} keys, sums {probs.sum(-1)}")
full = enc.attention(blk["attn"], normed, nH)                    # the real global block attention
mine = enc.linear((probs[:, None] @ v).transpose(1, 0, 2).reshape(1, D),
                  blk["attn"]["proj"]["weight"], blk["attn"]["proj"]["bias"])
print("recomputed row vs attention(): max |diff| =", float(np.abs(mine[0] - full[0, token[0], token[1]]).max()))

vb = VIT_B.image_embedding_size ** 2
print(f"vit_b global block: [{VIT_B.encoder_num_heads}, {vb}, {vb}] scores = "
      f"{VIT_B.encoder_num_heads * vb * vb * 4 / 2**20:.0f} MiB if held whole; minisam holds "
      f"{enc._SCORE_BUDGET * 4 / 2**20:.0f} MiB chunks")

# --- Figure 1: the global attention map of the chosen token, per head.
shown = np.clip(x[0].transpose(1, 2, 0) * 0.25 + 0.5, 0, 1)
fig, axes = plt.subplots(1, nH + 1, figsize=(4.2 * (nH + 1), 4))
axes[0].imshow(shown)
P = cfg.patch_size
axes[0].add_patch(plt.Rectangle((token[1] * P, token[0] * P), P, P, fill=False, ec="r", lw=2))
axes[0].set_title(f"query token {token}")
for h in range(nH):
    im = axes[h + 1].imshow(probs[h].reshape(G, G), cmap="magma")
    axes[h + 1].plot(token[1], token[0], "c+", ms=12, mew=2)
    axes[h + 1].set_title(f"global attention, head {h}")
    fig.colorbar(im, ax=axes[h + 1], fraction=0.046)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "04_global_attention.png"), dpi=80)

# --- Figure 2: the first 8 channels of the image embedding (after the neck).
fig, axes = plt.subplots(2, 4, figsize=(11, 5.6))
for c, a in enumerate(axes.flat):
    a.imshow(emb[0, c], cmap="coolwarm")
    a.set_title(f"embedding channel {c}")
    a.axis("off")
fig.suptitle(f"image embedding [1, {cfg.prompt_embed_dim}, {G}, {G}] (LayerNorm2d'd over channels)")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "04_embedding_channels.png"), dpi=80)
print("wrote", sorted(f for f in os.listdir(args.out) if f.startswith("04_")))
