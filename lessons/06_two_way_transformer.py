"""Lesson 06: the two-way transformer: prompts read the image, the image reads the prompts.

The mask decoder (Kirillov et al. 2023, section 3 and appendix A, figure 14; official
``modeling/transformer.py``; minisam ``minisam/modeling/transformer.py``) works on two sets of tokens:
- T prompt-side tokens: 1 IoU token + 4 mask tokens (learned) + the sparse prompt tokens
  (lesson 05);
- N = G x G image tokens (64 x 64 = 4096 for vit_b, 16 x 16 = 256 for micro): the image
  embedding plus the dense prompt embedding.
Each of the 2 blocks runs, in order:
  1. self-attention among the T tokens (block 0: no residual and no PE, it *replaces* them);
  2. token -> image cross-attention: each token is a query over the N image positions
     (q = token + its PE, k = image + dense PE, v = image *without* PE);
  3. an MLP on the tokens (C -> decoder_mlp_dim -> C, ReLU);
  4. image -> token cross-attention: each image position queries the T tokens, so the image
     embedding is updated by the prompt (this is what makes the mask depend on the prompt).
After the blocks, one more token -> image attention and a LayerNorm. The positional
encodings are re-added before *every* attention: the prompt tokens' original values stand
in as their PE. Cross-attentions work in C/2 channels (downsample rate 2), 8 heads.

The figures show the softmax weights of token -> image attention for the point token, per
layer and head, as G x G maps over the image, and where the image looks at each token. The
model is the default one (``--model micro``, trained on synthetic shapes; ``--model vit_b``
for the official weights) and the image a synthetic scene: with trained weights some heads
look at the clicked shape, others at its border or at the rest of the scene.

Run:  python lessons/06_two_way_transformer.py --out out/06
"""

import numpy as np

import _lesson

args = _lesson.parse_args("06", __doc__.splitlines()[0])

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
C, G, S, K = cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.img_size, cfg.num_mask_tokens

# --- 1. One image, one click: run the decoder with a trace --------------------------------
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

# --- 2. Every stage of the two blocks, with its shape --------------------------------------
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

# --- 3. Token -> image attention of the point token, per layer and head -------------------
# Each map is one row of a softmax: it sums to 1 over the N image positions.
names = [f"{t}.layers.{i}.cross_attn_token_to_image" for i in range(cfg.decoder_depth)]
names.append(f"{t}.final_attn_token_to_image")
heads = cfg.decoder_num_heads
point_tok = 1 + K                                                 # the point token among the T tokens
patch = S // G                                                    # pixels per grid cell
inside = target.reshape(G, patch, G, patch).mean(axis=(1, 3)) > 0.5   # [S, S] -> [G, G] cells mostly on the object
fig, axes = plt.subplots(len(names), heads, figsize=(2.0 * heads, 2.2 * len(names)))
for r, name in enumerate(names):
    w = trace[name + ".attn_weights"]                             # [B, h, T, N]
    on_object = w[0, :, point_tok][:, inside.ravel()].sum(-1)     # [h] attention mass on the object
    print(f"{name}.attn_weights {w.shape}: row sum {w[0, 0, point_tok].sum():.4f}; mass on the object "
          f"per head {np.round(on_object, 2)} (object = {inside.mean():.0%} of the cells)")
    for h in range(heads):
        ax = axes[r, h]
        ax.imshow(scene.image)
        ax.imshow(w[0, h, point_tok].reshape(G, G), cmap="viridis", alpha=0.75, extent=(0, S, S, 0))  # [N] -> [G, G]
        ax.contour(target, levels=[0.5], colors="w", linewidths=0.8)
        ax.plot(*point, "r*", ms=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(f"head {h}")
    axes[r, 0].set_ylabel(f"layer {r}" if r < cfg.decoder_depth else "final", fontsize=11)
fig.suptitle(f"Token -> image attention of the point token ({G} x {G} softmax weights; white: the clicked object)")
fig.tight_layout()
_lesson.save(fig, args, "06_token_to_image_attention.png")
plt.close(fig)

# --- 4. Image -> token attention: which token does each image position read? --------------
# Here the softmax runs over the T tokens, so at every position the T maps sum to 1.
w = trace[f"{t}.layers.0.cross_attn_image_to_token.attn_weights"][0].mean(0)   # [h, N, T] -> [N, T]
print(f"image -> token weights, layer 0, mean over heads: {w.shape}; sums over tokens "
      f"{w.sum(-1).min():.4f}..{w.sum(-1).max():.4f}")
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
_lesson.save(fig, args, "06_image_to_token_attention.png")
plt.close(fig)
print(f"masks {masks.shape}, IoU predictions {np.round(iou, 3)}")
