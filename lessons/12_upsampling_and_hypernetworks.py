# %% [markdown]
# # Lesson 12: from tokens to pixels: upscaling and hypernetworks
#
# After the two-way transformer (lesson 11) the decoder holds an updated image embedding
# (C x G x G: 256 x 64 x 64 for vit_b, 96 x 16 x 16 for micro) and updated output tokens.
# Masks come out in two moves (Kirillov et al. 2023, section 3 "Mask decoder", appendix A;
# official ``modeling/mask_decoder.py`` predict_masks; minisam ``minisam/modeling/mask_decoder.py``):
#
# 1. Upscale the image embedding 4x with two transposed convolutions, kernel 2 stride 2
#    (C -> C/4 channels at 2G x 2G, LayerNorm2d, GELU; -> C/8 channels at 4G x 4G, GELU;
#    for vit_b 256 -> 64 -> 32 channels, 64 -> 128 -> 256 pixels).
#    With kernel = stride = 2 the patches do not overlap: every input pixel paints its own 2x2
#    output patch, so each transposed conv is a single matrix product.
# 2. Each of the 4 mask tokens goes through its own 3-layer MLP (a "hypernetwork") to a
#    C/8-vector. The mask logits are the dot product of that vector with the C/8 upscaled
#    channels at every pixel: a 1x1 convolution whose weights are *computed from the prompt*.
#    One matrix product makes all 4 masks: [4, C/8] @ [C/8, 4G * 4G].
#
# In symbols, with $x \in \mathbb{R}^{C \times G \times G}$ the image embedding after the transformer and
# $t_k \in \mathbb{R}^{C}$ the $k$-th mask token after it:
#
# $$
# \begin{aligned}
# E &= \operatorname{GELU}\Big(\operatorname{ConvT}_2\big(
#   \operatorname{GELU}(\operatorname{LN2d}(\operatorname{ConvT}_1(x)))\big)\Big)
#   \in \mathbb{R}^{C/8 \times 4G \times 4G}, \\
# \operatorname{ConvT}(x)_{o,\,2i+a,\,2j+b} &= \beta_o + \sum_{c} x_{c,i,j}\, W_{c,o,a,b}
#   \qquad (a, b \in \{0, 1\}), \\
# w_k &= \operatorname{MLP}_k(t_k) \in \mathbb{R}^{C/8}
#   \qquad (\text{Linear, ReLU, Linear, ReLU, Linear}), \\
# m_k[i, j] &= w_k^{\top} E_{:,i,j} = \sum_{c=1}^{C/8} w_{k,c}\, E_{c,i,j},
#   \qquad\text{all at once: } M = W\, E_{\text{flat}},\ W = [w_1; \dots; w_4] \in \mathbb{R}^{4 \times C/8}.
# \end{aligned}
# $$
#
# $E$ is shared by the four masks (it depends on the prompt only through the image -> token
# attention of lesson 11); they differ only by the weights $w_k$ with which they mix its $C/8$
# upscaled channels.
#
# The figures are for a click on a synthetic scene (default model ``micro``; ``--model vit_b``
# for the official weights). The main one, ``12_mask_logits.png``, shows the click and the mask
# ``predict()`` returns, the $K \times C/8$ matrix $W$ of hypernetwork weights, and the 4G x 4G
# logits of the best- and the worst-scored multimask tokens: one upscaled embedding, two rows of
# $W$, two masks. ``12_upscaled_channels.png`` shows upscaled channels after each transposed
# conv, and ``12_all_mask_tokens.png`` every mask token's weights and logits.
#
# Run:  python lessons/12_upsampling_and_hypernetworks.py --out out/12

# %%
import math

import numpy as np

import _lesson

args = _lesson.parse_args("12", "Lesson 12: from tokens to pixels: upscaling and hypernetworks")

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.config import MICRO, VIT_B  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402
from minisam.modeling.mask_decoder import conv_transpose2x2_s2  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
C, G, S, K, M = cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.img_size, cfg.num_mask_tokens, cfg.mask_input_size


# %% [markdown]
# ## 1. A click, decoded with a trace

# %%
scene = make_scene(np.random.default_rng(16), S)
obj = max(scene.objects, key=lambda i: scene.masks[i].sum())     # the largest object
target = scene.masks[obj]                                         # [S, S] bool
point = interior_point(target)                                    # [2] (x, y)
predictor = SamPredictor(sam)
predictor.set_image(scene.image)
trace = {}
masks, iou, low_res = predictor.predict(point_coords=point[None], point_labels=np.array([1]), trace=trace)
print(f"scene {scene.image.shape}, click {point.tolist()} on a '{scene.kinds[obj]}'; "
      f"image embedding {predictor.get_image_embedding().shape}")


# %% [markdown]
# ## 2. Upscaling: C x G x G -> C/8 x 4G x 4G

# %%
up = "mask_decoder.output_upscaling"
names = ["ConvTranspose2d 2x2/2", "LayerNorm2d", "GELU", "ConvTranspose2d 2x2/2", "GELU"]
src = trace["mask_decoder.transformer"][1]                        # [1, N, C] image tokens after the transformer
print(f"image tokens after the transformer: {src.shape} -> as a map {(1, C, G, G)}")
for i, n in enumerate(names):
    print(f"  output_upscaling.{i} {n:<22} -> {trace[f'{up}.{i}'].shape}")
upscaled = trace[up]                                              # [1, C/8, M, M]
c8 = upscaled.shape[1]
step_shapes = [trace[f"{up}.{i}"].shape for i in range(len(names))]
_lesson.claim(step_shapes == [(1, C // 4, 2 * G, 2 * G)] * 3 + [(1, C // 8, 4 * G, 4 * G)] * 2 and M == 4 * G,
              f"the upscaling takes C x G x G = {C} x {G} x {G} to {C // 4} x {2 * G} x {2 * G}, "
              f"then {c8} x {upscaled.shape[-1]} x {upscaled.shape[-1]} = C/8 x 4G x 4G")
_lesson.claim((VIT_B.prompt_embed_dim, VIT_B.image_embedding_size) == (256, 64)
              and (MICRO.prompt_embed_dim, MICRO.image_embedding_size) == (96, 16)
              and (VIT_B.prompt_embed_dim // 4, VIT_B.prompt_embed_dim // 8) == (64, 32),
              f"vit_b's embedding is {VIT_B.prompt_embed_dim} x {VIT_B.image_embedding_size} x "
              f"{VIT_B.image_embedding_size}, upscaled to {VIT_B.prompt_embed_dim // 4} then "
              f"{VIT_B.prompt_embed_dim // 8} channels at {2 * VIT_B.image_embedding_size} and "
              f"{4 * VIT_B.image_embedding_size} pixels; micro's is {MICRO.prompt_embed_dim} x "
              f"{MICRO.image_embedding_size} x {MICRO.image_embedding_size}")

# Kernel = stride = 2: output pixel (2i + a, 2j + b) depends on input pixel (i, j) alone,
# through the weight slice W[:, :, a, b]. Check it on one output pixel of the first conv.
p_up = sam.params["mask_decoder"]["output_upscaling"][0]
x_map = np.ascontiguousarray(src.transpose(0, 2, 1).reshape(1, C, G, G))   # [1, N, C] -> [1, C, G, G]
y = conv_transpose2x2_s2(x_map, p_up["weight"], p_up["bias"])     # [1, C/4, 2G, 2G]
i, j, a, b = G // 3, G // 2, 1, 0
by_hand = x_map[0, :, i, j] @ p_up["weight"][:, :, a, b] + p_up["bias"]   # [C] @ [C, C/4] -> [C/4]
err = np.abs(by_hand - y[0, :, 2 * i + a, 2 * j + b]).max()
print(f"transposed conv weight {p_up['weight'].shape}: output pixel ({2 * i + a}, {2 * j + b}) = "
      f"input pixel ({i}, {j}) @ W[:, :, {a}, {b}]: max |diff| {err:.1e}")
# Same float32 sums in another order: equal to 1e-5 of the largest |value|.
_lesson.claim(err <= 1e-5 * np.abs(y).max(),
              f"output pixel ({2 * i + a}, {2 * j + b}) is input pixel ({i}, {j}) @ W[:, :, {a}, {b}] + bias: "
              f"max |diff| {err:.1e}, {err / np.abs(y).max():.1e} of max")
# No overlap: changing one input pixel changes exactly the 2 x 2 output patch it paints.
nudged = x_map.copy()
nudged[0, :, i, j] += 1
changed = np.abs(conv_transpose2x2_s2(nudged, p_up["weight"], p_up["bias"]) - y).max(axis=(0, 1))   # [2G, 2G]
changed = changed > 1e-5 * np.abs(y).max()                        # above float32 rounding
patch_of_ij = np.zeros_like(changed)
patch_of_ij[2 * i:2 * i + 2, 2 * j:2 * j + 2] = True
_lesson.claim(np.array_equal(changed, patch_of_ij),
              f"changing input pixel ({i}, {j}) changes {changed.sum()} output pixels, all in its own 2x2 patch "
              f"rows {2 * i}..{2 * i + 1}, columns {2 * j}..{2 * j + 1}")
# The whole layer as one matrix product, against the model's traced (fused) upscaling.
pixels = x_map[0].reshape(C, G * G).T                             # [C, G, G] -> [N, C]
one_gemm = (pixels @ p_up["weight"].reshape(C, -1)).reshape(G, G, -1, 2, 2)       # [N, C/4*2*2] -> [G, G, C/4, 2, 2]
one_gemm = one_gemm.transpose(2, 0, 3, 1, 4).reshape(-1, 2 * G, 2 * G) + p_up["bias"][:, None, None]   # [C/4, 2G, 2G]
gemm_err = np.abs(one_gemm - trace[f"{up}.0"][0]).max() / np.abs(trace[f"{up}.0"]).max()
_lesson.claim(gemm_err <= 1e-5,
              f"the first transposed conv is one [{G * G}, {C}] @ [{C}, {p_up['weight'][0].size}] matrix product: "
              f"it equals the model's to {gemm_err:.1e} of max")
# The rest of the chain by hand: LayerNorm2d over the channels (eps 1e-6), the exact GELU,
# the second transposed conv (as an einsum this time), GELU.
erf = np.vectorize(math.erf)
p_norm, p_up2 = sam.params["mask_decoder"]["output_upscaling"][1], sam.params["mask_decoder"]["output_upscaling"][3]
h = trace[f"{up}.0"][0]                                           # [C/4, 2G, 2G]
h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-6) * p_norm["weight"][:, None, None] + p_norm["bias"][:, None, None]
h = 0.5 * h * (1 + erf(h / np.sqrt(2)))                           # GELU
h = np.einsum("cij,coab->oiajb", h, p_up2["weight"]).reshape(c8, M, M) + p_up2["bias"][:, None, None]   # [C/8, M, M]
h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
chain_err = np.abs(h - upscaled[0]).max() / np.abs(upscaled).max()
_lesson.claim(chain_err <= 1e-5,
              f"LayerNorm2d, GELU, the second transposed conv and GELU, in that order, give the model's "
              f"{c8} x {M} x {M} upscaled embedding to {chain_err:.1e} of max")


# %% [markdown]
# ## 3. Hypernetworks: one C/8-vector per mask token, dotted with every pixel

# %%
hyper = np.stack([trace[f"mask_decoder.output_hypernetworks_mlps.{k}"] for k in range(K)],
                 axis=1)                                          # K x [1, C/8] -> [1, K, C/8]
print(f"hypernetwork outputs: {K} x {trace['mask_decoder.output_hypernetworks_mlps.0'].shape} -> {hyper.shape}")
# Each mask token through its own 3-layer MLP (Linear, ReLU, Linear, ReLU, Linear), by hand.
mask_tokens_out = trace["mask_decoder.transformer"][0][0, 1:1 + K]   # [K, C] mask tokens after the transformer
hyper_params = sam.params["mask_decoder"]["output_hypernetworks_mlps"]   # {k: {"layers": {0, 1, 2: Linear}}}
by_hand_hyper = []
for k, token in enumerate(mask_tokens_out):
    layers = hyper_params[k]["layers"]
    for n in range(len(layers)):
        token = token @ layers[n]["weight"].T + layers[n]["bias"]
        token = np.maximum(token, 0) if n < len(layers) - 1 else token
    by_hand_hyper.append(token)
hyper_err = np.abs(np.stack(by_hand_hyper) - hyper[0]).max() / np.abs(hyper).max()
first_layers = [hyper_params[k]["layers"][0]["weight"] for k in range(K)]
_lesson.claim(len(layers) == 3 and hyper.shape == (1, K, C // 8) and hyper_err <= 1e-5
              and not any(np.array_equal(first_layers[0], w) for w in first_layers[1:]),
              f"each of the {K} mask tokens goes through its own (differently weighted) {len(layers)}-layer MLP to "
              f"a C/8 = {hyper.shape[-1]}-vector, by hand the model's to {hyper_err:.1e} of max")
all_masks = (hyper @ upscaled.reshape(1, c8, -1)).reshape(1, K, M, M)   # [1, K, C/8] @ [1, C/8, M*M] -> [1, K, M, M]
mask_err = np.abs(all_masks[0, 1:] - low_res).max()
print(f"masks = hyper @ upscaled: {all_masks.shape}; the multimask output keeps tokens 1..{K - 1}: "
      f"max |difference| = {mask_err:.2e}")
_lesson.claim(mask_err <= 1e-5 * np.abs(low_res).max() and iou.shape == (K - 1,),
              f"one [{K}, {c8}] @ [{c8}, {M * M}] product gives the model's logits, tokens 1..{K - 1} being the "
              f"multimask output: max |diff| {mask_err:.1e}, {mask_err / np.abs(low_res).max():.1e} of max")
print(f"low-res logits {low_res.shape} -> postprocess (bilinear to {S} x {S}, crop, resize) -> masks {masks.shape}")
# The 1x1 conv's weights are computed from the prompt: another click, other weights.
other_trace = {}
predictor.predict(point_coords=interior_point(~target)[None], point_labels=np.array([1]), trace=other_trace)
other_hyper = np.stack([other_trace[f"mask_decoder.output_hypernetworks_mlps.{k}"] for k in range(K)], axis=1)
moved = float(np.abs(other_hyper - hyper).max() / np.abs(hyper).max())
_lesson.claim(moved > 1e-2, f"a click off the object changes the hypernetwork weights by {moved:.2f} of their max: "
                            f"the 1x1 conv is computed from the prompt")

shown = min(6, c8)                                                # channels per row (a small model has fewer)
fig, axes = plt.subplots(2, shown, figsize=(2.5 * shown, 5.4), squeeze=False)
for j, ax in enumerate(axes[0]):
    ax.imshow(trace[f"{up}.2"][0, j], cmap="magma")
    ax.set_title(f"{2 * G}x{2 * G} ch {j}")
    ax.axis("off")
for j, ax in enumerate(axes[1]):
    ax.imshow(upscaled[0, j], cmap="magma")
    ax.set_title(f"{M}x{M} ch {j}")
    ax.axis("off")
fig.suptitle("Upscaled image embedding: after the first (top) and second (bottom) transposed conv + GELU")
fig.tight_layout()
_lesson.save(fig, args, "12_upscaled_channels.png")
plt.close(fig)


# %% [markdown]
# ## 4. The hypernetwork weights and the mask logits they make
#
# Top left: the click and the mask ``predict()`` returns (its best-scored one, upsampled to the
# input size). Top right: $W$, one row of $C/8$ weights per mask token (row 0 is the
# single-mask token). Bottom: the logits $m_k = w_k^{\top} E$ of the best- and the
# worst-scored multimask tokens, on one colour scale; the black line is logit 0, the mask's edge.

# %%
order = np.argsort(iou)                                           # [K - 1] multimask outputs, lowest score first
best, worst = int(order[-1]), int(order[0])                       # output i is mask token i + 1
lim = np.abs(all_masks).max()
w_lim = np.abs(hyper).max()
fig, axes = plt.subplots(2, 2, figsize=(7.6, 7.4), layout="constrained")
ax = axes[0, 0]
ax.imshow(scene.image)
ax.imshow(np.where(masks[best][..., None], np.array([[[0.1, 0.6, 1.0, 0.6]]]), 0))   # [S, S, 4]
ax.contour(target, levels=[0.5], colors="w", linewidths=1)
ax.plot(*point, "g*", ms=15, mec="w")
ax.set_title(f"click (star), object (white line),\npredict()'s mask {best + 1} (blue), {S} x {S}")
ax.axis("off")
ax = axes[0, 1]
im = ax.imshow(hyper[0], cmap="PuOr_r", vmin=-w_lim, vmax=w_lim, aspect="auto")   # [K, C/8]
ax.set_yticks(range(K))
ax.set_xlabel(f"upscaled channel c (C/8 = {c8})")
ax.set_ylabel("mask token k (0: single-mask)")
ax.set_title(f"W: one row of {c8} weights per token\n= the 1x1 conv from the prompt")
fig.colorbar(im, ax=ax, label="weight $w_{k,c}$")
for ax, k in zip(axes[1], (best + 1, worst + 1)):
    im = ax.imshow(all_masks[0, k], cmap="RdBu_r", vmin=-lim, vmax=lim)   # [M, M]
    ax.contour(all_masks[0, k] > 0, levels=[0.5], colors="k", linewidths=1)
    ax.set_title(f"mask {k} = $w_{k}^\\top E$, {M} x {M}:\n{100 * (all_masks[0, k] > 0).mean():.0f}% > 0, "
                 f"IoU score {iou[k - 1]:.2f}")
    ax.axis("off")
fig.colorbar(im, ax=axes[1], shrink=0.9, label="mask logit (black line: 0)")
fig.suptitle(f"Masks differ only by their token's {c8} weights on the same\nupscaled channels E: "
             f"mask {best + 1} scores {iou[best]:.2f}, mask {worst + 1} {iou[worst]:.2f}")
_lesson.save(fig, args, "12_mask_logits.png")
plt.close(fig)

# Every mask token: its weights (top) and its logits (bottom).
fig, axes = plt.subplots(2, K + 1, figsize=(3.4 * (K + 1), 6.6), layout="constrained")
axes[0, 0].imshow(scene.image)
axes[0, 0].contour(target, levels=[0.5], colors="w", linewidths=1)
axes[0, 0].plot(*point, "g*", ms=15, mec="w")
axes[0, 0].set_title("the click (white: the object)")
axes[0, 0].axis("off")
axes[1, 0].imshow(scene.image)
axes[1, 0].imshow(np.where(masks[best][..., None], np.array([[[0.1, 0.6, 1.0, 0.6]]]), 0))   # [S, S, 4]
axes[1, 0].set_title(f"predict(): mask {best + 1} (best score),\nupsampled to {S} x {S}")
axes[1, 0].axis("off")
for k in range(K):
    axes[0, k + 1].bar(np.arange(c8), hyper[0, k], color="C0" if k == 0 else "C1")
    axes[0, k + 1].set_title(f"mask token {k}: {c8} weights\n" + ("(single-mask)" if k == 0 else "(multimask)"))
    im = axes[1, k + 1].imshow(all_masks[0, k], cmap="RdBu_r", vmin=-lim, vmax=lim)
    score = "" if k == 0 else f", IoU score {iou[k - 1]:.2f}"
    axes[1, k + 1].set_title(f"mask {k} logits\n{100 * (all_masks[0, k] > 0).mean():.0f}% > 0{score}")
    axes[1, k + 1].axis("off")
fig.colorbar(im, ax=axes[1, 1:], shrink=0.8, label="mask logit")
fig.suptitle(f"Each mask k = $w_k^\\top E$: its token's hypernetwork vector times the {c8} upscaled channels, "
             f"per pixel ({M} x {M})")
_lesson.save(fig, args, "12_all_mask_tokens.png")
plt.close(fig)
