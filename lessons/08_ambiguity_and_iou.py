"""Lesson 08: ambiguity: three masks and a predicted IoU for each.

One click is ambiguous: a point on a shirt could mean the shirt, the person, or a button.
SAM's answer (Kirillov et al. 2023, section 3 "Resolving ambiguity"; official
``modeling/mask_decoder.py`` forward; minisam ``minisam/mask_decoder.py``):

- the decoder always predicts 4 masks, one per mask token. Token 0 is trained for the
  *unambiguous* case; tokens 1..3 are trained as a set, with only the best of the three
  receiving the mask loss (minimum over the three) so they specialize (whole, part, subpart);
- the IoU head predicts, for each mask, its IoU with the object the user meant. The scores
  are raw MLP outputs (no sigmoid): they can leave [0, 1];
- ``multimask_output=True`` returns tokens 1..3 (``masks[:, 1:]``): use it for a single
  point, pick the highest score. With several points (or a box) the prompt is not ambiguous
  and ``multimask_output=False`` returns token 0 (``masks[:, 0:1]``).
- the low-res logits (256 x 256) are upsampled to 1024, the padding is cropped, and the
  result is resized to the original image (both bilinear, align_corners=False); > 0 is the
  mask.

Weights are random (vit_b shapes) so the masks are blobs, not objects; the mechanics (which
token is returned, how scores are read) are exactly those of the trained model.

Run:  MPLBACKEND=Agg python lessons/08_ambiguity_and_iou.py --out out/08
"""

import argparse
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minisam.config import VIT_B, expected_shapes  # noqa: E402
from minisam.params import nest  # noqa: E402
from minisam.predictor import SamPredictor  # noqa: E402
from minisam.sam import Sam  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="out/08")
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)


def random_prompt_decoder_params(cfg, seed=0):
    """Random prompt-encoder and mask-decoder weights at sensible scales (no image encoder)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for k, shape in expected_shapes(cfg).items():
        if k.startswith("image_encoder."):
            continue
        leaf = k.rsplit(".", 1)[1]
        if "norm" in k or any(s in k for s in ("downscaling.1.", "downscaling.4.", "upscaling.1.")):
            v = (1.0 if leaf == "weight" else 0.0) + 0.1 * rng.standard_normal(shape)
        elif leaf == "positional_encoding_gaussian_matrix" or "embed" in k.split(".")[1] \
                or k.startswith(("mask_decoder.iou_token", "mask_decoder.mask_tokens")):
            v = rng.standard_normal(shape)
        elif leaf == "bias":
            v = 0.02 * rng.standard_normal(shape)
        else:
            fan_in = shape[0] if "upscaling" in k else int(np.prod(shape[1:]))
            v = rng.standard_normal(shape) / np.sqrt(fan_in)
        flat[k] = v.astype(np.float32)
    return nest(flat)


def synthetic_embedding(cfg, seed=0, disc=(20, 40, 9)):
    """[1, C, G, G]: a smooth random field (low-pass noise) plus one vector inside a disc."""
    rng = np.random.default_rng(seed)
    C, G = cfg.prompt_embed_dim, cfg.image_embedding_size
    noise = rng.standard_normal((C, G, G))
    k = np.exp(-0.5 * (np.arange(-6, 7) / 2.5) ** 2)
    k /= k.sum()
    for axis in (1, 2):  # separable Gaussian blur: smooth over ~3 cells
        noise = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), axis, noise)
    noise /= noise.std()
    yy, xx = np.mgrid[0:G, 0:G]
    inside = np.hypot(yy - disc[0], xx - disc[1]) < disc[2]  # [G, G]
    noise[:, inside] += 2.0 * rng.standard_normal((C, 1))
    return noise[None].astype(np.float32), inside


cfg = VIT_B
sam = Sam(cfg, random_prompt_decoder_params(cfg, seed=1))
emb, inside = synthetic_embedding(cfg)
H, W = 600, 800  # the "original image": resized to 768 x 1024 for the model, then padded
h_in, w_in = 768, 1024
yy, xx = np.mgrid[0:H, 0:W]
image = np.stack([120 + 60 * np.sin(xx / 70), 110 + 50 * np.cos(yy / 50), 150 + 0 * xx], -1).astype(np.uint8)

# The predictor normally gets the embedding from set_image (the encoder); here we hand it one.
predictor = SamPredictor(sam)
predictor.features, predictor.original_size, predictor.input_size = emb, (H, W), (h_in, w_in)
predictor.is_image_set = True

point = np.array([[500.0, 240.0]])
masks, scores, low_res = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)
print(f"one point, multimask: masks {masks.shape} {masks.dtype}, scores {np.round(scores, 3)}, low-res {low_res.shape}")
single, s_single, _ = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=False)
print(f"one point, single mask (token 0): {single.shape}, score {np.round(s_single, 3)}")
trace = {}
predictor.predict(point_coords=point, point_labels=np.array([1]), trace=trace)
all_iou = trace["mask_decoder.iou_prediction_head"]  # [1, 4], before the [1:] selection
print(f"IoU head, all 4 tokens: {np.round(all_iou, 3)} -> multimask keeps [1:], single keeps [0:1]")


def show(ax, mask, title, pts=None, labels=None):
    ax.imshow(image)
    ax.imshow(np.where(mask[..., None], np.array([[[30, 144, 255, 150]]], np.uint8), 0))
    if pts is not None:
        for (x, y), lab in zip(pts, labels):
            ax.scatter([x], [y], color="green" if lab else "red", marker="*", s=300, edgecolor="white")
    ax.set_title(title)
    ax.axis("off")


fig, axes = plt.subplots(1, 4, figsize=(18, 3.9))
best = int(np.argmax(scores))
for k in range(3):
    show(axes[k], masks[k], f"token {k + 1}: score {scores[k]:.3f}" + ("  (best)" if k == best else ""),
         point, [1])
show(axes[3], single[0], f"token 0 (single): score {s_single[0]:.3f}", point, [1])
fig.suptitle("One point: the three ambiguity-aware masks and the single-mask token (random weights)")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "08_three_masks.png"), dpi=80)
plt.close(fig)

# Several points: not ambiguous, use the single-mask token; feed back the best low-res logits.
pts = np.array([[500.0, 240.0], [300.0, 400.0], [650.0, 100.0]])
labs = np.array([1, 1, 0])
m1, s1, low1 = predictor.predict(point_coords=pts, point_labels=labs, multimask_output=False)
m2, s2, _ = predictor.predict(point_coords=pts, point_labels=labs, mask_input=low1, multimask_output=False)
print(f"3 points, single mask: score {s1[0]:.3f}; again with its own low-res logits as mask_input: {s2[0]:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
show(axes[0], m1[0], f"3 points, token 0: score {s1[0]:.3f}", pts, labs)
show(axes[1], m2[0], f"+ previous logits as mask_input: {s2[0]:.3f}", pts, labs)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "08_single_mask_multi_point.png"), dpi=80)
plt.close(fig)
