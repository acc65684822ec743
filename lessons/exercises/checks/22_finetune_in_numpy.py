"""Checks for lesson 22's exercises: finite differences, minisam/backward and minisam/training/optim.py."""

import numpy as np
from _common import close

from minisam.backward.common import layer_norm_backward, layer_norm_forward
from minisam.training.optim import adamw_init, adamw_step


def finite_differences(loss, x, h=1e-6):
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (loss(up) - loss(down)) / (2 * h)
    return fd


def check_layer_norm(m):
    rng = np.random.default_rng(0)
    x = rng.normal(1, 2, (3, 4, 6))
    weight, bias = rng.normal(size=6), rng.normal(size=6)
    dy = rng.normal(size=x.shape)
    dx, dw, db = m.layer_norm_backward(dy, x, weight)
    y, cache = layer_norm_forward(x, weight, bias, 1e-5)
    ref_dx, ref_grads = layer_norm_backward(dy, cache)

    def loss(z, w=weight, b=bias):
        return float((layer_norm_forward(z, w, b, 1e-5)[0] * dy).sum())

    close(dx, finite_differences(loss, x), "dx vs finite differences", rtol=1e-5, atol=1e-7)
    close(dx, ref_dx, "dx vs minisam", rtol=1e-9, atol=1e-12)
    close(dw, ref_grads["weight"], "dweight", rtol=1e-9, atol=1e-12)
    close(db, ref_grads["bias"], "dbias", rtol=1e-9, atol=1e-12)


def check_attention(m):
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(4, 3)), rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    d_out = rng.normal(size=(4, 3))

    def forward(q_, k_, v_):
        s = q_ @ k_.T / np.sqrt(q_.shape[1])
        p = np.exp(s - s.max(1, keepdims=True))
        return float(((p / p.sum(1, keepdims=True)) @ v_ * d_out).sum())

    dq, dk, dv = m.attention_backward(d_out, q, k, v)
    close(dq, finite_differences(lambda z: forward(z, k, v), q), "dq", rtol=1e-5, atol=1e-8)
    close(dk, finite_differences(lambda z: forward(q, z, v), k), "dk", rtol=1e-5, atol=1e-8)
    close(dv, finite_differences(lambda z: forward(q, k, z), v), "dv", rtol=1e-5, atol=1e-8)


def check_adamw(m):
    rng = np.random.default_rng(2)
    p = rng.normal(size=(5, 4))
    params = {"w": p.copy()}
    state = adamw_init(params)
    mine_p, mine_m, mine_v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t in range(1, 6):
        g = rng.normal(size=p.shape)
        adamw_step(params, {"w": g}, state, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
        mine_p, mine_m, mine_v = m.adamw_step(mine_p, g, mine_m, mine_v, t, 1e-2)
        close(mine_m, state["w"]["exp_avg"], f"step {t}: first moment", rtol=1e-12, atol=1e-15)
        close(mine_v, state["w"]["exp_avg_sq"], f"step {t}: second moment", rtol=1e-12, atol=1e-15)
        close(mine_p, params["w"], f"step {t}: parameters", rtol=1e-12, atol=1e-14)


CHECKS = [("22.1 LayerNorm backward", check_layer_norm),
          ("22.2 attention backward", check_attention),
          ("22.3 one AdamW step", check_adamw)]
