"""The course as a static site: every lesson executed as a notebook, one HTML page each.

    python lessons/build_course.py --site out/site [--only 09 14]

Each ``lessons/NN_*.py`` (a percent-format script) is read by jupytext as a notebook and run
top to bottom in a Jupyter kernel by nbclient, the way a student's notebook runs. Its page
shows the prose (Markdown, with LaTeX equations), the code, the printed output and the
figures; ``index.html`` lists the lessons with the claims each one checked and the values it
measured. Equations are typeset in the browser by MathJax 2.7, copied into the site from the
``jupyter-server-mathjax`` package (HTML-CSS output with its STIX web fonts): building and
reading the site need no network. The executed notebooks are saved beside the pages (``notebooks/``).

Needs the ``course`` extra (``pip install -e ".[course]"``).
"""

from __future__ import annotations

import base64
import glob
import html
import json
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))

#: What a lesson prints for each checked claim (lessons/_lesson.py ``claim``).
CLAIM = re.compile(r"^claim (holds|FAILS): (.*)$", re.M)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class SiteBuildError(RuntimeError):
    """A lesson that could not be executed, or a missing tool of the ``course`` extra."""


@dataclass
class LessonResult:
    """One executed lesson: where its page is, what it claimed, how it went."""
    path: str
    number: str
    slug: str
    title: str = ""
    seconds: float = 0.0
    error: Optional[str] = None
    claims: List[tuple] = field(default_factory=list)   # (verdict, statement)
    figures: int = 0

    @property
    def page(self) -> str:
        return f"{self.slug}.html"


def lesson_paths(directory: str = HERE) -> List[str]:
    """Every lesson, in course order: ``NN_*.py`` files sorted by name."""
    return sorted(glob.glob(os.path.join(directory, "[0-9][0-9]_*.py")))


def _require():
    try:
        import jupytext  # noqa: F401
        import markdown_it  # noqa: F401
        import mdit_py_plugins  # noqa: F401
        import nbclient  # noqa: F401
        import pygments  # noqa: F401
        import jupyter_server_mathjax  # noqa: F401
    except ImportError as exc:
        raise SiteBuildError(f"building the site needs the course extra ({exc}): "
                             f"pip install -e \".[course]\"") from exc


def mathjax_dir() -> str:
    """MathJax 2.7's files as the installed ``jupyter-server-mathjax`` package ships them."""
    import jupyter_server_mathjax
    path = os.path.join(os.path.dirname(jupyter_server_mathjax.__file__), "static")
    if not os.path.isfile(os.path.join(path, "MathJax.js")):
        raise SiteBuildError(f"jupyter-server-mathjax has no MathJax.js under {path}")
    return path


def copy_mathjax(dest: str) -> None:
    """The parts of MathJax this site uses: the core, the combined TeX configuration, the
    HTML-CSS output and its STIX web fonts."""
    src = mathjax_dir()
    os.makedirs(dest, exist_ok=True)
    shutil.copy2(os.path.join(src, "MathJax.js"), dest)
    for part in ("config", "jax", "fonts/HTML-CSS/STIX-Web", "localization/en"):
        shutil.copytree(os.path.join(src, part), os.path.join(dest, part), dirs_exist_ok=True)
    shutil.copytree(os.path.join(src, "extensions"), os.path.join(dest, "extensions"), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("a11y"))


# --------------------------------------------------------------------------------------
# Executing a lesson as a notebook
# --------------------------------------------------------------------------------------

def read_notebook(path: str):
    """The lesson as jupytext reads it (percent format -> notebook)."""
    import jupytext
    return jupytext.read(path)


def execute_lesson(path: str, out_dir: str, timeout: int = 1800, lesson_args: str = ""):
    """Run the lesson's notebook top to bottom in a fresh ``python3`` kernel started in the
    lesson's folder; the lesson's ``--out`` is ``out_dir``; ``timeout`` seconds per cell.
    -> (notebook, error or None): a cell that raises, times out or kills the kernel is an error."""
    from nbclient import NotebookClient

    nb = read_notebook(path)
    env = dict(os.environ)
    env["MINISAM_LESSON_ARGS"] = " ".join([shlex.join(["--out", out_dir]), lesson_args]).strip()
    # The figures a page shows are the files the lesson saves (``_lesson.save`` displays them);
    # a non-interactive backend keeps a figure left open from being drawn a second time.
    env["MPLBACKEND"] = "Agg"
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    try:
        client.execute(env=env)
    except Exception as exc:   # CellExecutionError, CellTimeoutError, DeadKernelError
        return nb, f"{type(exc).__name__}: " + ANSI.sub("", str(exc))[-3000:]
    return nb, None


def cell_text(nb) -> str:
    """Everything the notebook's code cells printed, in order."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
    return "".join(parts)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

def _markdown():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")
    md.use(dollarmath_plugin, allow_space=True, allow_digits=True, double_inline=True)

    def inline(self, tokens, idx, options, env):
        return f'<script type="math/tex">{tokens[idx].content}</script>'

    def display(self, tokens, idx, options, env):
        return f'<div class="equation"><script type="math/tex; mode=display">{tokens[idx].content}</script></div>\n'

    md.add_render_rule("math_inline", inline)
    md.add_render_rule("math_inline_double", display)
    md.add_render_rule("math_block", display)
    md.add_render_rule("math_block_label", display)
    return md


def _highlight(code: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    return highlight(code, PythonLexer(), HtmlFormatter(cssclass="highlight"))


def _pre(text: str, kind: str) -> str:
    return f'<pre class="output {kind}">{html.escape(ANSI.sub("", text))}</pre>\n'


def render_cells(nb, result: LessonResult, site: str) -> str:
    md = _markdown()
    fig_dir = os.path.join(site, result.slug)
    parts = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            parts.append(f'<section class="prose">{md.render(cell.source)}</section>\n')
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        parts.append(f'<div class="code">{_highlight(cell.source)}</div>\n')
        for k, out in enumerate(cell.get("outputs", [])):
            kind = out.get("output_type")
            if kind == "stream":
                parts.append(_pre(out.get("text", ""), "stream-" + out.get("name", "stdout")))
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                if "image/png" in data:
                    name = out.get("metadata", {}).get("filename") or f"cell{i:02d}_{k}.png"
                    name = os.path.basename(name)
                    os.makedirs(fig_dir, exist_ok=True)
                    with open(os.path.join(fig_dir, name), "wb") as fh:
                        fh.write(base64.b64decode(data["image/png"]))
                    result.figures += 1
                    parts.append(f'<figure><img src="{html.escape(result.slug)}/{html.escape(name)}" '
                                 f'alt="{html.escape(name)}"><figcaption>{html.escape(name)}</figcaption></figure>\n')
                elif "text/plain" in data:
                    parts.append(_pre(data["text/plain"], "result"))
            elif kind == "error":
                parts.append(_pre("\n".join(out.get("traceback", [])), "error"))
    return "".join(parts)


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


# The equations are already <script type="math/tex"> elements (the Markdown renderer's output):
# tex2jax, which the combined configuration loads, must not typeset TeX left in the text, so
# that math the renderer missed shows as the raw TeX it is.
MATHJAX_CONFIG = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  jax: ["input/TeX", "output/HTML-CSS"], extensions: [],
  TeX: {extensions: ["AMSmath.js", "AMSsymbols.js"], noErrors: {disabled: true}, noUndefined: {disabled: true}},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank')"}}},
  tex2jax: {inlineMath: [], displayMath: [], processEscapes: false, processEnvironments: false},
  "fast-preview": {disabled: true}, "CHTML-preview": {disabled: true}, AssistiveMML: {disabled: true},
  messageStyle: "none", showMathMenu: false, menuSettings: {zoom: "None"}
});
MathJax.Hub.Queue(function () { document.documentElement.setAttribute("data-math", "typeset"); });
</script>
"""


def page(title: str, body: str, static: str, math: bool, nav: str = "") -> str:
    loader = f'<script src="{static}/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"></script>\n'
    head_math = MATHJAX_CONFIG + loader if math else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{static}/course.css">
{head_math}</head>
<body>
<nav>{nav}</nav>
<main>
{body}
</main>
<nav>{nav}</nav>
</body>
</html>
"""


def css() -> str:
    from pygments.formatters import HtmlFormatter
    return """body { font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; margin: 0;
       background: #fafafa; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; background: #fff; }
nav { max-width: 60rem; margin: 0 auto; padding: .6rem 1.5rem; font-size: .95rem; }
nav a { margin-right: 1.2rem; }
h1 { font-size: 1.7rem; line-height: 1.25; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.prose code { background: #f2f2f4; padding: 0 .2em; border-radius: 3px; }
.equation { overflow-x: auto; margin: .8rem 0; }
.code .highlight { background: #f6f8fa; border-left: 3px solid #4a7bd0; margin: .8rem 0 0; }
.code pre, pre.output { margin: 0; padding: .6rem .8rem; overflow-x: auto; font-size: .82rem; line-height: 1.4; }
pre.output { background: #fff; border-left: 3px solid #ccc; color: #333; white-space: pre-wrap; }
pre.stream-stderr { color: #8a5a00; } pre.error { color: #b00020; border-left-color: #b00020; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .8rem; color: #666; }
table.lessons { border-collapse: collapse; width: 100%; } table.lessons td, table.lessons th {
  border-top: 1px solid #ddd; padding: .5rem; vertical-align: top; text-align: left; }
ul.claims { margin: .3rem 0 0; padding-left: 1.2rem; font-size: .85rem; }
.holds { color: #17692d; } .fails { color: #b00020; font-weight: bold; }
""" + HtmlFormatter().get_style_defs(".highlight")


INDEX_INTRO = """<h1>The minisam course</h1>
<p>Segment Anything (Kirillov et al. 2023) rebuilt from scratch in NumPy, one lesson at a time. Each page
below is a lesson executed top to bottom as a notebook when this site was built: its prose and equations,
its code, what it printed and the figures it drew. A lesson checks the sentences of its text in code
(<code>_lesson.claim</code>); they are listed here with the values measured in that run. Every lesson is
also a script (<code>python lessons/NN_name.py --out DIR</code>) and a notebook (<code>jupytext</code>), and
has exercises (<code>python lessons/exercises.py NN</code>).</p>
"""


def render_index(results: List[LessonResult]) -> str:
    rows = []
    for r in results:
        if r.error:
            status = '<span class="fails">the lesson failed: see its page</span>'
        else:
            status = f"ran in {r.seconds:.0f} s, {r.figures} figure{'s' * (r.figures != 1)}"
        claims = "".join(f'<li class="holds">&#10003; {html.escape(s)}</li>' if v == "holds" else
                         f'<li class="fails">&#10007; {html.escape(s)}</li>' for v, s in r.claims)
        claims = f'<ul class="claims">{claims}</ul>' if claims else '<p class="claims">(no claims checked in code)</p>'
        rows.append(f'<tr><td>{r.number}</td><td><a href="{r.page}">{html.escape(r.title)}</a><br>'
                    f'<small>{status}</small>{claims}</td></tr>')
    body = INDEX_INTRO + '<table class="lessons"><tr><th>#</th><th>lesson, and the claims it checked</th></tr>\n'
    return body + "\n".join(rows) + "</table>\n"


def build_site(site: str, paths: Optional[List[str]] = None, lesson_args: str = "", log=print) -> List[LessonResult]:
    """Execute each lesson in ``paths`` (all lessons by default) and write the site to ``site``.
    Pages are written for failed lessons too (with the error); raises SiteBuildError at the
    end, naming every lesson that failed."""
    _require()
    paths = lesson_paths() if paths is None else list(paths)
    if not paths:
        raise SiteBuildError("no lessons to build")
    site = os.path.abspath(site)
    os.makedirs(site, exist_ok=True)
    static = os.path.join(site, "_static")
    copy_mathjax(os.path.join(static, "mathjax"))
    with open(os.path.join(static, "course.css"), "w") as fh:
        fh.write(css())
    import nbformat
    nb_dir = os.path.join(site, "notebooks")
    os.makedirs(nb_dir, exist_ok=True)
    results, notebooks = [], []
    for path in paths:
        name = os.path.basename(path)[:-3]
        r = LessonResult(path=path, number=name[:2], slug=name)
        t0 = time.perf_counter()
        nb, r.error = execute_lesson(path, os.path.join(site, "_lesson_out", r.number), lesson_args=lesson_args)
        r.seconds = time.perf_counter() - t0
        r.title = _title(nb, name)
        r.claims = CLAIM.findall(cell_text(nb))
        nbformat.write(nb, os.path.join(nb_dir, name + ".ipynb"))
        results.append(r)
        notebooks.append(nb)
        log(f"{name}: {'FAILED' if r.error else 'ok'} in {r.seconds:.1f} s, {len(r.claims)} claims")
    for i, (r, nb) in enumerate(zip(results, notebooks)):
        links = ['<a href="index.html">course index</a>']
        if i > 0:
            links.append(f'<a href="{results[i - 1].page}">&larr; {results[i - 1].number}</a>')
        if i + 1 < len(results):
            links.append(f'<a href="{results[i + 1].page}">{results[i + 1].number} &rarr;</a>')
        links.append(f'<a href="notebooks/{r.slug}.ipynb">notebook (.ipynb, with outputs)</a>')
        body = render_cells(nb, r, site)
        if r.error:
            body = _pre(f"This lesson failed when the site was built:\n{r.error}", "error") + body
        with open(os.path.join(site, r.page), "w") as fh:
            fh.write(page(r.title, body, "_static", math=True, nav=" ".join(links)))
    with open(os.path.join(site, "index.html"), "w") as fh:
        fh.write(page("The minisam course", render_index(results), "_static", math=False))
    with open(os.path.join(site, "build.json"), "w") as fh:
        json.dump([{"lesson": os.path.basename(r.path), "page": r.page, "title": r.title,
                    "seconds": round(r.seconds, 1), "error": r.error, "figures": r.figures,
                    "claims": [{"verdict": v, "statement": s} for v, s in r.claims]} for r in results], fh, indent=1)
    failed = [os.path.basename(r.path) for r in results if r.error]
    if failed:
        raise SiteBuildError(f"{len(failed)} lesson(s) failed: {', '.join(failed)} (their pages show the error)")
    log(f"site: {os.path.join(site, 'index.html')}")
    return results


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Build the course site (every lesson executed as a notebook).")
    ap.add_argument("site", help="output folder")
    ap.add_argument("--only", nargs="*", default=None, help="lesson numbers (default: all)")
    args = ap.parse_args(argv)
    paths = lesson_paths()
    if args.only:
        unknown = sorted(set(args.only) - {os.path.basename(p)[:2] for p in paths})
        if unknown:
            print(f"error: no lesson numbered {', '.join(unknown)} in {HERE}", file=sys.stderr)
            return 2
        paths = [p for p in paths if os.path.basename(p)[:2] in args.only]
    try:
        build_site(args.site, paths)
    except SiteBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
