"""minisam.training.optim against torch.optim.AdamW, clip_grad_norm_ and LambdaLR.

Tolerance. After every step, params agree with ``torch.optim.AdamW(foreach=False)`` to
``1e-12 * max|p_ref|`` in float64 and ``1e-6 * max|p_ref|`` in float32 (moments to the same
bound relative to their own max). Both sides do the same operations in the same order, so
the only differences are last-ulp ones: torch's CPU kernels fuse ``m + w (g - m)`` (``lerp_``)
and part of ``addcmul_`` into an FMA, and its vectorized ``sqrt`` is not always correctly
rounded. A one-ulp change of an update moves the parameter by one ulp of ``p`` at most (the
Adam update is normalized and does not feed the error back), so after N steps the error is
at most ~N ulps of ``max|p|``: 40 steps give <= ~1e-14 in float64 (eps 2.2e-16) and
<= ~5e-6 worst case, in practice a few ulps ~ 2e-7, in float32 (eps 1.2e-7). The bounds
leave two orders of margin in float64 and several ulps in float32, and are far below what a
real mistake costs (dropping the first bias correction moves the params by ~6e-4 of
max|p| on the very first step).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minisam.training.optim import (SAM_BASE_LR, SAM_DECAY_STEPS, SAM_WARMUP_STEPS, OptimizerInputError,
                                    adamw_init, adamw_step, clip_grad_norm, sam_lr)

N_STEPS = 40
# A short schedule so that warm-up and both decays happen inside N_STEPS.
WARMUP, DECAYS, BASE_LR = 5, (15, 28), 1e-2


def make_params(dtype, seed=0):
    """Nested like a checkpoint: a list of layers, int-keyed children, plain leaves."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    layer = lambda: {"self_attn": {"q_proj": {"weight": r(8, 8), "bias": r(8)}}, "norm1": {"weight": r(8)}}
    return {"mask_decoder": {"transformer": {"layers": [layer(), layer()]},
                             "iou_token": {"weight": r(1, 8)},
                             "output_upscaling": {0: {"weight": r(8, 4, 2, 2), "bias": r(4)}}}}


def flat(tree, prefix=""):
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for k, v in items:
        if isinstance(v, (dict, list)):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def random_grads(params, rng, skip=()):
    """Same layout as params, each leaf with its own scale (1e-3 .. 10); ``skip`` names get None."""
    def walk(tree, prefix):
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        out = {k: (walk(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) else
                   None if f"{prefix}{k}" in skip else
                   (rng.standard_normal(v.shape) * 10.0 ** rng.uniform(-3, 1)).astype(v.dtype))
               for k, v in items}
        return out if isinstance(tree, dict) else [out[i] for i in range(len(tree))]
    return walk(params, "")


def run_against_torch(dtype, betas=(0.9, 0.999), skip_schedule=lambda step: (), no_decay=(), seed=0):
    """N_STEPS of adamw_step vs torch AdamW on copies; returns per-step max relative errors."""
    params = make_params(dtype, seed)
    names = list(flat(params))
    tp = {n: torch.tensor(a.copy(), requires_grad=True) for n, a in flat(params).items()}
    groups = [{"params": [tp[n] for n in names if n not in no_decay]}]
    if no_decay:
        groups.append({"params": [tp[n] for n in names if n in no_decay], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=BASE_LR, betas=betas, eps=1e-8, weight_decay=0.1, foreach=False)
    state = adamw_init(params)
    rng = np.random.default_rng(seed + 1)
    errors, exact = [], True
    for step in range(N_STEPS):
        lr = sam_lr(step, BASE_LR, WARMUP, DECAYS)
        grads = random_grads(params, rng, skip=skip_schedule(step))
        for n, g in flat(grads).items():
            tp[n].grad = None if g is None else torch.tensor(g.copy())
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        adamw_step(params, grads, state, lr, betas=betas, weight_decay=0.1, no_decay=no_decay)
        step_err = 0.0
        for n, p in flat(params).items():
            ref = tp[n].detach().numpy()
            assert p.dtype == ref.dtype
            step_err = max(step_err, np.abs(p - ref).max() / np.abs(ref).max())
            exact &= bool(np.array_equal(p, ref))
            tstate = opt.state.get(tp[n], {})
            if tstate:
                assert state[n]["step"] == int(tstate["step"].item()), n
                for key in ("exp_avg", "exp_avg_sq"):
                    r = tstate[key].numpy()
                    step_err = max(step_err, np.abs(state[n][key] - r).max() / max(np.abs(r).max(), 1e-300))
            else:  # torch never stepped it: ours must be untouched as well
                assert state[n]["step"] == 0 and not state[n]["exp_avg"].any() and not state[n]["exp_avg_sq"].any()
        errors.append(step_err)
    return params, state, errors, exact


TOL = {np.float64: 1e-12, np.float32: 1e-6}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adamw_matches_torch(dtype):
    _, state, errors, _ = run_against_torch(dtype)
    assert max(errors) <= TOL[dtype], f"max rel err per step: {np.array(errors)}"
    first = next(iter(state.values()))
    assert first["exp_avg"].dtype == dtype and first["step"] == N_STEPS


def test_adamw_lerp_large_weight_branch():
    """beta1 < 0.5 sends torch's lerp through its ``end - (end - self)(1 - w)`` form."""
    _, _, errors, _ = run_against_torch(np.float64, betas=(0.3, 0.9))
    assert max(errors) <= TOL[np.float64]


def test_adamw_no_decay_group():
    no_decay = {"mask_decoder.iou_token.weight", "mask_decoder.transformer.layers.1.norm1.weight"}
    _, _, errors, _ = run_against_torch(np.float64, no_decay=no_decay)
    assert max(errors) <= TOL[np.float64]


def test_adamw_missing_grads():
    """One param never has a grad, one only from step 10 on (its own step count and bias correction)."""
    never, late = "mask_decoder.iou_token.weight", "mask_decoder.transformer.layers.0.self_attn.q_proj.bias"
    start = make_params(np.float64)
    params, state, errors, _ = run_against_torch(
        np.float64, skip_schedule=lambda step: {never} | ({late} if step < 10 else set()))
    assert max(errors) <= TOL[np.float64]
    assert np.array_equal(params["mask_decoder"]["iou_token"]["weight"], start["mask_decoder"]["iou_token"]["weight"])
    assert state[never]["step"] == 0 and not state[never]["exp_avg"].any() and not state[never]["exp_avg_sq"].any()
    assert state[late]["step"] == N_STEPS - 10


def test_adamw_absent_subtree_and_bad_grads():
    params = make_params(np.float64)
    before = {n: a.copy() for n, a in flat(params).items()}
    state = adamw_init(params)
    grads = {"mask_decoder": {"iou_token": {"weight": np.ones((1, 8))}}}  # everything else absent
    adamw_step(params, grads, state, lr=1e-3)
    for n, a in flat(params).items():
        assert np.array_equal(a, before[n]) == (n != "mask_decoder.iou_token.weight"), n
    with pytest.raises(OptimizerInputError, match="shape"):
        adamw_step(params, {"mask_decoder": {"iou_token": {"weight": np.ones(8)}}}, state, lr=1e-3)
    with pytest.raises(OptimizerInputError, match="no parameter"):
        adamw_step(params, {"mask_decoder": {"nope": np.ones(8)}}, state, lr=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clips / does not clip
def test_clip_grad_norm_matches_torch(dtype, max_norm):
    rng = np.random.default_rng(3)
    params = make_params(dtype)
    grads = random_grads(params, rng, skip={"mask_decoder.iou_token.weight"})
    tps = []
    for n, g in flat(grads).items():
        t = torch.zeros(flat(params)[n].shape, dtype=torch.float64 if dtype == np.float64 else torch.float32,
                        requires_grad=True)
        t.grad = None if g is None else torch.tensor(g.copy())
        tps.append((n, t))
    ref_norm = torch.nn.utils.clip_grad_norm_([t for _, t in tps], max_norm).item()
    norm = clip_grad_norm(grads, max_norm)
    tol = 1e-14 if dtype == np.float64 else 1e-6
    assert norm.dtype == dtype
    assert abs(float(norm) - ref_norm) <= tol * ref_norm
    assert (ref_norm > max_norm) == (max_norm == 0.5)
    fg = flat(grads)
    for n, t in tps:
        if t.grad is None:
            assert fg[n] is None
        else:
            r = t.grad.numpy()
            assert np.abs(fg[n] - r).max() <= tol * np.abs(r).max(), n
    if max_norm == 0.5:
        after = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in fg.values() if g is not None))
        assert after <= max_norm


def test_clip_grad_norm_empty():
    assert clip_grad_norm({"a": None}, 1.0) == 0.0


def reference_lr(s):
    """The paper's schedule written out piecewise, independently of sam_lr."""
    warm = (s + 1) / 250 if s < 250 else 1.0
    if s < 60000:
        return 8e-4 * warm
    if s < 86666:
        return 8e-5 * warm
    return 8e-6 * warm


def test_sam_lr_paper_boundaries():
    assert (SAM_BASE_LR, SAM_WARMUP_STEPS, SAM_DECAY_STEPS) == (8e-4, 250, (60000, 86666))
    for s in (0, 1, 248, 249, 250, 251, 59999, 60000, 60001, 86665, 86666, 86667, 89999):
        assert sam_lr(s) == pytest.approx(reference_lr(s), rel=1e-15), s
    assert sam_lr(0) == pytest.approx(8e-4 / 250, rel=1e-15)
    assert sam_lr(249) == sam_lr(250) == sam_lr(59999) == 8e-4
    assert sam_lr(5, 1.0, warmup_steps=0) == 1.0
    with pytest.raises(OptimizerInputError):
        sam_lr(-1)


def test_sam_lr_as_lambda_lr():
    """LambdaLR(lambda s: sam_lr(s, 1.0, ...)) gives base_lr * sam_lr(s) to the s-th optimizer step."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=BASE_LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: sam_lr(s, 1.0, WARMUP, DECAYS))
    for s in range(N_STEPS):
        assert opt.param_groups[0]["lr"] == pytest.approx(sam_lr(s, BASE_LR, WARMUP, DECAYS), rel=1e-15), s
        opt.step()  # p.grad is None: a no-op that keeps LambdaLR's step-order check quiet
        sched.step()
