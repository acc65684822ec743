"""``minisam weights list|download|verify``: the checksummed weights registry."""

from __future__ import annotations

import os


def add_parser(sub):
    p = sub.add_parser("weights", help="list, download and verify model weights",
                       description="List, download and verify the registered model weights.")
    wsub = p.add_subparsers(dest="action", metavar="ACTION")
    wsub.required = True
    wsub.add_parser("list", help="show the registered weights and whether they are present")
    d = wsub.add_parser("download", help="download weights (resumable, MD5-checked)")
    d.add_argument("names", nargs="+", metavar="NAME")
    d.add_argument("--force", action="store_true", help="download again even if the file exists")
    d.add_argument("--no-progress", action="store_true")
    v = wsub.add_parser("verify", help="check size and MD5 of downloaded weights")
    v.add_argument("names", nargs="*", metavar="NAME")
    return p


def run(args) -> int:
    from minisam.checkpoints import registry as weights

    reg = weights.registry()
    if args.action == "list":
        print(f"weights folder: {weights.weights_dir()}")
        print(f"{'name':<8} {'file':<26} {'MB':>8}  {'md5':<32}  present")
        for name, e in reg.items():
            present = "yes" if os.path.isfile(weights.path_of(name)) else "no"
            print(f"{name:<8} {e['file']:<26} {e['bytes'] / 1e6:>8.1f}  {e['md5']}  {present}")
        return 0
    if args.action == "download":
        for name in args.names:
            path = weights.download(name, progress=not args.no_progress, force=args.force)
            print(f"{name}: {path}")
        return 0
    names = args.names or [n for n in reg if os.path.isfile(weights.path_of(n))]
    status = 0
    for name in names:
        ok = weights.verify(name)
        print(f"{name}: {'ok' if ok else 'BAD or missing'} ({weights.path_of(name)})")
        status |= 0 if ok else 1
    return status
