"""``focalx compare MODULE:FUNCTION``: :func:`focalx.testing.compare` from the command line."""

from __future__ import annotations

import argparse
import importlib
import sys

USAGE = "focalx compare [MODULE:FUNCTION] [--peer NAME] [--loss sigmoid] [--map KEY=VALUE ...]"


def _load(path: str):
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:FUNCTION, got {path!r}")
    sys.path.insert(0, "")  # (a module in the current directory, as python -m does)
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def parser() -> argparse.ArgumentParser:
    from .peers import BY_KEY
    ap = argparse.ArgumentParser(
        prog="focalx compare", usage=USAGE,
        description="Run focalx's golden cases through your focal loss, in its own framework, "
                    "and classify every disagreement with the spec. Exit status 1 when a "
                    "case disagrees.")
    ap.add_argument("function", nargs="?", help="MODULE:FUNCTION (e.g. mylib.losses:focal)")
    ap.add_argument("--peer", choices=sorted(BY_KEY),
                    help="a ready-made mapping (focalx.testing.peers): its function and "
                         "signature; --map entries then adjust it")
    ap.add_argument("--loss", default=None, help="sigmoid (default), softmax or star")
    ap.add_argument("--map", action="append", default=[], metavar="KEY=VALUE",
                    help="a Signature field (alpha_off=-1, class_axis=1, target_format=onehot, "
                         "logits=1, dtype=float32, scalar_only=alpha,gamma ...), a focalx "
                         "keyword renamed (alpha=weight_pos), reduction=none (the function "
                         "has no reduction), fixed.NAME=VALUE (passed on every call), "
                         "assumes.KEYWORD=VALUE (the value the function has for a focalx "
                         "keyword it does not take: assumes.gamma=2.0) or "
                         "reductions.NAME=THEIRS (reductions.none=elementwise)")
    ap.add_argument("--cases", default="all",
                    help="all (default), quick (a fixed sample) or comma-separated case ids")
    ap.add_argument("--fuzz", type=int, default=0, help="random cases to add (default 0)")
    ap.add_argument("--time-limit", type=float, default=10.0,
                    help="seconds per case (default 10)")
    ap.add_argument("--framework", default=None,
                    help="torch, jax, tensorflow, paddle or numpy (default: detected)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--unsupported", action="store_true",
                    help="list the cases the function cannot express too")
    return ap


def main(argv=None) -> int:
    from . import compare
    from ._signature import Signature
    from .peers import BY_KEY
    args = parser().parse_args(argv)
    if not args.function and not args.peer:
        print(f"usage: {USAGE}\nfocalx compare: give MODULE:FUNCTION or --peer", file=sys.stderr)
        return 2
    peer = BY_KEY.get(args.peer) if args.peer else None
    try:
        if args.function:
            fn = _load(args.function)
        else:
            try:
                fn = peer.load()
            except ImportError as exc:
                raise ImportError(f"--peer {args.peer}: {peer.requires or 'torch'} is not "
                                  f"installed here ({exc})") from None
        sig = Signature.parse(args.map, base=peer.signature if peer else None)
        cases = {"all": None, "quick": "quick"}.get(args.cases, args.cases.split(","))
        report = compare(fn, loss=args.loss or (peer.loss if peer else "sigmoid"),
                         signature=sig, cases=cases, fuzz=args.fuzz,
                         time_limit=args.time_limit, framework=args.framework)
    except (ValueError, TypeError, ImportError, AttributeError) as exc:
        print(f"focalx compare: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.table(unsupported=args.unsupported))
    if not report.agreed and not report.disagreed:
        # (nothing was checked: not a pass)
        print("focalx compare: no case was expressible under this signature (--unsupported "
              "says why; --map assumes.KEYWORD=VALUE declares a value the function has built "
              "in)", file=sys.stderr)
        return 1
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
