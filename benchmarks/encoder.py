"""Benchmark: ``set_image`` (resize, preprocess, image encoder): minisam, the official code, and ONNX Runtime
on the official encoder exported with ``torch.onnx.export`` (opset 17), all with the same threads.

One command prints everything:

    python benchmarks/encoder.py [--model vit_b] [--repeats 3] [--threads N] [--sides minisam,official,onnxruntime]
                                 [--profile] [--sweep] [--gemm-ceiling] [--keep-blas-env]

A first subprocess builds a randomized official model (``minisam.reference.official``), saves it as a
.pth and exports its image encoder to ONNX. Each side then runs in its own worker subprocess (so each
peak RSS is its own; minisam's and ONNX Runtime's workers never import torch), loads the weights
(minisam with its torch-free ``build_sam``; ONNX Runtime the exported graph, ``intra_op_num_threads``
= the thread count), and runs one warm-up ``set_image`` on a 1500x2250 image (Numba compiles or loads
its cache there). For ONNX Runtime ``set_image`` is minisam's NumPy resize and normalization, then the
session. The parent then asks the workers for one timed ``set_image`` each, in turn, ``--repeats``
times: interleaving keeps the comparison fair on a machine whose load changes. The three embeddings
are compared at the end (same weights, same image: they must agree).

Printed per side: median ``set_image`` and encoder-only times (the encoder timed inside ``set_image``),
encoder GFLOP/s (analytic count, multiply-add = 2 FLOPs) as a share of THIS machine's float32 GEMM
peak, measured in the same run by the minisam worker with a large NumPy sgemm (``--gemm-n``, best of
3), peak RSS read as VmHWM from ``/proc/self/status`` (``ru_maxrss`` of a child started by vfork/exec
can carry the parent's high-water mark on Linux), the BLAS library and the kernel OpenBLAS picked
(threadpoolctl ``architecture``), the OPENBLAS_* variables (unset for the minisam worker unless
``--keep-blas-env``; see common.py), the ratios minisam/official and minisam/ONNX Runtime, and the
load average before and after.

``--profile``: after the timed runs, one encoder forward in the minisam worker with every op type
timed (GEMMs of the linear layers, global attention, windowed attention, rel-pos terms, GELU,
LayerNorm, the copies of q/k/v into the attention calls and back, the neck, the rest), once per
windowed-attention variant (``--window-attention``: ``blas`` batched GEMMs, ``numba`` one task
per window and head): time, share, GFLOP and GFLOP/s.
``--sweep``: the global attention alone on random inputs of the model's global-block shape, for
several key-block and score-budget settings (``kernels.attention.block_sizes``).
``--gemm-ceiling``: every GEMM of one forward alone, at the encoder's shapes and threading, on random
inputs (:func:`gemm_ceiling`): their summed time is what the encoder would take if all else were
free, so their share of the peak is the most the encoder can reach with this BLAS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_worker_args, answer, ask, describe_worker, fmt_times, header, interleaved,  # noqa: E402
                    minisam_env_info, print_ending, start_worker, stop, synthetic_image, timed, verdict,
                    worker_env, workers)

SIDES = ("minisam", "official", "onnxruntime")
ONNX_OPSET = 17
SWEEP = [(16, 1 << 18), (8, 1 << 17), (16, 1 << 17), (32, 1 << 19), (64, 1 << 18), (64, 1 << 20), (4, 1 << 16)]


def encoder_flops(cfg) -> float:
    """FLOPs of one encoder forward as minisam runs it: the windowed attention on the padded windows,
    the projections on the real tokens only (``kernels.image_encoder.attention``; the official code
    also projects the pad tokens, 3% more at vit_b: lesson 08)."""
    return float(sum(encoder_op_flops(cfg).values()))


def encoder_op_flops(cfg) -> dict:
    """Analytic FLOPs of one forward per op type (multiply-add = 2): the matrix products only."""
    D, G, P, C = cfg.encoder_embed_dim, cfg.image_embedding_size, cfg.patch_size, cfg.prompt_embed_dim
    T = G * G
    f = dict.fromkeys(("linear", "global attention", "windowed attention", "rel-pos terms", "neck"), 0)
    f["linear"] += 2 * T * 3 * P * P * D                              # patch embed
    for i in range(cfg.encoder_depth):
        w = cfg.block_window_size(i)
        if w:
            side = -(-G // w) * w
            Tp, span, kh = side * side, w * w, w                      # padded tokens, keys per query, key rows
        else:
            Tp, span, kh = T, T, G
        f["linear"] += 2 * T * D * 3 * D + 2 * T * D * D              # qkv, proj: real tokens only
        f["windowed attention" if w else "global attention"] += 2 * 2 * Tp * span * D  # q k^T, p v; all heads
        f["rel-pos terms"] += 2 * Tp * 2 * kh * D                     # q . Rh and q . Rw, all heads
        f["linear"] += 2 * 2 * T * D * cfg.encoder_mlp_dim            # lin1, lin2
    f["neck"] += 2 * T * D * C + 2 * T * 9 * C * C                    # 1x1 and 3x3 convs
    return f


# --------------------------------------------------------------------------- measuring, in a worker

def vm_hwm_mb() -> float:
    """Peak resident set size of this process (VmHWM of /proc/self/status), MB; -1 where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return -1.0


def gemm_peak_gflops(n: int, repeats: int = 3) -> float:
    """This machine's float32 GEMM speed through NumPy's BLAS: [n, n] x [n, n], best of ``repeats``."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    a @ b
    return 2.0 * n ** 3 / min(timed(lambda: a @ b)[1] for _ in range(repeats)) / 1e9


class _TimedCall:
    """Wraps a callable; ``last`` is the wall time of the latest call. Other attributes pass through."""

    def __init__(self, fn):
        self.fn, self.last = fn, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.last = time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        return getattr(self.fn, name)


def make_config(name):
    from minisam.config import PRESETS
    return PRESETS[name]


def setup(side: str, model: str, checkpoint: str, onnx_path: str, gemm_n: int):
    """-> (run, embedding, info, extra): ``run()`` does one set_image and returns the encoder's share of
    it; ``extra`` holds minisam's encoder parameters and preprocessed input, for the profile."""
    image = synthetic_image()
    cfg = make_config(model)
    info, extra = {}, {}
    if side == "minisam":
        from minisam import SamPredictor, build_sam
        predictor = SamPredictor(build_sam(checkpoint, config=cfg))
        timer = predictor.model.image_encoder = _TimedCall(predictor.model.image_encoder)

        def run():
            predictor.set_image(image)
            return timer.last

        def embedding():
            return predictor.get_image_embedding()
        resized = predictor.transform.apply_image(image)                               # [Hr, Wr, 3]
        extra = dict(params=predictor.model.params["image_encoder"],
                     x=predictor.model.preprocess(resized.transpose(2, 0, 1)[None]))     # [1, 3, S, S]
        info.update(minisam_env_info())
    elif side == "official":
        import torch
        from minisam.reference.official import build_official
        torch.set_grad_enabled(False)
        sam = build_official(cfg)
        sam.load_state_dict(torch.load(checkpoint))
        from segment_anything import SamPredictor
        predictor = SamPredictor(sam.eval())
        clock = {}
        sam.image_encoder.register_forward_pre_hook(lambda *a: clock.__setitem__("t0", time.perf_counter()))
        sam.image_encoder.register_forward_hook(lambda *a: clock.__setitem__("dt", time.perf_counter() - clock["t0"]))

        def run():
            predictor.set_image(image)
            return clock["dt"]

        def embedding():
            return predictor.get_image_embedding().float().numpy()
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    else:
        import onnxruntime as ort
        from minisam.utils.transforms import ResizeLongestSide, preprocess
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        transform = ResizeLongestSide(cfg.img_size)
        state = {}

        def run():
            resized = transform.apply_image(image)                                  # [Hr, Wr, 3]
            x = preprocess(np.ascontiguousarray(resized.transpose(2, 0, 1))[None], cfg)  # [1, 3, S, S]
            t0 = time.perf_counter()
            state["emb"] = session.run(None, {"image": x})[0]
            return time.perf_counter() - t0

        def embedding():
            return state["emb"]
        info.update(onnxruntime=ort.__version__, ort_threads=opts.intra_op_num_threads,
                    providers=session.get_providers())
    info["rss_loaded_mb"] = vm_hwm_mb()
    t0 = time.perf_counter()
    run()
    info["warmup_s"] = time.perf_counter() - t0
    info["rss_first_mb"] = vm_hwm_mb()                # load + one set_image, before anything else
    if side == "minisam":
        info["gemm_gflops"] = gemm_peak_gflops(gemm_n)
    return run, embedding, info, extra


def serve(args) -> None:
    """Worker loop: set up, report, then one timed set_image per "run"; "save PATH", "profile VARIANT", "sweep",
    "ceiling"."""
    run, embedding, info, extra = setup(args.worker, args.model, args.checkpoint, args.onnx, args.gemm_n)
    answer(info)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ["run"]:
            t0 = time.perf_counter()
            enc_s = run()
            answer(dict(time=time.perf_counter() - t0, encoder_time=enc_s, peak_rss_mb=vm_hwm_mb()))
        elif cmd[:1] == ["save"]:
            np.save(cmd[1], np.asarray(embedding()))
            answer({})
        elif cmd[:1] == ["profile"]:
            answer(profile_forward(make_config(args.model), cmd[1], extra["params"], extra["x"]))
        elif cmd[:1] == ["sweep"]:
            answer(sweep_global_attention(make_config(args.model)))
        elif cmd[:1] == ["ceiling"]:
            answer(gemm_ceiling(make_config(args.model)))
        else:
            break


def prepare(args) -> None:
    """Random official model -> checkpoint (.pth) and, if asked, its image encoder as ONNX."""
    import torch
    from minisam.reference.official import build_official, randomize
    cfg = make_config(args.model)
    sam = randomize(build_official(cfg), 0).eval()
    torch.save(sam.state_dict(), args.checkpoint)
    info = {}
    if args.onnx:
        t0 = time.perf_counter()
        x = torch.zeros(1, 3, cfg.img_size, cfg.img_size)
        with torch.no_grad():
            torch.onnx.export(sam.image_encoder, (x,), args.onnx, opset_version=ONNX_OPSET, input_names=["image"],
                              output_names=["embedding"], dynamo=False)
        info["export_s"] = time.perf_counter() - t0
        info["onnx_mb"] = os.path.getsize(args.onnx) / 2**20
    answer(info)


# --------------------------------------------------------------------------- profile

PROFILED = ("linear", "_chunked_attention", "attention_rel_pos", "rel_pos_dot_products", "gelu", "layer_norm",
            "add_layer_norm", "split_heads", "merge_heads", "neck")


def profile_forward(cfg, window_attention: str, params, x) -> dict:
    """One encoder forward (``params`` = params["image_encoder"], x [1, 3, S, S] preprocessed) with each op
    type timed, after an untimed one: {"stats": {op: [seconds, GFLOP, calls, elements]}, "total": s, ...}.

    The fast encoder looks its ops up by name in ``minisam.kernels.image_encoder``; each is wrapped
    with a timer (an op called inside another, as the neck's GEMMs, counts for the outer one), and
    ``block`` to know whether a block is global or windowed."""
    import minisam.kernels.image_encoder as enc
    stats = {}
    where = ["windowed"]
    depth = [0]
    real = {name: getattr(enc, name) for name in PROFILED + ("block",)}

    def add(op, dt, flop=0.0, elements=0):
        s = stats.setdefault(op, [0.0, 0.0, 0, 0])
        s[0] += dt
        s[1] += flop / 1e9
        s[2] += 1
        s[3] += elements

    def wrap(name):
        fn = real[name]

        def timed_op(*a, **kw):
            if depth[0]:
                return fn(*a, **kw)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                out = fn(*a, **kw)
            finally:
                dt = time.perf_counter() - t0
                depth[0] -= 1
            if name == "linear":
                m, k = a[0].size // a[0].shape[-1], a[0].shape[-1]
                add("linear (GEMM)", dt, 2.0 * m * k * a[1].shape[0])
            elif name in ("_chunked_attention", "attention_rel_pos"):
                A, T, hd = a[0].shape
                kind = "global attention" if where[0] == "global" else f"windowed attention ({window_attention})"
                add(kind, dt, 4.0 * A * T * T * hd)
            elif name == "rel_pos_dot_products":
                A, h, w, hd = a[0].shape
                add("rel-pos terms", dt, 2.0 * A * h * w * (a[1].shape[1] + a[2].shape[1]) * hd)
            elif name == "gelu":
                add("GELU", dt, 0.0, a[0].size)
            elif name in ("layer_norm", "add_layer_norm"):
                add("LayerNorm", dt, 0.0, a[0].size)
            elif name in ("split_heads", "merge_heads"):
                add("q/k/v to calls and back (windows, heads: copies)", dt, 0.0, a[0].size)
            else:
                add("neck", dt, encoder_op_flops(cfg)["neck"])
            return out
        return timed_op

    def block(p, tokens, normed, num_heads, window_size, *rest):
        where[0] = "windowed" if window_size > 0 else "global"
        return real["block"](p, tokens, normed, num_heads, window_size, *rest)

    saved = enc._WINDOW_ATTENTION
    try:
        for name in PROFILED:
            setattr(enc, name, wrap(name))
        enc.block = block
        enc._WINDOW_ATTENTION = window_attention
        enc.image_encoder(params, cfg, x)                      # compiles the variant's kernels if needed
        stats.clear()
        t0 = time.perf_counter()
        enc.image_encoder(params, cfg, x)
        total = time.perf_counter() - t0
    finally:
        for name, fn in real.items():
            setattr(enc, name, fn)
        enc._WINDOW_ATTENTION = saved
    stats["other (reshapes, residual adds, allocations)"] = [
        total - sum(s[0] for s in stats.values()), 0.0, 0, 0]
    return dict(stats=stats, total=total, window_attention=window_attention)


def sweep_global_attention(cfg, repeats: int = 3) -> dict:
    """The global attention alone, on random [nH, G*G, hd] inputs, per (key rows, score budget)."""
    from minisam.kernels.attention import block_sizes, flash_attention_rel_pos
    G, nH = cfg.image_embedding_size, cfg.encoder_num_heads
    hd, T = cfg.encoder_embed_dim // nH, G * G
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((nH, T, hd), dtype=np.float32) * np.float32(s) for s in (hd ** -0.5, 1, 1))
    rel_h, rel_w = (rng.standard_normal((nH, T, G), dtype=np.float32) for _ in range(2))
    flop = 4.0 * nH * T * T * hd
    rows = []
    for key_rows, budget in SWEEP:
        fn = lambda: flash_attention_rel_pos(q, k, v, rel_h, rel_w, key_rows, budget)  # noqa: E731
        fn()
        best = min(timed(fn)[1] for _ in range(repeats))
        rows.append(dict(key_rows=key_rows, budget=budget, blocks=block_sizes(nH, T, G, G, key_rows, budget),
                         seconds=best, gflops=flop / best / 1e9))
    return dict(rows=rows, shape=[nH, T, hd])


def _attention_gemms_only(lo, hi, q, k, v, calls, q_rows, k_rows, kw):
    """Tasks [lo, hi) of ``kernels.attention._flash_tasks`` with only its two GEMMs per key block."""
    A, T, hd = q.shape
    n_qb = -(-T // q_rows)
    ST = np.empty((calls, k_rows * kw, q_rows), np.float32)                    # [calls, kb*kw, r] scores^T
    PV = np.empty((calls, q_rows, hd), np.float32)                             # [calls, r, hd]
    for task in range(lo, hi):
        g, qb = divmod(task, n_qb)
        n0, i0 = g * calls, qb * q_rows
        n1, i1 = min(A, n0 + calls), min(T, i0 + q_rows)
        for j0 in range(0, T, k_rows * kw):
            j1 = min(T, j0 + k_rows * kw)
            st = ST[:n1 - n0, :j1 - j0, :i1 - i0]
            np.matmul(k[n0:n1, j0:j1], q[n0:n1, i0:i1].transpose(0, 2, 1), out=st)
            np.matmul(st.transpose(0, 2, 1), v[n0:n1, j0:j1], out=PV[:n1 - n0, :i1 - i0])


def gemm_ceiling(cfg, repeats: int = 3) -> dict:
    """The encoder's GEMMs alone, at the shapes and with the threading the fast path gives them, on
    random inputs: every linear layer (one GEMM, BLAS's threads), the attention's two GEMMs per
    block of the blocked attention (``block_sizes``; minisam's threads, BLAS held to one thread
    each), the rel-pos products (``kernels.layers.rel_pos_terms``) and the neck's two convs.
    Their sum, best of ``repeats`` per shape times its count per forward, is the time the encoder
    would take if everything between the GEMMs were free: the ceiling of its share of the GEMM
    peak with this BLAS. {"rows": [{op, shape, count, seconds, gflop}], ...}."""
    from minisam.kernels.attention import block_sizes
    from minisam.kernels.layers import rel_pos_terms
    from minisam.kernels.threads import parallel_blas
    D, G, P, C = cfg.encoder_embed_dim, cfg.image_embedding_size, cfg.patch_size, cfg.prompt_embed_dim
    nH, M = cfg.encoder_num_heads, cfg.encoder_mlp_dim
    hd, T, w = D // nH, G * G, cfg.window_size
    Gp = -(-G // w) * w
    n_glob = sum(1 for i in range(cfg.encoder_depth) if cfg.block_window_size(i) == 0)
    n_win = cfg.encoder_depth - n_glob
    rng = np.random.default_rng(0)

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    def best(fn):
        fn()
        return min(timed(fn)[1] for _ in range(repeats))

    rows = []

    def add(op, shape, count, flop, fn):
        rows.append(dict(op=op, shape=shape, count=count, seconds=best(fn), gflop=flop / 1e9))

    depth = cfg.encoder_depth
    for op, m, kk, n, count in (("linear: patch embed", T, 3 * P * P, D, 1),
                                ("linear: qkv", T, D, 3 * D, depth), ("linear: proj", T, D, D, depth),
                                ("linear: mlp lin1", T, D, M, depth), ("linear: mlp lin2", T, M, D, depth),
                                ("neck: 1x1 conv", T, D, C, 1), ("neck: 3x3 conv (im2col)", T, 9 * C, C, 1)):
        a, b = rand(m, kk), rand(n, kk).T
        add(op, f"[{m}, {kk}] x [{kk}, {n}]", count, 2.0 * m * kk * n, lambda a=a, b=b: a @ b)
    for op, A, side, count in (("attention GEMMs, global", nH, G, n_glob), ("attention GEMMs, windowed", nH * (Gp // w) ** 2, w, n_win)):
        if count == 0:
            continue
        Tq = side * side
        q, k, v = rand(A, Tq, hd), rand(A, Tq, hd), rand(A, Tq, hd)
        calls, q_rows, k_rows = block_sizes(A, Tq, side, side)
        n_tasks = -(-A // calls) * -(-Tq // q_rows)
        add(op, f"{A} x [{Tq}, {hd}], blocks {calls}x{q_rows}x{k_rows * side}", count, 4.0 * A * Tq * Tq * hd,
            lambda q=q, k=k, v=v, args=(calls, q_rows, k_rows, side), n=n_tasks: parallel_blas(
                _attention_gemms_only, n, q, k, v, *args))
        qg, Rh, Rw = rand(A, side, side, hd), rand(side, side, hd), rand(side, side, hd)
        add("rel-pos terms" + op[len("attention GEMMs"):], f"{A} x [{side}, {side}, {hd}]", count,
            2.0 * A * Tq * 2 * side * hd, lambda qg=qg, Rh=Rh, Rw=Rw: rel_pos_terms(qg, Rh, Rw))
    return dict(rows=rows, seconds=sum(r["seconds"] * r["count"] for r in rows),
                gflop=sum(r["gflop"] * r["count"] for r in rows))


# --------------------------------------------------------------------------- the parent

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "micro"])
    ap.add_argument("--sides", default=None,
                    help="comma-separated, from " + ",".join(SIDES) + " (default: all; onnxruntime if installed)")
    ap.add_argument("--gemm-n", type=int, default=4096, help="side of the NumPy sgemm that measures the GEMM peak")
    ap.add_argument("--profile", action="store_true", help="per-op time and GFLOP/s of one minisam forward")
    ap.add_argument("--window-attention", default="blas,numba", help="variants to profile: blas, numba")
    ap.add_argument("--sweep", action="store_true", help="global attention alone, per block setting")
    ap.add_argument("--gemm-ceiling", action="store_true",
                    help="the encoder's GEMMs alone at its shapes: the share of the peak it could reach")
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    add_worker_args(ap, workers=SIDES + ("prepare",))
    args = ap.parse_args(argv)
    if args.worker == "prepare":
        prepare(args)
        return 0
    if args.worker:
        serve(args)
        return 0

    cfg = make_config(args.model)
    if args.sides is None:
        import importlib.util
        sides = [s for s in SIDES if s != "onnxruntime" or importlib.util.find_spec("onnxruntime")]
        if "onnxruntime" not in sides:
            print("onnxruntime is not installed (pip install -e .[bench]): no ONNX Runtime column")
    else:
        sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if "minisam" not in sides or any(s not in SIDES for s in sides):
        ap.error(f"--sides must include minisam and name only {', '.join(SIDES)}")
    gflop = encoder_flops(cfg) / 1e9
    S, G = cfg.img_size, cfg.image_embedding_size
    print(header(f"{args.model} set_image (1500x2250 image -> {S}x{S} -> {cfg.prompt_embed_dim}x{G}x{G} embedding)",
                 args.threads))
    print(f"encoder: {gflop:.1f} GFLOP per forward; median of {args.repeats} interleaved runs after one warm-up "
          f"set_image per side; sides: {', '.join(sides)}", flush=True)
    times, enc_times, rss = {s: [] for s in sides}, {s: [] for s in sides}, {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, f"{args.model}_random.pth")
        onnx_path = os.path.join(tmp, f"{args.model}_image_encoder.onnx")
        prep_args = ["--worker", "prepare", "--model", args.model, "--checkpoint", ckpt]
        if "onnxruntime" in sides:
            prep_args += ["--onnx", onnx_path]
        prep = start_worker(__file__, prep_args, worker_env("official", args.threads))
        prep_info = ask(prep)
        stop([prep])
        if "export_s" in prep_info:
            print(f"official image encoder exported to ONNX (opset {ONNX_OPSET}, torch.onnx.export) in "
                  f"{prep_info['export_s']:.1f} s: {prep_info['onnx_mb']:.0f} MB", flush=True)
        with workers(__file__, sides, lambda side: ["--worker", side, "--model", args.model, "--checkpoint", ckpt,
                                                    "--onnx", onnx_path, "--gemm-n", str(args.gemm_n)],
                     lambda side: worker_env(side, args.threads, args.keep_blas_env)) as (procs, info):
            for side, _, r in interleaved(procs, ["run"], args.repeats):
                times[side].append(r["time"])
                enc_times[side].append(r["encoder_time"])
                rss[side] = r["peak_rss_mb"]
            embs = {}
            for side in sides:
                path = os.path.join(tmp, side + ".npy")
                ask(procs[side], "save " + path)
                embs[side] = np.load(path)
            profiles = []
            if args.profile:
                for variant in [v.strip() for v in args.window_attention.split(",") if v.strip()]:
                    profiles.append(ask(procs["minisam"], "profile " + variant))
            sweep = ask(procs["minisam"], "sweep") if args.sweep else None
            ceiling = ask(procs["minisam"], "ceiling") if args.gemm_ceiling else None
    peak = info["minisam"]["gemm_gflops"]
    print(f"\nthis machine's float32 GEMM peak: {peak:.0f} GFLOP/s (NumPy sgemm {args.gemm_n}^3, best of 3, "
          f"in the minisam worker)")
    for side in sides:
        med, enc_med = statistics.median(times[side]), statistics.median(enc_times[side])
        i = info[side]
        print(f"\n[{side}] set_image times {fmt_times(times[side])} s  median {med:.2f} s; encoder alone median "
              f"{enc_med:.2f} s = {gflop / enc_med:.1f} GFLOP/s = {gflop / enc_med / peak:.0%} of the GEMM peak")
        print(f"  first set_image (warm-up) {i['warmup_s']:.2f} s; peak RSS (VmHWM): after loading "
              f"{i['rss_loaded_mb']:.0f} MB, load + one set_image {i['rss_first_mb']:.0f} MB, after every run "
              f"{rss[side]:.0f} MB")
        for line in describe_worker(i):
            print("  " + line)
    ref_side = "official" if "official" in embs else "minisam"
    ref = embs[ref_side]
    print()
    for side in sides:
        if side != ref_side:
            err = np.abs(embs[side] - ref).max()
            print(f"embeddings {side} vs {ref_side}: max abs diff {err:.2e} = {err / np.abs(ref).max():.1e} x max|{ref_side}|")
    tm = statistics.median(times["minisam"])
    em = statistics.median(enc_times["minisam"])
    for other in sides[1:]:
        to, eo = statistics.median(times[other]), statistics.median(enc_times[other])
        print(f"minisam/{other}: set_image {tm / to:.2f}x, encoder alone {em / eo:.2f}x")
    print(f"minisam encoder at {gflop / em / peak:.0%} of the GEMM peak (target >= 80%)")
    first = info["minisam"]["rss_first_mb"]
    print(f"minisam peak RSS for load + one set_image: {first:.0f} MB (VmHWM of a fresh process; target <= 1000 MB: "
          f"{verdict(first <= 1000)})")
    for p in profiles:
        print_profile(p, peak)
    if sweep:
        print(f"\nglobal attention alone, [nH, T, hd] = {sweep['shape']}, best of 3 (calls, query rows, key rows):")
        for r in sweep["rows"]:
            print(f"  key rows {r['key_rows']:3d}, budget {r['budget']:>8d} floats {str(tuple(r['blocks'])):>16s}: "
                  f"{r['seconds'] * 1e3:8.1f} ms  {r['gflops']:6.1f} GFLOP/s = {r['gflops'] / peak:.0%} of peak")
    if ceiling:
        print_ceiling(ceiling, peak, gflop, em)
    print_ending()
    return 0


def print_ceiling(c: dict, peak: float, gflop: float, encoder_s: float) -> None:
    print("\nthe encoder's GEMMs alone, at its shapes and threading (best of 3 each, random inputs):")
    print(f"  {'GEMM':<34s} {'shape':<44s} {'count':>5s} {'seconds':>8s} {'GFLOP/s':>8s} {'of peak':>7s}")
    for r in c["rows"]:
        rate = r["gflop"] / r["seconds"]
        print(f"  {r['op']:<34s} {r['shape']:<44s} {r['count']:5d} {r['seconds'] * r['count']:8.3f} {rate:8.1f} "
              f"{rate / peak:7.0%}")
    rate = c["gflop"] / c["seconds"]
    print(f"  all GEMMs of one forward: {c['gflop']:.1f} GFLOP in {c['seconds']:.3f} s = {rate:.1f} GFLOP/s = "
          f"{rate / peak:.0%} of the GEMM peak: the encoder's ceiling with this BLAS (everything else free)")
    print(f"  the whole encoder (median above): {encoder_s:.3f} s; outside these GEMMs: {encoder_s - c['seconds']:.3f} s "
          f"({(encoder_s - c['seconds']) / encoder_s:.0%}); 80% of the peak needs the encoder in "
          f"{gflop / (0.8 * peak):.3f} s")


def print_profile(p: dict, peak: float) -> None:
    total = p["total"]
    print(f"\nper-op profile, one minisam encoder forward, windowed attention '{p['window_attention']}': "
          f"{total:.2f} s")
    print(f"  {'op':<66s} {'calls':>5s} {'seconds':>8s} {'share':>6s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'of peak':>7s} "
          f"{'ns/elem':>7s}")
    for op, (sec, gf, calls, elements) in sorted(p["stats"].items(), key=lambda kv: -kv[1][0]):
        rate = f"{gf / sec:8.1f}" if gf and sec > 0 else f"{'':8s}"
        share = f"{gf / sec / peak:7.0%}" if gf and sec > 0 else f"{'':7s}"
        per = f"{sec / elements * 1e9:7.2f}" if elements else f"{'':7s}"
        print(f"  {op:<66s} {calls:5d} {sec:8.3f} {sec / total:6.1%} {gf:7.1f} {rate} {share} {per}")


if __name__ == "__main__":
    sys.exit(main())
