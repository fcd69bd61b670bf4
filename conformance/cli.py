"""The ``focalx check`` command line."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import runner


def parser(prog="focalx check"):
    ap = argparse.ArgumentParser(
        prog=prog, description="Check every installed focalx backend, device and dtype against "
                               "the golden cases (an independent mpmath oracle).")
    ap.add_argument("--backend", action="append", choices=runner.BACKENDS,
                    help="only this backend (repeatable; default: all installed)")
    ap.add_argument("--device", action="append", help="only this device, e.g. cpu, cuda")
    ap.add_argument("--dtype", action="append",
                    choices=["float64", "float32", "float16", "bfloat16"],
                    help="only this dtype (repeatable)")
    ap.add_argument("--case", help="only cases whose id contains this text or matches this "
                                   "glob, e.g. 'softmax/*' or extreme")
    ap.add_argument("--json", type=Path, metavar="PATH", help="write the full report here")
    ap.add_argument("-v", "--verbose", action="store_true", help="list unsupported cases too")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return ap


def main(argv=None, prog="focalx check") -> int:
    args = parser(prog).parse_args(argv)
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
