"""``minisam click``'s session, driven by synthetic matplotlib events on an Agg canvas.

Events go through the view exactly as a window or a Jupyter widget delivers them (matplotlib
``MouseEvent`` / ``KeyEvent`` at display pixels, hit-tested into the image axes, their data
coordinates read back), and every result is checked against an independent ``SamPredictor``
on the shipped micro model, called with the same prompts and the logits a user's previous
mask would feed back:

- the masks, predicted IoUs and low-res logits equal ``SamPredictor.predict`` bit for bit
  after positive, negative and shift clicks, a box drag, a cycle, undo, reset and with the
  logits feedback off; the stability score equals ``calculate_stability_score`` of its logits;
- what is drawn (the overlay, the three thumbnails, their titles) is the session's masks, and
  the saved PNGs and JSON are what is drawn;
- the internals panels are the decoder's own tensors: the traced ``final_attn_token_to_image``
  attention row of the shown mask's token, the traced dense PE, the traced low-res logits;
- clicks off the image do nothing; the embedding cache is keyed by pixels and model and never
  leaves partial files; bad input on the command line gets one line and the right exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minisam.build_sam import sam_model_registry
from minisam.predictor import SamPredictor
from minisam.training.shapes import interior_point, make_scene
from minisam.utils.amg import calculate_stability_score

ATTN = "mask_decoder.transformer.final_attn_token_to_image.attn_weights"


@pytest.fixture(scope="module")
def sam():
    return sam_model_registry["micro"]()


@pytest.fixture(scope="module")
def scene(sam):
    return make_scene(np.random.default_rng(5), sam.config.img_size)


def targets(scene):
    """Click positions: inside the two largest objects, and on the background."""
    objs = sorted(scene.instance_masks, key=lambda m: -m.sum())
    a, b = (interior_point(m) - 0.5 for m in objs[:2])
    background = ~np.any(scene.masks, axis=0)
    ys, xs = np.nonzero(background)
    return a, b, np.array([xs[len(xs) // 3], ys[len(ys) // 3]], np.float64)


def make_view(sam, scene, tmp_path, fast=True, **kw):
    import matplotlib.pyplot as plt

    from minisam.interactive import ClickSession
    from minisam.interactive.view import ClickView
    session = ClickSession(scene.image, SamPredictor(sam, fast=fast), name="scene5", cache=tmp_path / "cache",
                           out_dir=str(tmp_path / "out"), **kw)
    view = ClickView(session, fig=plt.figure(figsize=(12, 7.5)))
    view.fig.canvas.draw()
    return session, view


def mouse(view, name, x, y, button=1, key=None, where=None):
    """A matplotlib mouse event at image pixel (x, y) (or at display pixels ``where``)."""
    from matplotlib.backend_bases import MouseEvent
    canvas = view.fig.canvas
    px, py = view.ax.transData.transform((x, y)) if where is None else where
    canvas.callbacks.process(name, MouseEvent(name, canvas, px, py, button=button, key=key))


def click(view, x, y, button=1, key=None):
    mouse(view, "button_press_event", x, y, button, key)
    mouse(view, "button_release_event", x, y, button, key)


def press_key(view, key):
    from matplotlib.backend_bases import KeyEvent
    canvas = view.fig.canvas
    canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, key, 10, 10))


class Reference:
    """What the session must show: an independent predictor fed the same prompts, the logits of
    the previously shown mask, the chosen index (argmax of IoU, then cycles)."""

    def __init__(self, sam, image, fast=True):
        self.pred = SamPredictor(sam, fast=fast)
        self.pred.set_image(image)
        self.points, self.labels, self.box, self.feed = [], [], None, True
        self.out = None  # (masks, scores, low_res, chosen)
        self.stack = []

    def prompt(self, trace=None):
        """Predict the current prompts; the state before them must have been saved."""
        last = self.out
        mask_input = last[2][last[3]][None] if (self.feed and last is not None) else None
        masks, scores, low = self.pred.predict(
            point_coords=np.array(self.points, np.float64).reshape(-1, 2) if self.points else None,
            point_labels=np.array(self.labels) if self.points else None,
            box=None if self.box is None else np.array(self.box), mask_input=mask_input,
            multimask_output=True, trace=trace)
        self.out = (masks, scores, low, int(np.argmax(scores)))
        return mask_input

    def save(self):
        self.stack.append((list(self.points), list(self.labels), self.box, self.out))

    def point(self, x, y, label, trace=None):
        self.save()
        self.points.append((float(x), float(y)))
        self.labels.append(label)
        return self.prompt(trace)

    def set_box(self, box):
        self.save()
        self.box = box
        return self.prompt()

    def cycle(self):
        self.save()
        m, s, l, k = self.out
        self.out = (m, s, l, (k + 1) % 3)

    def undo(self):
        self.points, self.labels, self.box, self.out = self.stack.pop()


def check(session, view, ref, mask_input):
    st = session.state
    masks, scores, low, chosen = ref.out
    np.testing.assert_array_equal(st.masks, masks)
    np.testing.assert_array_equal(st.scores, scores)
    np.testing.assert_array_equal(st.low_res, low)
    assert st.chosen == chosen
    if mask_input is None:
        assert st.mask_input is None
    else:
        np.testing.assert_array_equal(st.mask_input, mask_input)
    logits, _, _ = ref.pred.predict(**session.prompt(), return_logits=True)
    np.testing.assert_array_equal(st.stability, calculate_stability_score(logits, 0.0, 1.0))
    # what is drawn: the overlay (no subsampling at 128 px) and the three thumbnails
    drawn = np.asarray(view.overlay.get_array())[..., 3] > 0
    np.testing.assert_array_equal(drawn, masks[chosen])
    for k, im in enumerate(view.thumbs):
        np.testing.assert_array_equal(np.asarray(im.get_array())[..., 3] > 0,
                                      masks[k][view.thumb_rows][:, view.thumb_cols])
        assert f"IoU {scores[k]:.3f}" in view.strip_titles[k].get_text()


def test_events_give_the_predictors_masks_with_fed_back_logits(sam, scene, tmp_path):
    session, view = make_view(sam, scene, tmp_path)
    ref = Reference(sam, scene.image)
    a, b, bg = targets(scene)

    click(view, *a)  # a positive point
    assert session.state.labels == (1,)
    np.testing.assert_allclose(session.state.points[0], a, atol=1e-6)  # display pixels -> image pixels
    check(session, view, ref, ref.point(*session.state.points[-1], 1))
    assert session.state.mask_input is None  # nothing to feed back on the first click

    click(view, *bg, button=3)  # right click: a negative point, the previous logits fed back
    assert session.state.labels == (1, 0)
    check(session, view, ref, ref.point(*session.state.points[-1], 0))
    assert session.state.mask_input is not None

    click(view, *(bg + [3, 2]), key="shift")  # shift-click: negative too
    assert session.state.labels == (1, 0, 0)
    check(session, view, ref, ref.point(*session.state.points[-1], 0))

    press_key(view, "c")  # cycle: the next mask is shown, and fed back next
    ref.cycle()
    check(session, view, ref, session.state.mask_input)

    box = (b[0] - 12, b[1] - 10, b[0] + 14, b[1] + 11)  # drag a box, bottom-right to top-left
    mouse(view, "button_press_event", box[2], box[3])
    mouse(view, "motion_notify_event", (box[0] + box[2]) / 2, box[1] + 3)
    assert session.drag_box is not None and view.drag.get_visible()
    mouse(view, "motion_notify_event", box[0], box[1])
    mouse(view, "button_release_event", box[0], box[1])
    assert session.drag_box is None and len(session.state.points) == 3
    np.testing.assert_allclose(session.state.box, box, atol=1e-6)
    check(session, view, ref, ref.set_box(session.state.box))

    press_key(view, "u")  # undo the box: the cycled state is back, and feeds its logits next
    ref.undo()
    assert session.state.box is None
    check(session, view, ref, session.state.mask_input)
    click(view, *(a + [2, -3]))
    check(session, view, ref, ref.point(*session.state.points[-1], 1))

    press_key(view, "r")  # reset: no prompt, no mask, nothing fed back
    assert session.state.empty and not session.state.points
    assert not (np.asarray(view.overlay.get_array())[..., 3] > 0).any()
    ref.save()
    ref.points, ref.labels, ref.box, ref.out = [], [], None, None
    click(view, *b)
    check(session, view, ref, ref.point(*session.state.points[-1], 1))

    press_key(view, "f")  # feedback off: the next click is decoded without mask_input
    assert not session.feed_logits
    ref.feed = False
    click(view, *(bg + [-2, 4]), button=3)
    check(session, view, ref, ref.point(*session.state.points[-1], 0))
    assert session.state.mask_input is None

    for _ in range(3):  # back over the reset: the state before it
        press_key(view, "u")
        ref.undo()
    assert len(session.state.points) == 4
    check(session, view, ref, session.state.mask_input)
    press_key(view, "f")
    assert session.feed_logits


def test_blitted_updates_equal_a_full_draw(sam, scene, tmp_path):
    """A prompt redraws only what it changes over a cached background (no full draw); after each
    kind of action the canvas must hold exactly the pixels a full draw of the figure gives."""
    session, view = make_view(sam, scene, tmp_path)
    canvas = view.fig.canvas
    full_draws = []
    canvas.mpl_connect("draw_event", lambda event: full_draws.append(event))
    (ax, ay), (bx, by), (gx, gy) = targets(scene)
    actions = [("positive click", lambda: click(view, ax, ay)),
               ("negative click", lambda: click(view, gx, gy, button=3)),
               ("second positive click", lambda: click(view, bx, by)),
               ("cycle", lambda: press_key(view, "c")),
               ("choose mask 1", lambda: [mouse(view, name, 0, 0, where=view.strip[0].transAxes.transform((0.5, 0.5)))
                                          for name in ("button_press_event", "button_release_event")]),
               ("box drag", lambda: (mouse(view, "button_press_event", 5, 5),
                                     mouse(view, "motion_notify_event", 70, 60),
                                     mouse(view, "button_release_event", 70, 60))),
               ("internals on", lambda: press_key(view, "i")),
               ("click with internals", lambda: click(view, bx, by)),
               ("help", lambda: press_key(view, "h")),
               ("undo", lambda: press_key(view, "u")),
               ("reset", lambda: press_key(view, "r"))]
    full_draw = {}
    for name, act in actions:  # first without looking, counting the full draws
        draws = len(full_draws)
        act()
        full_draw[name] = len(full_draws) > draws
    # the first update takes the background, and a switch of the internals panels (on, or off by
    # the reset emptying them) draws a new one; every other update is blitted
    assert [name for name, drew in full_draw.items() if drew] == ["positive click", "internals on", "reset"], \
        full_draw
    press_key(view, "i")
    for name, act in actions:  # then comparing each update with a full draw
        act()
        shown = np.array(canvas.buffer_rgba())  # [H, W, 4]
        canvas.draw()
        drawn = np.asarray(canvas.buffer_rgba())
        differ = np.any(shown != drawn, axis=-1)
        assert not differ.any(), f"after {name}: {differ.sum()} pixels differ from a full draw"


def test_clicks_off_the_image_do_nothing(sam, scene, tmp_path):
    session, view = make_view(sam, scene, tmp_path)
    # on the key list, right of every axes
    fig_w, fig_h = view.fig.canvas.get_width_height()
    mouse(view, "button_press_event", 0, 0, where=(fig_w - 5, fig_h / 2))
    mouse(view, "button_release_event", 0, 0, where=(fig_w - 5, fig_h / 2))
    assert session.state.empty and not session.history
    for x, y in ((-3.0, 10.0), (10.0, session.H + 2.0), (np.nan, 5.0)):
        assert not session.press(x, y) and not session.release(x, y)
    assert session.state.empty and not session.history
    # a drag that leaves the image ends at its last position on the image
    mouse(view, "button_press_event", 20, 20)
    mouse(view, "motion_notify_event", 60, 50)
    mouse(view, "motion_notify_event", 0, 0, where=(fig_w - 5, fig_h / 2))
    mouse(view, "button_release_event", 0, 0, where=(fig_w - 5, fig_h / 2))
    np.testing.assert_allclose(session.state.box, (20, 20, 60, 50), atol=1e-6)
    assert not session.state.points
    # keys that mean nothing, and undo with nothing to undo, change nothing
    before = session.state
    press_key(view, "x")
    assert session.state is before


def test_saved_files_are_what_is_shown(sam, scene, tmp_path):
    from PIL import Image
    session, view = make_view(sam, scene, tmp_path)
    a, _, bg = targets(scene)
    click(view, *a)
    click(view, *bg, button=3)
    out = tmp_path / "out"
    for n, shown_index in ((1, 2), (2, 1)):  # two saves, neither showing mask 0
        while session.state.chosen != shown_index:
            press_key(view, "c")
        press_key(view, "s")
        stem = f"scene5-{n:03d}"
        files = sorted(f for f in os.listdir(out) if f.startswith(stem))
        assert files == [f"{stem}.json", f"{stem}.mask.png"] + [f"{stem}.mask_{k}.png" for k in range(3)]
        st = session.state
        shown = np.array(Image.open(out / f"{stem}.mask.png"))
        assert set(np.unique(shown)) <= {0, 255}
        np.testing.assert_array_equal(shown > 0, np.asarray(view.overlay.get_array())[..., 3] > 0)
        np.testing.assert_array_equal(shown > 0, st.masks[shown_index])
        report = json.loads((out / f"{stem}.json").read_text())
        assert report["shown"] == shown_index and report["shown_file"] == f"{stem}.mask.png"
        assert report["points"] == [list(p) for p in st.points] and report["labels"] == [1, 0]
        assert report["box"] is None and report["fed_logits"] is True
        assert report["image_size"] == [session.H, session.W]
        for k, rec in enumerate(report["masks"]):
            saved = np.array(Image.open(out / rec["file"])) > 0
            np.testing.assert_array_equal(saved, st.masks[k])
            np.testing.assert_array_equal(saved, np.asarray(view.thumbs[k].get_array())[..., 3] > 0)
            assert rec["predicted_iou"] == float(st.scores[k])
            assert rec["stability_score"] == float(st.stability[k])
            assert rec["area"] == int(st.masks[k].sum())
            assert f"IoU {rec['predicted_iou']:.3f}" in view.strip_titles[k].get_text()
            assert f"stability {rec['stability_score']:.3f}" in view.strip_titles[k].get_text()
    assert not [f for f in os.listdir(out) if f.endswith(".part")]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
def test_internals_are_the_decoders_traced_tensors(sam, scene, tmp_path, fast):
    session, view = make_view(sam, scene, tmp_path, fast=fast)
    ref = Reference(sam, scene.image, fast=fast)
    a, _, bg = targets(scene)
    click(view, *a)
    ref.point(*session.state.points[-1], 1)
    press_key(view, "i")  # the internals of the shown prediction: traced again, same outputs
    click(view, *bg, button=3)
    trace = {}
    ref.point(*session.state.points[-1], 0, trace)
    for step in ("click", "cycle"):
        if step == "cycle":
            press_key(view, "c")
            ref.cycle()
        chosen = ref.out[3]
        assert session.state.chosen == chosen
        G, S = sam.config.image_embedding_size, sam.config.img_size
        attn = trace[ATTN]  # [1, nH, Tt, GG]
        assert attn.shape[2] == 1 + 4 + 3  # IoU token, 4 mask tokens, 2 points + the padding point
        want = np.asarray(attn[0, :, 2 + chosen, :]).mean(axis=0).reshape(G, G)  # the shown mask's token
        np.testing.assert_array_equal(np.asarray(view.panels["attention"].get_array()), want)
        np.testing.assert_allclose(want.sum(), 1.0, rtol=1e-5)  # a softmax row (mean over heads)

        pe = trace["prompt_encoder.pe_layer"]  # [C, G, G]
        x, y = session.state.points[-1]
        fx, fy = ref.pred.transform.apply_coords(np.array([[x, y]]), ref.pred.original_size)[0]
        row, col = int((fy + 0.5) * G // S), int((fx + 0.5) * G // S)
        v = pe[:, row, col]
        cos = np.einsum("c,cij->ij", v, pe) / (np.linalg.norm(v) * np.linalg.norm(pe, axis=0))
        np.testing.assert_allclose(np.asarray(view.panels["pe_similarity"].get_array()), cos, rtol=0, atol=1e-6)
        assert abs(cos[row, col] - 1) < 1e-6

        low = trace["mask_decoder"][0][0, chosen]  # [R, R] the decoder's output
        np.testing.assert_array_equal(np.asarray(view.panels["low_res_logits"].get_array()), low)
        np.testing.assert_array_equal(low, ref.out[2][chosen])
    # undo brings back an earlier prediction; its internals are traced again and equal a fresh trace
    press_key(view, "u")
    press_key(view, "u")
    trace = {}
    ref2 = Reference(sam, scene.image, fast=fast)
    ref2.points, ref2.labels = [session.state.points[0]], [1]
    ref2.prompt(trace)
    assert len(session.state.points) == 1 and session.state.mask_input is None
    want = np.asarray(trace[ATTN][0, :, 2 + session.state.chosen, :]).mean(axis=0).reshape(G, G)
    np.testing.assert_array_equal(np.asarray(view.panels["attention"].get_array()), want)


def test_automatic_masks_reuse_the_embedding(sam, scene, tmp_path, monkeypatch):
    from minisam.automatic_mask_generator import SamAutomaticMaskGenerator
    session, view = make_view(sam, scene, tmp_path)
    def no_encoder(*args, **kwargs):
        raise AssertionError("the image encoder ran again")
    monkeypatch.setattr(type(sam.image_encoder), "__call__", no_encoder)
    seen = []
    session.key("a", progress=lambda done, total: seen.append((done, total)))
    assert session.show_automatic
    monkeypatch.undo()
    want = SamAutomaticMaskGenerator(sam, progress=False).generate(scene.image)
    got = session.automatic_records
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g["segmentation"], w["segmentation"])
        assert g["predicted_iou"] == w["predicted_iou"]
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == list(range(1, len(seen) + 1))
    view.redraw()
    assert view.auto_overlay.get_visible()
    press_key(view, "a")  # toggles, without computing again
    assert not session.show_automatic and not view.auto_overlay.get_visible()


def test_embedding_cache_is_keyed_by_pixels_and_model_and_atomic(sam, scene, tmp_path):
    from minisam.interactive import ClickSession
    from minisam.interactive.cache import embedding_path, write_atomic
    folder = tmp_path / "cache"
    first = ClickSession(scene.image, SamPredictor(sam), cache=folder)
    assert not first.from_cache and os.path.isfile(first.cache_path)
    again = ClickSession(scene.image, SamPredictor(sam), cache=folder)
    assert again.from_cache and again.cache_path == first.cache_path
    np.testing.assert_array_equal(again.predictor.features, first.predictor.features)
    assert again.predictor.original_size == first.predictor.original_size

    other = scene.image.copy()
    other[0, 0, 0] ^= 1  # one pixel differs
    assert embedding_path(first.predictor, other, str(folder)) != first.cache_path
    changed = sam_model_registry["micro"]()
    changed.params["image_encoder"]["neck"][0]["weight"][0, 0, 0, 0] += 1e-3
    assert embedding_path(SamPredictor(changed), scene.image, str(folder)) != first.cache_path
    assert embedding_path(SamPredictor(sam, fast=False), scene.image, str(folder)) != first.cache_path

    with open(first.cache_path, "wb") as f:  # a damaged file is computed again
        f.write(b"not an npz")
    third = ClickSession(scene.image, SamPredictor(sam), cache=folder)
    assert not third.from_cache
    np.testing.assert_array_equal(third.predictor.features, first.predictor.features)

    target = str(folder / "x.npz")

    def dies(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        write_atomic(target, dies)
    assert sorted(os.listdir(folder)) == [os.path.basename(first.cache_path)]  # no half file, no .part


def test_cache_folder_from_the_environment(monkeypatch, tmp_path):
    from minisam.interactive.cache import embedding_cache_dir
    monkeypatch.setenv("MINISAM_EMBEDDING_CACHE", str(tmp_path / "e"))
    assert embedding_cache_dir() == str(tmp_path / "e")
    monkeypatch.delenv("MINISAM_EMBEDDING_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert embedding_cache_dir() == os.path.join(str(tmp_path / "x"), "minisam", "embeddings")


# ---------------------------------------------------------------------- the command line


def _cli(args, env_changes, tmp_path):
    env = dict(os.environ)
    env.update({k: v for k, v in env_changes.items() if v is not None})
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "minisam", "click", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_headless_says_how_to_run_and_exits_2(tmp_path):
    r = _cli([], {"DISPLAY": None, "WAYLAND_DISPLAY": None, "MINISAM_EMBEDDING_CACHE": str(tmp_path)}, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0], r.stderr
    assert "xvfb-run" in lines[0] and "%matplotlib widget" in lines[0] and "ClickSession" in lines[0]
    assert r.stdout == "" and not os.listdir(tmp_path)  # nothing computed, nothing written
    r = _cli([], {"DISPLAY": ":99", "MPLBACKEND": "Agg"}, tmp_path)  # a display, but a static backend
    assert r.returncode == 2 and "MPLBACKEND=Agg" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_images_get_one_line(tmp_path):
    from PIL import Image
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "big.png")
    for args, env, words in ((["missing.png"], {}, "no such file"),
                             (["notes.png"], {}, "cannot read as an image"),
                             (["big.png"], {"MINISAM_MAX_IMAGE_PIXELS": "1000"}, "over minisam's limit")):
        r = _cli(args, dict(env, DISPLAY=None), tmp_path)
        assert r.returncode == 1, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("minisam click: error:") and words in lines[0], r.stderr


# ---------------------------------------------------------------------- Jupyter

NOTEBOOK_CELL = r'''
%matplotlib widget
import json, numpy as np
from minisam import sam_model_registry, SamPredictor
from minisam.interactive import ClickSession
from minisam.training.shapes import make_scene, interior_point
sam = sam_model_registry["micro"]()
scene = make_scene(np.random.default_rng(5), 128)
session = ClickSession(scene.image, SamPredictor(sam), cache=False)
view = session.show()
canvas = view.fig.canvas
canvas.draw()
x, y = interior_point(max(scene.instance_masks, key=lambda m: m.sum())) - 0.5
px, py = view.ax.transData.transform((x, y))
height = canvas.get_renderer().height
def send(kind, buttons):  # what ipympl's front end sends: y from the top, JS button numbers
    canvas._handle_message(None, dict(type=kind, x=float(px), y=float(height - py), button=0, buttons=buttons,
                                      modifiers=[], guiEvent={}), [])
send("button_press", 1)
send("button_release", 0)
canvas._handle_message(None, dict(type="key_press", key="kc", guiEvent={}), [])
ref = SamPredictor(sam)
ref.set_image(scene.image)
masks, scores, _ = ref.predict(point_coords=np.array([[x, y]]), point_labels=np.array([1]))
print("RESULT " + json.dumps(dict(
    canvas=type(canvas).__module__, background=view.background, points=session.state.points,
    masks_equal=bool(np.array_equal(masks, session.state.masks)), chosen=session.state.chosen,
    expected_chosen=(int(np.argmax(scores)) + 1) % 3,
    drawn_equal=bool(np.array_equal(np.asarray(view.overlay.get_array())[..., 3] > 0, masks[session.state.chosen])),
    xy=[float(x), float(y)])))
'''


def test_jupyter_widget_takes_the_front_ends_events():
    """The session in a Jupyter kernel with ``%matplotlib widget`` (ipympl, the ``ui`` extra):
    a click and a key sent as ipympl's browser front end sends them reach the session, and the
    mask is the predictor's. Skipped only outside CI when ipympl or the kernel is absent; in CI
    (``CI`` set) a missing piece fails."""
    missing = [m for m in ("ipympl", "nbclient", "nbformat", "ipykernel") if _absent(m)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} not installed (they are in the test extra)")
        pytest.skip(f"{missing} not installed (pip install -e '.[test]')")
    import nbclient
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("output_type") == "stream")
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    assert result["canvas"] == "ipympl.backend_nbagg" and result["background"] is True
    assert result["points"] == [result["xy"]]
    assert result["masks_equal"] and result["drawn_equal"]
    assert result["chosen"] == result["expected_chosen"]


def _absent(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is None
