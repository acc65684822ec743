"""Lesson 04: global attention blocks and the neck.

Windows (lesson 03) never let information cross a window border. SAM's ViT therefore makes
a few of its blocks global (ViT-B: blocks 2, 5, 8, 11; micro: 2 and 5): the same attention
with decomposed relative positions, but over the whole G x G grid, so every token sees every
other. After the last block, the "neck" turns the D-dim tokens into the C-channel image
embedding the mask decoder reads (C = 256 for the official models, 96 for micro):
1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d.
Kirillov et al. 2023, appendix A; official ``modeling/image_encoder.py`` (Block with
window_size 0, ImageEncoderViT.neck) and ``modeling/common.py`` (LayerNorm2d); minisam
``minisam/modeling/image_encoder.py``.

Memory: a global block at full size holds nH x 4096 x 4096 scores, 805 MB for ViT-B in
float32. minisam computes them in chunks of query rows (``image_encoder._SCORE_BUDGET``
floats at a time): softmax is per query row, so chunking changes nothing in the result.

This lesson runs the whole encoder of the model (``--model micro`` by default) on a
synthetic scene with a trace, recomputes the last global block's attention for a query on
an object, measures how far each head looks (the mean attention distance of Dosovitskiy et
al. 2021, figure 7) and how much of its attention lands on the query's own object, and draws
the attention maps and the image embedding. The printed cosine similarities measure how far
the embedding separates the query's object from the background.

Run:  python lessons/04_global_attention_and_neck.py --out out/04
"""

import numpy as np

import _lesson

args = _lesson.parse_args("04", __doc__.splitlines()[0])

import matplotlib.pyplot as plt  # noqa: E402

from minisam.kernels import image_encoder as enc  # noqa: E402
from minisam.config import VIT_B  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402
from minisam.kernels.layers import softmax_rel_pos_  # noqa: E402
from minisam.utils.transforms import ResizeLongestSide  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
S, P, G, D, C = cfg.img_size, cfg.patch_size, cfg.image_embedding_size, cfg.encoder_embed_dim, cfg.prompt_embed_dim
nH, hd = cfg.encoder_num_heads, cfg.encoder_head_dim
globals_ = list(cfg.encoder_global_attn_indexes)
print(f"grid {G}x{G}; blocks 0..{cfg.encoder_depth - 1}, global: {globals_}; {nH} heads of {hd}")

scene = make_scene(np.random.default_rng(5), S)
x = sam.preprocess(ResizeLongestSide(S).apply_image(scene.image).transpose(2, 0, 1)[None])  # [1, 3, S, S]

# --- The whole encoder, with a trace of every official module output -------------------
trace = {}
emb = sam.image_encoder(x, trace=trace)                          # [1, C, G, G]
for gb in globals_:
    print(f"image_encoder.blocks.{gb}.attn (global)    {trace[f'image_encoder.blocks.{gb}.attn'].shape}")
for key in [f"image_encoder.neck.{i}" for i in range(4)]:
    print(f"{key:<40s} {trace[key].shape}")
print("image embedding", emb.shape, emb.dtype)
_lesson.claim(tuple(VIT_B.encoder_global_attn_indexes) == (2, 5, 8, 11), "ViT-B's global blocks are 2, 5, 8, 11")
if args.model == "micro" and args.checkpoint is None:
    _lesson.claim(globals_ == [2, 5] and C == 96, "micro's global blocks are 2 and 5, and its embedding has 96 channels")
_lesson.claim([trace[f"image_encoder.neck.{i}"].shape[1] for i in range(4)] == [C] * 4 and emb.shape == (1, C, G, G),
              "the neck maps D-dim tokens to the C-channel embedding: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d")

# The query: the most interior token of the largest object.
obj = max(scene.objects, key=lambda i: scene.masks[i].sum())
px, py = interior_point(scene.masks[obj])                        # (x, y) pixel centre
token = (int(py) // P, int(px) // P)                             # (row, col) of the query token
t = token[0] * G + token[1]
on_obj = (scene.masks[obj].reshape(G, P, G, P).mean((1, 3)) > 0.5).reshape(-1)  # [G*G] token on it
print(f"query token {token} on the {scene.kinds[obj]} ({on_obj.sum()} of {G * G} tokens)")

# Token positions, for the attention distance: mean over keys of |query - key| in tokens.
gy, gx = np.divmod(np.arange(G * G), G)                          # [G*G] each
dist = np.hypot(gy[:, None] - gy[None, :], gx[:, None] - gx[None, :]).astype(np.float32)  # [G*G, G*G]
every = max(1, G // 16)                                          # a sparse set of queries for vit_b
queries = ((gy % every == 0) & (gx % every == 0)).nonzero()[0]   # [nq]


def global_attention(b, rows):
    """softmax(q k^T * scale + rel-pos) of global block b, for the query tokens ``rows``.
    Recomputed from the traced norm1 output, as lesson 03 did for a window. -> [nH, n, G*G]"""
    blk = sam.params["image_encoder"]["blocks"][b]["attn"]
    normed = trace[f"image_encoder.blocks.{b}.norm1"]                        # [1, G, G, D]
    qkv = enc.linear(normed, blk["qkv"]["weight"], blk["qkv"]["bias"])       # [1, G, G, 3D]
    q, k, v = qkv.reshape(G * G, 3, nH, hd).transpose(1, 2, 0, 3)           # [nH, G*G, hd] each
    rel_h, rel_w = enc.rel_pos_terms(np.ascontiguousarray(q), blk["rel_pos_h"], blk["rel_pos_w"], (G, G))
    scores = (q[:, rows] * np.float32(hd ** -0.5)) @ k.transpose(0, 2, 1)   # [nH, n, G*G]
    probs = softmax_rel_pos_(np.ascontiguousarray(scores.reshape(-1, G * G)),
                             rel_h[:, rows].reshape(-1, G), rel_w[:, rows].reshape(-1, G))
    return probs.reshape(nH, len(rows), G * G), v, blk                      # [nH, n, G*G]


for gb in globals_:
    probs, _, _ = global_attention(gb, queries)                             # [nH, nq, G*G]
    reach = (probs * dist[queries]).sum(-1).mean(-1)                         # [nH] mean distance
    print(f"block {gb}: mean attention distance per head (tokens):", np.round(reach, 1))

# The last global block, for the query token, checked against the encoder's own output.
gb = globals_[-1]
probs, v, blk = global_attention(gb, np.array([t]))                        # [nH, 1, G*G]
probs = probs[:, 0]                                                        # [nH, G*G]
print(f"block {gb}, query {token}: attention over all {G * G} keys, sums {np.round(probs.sum(-1), 5)}")
mine = enc.linear((probs[:, None] @ v).transpose(1, 0, 2).reshape(1, D),
                  blk["proj"]["weight"], blk["proj"]["bias"])              # [1, D]
print("recomputed row vs the encoder's block output: max |diff| =",
      float(np.abs(mine[0] - trace[f"image_encoder.blocks.{gb}.attn"][0, token[0], token[1]]).max()))
row = trace[f"image_encoder.blocks.{gb}.attn"][0, token[0], token[1]]     # [D]
_lesson.claim(np.allclose(probs.sum(-1), 1, atol=1e-5), "a global query's attention sums to 1 over all G*G keys")
_lesson.claim(np.abs(mine[0] - row).max() <= 1e-5 * np.abs(row).max(),
              "the recomputed row is the encoder's global attention output (float32 rounding only)")
for h in range(nH):
    print(f"  head {h}: {probs[h][on_obj].sum():.2f} of the attention on the object "
          f"(it covers {on_obj.mean():.2f} of the image)")

vb = VIT_B.image_embedding_size ** 2
print(f"vit_b global block: [{VIT_B.encoder_num_heads}, {vb}, {vb}] scores = "
      f"{VIT_B.encoder_num_heads * vb * vb * 4 / 2**20:.0f} MiB if held whole; minisam holds "
      f"{enc._SCORE_BUDGET * 4 / 2**20:.0f} MiB chunks")
_lesson.claim(round(VIT_B.encoder_num_heads * vb * vb * 4 / 1e6) == 805, "a ViT-B global block's scores take 805 MB")
budget, enc._SCORE_BUDGET = enc._SCORE_BUDGET, G * G * 7           # chunks of 7 query rows
try:
    chunked = sam.image_encoder(x)                                  # [1, C, G, G]
finally:
    enc._SCORE_BUDGET = budget
_lesson.claim(np.abs(chunked - emb).max() <= 1e-6 * np.abs(emb).max(),
              "chunking the query rows of global attention leaves the embedding unchanged (to float32 rounding)")
print("embedding with 7-row chunks vs whole: max |diff| =", float(np.abs(chunked - emb).max()))

# --- The image embedding: do tokens of one object look alike? ---------------------------
# Every token shares a large common part (the LayerNorm2d bias, among others): compare what
# is left after removing the image's mean token, or every pair looks alike.
feat = emb[0].reshape(C, G * G).T                                          # [G*G, C]
centred = feat - feat.mean(0)                                              # [G*G, C]
unit = centred / (np.linalg.norm(centred, axis=1, keepdims=True) + 1e-9)   # [G*G, C]
cos = unit @ unit[t]                                                       # [G*G] similarity to the query
background = np.ones(G * G, bool)
for m in scene.instance_masks:
    background &= ~(m.reshape(G, P, G, P).mean((1, 3)) > 0.5).reshape(-1)
print(f"embedding (mean token removed) cosine similarity to the query token: same object {cos[on_obj].mean():.2f}, "
      f"background {cos[background].mean():.2f}")

# --- Figure 1: the global attention map of the query token, per head --------------------
shown = np.clip(x[0].transpose(1, 2, 0) * 0.25 + 0.5, 0, 1)
heads = min(nH, 6)
fig, axes = plt.subplots(1, heads + 1, figsize=(3.9 * (heads + 1), 4))
axes[0].imshow(shown)
axes[0].add_patch(plt.Rectangle((token[1] * P - 0.5, token[0] * P - 0.5), P, P, fill=False, ec="r", lw=2))
axes[0].contour(scene.masks[obj], levels=[0.5], colors="c")
axes[0].set_title(f"query token {token} (red), the {scene.kinds[obj]} (cyan)")
extent = (-0.5, G - 0.5, G - 0.5, -0.5)
for h in range(heads):
    a = axes[h + 1]
    im = a.imshow(probs[h].reshape(G, G), cmap="magma", extent=extent)
    a.contour(scene.masks[obj], levels=[0.5], colors="c", extent=extent, origin="upper")
    a.plot(token[1], token[0], "c+", ms=12, mew=2)
    a.set_title(f"block {gb}, head {h}: {probs[h][on_obj].sum():.2f} on the object")
    fig.colorbar(im, ax=a, fraction=0.046)
for a in axes:
    a.axis("off")
fig.tight_layout()
_lesson.save(fig, args, "04_global_attention.png")
plt.close(fig)

# --- Figure 2: the image embedding (after the neck) ------------------------------------
# Its 3 principal components as RGB, the query's cosine similarity to every token, and the
# 6 channels that vary most across the image. A frame one token wide often stands out: at the
# border the neck's 3x3 conv reads its zero padding.
_, _, vt = np.linalg.svd(centred, full_matrices=False)                     # vt [C, C]
pc = centred @ vt[:3].T                                                    # [G*G, 3]
pc = (pc - pc.min(0)) / (np.ptp(pc, 0) + 1e-9)
busiest = np.argsort(-feat.std(0))[:6]                                     # [6] channel indexes
fig, axes = plt.subplots(3, 3, figsize=(10.5, 10.5))
axes[0, 0].imshow(shown)
axes[0, 0].set_title("input")
axes[0, 1].imshow(pc.reshape(G, G, 3), interpolation="nearest")
axes[0, 1].set_title("embedding: top 3 principal components")
im = axes[0, 2].imshow(cos.reshape(G, G), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
axes[0, 2].plot(token[1], token[0], "r+", ms=12, mew=2)
axes[0, 2].set_title("cosine similarity to the query token\n(mean token removed)")
fig.colorbar(im, ax=axes[0, 2], fraction=0.046)
for a, c in zip(axes[1:].flat, busiest):
    a.imshow(emb[0, c], cmap="coolwarm", interpolation="nearest")
    a.set_title(f"channel {c} (std {feat[:, c].std():.2f})")
for a in axes.flat:
    a.axis("off")
fig.suptitle(f"image embedding [1, {C}, {G}, {G}] (LayerNorm2d'd over channels)")
fig.tight_layout()
_lesson.save(fig, args, "04_embedding_channels.png")
plt.close(fig)
