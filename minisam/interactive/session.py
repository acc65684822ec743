"""``ClickSession``: interactive segmentation as a state machine over mouse and key events.

Paper: Kirillov et al. 2023, section 2 (the promptable task: a valid mask for any prompt)
and section 3 (three masks for an ambiguous prompt, ranked by predicted IoU; training simulates
an interactive session, giving the model the previous iteration's unthresholded mask logits
with each new point, appendix A), and section 4 (the data engine's assisted-manual
stage: annotators click foreground and background points in a browser tool powered by SAM).
The official repository ships that browser demo outside its pip package; what a click does to
the model is ``segment_anything/predictor.py`` (``SamPredictor.predict``) with ``mask_input``,
as its ``notebooks/predictor_example.ipynb`` feeds the previous low-res logits back.

The session holds the whole state (points, labels, box, the logits fed back, the chosen mask,
the undo history) and takes events in **image pixel coordinates** (the frame of
``SamPredictor.predict``: pixel (col, row) centres at whole numbers, as ``imshow`` draws them).
It draws nothing: :class:`minisam.interactive.view.ClickView` turns matplotlib events (a window,
or a Jupyter widget through ipympl) into calls here, and tests call it directly.

What one prompt does:

1. ``SamPredictor.predict`` on every point and the box, ``multimask_output=True`` (the three
   ambiguity masks), with ``mask_input`` = the low-res logits of the mask shown before
   (``feed_logits``; the ``f`` key turns it off), ``return_logits=True``;
2. masks = logits > ``mask_threshold``; stability score = IoU of the masks cut at
   threshold +- 1 (``calculate_stability_score`` with the automatic generator's default
   offset, on the full-size logits as the generator computes it);
3. the mask shown is the one of highest predicted IoU until the user cycles to another.

The internals (:meth:`ClickSession.internals`) are the decoder's own tensors from a trace of
that same call (``trace`` only observes: the outputs are bit-equal with and without it).

Shapes (``docs/shapes.md``): H x W the image, K' = 3 masks, R the low-res side, G the
embedding grid, S the model input side, nH decoder heads, Tt decoder tokens, C the prompt width.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Tuple

import numpy as np

from minisam.errors import MinisamError, PromptError
from minisam.predictor import SamPredictor

STABILITY_OFFSET = 1.0  # SamAutomaticMaskGenerator's stability_score_offset default
HISTORY_LIMIT = 100  # undo steps kept
ATTENTION_KEY = "mask_decoder.transformer.final_attn_token_to_image.attn_weights"  # [N, nH, Tt, GG]
DENSE_PE_KEY = "prompt_encoder.pe_layer"  # [C, G, G]

#: key -> action. Matplotlib's own key bindings are switched off by the view.
KEYS = {
    "c": "cycle", "tab": "cycle", " ": "cycle",
    "u": "undo", "z": "undo", "ctrl+z": "undo", "backspace": "undo",
    "r": "reset", "escape": "reset",
    "a": "automatic",
    "s": "save",
    "i": "internals",
    "f": "feedback",
    "h": "help", "?": "help",
}

HELP = [
    ("click", "positive point"),
    ("right-click", "negative point"),
    ("shift-click", "negative point"),
    ("drag", "box"),
    ("c", "cycle the 3 masks"),
    ("u", "undo"),
    ("r", "reset"),
    ("a", "automatic masks"),
    ("s", "save PNG + JSON"),
    ("i", "internals"),
    ("f", "logits feedback"),
    ("h", "help"),
    ("q", "quit"),
]


@dataclass(frozen=True)
class ClickState:
    """One step of the session: the prompts and what the model returned for them."""

    points: Tuple[Tuple[float, float], ...] = ()  # (x, y) image pixels
    labels: Tuple[int, ...] = ()  # 1 foreground, 0 background
    box: Optional[Tuple[float, float, float, float]] = None  # x0, y0, x1, y1 image pixels
    mask_input: Optional[np.ndarray] = None  # [1, R, R] the logits fed into this prediction
    masks: Optional[np.ndarray] = None  # [K', H, W] bool
    scores: Optional[np.ndarray] = None  # [K'] predicted IoU
    stability: Optional[np.ndarray] = None  # [K'] stability score
    low_res: Optional[np.ndarray] = None  # [K', R, R] logits
    chosen: int = 0  # the mask shown (and fed back next)
    trace: Optional[dict] = None  # the decoder trace of this prediction (internals shown)
    seconds: float = 0.0  # time of the predict call

    @property
    def empty(self) -> bool:
        return self.masks is None


class ClickSession:
    """Interactive segmentation of one image with one predictor.

    ``ClickSession(image, predictor)`` computes the image embedding (from the disk cache when
    it holds this image and model: :mod:`minisam.interactive.cache`), then takes events:
    :meth:`press`, :meth:`motion`, :meth:`release` (image pixel coordinates; ``None`` or a
    point outside the image is ignored) and :meth:`key` (see :data:`KEYS`). The same actions
    are methods: :meth:`add_point`, :meth:`set_box`, :meth:`cycle`, :meth:`choose`,
    :meth:`undo`, :meth:`reset`, :meth:`automatic`, :meth:`save`. :meth:`show` opens the view.

    ``cache``: True (the default folder), a folder, or False (no disk cache). ``embed=False``
    leaves the embedding to a later :meth:`embed` call (the window computes it in the
    background while it shows progress). ``name`` is the stem of saved files, ``source`` what
    the JSON records as the image (a path), ``out_dir`` where :meth:`save` writes.
    """

    def __init__(self, image, predictor, *, name: str = "image", source: Optional[str] = None,
                 cache=True, feed_logits: bool = True, out_dir: str = "minisam_click",
                 embed: bool = True, drag_pixels: Optional[float] = None, model_name: Optional[str] = None):
        from minisam.utils.images import to_rgb_uint8
        self.image = to_rgb_uint8(image)  # [H, W, 3] uint8 RGB
        self.predictor = predictor
        self.H, self.W = self.image.shape[:2]
        self.name = name
        self.source = source
        self.model_name = model_name
        self.cache = cache
        self.feed_logits = bool(feed_logits)
        self.out_dir = out_dir
        # a press and release further apart than this (image pixels) is a box, not a click
        self.drag_pixels = float(drag_pixels) if drag_pixels is not None else max(2.0, 0.01 * max(self.H, self.W))
        self.state = ClickState()
        self.history: List[ClickState] = []
        self.show_internals = False
        self.show_help = False
        self.show_automatic = False
        self.automatic_records: Optional[list] = None
        self.message = ""
        self.ready = False
        self.busy: Optional[str] = None  # what a background job of the view is doing
        self.cache_path: Optional[str] = None
        self.from_cache = False
        self.embed_seconds = 0.0
        self.drag_box: Optional[Tuple[float, float, float, float]] = None  # the box being dragged
        self._press: Optional[Tuple[float, float, bool]] = None
        if embed:
            self.embed()

    # ------------------------------------------------------------------ the embedding

    def embed(self) -> None:
        """Set the image on the predictor (the encoder, or the cached embedding)."""
        from minisam.interactive.cache import set_image_cached
        t0 = time.perf_counter()
        if self.cache is False:
            self.predictor.set_image(self.image)
            self.from_cache, self.cache_path = False, None
        else:
            folder = None if self.cache is True else os.fspath(self.cache)
            self.from_cache, self.cache_path = set_image_cached(self.predictor, self.image, folder)
        self.embed_seconds = time.perf_counter() - t0
        # One prompt decoded and dropped: the decoder's per-image state and the first call of
        # each compiled kernel cost their time here, not on the user's first click.
        self._predict(ClickState(points=((self.W / 2, self.H / 2),), labels=(1,)), trace=None)
        where = f" ({'loaded from' if self.from_cache else 'cached in'} {self.cache_path})" if self.cache_path else ""
        self.message = f"embedding {'loaded' if self.from_cache else 'computed'} in {self.embed_seconds:.2f} s{where}"
        self.ready = True

    # ------------------------------------------------------------------ events

    def inside(self, x, y) -> bool:
        """Whether (x, y) lies on the image (pixel i covers [i - 0.5, i + 0.5])."""
        return (x is not None and y is not None and np.isfinite(x) and np.isfinite(y)
                and -0.5 <= x <= self.W - 0.5 and -0.5 <= y <= self.H - 0.5)

    def _clip(self, x, y) -> Tuple[float, float]:
        return float(np.clip(x, -0.5, self.W - 0.5)), float(np.clip(y, -0.5, self.H - 0.5))

    def press(self, x, y, button: int = 1, modifiers=()) -> bool:
        """A mouse button went down at (x, y). Button 1 (left) makes a positive point, button 3
        (right) or a shift/control modifier a negative one; a drag makes a box. -> redraw needed."""
        self._press, self.drag_box = None, None
        if not self.ready or self.busy or int(button) not in (1, 3) or not self.inside(x, y):
            return False
        negative = int(button) == 3 or bool({"shift", "control", "ctrl"} & set(modifiers or ()))
        self._press = (float(x), float(y), negative)
        return False

    def motion(self, x, y) -> bool:
        """The mouse moved with the button down: past ``drag_pixels`` it drags a box. -> redraw needed."""
        if self._press is None or x is None or y is None:
            return False
        return self._drag_to(x, y)

    def _drag_to(self, x, y) -> bool:
        x0, y0, _ = self._press
        x1, y1 = self._clip(x, y)
        if self.drag_box is None and max(abs(x1 - x0), abs(y1 - y0)) < self.drag_pixels:
            return False
        self.drag_box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        return True

    def release(self, x, y) -> bool:
        """The button came up: a point at the press, or the dragged box. ``x`` None (released
        off the image) ends a drag at its last position. -> whether the prompt changed."""
        if self._press is None:
            return False
        if x is not None and y is not None:
            self._drag_to(x, y)  # the same rule as a motion event
        press, self._press = self._press, None
        box, self.drag_box = self.drag_box, None
        if box is not None:
            self.set_box(box)
            return True
        x0, y0, negative = press
        self.add_point(x0, y0, 0 if negative else 1)
        return True

    def action_of(self, key: Optional[str]) -> Optional[str]:
        return KEYS.get((key or "").lower())

    def key(self, key: Optional[str], progress: Optional[Callable[[int, int], None]] = None) -> Optional[str]:
        """A key press (matplotlib's key names). -> the action taken, or None for an unbound key."""
        action = self.action_of(key)
        if action is None or not self.ready or self.busy:
            return None
        if action == "cycle":
            self.cycle()
        elif action == "undo":
            self.undo()
        elif action == "reset":
            self.reset()
        elif action == "automatic":
            if self.automatic_records is None:
                self.automatic(progress)
                self.show_automatic = True
            else:
                self.show_automatic = not self.show_automatic
        elif action == "save":
            try:
                paths = self.save()
                self.message = f"saved {paths[0]} and {len(paths) - 1} more"
            except (MinisamError, OSError) as exc:
                self.message = f"not saved: {exc}"
        elif action == "internals":
            self.set_internals(not self.show_internals)
            self.message = f"internals: {'on' if self.show_internals else 'off'}"
        elif action == "feedback":
            self.feed_logits = not self.feed_logits
            self.message = (f"feeding the shown mask's logits back: {'on' if self.feed_logits else 'off'} "
                            "(from the next prompt)")
        elif action == "help":
            self.show_help = not self.show_help
        return action

    # ------------------------------------------------------------------ actions

    def add_point(self, x: float, y: float, label: int) -> None:
        """A point prompt (label 1 foreground, 0 background), then a prediction."""
        if label not in (0, 1):
            raise PromptError(f"a click's label is 1 (foreground) or 0 (background), got {label!r}")
        if not self.inside(x, y):
            return
        st = self.state
        self._advance(st.points + ((float(x), float(y)),), st.labels + (int(label),), st.box)

    def set_box(self, box) -> None:
        """The box prompt (x0, y0, x1, y1, replacing the previous box), then a prediction."""
        ax, ay, bx, by = (float(v) for v in box)
        x0, y0 = self._clip(min(ax, bx), min(ay, by))
        x1, y1 = self._clip(max(ax, bx), max(ay, by))
        st = self.state
        self._advance(st.points, st.labels, (x0, y0, x1, y1))

    def cycle(self) -> None:
        """Show the next of the three masks (the one fed back next)."""
        if not self.state.empty:
            self.choose((self.state.chosen + 1) % len(self.state.scores))

    def choose(self, k: int) -> None:
        """Show mask ``k`` of the three."""
        st = self.state
        if st.empty or not 0 <= k < len(st.scores) or k == st.chosen:
            return
        self._push()
        self.state = replace(st, chosen=int(k))
        self.message = ""

    def undo(self) -> None:
        if not self.history:
            self.message = "nothing to undo"
            return
        self.state = self.history.pop()
        self.message = ""
        if self.show_internals and not self.state.empty:
            self._retrace()

    def reset(self) -> None:
        """Drop every prompt (undo brings them back)."""
        if self.state.empty and not self.state.points and self.state.box is None:
            return
        self._push()
        self.state = ClickState()
        self.message = ""

    def set_internals(self, on: bool) -> None:
        self.show_internals = bool(on)
        if self.show_internals and not self.state.empty and self.state.trace is None:
            self._retrace()

    def prompt(self, state: Optional[ClickState] = None) -> dict:
        """The arguments of the ``SamPredictor.predict`` call that made the current masks (or those of ``state``)."""
        st = self.state if state is None else state
        return dict(point_coords=np.array(st.points, np.float64).reshape(-1, 2) if st.points else None,  # [Np, 2]
                    point_labels=np.array(st.labels, np.int64) if st.points else None,  # [Np]
                    box=None if st.box is None else np.array(st.box, np.float64),  # [4]
                    mask_input=st.mask_input, multimask_output=True)  # [1, R, R] or None

    # ------------------------------------------------------------------ the model

    def _push(self) -> None:
        self.history.append(replace(self.state, trace=None))  # traces are recomputed on undo
        del self.history[:-HISTORY_LIMIT]

    def _advance(self, points, labels, box) -> None:
        """A new prompt: predict with the shown mask's logits fed back, push the old state."""
        prev = self.state
        mask_input = None
        if self.feed_logits and not prev.empty:
            mask_input = prev.low_res[prev.chosen][None]  # [1, R, R]
        self._push()
        self.state = self._predict(ClickState(points=points, labels=labels, box=box, mask_input=mask_input),
                                   trace={} if self.show_internals else None)
        self.message = ""

    def _predict(self, st: ClickState, trace: Optional[dict] = None) -> ClickState:
        """``st`` with the model's answer for its prompts, traced into ``trace`` if given."""
        from minisam.utils.amg import calculate_stability_score
        if not st.points and st.box is None:
            return ClickState()
        t0 = time.perf_counter()
        logits, scores, low_res = self.predictor.predict(**self.prompt(st), return_logits=True,
                                                         trace=trace)  # [K', H, W], [K'], [K', R, R]
        threshold = self.predictor.model.mask_threshold
        masks = logits > threshold  # [K', H, W] bool
        stability = calculate_stability_score(logits, threshold, STABILITY_OFFSET)  # [K']
        seconds = time.perf_counter() - t0
        return replace(st, masks=masks, scores=scores, stability=stability, low_res=low_res,
                       chosen=int(np.argmax(scores)), trace=trace, seconds=seconds)

    def _retrace(self) -> None:
        """The current prediction again with a trace: the same call, so the same outputs."""
        st = self.state
        again = self._predict(replace(st, trace=None), trace={})
        if not (np.array_equal(again.low_res, st.low_res) and np.array_equal(again.scores, st.scores)):
            raise MinisamError("the traced decoder call differs from the untraced one")
        self.state = replace(st, trace=again.trace)

    # ------------------------------------------------------------------ internals

    def focus_point(self) -> Optional[Tuple[float, float]]:
        """The last clicked point, else the box centre: where the PE panel looks."""
        st = self.state
        if st.points:
            return st.points[-1]
        if st.box is not None:
            return (st.box[0] + st.box[2]) / 2, (st.box[1] + st.box[3]) / 2
        return None

    def internals(self) -> Optional[dict]:
        """The decoder's own tensors for the shown mask (None before the first prompt):

        - ``attention`` [G, G]: the token-to-image attention of the shown mask's output token in
          the decoder's last attention (``final_attn_token_to_image``), mean over the heads;
          ``attention_heads`` [nH, G, G] each head; ``token`` its index among the decoder tokens
          (0 the IoU token, 1 the single-mask token, 2..4 the three ambiguity-mask tokens);
        - ``pe_at_point`` [C]: the dense positional encoding (``get_dense_pe``) of the grid cell
          ``pe_cell`` (row, col) under the last point; ``pe_similarity`` [G, G]: its cosine with
          the dense PE of every cell;
        - ``low_res_logits`` [R, R]: the decoder's output logits of the shown mask;
        - ``model_points`` [Np, 2] the points, ``model_box`` [4] the box, in the model input frame;
          ``input_size`` (h, w) of the resized image inside the S x S input.
        """
        st = self.state
        if st.empty:
            return None
        if st.trace is None:
            self._retrace()
            st = self.state
        cfg = self.predictor.model.config
        G, S = cfg.image_embedding_size, cfg.img_size
        attn = st.trace[ATTENTION_KEY]  # [1, nH, Tt, GG]
        token = 2 + st.chosen  # after the IoU token and the single-mask token
        heads = np.asarray(attn[0, :, token, :]).reshape(-1, G, G)  # [nH, G, G]
        pe = np.asarray(st.trace[DENSE_PE_KEY])  # [C, G, G]
        transform, size = self.predictor.transform, self.predictor.original_size
        fx, fy = transform.apply_coords(np.array([self.focus_point()], np.float64), size)[0]  # model frame
        # the prompt encoder adds 0.5 (the pixel centre); cell i covers [i, i + 1) * S / G
        col = int(np.clip(np.floor((fx + 0.5) * G / S), 0, G - 1))
        row = int(np.clip(np.floor((fy + 0.5) * G / S), 0, G - 1))
        v = pe[:, row, col]  # [C]
        sim = np.tensordot(v, pe, axes=(0, 0)) / (np.linalg.norm(v) * np.linalg.norm(pe, axis=0))  # [G, G]
        model_points = (transform.apply_coords(np.array(st.points, np.float64), size) if st.points
                        else np.zeros((0, 2)))  # [Np, 2]
        model_box = None if st.box is None else transform.apply_boxes(np.array([st.box], np.float64), size)[0]
        return dict(attention=heads.mean(axis=0), attention_heads=heads, token=token,
                    pe_at_point=v, pe_cell=(row, col), pe_similarity=sim,
                    low_res_logits=np.asarray(st.trace["mask_decoder"][0][0, st.chosen]),  # [R, R]
                    model_points=model_points, model_box=model_box,
                    input_size=tuple(self.predictor.input_size), img_size=S)

    # ------------------------------------------------------------------ automatic masks

    def automatic(self, progress: Optional[Callable[[int, int], None]] = None, **generator_args) -> list:
        """Every mask of the image (``SamAutomaticMaskGenerator``, the model's tuned settings),
        from the embedding already computed. ``progress(done, total)`` after each point batch;
        a tqdm bar on stderr when it is a terminal."""
        from minisam.automatic_mask_generator import SamAutomaticMaskGenerator
        from minisam.utils import amg
        gen = SamAutomaticMaskGenerator(self.predictor.model, **generator_args)
        gen.predictor = _KnownImagePredictor(self.predictor, self.image)
        if progress is not None:
            _, layers = amg.generate_crop_boxes(self.image.shape[:2], gen.crop_n_layers, gen.crop_overlap_ratio)
            total = sum(-(-len(gen.point_grids[i]) // gen.points_per_batch) for i in layers)
            batch, done = gen._process_batch, [0]

            def counted(*args, **kwargs):
                out = batch(*args, **kwargs)
                done[0] += 1
                progress(done[0], total)
                return out
            gen._process_batch = counted
        t0 = time.perf_counter()
        self.automatic_records = gen.generate(self.image)
        self.message = f"automatic masks: {len(self.automatic_records)} in {time.perf_counter() - t0:.1f} s"
        return self.automatic_records

    # ------------------------------------------------------------------ saving

    def save(self, folder: Optional[str] = None) -> List[str]:
        """Write the shown mask, the three candidates (black/white PNGs at the image size) and a
        JSON of prompts and scores to ``folder`` (default ``out_dir``), under the first free
        number: ``NAME-001.mask.png``, ``NAME-001.mask_K.png``, ``NAME-001.json`` (written last,
        each file atomically). -> the paths, the shown mask first."""
        from PIL import Image

        from minisam.interactive.cache import image_digest, write_atomic
        st = self.state
        if st.empty:
            raise PromptError("nothing to save yet: click on the image first")
        folder = os.fspath(folder or self.out_dir)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise MinisamError(f"cannot create {folder}: {exc.strerror or exc}") from None
        n = 1
        while any(os.path.exists(os.path.join(folder, f"{self.name}-{n:03d}{end}"))
                  for end in (".json", ".mask.png")):
            n += 1
        stem = os.path.join(folder, f"{self.name}-{n:03d}")

        def png(mask):  # [H, W] bool -> writer of a 0/255 PNG
            return lambda tmp: Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")

        shown = stem + ".mask.png"
        candidates = [f"{stem}.mask_{k}.png" for k in range(len(st.masks))]
        write_atomic(shown, png(st.masks[st.chosen]))
        for k, path in enumerate(candidates):
            write_atomic(path, png(st.masks[k]))
        report = {
            "image": self.source or self.name,
            "image_size": [self.H, self.W],
            "image_digest": image_digest(self.image),
            "model": self.model_name,
            "points": [list(p) for p in st.points],
            "labels": list(st.labels),
            "box": None if st.box is None else list(st.box),
            "fed_logits": st.mask_input is not None,
            "multimask_output": True,
            "shown": st.chosen,
            "shown_file": os.path.basename(shown),
            "masks": [{"file": os.path.basename(path), "predicted_iou": float(st.scores[k]),
                       "stability_score": float(st.stability[k]), "area": int(st.masks[k].sum())}
                      for k, path in enumerate(candidates)],
        }

        def write_json(tmp):
            with open(tmp, "w") as f:
                json.dump(report, f, indent=2)
        write_atomic(stem + ".json", write_json)
        return [shown] + candidates + [stem + ".json"]

    # ------------------------------------------------------------------ words

    def describe(self) -> str:
        """One line: the prompt and the shown mask, as the window's status line and the log say it."""
        st = self.state
        if not self.ready:
            return "computing the image embedding"
        if st.empty:
            return "click on the image (right-click: negative point, drag: box)"
        prompt = []
        if st.points:
            pos = sum(st.labels)
            prompt.append(f"{pos} positive, {len(st.labels) - pos} negative point(s)")
        if st.box is not None:
            prompt.append("a box")
        k = st.chosen
        fed = "logits of the previous mask fed back" if st.mask_input is not None else "no logits fed back"
        return (f"{' and '.join(prompt)}; {fed}: mask {k + 1} of {len(st.scores)}, predicted IoU {st.scores[k]:.3f}, "
                f"stability {st.stability[k]:.3f}, {int(st.masks[k].sum()):,} px ({st.seconds * 1e3:.0f} ms)")

    def show(self, **view_args):
        """The session in a matplotlib figure (:class:`minisam.interactive.view.ClickView`): in a
        window, or in Jupyter after ``%matplotlib widget`` (``pip install 'minisam[ui]'``)."""
        from minisam.interactive.view import ClickView
        return ClickView(self, warn_static=True, **view_args)


class _KnownImagePredictor(SamPredictor):
    """The automatic generator's predictor: ``set_image`` of the session's image takes the
    embedding already computed instead of running the encoder again (any other image is encoded)."""

    def __init__(self, session_predictor, image: np.ndarray) -> None:  # [H, W, 3] uint8
        super().__init__(session_predictor.model, fast=session_predictor.fast)
        self._known, self._image = session_predictor, image

    def set_image(self, image, image_format: str = "RGB", trace=None) -> None:
        known = self._known
        if (trace is None and image_format == "RGB" and isinstance(image, np.ndarray)
                and image.shape == self._image.shape and np.array_equal(image, self._image)):
            self.reset_image()
            self.features = known.features  # [1, C, G, G]
            self.original_size, self.input_size = known.original_size, known.input_size
            self.is_image_set = True
            return
        super().set_image(image, image_format, trace)
