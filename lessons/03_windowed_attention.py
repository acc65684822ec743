"""Lesson 03: windowed attention with decomposed relative positions.

A ViT-B block at SAM's resolution attends over 64 x 64 = 4096 tokens. Full attention in
every block would cost 4096^2 scores per head, so SAM follows ViTDet (Li et al. 2022):
most blocks attend only inside w x w windows (w = 14 for the official models, 8 for
micro), and a few blocks attend globally (lesson 04). Kirillov et al. 2023, appendix A;
official ``modeling/image_encoder.py`` Block, Attention, window_partition,
add_decomposed_rel_pos; minisam ``minisam/modeling/image_encoder.py``.

What happens in a windowed block:
1. LayerNorm, then zero-pad the grid to a multiple of the window (64 -> 70 for the official
   models) and cut it into windows. The pad tokens are NOT masked: they go through q/k/v
   like any token and receive attention. (They are cropped away afterwards.)
2. In each window, ordinary multi-head attention, with the scale applied to q first ...
3. ... plus a relative-position bias, "decomposed" (MViTv2, Li et al. 2022): for a query at
   (y, x) and a key at (y', x') it adds q . Rh[y - y'] + q . Rw[x - x'], two learned tables
   of length 2w - 1, read with the UNSCALED q.

This lesson runs the model's own weights (``--model micro`` by default) on a synthetic
scene, spells out one window of the deepest windowed block by hand, checks it against the
encoder, and draws the windows, the rel-pos bias and every head's attention for a query on
an object. How much of each head's attention stays on the query's own object is printed,
beside the share of the window that object covers (what uniform attention would give).

Run:  python lessons/03_windowed_attention.py --out out/03
"""

import numpy as np

import _lesson

args = _lesson.parse_args("03", __doc__.splitlines()[0])

import matplotlib.pyplot as plt  # noqa: E402

from minisam.config import VIT_B  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402
from minisam.kernels.image_encoder import linear, rel_pos_terms  # noqa: E402
from minisam.modeling.image_encoder import window_partition, window_unpartition  # noqa: E402
from minisam.kernels.layers import softmax_rel_pos_  # noqa: E402
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

# --- An input: a synthetic scene, preprocessed (lesson 02), through the whole encoder ----
scene = make_scene(np.random.default_rng(5), S)
x = sam.preprocess(ResizeLongestSide(S).apply_image(scene.image).transpose(2, 0, 1)[None])  # [1, 3, S, S]
trace = {}
sam.image_encoder(x, trace=trace)                               # fills trace with every module output
b = windowed[-1]                     # the deepest windowed block: its tokens have seen the most
blk = sam.params["image_encoder"]["blocks"][b]["attn"]
normed = trace[f"image_encoder.blocks.{b}.norm1"]              # [1, G, G, D] LayerNorm'd input
print(f"block {b}: norm1 output {normed.shape}, attn output (windowed layout) "
      f"{trace[f'image_encoder.blocks.{b}.attn'].shape}")

# --- Step 1: pad and cut into windows -------------------------------------------------
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


def window_attention(i):
    """Steps 2 and 3 for window i, spelled out: q k v, rel-pos terms, scaled scores, softmax.
    -> probs [nH, w*w, w*w] and the attention output [w, w, D]."""
    qkv = linear(windows[i:i + 1], blk["qkv"]["weight"], blk["qkv"]["bias"])   # [1, w, w, 3D]
    q, k, v = qkv.reshape(w * w, 3, nH, hd).transpose(1, 2, 0, 3)             # [nH, w*w, hd] each
    rel_h, rel_w = rel_pos_terms(np.ascontiguousarray(q), blk["rel_pos_h"], blk["rel_pos_w"], (w, w))
    scores = (q * np.float32(hd ** -0.5)) @ k.transpose(0, 2, 1)              # [nH, w*w, w*w]
    probs = softmax_rel_pos_(np.ascontiguousarray(scores.reshape(-1, w * w)), rel_h.reshape(-1, w),
                             rel_w.reshape(-1, w)).reshape(nH, w * w, w * w)  # [nH, w*w, w*w]
    heads = (probs @ v).transpose(1, 0, 2).reshape(w, w, D)                   # [w, w, D]
    out = linear(heads, blk["proj"]["weight"], blk["proj"]["bias"])           # [w, w, D]
    return probs, out, (rel_h, rel_w)


probs, out, (rel_h, rel_w) = window_attention(win)
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

# The pad tokens are attended to like any other (only when the grid needs padding).
if Hp > G:
    last_probs, _, _ = window_attention(len(windows) - 1)                      # bottom-right window
    ky, kx = np.mgrid[0:w, 0:w]
    is_pad = ((ky + Hp - w >= G) | (kx + Wp - w >= G)).reshape(-1)             # [w*w] key beyond the grid
    real = ~is_pad
    print(f"bottom-right window: mean attention mass on pad tokens (not masked!) "
          f"{last_probs[:, real][:, :, is_pad].sum(-1).mean():.3f}")
    _lesson.claim(np.all(windows[-1][is_pad.reshape(w, w)] == 0) and np.all(last_probs[:, real][:, :, is_pad] > 0),
                  "pad tokens are zeros after norm1, and they are not masked: every real query gives them attention")

# --- Figure 1: the windows drawn on the image -----------------------------------------
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
ax.set_title(f"{(Hp // w) * nWx} windows of {w}x{w} tokens ({w * P} px); grid {G} padded to {Hp}")
ax.axis("off")
fig.tight_layout()
_lesson.save(fig, args, "03_windows.png")
plt.close(fig)

# --- Figure 2: rel-pos table, the bias of one head, and every head's attention ----------
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
_lesson.save(fig, args, "03_relpos_and_attention.png")
plt.close(fig)
