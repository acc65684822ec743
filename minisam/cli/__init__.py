"""The ``minisam`` command line (also ``python -m minisam``).

Each subcommand lives in ``minisam/cli/<name>.py`` and provides
``add_parser(subparsers)`` and ``run(args) -> int``. Errors that minisam raises on purpose
(:class:`minisam.MinisamError`) and bad arguments end the program with one clear line on
stderr and a non-zero exit code (2 for usage errors, 1 otherwise), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import List, Optional

from minisam.errors import MinisamError

# Order shown in --help.
COMMANDS = ["demo", "segment", "click", "auto", "parity", "weights", "train_micro", "finetune"]


class _Parser(argparse.ArgumentParser):
    """Bad arguments end with one line on stderr (``minisam segment: error: ...``) and exit 2;
    ``--help`` still shows the full usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minisam", description="Segment Anything in NumPy and Numba.")
    parser.add_argument("--version", action="version", version=f"minisam {__import__('minisam').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = import_module(f"minisam.cli.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except MinisamError as exc:
        print(f"minisam {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"minisam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
