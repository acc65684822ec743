# %% [markdown]
# # Lesson 07: windowed attention with decomposed relative positions
#
# A ViT-B block at SAM's resolution attends over 64 x 64 = 4096 tokens. Full attention in
# every block would cost 4096^2 scores per head, so SAM follows ViTDet (Li et al. 2022):
# most blocks attend only inside w x w windows (w = 14 for the official models, 8 for
# micro), and a few blocks attend globally (lesson 08). Kirillov et al. 2023, appendix A;
# official ``modeling/image_encoder.py`` Block, Attention, window_partition,
# add_decomposed_rel_pos; minisam ``minisam/modeling/image_encoder.py``.
#
# What happens in a windowed block:
# 1. LayerNorm, then zero-pad the grid to a multiple of the window (64 -> 70 for the official
#    models) and cut it into windows. The pad tokens are NOT masked: they go through q/k/v
#    like any token (a zero token's key and value are the projection's bias, not zero) and
#    receive attention. They are cropped away after the attention's output projection.
# 2. In each window, ordinary multi-head attention, with the scale applied to q first ...
# 3. ... plus a relative-position bias, "decomposed" (MViTv2, Li et al. 2022): for a query at
#    (y, x) and a key at (y', x') it adds q . Rh[y - y'] + q . Rw[x - x'], two learned tables
#    of length 2w - 1, read with the UNSCALED q.
#
# In one window, for one head with head dimension $d$ (D / nH), a query token at $(y, x)$ and a
# key token at $(y', x')$, both in $\{0, \dots, w-1\}^2$, steps 2 and 3 compute
#
# $$
# a_{(y,x),(y',x')} = \frac{q_{yx}^{\top} k_{y'x'}}{\sqrt{d}}
#   + q_{yx}^{\top} R^{H}_{\,y-y'+w-1} + q_{yx}^{\top} R^{W}_{\,x-x'+w-1},
# \qquad
# o_{yx} = \sum_{y',x'} \frac{\exp a_{(y,x),(y',x')}}{\sum_{y'',x''} \exp a_{(y,x),(y'',x'')}}\; v_{y'x'}
# $$
#
# with $q, k, v \in \mathbb{R}^{d}$ the rows of the `qkv` projection and
# $R^{H}, R^{W} \in \mathbb{R}^{(2w-1) \times d}$ the learned tables `rel_pos_h` and `rel_pos_w`
# (row $y - y' + w - 1$ holds the offset $y - y'$). The bias has the *decomposed* form
# $b_{(y,x),(y',x')} = \beta^{H}_{yx}[y'] + \beta^{W}_{yx}[x']$: each query computes only $2w$
# dot products with the tables, `rel_h` [.., w] and `rel_w` [.., w] below, instead of one per key.
# The cost per head is $(G/w)^2$ windows of $w^2 \times w^2$ scores, $G^2 w^2$ in all, against
# $G^4$ for attention over the whole grid.
#
# This lesson runs the model's own weights (``--model micro`` by default) on a synthetic
# scene, spells out one window of the deepest windowed block by hand, checks it against the
# encoder, and draws the windows, the rel-pos bias and every head's attention for a query on
# an object. How much of each head's attention stays on the query's own object is printed,
# beside the share of the window that object covers (what uniform attention would give).
#
# micro's grid (16) is a multiple of its window (8), so nothing pads there. The last section
# builds a small encoder with random weights whose window does not divide its grid (grid 10,
# window 4 -> padded to 12), runs its windowed block, and shows step 1 token by token: the pad
# tokens are zeros, their keys are the qkv bias, the real queries of the last window give them
# attention (a hand-built copy of that window matches the block), masking them would change
# the answer, and the crop gives back the 10 x 10 grid.
#
# Run:  python lessons/07_windowed_attention.py --out out/07

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("07", "Lesson 07: windowed attention with decomposed relative positions")

import matplotlib.pyplot as plt  # noqa: E402

from minisam.build_sam import build_sam  # noqa: E402
from minisam.config import VIT_B, expected_shapes, make_config  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402
from minisam.kernels.image_encoder import linear, rel_pos_terms  # noqa: E402
from minisam.modeling.image_encoder import window_partition, window_unpartition  # noqa: E402
from minisam.kernels.layers import softmax_rel_pos_  # noqa: E402
from minisam.modeling.common import layer_norm  # noqa: E402
from minisam.utils.transforms import ResizeLongestSide  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
S, P, G, D = cfg.img_size, cfg.patch_size, cfg.image_embedding_size, cfg.encoder_embed_dim
w, nH, hd = cfg.window_size, cfg.encoder_num_heads, cfg.encoder_head_dim
windowed = [i for i in range(cfg.encoder_depth) if cfg.block_window_size(i) > 0]
print(f"{cfg.encoder_depth} blocks: windowed {windowed}, global {list(cfg.encoder_global_attn_indexes)}")
print(f"grid {G}x{G}, window {w}x{w}, {nH} heads of {hd}")

# The padding arithmetic, here and for the official models.
Gb, wb = VIT_B.image_embedding_size, VIT_B.window_size
Hb = -(-Gb // wb) * wb
print(f"vit_b: grid {Gb} pads to {Hb} = {Hb // wb}x{Hb // wb} windows of {wb}; "
      f"{1 - Gb * Gb / (Hb * Hb):.0%} of their tokens are padding")
_lesson.claim(Hb == 70, "for the official models the 64 x 64 grid pads to 70 x 70")


# %% [markdown]
# ## An input: a synthetic scene, preprocessed (lesson 05), through the whole encoder

# %%
scene = make_scene(np.random.default_rng(5), S)
x = sam.preprocess(ResizeLongestSide(S).apply_image(scene.image).transpose(2, 0, 1)[None])  # [1, 3, S, S]
trace = {}
sam.image_encoder(x, trace=trace)                               # fills trace with every module output
b = windowed[-1]                     # the deepest windowed block: its tokens have seen the most
blk = sam.params["image_encoder"]["blocks"][b]["attn"]
normed = trace[f"image_encoder.blocks.{b}.norm1"]              # [1, G, G, D] LayerNorm'd input
print(f"block {b}: norm1 output {normed.shape}, attn output (windowed layout) "
      f"{trace[f'image_encoder.blocks.{b}.attn'].shape}")


# %% [markdown]
# ## Step 1: pad and cut into windows

# %%
windows, (Hp, Wp) = window_partition(normed, w)                # [nW, w, w, D]
nWx = Wp // w
print(f"padded grid {Hp}x{Wp} -> windows {windows.shape}",
      "(no padding needed: the grid is a multiple of the window)" if Hp == G else
      f"pad tokens are zeros: {bool(np.all(windows[-1, -1, -1] == 0))}")

# The query: the token at the most interior pixel of an object, choosing the object that
# fills most of the query's window (so there is something to attend to on it).
def token_mask(mask):                                           # [S, S] -> [Hp, Wp] token on it
    on = mask.reshape(G, P, G, P).mean((1, 3)) > 0.5            # [G, G]
    return np.pad(on, ((0, Hp - G), (0, Wp - G)))               # [Hp, Wp]


def window_of(mask):
    px, py = interior_point(mask)                               # (x, y) pixel centre
    ty, tx = int(py) // P, int(px) // P                         # its token
    wy, wx = ty // w, tx // w                                   # its window's row and column
    covered = token_mask(mask)[wy * w:(wy + 1) * w, wx * w:(wx + 1) * w].sum()
    return covered, (px, py, ty, tx, wy * nWx + wx)


obj = max(scene.objects, key=lambda i: window_of(scene.masks[i])[0])
px, py, ty, tx, win = window_of(scene.masks[obj])[1]
qy, qx = ty % w, tx % w                                         # its place in the window
query = qy * w + qx
print(f"query: token ({ty}, {tx}) on the {scene.kinds[obj]}, window {win}, position ({qy}, {qx})")


def window_attention(window, attn, num_heads, key_bias=None):
    """Steps 2 and 3 for one window [w, w, D] of a block's ``attn`` parameters, spelled out:
    q k v, rel-pos terms, scaled scores, softmax. ``key_bias`` [w*w] is added to every query's
    scores (-inf masks a key; the model adds nothing). -> probs [nH, w*w, w*w], the attention
    output [w, w, D] and the rel-pos terms."""
    ws, dim = window.shape[0], window.shape[-1]
    head_dim = dim // num_heads
    qkv = linear(window[None], attn["qkv"]["weight"], attn["qkv"]["bias"])              # [1, w, w, 3D]
    q, k, v = qkv.reshape(ws * ws, 3, num_heads, head_dim).transpose(1, 2, 0, 3)        # [nH, w*w, hd] each
    rel_h, rel_w = rel_pos_terms(np.ascontiguousarray(q), attn["rel_pos_h"], attn["rel_pos_w"], (ws, ws))
    scores = (q * np.float32(head_dim ** -0.5)) @ k.transpose(0, 2, 1)                  # [nH, w*w, w*w]
    if key_bias is not None:
        scores = scores + key_bias.astype(np.float32)                                    # [nH, w*w, w*w]
    probs = softmax_rel_pos_(np.ascontiguousarray(scores.reshape(-1, ws * ws)), rel_h.reshape(-1, ws),
                             rel_w.reshape(-1, ws)).reshape(num_heads, ws * ws, ws * ws)  # [nH, w*w, w*w]
    heads = (probs @ v).transpose(1, 0, 2).reshape(ws, ws, dim)                         # [w, w, D]
    out = linear(heads, attn["proj"]["weight"], attn["proj"]["bias"])                   # [w, w, D]
    return probs, out, (rel_h, rel_w)


probs, out, (rel_h, rel_w) = window_attention(windows[win], blk, nH)
print("rel-pos terms: rel_h", rel_h.shape, "rel_w", rel_w.shape, "| probs", probs.shape)
print("attention of the query sums to", probs[:, query].sum(-1))
print("spelled out vs the encoder's block output: max |diff| =",
      float(np.abs(out - trace[f"image_encoder.blocks.{b}.attn"][win]).max()))
reference = trace[f"image_encoder.blocks.{b}.attn"][win]                       # [w, w, D]
_lesson.claim(np.allclose(probs.sum(-1), 1, atol=1e-5), "every query's attention sums to 1 over its window")
# the same float32 operations in another order: the parity suite's 1e-5 x max bound
_lesson.claim(np.abs(out - reference).max() <= 1e-5 * np.abs(reference).max(),
              "steps 2 and 3 spelled out are the encoder's windowed attention")
_lesson.claim(blk["rel_pos_h"].shape[0] == blk["rel_pos_w"].shape[0] == 2 * w - 1,
              "the two rel-pos tables have length 2w - 1")
full = window_unpartition(trace[f"image_encoder.blocks.{b}.attn"], w, (Hp, Wp), (G, G))  # [1, G, G, D]
print("after unpartition (pad cropped):", full.shape)

# Where the attention goes: the share on the query's own object, against the share of the
# window that object covers (what uniform attention would give).
on_obj = token_mask(scene.masks[obj])                                           # [Hp, Wp]
in_win = on_obj[(win // nWx) * w:(win // nWx + 1) * w, (win % nWx) * w:(win % nWx + 1) * w].reshape(-1)
for h in range(nH):
    print(f"  head {h}: {probs[h, query][in_win].sum():.2f} of the attention on the object "
          f"(it covers {in_win.mean():.2f} of the window)")


# %% [markdown]
# ## Figure 1: the windows drawn on the image

# %%
fig, ax = plt.subplots(figsize=(5.5, 5.5))
shown = np.full((Hp * P, Wp * P, 3), 0.5)                      # padding shown as grey
shown[:S, :S] = np.clip(x[0].transpose(1, 2, 0) * 0.25 + 0.5, 0, 1)
ax.imshow(shown)
px_w = w * P
for i in range(Hp // w):
    for j in range(nWx):
        hit = i * nWx + j == win
        ax.add_patch(plt.Rectangle((j * px_w - 0.5, i * px_w - 0.5), px_w, px_w, fill=False,
                                   ec="r" if hit else "w", lw=3 if hit else 1.5))
        ax.text(j * px_w + 4, i * px_w + 4, str(i * nWx + j), color="w", fontsize=9, va="top")
ax.plot(px, py, "c*", ms=14, mec="k")
if Hp > G:
    ax.axhline(S - 0.5, color="r", ls="--")
    ax.axvline(S - 0.5, color="r", ls="--")
ax.set_title(f"{(Hp // w) * nWx} windows of {w}x{w} tokens ({w * P} px); "
             + (f"grid {G} padded to {Hp}" if Hp > G else f"grid {G}: a multiple of {w}, no padding"))
ax.axis("off")
fig.tight_layout()
_lesson.save(fig, args, "07_windows.png")
plt.close(fig)


# %% [markdown]
# ## Figure 2: rel-pos table, the bias of one head, and every head's attention

# %%
wy0, wx0 = (win // nWx) * w * P, (win % nWx) * w * P           # the window's pixel origin
crop = shown[wy0:wy0 + w * P, wx0:wx0 + w * P]                  # [w*P, w*P, 3]
outline = np.zeros((Hp * P, Wp * P))                            # the object's mask, padded
outline[:S, :S] = scene.masks[obj]
outline = outline[wy0:wy0 + w * P, wx0:wx0 + w * P]             # [w*P, w*P] over the crop
extent = (-0.5, w - 0.5, w - 0.5, -0.5)                         # token coordinates over the crop
head_bias = rel_h[:, query][:, :, None] + rel_w[:, query][:, None, :]   # [nH, w, w] bias over the keys
hb = int(np.argmax(head_bias.reshape(nH, -1).std(1)))          # the most position-minded head
shown_heads = min(nH, 6)
cols = max(3, shown_heads)
fig, axes = plt.subplots(2, cols, figsize=(3.4 * cols, 7))
im = axes[0, 0].imshow(blk["rel_pos_h"], aspect="auto", cmap="coolwarm")
axes[0, 0].set_title(f"block {b}: rel_pos_h [2w-1, hd]")
axes[0, 0].set_ylabel("offset y - y' + w - 1")
axes[0, 0].set_xlabel("channel")
im = axes[0, 1].imshow(head_bias[hb], cmap="coolwarm", extent=extent)
axes[0, 1].plot(qx, qy, "k*", ms=12)
axes[0, 1].set_title(f"head {hb}: bias q.Rh + q.Rw\nfor the query (star)")
fig.colorbar(im, ax=axes[0, 1], fraction=0.046)
axes[0, 2].imshow(crop, extent=extent)
axes[0, 2].contour(outline, levels=[0.5], colors="c", extent=extent, origin="upper")
axes[0, 2].plot(qx, qy, "c*", ms=14, mec="k")
axes[0, 2].set_title(f"window {win}; cyan: the {scene.kinds[obj]}")
for a in axes[0, 3:]:
    a.axis("off")
for h, a in enumerate(axes[1]):
    if h >= shown_heads:
        a.axis("off")
        continue
    a.imshow(probs[h, query].reshape(w, w), cmap="magma", extent=extent)
    a.contour(outline, levels=[0.5], colors="c", extent=extent, origin="upper")
    a.plot(qx, qy, "c*", ms=12, mec="k")
    a.set_title(f"head {h}: {probs[h, query][in_win].sum():.2f} on the object")
    a.axis("off")
fig.suptitle(f"Windowed attention, block {b}, query token ({ty}, {tx}); "
             f"{shown_heads} of {nH} heads (bright = more attention; cyan: the object)")
fig.tight_layout()
_lesson.save(fig, args, "07_relpos_and_attention.png")
plt.close(fig)


# %% [markdown]
# ## A grid that pads: a small random encoder whose window does not divide its grid
#
# Above, micro's window divides its grid, so nothing was padded. The official models pad (64 -> 70);
# so does this small encoder with random weights (untrained: what is shown is the arithmetic, which
# does not depend on the weights), with a grid small enough to look at token by token.

# %%
tiny_cfg = make_config(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                       img_size=80, patch_size=8, window_size=4, prompt_embed_dim=32, mask_in_chans=8,
                       decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)


def random_state_dict(config, rng):
    """Every tensor of a model at ``config``, random: N(0, 1/fan_in) weights, N(0, 0.1^2) biases and
    LayerNorm scales near 1, so that the activations stay of order one."""
    state = {}
    for key, shape in expected_shapes(config).items():
        if len(shape) >= 2:
            state[key] = rng.normal(0, np.prod(shape[1:]) ** -0.5, shape)
        elif "norm" in key and key.endswith("weight"):
            state[key] = 1 + rng.normal(0, 0.1, shape)
        else:
            state[key] = rng.normal(0, 0.1, shape)
    return state


tiny = build_sam(random_state_dict(tiny_cfg, np.random.default_rng(3)), tiny_cfg)
grid, window = tiny_cfg.image_embedding_size, tiny_cfg.window_size
dim, heads, patch = tiny_cfg.encoder_embed_dim, tiny_cfg.encoder_num_heads, tiny_cfg.patch_size
tiny_scene = make_scene(np.random.default_rng(5), tiny_cfg.img_size)
tiny_x = tiny.preprocess(tiny_scene.image.transpose(2, 0, 1)[None].astype(np.float32))  # [1, 3, S', S']
tiny_trace = {}
tiny.image_encoder(tiny_x, trace=tiny_trace)
tiny_block = "image_encoder.blocks.0"                       # block 0 is windowed (block 1 is global)
tiny_attn = tiny.params["image_encoder"]["blocks"][0]["attn"]
tiny_norm1 = tiny_trace[tiny_block + ".norm1"]                    # [1, grid, grid, dim]
print(f"tiny random encoder: grid {grid}x{grid}, window {window}, D={dim}, {heads} heads; "
      f"block 0 norm1 {tiny_norm1.shape}, attn (windowed layout) {tiny_trace[tiny_block + '.attn'].shape}")

# Step 1 on this grid: pad to the next multiple of the window.
tiny_windows, (padded, _) = window_partition(tiny_norm1, window)   # [nW, window, window, dim]
side = padded // window                                     # windows per row
n_windows = tiny_trace[tiny_block + ".attn"].shape[0]             # how many windows the model's block ran
print(f"grid {grid} -> padded {padded} = {side} x {window}; windows {tiny_windows.shape}; "
      f"the block ran {n_windows}")
_lesson.claim(padded == -(-grid // window) * window and padded - window < grid < padded and n_windows == side ** 2,
              f"grid {grid} with window {window} pads to {padded}, the next multiple of {window}: "
              f"the block ran {n_windows} = {side}x{side} windows")

# Which tokens of the padded grid are padding, and the model's own q/k/v on that grid.
pad_map = np.zeros((padded, padded), bool)                 # [padded, padded] True beyond the grid
pad_map[grid:, :] = True
pad_map[:, grid:] = True


def as_grid(windowed_tokens):                               # [nW, window, window, F] -> [padded, padded, F]
    """The windows put back in place with the padding kept: window_unpartition cropping to the padded size."""
    return window_unpartition(windowed_tokens, window, (padded, padded), (padded, padded))[0]


tokens_padded = as_grid(tiny_windows)                       # [padded, padded, dim]
qkv_padded = as_grid(tiny_trace[tiny_block + ".attn.qkv"])        # [padded, padded, 3 dim] the model's projection
qkv_bias = tiny_attn["qkv"]["bias"]                         # [3 dim]
pad_token_max = float(np.abs(tokens_padded[pad_map]).max())
pad_qkv_vs_bias = float(np.abs(qkv_padded[pad_map] - qkv_bias).max())
print(f"{int(pad_map.sum())} pad tokens: max |token| {pad_token_max}; model's qkv there - qkv bias: max |diff| "
      f"{pad_qkv_vs_bias:.1e} (|bias| up to {np.abs(qkv_bias).max():.2f}); real tokens: smallest |token| "
      f"{np.linalg.norm(tokens_padded[~pad_map], axis=-1).min():.2f}")
_lesson.claim(pad_token_max == 0 and pad_qkv_vs_bias <= 1e-6 * np.abs(qkv_bias).max(),
              f"the {int(pad_map.sum())} pad tokens are zeros after padding (max |token| {pad_token_max}) and enter "
              f"the block's qkv projection as zeros: the model's q, k, v there are its qkv bias "
              f"(max |diff| {pad_qkv_vs_bias:.1e}), not zero")

# Steps 2 and 3, spelled out for the bottom-right window: the one with the most padding.
ky, kx = np.mgrid[0:window, 0:window]                       # token position inside the window
last_is_pad = ((ky + padded - window >= grid) | (kx + padded - window >= grid)).reshape(-1)  # [window^2]
last_real = ~last_is_pad
last_probs, last_out, _ = window_attention(tiny_windows[-1], tiny_attn, heads)  # [nH, T, T], [window, window, dim]
last_reference = tiny_trace[tiny_block + ".attn"][-1]             # [window, window, dim] the model's block output
last_diff = float(np.abs(last_out - last_reference).max())
last_bound = 1e-5 * float(np.abs(last_reference).max())
print(f"bottom-right window: {int(last_real.sum())} real, {int(last_is_pad.sum())} pad tokens; spelled out vs "
      f"the model's block: max |diff| {last_diff:.1e} (bound {last_bound:.1e})")
# the same float32 operations in another order: the parity suite's 1e-5 x max bound
_lesson.claim(last_diff <= last_bound,
              f"the padded window spelled out by hand is the model's windowed attention "
              f"(max |diff| {last_diff:.1e} <= 1e-5 x max|ref| = {last_bound:.1e})")

pad_weights = last_probs[:, last_real][:, :, last_is_pad]  # [nH, real queries, pad keys]
pad_mass = pad_weights.sum(-1)                              # [nH, real queries] share of attention on padding
uniform_share = last_is_pad.mean()                          # what uniform attention would give
print(f"attention of the real queries on the pad keys: smallest weight {pad_weights.min():.2e}, "
      f"mass {pad_mass.min():.2f}..{pad_mass.max():.2f} (mean {pad_mass.mean():.2f}; uniform: {uniform_share:.2f})")
_lesson.claim(np.all(pad_weights > 0),
              f"the pad keys are not masked: each of the {int(last_real.sum())} real queries of the last window "
              f"gives each of its {int(last_is_pad.sum())} pad keys weight > 0 (smallest {pad_weights.min():.2e}), "
              f"{pad_mass.mean():.2f} of its attention on average")

# What masking would have done: the real tokens' outputs would change, so the padding is part of
# what the official models compute (and what a re-implementation must reproduce).
_, masked_out, _ = window_attention(tiny_windows[-1], tiny_attn, heads,
                                    key_bias=np.where(last_is_pad, -np.inf, 0.0))   # [window, window, dim]
real_cells = last_real.reshape(window, window)
masking_change = float(np.abs(masked_out[real_cells] - last_reference[real_cells]).max())
print(f"with the pad keys masked, the real tokens' outputs would change by up to {masking_change:.3f}")
_lesson.claim(masking_change > 100 * last_bound,
              f"masking the pad keys would change the real tokens' outputs by up to {masking_change:.3f}, "
              f"over 100x the float32 tolerance {last_bound:.1e}: the unmasked padding shapes the answer")

# After attention the pad is cropped: the residual stream is the grid x grid grid again.
cropped = window_unpartition(tiny_trace[tiny_block + ".attn"], window, (padded, padded),
                             (grid, grid))                  # [1, grid, grid, dim]
shortcut = tiny_trace["image_encoder.patch_embed"] + tiny.params["image_encoder"]["pos_embed"]   # [1, grid, grid, dim]
norm2 = tiny.params["image_encoder"]["blocks"][0]["norm2"]
eps = tiny_cfg.encoder_norm_eps
norm2_by_hand = layer_norm(shortcut + cropped, norm2["weight"], norm2["bias"], eps)  # [1, grid, grid, dim]
norm2_model = tiny_trace[tiny_block + ".norm2"]                   # [1, grid, grid, dim]
crop_diff = float(np.abs(norm2_by_hand - norm2_model).max())
print(f"cropped {cropped.shape}; norm2(input + cropped attention) vs the model's norm2: max |diff| {crop_diff:.1e}")
_lesson.claim(cropped.shape == (1, grid, grid, dim) and crop_diff <= 1e-5 * np.abs(norm2_model).max(),
              f"cropping after the attention returns the {grid}x{grid} grid {cropped.shape}, and the block goes on "
              f"with it: norm2(input + cropped) is the model's norm2 (max |diff| {crop_diff:.1e})")


# %% [markdown]
# ## Figure 3: the padding, token by token

# %%
def hatch_padding(ax, inside, outside):
    """Hatch the part of an outside x outside square (in image coordinates) beyond inside x inside."""
    edge = outside - inside
    for x0, y0, width, height in ((inside, 0, edge, outside), (0, inside, inside, edge)):
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), width, height, fill=False, hatch="//", lw=0))


fig, axes = plt.subplots(2, 2, figsize=(9.4, 9))
picture = np.full((padded * patch, padded * patch, 3), 0.75)
picture[:grid * patch, :grid * patch] = tiny_scene.image / 255
ax = axes[0, 0]
ax.imshow(picture)
hatch_padding(ax, grid * patch, padded * patch)
for i in range(side):
    for j in range(side):
        last = i == j == side - 1
        ax.add_patch(plt.Rectangle((j * window * patch - 0.5, i * window * patch - 0.5), window * patch,
                                   window * patch, fill=False, ec="r" if last else "k", lw=3 if last else 1.5))
ax.axhline(grid * patch - 0.5, color="r", ls="--")
ax.axvline(grid * patch - 0.5, color="r", ls="--")
ax.set_title(f"grid {grid} padded to {padded}: {n_windows} windows of {window}x{window}\n"
             f"hatched: {int(pad_map.sum())} pad tokens; red: the last window", fontsize=11)
ax.axis("off")

ax = axes[0, 1]
im = ax.imshow(np.linalg.norm(tokens_padded, axis=-1), cmap="viridis", extent=(-0.5, padded - 0.5, padded - 0.5, -0.5))
hatch_padding(ax, grid, padded)
ax.axhline(grid - 0.5, color="r", ls="--")
ax.axvline(grid - 0.5, color="r", ls="--")
fig.colorbar(im, ax=ax, fraction=0.046, label="|token| (L2 over D)")
ax.set_title("|token| entering qkv (norm1, then padding):\npad tokens are exactly 0", fontsize=11)
ax.set_xlabel("token column")
ax.set_ylabel("token row")

ax = axes[1, 0]
query_k = int(np.flatnonzero(last_real)[0])                 # the last window's first real query
weights = last_probs[0, query_k].reshape(window, window)    # [window, window] head 0
ax.imshow(weights, cmap="magma", vmin=0)
for (r, c), value in np.ndenumerate(weights):
    ax.text(c, r, f"{value:.2f}" if value >= 0.01 else f"{value:.0e}", ha="center", va="center", fontsize=11,
            color="k" if value > 0.6 * weights.max() else "w")
for r, c in zip(*np.nonzero(last_is_pad.reshape(window, window))):
    ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="//", ec="w", lw=0))
ax.plot(query_k % window - 0.3, query_k // window - 0.3, "c*", ms=14, mec="k")
ax.set_title(f"head 0, real query (star) of the last window:\nweights on its {window * window} keys; "
             f"hatched: pad keys, {last_probs[0, query_k][last_is_pad].sum():.2f} of its attention", fontsize=11)
ax.set_xticks(range(window))
ax.set_yticks(range(window))
ax.set_xlabel("key column in the window")
ax.set_ylabel("key row in the window")

ax = axes[1, 1]
spots = np.arange(int(last_real.sum()))
for h in range(heads):
    ax.bar(spots + (h - (heads - 1) / 2) * 0.8 / heads, pad_mass[h], 0.8 / heads, label=f"head {h}")
ax.axhline(uniform_share, color="k", ls="--", label=f"uniform ({uniform_share:.2f})")
ax.set_xticks(spots)
ax.set_xticklabels([f"({k // window}, {k % window})" for k in np.flatnonzero(last_real)])
ax.set_xlabel("real query in the last window (row, column)")
ax.set_ylabel("attention on the pad keys")
ax.set_ylim(0, 1.05)
ax.legend(fontsize=10, loc="upper left")
ax.set_title(f"every real query attends to the padding\n(masking it would move the outputs by {masking_change:.2f})",
             fontsize=11)
fig.suptitle(f"Padding in a windowed block: a random encoder, grid {grid}, window {window}", fontsize=13)
fig.tight_layout()
_lesson.save(fig, args, "07_padding.png")
plt.close(fig)
