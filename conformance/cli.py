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
    ap.add_argument("--device", action="append", type=_names(None, "device"),
                    help="only these devices, e.g. cpu, cuda (comma-separated or repeated)")
    ap.add_argument("--dtype", action="append",
                    type=_names(("float64", "float32", "float16", "bfloat16"), "dtype"),
                    help="only these dtypes (comma-separated or repeated)")
    ap.add_argument("--case", help="only cases whose id contains this text or matches this "
                                   "glob, e.g. 'softmax/*' or extreme")
    ap.add_argument("--json", type=Path, metavar="PATH", help="write the full report here")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="list every case with its result and error")
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
            if known is not None and n not in known:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {n!r}; choose from {', '.join(known)}")
        return names
    return parse


def _flat(lists):
    return None if not lists else [n for names in lists for n in names]


def main(argv=None, prog="focalx check") -> int:
    args = parser(prog).parse_args(argv)
    args.backend, args.device, args.dtype = map(_flat, (args.backend, args.device, args.dtype))
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
                               pattern=args.case, on_progress=_Progress(),
                               on_done=_check_done)
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
    matrix = runner.run_matrix(backends=args.backend, extra=extra, timeout=None,
                               on_progress=_Progress(), on_done=_fuzz_done)
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


class _Progress:
    """A live bar on a terminal (stderr), nothing elsewhere: each backend's worker
    reports its steps (see runner.progress)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.t0 = {}

    def __call__(self, name, done, total, what):
        self.t0.setdefault(name, time.perf_counter())
        if not self.live or not total:
            return
        width = 20
        fill = width * done // total
        self.stream.write(f"\r{name}: [{'#' * fill}{'.' * (width - fill)}] {done}/{total} "
                          f"{what or ''}\x1b[K")
        self.stream.flush()


def _clear_line():
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _check_done(rep):
    """One line per backend as it finishes (the table comes at the end)."""
    _clear_line()
    name = rep["backend"]
    if "crashed" in rep:
        print(f"{name}: CRASHED: {rep['crashed']}", flush=True)
        return
    runs, bad = rep["runs"], rep["bad_inputs"]
    n = sum(r["cases"] - r["unsupported"] for r in runs)
    failed = sum(r["failed"] for r in runs) + bad["total"] - bad["passed"]
    print(f"{name} {rep['version']}: {n} case evaluations over {len(runs)} device/dtype runs, "
          f"{bad['total']} bad inputs, {failed} failed, {rep['seconds']} s", flush=True)


def _fuzz_done(rep):
    _clear_line()
    if "crashed" in rep:
        print(f"{rep['backend']}: CRASHED: {rep['crashed']}", flush=True)
        return
    print(f"{rep['backend']}: " + ", ".join(
        f"{r['mode']} {r['examples']} {'FAILED' if r['failure'] else 'ok'}"
        for r in rep["runs"]), flush=True)
