# %% [markdown]
# # Lesson 22: the backward pass in NumPy, and fine-tuning SAM's decoder on new shapes
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
# 3. **Fine-tuning.** ``micro`` was trained on ellipses, polygons, stars, rectangles and rings.
#    We show it a family it has never seen, crosses and crescents, and fine-tune its prompt encoder and
#    mask decoder on 48 such scenes with the image encoder frozen (its embeddings computed once),
#    with the 11-round loop of lesson 15 and AdamW. We then measure the first-click and per-round
#    IoU on 32 held-out scenes before and after. What 120 steps buy is the first click: the
#    model learns where the new shapes end. After 11 rounds of clicks micro was already good on
#    them, and there the change stays within its noise; the check says it does not get worse.
#
# Run:  python lessons/22_finetune_in_numpy.py --out out/22

# %%
import time

import numpy as np

import _lesson

args = _lesson.parse_args("22", "Lesson 22: the backward pass in NumPy, and fine-tuning SAM's decoder on new shapes",
                          extra=lambda p: p.add_argument("--steps", type=int, default=120, help="fine-tuning steps"))

import matplotlib.pyplot as plt  # noqa: E402

from minisam import SamPredictor  # noqa: E402
from minisam.backward.mask_decoder import mask_decoder_backward, mask_decoder_forward  # noqa: E402
from minisam.backward.transformer import attention_backward, attention_forward  # noqa: E402
from minisam.training.decoder_training import TRAINED_PARTS, interactive_rounds  # noqa: E402
from minisam.training.interactive import simulate_interactive  # noqa: E402
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


# %% 3. A new family of shapes ---------------------------------------------------------------
# ``make_unseen_scene``: crosses (two crossing bars) and crescents (a disk minus a shifted disk),
# 1 to 3 per image, on micro's textures. None of them is among the shapes micro was trained on.
S = cfg.img_size
train_scenes, val_scenes = [], []
scene_rng = np.random.default_rng(15)
while len(train_scenes) < 48:
    scene = make_unseen_scene(scene_rng, S)
    if scene.masks:
        train_scenes.append((scene.image, scene.masks))
while len(val_scenes) < 32:
    scene = make_unseen_scene(scene_rng, S)
    if scene.masks:
        val_scenes.append((scene.image, scene.masks))

predictor = SamPredictor(sam)
t0 = time.time()
embeddings = []
for image, _ in train_scenes:
    predictor.set_image(image)
    embeddings.append(predictor.features[0])  # [C, G, G], computed once: the encoder is frozen
embeddings = np.stack(embeddings)  # [48, C, G, G]
print(f"\n{len(train_scenes)} training scenes embedded once in {time.time() - t0:.1f} s")


def evaluate(label):
    """Every validation object, one run of the 11 rounds from a point: IoU per round (the mask
    with the highest predicted IoU, as the predictor returns it)."""
    per_round = []
    for n, (image, masks) in enumerate(val_scenes):
        predictor.set_image(image)
        for j, mask in enumerate(masks):
            records = simulate_interactive(predictor, None, mask, np.random.default_rng(100 * n + j), "point")
            per_round.append([rec.iou for rec in records])
    per_round = np.array(per_round)  # [objects, 11]
    print(f"{label}: {len(per_round)} objects, IoU after 1 click {per_round[:, 0].mean():.3f}, "
          f"after 11 rounds {per_round[:, -1].mean():.3f}")
    return per_round


# A fixed batch of training targets with fixed prompts: its loss before and after training is a
# like-for-like comparison (the loss of each step is measured on a different batch).
probe_targets = np.stack([masks[0] for _, masks in train_scenes[:16]])  # [16, S, S]
probe_owner = np.arange(16)


def probe_loss():
    return interactive_rounds(sam.params, cfg, embeddings[probe_owner], probe_targets, np.random.default_rng(7),
                              "point", S, graded_rounds=4, iou_outputs="all")[0]


probe_before = probe_loss()
before = evaluate("before fine-tuning")
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
print(f"{args.steps} steps in {time.time() - t0:.0f} s ({(time.time() - t0) / args.steps:.2f} s/step, 8 masks, 11 rounds)")
after = evaluate("after fine-tuning")
probe_after = probe_loss()
print(f"loss on a fixed batch of 16 training targets: {probe_before:.4f} before, {probe_after:.4f} after")

# %% Figure ----------------------------------------------------------------------------------
fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
ax = axes[0]
ax.plot(losses, color="0.6", lw=1, label="per step")
window = min(10, len(losses))
smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
ax.plot(np.arange(window - 1, len(losses)), smooth, color="C0", lw=2, label=f"mean of {window}")
ax.plot([0, len(losses) - 1], [probe_before, probe_after], "ks--", label="fixed batch of 16 targets")
ax.set(title="training loss (each step: a new batch of 8)", xlabel="step", ylabel="loss")
ax.legend()
ax = axes[1]
rounds = np.arange(1, before.shape[1] + 1)
ax.plot(rounds, before.mean(0), "o-", color="C3", label="before")
ax.plot(rounds, after.mean(0), "o-", color="C2", label="after")
ax.set(title=f"held-out IoU per round ({len(before)} objects)", xlabel="round", ylabel="mean IoU", xticks=rounds)
ax.legend()
ax = axes[2]
image, masks = val_scenes[0]
ax.imshow(image)
ax.contour(masks[0], levels=[0.5], colors="white", linewidths=1.5)
ax.set(title="a held-out scene: crosses and crescents (white: one target)")
ax.axis("off")
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
    # Paired over the same held-out objects from the same first click: a gain counts when it
    # exceeds twice its standard error (the spread of the per-object differences / sqrt(objects)).
    diff = after[:, 0] - before[:, 0]
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    _lesson.claim(diff.mean() > 2 * se, f"fine-tuning raises the held-out IoU after one click by {diff.mean():+.3f} "
                  f"({before[:, 0].mean():.3f} -> {after[:, 0].mean():.3f}), more than twice its standard error "
                  f"{se:.3f}")
    diff = after[:, -1] - before[:, -1]
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    _lesson.claim(diff.mean() > -2 * se, f"after 11 rounds, where micro was already at {before[:, -1].mean():.3f}, "
                  f"it does not get worse: {diff.mean():+.3f}, standard error {se:.3f}")
