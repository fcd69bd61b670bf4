"""The documentation: its examples run and print what the pages show; the site builds.

An example is a ```python block followed by a ```text block: the text block is what the
python block prints. A page's examples run in order in one fresh process (one framework
per page, so TensorFlow and Paddle never share a process), and each block's output must
equal its text block. A python block that prints but shows no output fails the test: no
printing example goes unchecked. Other python blocks are fragments (``logits`` left to
the reader) and are not run.

    python tests/test_docs.py --update     # rewrite the text blocks from a run
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_SEP = "\n----focalx-docs-block----\n"


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def examples(text: str) -> list[tuple[str, str, tuple[int, int]]]:
    """(code, shown output, span of the output block's body) for each example in a page."""
    blocks = list(_BLOCK.finditer(text))
    out = []
    for i, b in enumerate(blocks):
        if b.group(1) != "python":
            continue
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        if nxt is not None and nxt.group(1) == "text" and not text[b.end():nxt.start()].strip():
            out.append((b.group(2), nxt.group(2), nxt.span(2)))
    return out


def printing_fragments(text: str) -> list[str]:
    """Python blocks that print but show no output after them."""
    shown = {code for code, _, _ in examples(text)}
    return [b.group(2) for b in _BLOCK.finditer(text)
            if b.group(1) == "python" and "print(" in b.group(2) and b.group(2) not in shown]


def run_page(text: str) -> list[str]:
    """Run a page's examples in order in one fresh process; the output of each."""
    codes = [code for code, _, _ in examples(text)]
    program = "\n".join(
        ["import sys"] + [f"exec(compile({code!r}, 'block {i}', 'exec'))\n"
                          f"sys.stdout.write({_SEP!r}); sys.stdout.flush()"
                          for i, code in enumerate(codes)])
    proc = subprocess.run([sys.executable, "-c", program], check=False, capture_output=True,
                          text=True,
                          cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONHASHSEED": "0",
                               "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise AssertionError(f"the examples failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.split(_SEP)[:len(codes)]


_PAGES_WITH_EXAMPLES = [p for p in pages() if examples(p.read_text())]


def test_the_pages_have_examples():
    # the loss pages and the getting-started pages each show printed output
    names = {p.relative_to(DOCS).as_posix() for p in _PAGES_WITH_EXAMPLES}
    wanted = {f"losses/{n}.md" for n in ("sigmoid-focal", "softmax-focal", "fl-star", "qfl",
                                         "vfl", "dfl", "asl", "poly1", "gamma")}
    wanted |= {f"getting-started/{n}.md" for n in ("pytorch", "jax", "tensorflow", "paddle")}
    assert wanted <= names, sorted(wanted - names)


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_no_printing_block_without_its_output(page):
    assert printing_fragments(page.read_text()) == []


@pytest.mark.parametrize("page", _PAGES_WITH_EXAMPLES,
                         ids=lambda p: p.relative_to(DOCS).as_posix())
def test_examples_print_what_the_page_shows(page):
    text = page.read_text()
    got = run_page(text)
    for (code, shown, _), printed in zip(examples(text), got):
        assert printed == shown, f"{page.name}: the block\n{code}\nprinted\n{printed}"


def test_the_site_builds_with_warnings_as_errors(tmp_path):

    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    site = tmp_path / "site"
    loss_page = (site / "losses" / "sigmoid-focal" / "index.html").read_text()
    assert "<math" in loss_page  # the definition, as MathML
    assert "figures/sigmoid_focal_loss.svg" in loss_page
    assert "<td><code>gamma</code></td>" in loss_page  # the generated parameter table
    conformance = (site / "conformance" / "index.html").read_text()
    assert "bad inputs" in conformance and "FAILED" not in conformance
    assert "sigmoid_focal_loss" in (site / "api" / "index.html").read_text()


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_DRAWN_WITH = re.compile(r"Matplotlib v[\w.]+")


def _coordinates(svg: str) -> list[float]:
    """The numbers of every path and position in an SVG (its geometry, not its ids)."""
    geometry = re.findall(r'\b(?:d|x|y|transform|points)="([^"]*)"', svg)
    return [float(v) for g in geometry for v in _NUMBER.findall(g)]


def test_figures_regenerate_identically(tmp_path):
    """The committed figures are what docs/_tools/docs_figures.py draws now: the same bytes with
    the matplotlib that drew them, the same geometry to 0.5 px with another release."""
    sys.path.insert(0, str(ROOT / "docs" / "_tools"))
    try:
        import docs_figures
    finally:
        sys.path.remove(str(ROOT / "docs" / "_tools"))
    for name in docs_figures.FIGURES:
        new = docs_figures.render(name, tmp_path).read_text()
        old = (docs_figures.FIGURES_DIR / name).read_text()
        stale = f"docs/figures/{name} is stale: python docs/_tools/docs_figures.py"
        if _DRAWN_WITH.findall(new) == _DRAWN_WITH.findall(old):
            assert new == old, stale
        else:
            a, b = _coordinates(new), _coordinates(old)
            assert len(a) == len(b), stale
            assert max(abs(x - y) for x, y in zip(a, b)) <= 0.5, stale


def test_committed_conformance_reports_are_focalx_check_output():
    files = sorted((DOCS / "data" / "conformance").glob("*.json"))
    assert files
    for path in files:
        report = json.loads(path.read_text())
        assert {"backends", "date", "machine", "command"} <= set(report), path.name
        assert [b["backend"] for b in report["backends"]] == [path.stem]


def _update() -> int:
    for page in _PAGES_WITH_EXAMPLES:
        text = page.read_text()
        got = run_page(text)
        for (_, _, (a, b)), printed in reversed(list(zip(examples(text), got))):
            text = text[:a] + printed + text[b:]
        page.write_text(text)
        print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(_update() if "--update" in sys.argv else 0)
