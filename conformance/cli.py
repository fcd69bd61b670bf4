"""The ``focalx check`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import runner


def parser(prog="focalx check"):
    ap = argparse.ArgumentParser(
        prog=prog, description="Check every installed focalx backend, device and dtype against "
                               "the golden cases (an independent mpmath oracle).")
    ap.add_argument("--backend", action="append", type=_names(runner.BACKENDS, "backend"),
                    help="only these backends, comma-separated or repeated (default: all "
                         "installed)")
    ap.add_argument("--device", action="append", help="only this device, e.g. cpu, cuda")
    ap.add_argument("--dtype", action="append",
                    choices=["float64", "float32", "float16", "bfloat16"],
                    help="only this dtype (repeatable)")
    ap.add_argument("--case", help="only cases whose id contains this text or matches this "
                                   "glob, e.g. 'softmax/*' or extreme")
    ap.add_argument("--json", type=Path, metavar="PATH", help="write the full report here")
    ap.add_argument("-v", "--verbose", action="store_true", help="list unsupported cases too")
    ap.add_argument("--fuzz", type=int, metavar="N",
                    help="instead of the golden cases, N random calls per backend (spread over "
                         "its execution modes) against the float64 reference; a failure "
                         "prints a minimal reproducer (needs hypothesis)")
    ap.add_argument("--seed", type=int, help="with --fuzz: the random seed (default: a fixed "
                                             "sequence)")
    ap.add_argument("--mode", action="append", help="with --fuzz: only these execution modes, "
                                                    "comma-separated or repeated")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return ap


def _names(known, what):
    def parse(text):
        names = [n.strip() for n in text.split(",") if n.strip()]
        for n in names:
            if n not in known:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {n!r}; choose from {', '.join(known)}")
        return names
    return parse


def _flat(lists):
    return None if not lists else [n for names in lists for n in names]


def main(argv=None, prog="focalx check") -> int:
    args = parser(prog).parse_args(argv)
    args.backend = _flat(args.backend)
    modes = None if not args.mode else [m for ms in args.mode for m in ms.split(",") if m]
    if args.fuzz is not None:
        return _fuzz(args, modes)
    if args.worker:
        report = runner.run_backend(args.worker, devices=args.device, dtypes=args.dtype,
                                    pattern=args.case)
        args.worker_out.write_text(json.dumps(report))
        return 0
    t0 = time.perf_counter()
    matrix = runner.run_matrix(backends=args.backend, devices=args.device, dtypes=args.dtype,
                               pattern=args.case)
    matrix["seconds"] = round(time.perf_counter() - t0, 2)
    print(runner.format_matrix(matrix, verbose=args.verbose))
    ran = [r for r in matrix["backends"] if "runs" in r]
    print(f"{len(ran)} backend(s) run, {runner.checked_cases(matrix)} case evaluations, in "
          f"{matrix['seconds']} s; {'FAILED' if runner.failed(matrix) else 'all passed'}")
    if args.json:
        args.json.write_text(json.dumps(matrix, indent=1))
        print(f"report written to {args.json}")
    return 1 if runner.failed(matrix) else 0


def _fuzz(args, modes) -> int:
    """``--fuzz N``: each backend's worker process runs fuzz.run_backend."""
    if args.fuzz < 1:
        print("focalx check: --fuzz needs a number of examples >= 1", file=sys.stderr)
        return 2
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("focalx check --fuzz needs hypothesis: pip install hypothesis", file=sys.stderr)
        return 2
    from . import fuzz
    if args.worker:
        report = fuzz.run_backend(args.worker, args.fuzz, seed=args.seed, modes=modes)
        args.worker_out.write_text(json.dumps(report))
        return 0
    t0 = time.perf_counter()
    extra = ["--fuzz", str(args.fuzz)] + (["--seed", str(args.seed)] if args.seed is not None
                                          else []) + sum((["--mode", m] for m in modes or ()), [])
    matrix = runner.run_matrix(backends=args.backend, extra=extra, timeout=None)
    print(fuzz.format_report(matrix["backends"]))
    for name, why in {**matrix["missing"], **matrix["skipped"]}.items():
        print(f"{'FAILED' if name in matrix['missing'] else 'skipped'} {name}: {why}")
    runs = [r for rep in matrix["backends"] for r in rep.get("runs", ())]
    bad = (matrix["missing"] or any("crashed" in rep for rep in matrix["backends"])
           or any(r["failure"] for r in runs) or not runs)
    total = sum(r["examples"] for r in runs)
    print(f"{len(matrix['backends'])} backend(s), {total} examples checked, in "
          f"{time.perf_counter() - t0:.0f} s; {'FAILED' if bad else 'all passed'}")
    return 1 if bad else 0
