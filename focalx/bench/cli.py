"""``focalx bench``: the command."""

from __future__ import annotations

import datetime
import json
import sys
import time

from .config import config_from_args, parser
from .report import format_table, headline
from .run import failed, machine_info, run_all, versions
from .worker import worker_main


def main(argv=None, prog="focalx bench") -> int:
    args = parser(prog).parse_args(argv)
    if args.worker:
        if not args.worker_config or not args.worker_out:
            print("focalx bench: --worker needs --worker-config and --worker-out",
                  file=sys.stderr)
            return 2
        return worker_main(args)
    if args.json and not args.json.parent.is_dir():
        parser(prog).error(f"argument --json: directory {str(args.json.parent)!r} does not exist")
    cfg = config_from_args(args)
    t0 = time.perf_counter()
    result = run_all(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    names = [r["backend"] for r in result["backends"]]
    result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["machine"] = machine_info()
    result["versions"] = versions(names)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["headline"] = headline(result)
    print(format_table(result))
    if result["headline"]:
        print("\nfwd+bwd time ratios (> 1: focalx is faster) and peak extra memory:")
        for line in result["headline"]:
            print(f"  {line}")
    bad = failed(result)
    print(f"\n{len(names)} backend(s) in {result['seconds']} s; "
          f"{'FAILED' if bad else 'ok'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"raw numbers written to {args.json}")
    return 1 if bad else 0
