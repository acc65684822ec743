"""Benchmark: ``minisam click``, the time from a click to the mask redrawn.

    python benchmarks/click_latency.py [--models micro vit_b] [--rounds 5] [--height 1500 --width 2250] [--threads N]
                                       [--vit-b-checkpoint PATH]

Each model runs in its own worker subprocess (it never imports torch), which builds the
session and its view exactly as ``minisam click`` does (:class:`minisam.interactive.ClickSession`,
:class:`minisam.interactive.view.ClickView`, a 12 x 7.5 in figure at 100 dpi), on an Agg canvas:

- ``micro``: the synthetic scene ``minisam click`` opens (``make_scene``, seed 5, 128 x 128);
- ``vit_b``: a randomized official vit_b (saved by the official package, as the other benchmarks
  do: the weights change no timing; or any vit_b ``.pth`` given with ``--vit-b-checkpoint``) on a real photo (matplotlib's grace_hopper.jpg resized to
  ``--height`` x ``--width``, SA-1B's typical 1500 x 2250).

A click is a matplotlib press and release event at an image pixel, sent through the canvas as
a window delivers it; the time runs until the figure is drawn again (Agg renders the whole
figure; a window then copies the pixels to the screen, not counted here). Each round resets the
session (untimed) and times three clicks: positive, negative (the previous logits fed back),
positive. Reported, as medians over the clicks: the click, ``predict`` (prompt encoder, mask
decoder, upsampling to full size, stability score), the decoder's share (``predict_low_res``:
the prompt encoder and the mask decoder), and the rest (events, overlay, redraw); then the same
with the internals panels shown (traced decoder, three more panels). Targets: vit_b <= 300 ms,
micro <= 50 ms a click.

Also printed: the embedding time (cache off), peak RSS (VmHWM) of each worker, the BLAS kernel
and threads, OPENBLAS_* (unset for the worker unless ``--keep-blas-env``), the load average.
Timings mean something only on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_worker_args, describe_minisam, fmt_times, header, minisam_env_info, photo,  # noqa: E402
                    print_ending, run_json, save_random_vit_b, start_worker, verdict, worker_env)

TARGETS_MS = {"micro": 50.0, "vit_b": 300.0}


def vmhwm_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def serve(a) -> dict:
    """The worker: build the session and view, time the clicks, return one JSON report."""
    import matplotlib
    matplotlib.use("Agg")
    import numpy as np
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import KeyEvent, MouseEvent

    from minisam import SamPredictor, build_sam, sam_model_registry
    from minisam.interactive import ClickSession
    from minisam.interactive.view import ClickView
    if a.checkpoint:
        sam = build_sam(a.checkpoint)
        image = photo(a.height, a.width)
    else:
        from minisam.training.shapes import make_scene
        sam = sam_model_registry[a.model]()
        image = make_scene(np.random.default_rng(5), sam.config.img_size).image
    H, W = image.shape[:2]
    predictor = SamPredictor(sam)
    decoder = []
    low_res = predictor.predict_low_res

    def timed_low_res(*args, **kwargs):
        t0 = time.perf_counter()
        out = low_res(*args, **kwargs)
        decoder.append(time.perf_counter() - t0)
        return out
    predictor.predict_low_res = timed_low_res

    t0 = time.perf_counter()
    session = ClickSession(image, predictor, cache=False, out_dir=tempfile.mkdtemp())
    embed_s = time.perf_counter() - t0
    view = ClickView(session, fig=plt.figure(figsize=(12, 7.5), dpi=100))
    canvas = view.fig.canvas
    canvas.draw()

    def send(name, x, y, button):
        px, py = view.ax.transData.transform((x, y))
        canvas.callbacks.process(name, MouseEvent(name, canvas, px, py, button=button))

    def key(k):
        canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, k, 0, 0))

    rng = np.random.default_rng(0)
    clicks = [((0.45, 0.4), 1), ((0.8, 0.15), 3), ((0.5, 0.55), 1)]  # (x, y) as image fractions, button
    results = {}
    for internals in (False, True):
        if internals:
            key("i")
        times = {"click": [], "predict": [], "decoder": [], "rest": []}
        for round_ in range(a.rounds + 1):  # round 0 warms up
            key("r")
            for (fx, fy), button in clicks:
                x = fx * W + rng.uniform(-0.02, 0.02) * W
                y = fy * H + rng.uniform(-0.02, 0.02) * H
                decoder.clear()
                t0 = time.perf_counter()
                send("button_press_event", x, y, button)
                send("button_release_event", x, y, button)
                dt = time.perf_counter() - t0  # the view drew the figure (Agg: draw_idle draws at once)
                if round_ == 0:
                    continue
                assert len(session.state.points) >= 1 and decoder, "the click did not reach the model"
                times["click"].append(dt)
                times["predict"].append(session.state.seconds)
                times["decoder"].append(sum(decoder))
                times["rest"].append(dt - session.state.seconds)
        results["internals" if internals else "plain"] = times
    plt.close(view.fig)
    report = dict(image=[H, W], embed_s=embed_s, results=results, vmhwm_mb=vmhwm_mb())
    report.update(minisam_env_info())
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=list(TARGETS_MS), default=list(TARGETS_MS))
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds of three clicks each (after one warm-up round)")
    ap.add_argument("--height", type=int, default=1500, help="vit_b photo height")
    ap.add_argument("--width", type=int, default=2250, help="vit_b photo width")
    ap.add_argument("--vit-b-checkpoint", metavar="PATH",
                    help="a vit_b .pth to time (default: a randomized official vit_b saved to a temporary folder)")
    ap.add_argument("--model", default="micro", help=argparse.SUPPRESS)
    add_worker_args(ap, workers=("minisam", "prepare"))
    args = ap.parse_args(argv)
    if args.worker == "prepare":
        save_random_vit_b(args.checkpoint)
        return 0
    if args.worker:
        import json
        print(json.dumps(serve(args)), flush=True)
        return 0

    print(header(f"minisam click: click -> mask redrawn (Agg canvas, 1200x750 px figure), {args.rounds} rounds "
                 "of 3 clicks a model", args.threads), flush=True)
    common = ["--rounds", str(args.rounds), "--height", str(args.height), "--width", str(args.width)]
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            extra = ["--model", model]
            if model == "vit_b" and args.vit_b_checkpoint:
                extra = ["--checkpoint", os.path.abspath(args.vit_b_checkpoint)]
            elif model == "vit_b":
                ckpt = os.path.join(tmp, "vit_b_random.pth")
                if start_worker(__file__, ["--worker", "prepare", "--checkpoint", ckpt], worker_env("official")).wait():
                    raise RuntimeError("could not prepare the random vit_b checkpoint")
                extra = ["--checkpoint", ckpt]
            reports[model] = run_json(__file__, ["--worker", "minisam", *extra, *common],
                                      worker_env("minisam", args.threads, args.keep_blas_env))

    def ms(v):
        return statistics.median(v) * 1e3

    for model, r in reports.items():
        H, W = r["image"]
        print(f"\n[{model}] {W}x{H} image; embedding {r['embed_s']:.2f} s; peak RSS (VmHWM) {r['vmhwm_mb']:.0f} MB")
        for kind, t in r["results"].items():
            click = ms(t["click"])
            print(f"  {kind:9s} click {click:7.1f} ms: predict {ms(t['predict']):6.1f} ms, of which prompt encoder + "
                  f"decoder {ms(t['decoder']):6.1f} ms ({ms(t['decoder']) / click:.0%} of the click); events + "
                  f"redraw {ms(t['rest']):6.1f} ms")
            print(f"            clicks: {fmt_times(t['click'])} s")
        for line in describe_minisam(r):
            print("  " + line)
    print()
    for model, r in reports.items():
        click = ms(r["results"]["plain"]["click"])
        target = TARGETS_MS[model]
        share = ms(r["results"]["plain"]["decoder"]) / click
        print(f"{model}: click to redrawn mask {click:.1f} ms (median), target <= {target:.0f} ms: "
              f"{verdict(click <= target)}; decoder share {share:.0%}")
    print_ending()
    return 0


if __name__ == "__main__":
    sys.exit(main())
