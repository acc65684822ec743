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
        S += rel_h[:, a0:a1] (each over a key row) + rel_w    Numba, in torch's order
        m' = max(m, max_j S);  alpha = exp(m - m');  P = exp(S - m')
        l = alpha l + sum_j P;  m = m'
        O = alpha O + P V[j0:j1]                              one BLAS GEMM, then Numba
    out = O / l

Why blocks of whole key rows: the rel-pos add then reads rel_h[., a] once per key row and
rel_w as one contiguous vector. Why this shape of work: each task's scores block
([calls, r, kb kw], ``score_budget`` floats, 1 MiB by default) stays in the core's L2 cache from
the GEMM that writes it through the softmax to the GEMM that reads it, where chunks of whole
score rows (4096 keys each for vit_b) outgrow L2 and go out to memory and back twice; the
GEMMs are [r, hd] x [hd, kb kw] and [r, kb kw] x [kb kw, hd], shapes BLAS runs near its peak
(r = 256, kb kw = 1024 for vit_b).

Threads: the tasks are split over minisam's threads (:func:`minisam.kernels.threads.parallel_blas`);
each thread runs its own GEMMs with BLAS held to one thread meanwhile (threadpoolctl), so the two
pools never nest. Without threadpoolctl the tasks run on the calling thread and each GEMM uses
BLAS's own threads.

Numerics (``docs/numerics.md`` section 4): float32 scores and probabilities, the row sums in
float64, exp by the float32 polynomial of :mod:`minisam.kernels.layers` (within 2e-7 relative).
The normalization comes after P V instead of before; the result differs from softmax-then-matmul
by float32 rounding only (``tests/test_flash_attention.py``).

``flash_attention_rel_pos_numpy`` is the readable twin: the same blocks and the same online
softmax, in NumPy, over all calls at once.
"""

from __future__ import annotations

import numpy as np

from minisam.kernels.jit import njit
from minisam.kernels.layers import _SUM_LANES, _exp, _exp_shifted_, _row_max, out_array
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
def _online_softmax_rel_pos_kernel(S, nc, nr, kb, rel_h, rel_w, n0, i0, a0, first, m, l, alpha, lanes):
    """One key block of the online softmax, in place on the scores.

    S [calls, q_rows, >= kb*kw] (the task's block; its first nc calls, nr rows, kb*kw keys are live),
    rel_h [A, T, kh], rel_w [A, T, kw] (read at calls n0.., rows i0.., key rows a0..a0+kb),
    m [calls, q_rows] f32 running max, l [.., ..] f64 running sum, alpha [.., ..] f32 out: the
    factor the running P V must be scaled by; scratch lanes [_SUM_LANES] float64.
    """
    kw = rel_w.shape[2]
    N = kb * kw
    for c in range(nc):
        for r in range(nr):
            row = S[c, r]
            rh = rel_h[n0 + c, i0 + r]
            rw = rel_w[n0 + c, i0 + r]
            for a in range(kb):                # float32, in torch's order: (attn + rel_h) + rel_w
                ha = rh[a0 + a]
                base = a * kw
                for b in range(kw):
                    row[base + b] = (row[base + b] + ha) + rw[b]
            block_max = _row_max(row, N)
            if first:
                m_new = block_max
                alpha[c, r] = 0
                l_old = 0.0
            else:
                m_old = m[c, r]
                m_new = max(m_old, block_max)
                alpha[c, r] = _exp(m_old - m_new)
                l_old = l[c, r] * alpha[c, r]
            l[c, r] = l_old + _exp_shifted_(row, N, m_new, lanes)
            m[c, r] = m_new


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
    S = np.empty((calls, q_rows, k_rows * kw), np.float32)                     # [calls, r, kb*kw] scores
    PV = np.empty((calls, q_rows, hd), np.float32)                             # [calls, r, hd] this block's P V
    O = np.empty((calls, q_rows, hd), np.float32)                              # [calls, r, hd] running P V
    m = np.empty((calls, q_rows), np.float32)                                  # [calls, r]
    l = np.empty((calls, q_rows), np.float64)                                  # [calls, r]
    alpha = np.empty((calls, q_rows), np.float32)                              # [calls, r]
    lanes = np.empty(_SUM_LANES, np.float64)
    for task in range(lo, hi):
        g, qb = divmod(task, n_qb)
        n0, i0 = g * calls, qb * q_rows
        n1, i1 = min(A, n0 + calls), min(T, i0 + q_rows)
        nc, nr = n1 - n0, i1 - i0
        for a0 in range(0, kh, k_rows):
            a1 = min(kh, a0 + k_rows)
            j0, j1 = a0 * kw, a1 * kw
            s = S[:nc, :nr, :j1 - j0]                                          # [nc, nr, kb*kw] view
            np.matmul(q[n0:n1, i0:i1], k[n0:n1, j0:j1].transpose(0, 2, 1), out=s)
            _online_softmax_rel_pos_kernel(S, nc, nr, a1 - a0, rel_h, rel_w, n0, i0, a0, a0 == 0,
                                           m, l, alpha, lanes)
            np.matmul(s, v[n0:n1, j0:j1], out=PV[:nc, :nr])                    # [nc, nr, hd]
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
