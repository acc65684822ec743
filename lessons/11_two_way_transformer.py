# %% [markdown]
# # Lesson 11: the two-way transformer: prompts read the image, the image reads the prompts
#
# The mask decoder (Kirillov et al. 2023, section 3 and appendix A, figure 14; official
# ``modeling/transformer.py``; minisam ``minisam/modeling/transformer.py``) works on two sets of tokens:
# - T prompt-side tokens: 1 IoU token + 4 mask tokens (learned) + the sparse prompt tokens
#   (lesson 09);
# - N = G x G image tokens (64 x 64 = 4096 for vit_b, 16 x 16 = 256 for micro): the image
#   embedding plus the dense prompt embedding.
# Each of the 2 blocks runs, in order:
#   1. self-attention among the T tokens (block 0: no residual and no PE, it *replaces* them);
#   2. token -> image cross-attention: each token is a query over the N image positions
#      (q = token + its PE, k = image + dense PE, v = image *without* PE);
#   3. an MLP on the tokens (C -> decoder_mlp_dim -> C, ReLU);
#   4. image -> token cross-attention: each image position queries the T tokens, so the image
#      embedding is updated by the prompt (this is what makes the mask depend on the prompt).
# After the blocks, one more token -> image attention and a LayerNorm. The positional
# encodings are re-added before *every* attention: the prompt tokens' original values stand
# in as their PE. Cross-attentions work in C/2 channels (downsample rate 2), 8 heads.
#
# In symbols: $t \in \mathbb{R}^{T \times C}$ the tokens, $x \in \mathbb{R}^{N \times C}$ the image
# tokens, $P_t$ the tokens' PE (the prompt tokens as they entered the decoder) and $P_x$ the dense
# PE. One attention with $h$ heads, working in $C_i$ channels ($C_i = C$ for self-attention,
# $C/2$ for the cross-attentions), each head of $d = C_i / h$ channels:
#
# $$
# \operatorname{Attn}(Q, K, V) = \Big[ \operatorname{softmax}\!\Big( \frac{(Q W_q)_j\, (K W_k)_j^{\top}}{\sqrt{d}} \Big)
#   (V W_v)_j \Big]_{j=1}^{h} W_o
# $$
#
# ($W_q, W_k, W_v \in \mathbb{R}^{C \times C_i}$, $W_o \in \mathbb{R}^{C_i \times C}$, all with biases; $(\cdot)_j$
# the $j$-th group of $d$ columns; the softmax runs over the keys). A block's four steps are then
#
# $$
# \begin{aligned}
# 1.\quad t &\leftarrow \operatorname{LN}_1\big(t + \operatorname{Attn}_{\text{self}}(t + P_t,\ t + P_t,\ t)\big)
#   && \text{(block 0: } t \leftarrow \operatorname{LN}_1(\operatorname{Attn}_{\text{self}}(t, t, t))\text{)} \\
# 2.\quad t &\leftarrow \operatorname{LN}_2\big(t + \operatorname{Attn}_{t \to x}(t + P_t,\ x + P_x,\ x)\big) \\
# 3.\quad t &\leftarrow \operatorname{LN}_3\big(t + \max(0,\ t W_1 + b_1)\, W_2 + b_2\big) \\
# 4.\quad x &\leftarrow \operatorname{LN}_4\big(x + \operatorname{Attn}_{x \to t}(x + P_x,\ t + P_t,\ t)\big)
# \end{aligned}
# $$
#
# and after the last block, once more,
# $t \leftarrow \operatorname{LN}\big(t + \operatorname{Attn}_{t \to x}(t + P_t,\ x + P_x,\ x)\big)$.
# The LayerNorms come *after* each residual sum (post-norm), unlike the image encoder's pre-norm
# blocks. Section 2b computes these four lines by hand.
#
# The figures show the softmax weights of token -> image attention for the point token as G x G
# maps over the image, and where the image looks at each token. The model is the default one
# (``--model micro``, trained on synthetic shapes; ``--model vit_b`` for the official weights)
# and the image a synthetic scene: with trained weights some heads look at the clicked shape,
# others at its border or at the rest of the scene. The main figure,
# ``11_token_to_image_attention.png``, shows the head that looks most at the clicked shape, the
# one that looks least, and how much of its attention every head puts on the shape;
# ``11_token_to_image_heads.png`` shows the maps of all heads.
#
# Run:  python lessons/11_two_way_transformer.py --out out/11

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("11", "Lesson 11: the two-way transformer: prompts read the image, the image "
                                "reads the prompts")

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.config import MICRO, VIT_B  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
C, G, S, K = cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.img_size, cfg.num_mask_tokens


# %% [markdown]
# ## 1. One image, one click: run the decoder with a trace

# %%
scene = make_scene(np.random.default_rng(16), S)
obj = max(scene.objects, key=lambda i: scene.masks[i].sum())     # the largest object
target = scene.masks[obj]                                         # [S, S] bool, the clicked object
point = interior_point(target)                                    # [2] (x, y)
predictor = SamPredictor(sam)
predictor.set_image(scene.image)
print(f"scene {scene.image.shape}; image embedding {predictor.get_image_embedding().shape}; "
      f"click at {point.tolist()} on a '{scene.kinds[obj]}'")
trace = {}
masks, iou, _ = predictor.predict(point_coords=point[None], point_labels=np.array([1]), trace=trace)
sparse = trace["prompt_encoder"][0]                               # [1, Ns, C]
T = 1 + K + sparse.shape[1]
print(f"tokens: 1 IoU + {K} mask + {sparse.shape[1]} prompt (point + padding) = {T}; "
      f"image tokens: {G} x {G} = {G * G}")


# %% [markdown]
# ## 2. Every stage of the two blocks, with its shape

# %%
t = "mask_decoder.transformer"
for i in range(cfg.decoder_depth):
    L = f"{t}.layers.{i}"
    for name in ("self_attn", "cross_attn_token_to_image", "mlp", "cross_attn_image_to_token"):
        print(f"  layer {i} {name:<28} out {trace[f'{L}.{name}'].shape}")
    print(f"  layer {i} -> (tokens {trace[L][0].shape}, image {trace[L][1].shape})")
print(f"  final token->image attention {trace[t + '.final_attn_token_to_image'].shape}, "
      f"norm -> {trace[t + '.norm_final_attn'].shape}")
q = trace[f"{t}.layers.0.cross_attn_token_to_image.q_proj"]      # [1, T, C/2]
k = trace[f"{t}.layers.0.cross_attn_token_to_image.k_proj"]      # [1, N, C/2]
print(f"  cross-attention works in {q.shape[-1]} channels (C = {C} / downsample rate "
      f"{cfg.attention_downsample_rate}), {cfg.decoder_num_heads} heads of {q.shape[-1] // cfg.decoder_num_heads}: "
      f"q {q.shape}, k {k.shape}")
tokens_out, image_out = trace[f"{t}.layers.0"]                     # [1, T, C], [1, N, C]
_lesson.claim(cfg.decoder_depth == 2 and K == 4 and tokens_out.shape[1] == T and image_out.shape[1] == G * G,
              f"{cfg.decoder_depth} blocks update T = 1 IoU + {K} mask + {sparse.shape[1]} prompt = "
              f"{tokens_out.shape[1]} tokens and N = {image_out.shape[1]} = {G} x {G} image tokens")
_lesson.claim(VIT_B.image_embedding_size ** 2 == 4096 and MICRO.image_embedding_size ** 2 == 256,
              f"N = {VIT_B.image_embedding_size ** 2} image tokens for vit_b, "
              f"{MICRO.image_embedding_size ** 2} for micro")
_lesson.claim(cfg.attention_downsample_rate == 2 and q.shape[-1] == k.shape[-1] == C // 2
              and cfg.decoder_num_heads == 8,
              f"the cross-attentions work in {q.shape[-1]} = C/2 channels, {cfg.decoder_num_heads} heads")


# %% [markdown]
# ## 2b. The same steps spelled out in numpy, from the transformer's inputs
#
# The trace comes from minisam's fused decoder (minisam.kernels); here each step of the list
# at the top is written again from the weights, and every intermediate compared with it.

# %%
pd = sam.params["mask_decoder"]
tokens = np.concatenate([pd["iou_token"]["weight"], pd["mask_tokens"]["weight"], sparse[0]])[None]   # [1, T, C]
dense = trace["prompt_encoder"][1]                                                # [1, C, G, G]
image = (predictor.get_image_embedding() + dense).reshape(1, C, G * G).transpose(0, 2, 1)   # [1, N, C]
image_pe = sam.get_dense_pe().reshape(1, C, G * G).transpose(0, 2, 1)            # [1, N, C]


def lin(x, p):                                                    # nn.Linear: [..., in] -> [..., out]
    return x @ p["weight"].T + p["bias"]


def ln(x, p, eps=cfg.decoder_norm_eps):                           # nn.LayerNorm over channels: [..., C]
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + eps) * p["weight"] + p["bias"]


def attend(p, q, k, v):
    """Project, split into heads, softmax(q k^T / sqrt(hd)) v, merge, project:
    q [1, Tq, C], k and v [1, Tk, C] -> (out [1, Tq, C], weights [1, h, Tq, Tk])."""
    qh, kh, vh = (lin(x, p[n]).reshape(x.shape[1], cfg.decoder_num_heads, -1).transpose(1, 0, 2)
                  for x, n in ((q, "q_proj"), (k, "k_proj"), (v, "v_proj")))           # [h, T, hd] each
    scores = qh @ kh.transpose(0, 2, 1) / np.sqrt(qh.shape[-1])                       # [h, Tq, Tk]
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)                                          # rows sum to 1
    merged = (weights @ vh).transpose(1, 0, 2).reshape(1, q.shape[1], -1)             # [1, Tq, C/2]
    return lin(merged, p["out_proj"]), weights[None]


def off(mine, name):                     # max |mine - traced| as a fraction of the traced max
    return float(np.abs(mine - trace[name]).max() / np.abs(trace[name]).max())


# Same float32 arithmetic in another order: it must agree to 1e-5 of each tensor's max |value|.
queries, keys = tokens, image                                     # [1, T, C], [1, N, C]
errors = {}                                                       # step -> relative max |difference|
for i in range(cfg.decoder_depth):
    p, L = pd["transformer"]["layers"][i], f"{t}.layers.{i}"
    if i == 0:                                                    # 1. replaces the tokens: no PE, no residual
        attn_out, _ = attend(p["self_attn"], queries, queries, queries)
        with_residual = ln(queries + attn_out, p["norm1"])        # what a residual would have given
        queries = ln(attn_out, p["norm1"])
    else:                                                         # 1. PE on q and k, and a residual
        attn_out, _ = attend(p["self_attn"], queries + tokens, queries + tokens, queries)
        queries = ln(queries + attn_out, p["norm1"])
    errors[f"{i}.self_attn"] = off(queries, f"{L}.norm1")
    attn_out, weights = attend(p["cross_attn_token_to_image"], queries + tokens, keys + image_pe, keys)   # 2.
    errors[f"{i}.token_to_image weights"] = off(weights, f"{L}.cross_attn_token_to_image.attn_weights")
    if i == 0:                                                    # the values with the PE, for comparison
        with_pe_values, _ = attend(p["cross_attn_token_to_image"], queries + tokens, keys + image_pe,
                                   keys + image_pe)
    errors[f"{i}.token_to_image"] = off(attn_out, f"{L}.cross_attn_token_to_image")
    queries = ln(queries + attn_out, p["norm2"])
    mlp_out = lin(np.maximum(lin(queries, p["mlp"]["lin1"]), 0), p["mlp"]["lin2"])        # 3. C -> Dm -> C, ReLU
    errors[f"{i}.mlp"] = off(mlp_out, f"{L}.mlp")
    queries = ln(queries + mlp_out, p["norm3"])
    attn_out, _ = attend(p["cross_attn_image_to_token"], keys + image_pe, queries + tokens, queries)   # 4.
    keys = ln(keys + attn_out, p["norm4"])
    errors[f"{i}.image_to_token"] = off(keys, f"{L}.norm4")
attn_out, _ = attend(pd["transformer"]["final_attn_token_to_image"], queries + tokens, keys + image_pe, keys)
queries = ln(queries + attn_out, pd["transformer"]["norm_final_attn"], eps=1e-5)   # nn.LayerNorm's default eps
errors["final"] = off(queries, f"{t}.norm_final_attn")
print("spelled out vs the decoder, max |diff| / max |value| per step:",
      ", ".join(f"{step} {e:.1e}" for step, e in errors.items()))
residual_off = off(with_residual, f"{t}.layers.0.norm1")
values_off = off(with_pe_values, f"{t}.layers.0.cross_attn_token_to_image")
cross_off = max(e for step, e in errors.items() if "token_to_image" in step)
mlp_off = max(errors[f"{i}.mlp"] for i in range(cfg.decoder_depth))
image_off = max(errors[f"{i}.image_to_token"] for i in range(cfg.decoder_depth))
lin1, act = trace[f"{t}.layers.0.mlp.lin1"], trace[f"{t}.layers.0.mlp.act"]      # [1, T, Dm] each
_lesson.claim(errors["0.self_attn"] <= 1e-5 and residual_off > 1e-2,
              f"layer 0's self-attention replaces the tokens: LN(attention) is the model's norm1 to "
              f"{errors['0.self_attn']:.1e} of its max; LN(tokens + attention) would be {residual_off:.2f} off")
_lesson.claim(cross_off <= 1e-5 and values_off > 1e-2,
              f"token -> image attention, the image being its embedding + the dense prompt embedding, with "
              f"q = tokens + PE, k = image + dense PE, v = image without PE, is the model's (weights and output, "
              f"every layer, within {cross_off:.1e} of max); "
              f"values with the PE would be {values_off:.2f} off")
_lesson.claim(lin1.shape[-1] == cfg.decoder_mlp_dim and np.array_equal(act, np.maximum(lin1, 0))
              and (lin1 < 0).any() and mlp_off <= 1e-5,
              f"the token MLP is C = {C} -> {lin1.shape[-1]} -> C with ReLU: its activation is max(lin1, 0) "
              f"exactly ({(act == 0).mean():.0%} zeros), and spelled out it is the model's to {mlp_off:.1e} of max")
_lesson.claim(image_off <= 1e-5,
              f"image -> token attention (q = image + PE, k = tokens + PE, v = tokens), residual and norm4 is "
              f"the model's image update to {image_off:.1e} of max")
_lesson.claim(max(errors.values()) <= 1e-5,
              f"both blocks and the final attention + LayerNorm, with the PEs re-added before every attention "
              f"and the original tokens as their PE, are the model's transformer: worst step "
              f"{max(errors, key=errors.get)} at {max(errors.values()):.1e} of max")


# %% [markdown]
# ## 3. Token -> image attention of the point token, per layer and head
#
# Each map is one row of a softmax: it sums to 1 over the N image positions. Its mass on the
# object is the sum over the cells that lie mostly on the clicked shape. Top of the main
# figure: the maps of the head with the most mass on the object (left) and the least (right),
# on one colour scale; bottom: that mass for every head of both layers and the final attention,
# against the share of the cells the object covers.

# %%
names = [f"{t}.layers.{i}.cross_attn_token_to_image" for i in range(cfg.decoder_depth)]
names.append(f"{t}.final_attn_token_to_image")
rows = [f"layer {i}" for i in range(cfg.decoder_depth)] + ["final"]   # one per attention in names
heads = cfg.decoder_num_heads
point_tok = 1 + K                                                 # the point token among the T tokens
patch = S // G                                                    # pixels per grid cell
inside = target.reshape(G, patch, G, patch).mean(axis=(1, 3)) > 0.5   # [S, S] -> [G, G] cells mostly on the object
maps, masses = [], []                                             # per attention: [h, G, G] maps, [h] on the object
for name in names:
    w = trace[name + ".attn_weights"]                             # [B, h, T, N]
    on_object = w[0, :, point_tok][:, inside.ravel()].sum(-1)     # [h] attention mass on the object
    maps.append(w[0, :, point_tok].reshape(heads, G, G))          # [h, N] -> [h, G, G]
    masses.append(on_object)
    print(f"{name}.attn_weights {w.shape}: row sum {w[0, 0, point_tok].sum():.4f}; mass on the object "
          f"per head {np.round(on_object, 2)} (object = {inside.mean():.0%} of the cells)")
maps, masses = np.stack(maps), np.stack(masses)                   # [layers, h, G, G], [layers, h]
share = inside.mean()
most = np.unravel_index(np.argmax(masses), masses.shape)          # (layer, head)
least = np.unravel_index(np.argmin(masses), masses.shape)         # (layer, head)

fig, axes = plt.subplot_mosaic([["most", "least"], ["mass", "mass"]], figsize=(7.8, 8.2),
                               height_ratios=[1.25, 1], layout="constrained")
vmax = max(maps[most].max(), maps[least].max())
for key, (r, h) in (("most", most), ("least", least)):
    ax = axes[key]
    ax.imshow(scene.image)
    im = ax.imshow(maps[r, h], cmap="viridis", alpha=0.75, vmin=0, vmax=vmax, extent=(0, S, S, 0))   # [G, G]
    ax.contour(target, levels=[0.5], colors="w", linewidths=1)
    ax.plot(*point, "r*", ms=12)
    ax.set_title(f"{rows[r]}, head {h}:\n{masses[r, h]:.2f} of it on the object")
    ax.axis("off")
fig.colorbar(im, ax=[axes["most"], axes["least"]], shrink=0.8, label="attention weight\n(sums to 1 over the image)")
ax = axes["mass"]
width = 0.8 / len(names)
for r in range(len(names)):
    ax.bar(np.arange(heads) + (r - (len(names) - 1) / 2) * width, masses[r], width, label=rows[r])
ax.axhline(share, color="k", ls="--", lw=1, label=f"object: {share:.2f} of the cells")
ax.set_xticks(range(heads))
ax.set_xlabel("head")
ax.set_ylabel("attention on the object")
ax.set_ylim(0, 1.05)
ax.legend(ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
ax.grid(axis="y", alpha=0.3)
fig.suptitle(f"Token -> image attention of the point token over the {G} x {G} image:\n"
             f"up to {masses.max():.2f} of it falls on the clicked {scene.kinds[obj]} (white line; star: the click),\n"
             f"as little as {masses.min():.2f} in other heads")
_lesson.save(fig, args, "11_token_to_image_attention.png")
plt.close(fig)

# Every head of every layer.
fig, axes = plt.subplots(len(names), heads, figsize=(2.0 * heads, 2.2 * len(names)))
for r in range(len(names)):
    for h in range(heads):
        ax = axes[r, h]
        ax.imshow(scene.image)
        ax.imshow(maps[r, h], cmap="viridis", alpha=0.75, extent=(0, S, S, 0))   # [G, G]
        ax.contour(target, levels=[0.5], colors="w", linewidths=0.8)
        ax.plot(*point, "r*", ms=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(f"head {h}")
    axes[r, 0].set_ylabel(rows[r], fontsize=11)
fig.suptitle(f"Token -> image attention of the point token ({G} x {G} softmax weights; white: the clicked object)")
fig.tight_layout()
_lesson.save(fig, args, "11_token_to_image_heads.png")
plt.close(fig)
row_off = max(float(np.abs(trace[name + ".attn_weights"].sum(-1) - 1).max()) for name in names)
_lesson.claim(row_off <= 1e-5, f"every token's token -> image weights, in every layer and head, sum to 1 over "
                               f"the N = {G * G} positions (max |sum - 1| {row_off:.1e})")
if args.checkpoint is None:   # the registered models are trained; a --checkpoint may hold any weights
    _lesson.claim(masses.max() >= max(0.5, 3 * share) and masses.min() < share,
                  f"with trained weights some heads look at the clicked shape, others away from it: up to "
                  f"{masses.max():.2f} and as little as {masses.min():.2f} of the point token's attention "
                  f"falls on the object, which covers {share:.2f} of the cells")


# %% [markdown]
# ## 4. Image -> token attention: which token does each image position read?
#
# Here the softmax runs over the T tokens, so at every position the T maps sum to 1.

# %%
w = trace[f"{t}.layers.0.cross_attn_image_to_token.attn_weights"][0].mean(0)   # [h, N, T] -> [N, T]
print(f"image -> token weights, layer 0, mean over heads: {w.shape}; sums over tokens "
      f"{w.sum(-1).min():.4f}..{w.sum(-1).max():.4f}")
names_i2t = [f"{t}.layers.{i}.cross_attn_image_to_token" for i in range(cfg.decoder_depth)]
position_off = max(float(np.abs(trace[name + ".attn_weights"].sum(-1) - 1).max()) for name in names_i2t)
_lesson.claim(position_off <= 1e-5 and trace[names_i2t[0] + ".attn_weights"].shape[-2:] == (G * G, T),
              f"each of the N = {G * G} image positions queries the T = {T} tokens, and its weights sum to 1 "
              f"in every layer and head (max |sum - 1| {position_off:.1e})")
labels = ["IoU"] + [f"mask {k}" for k in range(K)] + ["point", "pad"]
fig, axes = plt.subplots(1, T + 1, figsize=(2.3 * (T + 1), 2.8))
axes[0].imshow(scene.image)
axes[0].plot(*point, "r*", ms=10)
axes[0].set_title("image + click")
axes[0].axis("off")
for j in range(T):
    axes[j + 1].imshow(w[:, j].reshape(G, G), cmap="viridis", vmin=0, vmax=w.max())   # [N] -> [G, G]
    axes[j + 1].set_title(labels[j] if j < len(labels) else f"token {j}")
    axes[j + 1].axis("off")
fig.suptitle("Image -> token attention, layer 0 (mean over heads): each position's weights sum to 1 across tokens")
fig.tight_layout()
_lesson.save(fig, args, "11_image_to_token_attention.png")
plt.close(fig)
# Image -> token attention is the only step that writes to the image tokens, so it is how the
# prompt reaches them: click elsewhere, and the image tokens entering the transformer are the
# same while those leaving layer 0 are not.
other_trace = {}
predictor.predict(point_coords=interior_point(~target)[None], point_labels=np.array([1]), trace=other_trace)
image_after = trace[f"{t}.layers.0"][1]                           # [1, N, C]
moved = float(np.abs(other_trace[f"{t}.layers.0"][1] - image_after).max() / np.abs(image_after).max())
_lesson.claim(np.array_equal(other_trace["prompt_encoder"][1], dense) and moved > 1e-2,
              f"a click off the object leaves the image tokens entering the transformer unchanged (same dense "
              f"embedding) but moves those after layer 0 by {moved:.2f} of their max: the image reads the prompt")
print(f"masks {masks.shape}, IoU predictions {np.round(iou, 3)}")
