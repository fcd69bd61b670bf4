"""``focalx plot``: loss and gradient curves, and bar charts of a bench JSON.

The curves are the float64 NumPy reference's values (:mod:`focalx._numpy`), so a figure
shows exactly what every backend computes: no formula is written here. matplotlib is an
optional dependency (``pip install "focalx[plot]"``), imported only when a figure is drawn.

    focalx plot curves --loss sigmoid_focal_loss --gamma 0,0.5,1,2,5 --out fl.svg
    focalx plot curves --loss asymmetric_loss --target 0 --gamma 0,1,4 --set clip=0.05
    focalx plot bench bench.json --out bench.svg
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from . import _numpy, _spec

#: loss -> the parameter the curves vary (its focusing exponent)
FOCUS = {
    "sigmoid_focal_loss": "gamma",
    "softmax_focal_loss": "gamma",
    "sigmoid_focal_loss_star": "gamma",
    "quality_focal_loss": "beta",
    "varifocal_loss": "gamma",
    "asymmetric_loss": None,  # gamma_pos for a positive target, gamma_neg for a negative one
    "asymmetric_softmax_loss": "gamma_pos",
}
#: losses with a class axis: the curve follows the target class's logit
SOFTMAX = ("softmax_focal_loss", "asymmetric_softmax_loss")
ALIASES = {"sigmoid": "sigmoid_focal_loss", "softmax": "softmax_focal_loss",
           "star": "sigmoid_focal_loss_star", "qfl": "quality_focal_loss",
           "vfl": "varifocal_loss", "asl": "asymmetric_loss",
           "asl1": "asymmetric_softmax_loss"}


def _loss_name(loss: str) -> str:
    name = ALIASES.get(loss, loss)
    if name not in FOCUS:
        known = ", ".join(list(FOCUS) + list(ALIASES))
        extra = (" (it has no focusing exponent to vary)"
                 if name == "distribution_focal_loss" else "")
        raise ValueError(f"loss must be one of {known}; got {loss!r}{extra}")
    return name


def focus_parameter(loss: str, target: float = 1.0) -> str:
    """The name of the parameter that `loss`'s curves vary (for the ASL: by the target)."""
    name = _loss_name(loss)
    if name == "asymmetric_loss":
        return "gamma_pos" if target == 1 else "gamma_neg"
    return FOCUS[name]


def curve_data(loss: str, gammas, *, target: float = 1.0, x: str = "pt", points: int = 199,
               classes: int = 2, vary: str | None = None, **params) -> dict:
    """The loss and its derivative along a grid, one curve per value in `gammas`.

    The horizontal axis is p_t, the probability given to the target (``x="pt"``; for a
    soft target of an elementwise loss, p itself), or the target's logit (``x="logit"``).
    The derivative is taken w.r.t. the target's logit x_t (x for a positive target, -x
    for a negative one; for the softmax losses the target class's logit), so curves for
    either target read alike. `params` go to the loss unchanged (alpha, epsilon, clip,
    label_smoothing, ...); the values are the NumPy reference's, reduction "none".
    `vary` names another parameter to take the values of `gammas` (e.g. ``"epsilon"``).

    Returns ``{"loss", "parameter", "x", "xlabel", "curves": [(value, loss, grad), ...]}``.
    """
    name = _loss_name(loss)
    if x not in ("pt", "logit"):
        raise ValueError(f"x must be 'pt' or 'logit', got {x!r}")
    try:
        values = [float(g) for g in np.atleast_1d(np.asarray(gammas, dtype=float))]
    except (TypeError, ValueError):
        raise ValueError(f"gammas must be one or more finite numbers, got {gammas!r}") from None
    if not values or not all(math.isfinite(g) for g in values):
        raise ValueError(f"gammas must be one or more finite numbers, got {gammas!r}")
    if not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    if "reduction" in params:
        raise ValueError("reduction: the curves are per element (reduction='none'); "
                         "do not pass it")
    try:
        target = float(target)
    except (TypeError, ValueError):
        raise ValueError(f"target must be a number in [0, 1], got {target!r}") from None
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")
    softmax = name in SOFTMAX
    if softmax and target != 1.0:
        raise ValueError(f"target: {name} takes a class index; its curves follow the target "
                         "class (leave target at 1)")
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be an integer >= 2, got {classes!r}")
    hard = target in (0.0, 1.0)
    sign = -1.0 if target == 0.0 else 1.0
    if x == "pt":
        axis = np.linspace(0.005, 0.995, points)
        # the target's logit giving p_t (softmax: against classes - 1 zero logits)
        xt = np.log(axis) - np.log1p(-axis) + (math.log(classes - 1) if softmax else 0.0)
    else:
        xt = np.linspace(-8.0, 8.0, points)
        axis = xt
    focus = vary or focus_parameter(name, target)
    known = sorted(set(_spec.DEFAULTS[name]) - {"reduction"})
    for key, what in [(k, "params") for k in params] + [(focus, "vary")]:
        if key not in known:
            raise ValueError(f"{what}: {name} has no parameter {key!r}; its parameters: "
                             f"{', '.join(known)}")
    if focus in params:
        raise ValueError(f"{focus}: its values are the curves' (gammas); do not also set it")
    fn = getattr(_numpy, f"{name}_and_grad")
    curves = []
    for g in values:
        kw = dict(params, reduction="none", **{focus: g})
        if softmax:
            logits = np.zeros((points, classes))
            logits[:, 0] = xt
            labels = np.zeros(points, dtype=np.int64)
            out, grad = fn(logits, labels, **kw)
            grad = grad[:, 0]
        else:
            out, grad = fn(sign * xt, np.full(points, target), **kw)
            grad = sign * grad
        curves.append((g, np.asarray(out, float), np.asarray(grad, float)))
    if x == "logit":
        xlabel = "target logit $x_t$" if hard or softmax else "logit $x$"
    else:
        xlabel = "$p_t$ (probability of the target)" if hard or softmax else "$p$"
    return {"loss": name, "parameter": focus, "x": axis, "xlabel": xlabel, "curves": curves,
            "target": target, "params": params}


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('focalx plot needs matplotlib: pip install "focalx[plot]" '
                          "(or pip install matplotlib)") from None
    # fixed ids and no date: the same figure gives the same SVG file
    matplotlib.rcParams["svg.hashsalt"] = "focalx"
    matplotlib.rcParams["svg.fonttype"] = "none"
    return Figure


_GREEK = {"gamma": "γ", "beta": "β", "gamma_pos": "γ+", "gamma_neg": "γ−", "epsilon": "ε"}


def _out(out) -> Path:
    if not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a path ending in .svg or .png, got {type(out).__name__}")
    out = Path(out)
    if out.suffix.lower() not in (".svg", ".png"):
        raise ValueError(f"out must end in .svg or .png, got {str(out)!r}")
    return out


def _save(fig, out: Path) -> Path:
    out = _out(out)
    meta = {"Date": None} if out.suffix.lower() == ".svg" else {}
    fig.savefig(out, metadata=meta, dpi=120)
    return out


def plot_curves(loss: str, gammas, out, *, target: float = 1.0, x: str = "pt",
                title: str | None = None, vary: str | None = None, **params) -> Path:
    """Draw the loss and its derivative against p_t (or the logit) into `out` (.svg/.png)."""
    _out(out)
    data = curve_data(loss, gammas, target=target, x=x, vary=vary, **params)
    Figure = _matplotlib()
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax_loss, ax_grad = fig.subplots(1, 2)
    sym = _GREEK.get(data["parameter"], data["parameter"])
    for g, values, grad in data["curves"]:
        label = f"{sym} = {g:g}"
        ax_loss.plot(data["x"], values, label=label, linewidth=1.6)
        ax_grad.plot(data["x"], grad, label=label, linewidth=1.6)
    ax_loss.set_ylim(0.0, 5.0)
    ax_loss.set_ylabel("loss")
    ax_grad.set_ylabel("d loss / d $x_t$" if data["target"] in (0.0, 1.0) else "d loss / d $x$")
    ax_grad.axhline(0.0, color="0.6", linewidth=0.8)
    for ax in (ax_loss, ax_grad):
        ax.set_xlabel(data["xlabel"])
        ax.grid(True, color="0.9")
    ax_loss.legend(frameon=False)
    if title is None:
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        title = f"{data['loss']}, target {data['target']:g}" + (f", {shown}" if shown else "")
    fig.suptitle(title, fontsize=11)
    return _save(fig, out)


# ---- bench JSON ---------------------------------------------------------------------------

def bench_rows(report: dict) -> list[dict]:
    """fwd+bwd rows (label, contender, focalx_ms, contender_ms) from a bench JSON.

    Takes ``focalx bench --json``'s output (backends -> groups -> contenders, median
    seconds), or a table of ``rows`` with those four keys (e.g. transcribed from a
    published table).
    """
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict (a bench JSON), got {type(report).__name__}")
    if "rows" in report:
        rows = report["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("report: 'rows' must be a list of objects")
        for r in rows:
            missing = {"label", "contender", "focalx_ms", "contender_ms"} - set(r)
            if missing:
                raise ValueError(f"report: a row lacks {sorted(missing)}: {r!r}")
        return [dict(r) for r in rows]
    if "backends" not in report:
        raise ValueError("report: neither 'rows' nor 'backends' (focalx bench --json's "
                         "output) found")
    try:
        return _bench_json_rows(report)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"report: not focalx bench --json's layout ({type(exc).__name__}: "
                         f"{exc})") from None


def _bench_json_rows(report: dict) -> list[dict]:
    rows = []
    for rep in report["backends"]:
        for g in rep.get("groups", ()):
            base = next((c for c in g["contenders"] if c.get("role") == "focalx"), None)
            fb = ((base or {}).get("median_s") or {}).get("fwd+bwd")
            if not fb:
                continue
            for c in g["contenders"]:
                cm = (c.get("median_s") or {}).get("fwd+bwd")
                if c.get("role") != "peer" or not cm:
                    continue
                rows.append({"label": f"{rep['backend']} {g['mode']}, {g['workload']} "
                                      f"{g.get('size', g['elements'])}",
                             "contender": c["name"], "focalx_ms": fb * 1e3,
                             "contender_ms": cm * 1e3})
    return rows


def plot_bench(report, out, *, title: str | None = None) -> Path:
    """Bar chart of each peer's fwd+bwd time over focalx's (> 1: focalx is faster)."""
    _out(out)
    if isinstance(report, (str, Path)):
        try:
            report = json.loads(Path(report).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"report: {report} is not JSON ({exc})") from None
    rows = bench_rows(report)
    if not rows:
        raise ValueError("report: no fwd+bwd timings of focalx and a peer in it")
    Figure = _matplotlib()
    fig = Figure(figsize=(9.0, 0.32 * len(rows) + 1.4), layout="constrained")
    ax = fig.subplots()
    ratios = [r["contender_ms"] / r["focalx_ms"] for r in rows]
    ypos = np.arange(len(rows))[::-1]
    ax.barh(ypos, ratios, color=["#2a7ab0" if v >= 1 else "#c0504d" for v in ratios])
    ax.set_yticks(ypos, [f"{r['label']} vs {r['contender']}" for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(min(ratios), 1.0) / 1.3, max(max(ratios), 1.0) * 1.4)
    ax.axvline(1.0, color="0.3", linewidth=0.8)
    for y, v in zip(ypos, ratios):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=7)
    ax.set_xlabel("peer fwd+bwd time / focalx's (> 1: focalx is faster; log scale)")
    machine = report.get("machine")
    if isinstance(machine, dict):
        machine = f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores)"
    when = ", ".join(str(v) for v in (report.get("date"), machine) if v)
    ax.set_title(title or ("focalx bench" + (f": {when}" if when else "")), fontsize=10)
    return _save(fig, out)


# ---- the command --------------------------------------------------------------------------

def _value(text: str):
    low = text.lower()
    if low == "none":
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _setting(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), _value(v.strip())


def _floats(text: str):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def parser(prog="focalx plot"):
    ap = argparse.ArgumentParser(prog=prog, description="Plot focal-loss curves (from the "
                                 "float64 NumPy reference) or a bench JSON; needs matplotlib.")
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("curves", help="the loss and its gradient against p_t or the logit")
    c.add_argument("--loss", default="sigmoid_focal_loss",
                   help=f"a loss function's name or {', '.join(ALIASES)} (default sigmoid)")
    c.add_argument("--gamma", type=_floats, default=[0.0, 0.5, 1.0, 2.0, 5.0],
                   help="values of the focusing exponent (gamma; beta for QFL; gamma_pos or "
                        "gamma_neg for ASL by the target), comma-separated (default "
                        "0,0.5,1,2,5)")
    c.add_argument("--alpha", type=_value, default="unset",
                   help="alpha (a number or none; default: the loss's own)")
    c.add_argument("--target", type=float, default=1.0,
                   help="the target: 1 or 0, or a soft target in (0, 1) (default 1)")
    c.add_argument("--vary", metavar="NAME",
                   help="vary this parameter instead of the focusing exponent (e.g. epsilon), "
                        "taking --gamma's values")
    c.add_argument("--x", choices=("pt", "logit"), default="pt", help="horizontal axis")
    c.add_argument("--set", type=_setting, action="append", default=[], metavar="NAME=VALUE",
                   help="any other parameter of the loss (e.g. epsilon=1, clip=0.05)")
    c.add_argument("--title")
    c.add_argument("--out", type=Path, required=True, help="output file, .svg or .png")
    b = sub.add_parser("bench", help="bar chart of peer / focalx fwd+bwd times")
    b.add_argument("json", type=Path, help="focalx bench --json's output (or a rows table)")
    b.add_argument("--title")
    b.add_argument("--out", type=Path, required=True, help="output file, .svg or .png")
    return ap


def main(argv=None, prog="focalx plot") -> int:
    args = parser(prog).parse_args(argv)
    try:
        if args.what == "curves":
            params = dict(args.set)
            if args.alpha != "unset":
                params["alpha"] = args.alpha
            out = plot_curves(args.loss, args.gamma, args.out, target=args.target, x=args.x,
                              title=args.title, vary=args.vary, **params)
        else:
            out = plot_bench(args.json, args.out, title=args.title)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
