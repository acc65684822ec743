# %% [markdown]
# # Lesson 09: the prompt encoder: where things are, and what they are
#
# SAM's decoder reads prompts as tokens of C numbers, C = prompt_embed_dim (256 for vit_b, 96
# for the micro model) (Kirillov et al. 2023, section 3, "Prompt encoder"; official
# ``modeling/prompt_encoder.py``; minisam ``minisam/modeling/prompt_encoder.py``).
#
# - WHERE: a location (x, y) becomes a random-Fourier feature (Tancik et al. 2020): map it to
#   [-1, 1]^2, project it on C/2 random directions (a fixed 2 x C/2 Gaussian matrix stored in
#   the checkpoint, never trained), and take sin and cos of 2 pi times each projection: C
#   numbers whose dot product with another location's features falls off with distance. Plain
#   (x, y) numbers would give the network only two inputs; these give it many frequencies.
# - WHAT: a learned vector is added: foreground point, background point, box top-left or
#   box bottom-right corner. A padding "not a point" token (zeroed PE + its own vector) is
#   appended when there is no box, as in training.
# - The same PE evaluated at the centre of each of the G x G embedding cells (64 x 64 for
#   vit_b, 16 x 16 for micro) is the *dense* PE that the decoder adds to the image embedding,
#   so prompts and pixels speak the same positional language.
# - Mask prompts (low-res logits of a previous prediction, 4G x 4G) go through two strided
#   2x2 convs (LayerNorm2d + GELU) and a 1x1 conv down to C x G x G, added to the image
#   embedding. Without a mask a learned "no mask" vector is added everywhere.
#
# In symbols (official ``PositionEmbeddingRandom``): a point at pixel $(x, y)$ of the
# $S \times S$ input is first moved to its pixel centre and scaled to $[-1, 1]^2$,
#
# $$
# \tilde p = 2 \left( \frac{x + 0.5}{S},\ \frac{y + 0.5}{S} \right) - 1, \qquad
# \gamma(\tilde p) = \Big[ \sin\!\big(2\pi\, \tilde p^{\top} B\big),\ \cos\!\big(2\pi\, \tilde p^{\top} B\big) \Big]
# \in \mathbb{R}^{C},
# $$
#
# with $B \in \mathbb{R}^{2 \times C/2}$ the fixed Gaussian matrix (standard normal entries at
# initialization). A point token is $\gamma(\tilde p) + e_{\text{label}}$ ($e_1$ foreground, $e_0$
# background), a box gives $\gamma(\tilde p_{\text{top-left}}) + e_2$ and
# $\gamma(\tilde p_{\text{bottom-right}}) + e_3$, and the padding token is $e_{\text{not a point}}$ alone.
# The dense PE is $\gamma$ at the cell centres $\big(\tfrac{j + 0.5}{G}, \tfrac{i + 0.5}{G}\big)$ (before
# the same $2 \cdot - 1$ map). Each sine-cosine pair has norm 1, so $\lVert \gamma \rVert^2 = C/2$, and
# the dot product of two encodings depends only on their offset $\delta = \tilde p - \tilde p'$:
#
# $$
# \frac{\gamma(\tilde p)^{\top} \gamma(\tilde p')}{\lVert \gamma(\tilde p) \rVert\, \lVert \gamma(\tilde p') \rVert}
# = \frac{2}{C} \sum_{j=1}^{C/2} \cos\!\big(2\pi\, \delta^{\top} b_j\big)
# \;\approx\; \mathbb{E}_{b \sim \mathcal{N}(0, I)} \cos\!\big(2\pi\, \delta^{\top} b\big)
# = e^{-2\pi^2 \lVert \delta \rVert^2},
# $$
#
# a bump around $\delta = 0$ ($b_j$ the columns of $B$): section 2 below measures it.
#
# Everything below runs on the default model (``--model micro``; ``--model vit_b`` or
# ``--checkpoint PATH`` for the official weights), on a synthetic scene of shapes.
#
# Run:  python lessons/09_prompt_encoder.py --out out/09

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("09", "Lesson 09: the prompt encoder: where things are, and what they are")

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402
from minisam.modeling.prompt_encoder import dense_pe, pe_with_coords, prompt_encoder  # noqa: E402
from minisam.training.interactive import mask_box  # noqa: E402
from minisam.cli.drawing import show_box, show_mask, show_points  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
p = sam.params["prompt_encoder"]
C, G, S, M = cfg.prompt_embed_dim, cfg.image_embedding_size, cfg.img_size, cfg.mask_input_size
gauss = p["pe_layer"]["positional_encoding_gaussian_matrix"]        # [2, C/2]
print(f"C = {C} channels per token, G x G = {G} x {G} embedding grid, input {S} x {S}, "
      f"mask prompts {M} x {M}")
print(f"Gaussian matrix: {gauss.shape} (2 coordinates x {C // 2} random directions)")


# %% [markdown]
# ## 1. The dense PE: one C-vector per cell of the G x G embedding grid
#
# Each sin/cos pair is a plane wave across the image; the length of its Gaussian direction
# |g| is its spatial frequency. Low frequencies tell coarse position, high ones fine position.
# Along g, $\tilde p$ moves by $2/S$ per pixel, so the wave repeats every $S / (2 |g|)$ pixels.
#
# The main figure shows the sine of the lowest- and the highest-frequency pair (left and right
# column): top, on the G x G grid, the only places where the decoder sees it; bottom, at every
# input pixel, which shows the continuous wave that the grid samples. ``09_dense_pe_all_channels.png``
# adds two frequencies in between and the cosine channels.

# %%
pe = dense_pe(p, cfg)                                             # [C, G, G]
print(f"dense PE: {pe.shape}  (channels 0..{C // 2 - 1} = sin, {C // 2}..{C - 1} = cos)")
print(f"sam.get_dense_pe(): {sam.get_dense_pe().shape}, same numbers with a batch axis")
_lesson.claim(np.allclose(pe[:C // 2] ** 2 + pe[C // 2:] ** 2, 1, atol=1e-5),
              "channels 0..C/2-1 are the sines and C/2..C-1 the cosines of the same projections")
_lesson.claim(np.array_equal(sam.get_dense_pe()[0], pe), "get_dense_pe() is the dense PE with a batch axis")
freq = np.linalg.norm(gauss, axis=0)                              # [C/2] frequency of each pair
order = np.argsort(freq)
picks = [order[0], order[len(order) // 3], order[2 * len(order) // 3], order[-1]]
period = S / (2 * freq)                                           # [C/2] wavelength of each pair, pixels
# The decoder sees the PE only at the G x G cell centres; it is a continuous function of
# position, so evaluating it at every input pixel shows the wave.
yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)                   # [S, S] each
pixels = np.stack([xx, yy], axis=-1).reshape(1, S * S, 2)         # [1, S*S, 2] (x, y)
pe_pixels = pe_with_coords(p, cfg, pixels + 0.5)[0].reshape(S, S, C)   # [S*S, C] -> [S, S, C]
print(f"the same PE at every input pixel: {pe_pixels.shape}")
low, high = picks[0], picks[-1]
print(f"wavelength S / (2|g|): {period[low]:.0f} px at |g| = {freq[low]:.2f}, "
      f"{period[high]:.0f} px = {period[high] * G / S:.1f} cells at |g| = {freq[high]:.2f}")
step = period[high] * gauss[:, high] / freq[high]                 # [2] one wavelength along g, pixels
ends = np.stack([np.full(2, S / 2), S / 2 + step])[None]          # [1, 2, 2] (x, y), a wavelength apart
wave = pe_with_coords(p, cfg, ends)[0, :, high]                   # [2] sin channel at both ends
_lesson.claim(abs(wave[0] - wave[1]) < 1e-3,
              f"sin channel {high} takes the same value one wavelength S / (2|g|) = {period[high]:.1f} px "
              f"along g apart")

fig, axes = plt.subplots(2, 2, figsize=(7.6, 7.6), layout="constrained")
fig.get_layout_engine().set(wspace=0.05)
for j, c in enumerate((low, high)):
    axes[0, j].imshow(pe[c], cmap="RdBu", vmin=-1, vmax=1)                 # [G, G]
    axes[0, j].set_title(f"sin ch {c}, |g| = {freq[c]:.2f}:\non the {G} x {G} grid")
    im = axes[1, j].imshow(pe_pixels[..., c], cmap="RdBu", vmin=-1, vmax=1)   # [S, S]
    axes[1, j].set_title(f"at all {S} x {S} pixels:\nwavelength {period[c]:.0f} px")
for ax in axes.flat:
    ax.axis("off")
fig.colorbar(im, ax=axes, shrink=0.6, label=r"PE channel value, $\sin(2\pi\, \tilde p \cdot g)$")
fig.suptitle(f"Each PE channel is a plane wave of wavelength S / (2|g|): {period[low]:.0f} px at |g| = "
             f"{freq[low]:.2f}\n(coarse position), {period[high]:.0f} px = {period[high] * G / S:.1f} cells at "
             f"|g| = {freq[high]:.2f} (fine position)")
_lesson.save(fig, args, "09_dense_pe_channels.png")
plt.close(fig)

# Four frequencies, sine and cosine on the grid (top two rows) and the sine at every pixel (bottom row).
fig, axes = plt.subplots(3, 4, figsize=(12, 9.4))
for j, c in enumerate(picks):
    for i, (off, name) in enumerate([(0, "sin"), (C // 2, "cos")]):
        ax = axes[i, j]
        ax.imshow(pe[c + off], cmap="RdBu", vmin=-1, vmax=1)
        ax.set_title(f"{name} ch {c + off}, |g| = {freq[c]:.2f}")
        ax.axis("off")
    axes[2, j].imshow(pe_pixels[..., c], cmap="RdBu", vmin=-1, vmax=1)
    axes[2, j].set_title(f"sin ch {c} at every pixel")
    axes[2, j].axis("off")
fig.suptitle(f"Dense positional encoding on the {G} x {G} grid (rows 1-2), and between the cells (row 3)")
fig.tight_layout()
_lesson.save(fig, args, "09_dense_pe_all_channels.png")
plt.close(fig)


# %% [markdown]
# ## 2. Why random Fourier features: similarity falls off with distance
#
# Cosine similarity between the PE of one cell and every other cell: a bump centred on the
# cell, the same shape wherever the cell is (the kernel depends on the offset only).

# %%
flat_pe = pe.reshape(C, G * G)                                    # [C, N], N = G*G cells
unit = flat_pe / np.linalg.norm(flat_pe, axis=0, keepdims=True)   # [C, N] unit vectors
refs = [(G // 8, G // 8), (G // 2, G // 2), ((3 * G) // 4, G // 3)]   # (row, col) cells
fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
for ax, (r, c) in zip(axes, refs):
    sim = (unit[:, r * G + c] @ unit).reshape(G, G)              # [N] -> [G, G] similarity to (r, c)
    im = ax.imshow(sim, cmap="magma", vmin=-0.3, vmax=1)
    ax.plot(c, r, "c+", ms=14, mew=2)
    ax.set_title(f"similarity to cell (y={r}, x={c})")
    ax.axis("off")
fig.colorbar(im, ax=axes[:3], shrink=0.8)
# The same curve at pixel resolution: PE of the image centre against every pixel's PE.
centre = pe_pixels[S // 2, S // 2] / np.linalg.norm(pe_pixels[S // 2, S // 2])      # [C]
sim_px = (pe_pixels @ centre) / np.linalg.norm(pe_pixels, axis=-1)                    # [S, S]
dist_px = np.hypot(yy + 0.5 - (S // 2 + 0.5), xx + 0.5 - (S // 2 + 0.5))             # [S, S] pixels
edges = np.linspace(0, S / 2, 33)
means = [sim_px[(dist_px >= a) & (dist_px < b)].mean() for a, b in zip(edges[:-1], edges[1:])]
axes[3].plot((edges[:-1] + edges[1:]) / 2, means, "o-", ms=3)
axes[3].axvline(S / G, color="grey", ls=":", label=f"one cell = {S // G} px")
axes[3].set_xlabel("distance from the image centre (pixels)")
axes[3].set_ylabel("mean cosine similarity")
axes[3].set_title("a kernel peaked at the position")
axes[3].legend()
axes[3].grid(alpha=0.3)
_lesson.save(fig, args, "09_pe_similarity.png")
plt.close(fig)
print(f"PE similarity at 0, 1 cell, 4 cells from the centre: {means[0]:.2f}, "
      f"{np.interp(S / G, edges[:-1], means):.2f}, {np.interp(4 * S / G, edges[:-1], means):.2f}")
_lesson.claim(means[0] > np.interp(4 * S / G, edges[:-1], means),
              "PE similarity falls off with distance: nearer pixels are more alike than 4 cells away")


# %% [markdown]
# ## 3. Sparse tokens: points and a box on a real scene
#
# The predictor maps points from the original image to the model's input frame
# (ResizeLongestSide); the scene here is already S x S, so that map is the identity.

# %%
scene = make_scene(np.random.default_rng(3), S)
target = scene.masks[scene.objects[0]]                            # [S, S] bool, one object
background = ~np.logical_or.reduce(scene.masks)                   # [S, S] no shape at all
pts = np.stack([interior_point(target), interior_point(background)]).astype(np.float32)   # [2, 2] (x, y)
labels = np.array([[1, 0]])                                       # [B=1, N=2] foreground, background
box = mask_box(target).astype(np.float32)                         # [4] x0, y0, x1, y1
print(f"scene {scene.image.shape}: object '{scene.kinds[scene.objects[0]]}', "
      f"points {pts.tolist()}, box {box.tolist()}")
sparse, dense = prompt_encoder(p, cfg, (pts[None], labels))       # [1, 3, C], [1, C, G, G]
print(f"2 points, no box: sparse {sparse.shape} (2 points + 1 padding token), dense {dense.shape}")
sparse_b, _ = prompt_encoder(p, cfg, (pts[None], labels), box[None])   # [1, 4, C]
print(f"2 points + box:   sparse {sparse_b.shape} (2 points + 2 corners, no padding)")
sparse_box, _ = prompt_encoder(p, cfg, boxes=box[None])           # [1, 2, C]
print(f"box alone:        sparse {sparse_box.shape} (top-left and bottom-right corner tokens)")
bare = pe_with_coords(p, cfg, pts[None] + 0.5)[0]                 # [2, C] PE of the pixel centres
print("point token = PE + label vector:",
      np.allclose(sparse[0, 0] - bare[0], p["point_embeddings"][1]["weight"][0], atol=1e-5),
      "| background:", np.allclose(sparse[0, 1] - bare[1], p["point_embeddings"][0]["weight"][0], atol=1e-5),
      "| padding = not_a_point_embed:", np.array_equal(sparse[0, 2], p["not_a_point_embed"]["weight"][0]))
corner_pe = pe_with_coords(p, cfg, box.reshape(1, 2, 2) + 0.5)[0]     # [2, C]
corners = np.stack([p["point_embeddings"][2]["weight"][0], p["point_embeddings"][3]["weight"][0]])  # [2, C]
print("box corners = PE + corner vectors 2 and 3:", np.allclose(sparse_box[0] - corner_pe, corners, atol=1e-5))
_lesson.claim(sparse.shape == (1, 3, C) and sparse_b.shape == (1, 4, C) and sparse_box.shape == (1, 2, C),
              "a padding token is appended only when there is no box")
_lesson.claim(np.allclose(sparse[0, 0] - bare[0], p["point_embeddings"][1]["weight"][0], atol=1e-5)
              and np.allclose(sparse[0, 1] - bare[1], p["point_embeddings"][0]["weight"][0], atol=1e-5)
              and np.array_equal(sparse[0, 2], p["not_a_point_embed"]["weight"][0])
              and np.allclose(sparse_box[0] - corner_pe, corners, atol=1e-5),
              "a token is the PE of its location plus a learned vector for what it is; the pad has no PE")


# %% [markdown]
# ## 4. A mask prompt: the previous prediction's low-res logits -> C x G x G
#
# In use (and in training, lesson 15) the mask prompt is the low-res logits the decoder
# returned for the previous click: M x M = 4G x 4G, brought down 4x to the embedding grid.

# %%
predictor = SamPredictor(sam)
predictor.set_image(scene.image)
print(f"image embedding: {predictor.get_image_embedding().shape}")
masks, scores, low_res = predictor.predict(point_coords=pts[:1], point_labels=np.array([1]))
best = int(np.argmax(scores))
mask_logits = low_res[best][None, None]                           # [M, M] -> [1, 1, M, M]
print(f"previous prediction: masks {masks.shape}, scores {np.round(scores, 3)}, low-res logits {low_res.shape}")
trace = {}
_, dense_m = prompt_encoder(p, cfg, masks=mask_logits, trace=trace)   # [1, C, G, G]
steps = ["Conv 2x2/2", "LayerNorm2d", "GELU", "Conv 2x2/2", "LayerNorm2d", "GELU", "Conv 1x1"]
print(f"mask prompt {mask_logits.shape}:")
for i, name in enumerate(steps):
    print(f"  mask_downscaling.{i} {name:<12} -> {trace[f'prompt_encoder.mask_downscaling.{i}'].shape}")
print(f"mask prompt -> dense {dense_m.shape} (without a mask: no_mask_embed {p['no_mask_embed']['weight'].shape} "
      f"broadcast to {dense.shape})")
_lesson.claim(mask_logits.shape[-1] == 4 * G and dense_m.shape == (1, C, G, G)
              and np.array_equal(dense[0], np.broadcast_to(p["no_mask_embed"]["weight"].reshape(C, 1, 1), (C, G, G))),
              "a 4G x 4G mask prompt comes down to C x G x G; without one, no_mask_embed is added everywhere")

fig, axes = plt.subplots(1, 5, figsize=(19, 4))
axes[0].imshow(scene.image)
show_mask(target, axes[0])
show_points(pts, labels[0], axes[0])
show_box(box, axes[0])
axes[0].set_title("prompts: + point, - point, box\n(blue: the object)")
axes[1].imshow(mask_logits[0, 0], cmap="RdBu_r", vmin=-np.abs(mask_logits).max(), vmax=np.abs(mask_logits).max())
axes[1].set_title(f"mask prompt: low-res logits {M} x {M}\n(best of the previous 3, score {scores[best]:.2f})")
energy = np.linalg.norm(dense_m[0] - p["no_mask_embed"]["weight"].reshape(C, 1, 1), axis=0)   # [G, G]
for ax, c in zip(axes[2:4], np.argsort(dense_m[0].std(axis=(1, 2)))[::-1][:2]):
    ax.imshow(dense_m[0, c], cmap="viridis")
    ax.set_title(f"dense embedding ch {c}, {G} x {G}\n(the most varying channels)")
axes[4].imshow(energy, cmap="magma")
axes[4].set_title("|dense - no_mask_embed| per cell:\nwhere the mask prompt says something")
for ax in axes:
    ax.axis("off")
_lesson.save(fig, args, "09_mask_prompt.png")
plt.close(fig)
