"""SAM's optimizer in NumPy: AdamW, global-norm gradient clipping, and the paper's lr schedule.

Paper: Kirillov et al. 2023, "Segment Anything", appendix A ("Training algorithm", under
"Optimization"): "We use AdamW (beta1 = 0.9, beta2 = 0.999) and a linear learning rate warmup
for 250 iterations and a step-wise learning rate decay schedule. The initial learning rate
(lr), after warmup, is 8e-4. We train for 90k iterations ... and decrease the lr by a factor
of 10 at 60k iterations and again at 86666 iterations ... weight decay (wd) of 0.1".

The official SAM repository has no training code. These functions mirror:
- ``torch.optim.AdamW`` (``torch/optim/adam.py`` ``_single_tensor_adam`` with
  ``decoupled_weight_decay=True``, i.e. ``foreach=False``, ``amsgrad=False``,
  ``maximize=False``), operation for operation, in the parameters' own dtype;
- ``torch.nn.utils.clip_grad_norm_`` with ``norm_type=2``;
- the paper's schedule as a plain function of the step, usable as the lambda of
  ``torch.optim.lr_scheduler.LambdaLR`` (with ``base_lr=1``).

Parameters, gradients and optimizer state are keyed like the checkpoint. ``params`` is a nested
dict (``int`` keys or lists for module lists, see :mod:`minisam.checkpoints.param_tree`) of
ndarrays, e.g. ``p["mask_decoder"]["transformer"]["layers"][0]["self_attn"]["q_proj"]["weight"]``;
``grads`` has the same layout, and a gradient that is absent or ``None`` marks a parameter that
takes no part in this step, as torch skips a parameter whose ``.grad`` is ``None``. The state is
flat, one entry per dotted name, like ``torch.optim.Optimizer.state``.

Exactness against torch (measured in ``tests/test_optim.py``): every operation follows torch's
order and rounds its scalars to the parameter dtype where torch's kernels do. Two things keep
the result from being bit-identical on CPU: torch's vectorized kernels fuse ``a + b * c`` into
one FMA (``lerp_`` always, ``addcmul_`` where the compiler contracted it), which NumPy has no
primitive for, and torch's vectorized ``sqrt`` is faithfully but not always correctly rounded
(1 ulp low in ~0.75 % of the elements here). Both are one-ulp effects per step; parameters
agree to ~2 ulps of ``max|p|`` (5e-16 in float64, 3e-7 in float32) after 40 steps. As a check
of the order of operations: with those two ``a + b * c`` computed as a correctly rounded FMA
(and, in float64, torch's own ``sqrt``) the same 40 steps come out bit-identical to torch in
both dtypes. That emulation is left out here: it costs ~20 extra array operations in float64,
and which ``addcmul_`` gets contracted depends on how torch was compiled.
"""

from __future__ import annotations

from typing import Any, Collection, Dict, Iterator, Mapping, Sequence, Tuple

import numpy as np

from minisam.errors import MinisamError

#: Paper values (appendix A): AdamW betas, weight decay, lr after warm-up.
SAM_BETAS = (0.9, 0.999)
SAM_WEIGHT_DECAY = 0.1
SAM_BASE_LR = 8e-4
#: Paper schedule: 250 warm-up iterations, lr / 10 at 60k and again at 86666, 90k in total.
SAM_WARMUP_STEPS = 250
SAM_DECAY_STEPS = (60000, 86666)
SAM_TOTAL_STEPS = 90000

State = Dict[str, Dict[str, Any]]


class OptimizerInputError(MinisamError, ValueError):
    """Gradients or state that do not fit the parameters (unknown name, shape mismatch)."""


def _leaves(tree: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``(dotted_name, leaf)`` for every leaf of nested dicts / lists, named as ``param_tree.flatten``.

    ``param_tree.flatten`` walks mappings only; this also walks lists and tuples (a module
    list written as a Python list) and yields ``None`` leaves, which mark a missing grad.
    """
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        yield prefix[:-1], tree
        return
    for k, v in items:
        yield from _leaves(v, f"{prefix}{k}.")


def _named_params(params) -> Dict[str, np.ndarray]:
    named = {}
    for name, p in _leaves(params):
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
            raise OptimizerInputError(f"parameter {name!r} must be a float ndarray, got {type(p).__name__}"
                                      f"{'' if not isinstance(p, np.ndarray) else ' of ' + str(p.dtype)}")
        named[name] = p
    return named


def _named_grads(grads, named_params: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Flat ``name -> grad`` without the ``None`` leaves, each in its parameter's dtype and shape."""
    named = {}
    for name, g in _leaves(grads):
        if g is None:
            continue
        if name not in named_params:
            raise OptimizerInputError(f"gradient {name!r} has no parameter of that name")
        p = named_params[name]
        g = np.asarray(g)
        if g.shape != p.shape:
            raise OptimizerInputError(f"gradient {name!r} has shape {g.shape}, its parameter {p.shape}")
        named[name] = g.astype(p.dtype, copy=False)
    return named


def adamw_init(params) -> State:
    """Zero AdamW state for every parameter: ``{name: {"step", "exp_avg", "exp_avg_sq"}}``.

    Torch creates a parameter's state lazily, on its first step with a gradient; creating it
    here with ``step = 0`` and zero moments is the same thing, since that first step starts
    from exactly these values. ``step`` is per parameter, as in torch: a parameter that skips
    steps (no grad) has its own, smaller bias correction afterwards. Moments are in the
    parameter's dtype. Names are the flat checkpoint names (``"a.0.b"``).
    """
    return {name: {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
            for name, p in _named_params(params).items()}


def adamw_step(params, grads, state: State, lr: float, betas: Tuple[float, float] = SAM_BETAS,
               eps: float = 1e-8, weight_decay: float = SAM_WEIGHT_DECAY,
               no_decay: Collection[str] = ()) -> None:
    """One ``torch.optim.AdamW`` step, in place on ``params`` and ``state``.

    For every parameter ``p`` with a gradient ``g`` (same shape, any shape), with
    ``t = step + 1``, ``b1, b2 = betas``, in torch's order (``_single_tensor_adam``)::

        p   <- p * (1 - lr * wd)                      # decoupled decay, before the moments
        m   <- lerp(m, g, 1 - b1)  = m + (1 - b1) (g - m)
        v   <- v * b2 + ((1 - b2) g) g
        bc1 = 1 - b1 ** t ;  bc2 = 1 - b2 ** t        # Python floats (double)
        p   <- p + (-(lr / bc1) m) / (sqrt(v) / bc2 ** 0.5 + eps)

    i.e. ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / bc1``,
    ``v_hat = v / bc2``, but written as torch writes it: the bias corrections fold into the
    scalar step size and into the denominator, so ``eps`` is added to ``sqrt(v_hat)``, not to
    ``sqrt(v)``. The scalars ``1 - lr * wd``, ``1 - b1``, ``b2``, ``1 - b2``, ``bc2 ** 0.5``,
    ``eps`` and ``-lr / bc1`` are computed in double and rounded to the parameter dtype, as
    torch's CPU kernels do with a Python-scalar operand. ``lerp`` uses torch's other form
    ``g - (g - m) b1`` when ``1 - b1 >= 0.5``.

    A parameter whose gradient is absent or ``None`` is left alone: no decay, no moment
    update, no step count, as torch skips a parameter whose ``.grad`` is ``None``. Names in
    ``no_decay`` (flat dotted names, e.g. ``"mask_decoder.iou_token.weight"``) get no weight
    decay, as a separate torch param group with ``weight_decay=0`` would.
    """
    named_params = _named_params(params)
    named_grads = _named_grads(grads, named_params)
    beta1, beta2 = float(betas[0]), float(betas[1])
    lr = float(lr)
    for name, g in named_grads.items():
        p = named_params[name]
        if name not in state:
            raise OptimizerInputError(f"no AdamW state for parameter {name!r}; build it with adamw_init")
        st = state[name]
        m, v = st["exp_avg"], st["exp_avg_sq"]  # both shaped like p, in p's dtype
        dt = p.dtype.type
        st["step"] += 1
        t = st["step"]

        wd = 0.0 if name in no_decay else float(weight_decay)
        if wd != 0.0:
            p *= dt(1.0 - lr * wd)

        w = 1.0 - beta1
        if abs(w) < 0.5:  # torch's lerp picks the form that is exact at its own end
            m += dt(w) * (g - m)
        else:  # torch: g + (w - 1) (g - m), w rounded to the dtype first
            m[...] = g + (dt(w) - dt(1.0)) * (g - m)

        v *= dt(beta2)
        v += dt(1.0 - beta2) * g * g  # (value * g) * g, torch's addcmul order

        bias_correction1 = 1.0 - beta1 ** t
        bias_correction2 = 1.0 - beta2 ** t
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5  # ** 0.5, not math.sqrt: torch's spelling

        denom = np.sqrt(v) / dt(bias_correction2_sqrt)
        denom += dt(eps)
        p += dt(-step_size) * m / denom  # addcdiv: (value * m) / denom


def clip_grad_norm(grads, max_norm: float) -> np.floating:
    """Scale ``grads`` in place to global L2 norm at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (``norm_type=2``): the norm of
    the per-tensor L2 norms (= the L2 norm of all gradients concatenated, computed in two
    stages as torch does), then every gradient is multiplied by

        clip_coef = min(max_norm / (total_norm + 1e-6), 1)

    always, also when the coefficient is 1 (torch does so to avoid a device sync). The
    ``1e-6`` keeps the norm after clipping just below ``max_norm``. ``None`` leaves are
    skipped; no gradients at all gives norm 0. Returns a NumPy scalar in the gradients' dtype.
    """
    named = [(name, g) for name, g in _leaves(grads) if g is not None]
    if not named:
        return np.float32(0.0)  # torch.tensor(0.0)
    for name, g in named:
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise OptimizerInputError(f"gradient {name!r} must be a float ndarray to clip in place")
    dtype = np.result_type(*[g.dtype for _, g in named])
    norms = np.array([np.linalg.norm(g.ravel()) for _, g in named], dtype=dtype)  # [n_tensors]
    total_norm = np.linalg.norm(norms)
    # Tensor.__rtruediv__ is reciprocal(x) * scalar, so torch's max_norm / (norm + 1e-6) is:
    clip_coef = min(dtype.type(1.0) / (total_norm + dtype.type(1e-6)) * dtype.type(max_norm), dtype.type(1.0))
    for _, g in named:
        g *= g.dtype.type(clip_coef)
    return total_norm


def sam_lr(step: int, base_lr: float = SAM_BASE_LR, warmup_steps: int = SAM_WARMUP_STEPS,
           decay_steps: Sequence[int] = SAM_DECAY_STEPS, decay_factor: float = 0.1) -> float:
    """The learning rate for 0-based step ``step`` (the lr used by that step's update).

    Formula, with ``W = warmup_steps`` and ``D = decay_steps``::

        lr(s) = base_lr * min(1, (s + 1) / W) * decay_factor ** #{d in D : s >= d}

    (no warm-up factor when ``W == 0``). Step ``s`` is the ``(s + 1)``-th update, so the
    warm-up ramps linearly from ``base_lr / W`` at step 0 to ``base_lr`` at step ``W - 1``,
    the last warm-up step (no step is wasted at lr 0), and a decay at iteration ``d`` applies
    from step ``d`` on, i.e. after ``d`` updates at the previous rate. This is the convention
    of ``torch.optim.lr_scheduler.LambdaLR(opt, lambda s: sam_lr(s, 1.0, ...))`` with
    ``scheduler.step()`` after every ``optimizer.step()``: the first update runs at
    ``lambda(0)``.

    Defaults are the paper's (appendix A): ``base_lr = 8e-4``, ``W = 250``, decay by 10 at
    60000 and 86666 of 90000 iterations. The paper does not say whether warm-up starts at 0 or
    at ``base_lr / W``; this picks the latter.
    """
    step = int(step)
    if step < 0:
        raise OptimizerInputError(f"step must be >= 0, got {step}")
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    n_decays = sum(1 for d in decay_steps if step >= d)
    return base_lr * factor * decay_factor ** n_decays
