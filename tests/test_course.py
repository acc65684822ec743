"""The course as notebooks and as a site: ``python lessons/build_course.py --site DIR``.

One build per session (the real command line, in a subprocess) executes every lesson as a
notebook: jupytext reads the percent-format script, nbclient runs it top to bottom in a
Jupyter kernel. Then:
- each lesson's executed notebook: every code cell ran, in order, with no error, its claims
  all hold, and every figure the lesson wrote is shown below its cell;
- a real browser (headless Chromium from the distribution, driven over the DevTools pipe by
  ``tests/cdp.py``) opens the index and two lesson pages: no console error or failed load, the
  equations typeset by the site's own MathJax (no raw ``$$`` left, no TeX error), every figure
  loaded; a screenshot of each page is saved beside the site (``_screenshots/``);
- the checks are shown to fail on broken input: a lesson whose claim is false fails the build,
  and a page with a TeX error, raw ``$$`` and ``$`` left in its text, a missing figure and a
  failing script is reported as such (this one builds two tiny lessons: not slow).

The build needs the ``course`` extra and the browser needs ``chromium``; where either is
missing these tests skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import glob
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS_DIR = os.path.join(ROOT, "lessons")
LESSONS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(LESSONS_DIR, "[0-9][0-9]_*.py")))
IN_CI = bool(os.environ.get("CI"))

# The build runs every lesson in a kernel (minutes on 2 cores): the tests that need it are slow;
# the broken-input check builds two tiny lessons and stays in the quick loop.


def _require(ok: bool, reason: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{reason} (CI installs it: the course extra, and chromium in .ci/run)")
        pytest.skip(reason)


def _course_extra():
    missing = [m for m in ("jupytext", "nbclient", "ipykernel", "markdown_it", "mdit_py_plugins",
                           "jupyter_server_mathjax", "pygments") if importlib.util.find_spec(m) is None]
    _require(not missing, f"the course extra is not installed (missing {', '.join(missing)})")


def _env():
    env = dict(os.environ, MPLBACKEND="Agg")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, "1")   # the lessons' matrices are tiny: one thread each (tests/test_lessons.py)
    return env


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    _course_extra()
    directory = tmp_path_factory.mktemp("course_site")
    proc = subprocess.run([sys.executable, os.path.join(LESSONS_DIR, "build_course.py"), "--site", str(directory)],
                          cwd=str(directory), env=_env(), capture_output=True, text=True, timeout=3600)
    manifest = os.path.join(directory, "build.json")
    build = json.load(open(manifest)) if os.path.exists(manifest) else []
    return {"dir": str(directory), "returncode": proc.returncode, "output": proc.stdout + proc.stderr,
            "build": {os.path.basename(b["lesson"])[:-3]: b for b in build}}


@pytest.mark.parametrize("name", LESSONS)
def test_the_lesson_is_a_notebook_and_back(name):
    """jupytext reads the lesson as prose and code cells, titled by its number, and writes it back
    unchanged, directly and through an .ipynb file: editing it as a notebook keeps one source."""
    _course_extra()
    import jupytext
    path = os.path.join(LESSONS_DIR, f"{name}.py")
    source = open(path).read()
    nb = jupytext.read(path)
    kinds = {c.cell_type for c in nb.cells}
    assert kinds == {"markdown", "code"}, kinds
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# Lesson {name[:2]}"), first.source[:80]
    assert jupytext.writes(nb, fmt="py:percent") == source
    through_ipynb = jupytext.reads(jupytext.writes(nb, fmt="ipynb"), fmt="ipynb")
    assert jupytext.writes(through_ipynb, fmt="py:percent") == source


@pytest.mark.course
def test_the_site_builds(site):
    assert site["returncode"] == 0, site["output"][-4000:]
    assert sorted(site["build"]) == LESSONS, f"built {sorted(site['build'])}, lessons are {LESSONS}"
    for name in ["index.html", "_static/mathjax/MathJax.js", "_static/course.css"] + [f"{n}.html" for n in LESSONS]:
        assert os.path.isfile(os.path.join(site["dir"], name)), f"the site has no {name}"
    index = open(os.path.join(site["dir"], "index.html")).read()
    for name, entry in site["build"].items():
        assert f'href="{name}.html"' in index, f"the index does not link {name}"
        for claim in entry["claims"]:   # each claim, with the values it measured, is on the index
            assert html.escape(claim["statement"])[:60] in index, f"{name}: {claim['statement']}"
    pages = "".join(open(p).read() for p in glob.glob(os.path.join(site["dir"], "*.html")))
    assert not re.search(r'<(script|img)[^>]+src="(https?:)?//|<link[^>]+href="(https?:)?//', pages), \
        "a page loads something from the network"


@pytest.mark.course
@pytest.mark.parametrize("name", LESSONS)
def test_the_lesson_runs_top_to_bottom_as_a_notebook(site, name):
    import nbformat
    entry = site["build"].get(name)
    assert entry is not None, f"{name} was not built:\n{site['output'][-3000:]}"
    assert entry["error"] is None, f"{name} failed in the kernel:\n{entry['error']}"
    nb = nbformat.read(os.path.join(site["dir"], "notebooks", f"{name}.ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert [c.get("execution_count") for c in code] == list(range(1, len(code) + 1)), \
        "every code cell runs once, top to bottom"
    assert any(c.cell_type == "markdown" for c in nb.cells), "the lesson has prose cells"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"], "a cell raised"
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "claim FAILS" not in printed
    source = open(os.path.join(LESSONS_DIR, f"{name}.py")).read()
    if "_lesson.claim(" in source:
        assert entry["claims"] and all(c["verdict"] == "holds" for c in entry["claims"]), entry["claims"]
    shown = sorted(o.get("metadata", {}).get("filename") for o in outputs if "image/png" in o.get("data", {}))
    out = os.path.join(site["dir"], "_lesson_out", name[:2])
    written = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.png")))
    assert written and shown == written, f"figures shown in the notebook {shown}, written by the lesson {written}"


# --------------------------------------------------------------------------------------
# In a browser
# --------------------------------------------------------------------------------------

INSPECT = r"""(function () {
  function bad(n) { return !!n && (n.type === 'merror' || (n.data || []).some(bad)); }
  var jax = window.MathJax && MathJax.Hub ? MathJax.Hub.getAllJax() : [];
  return {
    typeset: document.documentElement.getAttribute('data-math') === 'typeset',
    sources: document.querySelectorAll('script[type^="math/tex"]').length,
    rendered: document.querySelectorAll('span.MathJax').length,
    tex_errors: jax.filter(function (j) { return bad(j.root); }).map(function (j) { return j.originalText; }),
    raw_dollars: document.body.innerText.indexOf('$$') >= 0,
    raw_tex: Array.from(document.querySelectorAll('.prose')).map(function (e) { return e.innerText; })
      .filter(function (t) { return /\$|\\(frac|begin|mathbb|sum)\b/.test(t); })
      .map(function (t) { return t.slice(0, 80); }),
    images: Array.from(document.images).map(function (i) {
      return {src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}; }),
    too_wide: Array.from(document.querySelectorAll('.equation')).filter(function (e) {
      return e.scrollWidth > e.clientWidth + 1; }).map(function (e) { return e.textContent.slice(0, 60); }),
    height: document.documentElement.scrollHeight,
    title: document.title
  };
})()"""


def inspect_page(browser, path, screenshot):
    """Open ``path`` and report what a reader would see: the findings, and the list of problems."""
    page = browser.open("file://" + path)
    has_math = page.evaluate("!!window.MathJax")
    if has_math:
        page.wait_for("document.documentElement.getAttribute('data-math') === 'typeset'", timeout=120)
    found = page.evaluate(INSPECT)
    found["console_errors"] = page.console_errors
    page.screenshot(screenshot)
    box = page.evaluate("(function () { var f = document.querySelector('figure'); if (!f) return null;"
                        " var r = f.getBoundingClientRect(); return {x: r.left + window.scrollX,"
                        " y: r.top + window.scrollY, width: r.width, height: r.height}; })()")
    if box and box["width"] > 0 and box["height"] > 0:   # the first figure, wherever it is on the page
        page.screenshot(screenshot[:-4] + "_figure.png", clip=box)
    problems = list(found["console_errors"])
    if has_math and not found["typeset"]:
        problems.append("MathJax never finished typesetting")
    if found["rendered"] < found["sources"]:
        problems.append(f"{found['sources']} equations, {found['rendered']} rendered")
    problems += [f"TeX error in: {t}" for t in found["tex_errors"]]
    problems += [f"equation wider than the page: {t}" for t in found["too_wide"]]
    if found["raw_dollars"]:
        problems.append("raw $$ left in the page text")
    problems += [f"raw TeX left in the prose: {t}" for t in found["raw_tex"]]
    problems += [f"figure did not load: {i['src']}" for i in found["images"] if not i["ok"]]
    return found, problems


@pytest.fixture(scope="session")
def browser():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cdp import Browser, find_chromium
    _require(find_chromium() is not None, "no Chromium on this machine (apt-get install chromium)")
    with Browser() as b:
        yield b


@pytest.mark.course
def test_index_and_two_lessons_in_a_real_browser(site, browser):
    assert site["returncode"] == 0, site["output"][-3000:]
    shots = os.path.join(site["dir"], "_screenshots")
    os.makedirs(shots, exist_ok=True)
    with_math = [n for n in LESSONS if "$$" in open(os.path.join(LESSONS_DIR, f"{n}.py")).read()]
    assert len(with_math) >= 2, "at least two lessons have display equations"
    pages = ["index"] + with_math[:2]
    for name in pages:
        found, problems = inspect_page(browser, os.path.join(site["dir"], f"{name}.html"),
                                       os.path.join(shots, f"{name}.png"))
        assert not problems, f"{name}.html: {problems}"
        if name == "index":
            assert len(found["images"]) == 0 and found["title"] == "The minisam course"
            continue
        assert found["sources"] > 0 and found["rendered"] == found["sources"], found
        assert len(found["images"]) == site["build"][name]["figures"] > 0, found["images"]
    print(f"screenshots: {shots}")


def test_the_checks_fail_on_broken_input(tmp_path, browser):
    """A false claim fails the build (and its page says so); a TeX error, TeX left raw in the
    text, a missing figure and a script error are each reported by the browser check."""
    _course_extra()
    sys.path.insert(0, LESSONS_DIR)
    import _site
    source = tmp_path / "lessons"
    source.mkdir()
    shutil.copy(os.path.join(LESSONS_DIR, "_lesson.py"), source)
    (source / "01_broken.py").write_text(
        "# %% [markdown]\n# # Lesson 01: broken on purpose\n#\n# $$\n# \\notamacro{x} + \\frac{1}{2}\n# $$\n\n"
        "# %%\nimport _lesson\n\nargs = _lesson.parse_args('01', 'broken')\n"
        "_lesson.claim(1 + 1 == 3, 'one and one make three')\n")
    (source / "02_fine.py").write_text(
        "# %% [markdown]\n# # Lesson 02: fine\n#\n# $$ a^2 + b^2 = c^2 $$\n\n"
        "# %%\nimport _lesson\n\nargs = _lesson.parse_args('02', 'fine')\n_lesson.claim(True, 'true')\n")
    out = tmp_path / "site"
    with pytest.raises(_site.SiteBuildError, match="01_broken.py"):
        _site.build_site(str(out), [str(source / "01_broken.py"), str(source / "02_fine.py")], log=lambda *a: None)
    build = {b["lesson"]: b for b in json.load(open(out / "build.json"))}
    assert "one and one make three" in build["01_broken.py"]["error"] and build["02_fine.py"]["error"] is None
    assert "lesson claim failed" in (out / "01_broken.html").read_text()
    _, problems = inspect_page(browser, str(out / "02_fine.html"), str(tmp_path / "fine.png"))
    assert problems == []
    page = (out / "01_broken.html").read_text()
    page = page.replace("</main>", '<section class="prose"><p>$$ x^2 $$ and $y$</p></section>'
                        '<img src="missing.png"><script>undefinedFunction();</script></main>')
    (out / "01_broken.html").write_text(page)
    _, problems = inspect_page(browser, str(out / "01_broken.html"), str(tmp_path / "broken.png"))
    assert any("TeX error in" in p and "notamacro" in p for p in problems), problems
    assert "raw $$ left in the page text" in problems, problems
    assert any(p.startswith("raw TeX left in the prose: $$ x^2 $$ and $y$") for p in problems), problems
    assert any("figure did not load: missing.png" in p for p in problems), problems
    assert any("undefinedFunction" in p for p in problems), problems
    assert any("ERR_FILE_NOT_FOUND" in p for p in problems), problems
