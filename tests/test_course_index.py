"""The committed course index (lessons/README.md, written by lessons/build_course.py) against the
lessons on disk: every lesson has its row, its run command and a thumbnail of at least 480 px
wide, and nothing else is listed. An index left behind by a renumbering fails here."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
MIN_THUMBNAIL_WIDTH = 480


def index_problems(index_text: str, lessons_dir: Path) -> list:
    """What is wrong with ``index_text`` as the index of the lessons in ``lessons_dir``."""
    on_disk = sorted(p.name for p in lessons_dir.glob("[0-9][0-9]_*.py"))
    rows = re.findall(r"^\| (\d\d) \| \[([^\]]+\.py)\]\(\2\) \|.*$", index_text, flags=re.M)
    listed = [name for _, name in rows]
    problems = []
    if listed != on_disk:
        problems.append(f"the index lists {listed}, the folder holds {on_disk}")
    for num, name in rows:
        if not name.startswith(num + "_"):
            problems.append(f"row {num} links {name}")
        row = next(line for line in index_text.splitlines() if line.startswith(f"| {num} | [{name}]"))
        if f"python lessons/{name} --out out/{num}" not in row:
            problems.append(f"{name}: no run command in its row")
        thumb = lessons_dir / "thumbnails" / f"{num}.png"
        if f"](thumbnails/{num}.png)" not in row:
            problems.append(f"{name}: no thumbnail in its row")
        elif not thumb.is_file():
            problems.append(f"{thumb} is missing")
        elif Image.open(thumb).size[0] < MIN_THUMBNAIL_WIDTH:
            problems.append(f"{thumb} is {Image.open(thumb).size[0]} px wide (< {MIN_THUMBNAIL_WIDTH})")
    return problems


def test_the_index_lists_every_lesson_with_a_legible_thumbnail():
    problems = index_problems((LESSONS / "README.md").read_text(), LESSONS)
    assert not problems, "run python lessons/build_course.py: " + "; ".join(problems)


def test_a_stale_index_is_caught():
    """An index without one lesson's row, or with a row numbered unlike its file, fails (as the
    index of 13 lessons left from before the renumbering did)."""
    text = (LESSONS / "README.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"^\| \d\d \| \[", line)]
    stale = text.replace(rows[1] + "\n", "")                     # a lesson without its row
    assert any("the index lists" in p for p in index_problems(stale, LESSONS))
    renamed = text.replace(rows[0], rows[0].replace("| 01 |", "| 05 |", 1))
    assert any("row 05 links" in p for p in index_problems(renamed, LESSONS))
