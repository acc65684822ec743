"""``minisam parity``: run the official PyTorch SAM and minisam on the same weights, image and
prompts, and print a table of every traced intermediate with its error and verdict.

- Without ``--against``: imports torch and ``segment_anything`` (only here, inside this
  command), builds the official model at minisam's configuration with minisam's weights,
  records every module output with forward hooks (``SamPredictor.set_image`` then three
  prompts: one point with 3 masks, two points + a box with 1 mask, and the point again fed
  its own best low-res logits), runs minisam with its trace, and compares.
- ``--dump FILE`` also saves the official intermediates, the image, the prompts and a
  fingerprint of the weights (.npz).
- ``--against FILE`` compares minisam to such a dump **without torch**.

Tolerances (the suite's): intermediates 1e-4 x max|ref|; low-res logits 1e-3 x max|ref|;
IoU 1e-3 absolute; binary masks: at most 1e-4 of the pixels differ. Only the encoder's
block-level outputs are kept (``image_encoder.blocks.i``, not their sub-modules) so that a
vit_h dump stays a few hundred MB.
"""

from __future__ import annotations

import hashlib
import json
from typing import Dict, List, Tuple

import numpy as np

from minisam.errors import MinisamError

DUMP_VERSION = 1
TOL_TRACE, TOL_LOGITS, TOL_IOU, TOL_MASK = 1e-4, 1e-3, 1e-3, 1e-4


def add_parser(sub):
    from minisam.cli.model_args import add_model_args
    p = sub.add_parser("parity", help="compare minisam with the official PyTorch code, module by module",
                       description="Run the official segment_anything code and minisam on the same weights, "
                                   "image and prompts; print max abs/rel error of every traced module.")
    add_model_args(p)
    p.add_argument("--image", default=None, metavar="IMG",
                   help="image file (default: matplotlib's sample grace_hopper.jpg)")
    p.add_argument("--torch-device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the official code runs (auto = CUDA when present; TF32 off)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dump", default=None, metavar="FILE", help="also save the official intermediates (.npz)")
    g.add_argument("--against", default=None, metavar="FILE",
                   help="compare with a --dump file instead of running torch (no torch needed)")
    return p


# ----------------------------------------------------------------------------- shared pieces

def _prompts(H: int, W: int) -> List[Tuple[str, dict]]:
    """Prompts in original image pixels. "feedback" also gets the best low-res logits of "point"
    (:func:`_run`)."""
    point = dict(point_coords=[[0.45 * W, 0.4 * H]], point_labels=[1], multimask_output=True)
    return [
        ("point", point),
        ("box_points", dict(point_coords=[[0.5 * W, 0.5 * H], [0.2 * W, 0.15 * H]], point_labels=[1, 0],
                            box=[0.1 * W, 0.1 * H, 0.85 * W, 0.9 * H], multimask_output=False)),
        ("feedback", dict(point, multimask_output=False)),
    ]


def _keep(key: str) -> bool:
    return not key.startswith("image_encoder") or len(key.split(".")) <= 3


def _flatten(prefix: str, trace: dict, out: Dict[str, np.ndarray]) -> None:
    for k, v in trace.items():
        if not _keep(k) or k.endswith(".attn_weights"):
            continue
        if isinstance(v, (tuple, list)):
            for i, a in enumerate(v):
                out[f"{prefix}{k}[{i}]"] = np.asarray(a)
        else:
            out[f"{prefix}{k}"] = np.asarray(v)


def _run(predictor, image, set_image, predict, feedback_mask=None) -> Dict[str, np.ndarray]:
    """Drive one side: ``set_image(image) -> trace``, ``predict(kwargs) -> ((masks, iou, low), trace)``.

    The "feedback" prompt's ``mask_input`` is ``feedback_mask`` when given (minisam's side gets the
    official side's, see :func:`_best_low`), else this side's own best "point" logits. Both sides
    then feed the prompt encoder's mask path the same input, so its intermediates compare the
    modules and not the small difference between the two sides' logits: that path starts with a
    LayerNorm2d over mask_in_chans // 4 channels (2 in the tiny configs, 4 in SAM's), which
    magnifies a difference in its input by ~40x where a pixel's channels are nearly equal."""
    results: Dict[str, np.ndarray] = {}
    _flatten("", set_image(image), results)
    H, W = image.shape[:2]
    best_low = None
    for name, kw in _prompts(H, W):
        kw = {k: (np.asarray(v, np.float64) if k != "multimask_output" else v) for k, v in kw.items()}
        if name == "feedback":
            kw["mask_input"] = best_low if feedback_mask is None else feedback_mask
        (masks, iou, low), trace = predict(kw)
        _flatten(f"{name}:", trace, results)
        results[f"{name}:output.low_res_logits"] = low
        results[f"{name}:output.iou_predictions"] = iou
        results[f"{name}:output.masks"] = masks
        if name == "point":
            best_low = _best_low(results)
    return results


def _best_low(results: Dict[str, np.ndarray]) -> np.ndarray:
    """The "point" prompt's low-res logits of highest predicted IoU, as "feedback" gets them.  [1, h, w]"""
    iou = np.asarray(results["point:output.iou_predictions"])            # [3]
    return np.asarray(results["point:output.low_res_logits"])[int(np.argmax(iou))][None]  # [1, h, w]


def _fingerprint(params_flat: Dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(params_flat):
        h.update(k.encode())
        h.update(np.ascontiguousarray(params_flat[k], np.float32).tobytes())
    return h.hexdigest()


def _load_image(path):
    from minisam.utils.images import read_image
    if path is None:
        import matplotlib.cbook as cbook
        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return read_image(str(path))


# ----------------------------------------------------------------------------- official side

def _official(cfg, params_flat, device_choice: str):
    try:
        import torch
        import segment_anything  # noqa: F401  (only to fail early with a clear message)
    except ImportError as exc:
        raise MinisamError(f"parity needs torch and segment_anything ({exc}); install them "
                           "(pip install torch segment-anything) or use --against FILE") from None
    from minisam.reference.official import build_official
    if device_choice == "auto":
        device_choice = "cuda" if torch.cuda.is_available() else "cpu"
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise MinisamError("--torch-device cuda: torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build_official(cfg)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params_flat.items()}, strict=True)
    model.eval().to(device_choice)
    name = torch.cuda.get_device_name(0) if device_choice == "cuda" else "CPU"
    return model, f"torch {torch.__version__} {device_choice} ({name})"


def _run_official(model, image):
    from segment_anything import SamPredictor as OfficialPredictor
    from minisam.reference.official import record

    op = OfficialPredictor(model)
    return _run(op, image, lambda img: record(model, lambda: op.set_image(img))[1],
                lambda kw: record(model, lambda: op.predict(**kw)))


def _run_minisam(sam, image, feedback_mask=None):
    from minisam.predictor import SamPredictor
    pred = SamPredictor(sam)

    def set_image(img):
        t = {}
        pred.set_image(img, trace=t)
        return t

    def predict(kw):
        t = {}
        return pred.predict(**kw, trace=t), t
    return _run(pred, image, set_image, predict, feedback_mask)


# ----------------------------------------------------------------------------- comparison

def compare_table(ref: Dict[str, np.ndarray], ours: Dict[str, np.ndarray], device: str) -> Tuple[List[str], bool]:
    """One row per reference key: path, shape, max abs err, rel err, verdict, device."""
    rows, all_ok = [], True
    head = f"{'module path':<72} {'shape':<22} {'max abs err':>11} {'rel err':>10}  {'verdict':<7} device"
    rows.append(head)
    rows.append("-" * len(head))
    for key, r in ref.items():
        g = ours.get(key)
        shape = str(tuple(r.shape))
        if g is None and ":output." not in key:
            # a module minisam does not trace (its output is checked through the next key)
            rows.append(f"{key:<72} {shape:<22} {'-':>11} {'-':>10}  {'untraced':<7} {device}")
            continue
        if g is None or tuple(np.shape(g)) != tuple(r.shape):
            verdict, a, rel = "FAIL", float("nan"), float("nan")
            shape += " (missing)" if g is None else f" != {tuple(np.shape(g))}"
        elif key.endswith("output.masks"):
            frac = float(np.mean(np.asarray(g) != np.asarray(r)))
            a, rel, verdict = frac, frac, ("pass" if frac <= TOL_MASK else "FAIL")
        else:
            r64, g64 = np.asarray(r, np.float64), np.asarray(g, np.float64)
            a = float(np.max(np.abs(g64 - r64))) if r.size else 0.0
            scale = float(np.max(np.abs(r64))) if r.size else 0.0
            rel = a / scale if scale > 0 else a
            if key.endswith("output.iou_predictions"):
                ok = a <= TOL_IOU
            elif key.endswith("output.low_res_logits"):
                ok = rel <= TOL_LOGITS
            else:
                ok = rel <= TOL_TRACE
            verdict = "pass" if ok else "FAIL"
        all_ok &= verdict == "pass"
        rows.append(f"{key:<72} {shape:<22} {a:>11.3e} {rel:>10.3e}  {verdict:<7} {device}")
    return rows, all_ok


def _save_dump(path, ref, image, meta) -> None:
    keys = list(ref)
    arrays = {f"a{i}": ref[k] for i, k in enumerate(keys)}
    with open(path, "wb") as f:
        np.savez_compressed(f, __keys__=np.array(json.dumps(keys)), __meta__=np.array(json.dumps(meta)),
                            __image__=image, **arrays)


def _load_dump(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = json.loads(str(z["__keys__"]))
            meta = json.loads(str(z["__meta__"]))
            image = z["__image__"]
            ref = {k: z[f"a{i}"] for i, k in enumerate(keys)}
    except FileNotFoundError:
        raise MinisamError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise MinisamError(f"{path}: not a minisam parity dump ({exc})") from None
    if meta.get("version") != DUMP_VERSION:
        raise MinisamError(f"{path}: parity dump version {meta.get('version')}, expected {DUMP_VERSION}")
    return ref, image, meta


def run(args) -> int:
    from minisam.checkpoints.param_tree import flatten
    from minisam.cli.model_args import load_model
    sam = load_model(args)
    params_flat = flatten(sam.params)
    fingerprint = _fingerprint(params_flat)
    if args.against:
        ref, image, meta = _load_dump(args.against)
        if meta["weights_sha256"] != fingerprint:
            raise MinisamError(f"{args.against}: the dump was made with other weights "
                               f"(sha256 {meta['weights_sha256'][:12]}..., these are {fingerprint[:12]}...)")
        device = f"dump: {meta['device']}"
    else:
        image = _load_image(args.image)
        model, device = _official(sam.config, params_flat, args.torch_device)
        ref = _run_official(model, image)
        if args.dump:
            meta = {"version": DUMP_VERSION, "device": device, "weights_sha256": fingerprint,
                    "config": sam.config.to_dict(), "image": args.image or "grace_hopper.jpg"}
            _save_dump(args.dump, ref, image, meta)
    ours = _run_minisam(sam, image, _best_low(ref))
    rows, ok = compare_table(ref, ours, device)
    print(f"minisam parity: image {image.shape[1]}x{image.shape[0]}, tolerances: intermediates {TOL_TRACE:g} x max|ref|, "
          f"low-res logits {TOL_LOGITS:g} x max|ref|, IoU {TOL_IOU:g} abs, masks {TOL_MASK:g} of pixels")
    print("\n".join(rows))
    n_pass = sum("  pass " in r for r in rows[2:])
    n_fail = sum("  FAIL " in r for r in rows[2:])
    n_skip = len(rows) - 2 - n_pass - n_fail
    print(f"{n_pass}/{n_pass + n_fail} pass" + (f", {n_fail} FAIL" if n_fail else "")
          + (f" ({n_skip} official modules not traced by minisam)" if n_skip else ""))
    if args.dump:
        print(f"official intermediates saved to {args.dump}")
    return 0 if ok else 1
