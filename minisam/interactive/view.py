"""``ClickView``: a :class:`~minisam.interactive.session.ClickSession` drawn in a matplotlib figure.

The same figure works in a window (``minisam click``: TkAgg, QtAgg, ...) and in Jupyter (the
``ipympl`` widget backend, ``%matplotlib widget``), since both deliver matplotlib's own mouse and
key events. The view only turns those events into session calls (data coordinates of the image
axes are the image pixel coordinates the session takes) and redraws what the session holds:

- the image with the shown mask (the notebooks' blue), the points (green / red stars) and the box;
- a strip of the three candidate masks, each titled with its predicted IoU and stability score
  (click one to show it);
- with ``i``, three panels of the decoder's internals (:meth:`ClickSession.internals`), drawn in
  the model input frame (S x S, the image top-left, the padding dashed off);
- a status line, the key list, and with ``a`` every automatic mask.

A prompt redraws only what it changes (blitting, as in matplotlib's animation guide): the
figure without those artists is drawn once and kept as a pixel background, and each update
restores it and draws the changed artists on top, which is several times faster than drawing the
whole figure. The background is drawn again when the figure's size, the image axes' view
(zoom), the automatic masks or the internals switch change; canvases that cannot blit draw the
whole figure.

Slow work (the image embedding, the automatic masks) runs in a background thread when the
canvas has an event loop, with its progress in the status line; on a non-interactive canvas
(Agg, in tests and benchmarks) it runs at once. Large images are shown subsampled to at most
:data:`DISPLAY_SIDE` pixels a side (nearest pixel), the session's masks staying full size.

Shapes (``docs/shapes.md``, plus two local pairs): H x W the image, Hv x Wv the image as drawn,
Ht x Wt a thumbnail, S the model input side, R the low-res side.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
import warnings
from typing import Callable, Optional

import numpy as np

from minisam.errors import MinisamError, MinisamWarning
from minisam.interactive.session import HELP

DISPLAY_SIDE = 1024  # longest side of the image as drawn (the session keeps full-size masks)
THUMB_SIDE = 192  # longest side of a candidate thumbnail
MASK_RGBA = np.array([30, 144, 255, 153], np.uint8)  # the notebooks' show_mask colour, alpha 0.6
EDGE_RGBA = np.array([255, 221, 0, 255], np.uint8)  # the shown mask's outline, opaque yellow
DRAG_SCREEN_PIXELS = 6.0  # a press and release further apart on screen is a box
_NON_INTERACTIVE_MODULES = ("matplotlib.backends.backend_agg", "matplotlib.backends.backend_pdf",
                            "matplotlib.backends.backend_svg", "matplotlib.backends.backend_ps",
                            "matplotlib.backends.backend_pgf", "matplotlib.backends.backend_cairo",
                            "matplotlib.backends.backend_template", "matplotlib.backend_bases",
                            "matplotlib_inline.backend_inline")


def interactive_canvas(canvas) -> bool:
    """Whether the canvas delivers user events (a window or a widget), not Agg, PDF, inline, ..."""
    return type(canvas).__module__ not in _NON_INTERACTIVE_MODULES


def _index(n: int, m: int) -> np.ndarray:  # -> [m] nearest source index of each of m cells over n
    return np.minimum(((np.arange(m) + 0.5) * n / m).astype(np.int64), n - 1)


def _shown_size(H: int, W: int, side: int):
    scale = min(1.0, side / max(H, W))
    return max(1, int(round(H * scale))), max(1, int(round(W * scale)))


class ClickView:
    """Draw a session and feed it the figure's events. ``log`` gets one line per action (the
    command line prints them). ``background``: run slow work in a thread (default: when the
    canvas is interactive)."""

    def __init__(self, session, fig=None, figsize=(12, 7.5), background: Optional[bool] = None,
                 log: Optional[Callable[[str], None]] = None, report_screen: bool = False,
                 warn_static: bool = False):
        import matplotlib.pyplot as plt
        self.session = session
        self.fig = plt.figure(figsize=figsize) if fig is None else fig
        canvas = self.fig.canvas
        self.interactive = interactive_canvas(canvas)
        if warn_static and not self.interactive:
            warnings.warn("this matplotlib backend draws static images and delivers no clicks; in Jupyter run "
                          "%matplotlib widget first (pip install 'minisam[ui]')", MinisamWarning, stacklevel=3)
        self.background = self.interactive if background is None else bool(background)
        self.log = log or (lambda line: None)
        self.report_screen = report_screen
        self._screen = None
        self._timer = None
        self._progress = ""
        self._background = None  # the figure drawn without the artists a prompt changes (pixels)
        self._background_key = None
        self._capturing = False
        manager = getattr(canvas, "manager", None)
        handler = getattr(manager, "key_press_handler_id", None)
        if handler is not None:  # matplotlib's keys (s saves the figure, f full screen, ...) would clash
            canvas.mpl_disconnect(handler)
        self._build()
        for name, fn in (("button_press_event", self._on_press), ("button_release_event", self._on_release),
                         ("motion_notify_event", self._on_motion), ("key_press_event", self._on_key),
                         ("draw_event", self._on_draw)):
            canvas.mpl_connect(name, fn)
        if session.ready:
            self.redraw()
        else:
            self._run("computing the image embedding", session.embed, self._embedded)

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        s, fig = self.session, self.fig
        H, W = s.H, s.W
        Hv, Wv = _shown_size(H, W, DISPLAY_SIDE)
        self.rows, self.cols = _index(H, Hv), _index(W, Wv)  # [Hv], [Wv] the drawn pixels
        Ht, Wt = _shown_size(H, W, THUMB_SIDE)
        self.thumb_rows, self.thumb_cols = _index(H, Ht), _index(W, Wt)  # [Ht], [Wt]
        extent = (-0.5, W - 0.5, H - 0.5, -0.5)  # data coordinates = image pixel coordinates
        small = max(H, W) <= DISPLAY_SIDE
        name = os.path.basename(s.source) if s.source and os.path.isfile(s.source) else (s.source or s.name)
        model = f" · {s.model_name}" if s.model_name else ""
        self.title = fig.text(0.012, 0.985, f"minisam click · {name} · {W}x{H}{model}", fontsize=12,
                              weight="bold", va="top")
        # wrapped by _fit_width, not matplotlib's wrap=True: that measures the text word by word at
        # every draw, about half of a click's redraw (profiled on micro)
        self.status = fig.text(0.012, 0.95, "", fontsize=10, va="top")

        ax = self.ax = fig.add_axes([0.012, 0.29, 0.60, 0.58])
        shown = s.image[self.rows][:, self.cols]  # [Hv, Wv, 3]
        ax.imshow(shown, extent=extent, interpolation="nearest" if small else "antialiased")
        self.auto_overlay = ax.imshow(np.zeros((Hv, Wv, 4), np.uint8), extent=extent, interpolation="nearest")
        self.overlay = ax.imshow(np.zeros((Hv, Wv, 4), np.uint8), extent=extent, interpolation="nearest")  # [Hv, Wv, 4]
        self.auto_overlay.set_visible(False)
        star = dict(marker="*", s=260, edgecolor="white", linewidth=1.25, zorder=5)
        self.pos = ax.scatter([], [], color="green", **star)
        self.neg = ax.scatter([], [], color="red", **star)
        from matplotlib.patches import Rectangle
        self.box = ax.add_patch(Rectangle((0, 0), 0, 0, edgecolor="lime", facecolor="none", lw=2, visible=False))
        self.drag = ax.add_patch(Rectangle((0, 0), 0, 0, edgecolor="yellow", facecolor="none", lw=1.5,
                                           ls="--", visible=False))
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        self.help = ax.text(0.02, 0.98, self._help_text(), transform=ax.transAxes, va="top", ha="left",
                            fontsize=9, family="monospace", visible=False,
                            bbox=dict(facecolor="white", alpha=0.9, edgecolor="grey"))

        fig.text(0.635, 0.885, "the 3 masks (click one to show it)", fontsize=9, va="top")
        self.strip, self.thumbs, self.strip_titles = [], [], []
        thumb = s.image[self.thumb_rows][:, self.thumb_cols]  # [Ht, Wt, 3]
        for k in range(3):
            a = fig.add_axes([0.635, 0.60 - 0.285 * k, 0.17, 0.2])
            a.imshow(thumb, extent=extent, interpolation="nearest")
            self.thumbs.append(a.imshow(np.zeros((Ht, Wt, 4), np.uint8), extent=extent, interpolation="nearest"))
            a.set_xticks([])
            a.set_yticks([])
            # a fixed text, not the axes title: matplotlib moves a title that is hidden while the
            # background is drawn
            self.strip_titles.append(a.text(0.5, 1.03, "", transform=a.transAxes, ha="center", va="bottom",
                                            fontsize=9))
            self.strip.append(a)

        fig.text(0.83, 0.885, "keys", fontsize=10, va="top", weight="bold")
        fig.text(0.83, 0.85, "\n".join(f"{k:<12s}{v}" for k, v in HELP),
                 fontsize=8.5, family="monospace", va="top", linespacing=1.45)
        self.side = fig.text(0.83, 0.42, "", fontsize=9, va="top", linespacing=1.4)

        self.panels = {}
        self.panel_axes = []
        for i, key in enumerate(("attention", "pe_similarity", "low_res_logits")):
            a = fig.add_axes([0.02 + 0.2 * i, 0.025, 0.17, 0.21])
            a.set_xticks([])
            a.set_yticks([])
            a.set_visible(False)
            self.panel_axes.append(a)
            self.panels[key] = None
        self.panel_hint = fig.text(0.012, 0.13, "press i: the decoder's internals for the shown mask\n(its output "
                                   "token's attention, the positional encoding, the low-res logits)",
                                   fontsize=9, color="dimgrey", va="center")

    def _help_text(self) -> str:
        return "\n".join([
            "left click    positive point (the object)",
            "right click   negative point (not the object)",
            "  or shift-click",
            "drag          box (replaces the last box)",
            "c / tab       show the next of the 3 masks",
            "u / ctrl+z    undo          r / esc   reset",
            "a             automatic masks (toggle)",
            "s             save the shown mask, the 3 masks",
            "              and a JSON of the prompts",
            "i             the decoder's internals",
            "f             feed the shown mask's low-res",
            "              logits back with the next click",
            "h             this help     q         quit",
        ])

    # ------------------------------------------------------------------ drawing

    def _mask_rgba(self, mask, rows, cols, edge: bool = False) -> np.ndarray:  # [H, W] bool -> [Hv, Wv, 4] uint8 (or [Ht, Wt, 4])
        """The mask as drawn: the notebooks' translucent blue, with a yellow outline if ``edge``."""
        m = mask[rows][:, cols]  # [Hv, Wv] bool, the drawn pixels
        out = np.zeros(m.shape + (4,), np.uint8)  # [Hv, Wv, 4]
        out[m] = MASK_RGBA
        if edge:
            inner = m.copy()  # [Hv, Wv] eroded by one pixel (4-neighbours)
            inner[1:] &= m[:-1]
            inner[:-1] &= m[1:]
            inner[:, 1:] &= m[:, :-1]
            inner[:, :-1] &= m[:, 1:]
            out[m & ~inner] = EDGE_RGBA
        return out

    def redraw(self) -> None:
        """Update every artist from the session, then draw (at once on Agg, when idle in a window)."""
        s = self.session
        st = s.state
        busy = f"{s.busy}{self._progress} ..." if s.busy else ""
        self.status.set_text(self._fit_width(busy or (s.describe() + (f"\n{s.message}" if s.message else "")),
                                             self.status.get_fontsize()))
        if st.empty:
            self.overlay.set_data(np.zeros(self.overlay.get_array().shape, np.uint8))
        else:
            self.overlay.set_data(self._mask_rgba(st.masks[st.chosen], self.rows, self.cols, edge=True))
        pts = np.array(st.points, np.float64).reshape(-1, 2)  # [Np, 2]
        labels = np.array(st.labels, np.int64)  # [Np]
        self.pos.set_offsets(pts[labels == 1])
        self.neg.set_offsets(pts[labels == 0])
        self.box.set_visible(st.box is not None)
        if st.box is not None:
            x0, y0, x1, y1 = st.box
            self.box.set_bounds(x0, y0, x1 - x0, y1 - y0)
        self.drag.set_visible(s.drag_box is not None)
        if s.drag_box is not None:
            x0, y0, x1, y1 = s.drag_box
            self.drag.set_bounds(x0, y0, x1 - x0, y1 - y0)
        self._draw_automatic()
        for k, (a, im, title) in enumerate(zip(self.strip, self.thumbs, self.strip_titles)):
            if st.empty:
                im.set_data(np.zeros(im.get_array().shape, np.uint8))
                title.set_text(f"mask {k + 1}")
                title.set_fontweight("normal")
                color, width = "black", 0.8
            else:
                im.set_data(self._mask_rgba(st.masks[k], self.thumb_rows, self.thumb_cols))
                shown = " (shown)" if k == st.chosen else ""
                title.set_text(f"mask {k + 1}{shown}: IoU {st.scores[k]:.3f}\nstability {st.stability[k]:.3f}")
                title.set_fontweight("bold" if shown else "normal")
                color, width = ("darkorange", 3.0) if shown else ("black", 0.8)
            for spine in a.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(width)
        self.side.set_text(self._side_text())
        self.help.set_visible(s.show_help)
        self._draw_internals()
        self._show()

    def _fit_width(self, text: str, fontsize: float) -> str:
        """``text`` with each line wrapped at the figure's width, counting 0.6 em a character (a
        wide average for DejaVu Sans), so that the figure's current size decides the wrap."""
        chars = max(20, int(0.97 * self.fig.bbox.width / (0.6 * fontsize * self.fig.dpi / 72)))
        return "\n".join(textwrap.fill(line, chars) if line else line for line in text.split("\n"))

    # ------------------------------------------------------------------ blitting

    def _changing_artists(self) -> list:
        """What a prompt changes, in drawing order: drawn over the background at each update."""
        strip = self.strip_titles + [sp for a in self.strip for sp in a.spines.values()]
        image = sorted([self.overlay, self.box, self.drag, *self.ax.spines.values(), self.help, self.pos, self.neg],
                       key=lambda a: a.get_zorder())  # as a full draw of the axes orders them
        return image + list(self.thumbs) + strip + [self.status, self.side] + self.panel_axes

    def _background_state(self) -> tuple:
        """What the background depends on: the figure's pixel size, the image axes' view, and the
        artists that stay the same from one prompt to the next but change on a key."""
        s = self.session
        auto = id(getattr(self, "_auto_drawn", None)) if self.auto_overlay.get_visible() else None
        return (tuple(self.fig.bbox.bounds), tuple(self.ax.viewLim.bounds), self.panel_hint.get_visible(), auto,
                bool(s.show_internals))

    def _capture_background(self) -> None:
        """Draw the figure without the changing artists and keep its pixels."""
        changing = self._changing_artists()
        visible = [a.get_visible() for a in changing]
        self._capturing = True
        try:
            for a in changing:
                a.set_visible(False)
            self.fig.canvas.draw()
            self._background = self.fig.canvas.copy_from_bbox(self.fig.bbox)
            self._background_key = self._background_state()
        finally:
            for a, v in zip(changing, visible):
                a.set_visible(v)
            self._capturing = False

    def _show(self) -> None:
        """Put the updated artists on the canvas: blit them over the background, or draw the whole
        figure where the canvas cannot blit (at once on Agg, when idle in a window)."""
        canvas = self.fig.canvas
        if not getattr(canvas, "supports_blit", False) or canvas.is_saving():
            canvas.draw_idle()
            return
        if self._background is None or self._background_key != self._background_state():
            self._capture_background()
        canvas.restore_region(self._background)
        for artist in self._changing_artists():
            self.fig.draw_artist(artist)  # an invisible artist draws nothing
        canvas.blit(self.fig.bbox)

    def _side_text(self) -> str:
        s = self.session
        lines = [f"feed logits back: {'on' if s.feed_logits else 'off'}",
                 f"undo steps: {len(s.history)}"]
        if s.automatic_records is not None:
            lines.append(f"automatic masks: {len(s.automatic_records)}{' (shown)' if s.show_automatic else ''}")
        if s.cache_path:
            lines.append(f"embedding {'from' if s.from_cache else 'saved to'} the cache")
        out = os.path.join(str(s.out_dir), "")
        lines.append(f"saves go to\n  {out if len(out) <= 30 else '...' + out[-27:]}")
        return "\n".join(lines)

    def _draw_automatic(self) -> None:
        s = self.session
        show = bool(s.show_automatic and s.automatic_records)
        self.auto_overlay.set_visible(show)
        if show and getattr(self, "_auto_drawn", None) is not s.automatic_records:
            rng = np.random.default_rng(0)
            out = np.zeros(self.auto_overlay.get_array().shape, np.uint8)  # [Hv, Wv, 4]
            for rec in sorted(s.automatic_records, key=lambda r: r["area"], reverse=True):
                colour = np.r_[rng.integers(0, 256, 3), 90].astype(np.uint8)  # alpha 0.35, as show_anns
                out[rec["segmentation"][self.rows][:, self.cols]] = colour
            self.auto_overlay.set_data(out)
            self._auto_drawn = s.automatic_records

    def _draw_internals(self) -> None:
        s = self.session
        on = s.show_internals and not s.state.empty
        self.panel_hint.set_visible(not on)
        for a in self.panel_axes:
            a.set_visible(on)
        if not on:
            return
        info = s.internals()
        S = info["img_size"]
        h_in, w_in = info["input_size"]
        k = s.state.chosen
        heads = info["attention_heads"].shape[0]
        row, col = info["pe_cell"]
        R = info["low_res_logits"].shape[0]
        logits = info["low_res_logits"]  # [R, R]
        vmax = float(np.abs(logits).max()) or 1.0
        specs = (
            ("attention", "magma", None, None,
             f"mask {k + 1}'s output token: attention\nto the image, last layer, {heads} heads avg"),
            ("pe_similarity", "coolwarm", -1.0, 1.0,
             f"dense PE at cell ({row}, {col}):\ncosine with every cell"),
            ("low_res_logits", "RdBu_r", -vmax, vmax,
             f"low-res logits {R}x{R}, mask {k + 1}\n(black: threshold 0)"),
        )
        for a, (key, cmap, lo, hi, title) in zip(self.panel_axes, specs):
            data = info[key]
            a.clear()
            a.set_xticks([])
            a.set_yticks([])
            self.panels[key] = a.imshow(data, cmap=cmap, vmin=lo, vmax=hi, extent=(0, S, S, 0),
                                        interpolation="nearest")
            a.set_title(title, fontsize=8.5)
            a.plot([0, w_in, w_in, 0, 0], [0, 0, h_in, h_in, 0], color="white", lw=0.8, ls="--")  # the image
            pts = info["model_points"] + 0.5  # [Np, 2] pixel centres, as the prompt encoder reads them
            a.scatter(pts[:, 0], pts[:, 1], marker="*", s=40, color=np.where(
                np.array(s.state.labels) == 1, "lime", "red") if len(pts) else "lime", edgecolor="white",
                linewidth=0.5)
            if key == "low_res_logits" and logits.min() < 0 < logits.max():
                y = (np.arange(R) + 0.5) * S / R
                a.contour(y, y, logits, levels=[0.0], colors="black", linewidths=0.8)
            a.set_xlim(0, S)
            a.set_ylim(S, 0)

    # ------------------------------------------------------------------ events

    def _toolbar_active(self) -> bool:
        toolbar = getattr(self.fig.canvas, "toolbar", None)
        return bool(toolbar is not None and getattr(toolbar, "mode", ""))

    def _xy(self, event):
        if event.inaxes is not self.ax or event.xdata is None:
            return None, None
        return float(event.xdata), float(event.ydata)

    def _on_press(self, event) -> None:
        tk_widget = getattr(self.fig.canvas, "get_tk_widget", None)
        if tk_widget is not None:  # Tk sends keys to the focused widget: a click on the figure takes the focus
            tk_widget().focus_set()
        if self._toolbar_active() or self.session.busy or getattr(event, "dblclick", False):
            return
        if event.inaxes in self.strip:
            self.session.choose(self.strip.index(event.inaxes))
            self._changed("choose")
            return
        x, y = self._xy(event)
        if x is None:
            return
        mods = set(getattr(event, "modifiers", None) or ())
        if event.key:
            mods |= set(str(event.key).split("+"))
        # DRAG_SCREEN_PIXELS on screen, in image pixels at the current zoom
        (ax0, _), (ax1, _) = self.ax.transData.transform([(0.0, 0.0), (1.0, 0.0)])
        self.session.drag_pixels = DRAG_SCREEN_PIXELS / max(abs(ax1 - ax0), 1e-6)
        self.session.press(x, y, button=int(event.button or 0), modifiers=mods)

    def _on_motion(self, event) -> None:
        x, y = self._xy(event)
        if self.session.motion(x, y):
            self.drag.set_visible(True)
            x0, y0, x1, y1 = self.session.drag_box
            self.drag.set_bounds(x0, y0, x1 - x0, y1 - y0)
            self._show()

    def _on_release(self, event) -> None:
        x, y = self._xy(event)
        try:
            changed = self.session.release(x, y)
        except MinisamError as exc:
            self.session.message = f"error: {exc}"
            changed = True
        if changed:
            self._changed("prompt")

    def _on_key(self, event) -> None:
        key = event.key
        if key == "q":
            import matplotlib.pyplot as plt
            plt.close(self.fig)
            return
        s = self.session
        action = s.action_of(key)
        if action is None or s.busy or not s.ready:
            return
        if action == "automatic" and s.automatic_records is None:
            self._run("automatic masks", lambda: s.key(key, progress=self._set_progress),
                      lambda _: self._changed("automatic"))
            return
        try:
            s.key(key)
        except MinisamError as exc:
            s.message = f"error: {exc}"
        self._changed(action)

    def _changed(self, action: str) -> None:
        s = self.session
        if action in ("prompt", "choose", "cycle", "undo", "reset"):
            self.log(s.describe())
        elif s.message:
            self.log(s.message)
        self.redraw()

    def _on_draw(self, event) -> None:
        if self._capturing:
            return
        self._background = None  # a full draw (a resize, a zoom, the first show): take a new one next time
        if not self.report_screen:
            return
        box = self.screen_box()
        if box is not None and box != self._screen:
            self._screen = box
            self.log("image on screen: left %d top %d right %d bottom %d" % box)

    def screen_box(self):
        """(left, top, right, bottom) of the image in screen pixels, on a Tk canvas; else None.
        For scripted clicks (xdotool): image pixel (x, y) is at left + (x + 0.5) * (right - left) / W."""
        get = getattr(self.fig.canvas, "get_tk_widget", None)
        if get is None:
            return None
        widget = get()
        H, W = self.session.H, self.session.W
        corners = self.ax.transData.transform([(-0.5, -0.5), (W - 0.5, H - 0.5)])  # display, origin bottom-left
        height = self.fig.bbox.height
        x0, x1 = sorted(corners[:, 0])
        y0, y1 = sorted(height - corners[:, 1])
        rx, ry = widget.winfo_rootx(), widget.winfo_rooty()
        return (int(round(rx + x0)), int(round(ry + y0)), int(round(rx + x1)), int(round(ry + y1)))

    # ------------------------------------------------------------------ slow work

    def _set_progress(self, done: int, total: int) -> None:
        self._progress = f" {done}/{total} point batches"

    def _embedded(self, _) -> None:
        self.log(f"ready: {self.session.message}")

    def _run(self, label: str, work, done) -> None:
        """``work()`` then ``done(result)``; in a thread with a ticking status line when the canvas
        has an event loop, else at once."""
        s = self.session
        self._progress = ""
        if not self.background:
            s.busy = label
            try:
                result = work()
            finally:
                s.busy = None
            done(result)
            self.redraw()
            return
        s.busy = label
        out = {}

        def target():
            try:
                out["value"] = work()
            except Exception as exc:  # shown in the window and logged: the thread must not die silently
                out["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        t0 = time.perf_counter()
        thread.start()
        timer = self._timer = self.fig.canvas.new_timer(interval=250)

        def tick():
            if thread.is_alive():
                self.status.set_text(f"{label}{self._progress} ... {time.perf_counter() - t0:.0f} s")
                self._show()
                return
            timer.stop()
            s.busy = None
            if "error" in out:
                s.message = f"{label} failed: {out['error']}"
                self.log(s.message)
                self.redraw()
                return
            done(out.get("value"))
            self.redraw()

        timer.add_callback(tick)
        timer.start()
