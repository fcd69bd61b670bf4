"""The figures the documentation embeds, as ``focalx plot`` command lines.

    python docs/_tools/docs_figures.py            # rewrite docs/figures/*.svg
    python docs/_tools/docs_figures.py --check    # say which differ (tests/test_docs.py does this)

The SVGs are committed so that the pages read on GitHub (docs/) show them too; the
test regenerates each and compares it with the committed file.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES_DIR = ROOT / "docs" / "figures"
_GAMMAS = "0,0.5,1,2,5"

#: file name -> ``focalx plot`` arguments (without --out)
FIGURES: dict[str, list[str]] = {
    "sigmoid_focal_loss.svg": ["curves", "--loss", "sigmoid_focal_loss", "--alpha", "none",
                               "--gamma", _GAMMAS],
    "softmax_focal_loss.svg": ["curves", "--loss", "softmax_focal_loss", "--gamma", _GAMMAS,
                               "--set", "classes=10"],
    "sigmoid_focal_loss_star.svg": ["curves", "--loss", "sigmoid_focal_loss_star",
                                    "--gamma", "1,2,3,4", "--x", "logit"],
    "quality_focal_loss.svg": ["curves", "--loss", "quality_focal_loss", "--gamma", "0,1,2",
                               "--target", "0.6"],
    "varifocal_loss.svg": ["curves", "--loss", "varifocal_loss", "--gamma", "0,1,2",
                           "--target", "0"],
    "asymmetric_loss.svg": ["curves", "--loss", "asymmetric_loss", "--target", "0",
                            "--gamma", "0,1,2,4", "--set", "clip=0.05"],
    "asymmetric_softmax_loss.svg": ["curves", "--loss", "asymmetric_softmax_loss",
                                    "--gamma", "0,1,2,4"],
    "poly1.svg": ["curves", "--loss", "softmax_focal_loss", "--vary", "epsilon",
                  "--gamma=-1,0,1,2", "--set", "gamma=2"],
    "bench.svg": ["bench", str(Path("docs") / "data" / "bench-2026-12-03.json")],
}


def render(name: str, out_dir: Path) -> Path:
    """Draw figure `name` into `out_dir` (run from anywhere: paths are the repository's)."""
    from focalx.plot import main

    args = list(FIGURES[name])
    if args[0] == "bench":
        args[1] = str(ROOT / args[1])
    out = Path(out_dir) / name
    if main(args + ["--out", str(out)]) != 0:
        raise RuntimeError(f"focalx plot {' '.join(args)} failed")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            stale = [n for n in FIGURES
                     if render(n, Path(tmp)).read_bytes() != (FIGURES_DIR / n).read_bytes()]
        print(f"differ: {', '.join(stale)}" if stale else "all figures are current")
        return 1 if stale else 0
    FIGURES_DIR.mkdir(exist_ok=True)
    for n in FIGURES:
        render(n, FIGURES_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
