"""Attention with decomposed relative positions, blocked: BLAS GEMMs on cache-sized blocks with an
online softmax between them, the [A, T, T] scores never held.

The function is that of ``Attention.forward`` and ``add_decomposed_rel_pos`` in
``segment_anything/modeling/image_encoder.py`` (L185-240, L325-361; paper: Kirillov et al. 2023,
section 3, the ViTDet-style encoder with MViTv2's decomposed relative positions):

    out = softmax(q k^T + rel_h[:, :, :, None] + rel_w[:, :, None, :]) v

for A attention calls at once (calls x heads), q already scaled, the rel-pos terms of
``kernels.layers.rel_pos_terms`` broadcast over the kh x kw key grid (T = kh * kw keys).

The algorithm is the one of FlashAttention (Dao et al. 2022) with the online softmax of
Milakov & Gimelshein (2018). One task is a group of calls and a block of query rows:

    m = -inf, l = 0, O = 0                                   per query row
    for each block of key-grid rows a0:a1 (keys j0 = a0 kw .. j1 = a1 kw):
        S = Q K[j0:j1]^T                                      one BLAS GEMM   [r, kb kw]
        S += rel_h[:, a0:a1] (each over a key row) + rel_w    in torch's order
        m' = max(m, max_j S);  alpha = exp(m - m');  P = exp(S - m')
        l = alpha l + sum_j P;  m = m'
        O = alpha O + P V[j0:j1]                              one BLAS GEMM, then Numba
    out = O / l

The Numba kernel holds each scores block transposed, keys by queries ([kb kw, r]):
- **the GEMM:** BLAS computes it as K[j0:j1] Q^T (M = kb kw, N = r, K = hd). At vit_b's global
  shapes (1024 x 256 x 64) OpenBLAS's SkylakeX kernel ran that at ~90 GFLOP/s a thread, against
  ~72 for Q K^T (r x kb kw x 64) on a 2-core AMD EPYC (Zen 4). The P V GEMM reads P^T
  transposed at the same speed as P.
- **the softmax:** its reductions over keys become elementwise operations along the contiguous
  query axis, one running max and one float64 sum per query, which vectorize with no
  horizontal reduction.
The rel-pos terms of the task's rows are gathered once per task into the same layout ([kh, r]
and [kw, r]). A vit_b global block ran 8% faster this way than with [r, kb kw] blocks
(``benchmarks/RESULTS.md``, 2026-12-07, fourth session).

Why blocks of whole key rows: the rel-pos add then reads one rel_h column per key row and one
rel_w column per key. Why this shape of work: each task's scores block
([calls, kb kw, r], ``score_budget`` floats, 1 MiB by default) stays in the core's L2 cache from
the GEMM that writes it through the softmax to the GEMM that reads it, where chunks of whole
score rows (4096 keys each for vit_b) outgrow L2 and go out to memory and back twice; the
GEMMs run near BLAS's peak at r = 256, kb kw = 1024 (vit_b).

Threads: the tasks are split over minisam's threads (:func:`minisam.kernels.threads.parallel_blas`);
each thread runs its own GEMMs with BLAS held to one thread meanwhile (threadpoolctl), so the two
pools never nest. Without threadpoolctl the tasks run on the calling thread and each GEMM uses
BLAS's own threads.

Numerics (``docs/numerics.md`` section 4): float32 scores and probabilities, the row sums in
float64 (one accumulator per query, keys added in order), exp by the float32 polynomial of
:mod:`minisam.kernels.layers` (within 2e-7 relative). The max is exact in any order.
The normalization comes after P V instead of before; the result differs from softmax-then-matmul
by float32 rounding only (``tests/test_flash_attention.py``).

``flash_attention_rel_pos_numpy`` is the readable twin: the same blocks and the same online
softmax, in NumPy, over all calls at once, with the scores in their natural [r, kb kw] layout.
"""

from __future__ import annotations

import numpy as np

from minisam.kernels.jit import njit
from minisam.kernels.layers import _exp, out_array
from minisam.kernels.threads import parallel_blas

SCORE_BUDGET = 1 << 18  # scores per task block (1 MiB of float32): 256 query rows x 1024 keys, L2-sized
KEY_ROWS = 16           # key-grid rows per key block: 1024 keys of vit_b's 64-wide global grid


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def block_sizes(A, T, kh, kw, key_rows=KEY_ROWS, score_budget=SCORE_BUDGET):
    """(calls per task, query rows per task, key-grid rows per key block) for A calls of T = kh*kw tokens.

    The key block is ``key_rows`` whole rows of the key grid (at least one, at most kh, at most what
    fits the budget); the query block fills ``score_budget`` scores with it (at least one row); when
    one call's whole [T, T] scores fit, a task takes as many calls as fit.
    """
    k_rows = max(1, min(kh, key_rows, score_budget // kw))
    bk = k_rows * kw
    q_rows = max(1, min(T, score_budget // bk))
    calls = max(1, min(A, score_budget // (q_rows * bk))) if q_rows == T else 1
    return calls, q_rows, k_rows


# --------------------------------------------------------------------------- the readable twin

def flash_attention_rel_pos_numpy(q, k, v, rel_h, rel_w, q_rows=256, key_rows=KEY_ROWS):
    """NumPy twin of :func:`flash_attention_rel_pos`: the same query and key blocks and the same online
    softmax, over all calls at once.

    q [A, T, hd] ALREADY SCALED, k, v [A, T, hd], rel_h [A, T, kh], rel_w [A, T, kw], T = kh * kw
    -> [A, T, hd] float32.
    """
    A, T, hd = q.shape
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    out = np.empty((A, T, hd), np.float32)                                     # [A, T, hd]
    for i0 in range(0, T, q_rows):
        i1 = min(T, i0 + q_rows)
        r = i1 - i0
        m = np.full((A, r), -np.inf, np.float32)                               # [A, r] running max
        l = np.zeros((A, r), np.float64)                                       # [A, r] running sum
        o = np.zeros((A, r, hd), np.float32)                                   # [A, r, hd] running P V
        for a0 in range(0, kh, key_rows):
            a1 = min(kh, a0 + key_rows)
            j0, j1 = a0 * kw, a1 * kw                                          # keys of grid rows a0:a1
            s = q[:, i0:i1] @ k[:, j0:j1].transpose(0, 2, 1)                   # [A, r, kb*kw]
            s = s.reshape(A, r, a1 - a0, kw)                                   # [A, r, kb, kw]
            s = (s + rel_h[:, i0:i1, a0:a1, None]) + rel_w[:, i0:i1, None, :]  # [A, r, kb, kw]
            s = s.reshape(A, r, (a1 - a0) * kw)                                # [A, r, kb*kw]
            m_new = np.maximum(m, s.max(-1))                                   # [A, r]
            alpha = np.exp(m - m_new)                                          # [A, r] 0 on the first block
            p = np.exp(s - m_new[..., None])                                   # [A, r, kb*kw]
            l = alpha * l + p.sum(-1, dtype=np.float64)                        # [A, r]
            o = alpha[..., None] * o + p @ v[:, j0:j1]                         # [A, r, hd]
            m = m_new
        out[:, i0:i1] = o / l[..., None]                                       # [A, r, hd]
    return out


# --------------------------------------------------------------------------- the Numba steps

@njit(error_model="numpy")
def _gather_rel_pos_kernel(rel_h, rel_w, n0, nc, i0, nr, rel_h_t, rel_w_t):
    """The rel-pos terms of one task, transposed to the scores' layout.

    rel_h [A, T, kh], rel_w [A, T, kw] (read at calls n0..n0+nc, rows i0..i0+nr)
    -> rel_h_t [calls, kh, q_rows], rel_w_t [calls, kw, q_rows] (their first nc, nr written).
    """
    kh, kw = rel_h.shape[2], rel_w.shape[2]
    for c in range(nc):
        for i in range(nr):
            rh = rel_h[n0 + c, i0 + i]
            rw = rel_w[n0 + c, i0 + i]
            for a in range(kh):
                rel_h_t[c, a, i] = rh[a]
            for b in range(kw):
                rel_w_t[c, b, i] = rw[b]


@njit(error_model="numpy")
def _online_softmax_rel_pos_kernel(ST, nc, nr, kb, rel_h_t, rel_w_t, a0, first, m, l, alpha, m_new, total):
    """One key block of the online softmax, in place on the transposed scores.

    ST [calls, >= kb*kw, q_rows] (the task's block, keys by queries; its first nc calls, kb*kw keys,
    nr queries are live), rel_h_t [calls, kh, q_rows], rel_w_t [calls, kw, q_rows] (the task's
    rel-pos terms, :func:`_gather_rel_pos_kernel`; key rows a0..a0+kb are read), m [calls, q_rows]
    f32 running max, l [.., ..] f64 running sum, alpha [.., ..] f32 out: the factor the running
    P V must be scaled by; scratch m_new [q_rows] float32, total [q_rows] float64.

    Every loop runs along the queries, the contiguous axis: the max and the sum over keys are
    elementwise updates of one value per query.
    """
    kw = rel_w_t.shape[1]
    for c in range(nc):
        rh, rw = rel_h_t[c], rel_w_t[c]
        m_c, l_c, alpha_c = m[c], l[c], alpha[c]
        for i in range(nr):
            m_new[i] = -np.inf
        for a in range(kb):                    # float32, in torch's order: (attn + rel_h) + rel_w
            ha = rh[a0 + a]
            for b in range(kw):
                keys = ST[c, a * kw + b]
                wb = rw[b]
                for i in range(nr):
                    x = (keys[i] + ha[i]) + wb[i]
                    keys[i] = x
                    m_new[i] = max(m_new[i], x)
        for i in range(nr):
            if first:
                alpha_c[i] = 0
                total[i] = 0.0
            else:
                m_i = max(m_c[i], m_new[i])
                m_new[i] = m_i
                alpha_c[i] = _exp(m_c[i] - m_i)
                total[i] = l_c[i] * alpha_c[i]
        for j in range(kb * kw):
            keys = ST[c, j]
            for i in range(nr):
                p = _exp(keys[i] - m_new[i])
                keys[i] = p
                total[i] += p
        for i in range(nr):
            l_c[i] = total[i]
            m_c[i] = m_new[i]


@njit(error_model="numpy")
def _rescale_accumulate_kernel(O, PV, alpha, l, nc, nr, first, last, out, n0, i0):
    """O = alpha O + P V for one key block; on the last one out[n0 + c, i0 + r] = O / l.

    O, PV [calls, q_rows, hd] f32, alpha [calls, q_rows] f32, l [calls, q_rows] f64, out [A, T, hd].
    """
    hd = PV.shape[2]
    for c in range(nc):
        for r in range(nr):
            o = O[c, r]
            pv = PV[c, r]
            if last:
                inv = np.float32(1.0 / l[c, r])
                dst = out[n0 + c, i0 + r]
                if first:                      # one key block: out = P V / l
                    for d in range(hd):
                        dst[d] = pv[d] * inv
                else:
                    a = alpha[c, r]
                    for d in range(hd):
                        dst[d] = (o[d] * a + pv[d]) * inv
            elif first:
                for d in range(hd):
                    o[d] = pv[d]
            else:
                a = alpha[c, r]
                for d in range(hd):
                    o[d] = o[d] * a + pv[d]


def _flash_tasks(lo, hi, q, k, v, rel_h, rel_w, out, calls, q_rows, k_rows):
    """Tasks [lo, hi) of :func:`flash_attention_rel_pos`: task = (group of calls, query block)."""
    A, T, hd = q.shape
    kh, kw = rel_h.shape[2], rel_w.shape[2]
    n_qb = -(-T // q_rows)
    ST = np.empty((calls, k_rows * kw, q_rows), np.float32)                    # [calls, kb*kw, r] scores^T
    PV = np.empty((calls, q_rows, hd), np.float32)                             # [calls, r, hd] this block's P V
    O = np.empty((calls, q_rows, hd), np.float32)                              # [calls, r, hd] running P V
    rel_h_t = np.empty((calls, kh, q_rows), np.float32)                        # [calls, kh, r]
    rel_w_t = np.empty((calls, kw, q_rows), np.float32)                        # [calls, kw, r]
    m = np.empty((calls, q_rows), np.float32)                                  # [calls, r]
    l = np.empty((calls, q_rows), np.float64)                                  # [calls, r]
    alpha = np.empty((calls, q_rows), np.float32)                              # [calls, r]
    m_new = np.empty(q_rows, np.float32)                                       # [r]
    total = np.empty(q_rows, np.float64)                                       # [r]
    for task in range(lo, hi):
        g, qb = divmod(task, n_qb)
        n0, i0 = g * calls, qb * q_rows
        n1, i1 = min(A, n0 + calls), min(T, i0 + q_rows)
        nc, nr = n1 - n0, i1 - i0
        _gather_rel_pos_kernel(rel_h, rel_w, n0, nc, i0, nr, rel_h_t, rel_w_t)
        for a0 in range(0, kh, k_rows):
            a1 = min(kh, a0 + k_rows)
            j0, j1 = a0 * kw, a1 * kw
            st = ST[:nc, :j1 - j0, :nr]                                        # [nc, kb*kw, nr] view
            np.matmul(k[n0:n1, j0:j1], q[n0:n1, i0:i1].transpose(0, 2, 1), out=st)  # [nc, kb*kw, nr] K Q^T
            _online_softmax_rel_pos_kernel(ST, nc, nr, a1 - a0, rel_h_t, rel_w_t, a0, a0 == 0,
                                           m, l, alpha, m_new, total)
            np.matmul(st.transpose(0, 2, 1), v[n0:n1, j0:j1], out=PV[:nc, :nr])  # [nc, nr, hd]
            _rescale_accumulate_kernel(O, PV, alpha, l, nc, nr, a0 == 0, a1 == kh, out, n0, i0)


def flash_attention_rel_pos(q, k, v, rel_h, rel_w, key_rows=KEY_ROWS, score_budget=SCORE_BUDGET, out=None):
    """softmax(q k^T + decomposed rel-pos) v in blocks, never holding more than ``score_budget``
    scores per thread (the module docstring gives the algorithm).

    q [A, T, hd] ALREADY SCALED, k, v [A, T, hd], rel_h [A, T, kh], rel_w [A, T, kw] with
    T = kh * kw -> [A, T, hd] float32. ``key_rows``: key-grid rows per key block (the online
    softmax runs over ceil(kh / key_rows) blocks); :func:`block_sizes` gives the blocks. ``out``:
    an [A, T, hd] array to write into (``kernels.layers.out_array``).
    """
    q, k, v, rel_h, rel_w = (_f32(a) for a in (q, k, v, rel_h, rel_w))
    A, T, hd = q.shape
    kh, kw = rel_h.shape[2], rel_w.shape[2]
    if kh * kw != T or k.shape != q.shape or v.shape[:2] != (A, T) or rel_h.shape[:2] != (A, T) \
            or rel_w.shape[:2] != (A, T):
        raise ValueError(f"flash_attention_rel_pos: q {q.shape}, k {k.shape}, v {v.shape}, rel_h {rel_h.shape}, "
                         f"rel_w {rel_w.shape} do not fit [A, T, hd] with T = kh * kw")
    out = out_array(out, (A, T, v.shape[2]), "flash_attention_rel_pos", q, k, v, rel_h, rel_w)  # [A, T, hd]
    calls, q_rows, k_rows = block_sizes(A, T, kh, kw, key_rows, score_budget)
    n_tasks = -(-A // calls) * -(-T // q_rows)
    args = (q, k, v, rel_h, rel_w, out, calls, q_rows, k_rows)
    parallel_blas(_flash_tasks, n_tasks, *args)
    return out
