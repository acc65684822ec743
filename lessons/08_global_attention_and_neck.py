# %% [markdown]
# # Lesson 08: global attention blocks, the neck, and the sizes of ViT-B/L/H
#
# Windows (lesson 07) never let information cross a window border. SAM's ViT therefore makes
# a few of its blocks global (ViT-B: blocks 2, 5, 8, 11; micro: 2 and 5): the same attention
# with decomposed relative positions, but over the whole G x G grid, so every token sees every
# other. After the last block, the "neck" turns the D-dim tokens into the C-channel image
# embedding the mask decoder reads (C = 256 for the official models, 96 for micro):
# 1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d.
#
# A global block computes lesson 07's attention with the window replaced by the whole grid: for
# tokens $(y, x)$ and $(y', x')$ in $\{0, \dots, G-1\}^2$,
#
# $$
# a_{(y,x),(y',x')} = \frac{q_{yx}^{\top} k_{y'x'}}{\sqrt{d}}
#   + q_{yx}^{\top} R^{H}_{\,y-y'+G-1} + q_{yx}^{\top} R^{W}_{\,x-x'+G-1},
# \qquad R^{H}, R^{W} \in \mathbb{R}^{(2G-1) \times d},
# $$
#
# softmax over the $G^2$ keys, and $o_{yx} = \sum_{y',x'} \operatorname{softmax}(a_{(y,x),\cdot})_{(y',x')}\, v_{y'x'}$:
# $G^4$ scores per head instead of $G^2 w^2$ (for ViT-B, $64^4 = 16.8$M against $64^2 \cdot 14^2 = 0.8$M,
# before the padding to 70).
# Kirillov et al. 2023, appendix A; official ``modeling/image_encoder.py`` (Block with
# window_size 0, ImageEncoderViT.neck) and ``modeling/common.py`` (LayerNorm2d); minisam
# ``minisam/modeling/image_encoder.py``.
#
# Memory: a global block at full size holds nH x 4096 x 4096 scores, 805 MB for ViT-B in
# float32. minisam never holds them: it computes attention in blocks of query rows and key
# rows (``kernels/attention.py``, the online softmax of FlashAttention, lesson 21), at most
# ``image_encoder._SCORE_BUDGET`` scores per block. Softmax is per query row and the online
# softmax rescales each block's partial sums exactly, so the blocks change the result by
# float32 rounding only.
#
# This lesson runs the whole encoder of the model (``--model micro`` by default) on a
# synthetic scene with a trace, recomputes the last global block's attention for a query on
# an object, measures how far each head looks (the mean attention distance of Dosovitskiy et
# al. 2021, figure 7) and how much of its attention lands on the query's own object, and draws
# the attention maps and the image embedding. The printed cosine similarities measure how far
# the embedding separates the query's object from the background.
#
# The ViT family. SAM's three image encoders, ViT-B, ViT-L and ViT-H (Kirillov et al. 2023,
# section 3 and appendix A; the configs are the three builders of the official
# ``segment_anything/build_sam.py``, here ``minisam/config.py``), are MAE pre-trained ViTs
# (He et al. 2022) that differ only in depth, width, heads and which blocks are global. The
# last section tabulates them next to micro, counts their parameters from the tensor shapes the
# model needs (``config.expected_shapes``: no weights needed), checks the counts against the
# official checkpoint files and the paper's 632M, and counts the multiply-accumulates (MACs;
# FLOPs = 2 x MACs) of one image through the encoder from the architecture, checked against a
# count taken while the encoder code runs. ViT-H needs about 3 x 10^12 MACs per 1024 x 1024
# image: this is why SAM computes the image embedding once per image and runs only the
# 4M-parameter prompt encoder and mask decoder for each prompt.
#
# Run:  python lessons/08_global_attention_and_neck.py --out out/08

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("08", "Lesson 08: global attention blocks, the neck, and the sizes of ViT-B/L/H")

import matplotlib.pyplot as plt  # noqa: E402

from minisam.kernels import image_encoder as enc  # noqa: E402
from minisam.checkpoints.param_tree import nest  # noqa: E402
from minisam.checkpoints.registry import registry  # noqa: E402
from minisam.config import PRESETS, VIT_B, expected_shapes  # noqa: E402
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


# %% [markdown]
# ## The whole encoder, with a trace of every official module output

# %%
trace = {}
emb = sam.image_encoder(x, trace=trace)                          # [1, C, G, G]
for gb in globals_:
    print(f"image_encoder.blocks.{gb}.attn (global)    {trace[f'image_encoder.blocks.{gb}.attn'].shape}")
for key in [f"image_encoder.neck.{i}" for i in range(4)]:
    print(f"{key:<40s} {trace[key].shape}")
print("image embedding", emb.shape, emb.dtype)
_lesson.claim(tuple(VIT_B.encoder_global_attn_indexes) == (2, 5, 8, 11), "ViT-B's global blocks are 2, 5, 8, 11")
if args.model == "micro" and args.checkpoint is None:
    _lesson.claim(globals_ == [2, 5] and C == 96,
                  "micro's global blocks are 2 and 5, and its embedding has 96 channels")
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
    Recomputed from the traced norm1 output, as lesson 07 did for a window. -> [nH, n, G*G]"""
    blk = sam.params["image_encoder"]["blocks"][b]["attn"]
    normed = trace[f"image_encoder.blocks.{b}.norm1"]                        # [1, G, G, D]
    qkv = enc.linear(normed, blk["qkv"]["weight"], blk["qkv"]["bias"])       # [1, G, G, 3D]
    q, k, v = qkv.reshape(G * G, 3, nH, hd).transpose(1, 2, 0, 3)           # [nH, G*G, hd] each
    rel_h, rel_w = enc.rel_pos_terms(np.ascontiguousarray(q), blk["rel_pos_h"], blk["rel_pos_w"], (G, G))
    scores = (q[:, rows] * np.float32(hd ** -0.5)) @ k.transpose(0, 2, 1)   # [nH, n, G*G]
    probs = softmax_rel_pos_(np.ascontiguousarray(scores.reshape(-1, G * G)),
                             rel_h[:, rows].reshape(-1, G), rel_w[:, rows].reshape(-1, G))
    return probs.reshape(nH, len(rows), G * G), v, blk                      # [nH, n, G*G]


reach = {}                                                                 # block -> [nH] mean distance
for gb in globals_:
    probs, _, _ = global_attention(gb, queries)                             # [nH, nq, G*G]
    reach[gb] = (probs * dist[queries]).sum(-1).mean(-1)                     # [nH]
    print(f"block {gb}: mean attention distance per head (tokens):", np.round(reach[gb], 1))
uniform_reach = float(dist[queries].mean())                                # what attending evenly to all keys gives
print(f"uniform attention over all keys would give {uniform_reach:.1f} tokens")

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


# %% [markdown]
# ## Figure 1: what the last global block's heads look at
#
# The query, the head that keeps most of its attention on the query's object, the head that
# keeps least, and how far every head of every global block looks on average.

# %%
shown = np.clip(x[0].transpose(1, 2, 0) * 0.25 + 0.5, 0, 1)                # [S, S, 3] for display
share_on_obj = probs[:, on_obj].sum(-1)                                    # [nH]
focused, spread = int(np.argmax(share_on_obj)), int(np.argmin(share_on_obj))
extent = (-0.5, G - 0.5, G - 0.5, -0.5)                                    # token coordinates
fig, axes = plt.subplots(2, 2, figsize=(8.8, 8.4))
a = axes[0, 0]
a.imshow(shown, extent=extent)
a.add_patch(plt.Rectangle((token[1] - 0.5, token[0] - 0.5), 1, 1, fill=False, ec="r", lw=2))
a.contour(scene.masks[obj], levels=[0.5], colors="c", extent=extent, origin="upper")
a.set_title(f"query token {token} (red) on the {scene.kinds[obj]}\n"
            f"(cyan; {on_obj.sum()} of {G * G} tokens, {on_obj.mean():.0%} of the image)")
for a, h, which in ((axes[0, 1], focused, "most"), (axes[1, 0], spread, "least")):
    im = a.imshow(probs[h].reshape(G, G), cmap="magma", vmin=0, extent=extent)
    a.contour(scene.masks[obj], levels=[0.5], colors="c", extent=extent, origin="upper")
    a.plot(token[1], token[0], "c+", ms=12, mew=2)
    a.set_title(f"block {gb}, head {h} ({which} on the object):\n{share_on_obj[h]:.0%} of its attention on the "
                f"{scene.kinds[obj]}, {1 - share_on_obj[h]:.0%} elsewhere")
    fig.colorbar(im, ax=a, fraction=0.046, label="attention weight (sums to 1 over keys)")
for a in (axes[0, 0], axes[0, 1], axes[1, 0]):
    a.axis("off")
a = axes[1, 1]
bar = 0.8 / len(globals_)
for j, b in enumerate(globals_):
    a.bar(np.arange(nH) + (j - (len(globals_) - 1) / 2) * bar, reach[b], bar, label=f"block {b}")
a.axhline(uniform_reach, color="k", ls="--", lw=1, label="uniform attention")
a.set_xticks(range(nH))
a.set_xlabel("head")
a.set_ylabel("mean attention distance (tokens)")
a.set_title(f"every head can reach the whole grid;\nthey look {min(r.min() for r in reach.values()):.1f}-"
            f"{max(r.max() for r in reach.values()):.1f} tokens away ({len(queries)} queries)")
a.set_ylim(0, 1.45 * max(uniform_reach, max(r.max() for r in reach.values())))
a.legend(fontsize=10, loc="upper center", ncol=2)
fig.tight_layout()
_lesson.save(fig, args, "08_global_attention.png")
plt.close(fig)


# %% [markdown]
# ## Figure 2: every head of the last global block, for the same query

# %%
cols = min(nH, 4)
rows = -(-nH // cols)
fig, axes = plt.subplots(rows, cols, figsize=(8.8, 2.3 * rows + 0.7), squeeze=False, layout="constrained")
for h, a in enumerate(axes.flat):
    a.axis("off")
    if h >= nH:
        continue
    im = a.imshow(probs[h].reshape(G, G) / probs[h].max(), cmap="magma", vmin=0, vmax=1, extent=extent)
    a.contour(scene.masks[obj], levels=[0.5], colors="c", extent=extent, origin="upper")
    a.plot(token[1], token[0], "c+", ms=10, mew=2)
    a.set_title(f"head {h}:\n{share_on_obj[h]:.0%} on the {scene.kinds[obj]}", fontsize=10)
fig.colorbar(im, ax=axes, fraction=0.04, label="attention / the head's maximum")
fig.suptitle(f"block {gb}, query {token} (+): each head weighs all {G * G} keys its own way\n"
             f"(cyan: the {scene.kinds[obj]}; each map scaled to its own maximum)", fontsize=11)
_lesson.save(fig, args, "08_attention_heads.png")
plt.close(fig)

vb = VIT_B.image_embedding_size ** 2
print(f"vit_b global block: [{VIT_B.encoder_num_heads}, {vb}, {vb}] scores = "
      f"{VIT_B.encoder_num_heads * vb * vb * 4 / 2**20:.0f} MiB if held whole; minisam holds "
      f"blocks of {enc._SCORE_BUDGET * 4 / 2**20:.0f} MiB")
_lesson.claim(round(VIT_B.encoder_num_heads * vb * vb * 4 / 1e6) == 805, "a ViT-B global block's scores take 805 MB")
budget, enc._SCORE_BUDGET = enc._SCORE_BUDGET, G * G * 7           # blocks of at most 7 query rows x G*G keys
try:
    blocked = sam.image_encoder(x)                                  # [1, C, G, G]
finally:
    enc._SCORE_BUDGET = budget
_lesson.claim(np.abs(blocked - emb).max() <= 1e-6 * np.abs(emb).max(),
              "much smaller attention blocks leave the embedding unchanged (to float32 rounding)")
print("embedding with 7-row blocks vs the default blocks: max |diff| =", float(np.abs(blocked - emb).max()))


# %% [markdown]
# ## The image embedding: do tokens of one object look alike?
#
# Every token shares a large common part (the LayerNorm2d bias, among others): compare what
# is left after removing the image's mean token, or every pair looks alike.

# %%
feat = emb[0].reshape(C, G * G).T                                          # [G*G, C]
centred = feat - feat.mean(0)                                              # [G*G, C]
unit = centred / (np.linalg.norm(centred, axis=1, keepdims=True) + 1e-9)   # [G*G, C]
cos = unit @ unit[t]                                                       # [G*G] similarity to the query
background = np.ones(G * G, bool)
for m in scene.instance_masks:
    background &= ~(m.reshape(G, P, G, P).mean((1, 3)) > 0.5).reshape(-1)
print(f"embedding (mean token removed) cosine similarity to the query token: same object {cos[on_obj].mean():.2f}, "
      f"background {cos[background].mean():.2f}")


# %% [markdown]
# ## Figure 3: the image embedding (after the neck)
#
# Its 3 principal components as RGB, the query's cosine similarity to every token, and the
# 6 channels that vary most across the image. A frame one token wide often stands out: at the
# border the neck's 3x3 conv reads its zero padding.

# %%
_, _, vt = np.linalg.svd(centred, full_matrices=False)                     # vt [C, C]
pc = centred @ vt[:3].T                                                    # [G*G, 3]
pc = (pc - pc.min(0)) / (np.ptp(pc, 0) + 1e-9)
busiest = np.argsort(-feat.std(0))[:6]                                     # [6] channel indexes
fig, axes = plt.subplots(3, 3, figsize=(8.8, 9.2))
axes[0, 0].imshow(shown)
axes[0, 0].set_title("input")
axes[0, 1].imshow(pc.reshape(G, G, 3), interpolation="nearest")
axes[0, 1].set_title("top 3 principal\ncomponents as RGB")
im = axes[0, 2].imshow(cos.reshape(G, G), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
axes[0, 2].plot(token[1], token[0], "r+", ms=12, mew=2)
axes[0, 2].set_title("similarity to the query (+)\n(mean token removed)")
fig.colorbar(im, ax=axes[0, 2], fraction=0.046, label="cosine similarity")
for a, c in zip(axes[1:].flat, busiest):
    a.imshow(emb[0, c], cmap="coolwarm", interpolation="nearest")
    a.set_title(f"channel {c} (std {feat[:, c].std():.2f})")
for a in axes.flat:
    a.axis("off")
fig.suptitle(f"image embedding [1, {C}, {G}, {G}]: mean cosine similarity to the query, "
             f"{scene.kinds[obj]} tokens {cos[on_obj].mean():.2f}, background {cos[background].mean():.2f}\n"
             "rows 2-3: the 6 channels that vary most (blue low, red high, each on its own scale)", fontsize=11)
fig.tight_layout()
_lesson.save(fig, args, "08_embedding_channels.png")
plt.close(fig)


# %% [markdown]
# ## The ViT family: sizes, parameters, multiply-accumulates
#
# The three official encoders (build_sam.py: build_sam_vit_b/l/h) share everything but depth,
# width, heads and the global block indexes; micro is minisam's small model. A model the
# lesson runs on from --checkpoint gets a column of its own.

# %%
family = dict(PRESETS)
if cfg not in family.values():
    family["this model"] = cfg
OFFICIAL = ("vit_b", "vit_l", "vit_h")
PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def parameter_counts(c):
    """Parameters per top-level module, from the shapes of every tensor of the official state dict.
    -> ({module: count}, number of tensors)"""
    shapes = expected_shapes(c)
    counts = {part: sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith(part + ".")) for part in PARTS}
    return counts, len(shapes)


# MACs of one image (batch 1) through the image encoder, from the architecture alone. With
# G = S / P tokens a side, width D, MLP width F = 4D, neck channels C:
#   patch embed   G^2 * 3P^2 * D             a PxP stride-P conv is one GEMM over the G^2 patches
#   each block runs attention in calls of side s (s = w, the window, or s = G for a global block)
#   on the grid padded to Gp = ceil(G / s) * s, so n = Gp^2 tokens (pad tokens included) go through
#     qkv, proj   n * D * 3D + n * D * D      the official code runs them inside the windows, on the padding too
#     q k^T, p v  2 * n * s^2 * D            each token against s^2 keys, summed over heads (nH * hd = D)
#     rel-pos     n * 2s * D                 q . R_h over s key rows, q . R_w over s key columns
#     MLP         2 * G^2 * D * F            after the windows are cropped: no pad tokens
#   neck          G^2 * (D * C + 9 * C^2)    the 1x1 conv and the 3x3 conv (zero padding counted as a conv does)
# Softmax, GELU, LayerNorm and the bias, rel-pos and residual adds are elementwise, not
# multiply-accumulates: O(tokens x D) each, left out here and in the count below.
#
# minisam's fast encoder does less than this formula in one place: it runs qkv and proj on the
# G^2 real tokens only. A pad token is zero after norm1, so its qkv is the bias with no product
# (lesson 07 measured exactly that), and its output is cropped after proj, whose rows do not mix.
# That skips (Gp^2 - G^2) * 4 D^2 MACs per windowed block; the attention itself still runs on the
# padded windows, since the official softmax gives the pad keys weight.
WHERE = ("patch embed", "windowed blocks", "global blocks", "neck")
KINDS = ("linear", "attention", "rel-pos")


def analytic_macs(c):
    """-> {part of the encoder: {kind of product: MACs}}"""
    G, D, F, Cn, Pp = c.image_embedding_size, c.encoder_embed_dim, c.encoder_mlp_dim, c.prompt_embed_dim, c.patch_size
    macs = {part: dict.fromkeys(KINDS, 0) for part in WHERE}
    macs["patch embed"]["linear"] = G * G * 3 * Pp * Pp * D
    for i in range(c.encoder_depth):
        w = c.block_window_size(i)
        s = w if w > 0 else G
        n = (-(-G // s) * s) ** 2
        part = macs["windowed blocks" if w > 0 else "global blocks"]
        part["linear"] += 4 * n * D * D + 2 * G * G * D * F
        part["attention"] += 2 * n * s * s * D
        part["rel-pos"] += n * 2 * s * D
    macs["neck"]["linear"] = G * G * (D * Cn + 9 * Cn * Cn)
    return macs


def skipped_pad_macs(c):
    """MACs of the qkv and proj products of the pad tokens, which minisam's fast encoder skips:
    (Gp^2 - G^2) * 4 D^2 per windowed block."""
    G, D = c.image_embedding_size, c.encoder_embed_dim
    return sum(((-(-G // w) * w) ** 2 - G * G) * 4 * D * D
               for w in map(c.block_window_size, range(c.encoder_depth)) if w > 0)


def counted_macs(params, c, x_in, compute=True):
    """Run the encoder of ``minisam.kernels.image_encoder`` once with its products wrapped to count m*k*n.

    Every product of that encoder is a call to one of four functions the module looks up by name:
    ``linear`` (patch embed, qkv, proj, MLP, both neck convs), ``attention_rel_pos`` (windows) or
    ``_chunked_attention`` (the global grid) for q k^T and p v, and ``rel_pos_dot_products``. The
    wrappers read the shapes each call actually gets (padded windows for q k^T and p v, the real
    tokens for the projections); ``block`` and ``neck`` are wrapped to know which part is
    running. With compute=False the products, and the
    elementwise GELU and LayerNorms, return zeros of the right shape instead: the same code path
    and shapes, cheap at any size (a dry run).
    -> ({part: {kind: MACs}}, the encoder's output)"""
    macs = {part: dict.fromkeys(KINDS, 0) for part in WHERE}
    running = ["patch embed"]
    elementwise = ("gelu", "layer_norm", "add_layer_norm")            # no MACs: skipped in a dry run
    names = ("linear", "attention_rel_pos", "_chunked_attention", "rel_pos_dot_products", "block", "neck") + elementwise
    real = {name: getattr(enc, name) for name in names}

    def linear(a, weight, bias=None, out=None):        # [m, k] @ [k, n]
        m, k, n = a.size // a.shape[-1], a.shape[-1], weight.shape[0]
        macs[running[0]]["linear"] += m * k * n
        return real["linear"](a, weight, bias, out) if compute else np.zeros(a.shape[:-1] + (n,), np.float32)

    def attention_kernel(name):
        def counted(q, k, v, *rest):                   # q, k, v [A, T, hd]: A x ([T, hd] @ [hd, T], [T, T] @ [T, hd])
            A, T, hd = q.shape
            macs[running[0]]["attention"] += A * T * k.shape[1] * hd + A * T * v.shape[1] * v.shape[2]
            return real[name](q, k, v, *rest) if compute else np.zeros(q.shape, np.float32)
        return counted

    def rel_pos_dot_products(q, Rh, Rw, out=None):     # q [A, h, w, hd] . Rh [h, kh, hd] and . Rw [w, kw, hd]
        A, h, w, hd = q.shape
        macs[running[0]]["rel-pos"] += A * h * w * (Rh.shape[1] + Rw.shape[1]) * hd
        if compute:
            return real["rel_pos_dot_products"](q, Rh, Rw, out)
        return np.zeros((A, h, w, Rh.shape[1]), np.float32), np.zeros((A, h, w, Rw.shape[1]), np.float32)

    def block(p, tokens, normed, num_heads, window_size, *rest):
        running[0] = "windowed blocks" if window_size > 0 else "global blocks"
        return real["block"](p, tokens, normed, num_heads, window_size, *rest)

    def neck(*a, **kw):
        running[0] = "neck"
        return real["neck"](*a, **kw)

    wrapped = dict(linear=linear, attention_rel_pos=attention_kernel("attention_rel_pos"),
                   _chunked_attention=attention_kernel("_chunked_attention"),
                   rel_pos_dot_products=rel_pos_dot_products, block=block, neck=neck)
    if not compute:
        wrapped.update({name: lambda a, *rest, **kw: np.zeros(a.shape, np.float32) for name in elementwise})
    try:
        for name, f in wrapped.items():
            setattr(enc, name, f)
        out = enc.image_encoder(params, c, x_in)
    finally:
        for name, f in real.items():
            setattr(enc, name, f)
    return macs, out


def placeholder_params(c):
    """Zeros in the shapes of ``expected_shapes(c)``, nested like ``sam.params["image_encoder"]``. Matrices are
    read-only views of one zero (no memory); vectors are real arrays, for the LayerNorm kernels."""
    flat = {k: np.zeros(s, np.float32) if len(s) <= 1 else np.broadcast_to(np.float32(0), s)
            for k, s in expected_shapes(c).items() if k.startswith("image_encoder.")}
    return nest(flat)["image_encoder"]


def total(macs):
    return sum(sum(kinds.values()) for kinds in macs.values())


params_of = {name: parameter_counts(c) for name, c in family.items()}        # name -> ({module: count}, tensors)
macs_of = {name: analytic_macs(c) for name, c in family.items()}             # name -> {part: {kind: MACs}}

rows = [("depth", lambda n, c: c.encoder_depth), ("embed dim D", lambda n, c: c.encoder_embed_dim),
        ("heads", lambda n, c: c.encoder_num_heads), ("head dim", lambda n, c: c.encoder_head_dim),
        ("window", lambda n, c: c.window_size),
        ("global blocks", lambda n, c: ",".join(map(str, c.encoder_global_attn_indexes))),
        ("MLP dim", lambda n, c: c.encoder_mlp_dim), ("input", lambda n, c: f"{c.img_size}x{c.img_size}"),
        ("grid", lambda n, c: f"{c.image_embedding_size}x{c.image_embedding_size}"),
        ("encoder params", lambda n, c: f"{params_of[n][0]['image_encoder'] / 1e6:.2f}M"),
        ("model params", lambda n, c: f"{sum(params_of[n][0].values()) / 1e6:.2f}M"),
        ("encoder GMACs", lambda n, c: f"{total(macs_of[n]) / 1e9:.4g}")]
table = [[str(value(n, c)) for n, c in family.items()] for _, value in rows]
print(f"\n{'':<16s}" + "".join(f"{n:>14s}" for n in family))
for (label, _), cells in zip(rows, table):
    print(f"{label:<16s}" + "".join(f"{cell:>14s}" for cell in cells))
print("(GMACs: 10^9 multiply-accumulates of one image through the encoder at its input size; FLOPs = 2 x MACs)")

# Checkpoint sizes. An official .pth is a zip of float32 tensor files plus a pickle of the
# state dict: 4 bytes per parameter and, per tensor, its zip headers, padding to a 64-byte
# boundary and its pickle record. So the file should be a little larger, by about the same
# number of bytes per tensor in every model.
files = registry()
excess = {n: files[n]["bytes"] - 4 * sum(params_of[n][0].values()) for n in OFFICIAL}     # bytes
per_tensor = {n: excess[n] / params_of[n][1] for n in OFFICIAL}                           # bytes per tensor
for n in OFFICIAL:
    print(f"{files[n]['file']}: {files[n]['bytes']} bytes = 4 x {sum(params_of[n][0].values())} parameters "
          f"+ {excess[n]} ({excess[n] / files[n]['bytes']:.4%}; {per_tensor[n]:.1f} bytes per tensor, "
          f"{params_of[n][1]} tensors)")
_lesson.claim(all(0 < excess[n] < 0.01 * files[n]["bytes"] for n in OFFICIAL)
              and max(per_tensor.values()) - min(per_tensor.values()) < 4,
              "4 bytes per counted parameter is each official checkpoint's size to within 1%: the files are larger by "
              + ", ".join(f"{n} {excess[n] / files[n]['bytes']:.3%}" for n in OFFICIAL)
              + f", {min(per_tensor.values()):.1f}-{max(per_tensor.values()):.1f} bytes per tensor in all three")

vit_h_encoder = params_of["vit_h"][0]["image_encoder"]
pos_embed = int(np.prod(expected_shapes(PRESETS["vit_h"])["image_encoder.pos_embed"]))
encoder_share = {n: params_of[n][0]["image_encoder"] / sum(params_of[n][0].values()) for n in OFFICIAL}
prompt_and_decoder = {n: params_of[n][0]["prompt_encoder"] + params_of[n][0]["mask_decoder"] for n in OFFICIAL}
print(f"vit_h image encoder {vit_h_encoder / 1e6:.2f}M parameters, {(vit_h_encoder - pos_embed) / 1e6:.2f}M "
      f"without its {pos_embed / 1e6:.2f}M position embedding; the paper says 632M")
_lesson.claim(abs(vit_h_encoder / 632e6 - 1) < 0.01 and all(share > 0.95 for share in encoder_share.values()),
              f"ViT-H's image encoder has {vit_h_encoder / 1e6:.1f}M parameters, {vit_h_encoder / 632e6 - 1:+.2%} "
              f"from the paper's 632M, and holds {encoder_share['vit_h']:.2%} of the model's parameters "
              f"(vit_b {encoder_share['vit_b']:.1%}, vit_l {encoder_share['vit_l']:.1%})")
_lesson.claim(all(round(k / 1e6) == 4 for k in prompt_and_decoder.values()),
              "the prompt encoder + mask decoder have the paper's ~4M parameters in all three official models: "
              + ", ".join(f"{n} {k / 1e6:.3f}M" for n, k in prompt_and_decoder.items()))

# The MAC formula against a count of what the encoder code does: on this lesson's model with
# its real weights (the counting wrappers pass every call through, so the embedding must come
# out the same), and as dry runs at the official sizes, where the windows are padded. The count
# is the formula less the pad tokens' projections, which the fast code skips.


def as_run(macs, c):
    """The formula's MACs less the pad tokens' projections (``skipped_pad_macs``): what the fast code runs."""
    out = {part: dict(kinds) for part, kinds in macs.items()}
    out["windowed blocks"]["linear"] -= skipped_pad_macs(c)
    return out


measured, counted_emb = counted_macs(sam.params["image_encoder"], cfg, x)                # counted_emb [1, C, G, G]
model_name = next(n for n, c in family.items() if c == cfg)
print(f"{model_name} encoder: formula {total(macs_of[model_name])} MACs, less {skipped_pad_macs(cfg)} of pad "
      f"projections; counted while running {total(measured)}")
for part in WHERE:
    print(f"  {part:<16s}" + "  ".join(f"{kind} {measured[part][kind]:>12d}" for kind in KINDS))
_lesson.claim(measured == as_run(macs_of[model_name], cfg) and np.array_equal(counted_emb, emb),
              f"the formula's {total(macs_of[model_name]) / 1e9:.4g} GMACs for {model_name}'s encoder, less "
              f"{skipped_pad_macs(cfg) / 1e9:.4g} G of pad projections, are exactly the "
              f"{total(measured) / 1e9:.4g} GMACs counted in its products while it runs, part by part "
              "(and the counted run's embedding is the lesson's, bit for bit)")
dry = {n: counted_macs(placeholder_params(family[n]), family[n],
                       np.zeros((1, 3, family[n].img_size, family[n].img_size), np.float32), compute=False)[0]
       for n in OFFICIAL}
for n in OFFICIAL:
    print(f"{n}: formula {total(macs_of[n])} MACs, less pad projections {skipped_pad_macs(family[n])}, "
          f"dry run {total(dry[n])}; windowed blocks {sum(macs_of[n]['windowed blocks'].values())} vs "
          f"{sum(dry[n]['windowed blocks'].values())}")
_lesson.claim(all(dry[n] == as_run(macs_of[n], family[n]) for n in OFFICIAL),
              "dry runs of the encoder code at the official sizes count the formula's MACs less the pad tokens' "
              "projections, part by part: "
              + ", ".join(f"{n} {total(macs_of[n]) / 1e9:.1f} G by the formula, {total(dry[n]) / 1e9:.1f} G run "
                          f"({skipped_pad_macs(family[n]) / total(macs_of[n]):.1%} skipped)" for n in OFFICIAL)
              + " (FLOPs: twice that)")

# Global attention costs G^4 D, windowed attention n w^2 D: at ViT-B, a global block's
# attention is 4096 keys per token against 196, on 4096 tokens rather than the 4900 of the
# padded 70 x 70 grid.
b_macs, b_cfg = macs_of["vit_b"], PRESETS["vit_b"]
n_global = len(b_cfg.encoder_global_attn_indexes)
global_share = sum(b_macs["global blocks"].values()) / total(b_macs)
per_global = sum(b_macs["global blocks"].values()) / n_global
per_windowed = sum(b_macs["windowed blocks"].values()) / (b_cfg.encoder_depth - n_global)
_lesson.claim(dry["vit_b"]["global blocks"] == b_macs["global blocks"] and global_share > n_global / b_cfg.encoder_depth,
              f"ViT-B's {n_global} global blocks of {b_cfg.encoder_depth} do "
              f"{global_share:.1%} of its encoder MACs at 1024^2 (the formula; the count of the global blocks is the "
              f"same): {per_global / 1e9:.1f} G each against {per_windowed / 1e9:.1f} G for a windowed block on the "
              f"padded 70 x 70 grid")


# %% [markdown]
# ## Figure 4: the family as a table, and where each encoder's MACs go

# %%
fig, (table_ax, bars_ax) = plt.subplots(2, 1, figsize=(8.8, 8.6), gridspec_kw=dict(height_ratios=[1.35, 1]))
table_ax.axis("off")
cells = table_ax.table(cellText=table, rowLabels=[label for label, _ in rows], colLabels=list(family),
                       loc="center", cellLoc="right")
cells.auto_set_font_size(False)
cells.set_fontsize(10)
cells.scale(1, 1.45)
table_ax.set_title("SAM's image encoders (official build_sam.py) and micro: parameters from the tensor shapes,\n"
                   "MACs from the architecture (both checked in the lesson); FLOPs = 2 x MACs", fontsize=11)
colours = {"patch embed": "0.6", "windowed blocks": "tab:blue", "global blocks": "tab:orange", "neck": "tab:green"}
names = list(family)
left = np.zeros(len(names))
for part in WHERE:
    share = np.array([sum(macs_of[n][part].values()) / total(macs_of[n]) for n in names])   # [models]
    bars_ax.barh(names, 100 * share, left=100 * left, color=colours[part], label=part)
    left += share
for i, n in enumerate(names):
    bars_ax.text(101, i, f"{total(macs_of[n]) / 1e9:.4g} GMACs", va="center", fontsize=10)
bars_ax.invert_yaxis()
bars_ax.set_xlim(0, 125)
bars_ax.set_xticks(range(0, 101, 20))
bars_ax.set_xlabel("share of the image encoder's MACs for one image (%)")
bars_ax.legend(ncol=4, fontsize=9, loc="upper center", bbox_to_anchor=(0.42, -0.18))
bars_ax.set_title(f"ViT-B: {n_global} global blocks of {b_cfg.encoder_depth} do "
                  f"{global_share:.0%} of the MACs; ViT-H needs {total(macs_of['vit_h']) / 1e12:.1f} x 10^12 "
                  "per image", fontsize=11)
fig.tight_layout()
_lesson.save(fig, args, "08_vit_family.png")
plt.close(fig)
