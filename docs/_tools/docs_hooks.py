"""mkdocs hooks: the generated parts of the documentation site.

The pages in docs/ hold markers (HTML comments, invisible where the markdown is read on
GitHub) that the site build fills from the sources the numbers come from:

    <!-- focalx:math NAME -->         the definition, from focalx/_signatures.py
    <!-- focalx:params NAME -->       the parameter table, from focalx/_signatures.py
    <!-- focalx:shapes NAME -->       the inputs' and result's shapes, from the same
    <!-- focalx:conformance -->       the matrix of docs/data/conformance/*.json
    <!-- focalx:bench -->             the table of docs/data/bench-*.json

Math (``$$ ... $$`` blocks and ``$...$`` inline, outside code) becomes MathML at build
time (latex2mathml): browsers render it natively, so the site needs no script from a
CDN and reads offline.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data"

_MARK = re.compile(r"<!-- focalx:(\w+)(?: (\w+))? -->")
_FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
_INLINE = re.compile(r"(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![$\w])")


# ---- from the signatures table -------------------------------------------------------------

def _rst_to_md(text: str) -> str:
    """The docstrings' reST inline markup as markdown (``code``, :math:`x`, links)."""
    text = re.sub(r":math:`([^`]+)`", r"$\1$", text)
    text = re.sub(r"`([^`<]+?) <([^>]+)>`_", r"[\1](\2)", text)
    return re.sub(r"``(.+?)``", r"`\1`", text)


def loss_math(name: str) -> str:
    """The ``.. math::`` block of the loss's docstring, as a display-math block."""
    from focalx._signatures import LOSSES

    summary = LOSSES[name].summary
    m = re.search(r"\.\. math::\n\n((?:    .*\n|\n)+)", summary + "\n")
    if not m:
        raise ValueError(f"{name}: no math block in its docstring")
    body = "\n".join(ln[4:] for ln in m.group(1).rstrip().split("\n"))
    return "$$\n" + _aligned(body) + "\n$$"


def _aligned(body: str) -> str:
    """Several lines or alignment marks outside a cases block: an align* environment
    (latex2mathml has no "aligned")."""
    aligned = "\\\\" in body or "&" in body.replace("\\&", "")
    if aligned and ("\\begin{cases}" not in body or "&=" in body):
        body = "\\begin{align*}" + body + "\\end{align*}"
    return body


def _cell(text: str) -> str:
    """A table cell: code spans as HTML, so that a "|" in them neither splits the cell nor
    shows the backslash that escaping it in markdown would."""
    text = _rst_to_md(text).replace("\n", " ")
    parts = re.split(r"(`[^`]+`)", text)
    return "".join(f"<code>{html.escape(p[1:-1])}</code>" if p.startswith("`")
                   else html.escape(p, quote=False) for p in parts).replace("|", "&#124;")


def params_table(name: str) -> str:
    """Markdown table of the loss's keyword-only parameters, defaults and docs."""
    from focalx._signatures import LOSSES, TARGETS, _fmt, params

    axis_doc = TARGETS["focalx"].axis_doc
    rows = ["| parameter | default | type | meaning |", "|---|---|---|---|"]
    for p in params(name, "focalx"):
        ann = p.annotation.replace("{A}", "array").replace("{H}", "array")
        doc = p.doc.replace("{AXIS}", axis_doc) or _DEFAULT_DOCS.get(p.name, "")
        rows.append(f"| `{p.name}` | `{_fmt(p.default)}` | {_cell(f'`{ann}`')} | {_cell(doc)} |")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}")
    return '<div class="focalx-params" markdown>\n\n' + "\n".join(rows) + "\n\n</div>"


_DEFAULT_DOCS = {"reduction": '`"none"`, `"sum"` or `"mean"`.',
                 "label_smoothing": "e in [0, 1)."}


def shapes(name: str) -> str:
    from focalx._signatures import _INPUTS, LOSSES

    logits, targets = _INPUTS[name]
    return "\n".join([f"- `logits`: {_rst_to_md(logits)}",
                      f"- `targets`: {_rst_to_md(targets)}",
                      f"- result: {_rst_to_md(LOSSES[name].returns)}"])


# ---- from committed JSON -------------------------------------------------------------------

def conformance() -> str:
    """The matrix of the committed ``focalx check --json`` outputs, one backend per file."""
    from focalx.conformance import runner

    files = sorted((DATA / "conformance").glob("*.json"),
                   key=lambda p: (list(runner.BACKENDS) + [p.stem]).index(p.stem))
    if not files:
        raise ValueError("docs/data/conformance/ holds no focalx check --json output")
    reports = [json.loads(p.read_text()) for p in files]
    merged = {"backends": [b for r in reports for b in r["backends"]], "skipped": {},
              "missing": {}, "devices": []}
    for r in reports:
        merged["skipped"].update(r.get("skipped", {}))
        merged["missing"].update(r.get("missing", {}))
    text = runner.format_matrix(merged)
    table, _, notes = text.partition("\n\n")
    runs = [f"`{r['command']}`: {r['date']}, {r['machine']}, {r['seconds']} s"
            for r in reports if "date" in r]
    out = [table, "", f"{runner.checked_cases(merged)} case evaluations; "
           + ("**FAILED**" if runner.failed(merged) else "all passed") + "."]
    if notes.strip():
        out += ["", "```text", notes.strip(), "```"]
    out += ["", "The runs behind it (one backend per process, one at a time):", ""]
    out += [f"- {r}" for r in runs]
    return "\n".join(out)


def bench() -> str:
    """The table of the committed bench JSON (``rows`` or ``focalx bench --json``'s)."""
    from focalx.plot import bench_rows

    files = sorted(DATA.glob("bench-*.json"))
    if not files:
        raise ValueError("docs/data/ holds no bench-*.json")
    out = []
    for path in files:
        report = json.loads(path.read_text())
        mach = report.get("machine", {})
        mach = (f"{mach.get('cpu')}, {mach.get('cores')} cores, {mach.get('os')}, Python "
                f"{mach.get('python')}" if isinstance(mach, dict) else str(mach))
        vers = ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items())
        out.append(f"From `docs/data/{path.name}`: {report.get('date')}; {mach}; {vers}. "
                   f"Command: `{report.get('command', 'focalx bench --json')}`.")
        if report.get("source"):
            out += ["", f"Source: {report['source']}."]
        out += ["", "| backend, mode | workload, size | focalx ms | peer | peer ms | peer / focalx |",
                "|---|---|---:|---|---:|---:|"]
        for r in bench_rows(report):
            label, _, work = r["label"].rpartition(", ")
            out.append(f"| {label} | {work} | {r['focalx_ms']:.3g} | {r['contender']} | "
                       f"{r['contender_ms']:.3g} | {r['contender_ms'] / r['focalx_ms']:.2f} |")
        out.append("")
    return "\n".join(out)


_MAKERS = {"math": loss_math, "params": params_table, "shapes": shapes,
           "conformance": conformance, "bench": bench}
#: markers around content committed in the page by another generator (migration.md's peer
#: table: python -m focalx.testing.peers --write), kept as they are
_KEPT = {"peers", "end"}


def fill_markers(markdown: str) -> str:
    def sub(m):
        kind, arg = m.group(1), m.group(2)
        if kind in _KEPT:
            return m.group(0)
        if kind not in _MAKERS:
            raise ValueError(f"unknown marker focalx:{kind}")
        return _MAKERS[kind](arg) if arg else _MAKERS[kind]()
    return _MARK.sub(sub, markdown)


# ---- math to MathML ------------------------------------------------------------------------

def _mathml(latex: str, display: bool) -> str:
    from latex2mathml.converter import convert

    return convert(latex.strip(), display="block" if display else "inline")


def stash_math(markdown: str) -> tuple[str, dict]:
    """Math replaced by placeholders (outside code), and {placeholder: MathML}."""
    found: dict[str, str] = {}

    def keep(html_text):
        key = f"FOCALXMATH{len(found)}X"
        found[key] = html_text
        return key

    def outside_code(text):
        parts, last = [], 0
        for m in _CODE.finditer(text):
            parts.append(_math_in(text[last:m.start()]))
            parts.append(m.group(0))
            last = m.end()
        parts.append(_math_in(text[last:]))
        return "".join(parts)

    def _math_in(text):
        text = _DISPLAY.sub(lambda m: "\n\n" + keep(_mathml(m.group(1), True)) + "\n\n", text)
        return _INLINE.sub(lambda m: keep(_mathml(m.group(1), False)), text)

    parts, last = [], 0
    for m in _FENCE.finditer(markdown):
        parts.append(outside_code(markdown[last:m.start()]))
        parts.append(m.group(0))
        last = m.end()
    parts.append(outside_code(markdown[last:]))
    return "".join(parts), found


_RST_MATH = re.compile(r'<p>\.\. math::</p>\s*<div class="highlight"><pre><span></span>'
                       r"<code>(.*?)</code></pre></div>", re.DOTALL)
# the same, where markdown made the block (or the directive's own line) a paragraph
_RST_MATH_P = re.compile(r"<p>\.\. math::(?:</p>\s*<p>| )(.*?)</p>", re.DOTALL)
_QUOTED = re.compile(r"</p>\n<blockquote>\n<p>(.*?)</p>\n</blockquote>", re.DOTALL)


def api_docstrings(content: str) -> str:
    """The API page: the docstrings' ``.. math::`` blocks as MathML, and their wrapped lines
    that begin with ">=" joined back (markdown read those as block quotes)."""
    content = _RST_MATH.sub(lambda m: '<div class="focalx-math">'
                            + _mathml(_aligned(html.unescape(m.group(1))), True) + "</div>",
                            content)
    # (markdown also turned the negative thin space \! into "!")
    content = _RST_MATH_P.sub(lambda m: '<div class="focalx-math">' + _mathml(_aligned(
        re.sub(r"!(?=\\left)", r"\\!", html.unescape(m.group(1)))), True) + "</div>", content)
    return _QUOTED.sub(lambda m: " &gt;" + m.group(1) + "</p>", content)


# ---- the hooks -----------------------------------------------------------------------------

_PAGES: dict[str, dict] = {}


def on_page_markdown(markdown, page, config, files):
    markdown, found = stash_math(fill_markers(markdown))
    _PAGES[page.file.src_uri] = found
    return markdown


def on_page_content(content, page, config, files):
    found = _PAGES.pop(page.file.src_uri, {})
    for key, value in found.items():
        content = content.replace(f"<p>{key}</p>", f'<div class="focalx-math">{value}</div>')
        content = content.replace(key, value)
    if page.file.src_uri == "api.md":
        content = api_docstrings(content)
    leftover = re.search(r"FOCALXMATH\d+X", content)
    if leftover:
        raise ValueError(f"{page.file.src_uri}: math placeholder {leftover.group(0)} was "
                         "not restored (inside markup that changed it?)")
    return content

