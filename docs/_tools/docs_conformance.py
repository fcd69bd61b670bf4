"""Run ``focalx check --json`` for backends, one at a time, into docs/data/conformance/.

    python docs/_tools/docs_conformance.py torch jax       # or no names: every registered backend

Each backend's report is written to docs/data/conformance/NAME.json as ``focalx check``
writes it, with ``date``, ``machine`` and ``command`` added (the site's conformance
matrix is generated from these files by docs/_tools/docs_hooks.py). One backend per run keeps
a shared machine's load, and each framework's import, to one process at a time.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "data" / "conformance"


def annotate(path: Path, command: str, date: str, seconds: float) -> None:
    """Add the run's date, machine and command to a ``focalx check --json`` report."""
    from focalx.bench.run import machine_info

    report = json.loads(path.read_text())
    m = machine_info()
    report.update(date=date, command=command, seconds=round(seconds, 1),
                  machine=f"{m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}")
    path.write_text(json.dumps(report, indent=1) + "\n")


def run(backend: str) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{backend}.json"
    command = f"focalx check --backend {backend} --json {path.relative_to(ROOT)}"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "focalx.conformance", "--backend", backend,
                         "--json", str(path)], check=False, cwd=ROOT).returncode
    if path.exists():
        annotate(path, command, date, time.perf_counter() - t0)
    return rc


def main(argv=None) -> int:
    names = (sys.argv[1:] if argv is None else argv)
    if not names:
        from focalx.conformance.runner import BACKENDS
        names = list(BACKENDS)
    return max(run(n) for n in names)


if __name__ == "__main__":
    sys.exit(main())
