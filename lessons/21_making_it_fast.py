# %% [markdown]
# # Lesson 21: making it fast on a CPU, one kernel at a time
#
# The vit_b image encoder is ~0.97 TFLOP per image (lesson 08 counts them). How long the
# official PyTorch code and minisam take for it, side by side on one machine, is what
# ``benchmarks/encoder.py`` measures. This lesson asks where the time goes, and what each trick
# buys. This lesson takes ONE piece of one encoder block,
# windowed attention with decomposed relative positions (lesson 07), at vit_b width
# (D = 768, 12 heads of 64, 14 x 14 windows), and climbs a ladder, as llm.c's kernel files do:
#
#   v0  naive: Python loops over calls and query rows, NumPy inside each row
#   v1  vectorized NumPy: one batched matmul for all scores, softmax over the whole array
#   v2  a Numba fused kernel (``kernels.attention_rel_pos``): one task per (window, head);
#       scores, rel-pos add, softmax and the weighted sum of v stay in that task's cache, and
#       the products are Numba loops, not BLAS
#   v3  blocked attention (``image_encoder._chunked_attention``, ``kernels/attention.py``):
#       BLAS GEMMs on cache-sized blocks of query and key rows, with an online softmax (the
#       FlashAttention algorithm) fused in between; what minisam's encoder runs, for the
#       windows and for the GLOBAL blocks, whose 4096 x 4096 scores per head (805 MB for 12
#       heads) are never held at once
#
# Then v2 and v3 again at the global size, 4096 tokens per call.
#
# Every version is checked against the reference (``kernels.attention_rel_pos_numpy``, the
# readable twin the tests hold the kernel to) and timed (best of a few runs: the least disturbed by other processes).
# Then the whole block, op by op, on the roofline: each op's FLOP/s against its arithmetic
# intensity (FLOPs per byte moved), under the two ceilings of this machine, the measured GEMM
# peak and the measured memory bandwidth. The GEMMs' intensity puts them under the compute
# roof, the LayerNorms' under the memory slope, which is why minisam fuses those into single
# passes.
#
# Weights are random (the speed does not depend on their values), so no model is needed.
# Kirillov et al. 2023, appendix A; official ``modeling/image_encoder.py`` Attention.
#
# Run:  python lessons/21_making_it_fast.py --out out/21 [--threads N]

# %%
import time

import numpy as np

import _lesson

args = _lesson.parse_args("21", "Lesson 21: making it fast on a CPU, one kernel at a time",
                          extra=lambda p: p.add_argument(
    "--threads", type=int, default=None, help="BLAS and Numba threads (default: as the environment says)"))

import matplotlib.pyplot as plt  # noqa: E402

from minisam.kernels.image_encoder import _chunked_attention, linear, rel_pos_terms  # noqa: E402
from minisam.modeling.image_encoder import window_partition  # noqa: E402
from minisam.kernels.layers import (add_layer_norm, attention_rel_pos, attention_rel_pos_numpy, gelu,  # noqa: E402
                             layer_norm, softmax_numpy)
from minisam.kernels.threads import set_num_threads, thread_info  # noqa: E402

# One setting drives both thread pools: BLAS (the GEMMs) and Numba (the fused kernels).
if args.threads:
    set_num_threads(args.threads)
info = thread_info()
for lib in info["blas"]:
    print(f"BLAS: {lib['internal_api']} kernel {lib['architecture']}, {lib['num_threads']} threads")
print(f"Numba: {info['numba'].get('num_threads')} threads")


def best_time(fn, repeats=3):
    """Best wall time of ``repeats`` calls after one warm-up (Numba compiles there)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


rng = np.random.default_rng(0)
D, nH, w = 768, 12, 14                  # vit_b width, heads, window side
hd = D // nH
nW = 4                                  # windows for the ladder (the naive loops are slow)
T = w * w


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# %% [markdown]
# ## The input of the ladder: q, k, v for nW windows x nH heads, and the rel-pos terms

# %%
x = randn(nW, w, w, D)                                           # [nW, w, w, D] normed tokens
qkv_w, qkv_b = randn(3 * D, D, scale=D ** -0.5), randn(3 * D, scale=0.02)
rel_pos_h, rel_pos_w = randn(2 * w - 1, hd, scale=0.1), randn(2 * w - 1, hd, scale=0.1)
qkv = linear(x, qkv_w, qkv_b).reshape(nW, T, 3, nH, hd).transpose(2, 0, 3, 1, 4)  # [3, nW, nH, T, hd]
q, k, v = (np.ascontiguousarray(t).reshape(nW * nH, T, hd) for t in qkv)          # [N, T, hd] each
rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, (w, w))     # [N, T, w] each, from UNSCALED q
q *= np.float32(hd ** -0.5)                                      # [N, T, hd] scaled after rel-pos
N = q.shape[0]
print(f"ladder input: {nW} windows x {nH} heads = {N} attention calls; q, k, v {q.shape}; "
      f"rel_h {rel_h.shape}, rel_w {rel_w.shape}")
att_flops = 4.0 * N * T * T * hd                                 # q k^T and p v, multiply-add = 2


# v0: loops. Per query row: scores against every key, + rel-pos, softmax, weighted sum of v.
def v0_naive(q, k, v, rel_h, rel_w):
    out = np.empty_like(q)                                       # [N, T, hd]
    for n in range(N):
        for i in range(T):
            s = k[n] @ q[n, i]                                   # [T] scores of query i
            s = (s.reshape(w, w) + rel_h[n, i][:, None] + rel_w[n, i][None, :]).reshape(T)  # [T]
            out[n, i] = softmax_numpy(s) @ v[n]                  # [T] @ [T, hd] -> [hd]
    return out


# v3: blocked. The encoder's own path: blocks of whole windows (several 196 x 196 score
# blocks per task, 1 MiB in all), each a BLAS GEMM, the online softmax, a second GEMM.
def v3_blocked(q, k, v, rel_h, rel_w):
    return _chunked_attention(q, k, v, rel_h, rel_w, (w, w))    # [N, T, hd]


# v1: all calls at once. Scores [N, T, T] from one batched matmul, the rel-pos terms added by
# broadcasting over the key grid, a float32 softmax over the last axis, one more matmul.
def v1_vectorized(q, k, v, rel_h, rel_w):
    s = (q @ k.transpose(0, 2, 1)).reshape(N, T, w, w)          # [N, T, w, w] scores on the key grid
    s = (s + rel_h[..., :, None] + rel_w[..., None, :]).reshape(N, T, T)  # [N, T, T]
    s = np.exp(s - s.max(-1, keepdims=True))                     # [N, T, T]
    return (s / s.sum(-1, keepdims=True)) @ v                    # [N, T, T] @ [N, T, hd] -> [N, T, hd]


ladder = [("v0 naive loops", v0_naive), ("v1 vectorized NumPy", v1_vectorized),
          ("v2 Numba fused", attention_rel_pos), ("v3 blocked BLAS", v3_blocked)]
reference = attention_rel_pos_numpy(q, k, v, rel_h, rel_w)       # [N, T, hd] the tests' twin (float64 throughout)
times, errors = {}, {}
for name, fn in ladder:
    out = fn(q, k, v, rel_h, rel_w)
    err = errors[name] = np.abs(out - reference).max() / np.abs(v).max()
    times[name] = best_time(lambda: fn(q, k, v, rel_h, rel_w), repeats=1 if "naive" in name else 2)
    print(f"{name:22s} out {out.shape}  max err {err:.1e} x max|v|  {times[name] * 1e3:8.1f} ms  "
          f"{att_flops / times[name] / 1e9:6.1f} GFLOP/s  ({times[ladder[0][0]] / times[name]:5.1f}x v0)")

# What to read in these numbers. Vectorizing (v1) removes the interpreter from the inner loop;
# what that buys here is the printed ratio (it shrinks when other processes share the cores). Between v2 and v3 at this size the margin is
# small and depends on the machine: v2 keeps each call's 196 x 196 scores in cache and runs
# whole inside one thread, but multiplies with Numba loops; v3 multiplies with BLAS, but each
# product is a small [196, 64] x [64, 196] one. The printed times say which won here.
fig, ax = plt.subplots(figsize=(7, 3.2))
names = list(times)
ax.barh(names[::-1], [times[n] * 1e3 for n in names[::-1]], color=["C3", "C2", "C1", "C0"])
ax.set_xscale("log")
ax.set_xlabel(f"ms for {N} windowed attention calls (log scale; lower is better)")
for i, n in enumerate(names[::-1]):
    ax.text(times[n] * 1e3, i, f" {times[n] * 1e3:.1f} ms", va="center")
ax.set_title("Lesson 21: the attention ladder, vit_b width")
_lesson.save(fig, args, "21_times.png")

# %% [markdown]
# ## The same two kernels at the global size
#
# A global block of vit_b is one attention call per head over all 64 x 64 = 4096 tokens. The
# fused kernel's work per call grows as T^2 in Numba loops; the blocked path's products become
# [256, 64] x [64, 1024] GEMMs, shapes at which BLAS runs near this machine's peak. Two heads
# are enough to see it.

# %%
Tg, heads_g = 64 * 64, 2
qg, kg, vg = (randn(heads_g, Tg, hd, scale=0.3) for _ in range(3))   # [2, 4096, 64] each
rhg, rwg = randn(heads_g, Tg, 64, scale=0.3), randn(heads_g, Tg, 64, scale=0.3)  # [2, 4096, 64] each
out_v2 = attention_rel_pos(qg, kg, vg, rhg, rwg)                    # [2, 4096, 64]
out_v3 = _chunked_attention(qg, kg, vg, rhg, rwg, (64, 64))          # [2, 4096, 64]
err_global = np.abs(out_v2 - out_v3).max() / np.abs(vg).max()
global_times = {"v2 Numba fused": best_time(lambda: attention_rel_pos(qg, kg, vg, rhg, rwg), repeats=1),
                "v3 blocked BLAS": best_time(lambda: _chunked_attention(qg, kg, vg, rhg, rwg, (64, 64)), repeats=1)}
global_flops = 4.0 * heads_g * Tg * Tg * hd
for name, t in global_times.items():
    print(f"global size, {heads_g} heads of {Tg} tokens: {name:16s} {t * 1e3:7.1f} ms  "
          f"{global_flops / t / 1e9:6.1f} GFLOP/s")
print(f"v2 vs v3 at the global size: max diff {err_global:.1e} x max|v|")


# %% [markdown]
# ## The whole windowed block, op by op, on the roofline

# %%
G = 64                                                           # vit_b grid
Gp = -(-G // w) * w                                              # padded for windows: 70
xb = randn(1, G, G, D)                                           # [1, G, G, D] residual stream
ln_w, ln_b = np.ones(D, np.float32), np.zeros(D, np.float32)
W = {"qkv": randn(3 * D, D, scale=D ** -0.5), "proj": randn(D, D, scale=D ** -0.5),
     "lin1": randn(4 * D, D, scale=D ** -0.5), "lin2": randn(D, 4 * D, scale=(4 * D) ** -0.5)}
tok_pad = randn(Gp * Gp, D)                                      # [Gp*Gp, D] windowed tokens
hidden = randn(G * G, 4 * D)                                     # [G*G, 4D]
nb = (Gp // w) ** 2 * nH                                         # attention calls of the block: 300
qb, kb, vb = (randn(nb, T, hd, scale=0.2) for _ in range(3))     # [300, 196, 64] each
rhb, rwb = randn(nb, T, w), randn(nb, T, w)


def gemm(name, M, K, Nn, a):                                     # (name, fn, flops, bytes)
    return (name, lambda: a @ W[name].T, 2.0 * M * K * Nn, 4.0 * (M * K + K * Nn + M * Nn))


ops = [gemm("qkv", Gp * Gp, D, 3 * D, tok_pad), gemm("proj", Gp * Gp, D, D, tok_pad),
       gemm("lin1", G * G, D, 4 * D, xb.reshape(-1, D)), gemm("lin2", G * G, 4 * D, D, hidden),
       ("attention (v2)", lambda: attention_rel_pos(qb, kb, vb, rhb, rwb), 4.0 * nb * T * T * hd,
        4.0 * (4 * nb * T * hd + nb * T * 2 * w)),
       ("GELU", lambda: gelu(hidden), 30.0 * hidden.size, 8.0 * hidden.size),
       ("LayerNorm", lambda: layer_norm(xb, ln_w, ln_b), 8.0 * xb.size, 8.0 * xb.size),
       ("add + LayerNorm", lambda: add_layer_norm(xb.copy(), xb, ln_w, ln_b), 9.0 * xb.size, 16.0 * xb.size),
       ("window partition", lambda: window_partition(xb, w), 0.0, 8.0 * Gp * Gp * D)]
print(f"\none windowed vit_b block: tokens {xb.shape}, padded {Gp}x{Gp}, {nb} attention calls")
big = np.ones(1 << 24, np.float32)                               # 64 MB, far bigger than the caches
dst = np.empty_like(big)
bandwidth = 2 * big.nbytes / best_time(lambda: np.copyto(dst, big)) / 1e9  # GB/s, read + write
a2 = randn(2048, 2048)
peak = 2 * 2048 ** 3 / best_time(lambda: a2 @ a2) / 1e9          # GFLOP/s
print(f"machine: float32 GEMM {peak:.0f} GFLOP/s (2048^3), memory copy {bandwidth:.1f} GB/s")
points = []
for name, fn, flops, nbytes in ops:
    t = best_time(fn, repeats=1)
    points.append((name, flops / nbytes, flops / t / 1e9, t))
    print(f"  {name:17s} {t * 1e3:7.1f} ms  {flops / 1e9:6.2f} GFLOP  {nbytes / 1e6:6.0f} MB  "
          f"intensity {flops / nbytes:6.2f} FLOP/B  {flops / t / 1e9:6.1f} GFLOP/s")
total = sum(p[3] for p in points)
gemm_share = sum(p[3] for p in points if p[0] in W) / total
print(f"block total {total * 1e3:.0f} ms, GEMMs {gemm_share:.0%} of it; x 12 blocks (4 of them global, "
      "slower) = most of a set_image")

fig, ax = plt.subplots(figsize=(7, 4.5))
ai = np.logspace(-1.5, 3, 200)
ax.loglog(ai, np.minimum(peak, bandwidth * ai), "k-", lw=1.5, label="roofline: min(GEMM peak, bandwidth x intensity)")
for i, (name, intensity, gflops, _) in enumerate(points):
    if intensity > 0:
        ax.loglog(intensity, gflops, "o")
        dy = -12 * i if name in W else -3                      # the four GEMMs sit on top of each other
        ax.annotate(name, (intensity, gflops), textcoords="offset points", xytext=(-60, dy), fontsize=8)
ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
ax.set_ylabel("GFLOP/s achieved")
ax.set_title("Lesson 21: one windowed vit_b block on this CPU's roofline")
ax.legend(fontsize=8, loc="lower right")
_lesson.save(fig, args, "21_roofline.png")

# %% [markdown]
# ## The checks
#
# Every rung computes the same function; at the global size the blocked BLAS path beats the
# fused Numba kernel, which is why the encoder runs it there; and on the roofline the four GEMMs have more FLOPs per byte than the machine's
# balance point (peak / bandwidth), so compute bounds them, while the LayerNorms have fewer, so
# memory bounds them: fusing those into single passes is what saves time. (GELU, at about
# 4 FLOP/B by our count of its polynomial, sits near the knee: where depends on the machine.)

# %%
_lesson.claim(max(errors.values()) < 2e-6 and err_global < 2e-6,
              f"every rung agrees with the reference: max error {max(errors.values()):.1e} x max|v| at the "
              f"window size, {err_global:.1e} between v2 and v3 at the global size (bound 2e-6)")
_lesson.claim(global_times["v3 blocked BLAS"] < global_times["v2 Numba fused"],
              f"at the global size the blocked BLAS path ({global_times['v3 blocked BLAS'] * 1e3:.0f} ms) beats "
              f"the fused Numba kernel ({global_times['v2 Numba fused'] * 1e3:.0f} ms)")
balance = peak / bandwidth                                       # FLOP per byte where the two roofs meet
gemm_intensity = min(p[1] for p in points if p[0] in W)
memory_bound = max(p[1] for p in points if p[0] in ("LayerNorm", "add + LayerNorm"))
_lesson.claim(gemm_intensity > balance > memory_bound,
              f"the GEMMs' intensity (at least {gemm_intensity:.0f} FLOP/B) is above this machine's balance "
              f"point ({balance:.1f} FLOP/B), the LayerNorms' (at most {memory_bound:.1f}) below it")
