"""Check your answers to a lesson's exercises.

    python lessons/exercises.py 09              # your code in lessons/exercises/09_*.py
    python lessons/exercises.py 09 --solutions  # the reference solutions instead
    python lessons/exercises.py --list          # every lesson's exercises

Each lesson NN has three files, found by their number:
- ``lessons/exercises/NN_name.py``: the exercises, as functions to fill in (each stub raises
  NotImplementedError) with the task in its docstring;
- ``lessons/exercises/checks/NN_name.py``: the checkers, ``CHECKS = [(title, check), ...]``; a
  check takes the module with your answers and raises AssertionError saying what is wrong;
- ``lessons/exercises/solutions/NN_name.py``: reference solutions, to read after trying.

The checks compare your code with minisam's own (the reference implementation of SAM) on
random inputs, with finite differences, or with a property the lesson states. Each takes
seconds. The exit status is 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
EXERCISES = os.path.join(HERE, "exercises")
sys.path.insert(0, os.path.dirname(HERE))        # minisam from this checkout


class ExerciseError(RuntimeError):
    """A lesson number with no exercise file, or a checker file that is missing or malformed."""


def find(directory: str, number: str) -> str:
    """The one ``NN_*.py`` file of lesson ``number`` in ``directory``."""
    if not (len(number) == 2 and number.isdigit()):
        raise ExerciseError(f"a lesson number is two digits (05), got {number!r}")
    found = sorted(glob.glob(os.path.join(directory, f"{number}_*.py")))
    if len(found) != 1:
        raise ExerciseError(f"expected one {number}_*.py in {directory}, found {len(found)}")
    return found[0]


def numbers():
    """Every lesson number that has exercises, in order."""
    return sorted({os.path.basename(p)[:2] for p in glob.glob(os.path.join(EXERCISES, "[0-9][0-9]_*.py"))})


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_checks(number: str):
    """Lesson ``number``'s checker module (its ``CHECKS`` list checked to be there)."""
    directory = os.path.join(EXERCISES, "checks")
    if directory not in sys.path:
        sys.path.insert(0, directory)                             # the checkers' shared _common.py
    checks = load(find(directory, number), f"checks_{number}")
    if not getattr(checks, "CHECKS", None):
        raise ExerciseError(f"checks for lesson {number} define no CHECKS list")
    return checks


def run(number: str, solutions: bool = False):
    """-> [(title, passed, message)] for lesson ``number``'s exercises."""
    checks = load_checks(number)
    answers_path = find(os.path.join(EXERCISES, "solutions") if solutions else EXERCISES, number)
    try:
        answers = load(answers_path, f"answers_{number}")
    except Exception as exc:  # a syntax error in the student's file fails every check, and says why
        message = f"{os.path.relpath(answers_path)} does not import: {type(exc).__name__}: {exc}"
        return [(title, False, message) for title, _ in checks.CHECKS]
    results = []
    for title, check in checks.CHECKS:
        try:
            info = check(answers)
        except NotImplementedError as exc:
            results.append((title, False, f"not done yet ({exc})" if str(exc) else "not done yet"))
        except AssertionError as exc:
            results.append((title, False, str(exc) or "a check failed"))
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            results.append((title, False, f"{type(exc).__name__}: {exc} "
                                          f"({os.path.basename(where.filename)}:{where.lineno})"))
        else:
            results.append((title, True, info or ""))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("number", nargs="?", help="the lesson number, e.g. 05")
    ap.add_argument("--solutions", action="store_true", help="check the reference solutions instead")
    ap.add_argument("--list", action="store_true", help="list every lesson's exercises")
    args = ap.parse_args(argv)
    if args.list:
        for n in numbers():
            checks = load_checks(n)
            print(f"{os.path.relpath(find(EXERCISES, n))}:")
            for title, _ in checks.CHECKS:
                print(f"  {title}")
        return 0
    if args.number is None:
        ap.error(f"give a lesson number ({', '.join(numbers())}) or --list")
    try:
        t0 = time.perf_counter()
        results = run(args.number, args.solutions)
    except ExerciseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for title, passed, message in results:
        print(f"{'ok  ' if passed else 'FAIL'} {title}" + (f": {message}" if message else ""))
    good = sum(passed for _, passed, _ in results)
    print(f"lesson {args.number}{' (solutions)' if args.solutions else ''}: {good} of {len(results)} exercises "
          f"check out, in {time.perf_counter() - t0:.1f} s")
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
