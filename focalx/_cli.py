"""The ``focalx`` command: ``focalx check`` (conformance) and ``focalx bench`` (timings)."""

from __future__ import annotations

import sys

USAGE = """usage: focalx <command> [options]   (focalx --version: the version)

commands:
  check    check every installed backend, device and dtype against the golden cases
  bench    time focalx against each installed peer and the cross-entropy floor, per backend
  plot     loss and gradient curves, or a bench JSON's bar chart, to PNG/SVG (needs matplotlib)
  compare  run the golden cases through your own focal loss (MODULE:FUNCTION) and classify
           every disagreement (focalx compare --help)
"""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in ("--version", "-V", "version"):
        from . import __version__
        print(f"focalx {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "check":
        from .conformance.cli import main as check
        return check(rest)
    if command == "bench":
        from .bench import main as bench
        return bench(rest)
    if command == "plot":
        from .plot import main as plot
        return plot(rest)
    if command == "compare":
        from .testing.cli import main as compare
        return compare(rest)
    print(f"focalx: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
