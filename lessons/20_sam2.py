# %% [markdown]
# # Lesson 20: SAM 2, what changes and what stays
#
# Deck: the additional slide "SAM 2", SAM's follow-up. Paper: Ravi et al. 2024, "SAM 2:
# Segment Anything in Images and Videos" (arXiv:2408.00714): the promptable visual segmentation
# task, the model section (image encoder, memory attention, prompt encoder and mask decoder,
# memory encoder, memory bank) and the data section (the SA-V data set). Code:
# github.com/facebookresearch/sam2, ``sam2/modeling/sam2_base.py``, ``memory_attention.py``,
# ``memory_encoder.py``, ``sam/mask_decoder.py`` and ``sam2/configs/sam2/sam2_hiera_l.yaml``.
#
# SAM answers a prompt on one image. SAM 2 answers prompts on the frames of a video and keeps
# answering on the frames that follow, without new clicks: it *tracks*. An image is a video of
# one frame (the repository's README), so SAM 2 is also an image model. What it adds is a
# memory, streamed frame by frame:
#
# - the image encoder (Hiera: hierarchical, MAE pre-trained) runs once per frame;
# - memory attention conditions the frame's embedding on a memory bank: self-attention over
#   the frame, then cross-attention to the memories of earlier frames and to object pointers;
# - the prompt encoder and mask decoder are SAM's, plus an occlusion head (is the object in
#   this frame at all?) and high-resolution encoder features added during the upsampling;
# - the memory encoder turns the predicted mask, downsampled and added to the frame embedding,
#   into this frame's memory, and the memory bank keeps a FIFO of recent memories, those of the
#   prompted frames, and the object pointers (one token per frame, from the decoder's output).
#
# Section 3 tries the one new idea on minisam's own model, which has no memory: a hand-built
# stand-in that carries the previous frame's mask forward as SAM's mask prompt. It is not SAM 2
# and learns nothing; what it measures hints at why SAM 2 reads its memory by attention instead.
#
# Run:  python lessons/20_sam2.py --out out/20

# %%
import numpy as np

import _lesson

args = _lesson.parse_args("20", "Lesson 20: SAM 2, what changes and what stays")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Patch  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.config import VIT_B, VIT_H, VIT_L, expected_shapes  # noqa: E402
from minisam.modeling.common import mask_iou  # noqa: E402
from minisam.training.interactive import mask_box  # noqa: E402
from minisam.training.shapes import interior_point, make_scene  # noqa: E402

sam = _lesson.load_model(args)
cfg = sam.config
S, M = cfg.img_size, cfg.mask_input_size
predictor = SamPredictor(sam)


# %% [markdown]
# ## 1. The facts side by side
#
# SAM's numbers come from this repository: minisam/config.py mirrors the official
# segment_anything/build_sam.py (1024 input, 16 px patches, 256 channels, the decoder's sizes),
# and expected_shapes() lists every tensor of the official state dict, so summing them counts
# the parameters without any weights on disk.

# %%
sam_params = {name: sum(int(np.prod(s)) for s in expected_shapes(c).values())
              for name, c in [("B", VIT_B), ("L", VIT_L), ("H", VIT_H)]}
sam_vits = ", ".join(f"{c.encoder_depth}" for c in (VIT_B, VIT_L, VIT_H))
sam_globals = len(VIT_H.encoder_global_attn_indexes)

# SAM 2's numbers, each read in the facebookresearch/sam2 repository:
SAM2_IMAGE_SIZE = 1024          # sam2/configs/sam2/sam2_hiera_l.yaml: image_size
SAM2_BACKBONE_STRIDE = 16       # sam2/modeling/sam2_base.py: SAM2Base(backbone_stride=16)
SAM2_DIM = 256                  # sam2_hiera_l.yaml: neck d_model, memory_attention d_model
SAM2_HIERA_L_STAGES = (2, 6, 36, 4)      # sam2_hiera_l.yaml: trunk stages (blocks per stage)
SAM2_HIERA_L_WIDTHS = (144, 288, 576, 1152)   # sam2_hiera_l.yaml: embed_dim 144, backbone_channel_list
SAM2_HIERA_L_GLOBAL = (23, 33, 43)       # sam2_hiera_l.yaml: global_att_blocks
SAM2_MEMORY_LAYERS = 4          # sam2_hiera_l.yaml: memory_attention num_layers
SAM2_MEMORY_DIM = 64            # sam2_hiera_l.yaml: memory_encoder out_dim (cross-attention kv_in_dim 64)
SAM2_NUM_MASKMEM = 7            # sam2_hiera_l.yaml num_maskmem; sam2_base.py: "1 input frame + 6 previous
#                                 frames": the prompted frames get t_pos 0, the 6 latest frames t_pos 1..6
SAM2_MAX_OBJ_PTRS = 16          # sam2_base.py: max_obj_ptrs_in_encoder=16 (not overridden in the yaml)
# sam2_base.py _build_sam_heads: the decoder is built with SAM's sizes (num_multimask_outputs=3,
# TwoWayTransformer(depth=2, mlp_dim=2048, num_heads=8), iou_head_depth=3, iou_head_hidden_dim=256),
# plus use_high_res_features (stride-4 and stride-8 maps added after each transposed conv in
# sam/mask_decoder.py) and pred_obj_scores (an object-score token and head; sam2_base.py replaces
# the masks by NO_OBJ_SCORE = -1024 when the score logit is <= 0).
SAM2_DECODER = dict(num_multimask_outputs=3, decoder_depth=2, decoder_mlp_dim=2048, decoder_num_heads=8,
                    iou_head_depth=3, iou_head_hidden_dim=256)
# README.md, "SAM 2 checkpoints" table, column "Size (M)": hiera tiny, small, base_plus, large.
SAM2_SIZES_M = {"tiny": 38.9, "small": 46.0, "base+": 80.8, "large": 224.4}
# sav_dataset/README.md: "51K diverse videos and 643K ... masklets"; SA-V train 50,583 videos,
# 642,036 masklets (auto 451,720 and manual 190,316); val 155 videos, test 150.
SAV_VIDEOS, SAV_MASKLETS = "51K", "643K"
SAV_TRAIN_VIDEOS, SAV_TRAIN_MANUAL, SAV_TRAIN_AUTO = 50_583, 190_316, 451_720

sam2_grid = SAM2_IMAGE_SIZE // SAM2_BACKBONE_STRIDE
hiera_blocks = sum(SAM2_HIERA_L_STAGES)
rows = [
    # (what, SAM, SAM 2)
    ("image encoder", f"ViT-B/L/H: {sam_vits} blocks, same width\nthroughout, windows + {sam_globals} global",
     f"Hiera, 4 stages (L: {'+'.join(map(str, SAM2_HIERA_L_STAGES))} = {hiera_blocks} blocks,\n"
     f"width {SAM2_HIERA_L_WIDTHS[0]} to {SAM2_HIERA_L_WIDTHS[-1]}, {len(SAM2_HIERA_L_GLOBAL)} global) + FPN neck"),
    ("pre-training", "MAE (ViT)", "MAE (Hiera)"),
    ("input, embedding", f"{VIT_H.img_size}x{VIT_H.img_size} -> {VIT_H.image_embedding_size}x"
     f"{VIT_H.image_embedding_size}x{VIT_H.prompt_embed_dim}",
     f"{SAM2_IMAGE_SIZE}x{SAM2_IMAGE_SIZE} -> {sam2_grid}x{sam2_grid}x{SAM2_DIM},\n"
     f"+ {4 * sam2_grid}x{4 * sam2_grid} and {2 * sam2_grid}x{2 * sam2_grid} maps into the decoder"),
    ("prompts", "points, boxes, masks", "the same, on any frame"),
    ("mask decoder", f"two-way transformer, {VIT_H.decoder_depth} layers, {VIT_H.decoder_num_heads} heads;\n"
     f"{VIT_H.num_multimask_outputs} masks + IoU scores", "the same + an object-score head"),
    ("temporal memory", "none: every image on its own",
     f"memory attention, {SAM2_MEMORY_LAYERS} layers, reads memories ({SAM2_MEMORY_DIM} ch)\n"
     f"of the {SAM2_NUM_MASKMEM - 1} latest + the prompted frames, and\n<= {SAM2_MAX_OBJ_PTRS} object pointers"),
    ("occlusion", "always returns a mask", "object score <= 0: the mask is emptied"),
    ("parameters", " / ".join(f"{n} {p / 1e6:.1f}M" for n, p in sam_params.items()),
     f"tiny {SAM2_SIZES_M['tiny']}M ... large {SAM2_SIZES_M['large']}M"),
    ("new data set", "SA-1B: 11M images, 1.1B masks",
     f"SA-V: {SAV_VIDEOS} videos, {SAV_MASKLETS} masklets (train: {SAV_TRAIN_VIDEOS:,}\n"
     f"videos, {SAV_TRAIN_MANUAL:,} manual + {SAV_TRAIN_AUTO:,} auto masklets)"),
]
# SA-1B: Kirillov et al. 2023, section 5 (lesson 19). "MAE (ViT)": the same paper, section 3;
# "MAE (Hiera)": Hiera (Ryali et al. 2023, arXiv:2306.00989, the reference in
# sam2/modeling/backbones/hieradet.py) is pre-trained as a masked autoencoder.
print(f"{'':<17} | {'SAM (Kirillov et al. 2023)':<44} | SAM 2 (Ravi et al. 2024)")
for what, a, b in rows:
    a_lines, b_lines = a.split("\n"), b.split("\n")
    for i in range(max(len(a_lines), len(b_lines))):
        print(f"{what if i == 0 else '':<17} | {a_lines[i] if i < len(a_lines) else '':<44} | "
              f"{b_lines[i] if i < len(b_lines) else ''}")

_lesson.claim(all(getattr(VIT_H, k) == v for k, v in SAM2_DECODER.items())
              and VIT_H.image_embedding_size == sam2_grid and VIT_H.prompt_embed_dim == SAM2_DIM,
              f"what stays: SAM 2 builds SAM's decoder ({SAM2_DECODER['decoder_depth']} layers, "
              f"{SAM2_DECODER['decoder_num_heads']} heads, {SAM2_DECODER['num_multimask_outputs']} masks + IoU) "
              f"on the same {sam2_grid}x{sam2_grid}x{SAM2_DIM} embedding of a {SAM2_IMAGE_SIZE} px input")
_lesson.claim(SAM2_SIZES_M["large"] * 1e6 < sam_params["H"] / 2,
              f"SAM 2's largest model ({SAM2_SIZES_M['large']}M parameters) is under half of SAM ViT-H "
              f"({sam_params['H'] / 1e6:.1f}M, counted from the official state dict's shapes)")


# %% [markdown]
# ## 2. The architecture, drawn

# %%
STAYS, CHANGED, NEW = "#d9d9d9", "#b7d4ee", "#f6c48f"


def box(ax, x, y, w, h, text, color, size=9.5):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.4,rounding_size=1.2",
                                fc=color, ec="#333333", lw=1.1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, linespacing=1.25)


def arrow(ax, start, end, text=None, text_at=None, style="arc3", size=9.5, ha="center"):
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", lw=1.4, color="#333333", connectionstyle=style,
                                shrinkA=2, shrinkB=2))
    if text:
        ax.text(*text_at, text, fontsize=size, ha=ha, va="center", style="italic", color="#222222")


def draw_architecture(ax):
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 66)
    ax.axis("off")
    # SAM, left: one image, no state between calls.
    ax.text(11.5, 64, "SAM: one image", ha="center", fontsize=11, weight="bold")
    ax.text(11.5, 57.5, "image", ha="center", fontsize=9.5)
    box(ax, 1.5, 45, 20, 8, "image encoder\nViT, MAE pre-trained\n(once per image)", STAYS)
    box(ax, 1.5, 32, 20, 7.5, "prompt encoder\npoints, boxes,\nmasks", STAYS)
    box(ax, 1.5, 17, 20, 9, "mask decoder\ntwo-way transformer\n3 masks + IoU", STAYS)
    ax.text(11.5, 10, "masks", ha="center", fontsize=9.5)
    arrow(ax, (11.5, 56.3), (11.5, 53.6))
    arrow(ax, (11.5, 44.4), (11.5, 40.1))
    arrow(ax, (11.5, 31.4), (11.5, 26.6))
    arrow(ax, (11.5, 16.4), (11.5, 11.5))
    ax.plot([24.5, 24.5], [3, 65], color="#999999", lw=1, ls="--")
    # SAM 2, right: the same pipeline once per frame, and a loop through the memory.
    ax.text(62, 64, "SAM 2: a stream of frames, one pass per frame t", ha="center", fontsize=11, weight="bold")
    ax.text(48, 58.5, "frame t", ha="center", fontsize=9.5)
    box(ax, 34, 48, 28, 7.5, "image encoder: Hiera\nhierarchical, MAE pre-trained", CHANGED)
    box(ax, 34, 34, 28, 9.5, "memory attention\nself-attention over the frame,\ncross-attention to memories\n"
        "and object pointers", NEW)
    box(ax, 34, 16, 28, 12.5, "prompt encoder + mask decoder\nas SAM's: 3 masks + IoU\n"
        "+ occlusion head (object here?)\n+ high-res features in the\nupsampling", STAYS)
    ax.text(48, 8.5, "mask t (+ object score)", ha="center", fontsize=9.5)
    box(ax, 72, 32, 25.5, 14, f"memory bank\nFIFO: memories of the\n{SAM2_NUM_MASKMEM - 1} latest frames\n"
        f"+ the prompted frames\n+ up to {SAM2_MAX_OBJ_PTRS} object pointers", NEW)
    box(ax, 72, 12.5, 25.5, 10.5, "memory encoder\nmask t downsampled,\nadded to the frame\nembedding, fused", NEW)
    arrow(ax, (48, 57.4), (48, 56.1))
    arrow(ax, (48, 47.4), (48, 44.1), "frame embedding", (49, 45.8), ha="left")
    arrow(ax, (48, 33.4), (48, 29.1), "conditioned embedding", (49, 31.2), ha="left")
    arrow(ax, (48, 15.4), (48, 10))
    # the frame embedding also goes to the memory encoder, around the memory bank
    ax.plot([62.6, 99.5, 99.5], [52.5, 52.5, 17.8], color="#333333", lw=1.4)
    arrow(ax, (99.6, 17.8), (98.1, 17.8))
    ax.text(81, 53.9, "... and to the memory encoder", ha="center", fontsize=9.5, style="italic")
    arrow(ax, (59, 8.5), (84.75, 12), style="angle,angleA=0,angleB=90,rad=0")
    arrow(ax, (84.75, 23.6), (84.75, 31.4), "memory of\nframe t", (85.6, 27.3), ha="left")
    arrow(ax, (71.4, 39), (62.6, 39), "memories\n+ pointers", (67, 35.2))
    arrow(ax, (33.4, 50.5), (33.4, 20), style="arc3,rad=0.45")
    ax.text(30.6, 36, "stride 4, 8 features", rotation=90, ha="center", va="center", fontsize=9.5, style="italic")
    ax.text(32.6, 12.2, "prompts,\nany frame", ha="right", va="center", fontsize=9.5, style="italic")
    arrow(ax, (30.5, 14.6), (33.4, 17.6))
    ax.legend(handles=[Patch(fc=STAYS, ec="#333333", label="as in SAM"),
                       Patch(fc=CHANGED, ec="#333333", label="replaced"),
                       Patch(fc=NEW, ec="#333333", label="new in SAM 2")],
              loc="lower left", bbox_to_anchor=(0.0, -0.02), fontsize=9.5, ncol=3, frameon=False)


def draw_table(ax):
    ax.axis("off")
    ax.set_xlim(0, 100)
    n_lines = [max(a.count("\n"), b.count("\n")) + 1 for _, a, b in rows]
    total = sum(n_lines) + 1.6
    ax.set_ylim(0, total)
    y = total - 0.2
    cols = (0.5, 18.5, 54.5)
    for x, head in zip(cols, ("", "SAM (Kirillov et al. 2023)", "SAM 2 (Ravi et al. 2024)")):
        ax.text(x, y, head, fontsize=10, weight="bold", va="top")
    y -= 1.3
    for (what, a, b), n in zip(rows, n_lines):
        ax.axhline(y + 0.15, color="#bbbbbb", lw=0.8)
        for x, text, weight in zip(cols, (what, a, b), ("bold", "normal", "normal")):
            ax.text(x, y, text, fontsize=9.5, va="top", weight=weight, linespacing=1.2)
        y -= n
    ax.set_title("SAM vs SAM 2 (sources: minisam/config.py; facebookresearch/sam2 configs, code, READMEs)",
                 fontsize=9.5, loc="left")


# %% [markdown]
# ## 3. The one new idea on minisam's model: carry the last mask to the next frame
#
# A "video": one scene whose image and masks are rolled by a few pixels each frame, as if the
# camera panned. The target is the scene's largest object; the direction is the one with the
# most room, so the object never wraps around the border.

# %%
N_FRAMES, N_VIDEOS, SPEED = 8, 12, 5


def make_video(seed):
    scene = make_scene(np.random.default_rng(seed), S)
    target = scene.masks[max(scene.objects, key=lambda i: scene.masks[i].sum())]   # [S, S] bool
    x0, y0, x1, y1 = mask_box(target)
    room = {(0, 1): S - 1 - x1, (0, -1): x0, (1, 0): S - 1 - y1, (-1, 0): y0}    # (dy, dx) -> free pixels
    direction = max(room, key=room.get)
    speed = int(min(SPEED, room[direction] // (N_FRAMES - 1)))
    shifts = [(k * direction[0] * speed, k * direction[1] * speed) for k in range(N_FRAMES)]
    frames = np.stack([np.roll(scene.image, s, axis=(0, 1)) for s in shifts])     # [N, S, S, 3]
    truths = np.stack([np.roll(target, s, axis=(0, 1)) for s in shifts])          # [N, S, S]
    return frames, truths


def best(masks, scores, low_res):
    k = int(np.argmax(scores))
    return masks[k], low_res[k][None]                                              # [S, S], [1, M, M]


# Three ways to prompt frame t >= 1; all three start from the same click on frame 0.
#   no memory:    the frame-0 click again, as SAM would be used frame by frame;
#   mask + point: the stand-in, the previous frame's low-res logits as mask_input (SAM's own
#                 mask prompt, lesson 09) with the most interior point of the previous mask;
#   point only:   that point without the logits, to see which half of the stand-in helps.
STRATEGIES = ("no memory", "mask + point", "point only")
ious = np.zeros((len(STRATEGIES), N_VIDEOS, N_FRAMES))                             # [3, V, N]
shown = {}
for v in range(N_VIDEOS):
    frames, truths = make_video(v)
    click = interior_point(truths[0])[None] - 0.5                                  # [1, 2] (x, y)
    state = {}   # strategy -> (previous mask [S, S], previous logits [1, M, M])
    for t in range(N_FRAMES):
        predictor.set_image(frames[t])
        for j, name in enumerate(STRATEGIES):
            if t == 0 or name == "no memory":
                point = click
                mask, logits = best(*predictor.predict(point_coords=point, point_labels=np.array([1])))
            else:
                prev_mask, prev_logits = state[name]
                point = interior_point(prev_mask)[None] - 0.5 if prev_mask.any() else click
                if name == "mask + point":
                    # a mask prompt with a point: one unambiguous answer, as the official notebooks ask
                    out = predictor.predict(point_coords=point, point_labels=np.array([1]),
                                            mask_input=prev_logits, multimask_output=False)
                else:
                    out = predictor.predict(point_coords=point, point_labels=np.array([1]))
                mask, logits = best(*out)
            state[name] = (mask, logits)
            ious[j, v, t] = float(mask_iou(mask, truths[t]))
            if v == 0:
                shown.setdefault(name, []).append((mask, point[0]))
    if v == 0:
        shown_frames, shown_truths = frames, truths
        print(f"video 0: frames {frames.shape}, true masks {truths.shape}, embedding "
              f"{predictor.get_image_embedding().shape}, mask prompt {state['mask + point'][1].shape} "
              f"(the previous low-res logits, [1, {M}, {M}])")

later = ious[:, :, 1:].mean(axis=(1, 2))                                           # [3] frames 1..N-1
per_frame = ious.mean(axis=1)                                                      # [3, N]
for j, name in enumerate(STRATEGIES):
    print(f"{name:<13} mean IoU per frame over {N_VIDEOS} videos: {np.round(per_frame[j], 3).tolist()}; "
          f"frames 1..{N_FRAMES - 1}: {later[j]:.3f}")
wins = int((ious[1, :, 1:].mean(1) > ious[0, :, 1:].mean(1)).sum())
print(f"mask + point beats no memory on {wins} of {N_VIDEOS} videos")

if args.checkpoint is None:   # the registered models are trained; a --checkpoint may hold any weights
    _lesson.claim(later[1] > later[0],
                  f"with the previous mask carried over (logits + its interior point), the mean IoU over frames "
                  f"1..{N_FRAMES - 1} of {N_VIDEOS} videos is {later[1]:.3f}, against {later[0]:.3f} when the "
                  f"frame-0 click is reused")
    _lesson.claim(later[1] - later[2] <= 0.1 * (later[2] - later[0]),
                  f"the moved point does the work, not the stale mask: the point alone lifts frames 1..{N_FRAMES - 1} "
                  f"from {later[0]:.3f} to {later[2]:.3f}, and the previous logits change that by "
                  f"{later[1] - later[2]:+.3f}, less than a tenth of the point's gain")
# Why the logits do not help: SAM's mask prompt is added to the image embedding cell by cell
# (lesson 09), so it says "the object is *here*", where it was one frame ago. SAM 2's memory
# is read by cross-attention instead: the current frame's features look the object up by
# content wherever it has moved, and the decoder is trained on videos to use what it finds.


# %% [markdown]
# ## 4. The figure: diagram, table, curves, one video

# %%
fig = plt.figure(figsize=(10, 16.5))
grid = fig.add_gridspec(3, 2, height_ratios=[6.6, 4.9, 4.2], width_ratios=[1, 1.15], hspace=0.12, wspace=0.12)
draw_architecture(fig.add_subplot(grid[0, :]))
draw_table(fig.add_subplot(grid[1, :]))

ax = fig.add_subplot(grid[2, 0])
for j, (name, color, marker) in enumerate(zip(STRATEGIES, ("tab:blue", "tab:orange", "tab:green"), "os^")):
    ax.plot(range(N_FRAMES), per_frame[j], marker=marker, color=color, ms=5,
            label=f"{name} ({later[j]:.2f})")
ax.set_xlabel("frame (the object moves; one click on frame 0)", fontsize=9.5)
ax.set_ylabel(f"IoU with the true mask, mean of {N_VIDEOS} videos", fontsize=9.5)
ax.set_ylim(0, 1)
ax.grid(alpha=0.3)
ax.legend(fontsize=9.5, title=f"mean over frames 1..{N_FRAMES - 1}", title_fontsize=9.5, loc="lower left")
ax.set_title("hand-built stand-in on minisam's model (not SAM 2)", fontsize=9.5)
ax.tick_params(labelsize=9.5)

# Video 0 at three times, cropped to the object's path: the true outline (white), no memory
# (blue), the stand-in (orange), and the point each one clicked.
ax = fig.add_subplot(grid[2, 1])
picks = [0, N_FRAMES // 2, N_FRAMES - 1]
rows_on, cols_on = np.nonzero(shown_truths.any(axis=0))
y0, y1 = max(rows_on.min() - 12, 0), min(rows_on.max() + 13, S)
x0, x1 = max(cols_on.min() - 12, 0), min(cols_on.max() + 13, S)
h, w = y1 - y0, x1 - x0
gap = np.full((h, 3, 3), 255, np.uint8)
strip = np.concatenate(sum([[shown_frames[t, y0:y1, x0:x1], gap] for t in picks], [])[:-1], axis=1)  # [h, 3w+6, 3]
ax.imshow(strip)
for i, t in enumerate(picks):
    x_off = i * (w + 3)
    xs, ys = np.arange(w) + x_off, np.arange(h)
    ax.contour(xs, ys, shown_truths[t, y0:y1, x0:x1], levels=[0.5], colors="white", linewidths=1.2,
               linestyles="--")
    for name, color in (("no memory", "tab:blue"), ("mask + point", "tab:orange")):
        mask, point = shown[name][t]
        if mask[y0:y1, x0:x1].any():
            ax.contour(xs, ys, mask[y0:y1, x0:x1], levels=[0.5], colors=color, linewidths=1.6)
        ax.plot(point[0] - x0 + x_off, point[1] - y0, "P" if name == "mask + point" else "X", color=color,
                ms=8, mec="white")
    ax.text(x_off + w / 2, h + 6, f"frame {t}", ha="center", va="top", fontsize=9.5)
ax.set_title(f"video 0 at frame {N_FRAMES - 1}: IoU no memory {ious[0, 0, -1]:.2f},\n"
             f"stand-in {ious[1, 0, -1]:.2f} (white dashed: truth; markers: the clicks)", fontsize=9.5)
ax.axis("off")
_lesson.save(fig, args, "20_sam2.png")
plt.close(fig)
