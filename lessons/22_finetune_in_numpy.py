# %% [markdown]
# # Lesson 22: the backward pass in NumPy, and fine-tuning SAM's decoder on close-ups of new shapes
#
# Paper: Kirillov et al. 2023, section 3 ("Losses and training") and appendix A ("Training
# algorithm"). Code: minisam/backward/ (one backward beside each forward),
# minisam/training/decoder_training.py (the 11 rounds with gradients), minisam/training/optim.py
# (AdamW). Deck: "Training Algorithm".
#
# Lesson 15 ran the training algorithm's forward half. This one finishes it: the gradient of the
# loss with respect to every weight of the prompt encoder and the mask decoder, computed by hand,
# layer by layer, and a weight update. Nothing here needs torch; the test suite checks the same
# backward against torch autograd (``tests/test_backward.py``), and this lesson checks it the
# way one checks a derivation on paper: against finite differences.
#
# 1. **One layer.** Each layer's forward returns its output and a *cache* (what its backward
#    needs: the inputs of its matrix products, the softmax weights). Its backward takes dL/dy,
#    the gradient of the loss with respect to its output, and returns the gradients of its inputs
#    and weights: the chain rule, applied once. For the decoder's attention with S = q k^T / sqrt(d),
#    P = softmax(S), O = P V: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)),
#    dQ = dS K / sqrt(d), dK = dS^T Q / sqrt(d). We check it against central differences
#    (L(w + h) - L(w - h)) / 2h, in float64.
# 2. **The whole decoder.** The same check on single weights deep inside the mask decoder,
#    through the two-way transformer, the upscaling and the hypernetworks.
# 3. **Fine-tuning where the model is weak.** ``micro`` was trained on ellipses, polygons, stars,
#    rectangles and rings, each at most about half the image across. Crosses and crescents are
#    kinds it never saw (lesson 03), but a new kind is not necessarily where a model fails; a new
#    scale can be. We draw the same crosses and crescents twice as large and keep the centre of
#    the image, a close-up (objects from half the image to nearly all of it across, some cut by
#    the border), and measure first, on the same held-out objects at both sizes: micro's first
#    click is worse on the close-ups. We then fine-tune its prompt encoder and mask decoder on 48
#    close-up scenes with the image encoder frozen (its embeddings computed once), with the
#    11-round loop of lesson 15 and AdamW, 40 steps of up to 8 masks. The measure is the IoU
#    after one click (a random pixel of the object, the mask with the highest predicted IoU),
#    4 clicks per object on 32 held-out scenes, the same clicks before and after; a change counts
#    when it exceeds twice the standard error (SE) of the per-object differences. The first click
#    on close-ups gains; the checks say the usual size does not get worse, and measure what the
#    11th round, already high before, gives up: a little, at most a tenth of that gain.
#
# Run:  python lessons/22_finetune_in_numpy.py --out out/22

# %%
import time

import numpy as np

import _lesson

args = _lesson.parse_args("22", "Lesson 22: the backward pass in NumPy, and fine-tuning SAM's decoder on new shapes",
                          extra=lambda p: p.add_argument("--steps", type=int, default=40, help="fine-tuning steps"))

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.backward.mask_decoder import mask_decoder_backward, mask_decoder_forward  # noqa: E402
from minisam.backward.transformer import attention_backward, attention_forward  # noqa: E402
from minisam.modeling.common import mask_iou  # noqa: E402
from minisam.training.decoder_training import TRAINED_PARTS, interactive_rounds  # noqa: E402
from minisam.training.interactive import sample_foreground_point, simulate_interactive  # noqa: E402
from minisam.training.optim import adamw_init, adamw_step, clip_grad_norm  # noqa: E402
from minisam.training.shapes import make_unseen_scene  # noqa: E402

rng = np.random.default_rng(0)

# %% 1. One layer's backward against finite differences --------------------------------------
# A decoder attention with C = 8, internal width 4 (downsample rate 2), 2 heads, in float64.
C, Ci, heads = 8, 4, 2
att = {name: {"weight": rng.standard_normal(shape), "bias": rng.standard_normal(shape[0])}
       for name, shape in (("q_proj", (Ci, C)), ("k_proj", (Ci, C)), ("v_proj", (Ci, C)), ("out_proj", (C, Ci)))}
q, k, v = rng.standard_normal((1, 3, C)), rng.standard_normal((1, 5, C)), rng.standard_normal((1, 5, C))
r = rng.standard_normal((1, 3, C))  # the loss L = sum(out * r), so dL/dout = r


def attention_loss():
    return float((attention_forward(att, q, k, v, heads)[0] * r).sum())


out, cache = attention_forward(att, q, k, v, heads)  # [1, 3, C]
dq, dk, dv, grads = attention_backward(r, cache)  # [1, 3, C], [1, 5, C], [1, 5, C], weight grads


def numeric(array, index, loss, h=1e-6):
    """Central difference of ``loss`` in one element of ``array`` (changed in place, restored)."""
    old = array[index]
    array[index] = old + h
    up = loss()
    array[index] = old - h
    down = loss()
    array[index] = old
    return (up - down) / (2 * h)


checks = []  # (what, analytic, numeric)
for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
    for _ in range(3):
        idx = tuple(rng.integers(0, s) for s in att[name]["weight"].shape)
        checks.append((f"{name}.weight{list(idx)}", grads[name]["weight"][idx],
                       numeric(att[name]["weight"], idx, attention_loss)))
for label, x, g in (("q", q, dq), ("k", k, dk), ("v", v, dv)):
    idx = tuple(rng.integers(0, s) for s in x.shape)
    checks.append((f"input {label}{list(idx)}", g[idx], numeric(x, idx, attention_loss)))
attention_err = max(abs(a - n) / max(abs(n), 1e-3) for _, a, n in checks)
print("attention backward vs central differences (h = 1e-6, float64):")
for what, a, n in checks[::3]:
    print(f"  {what:<26s} analytic {a:+.9f}  numeric {n:+.9f}")
print(f"  worst relative difference over {len(checks)} checks: {attention_err:.2e}")

# %% 2. The whole decoder --------------------------------------------------------------------
sam = _lesson.load_model(args)
cfg = sam.config
decoder64 = {}


def to64(tree):
    return {key: to64(val) if isinstance(val, dict) else np.asarray(val, np.float64) for key, val in tree.items()}


decoder64 = to64(sam.params["mask_decoder"])
G, Cd = cfg.image_embedding_size, cfg.prompt_embed_dim
emb = rng.standard_normal((1, Cd, G, G))
pe = rng.standard_normal((1, Cd, G, G))
sparse, dense = rng.standard_normal((1, 3, Cd)), rng.standard_normal((1, Cd, G, G))
r_masks = rng.standard_normal((1, 3, 4 * G, 4 * G))
r_iou = rng.standard_normal((1, 3))


def decoder_loss():
    (m, i), _ = mask_decoder_forward(decoder64, cfg, emb, pe, sparse, dense, True)
    return float((m * r_masks).sum() + (i * r_iou).sum())


_, dcache = mask_decoder_forward(decoder64, cfg, emb, pe, sparse, dense, True)
_, _, _, _, dgrads = mask_decoder_backward(r_masks, r_iou, dcache)
deep = [("transformer", "layers", 0, "self_attn", "q_proj", "weight"),
        ("transformer", "layers", 1, "cross_attn_image_to_token", "v_proj", "weight"),
        ("transformer", "layers", 1, "norm3", "weight"),
        ("output_upscaling", 0, "weight"), ("output_upscaling", 1, "bias"),
        ("output_hypernetworks_mlps", 2, "layers", 0, "weight"), ("iou_prediction_head", "layers", 1, "weight"),
        ("mask_tokens", "weight")]
decoder_checks = []
for path in deep:
    array, grad = decoder64, dgrads
    for key in path:
        array, grad = array[key], grad[key]
    idx = np.unravel_index(np.abs(grad).argmax(), grad.shape)  # the element with the largest gradient
    decoder_checks.append((".".join(map(str, path)), grad[idx], numeric(array, idx, decoder_loss)))
decoder_err = max(abs(a - n) / max(abs(n), 1e-3) for _, a, n in decoder_checks)
print("\nmask decoder backward vs central differences:")
for what, a, n in decoder_checks:
    print(f"  {what:<58s} analytic {a:+.6f}  numeric {n:+.6f}")
print(f"  worst relative difference: {decoder_err:.2e}")


# %% 3. Where micro is weak: crosses and crescents seen close up ----------------------------
# ``make_unseen_scene``: crosses (two crossing bars) and crescents (a disk minus a shifted disk),
# 1 to 3 per image, drawn on micro's fills; micro never saw either kind. Its random draws do not
# depend on the image size, so one seed drawn at ZOOM times the size is the same scene, larger;
# its centre S x S is a close-up: the same objects, ZOOM times larger, some cut by the border.
S = cfg.img_size
ZOOM, CLICKS, MIN_AREA = 2, 4, 60


def crosses_and_crescents(seed, zoom):
    """One scene drawn ``zoom`` times larger than S and cut to its centre S x S. -> image
    [S, S, 3] uint8, every object's mask [S, S] bool (the same objects, in the same order, at
    every zoom)."""
    scene = make_unseen_scene(np.random.default_rng(seed), S, min_area=0, zoom=zoom)
    return scene.image, scene.masks


# Training: close-ups only. Held out: other seeds, each at both sizes, and only the objects
# visible at both (at least MIN_AREA pixels), so that each object is compared with itself.
train_scenes, val_scenes, usual_scenes = [], [], []
seed = 1000
while len(train_scenes) < 48:
    image, masks = crosses_and_crescents(seed, ZOOM)
    masks = [m for m in masks if m.sum() >= MIN_AREA]
    if masks:
        train_scenes.append((image, masks))
    seed += 1
seed = 0
while len(val_scenes) < 32:
    (usual_image, usual_masks), (image, masks) = crosses_and_crescents(seed, 1), crosses_and_crescents(seed, ZOOM)
    keep = [j for j in range(len(masks)) if usual_masks[j].sum() >= MIN_AREA and masks[j].sum() >= MIN_AREA]
    if keep:
        usual_scenes.append((usual_image, [usual_masks[j] for j in keep]))
        val_scenes.append((image, [masks[j] for j in keep]))
    seed += 1

predictor = SamPredictor(sam)
t0 = time.time()


def embed(scenes):
    features = []
    for image, _ in scenes:
        predictor.set_image(image)
        features.append(predictor.features[0])  # [C, G, G]
    return np.stack(features)  # [N, C, G, G]


# The encoder is frozen: each image's embedding is computed once, and the evaluations hand the
# stored one to the predictor (``predictor.features``, all images being S x S) instead of
# calling set_image again.
embeddings, val_embeddings, usual_embeddings = embed(train_scenes), embed(val_scenes), embed(usual_scenes)
print(f"\n{len(train_scenes) + len(val_scenes) + len(usual_scenes)} scenes embedded once in {time.time() - t0:.1f} s")


def first_click(scenes, scene_embeddings):
    """CLICKS random pixels of every object (the same ones before and after training), one click
    each, and the mask with the highest predicted IoU, as the predictor returns it. -> IoU
    [objects, CLICKS], the clicks [objects, CLICKS, 2] (x, y) and their masks [objects, CLICKS, S, S]."""
    ious, points, top_masks = [], [], []
    for n, (_, masks) in enumerate(scenes):
        predictor.features = scene_embeddings[n][None]  # [1, C, G, G]
        click_rng = np.random.default_rng(100 + n)
        for mask in masks:
            clicks = np.stack([sample_foreground_point(mask, click_rng)
                               for _ in range(CLICKS)])[:, None]  # [CLICKS, 1, 2] (x, y)
            out, scores, _ = predictor.predict_batch(point_coords=clicks,
                                                     point_labels=np.ones((CLICKS, 1), int))  # [CLICKS, 3, S, S]
            top = out[np.arange(CLICKS), scores.argmax(1)]  # [CLICKS, S, S]
            ious.append(mask_iou(top, mask[None]))  # [CLICKS]
            points.append(clicks[:, 0])  # [CLICKS, 2]
            top_masks.append(top)
    return np.array(ious), np.stack(points), np.stack(top_masks)


def rounds(scenes, scene_embeddings):
    """Every object, one run of the 11 rounds from a point: IoU per round [objects, 11]."""
    per_round = []
    for n, (_, masks) in enumerate(scenes):
        predictor.features = scene_embeddings[n][None]  # [1, C, G, G]
        for j, mask in enumerate(masks):
            records = simulate_interactive(predictor, None, mask, np.random.default_rng(100 * n + j), "point")
            per_round.append([rec.iou for rec in records])
    return np.array(per_round)  # [objects, 11]


# (scene index, mask) of every held-out close-up object, in the order of first_click and rounds
val_objects = [(n, mask) for n, (_, masks) in enumerate(val_scenes) for mask in masks]


def mean_se(x):
    return x.mean(), x.std(ddof=1) / np.sqrt(len(x))


def measure(label):
    usual = first_click(usual_scenes, usual_embeddings)[0].mean(1)  # [objects], the mean over its clicks
    close_clicks, points, masks = first_click(val_scenes, val_embeddings)  # [objects, CLICKS], [.., 2], [.., S, S]
    close = close_clicks.mean(1)  # [objects]
    per_round = rounds(val_scenes, val_embeddings)  # [objects, 11]
    print(f"{label}: IoU after 1 click, usual size {usual.mean():.3f} ({len(usual)} objects), "
          f"close-up {close.mean():.3f} ({len(close)} objects); close-up after 11 rounds {per_round[:, -1].mean():.3f}")
    return usual, close, close_clicks, points, masks, per_round


# A fixed batch of training targets with fixed prompts: its loss before and after training is a
# like-for-like comparison (the loss of each step is measured on a different batch).
probe_targets = np.stack([masks[0] for _, masks in train_scenes[:16]])  # [16, S, S]
probe_owner = np.arange(16)


def probe_loss():
    return interactive_rounds(sam.params, cfg, embeddings[probe_owner], probe_targets, np.random.default_rng(7),
                              "point", S, graded_rounds=4, iou_outputs="all")[0]


probe_before = probe_loss()
usual_before, before, clicks_before, points, masks_before, rounds_before = measure("before fine-tuning")

# %% 4. Fine-tuning on the close-ups ---------------------------------------------------------
params = sam.params  # the model's own tree: the predictor sees every update


def writable_copy(tree):
    return {key: writable_copy(val) if isinstance(val, dict) else np.array(val) for key, val in tree.items()}


for part in TRAINED_PARTS:
    params[part] = writable_copy(params[part])  # AdamW updates in place; loaded weights may be read-only views
trained = {part: params[part] for part in TRAINED_PARTS}
state = adamw_init(trained)
train_rng = np.random.default_rng(1)
losses = []
t0 = time.time()
for step in range(args.steps):
    picks = train_rng.choice(len(train_scenes), 4, replace=False)
    owner, targets = [], []
    for i in picks:
        masks = train_scenes[i][1]
        for j in train_rng.choice(len(masks), min(2, len(masks)), replace=False):
            owner.append(i)
            targets.append(masks[j])
    first = "box" if train_rng.random() < 0.5 else "point"
    loss, grads = interactive_rounds(params, cfg, embeddings[owner], np.stack(targets), train_rng, first, S,
                                     graded_rounds=4, iou_outputs="all")
    clip_grad_norm(grads, 1.0)
    lr = 1e-4 * min(1.0, (step + 1) / 10)  # 10 steps of linear warm-up, then constant
    adamw_step(trained, grads, state, lr=lr, weight_decay=0.1)
    losses.append(loss)
    if step % 10 == 0 or step == args.steps - 1:
        print(f"  step {step:3d}: loss {loss:.4f}")
print(f"{args.steps} steps in {time.time() - t0:.0f} s ({(time.time() - t0) / args.steps:.2f} s/step, "
      f"up to 8 masks, 11 rounds)")
usual_after, after, clicks_after, _, masks_after, rounds_after = measure("after fine-tuning")
probe_after = probe_loss()
print(f"loss on a fixed batch of 16 training targets: {probe_before:.4f} before, {probe_after:.4f} after")

# Paired over the same held-out objects and clicks: a change counts when it exceeds twice its
# standard error (the spread of the per-object differences / sqrt(objects)).
gain, gain_se = mean_se(after - before)
usual_change, usual_se = mean_se(usual_after - usual_before)
last_change, last_se = mean_se(rounds_after[:, -1] - rounds_before[:, -1])
gap, gap_se = mean_se(usual_before - before)  # before training: each object at its usual size against its close-up
print(f"first click, close-up: {gain:+.3f} (standard error {gain_se:.3f}); usual size: {usual_change:+.3f} "
      f"({usual_se:.3f}); close-up after 11 rounds: {last_change:+.3f} ({last_se:.3f})")

# %% Figure ----------------------------------------------------------------------------------
with plt.rc_context({"font.size": 11}):
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.4))
    ax = axes[0, 0]
    bars = np.arange(2)
    for shift, values, colour, label in ((-0.2, (usual_before, before), "C3", "before"),
                                         (0.2, (usual_after, after), "C2", "after")):
        heights = [v.mean() for v in values]
        ax.bar(bars + shift, heights, 0.4, yerr=[mean_se(v)[1] for v in values], capsize=4, color=colour, label=label)
        for x, h in zip(bars + shift, heights):
            ax.text(x, h / 2, f"{h:.2f}", ha="center", va="center", color="white", weight="bold")
    ax.set(xticks=bars, xticklabels=["usual size", f"{ZOOM}x close-up"], ylabel="mean IoU after 1 click",
           ylim=(0, 1), title=f"1 click on close-ups: {before.mean():.2f} -> {after.mean():.2f}, {gain:+.3f}\n"
                              f"(SE {gain_se:.3f}); usual size {usual_change:+.3f} (SE {usual_se:.3f})")
    ax.legend(loc="upper right")
    ax = axes[0, 1]
    k, c = np.unravel_index(np.argmax(clicks_after - clicks_before), clicks_before.shape)  # the click that gains most
    scene_index, target = val_objects[k]
    ax.imshow(val_scenes[scene_index][0])
    ax.contour(target, levels=[0.5], colors="white", linewidths=2)
    ax.contour(masks_before[k, c], levels=[0.5], colors="C3", linewidths=2)
    ax.contour(masks_after[k, c], levels=[0.5], colors="C2", linewidths=2)
    ax.plot(*points[k, c], "*", color="yellow", markersize=16, markeredgecolor="black")
    ax.set_title(f"largest gain of {clicks_before.size} held-out clicks:\nIoU {clicks_before[k, c]:.2f} (red) -> "
                 f"{clicks_after[k, c]:.2f} (green), target white")
    ax.axis("off")
    ax = axes[1, 0]
    ax.plot(losses, color="0.6", lw=1, label="per step")
    window = min(10, len(losses))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window - 1, len(losses)), smooth, color="C0", lw=2, label=f"mean of {window}")
    ax.plot([0, len(losses) - 1], [probe_before, probe_after], "ks--", label="fixed batch")
    ax.set(title=f"loss on a fixed batch of 16 targets:\n{probe_before:.3f} -> {probe_after:.3f}", xlabel="step",
           ylabel="loss")
    ax.legend()
    ax = axes[1, 1]
    round_numbers = np.arange(1, rounds_before.shape[1] + 1)
    ax.plot(round_numbers, rounds_before.mean(0), "o-", color="C3", label="before")
    ax.plot(round_numbers, rounds_after.mean(0), "o-", color="C2", label="after")
    ax.set(title=f"close-ups, 11 rounds: round 11 {rounds_before[:, -1].mean():.2f} -> "
                 f"{rounds_after[:, -1].mean():.2f},\n{last_change:+.3f} (SE {last_se:.3f})",
           xlabel="round", ylabel="mean IoU", xticks=round_numbers)
    ax.legend()
    fig.tight_layout()
    _lesson.save(fig, args, "22_finetune.png")

# %% Checked claims --------------------------------------------------------------------------
_lesson.claim(attention_err < 1e-6, f"the attention's analytic gradients match central differences to "
              f"{attention_err:.1e} relative (float64, h = 1e-6)")
_lesson.claim(decoder_err < 1e-5, f"gradients deep in the mask decoder match central differences to "
              f"{decoder_err:.1e} relative")
if args.checkpoint is None and args.model == "micro":
    _lesson.claim(probe_after < probe_before, f"training lowers the loss on a fixed batch of training targets "
                  f"({probe_before:.3f} -> {probe_after:.3f})")
    _lesson.claim(gap > 2 * gap_se, f"before fine-tuning, micro's first click is worse on {ZOOM}x close-ups of "
                  f"crosses and crescents than on the same objects at their usual size: IoU {before.mean():.3f} "
                  f"against {usual_before.mean():.3f}, a gap of {gap:.3f}, more than twice its standard error "
                  f"{gap_se:.3f}")
    _lesson.claim(gain > 2 * gain_se, f"fine-tuning on close-ups raises the held-out close-up IoU after one click by "
                  f"{gain:+.3f} ({before.mean():.3f} -> {after.mean():.3f}), more than twice its standard error "
                  f"{gain_se:.3f}")
    _lesson.claim(abs(last_change) <= 0.1 * gain, f"after 11 rounds, where micro was at {rounds_before[:, -1].mean():.3f} "
                  f"on the close-ups, it changes by {last_change:+.3f} (standard error {last_se:.3f}), at most a tenth "
                  f"of the first click's gain {gain:+.3f}")
    _lesson.claim(usual_change > -2 * usual_se, f"at the usual size, trained on close-ups only, it does not get "
                  f"worse either: {usual_change:+.3f} after one click, standard error {usual_se:.3f}")
