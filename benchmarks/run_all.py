"""Run every benchmark and write their outputs to ``benchmarks/RESULTS.md``.

    python benchmarks/run_all.py [--only encoder predict amg cold_start] [--out benchmarks/RESULTS.md]

The README's performance table is copied from the summary this writes (each benchmark's
ratio lines), and the full output of each script follows it, so every number in the README
can be traced to one run of one script. Run it on a quiet machine: each script interleaves
minisam and the official code, so load hits both sides alike, but a loaded machine still
adds noise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

BENCHMARKS = {
    "encoder": ["encoder.py"],
    "predict": ["predict.py"],
    "amg": ["amg.py", "--points-per-side", "32"],
    "cold_start": ["cold_start.py"],
}
# the lines of each output that carry its verdicts (ratios, targets, agreement)
SUMMARY = re.compile(r"minisam ?/ ?official|target|agree|same masks|start-up cost|GFLOP/s|peak RSS", re.I)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()
    sections, summary = [], []

    def write():   # after every benchmark, so an interrupted run keeps what it measured
        head = (f"# Benchmark results\n\nWritten by `python benchmarks/run_all.py` on "
                f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: {cpu_name()}, "
                f"{os.cpu_count()} CPUs, Python {platform.python_version()}.\n\n## Summary\n\n")
        with open(args.out, "w") as f:
            f.write(head + "\n".join(summary) + "\n\n" + "\n".join(sections))

    for name in args.only:
        cmd = [sys.executable, os.path.join(HERE, BENCHMARKS[name][0]), *BENCHMARKS[name][1:]]
        print(f"running {' '.join(os.path.relpath(c) if c.endswith('.py') else c for c in cmd[1:])} ...", flush=True)
        t0 = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True)
        took = time.time() - t0
        if res.returncode != 0:
            sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
            print(f"{name} failed (exit {res.returncode})", file=sys.stderr)
            return 1
        shown = "python benchmarks/" + " ".join(BENCHMARKS[name])
        sections.append(f"## {name}\n\n`{shown}` ({took:.0f} s)\n\n```\n{res.stdout.rstrip()}\n```\n")
        summary += [f"- {name}: {line.strip()}" for line in res.stdout.splitlines() if SUMMARY.search(line)]
        print(f"  done in {took:.0f} s", flush=True)
        write()
    print(f"wrote {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
