# %% [markdown]
# # Lesson 02: encoder-decoder segmentation models, and how SAM differs
#
# Deck: "Background knowledge: encoder-decoder architecture". Paper: Kirillov et al. 2023,
# section 2 (the promptable task, and how it differs from a model with a fixed set of tasks)
# and section 3 (SAM's image encoder, prompt encoder and mask decoder).
#
# Before SAM, a segmentation network was typically an *encoder-decoder* (the U-Net of
# Ronneberger et al. 2015 is the best-known one):
#
# - the **encoder** applies convolutions and downsamples (pooling or strided convolutions):
#   H x W -> H/2 x W/2 -> H/4 x W/4 -> ... Each step sees a larger part of the image and
#   describes it with more channels and fewer pixels;
# - the **bottleneck** is the coarsest map: it knows *what* is in the image (context) but has
#   lost *where* exactly (a 16 x 16 map of a 128 x 128 image cannot draw a 2-pixel boundary);
# - the **decoder** upsamples back to H x W. **Skip connections** hand it the encoder's fine
#   maps of the same resolution, so the boundaries come back;
# - a 1 x 1 convolution at the end gives, for every pixel, a score per class. The classes are
#   fixed when the model is trained, and the output is *one* map per image: the same image
#   always gets the same answer.
#
# SAM keeps an encoder (a ViT, section 3, "Image encoder") and a decoder that upsamples 4x
# with transposed convolutions (lesson 12), but its decoder also reads a **prompt**: the mask it
# draws is the one the prompt asks for ("return a valid segmentation mask given any prompt",
# section 2). It has no classes at all.
#
# **The tiny U-Net here.** To keep it cheap on a CPU, the convolutions are *random and
# fixed* (widths 8, 16, 32, 32; three 2 x 2 average pools down to a 16 x 16 bottleneck at a
# 128 x 128 input), and only the last 1 x 1 layer is learned, in closed form, by least squares:
# with $X \in \mathbb{R}^{N \times F}$ the decoder's features of $N$ training pixels and
# $y \in \{-1, +1\}^N$ their labels (object or background),
#
# $$
# w = \arg\min_w \lVert X w - y \rVert^2 + \lambda \lVert w \rVert^2 = (X^\top X + \lambda I)^{-1} X^\top y,
# \qquad \text{pixel } i \text{ is foreground} \iff x_i^\top w > 0 .
# $$
#
# Random convolutional features with a trained read-out are a weak but honest segmenter; a
# real U-Net learns every layer by backpropagation. The read-out is fitted twice: on the full
# decoder (bottleneck upsampled + skip connections) and on the bottleneck alone, to measure
# what the skip connections bring. Then SAM (``micro`` by default) runs on the same test
# images with one point on each of two objects.
#
# Run:  python lessons/02_encoder_decoder.py --out out/02

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("02", "Lesson 02: encoder-decoder segmentation models, and how SAM differs")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.cli.drawing import show_mask, show_points  # noqa: E402
from minisam.modeling.common import mask_iou  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402

S = 128                      # the U-Net's input side (micro's input size too)
WIDTHS = (3, 8, 16, 32, 32)  # channels: RGB, then one width per encoder level
N_TRAIN, N_TEST = 24, 12     # scenes


def iou(a, b):  # [H, W] bool x2 -> float
    return float(mask_iou(a, b))


# %% [markdown]
# ## 1. The encoder, the bottleneck and the decoder, with every shape

# %%
rng = np.random.default_rng(0)
# Random 3x3 filters at the scale that keeps activations O(1) (fan-in 9 x C_in), fixed forever.
filters = [(rng.standard_normal((WIDTHS[i + 1], WIDTHS[i], 3, 3)) / np.sqrt(9 * WIDTHS[i])).astype(np.float32)
           for i in range(4)]                                    # each [C_out, C_in, 3, 3]
biases = [rng.normal(0, 0.1, WIDTHS[i + 1]).astype(np.float32) for i in range(4)]   # each [C_out]


def conv3x3(x, w, b):
    """'Same' 3x3 convolution with zero padding, then ReLU: x [C_in, h, w] -> [C_out, h, w]."""
    c_in, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))                                # [C_in, h+2, w+2]
    taps = np.stack([padded[:, dy:dy + h, dx:dx + wd] for dy in range(3) for dx in range(3)], 1)  # [C_in, 9, h, w]
    out = np.einsum("oik,ikhw->ohw", w.reshape(len(w), c_in, 9), taps, optimize=True)        # [C_out, h, w]
    return np.maximum(out + b[:, None, None], 0)


def pool2(x):   # [C, h, w] -> [C, h/2, w/2], 2x2 average
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def upsample(x, factor):   # [C, h, w] -> [C, h*f, w*f], nearest neighbour
    return x.repeat(factor, axis=1).repeat(factor, axis=2)


def unet_features(image, trace=None):
    """The encoder (conv, pool, conv, ...) and the decoder path (upsampling, skip connections)
    of the tiny U-Net: image [S, S, 3] uint8 -> per-pixel features [S*S, F] (F = 121).
    Columns 0..64 come from the bottleneck alone (its 32 channels, the same 32 minus their
    image-wide mean, which tells each cell how it differs from the rest of the image, and a
    bias column); columns 65.. are the skip connections."""
    x = image.astype(np.float32).transpose(2, 0, 1) / 255.0                 # [3, S, S]
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-3)
    levels = []
    for i in range(4):
        if i:
            x = pool2(x)                                                     # halve the side
        x = conv3x3(x, filters[i], biases[i])                                # [C_i, S/2^i, S/2^i]
        levels.append(x)
    bottleneck = levels[-1]                                                  # [32, S/8, S/8]
    context = bottleneck - bottleneck.mean(axis=(1, 2), keepdims=True)       # [32, S/8, S/8]
    decoder = [upsample(bottleneck, 8), upsample(context, 8), np.ones((1, S, S), np.float32),  # 65 columns
               upsample(levels[2], 4), upsample(levels[1], 2), levels[0]]   # skips: 32 + 16 + 8
    if trace is not None:
        trace.update({f"encoder level {i}": l.shape for i, l in enumerate(levels)})
        trace["decoder: bottleneck upsampled + skips"] = (sum(len(d) for d in decoder), S, S)
    feats = np.concatenate(decoder, axis=0)                                  # [F, S, S]
    return feats.reshape(len(feats), -1).T                                   # [S*S, F]


BOTTLENECK_COLUMNS = 2 * WIDTHS[-1] + 1                                      # 65
F_TOTAL = BOTTLENECK_COLUMNS + sum(WIDTHS[1:4])                              # 121 read-out inputs


def foreground(scene):   # the U-Net's single class: any object, [S, S] bool
    return np.logical_or.reduce([scene.masks[i] for i in scene.objects])


shapes = {}
unet_features(make_scene(np.random.default_rng(1), S).image, trace=shapes)
for name, shape in shapes.items():
    print(f"  {name:<40s} {shape}")
print(f"  1x1 read-out (least squares)              ({shapes['decoder: bottleneck upsampled + skips'][0]},) "
      f"-> one score per pixel, [{S}, {S}]")


# %% [markdown]
# ## 2. Fit the read-out on training scenes, test on others
#
# The normal equations are accumulated image by image ($X^\top X$ is only F x F), and the
# bottleneck-only model is the same solve restricted to its 65 columns.

# %%
train = [make_scene(np.random.default_rng(20_000 + k), S) for k in range(N_TRAIN)]
test = [make_scene(np.random.default_rng(30_000 + k), S) for k in range(N_TEST)]
F = shapes["decoder: bottleneck upsampled + skips"][0]
assert F == F_TOTAL, (F, F_TOTAL)                                            # what the figure labels
gram = np.zeros((F, F))                                                      # X^T X
moment = np.zeros(F)                                                         # X^T y
for scene in train:
    X = unet_features(scene.image).astype(np.float64)                        # [S*S, F]
    y = np.where(foreground(scene).ravel(), 1.0, -1.0)                       # [S*S]
    gram += X.T @ X
    moment += X.T @ y
ridge = 1.0
w_full = np.linalg.solve(gram + ridge * np.eye(F), moment)                  # [F]
b = BOTTLENECK_COLUMNS
w_bottleneck = np.linalg.solve(gram[:b, :b] + ridge * np.eye(b), moment[:b])   # [65]
print(f"read-out fitted on {N_TRAIN} scenes ({N_TRAIN * S * S} pixels): {F} weights with skips, {b} without")

scores, fg_iou, fg_iou_bottleneck = [], [], []   # per test scene
for scene in test:
    X = unet_features(scene.image)                                           # [S*S, F]
    score = (X @ w_full).reshape(S, S)                                       # [S, S] read-out score
    scores.append(score)
    fg_iou.append(iou(score > 0, foreground(scene)))
    fg_iou_bottleneck.append(iou((X[:, :b] @ w_bottleneck).reshape(S, S) > 0, foreground(scene)))
typical = int(np.argsort(fg_iou)[len(fg_iou) // 2])   # the scene drawn below: the median foreground IoU
scene_fg_iou = fg_iou[typical]
fg_iou, fg_iou_bottleneck = float(np.mean(fg_iou)), float(np.mean(fg_iou_bottleneck))
print(f"foreground IoU on {N_TEST} test scenes: {fg_iou:.3f} with skip connections, "
      f"{fg_iou_bottleneck:.3f} from the bottleneck alone")
_lesson.claim(fg_iou >= 0.5,
              f"the tiny U-Net does its one task: its foreground map has IoU {fg_iou:.2f} with the union of "
              f"the objects on {N_TEST} test scenes (at least 0.5)")
_lesson.claim(fg_iou >= fg_iou_bottleneck + 0.1,
              f"skip connections bring the boundaries back: foreground IoU {fg_iou:.2f} with them, "
              f"{fg_iou_bottleneck:.2f} from the 16 x 16 bottleneck alone")


# %% [markdown]
# ## 3. The same images through SAM: one point on each of two objects
#
# On every test scene, the two largest objects A and B. The U-Net has one answer for the
# image; SAM gets a point at the most interior pixel of A, then of B, and we keep its
# top-scored mask each time (what an automatic user of SAM would keep).

# %%
sam = _lesson.load_model(args)
if sam.config.img_size != S:
    print(f"(the model's input is {sam.config.img_size} px; the predictor resizes the {S} px scenes)")
predictor = SamPredictor(sam)
unet_object_iou, sam_object_iou, pair_iou, own_closer = [], [], [], []
shown = None
for k, scene in enumerate(test):
    a, b_ = sorted(scene.objects, key=lambda i: scene.masks[i].sum())[-2:][::-1]   # the two largest
    predictor.set_image(scene.image)
    masks = []
    for mine, other in ((a, b_), (b_, a)):
        point = interior_point(scene.masks[mine]) - 0.5                      # [2] (x, y)
        out, score, _ = predictor.predict(point_coords=point[None], point_labels=np.array([1]))  # [3, S, S], [3]
        mask = out[int(np.argmax(score))]                                    # [S, S] top-scored
        masks.append((mask, point))
        sam_object_iou.append(iou(mask, scene.masks[mine]))
        unet_object_iou.append(iou(scores[k] > 0, scene.masks[mine]))
        own_closer.append(iou(mask, scene.masks[mine]) > iou(mask, scene.masks[other]))
    pair_iou.append(iou(masks[0][0], masks[1][0]))
    if k == typical:
        shown = (scene, scores[k], a, b_, masks)
unet_object_iou, sam_object_iou = float(np.mean(unet_object_iou)), float(np.mean(sam_object_iou))
pair_iou, own_closer = float(np.mean(pair_iou)), float(np.mean(own_closer))
print(f"per object ({2 * N_TEST} objects): U-Net map IoU {unet_object_iou:.3f}, SAM top-scored mask IoU "
      f"{sam_object_iou:.3f}")
print(f"SAM's masks for the two points: mean IoU between them {pair_iou:.3f}; the mask is closer to the "
      f"prompted object than to the other one for {own_closer:.0%} of the prompts")
_lesson.claim(sam_object_iou >= unet_object_iou + 0.15,
              f"asked for one object, SAM's mask has IoU {sam_object_iou:.2f} with it; the U-Net, which cannot be "
              f"asked, has {unet_object_iou:.2f} with the same objects (its map holds all of them)")
_lesson.claim(pair_iou <= 0.2 and own_closer >= 0.8,
              f"SAM's answers to the two prompts differ (IoU {pair_iou:.2f} between them) and each matches its "
              f"own object better than the other one ({own_closer:.0%} of {2 * N_TEST} prompts)")


# %% [markdown]
# ## 4. The figure: the model, its one map, and SAM's two masks

# %%
def draw_unet(ax):
    """The tiny U-Net as boxes: encoder levels down the left, decoder up the right, skips across."""
    ax.set_xlim(0, 10)
    ax.set_ylim(0.6, 10.2)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", lw=1.3, color="k")
    for i, width in enumerate(WIDTHS[1:]):
        side, y, half = S // 2 ** i, 8.2 - 2.2 * i, max(1.5 - 0.2 * i, 1.3)   # encoder boxes centred at x = 1.8
        ax.add_patch(FancyBboxPatch((1.8 - half, y), 2 * half, 1.2, boxstyle="round,pad=0.05",
                                    fc="#f4a582" if i < 3 else "#d6604d", ec="k"))
        ax.text(1.8, y + 0.6, f"{width} x {side}x{side}", ha="center", va="center", fontsize=10)
        if i < 3:   # the pool + conv to the next level, and the skip across
            ax.annotate("", (1.8, y - 0.95), (1.8, y - 0.05), arrowprops=arrow)
            ax.add_patch(FancyBboxPatch((5.9, y), 4.0, 1.2, boxstyle="round,pad=0.05", fc="#92c5de", ec="k"))
            label = (f"{width}-ch skip, up {S // side}x" if i else
                     f"concat, {F_TOTAL} ch\n-> 1x1 read-out")
            ax.text(7.9, y + 0.6, label, ha="center", va="center", fontsize=10)
            ax.annotate("", (5.85, y + 0.6), (1.85 + half, y + 0.6),
                        arrowprops=dict(arrowstyle="-|>", color="#2166ac", lw=1.6))
        if 0 < i < 3:   # the decoder goes up: upsample 2x
            ax.annotate("", (7.9, y + 2.15), (7.9, y + 1.25), arrowprops=arrow)
    ax.annotate("", (7.9, 3.75), (2.8, 2.2), arrowprops=dict(connectionstyle="arc3,rad=0.25", **arrow))
    ax.text(6.6, 2.3, f"up {S // (S // 8)}x", ha="center", fontsize=10)
    ax.text(1.8, 1.2, "bottleneck", ha="center", va="center", fontsize=10, style="italic")
    ax.text(1.8, 9.75, "encoder: conv + pool", ha="center", fontsize=10, weight="bold")
    ax.text(7.9, 9.75, "decoder: upsample, concat", ha="center", fontsize=10, weight="bold")
    ax.text(4.5, 7.65, "skip connections", ha="center", fontsize=10, color="#2166ac", style="italic")
    ax.set_title("a U-Net: down to a bottleneck, up with skips\n(random convs; the 1x1 read-out is fitted)",
                 fontsize=10.5)


scene, score, a, b_, masks = shown
fig, axes = plt.subplots(2, 2, figsize=(9.2, 9.4))
draw_unet(axes[0, 0])
ax = axes[0, 1]
lim = float(np.abs(score).max())
im = ax.imshow(score, cmap="RdBu_r", vmin=-lim, vmax=lim)
ax.contour(foreground(scene), levels=[0.5], colors="k", linewidths=1)
ax.set_title(f"U-Net: one map, whatever you want (black: all\nobjects; IoU {scene_fg_iou:.2f} here, {fg_iou:.2f} on average)",
             fontsize=10.5)
cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
cbar.set_label("read-out score (> 0: object)", fontsize=10)
for ax, (mask, point), mine, name in ((axes[1, 0], masks[0], a, "A"), (axes[1, 1], masks[1], b_, "B")):
    ax.imshow(scene.image)
    show_mask(mask, ax, color=np.array([0.1, 0.45, 1.0, 0.6]))
    ax.contour(scene.masks[mine], levels=[0.5], colors="w", linewidths=1.2, linestyles="--")
    show_points(point[None], np.array([1]), ax)
    ax.set_title(f"SAM, a point on object {name}: its mask (blue)\nIoU {iou(mask, scene.masks[mine]):.2f} with "
                 f"{name} (white dashed)", fontsize=10.5)
for ax in axes.flat[1:]:
    ax.axis("off")
fig.suptitle(f"One fixed map vs the mask the prompt asks for: per object, U-Net IoU {unet_object_iou:.2f}, "
             f"SAM {sam_object_iou:.2f} ({2 * N_TEST} objects)", fontsize=11.5)
fig.tight_layout()
_lesson.save(fig, args, "02_encoder_decoder.png")
plt.close(fig)
