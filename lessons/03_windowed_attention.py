"""Lesson 03: windowed attention with decomposed relative positions.

A ViT-B block at SAM's resolution attends over 64 x 64 = 4096 tokens. Full attention in
every block would cost 4096^2 scores per head, so SAM follows ViTDet (Li et al. 2022):
most blocks attend only inside 14 x 14 windows, and four blocks attend globally (lesson 04).
Kirillov et al. 2023, appendix A; official ``modeling/image_encoder.py`` Block, Attention,
window_partition, add_decomposed_rel_pos.

What happens in a windowed block:
1. LayerNorm, then zero-pad the grid to a multiple of the window (64 -> 70 for SAM) and cut
   it into windows. The pad tokens are NOT masked: they go through q/k/v like any token and
   receive attention. (They are cropped away afterwards.)
2. In each window, ordinary multi-head attention, with the scale applied to q first ...
3. ... plus a relative-position bias, "decomposed" (MViTv2, Li et al. 2022): for a query at
   (y, x) and a key at (y', x') it adds q . Rh[y - y'] + q . Rw[x - x'], two learned tables
   of length 2w - 1, read with the UNSCALED q.
This lesson runs minisam's functions on a small random model (grid 14, window 4, so the
grid pads to 16) and draws the windows, one head's rel-pos bias and its attention map.

Run:  MPLBACKEND=Agg python lessons/03_windowed_attention.py --out out/03
"""

import argparse
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minisam.config import expected_shapes, make_config  # noqa: E402
from minisam.image_encoder import (attention, linear, patch_embed, rel_pos_terms,  # noqa: E402
                                   window_partition, window_unpartition)
from minisam.kernels import layer_norm, softmax_rel_pos_  # noqa: E402
from minisam.params import nest  # noqa: E402
from minisam.transforms import ResizeLongestSide, preprocess  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="out/03")
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)


def random_params(cfg, seed=0):
    """Random image-encoder weights at sensible scales. The rel-pos tables get a smooth
    shape, Rh[d] = -|d| u + noise, so the bias q . Rh[d] = -|d| (q . u) grows or shrinks
    with distance depending on the sign of q . u: easy to see in the figure."""
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
            v = -np.abs(np.arange(L) - (L - 1) / 2)[:, None] * u / np.sqrt(hd) + 0.05 * rng.standard_normal(shape)
        elif leaf in ("pos_embed",):
            v = 0.5 * rng.standard_normal(shape)
        elif leaf == "bias":
            v = 0.02 * rng.standard_normal(shape)
        else:
            v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        flat[k] = v.astype(np.float32)
    return nest(flat)["image_encoder"]


cfg = make_config(img_size=224, patch_size=16, encoder_embed_dim=32, encoder_depth=2,
                  encoder_num_heads=2, encoder_global_attn_indexes=(1,), window_size=4,
                  prompt_embed_dim=16)
p = random_params(cfg)
G, w, D, nH = cfg.image_embedding_size, cfg.window_size, cfg.encoder_embed_dim, cfg.encoder_num_heads
hd = D // nH
print(f"grid {G}x{G}, window {w}, {nH} heads of {hd}")

# --- An input: a synthetic scene, resized and preprocessed (lesson 02).
yy, xx = np.mgrid[0:300, 0:300]
img = np.zeros((300, 300, 3), np.uint8)
img[..., 2] = 200
img[(xx - 200) ** 2 + (yy - 100) ** 2 < 50 ** 2] = (240, 200, 30)
img[180:280, 40:160] = (140, 50, 40)
x = preprocess(ResizeLongestSide(cfg.img_size).apply_image(img).transpose(2, 0, 1)[None], cfg)  # [1, 3, S, S]
tokens = patch_embed(p["patch_embed"], x, cfg.patch_size) + p["pos_embed"]  # [1, G, G, D]
blk = p["blocks"][0]
normed = layer_norm(tokens, blk["norm1"]["weight"], blk["norm1"]["bias"], 1e-6)  # [1, G, G, D]

# --- Step 1: pad and cut into windows.
windows, (Hp, Wp) = window_partition(normed, w)                  # [nW, w, w, D]
nWx = Wp // w
print(f"padded grid {Hp}x{Wp} -> windows {windows.shape}; pad tokens are zeros:",
      bool(np.all(windows[-1, -1, -1] == 0)))

# --- Step 2 and 3 for one window, spelled out: q k v, scaled scores, rel-pos bias, softmax.
win = nWx * (nWx - 1) + (nWx - 1)        # the bottom-right window: it contains pad tokens
qkv = linear(windows[win:win + 1], blk["attn"]["qkv"]["weight"], blk["attn"]["qkv"]["bias"])  # [1, w, w, 3D]
q, k, v = qkv.reshape(w * w, 3, nH, hd).transpose(1, 2, 0, 3)     # [nH, w*w, hd] each
rel_h, rel_w = rel_pos_terms(np.ascontiguousarray(q), blk["attn"]["rel_pos_h"], blk["attn"]["rel_pos_w"], (w, w))
scores = (q * np.float32(hd ** -0.5)) @ k.transpose(0, 2, 1)      # [nH, w*w, w*w]
head, query = 0, 0                         # head 0, the window's top-left token
bias = rel_h[head, query][:, None] + rel_w[head, query][None, :]  # [w, w] bias over the keys
probs = softmax_rel_pos_(np.ascontiguousarray(scores.reshape(-1, w * w)), rel_h.reshape(-1, w),
                         rel_w.reshape(-1, w)).reshape(nH, w * w, w * w)  # [nH, w*w, w*w]
print("attention of one query sums to", float(probs[head, query].sum()))
# The same window through minisam's attention(): the spelled-out version agrees.
out = (probs @ v).transpose(1, 0, 2).reshape(1, w, w, D)          # [1, w, w, D]
out = linear(out, blk["attn"]["proj"]["weight"], blk["attn"]["proj"]["bias"])
ref = attention(blk["attn"], windows[win:win + 1], nH)
print("spelled-out vs attention(): max |diff| =", float(np.abs(out - ref).max()))
ky, kx = np.mgrid[0:w, 0:w]                                       # key positions in the window
is_pad = (ky + Hp - w >= G) | (kx + Wp - w >= G)                   # [w, w] beyond the real grid
pad_mass = probs[head, query].reshape(w, w)[is_pad].sum()
print(f"attention mass on pad tokens (not masked!) for this query: {pad_mass:.3f}")
full = window_unpartition(attention(blk["attn"], windows, nH), w, (Hp, Wp), (G, G))  # [1, G, G, D]
print("after unpartition:", full.shape)

# --- Figure 1: windows drawn on the image.
fig, ax = plt.subplots(figsize=(5.5, 5.5))
shown = np.zeros((Hp * cfg.patch_size, Wp * cfg.patch_size, 3))
shown[:cfg.img_size, :cfg.img_size] = np.clip(x[0].transpose(1, 2, 0) * 0.25 + 0.5, 0, 1)
ax.imshow(shown)
px = w * cfg.patch_size
for i in range(Hp // w):
    for j in range(Wp // w):
        ax.add_patch(plt.Rectangle((j * px - 0.5, i * px - 0.5), px, px, fill=False, ec="w", lw=1.5))
        ax.text(j * px + 4, i * px + 14, str(i * nWx + j), color="w", fontsize=8)
ax.axhline(cfg.img_size - 0.5, color="r", ls="--")
ax.axvline(cfg.img_size - 0.5, color="r", ls="--")
ax.set_title(f"{(Hp // w) * (Wp // w)} windows of {w}x{w} tokens; red: grid {G} padded to {Hp}")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "03_windows.png"), dpi=80)

# --- Figure 2: one head's rel-pos bias and attention for one query.
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
axes[0].imshow(blk["attn"]["rel_pos_h"], aspect="auto", cmap="coolwarm")
axes[0].set_title("rel_pos_h table [2w-1, hd]")
axes[0].set_ylabel("offset y - y' + w - 1")
im = axes[1].imshow(bias, cmap="coolwarm")
axes[1].set_title(f"head {head}: bias q.Rh + q.Rw, query (0,0)")
fig.colorbar(im, ax=axes[1], fraction=0.046)
im = axes[2].imshow(probs[head, query].reshape(w, w), cmap="viridis")
axes[2].set_title(f"attention of query (0,0), window {win}")
fig.colorbar(im, ax=axes[2], fraction=0.046)
for a in axes[1:]:
    a.set_xlabel("key x'")
    a.set_ylabel("key y'")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "03_relpos_and_attention.png"), dpi=80)
print("wrote", sorted(f for f in os.listdir(args.out) if f.startswith("03_")))
