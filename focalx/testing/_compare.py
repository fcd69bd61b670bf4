"""compare(): the golden cases through a user's function, each disagreement classified by
probes (the NumPy reference under the other conventions: which one the function matches)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from focalx import _numpy, _spec
from focalx.conformance import runner

from . import _probes
from ._frameworks import Runner, TimedOut, detect, run_with_limit
from ._signature import Signature, Unsupported, accepted, build_call, one_hot

LOSSES = {"sigmoid": "sigmoid_focal_loss", "softmax": "softmax_focal_loss",
          "star": "sigmoid_focal_loss_star"}
#: one line per kind of disagreement (what the probes can tell apart)
KINDS = {
    "crash": "the function raised an exception",
    "time-out": "no result within the time limit",
    "shape": "the loss has another shape",
    "class-axis": "per-class values where the spec reduces the class axis (or the reverse)",
    "nan-gradient": "NaN gradient where the spec's is finite (gamma < 1, saturated logits)",
    "nan-loss": "NaN loss where the spec's is finite (an empty mean)",
    "alpha-ignored": "alpha has no effect (alpha_t = 1)",
    "alpha-reversed": "alpha weights the negatives, 1 - alpha the positives",
    "alpha-background": "scalar alpha: class 0 gets 1 - alpha, every other class alpha",
    "alpha-positives": "alpha on positives only, negatives weighted 1",
    "alpha-off": "the function's 'alpha off' value is used as a number",
    "mean-divisor": "'mean' divides by another count",
    "ignore-mean": "'mean' counts the ignored elements in its divisor",
    "ignore": "ignored elements are not ignored",
    "soft-targets": "hard targets agree, soft targets differ",
    "cap": "log capped at -log(1e-7) = 16.118: probabilities clipped to [1e-7, 1 - 1e-7]",
    "beta": "FL* with beta fixed at 0",
    "background": "index targets read with class 0 as the background (label k is class k - 1)",
    "keyword-ignored": "a keyword argument has no effect",
    "gradient": "the loss agrees, its gradient does not",
    "precision": "close, beyond the tolerance",
    "other": "not one of the known kinds",
}
#: a fixed sample of golden cases per loss: every kind the probes tell apart, small arrays
QUICK = {
    "sigmoid_focal_loss": (
        "sigmoid/gamma=2.0/alpha=none", "sigmoid/gamma=2.0/alpha=0.25",
        "sigmoid/gamma=0.5/alpha=vector", "sigmoid/soft/gamma=2.0",
        "sigmoid/ignore_index/mean", "sigmoid/normalizer/number", "sigmoid/nd/alpha-last-axis",
        "sigmoid/extreme/gamma=0.5/y=1.0", "sigmoid/extreme/gamma=2.0/y=0.0",
        "sigmoid/empty"),
    "softmax_focal_loss": (
        "softmax/gamma=2.0/alpha=none", "softmax/gamma=2.0/alpha=0.25",
        "softmax/gamma=0.5/alpha=vector", "softmax/weight/mean",
        "softmax/ignore_index/weight/mean", "softmax/probs", "softmax/nd/axis=1",
        "softmax/extreme/gamma=0.5/target=0", "softmax/extreme/gamma=2.0/target=2"),
    "sigmoid_focal_loss_star": None,
}


@dataclass
class CaseResult:
    """One case: status "agree", "disagree" or "unsupported"; for a disagreement its
    kinds (keys of KINDS), the worst value, and the focalx call that agrees, if any."""

    id: str
    status: str
    kinds: tuple = ()
    detail: str = ""
    agrees_with: str | None = None
    size: int = 0
    #: the focalx keyword arguments that changed in the agreeing call (None: no such call)
    mapping: dict | None = None

    def as_dict(self):
        mapping = None if self.mapping is None else {
            k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in self.mapping.items()}
        return {"id": self.id, "status": self.status, "kinds": list(self.kinds),
                "detail": self.detail, "agrees_with": self.agrees_with, "size": self.size,
                "mapping": mapping}


@dataclass
class Report:
    """What :func:`compare` found: ``print(report)`` gives the table, ``report.ok`` is
    False when any case disagrees, ``report.kinds`` maps each kind to its cases."""

    function: str
    loss: str
    framework: str
    dtype: str
    results: list = field(default_factory=list)
    seconds: float = 0.0
    #: what a signature change would likely fix (crashes on an argument's form)
    hints: list = field(default_factory=list)

    def _with(self, status):
        return [r for r in self.results if r.status == status]

    @property
    def agreed(self):
        return self._with("agree")

    @property
    def disagreed(self):
        return self._with("disagree")

    @property
    def unsupported(self):
        return self._with("unsupported")

    @property
    def ok(self) -> bool:
        return not self.disagreed

    @property
    def kinds(self) -> dict:
        out: dict = {}
        for r in self.disagreed:
            for k in r.kinds:
                out.setdefault(k, []).append(r.id)
        return out

    def smallest_failure(self) -> CaseResult | None:
        return min(self.disagreed, key=lambda r: (r.size, r.id), default=None)

    def summary(self) -> str:
        return (f"{self.function} ({self.loss}, {self.framework}, {self.dtype}): "
                f"{len(self.agreed)} agree, {len(self.disagreed)} disagree, "
                f"{len(self.unsupported)} not expressible")

    def table(self, *, unsupported: bool = False) -> str:
        rows = [r for r in self.results if r.status == "disagree"
                or unsupported and r.status == "unsupported"]
        lines = [self.summary()]
        if rows:
            w = max(len(r.id) for r in rows)
            for r in rows:
                what = ", ".join(r.kinds) if r.status == "disagree" else "not expressible"
                lines.append(f"  {r.id:<{w}}  {what}: {r.detail}")
                if r.agrees_with:
                    lines.append(f"  {'':<{w}}    focalx: {r.agrees_with}")
        kinds = self.kinds
        if kinds:
            lines.append("kinds:")
            for k, ids in kinds.items():
                lines.append(f"  {k} ({len(ids)}): {KINDS[k]}")
        if self.hints:
            lines.append("hints:")
            lines += [f"  {h}" for h in self.hints]
        return "\n".join(lines)

    __str__ = table

    def as_dict(self):
        return {"function": self.function, "loss": self.loss, "framework": self.framework,
                "dtype": self.dtype, "agree": len(self.agreed),
                "disagree": len(self.disagreed), "unsupported": len(self.unsupported),
                "kinds": self.kinds, "hints": self.hints, "seconds": round(self.seconds, 2),
                "results": [r.as_dict() for r in self.results]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)


def _variant(loss: str) -> str:
    if not isinstance(loss, str):
        raise TypeError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
    v = LOSSES.get(loss, loss)
    if v not in LOSSES.values():
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
    return v


def _name(fn) -> str:
    for obj in (fn, type(fn)):
        mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if mod and qual and qual != "function":
            return f"{mod}.{qual}"
    return repr(fn)


# ---- the cases ------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    variant: str
    x: np.ndarray       # the logits as the function gets them (rounded to its dtype)
    y: np.ndarray
    kwargs: dict        # focalx's full keyword arguments
    loss: np.ndarray    # the spec's loss and gradient (float64), the shape of the loss
    grad: np.ndarray
    scale: float


def _golden(variant, dtype, pick):
    cases = runner.select(runner.load_golden()["cases"], variant=variant)
    if pick is not None:
        cases = [c for c in cases if c["id"] in pick]
    out = []
    for c in cases:
        if dtype not in c.get("dtypes", (dtype,)) or "labels" in c:
            continue
        exp = c["expected"].get(dtype, c["expected"]["float64"])
        x = np.asarray(exp.get("logits", c["logits"]), np.float64).reshape(c["shape"])
        index = c["targets_dtype"] == "int"
        y = np.asarray(exp.get("targets", c["targets"]),
                       np.int64 if index else np.float64).reshape(c["targets_shape"])
        kw = {**_spec.DEFAULTS[variant], **c["kwargs"]}
        loss = runner._floats(exp["loss"], dtype).reshape(runner.expected_shape(c))
        grad = runner._floats(exp["grad"], dtype).reshape(x.shape)
        out.append(Case(c["id"], variant, x, y, kw, loss, grad, float(exp["scale"])))
    return out


def reference(variant, x, y, kwargs):
    """The spec's (loss, gradient) in float64: the NumPy reference."""
    kw = dict(kwargs)
    fn = getattr(_numpy, variant + "_and_grad")
    return fn(x, y, **kw)


def _scale(kwargs, x, y):
    if kwargs.get("reduction") != "mean":
        return 1.0 / (kwargs.get("normalizer") or 1.0)
    return 1.0 / max(x.size, 1)


def _derived(dtype, pick, axis):
    """Sigmoid loss on index targets (one-hot on `axis`): the softmax cases' inputs, the
    spec's values from the NumPy reference."""
    base = _golden("softmax_focal_loss", dtype, pick and {p.replace("sigmoid-index/", "")
                                                            for p in pick})
    out = []
    for c in base:
        kw = {k: v for k, v in c.kwargs.items() if k in ("gamma", "reduction")}
        alpha = c.kwargs["alpha"]
        if c.y.shape == c.x.shape or c.x.ndim < 2 or not c.kwargs.get("from_logits", True) \
                or isinstance(alpha, list) or isinstance(c.kwargs["gamma"], list) \
                or np.any(c.y == c.kwargs["ignore_index"]) or c.id.startswith("poly1/"):
            continue
        ax = c.kwargs["axis"] % c.x.ndim
        x = np.moveaxis(c.x, ax, axis)
        t = one_hot(c.y, x.shape[axis], axis)
        kw.update(alpha=alpha)
        full = {**_spec.DEFAULTS["sigmoid_focal_loss"], **kw}
        loss, grad = reference("sigmoid_focal_loss", x, t, full)
        case = Case("sigmoid-index/" + c.id, "sigmoid_focal_loss", x, c.y, full, loss, grad,
                    _scale(full, x, t))
        case.onehot = t
        out.append(case)
    return out


def _fuzz(variant, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = (int(rng.integers(1, 5)), int(rng.integers(2, 5)))
        x = np.round(rng.normal(0, 6, shape) * 8) / 8
        gamma = float(rng.choice([0.0, 0.5, 1.0, 2.0, 3.0]))
        red = str(rng.choice(["none", "sum", "mean"]))
        if variant == "softmax_focal_loss":
            y = rng.integers(0, shape[1], shape[0])
            kw = {"gamma": gamma, "alpha": None, "axis": 1, "reduction": red}
        else:
            y = (rng.random(shape) < 0.4).astype(np.float64)
            kw = {"gamma": gamma, "reduction": red}
            if variant == "sigmoid_focal_loss":
                kw["alpha"] = float(rng.choice([0.25, 0.5])) if rng.random() < 0.7 else None
        full = {**_spec.DEFAULTS[variant], **kw}
        loss, grad = reference(variant, x, y, full)
        out.append(Case(f"fuzz/{i}", variant, x, y, full, loss, grad, _scale(full, x, y)))
    return out


# ---- running one case -----------------------------------------------------------------


def _prepare(case, sig, fn, run, default_axis):
    """(kwargs for fn, logits, targets, the class axis moved to or None)."""
    kw = dict(case.kwargs)
    takes, _ = accepted(fn)
    ign = sig.names.get("ignore_index", "ignore_index")
    # a function without ignore_index: fine while no target is the ignored value
    if "ignore_index" in kw and (takes is not None and ign not in takes or not ign) and (
            kw["ignore_index"] is None or not np.any(case.y == kw["ignore_index"])):
        kw.pop("ignore_index")
    x, y = case.x, getattr(case, "onehot", case.y)
    if case.id.startswith("sigmoid-index/"):
        if sig.target_format != "index":
            raise Unsupported("index targets")
        y = case.y
        kw.pop("ignore_index", None)
        if np.any(y < 0):
            raise Unsupported("ignored targets")
    elif case.variant == "sigmoid_focal_loss" and sig.target_format == "index":
        raise Unsupported("the function takes index targets")
    call_kw, move = build_call(sig, fn, case.variant, kw, x.ndim, default_axis)
    if case.variant == "softmax_focal_loss":
        ax = case.kwargs["axis"] % x.ndim
        index = y.dtype.kind in "iu"
        if sig.target_format == "index" and not index:
            raise Unsupported("probability targets (the function takes class indices)")
        if sig.target_format == "onehot" and index:
            if np.any((y < 0) | (y >= x.shape[ax])):
                raise Unsupported("ignored targets (one-hot targets cannot mark them)")
            y = one_hot(y, x.shape[ax], ax)
        if move is not None:
            x = np.moveaxis(x, ax, move)
            if not index or sig.target_format == "onehot":
                y = np.moveaxis(y, ax, move)
    for key in ("weight", "pos_weight") + tuple(sig.as_arrays):
        name = sig.names.get(key, key)
        if isinstance(call_kw.get(name), list):
            call_kw[name] = np.asarray(call_kw[name], np.float64)
    for name, v in call_kw.items():
        if isinstance(v, np.ndarray):
            call_kw[name] = run.array(v, sig.dtype)
    return call_kw, x, y, move


def _invoke(fn, sig, call_kw):
    def call(a, b):
        pos, kw = [], dict(call_kw)
        slots = {sig.logits: a, sig.targets: b}
        ints = sorted(k for k in slots if isinstance(k, int))
        for k in ints:
            if k != len(pos):
                raise Unsupported(f"positions {ints}: positional arguments must be 0, 1, ...")
            pos.append(slots[k])
        kw.update({k: v for k, v in slots.items() if isinstance(k, str)})
        return fn(*pos, **kw)
    return call


def _run_case(case, fn, sig, run, time_limit, default_axis):
    size = int(case.x.size)
    try:
        call_kw, x, y, move = _prepare(case, sig, fn, run, default_axis)
    except Unsupported as exc:
        return CaseResult(case.id, "unsupported", detail=str(exc), size=size)
    call = _invoke(fn, sig, call_kw)
    pad = max(sig.min_ndim - x.ndim, 0)
    if pad:
        x, y = x.reshape((1,) * pad + x.shape), y.reshape((1,) * pad + y.shape)
    try:
        loss, grad = run_with_limit(lambda: run.evaluate(call, x, y, sig.dtype), time_limit)
        if pad:
            grad = None if grad is None else grad.reshape(grad.shape[pad:])
            if loss.ndim >= pad and loss.shape[:pad] == (1,) * pad:
                loss = loss.reshape(loss.shape[pad:])
    except Unsupported as exc:
        return CaseResult(case.id, "unsupported", detail=str(exc), size=size)
    except TimedOut as exc:
        return CaseResult(case.id, "disagree", ("time-out",), str(exc), size=size)
    except Exception as exc:  # noqa: BLE001 - the user's function failing is a result
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        return CaseResult(case.id, "disagree", ("crash",), f"raised {text}", size=size)
    if grad is not None and move is not None:
        ax = case.kwargs["axis"] % case.x.ndim
        grad = np.moveaxis(grad, move, ax)
    if case.variant == "softmax_focal_loss":
        class_axis = case.kwargs["axis"] % case.x.ndim if move is None else move
    else:
        class_axis = default_axis
    found = {}
    kinds, detail, agrees = _probes.classify(case, loss, grad, sig.dtype,
                                             alpha_off=sig.alpha_off, class_axis=class_axis,
                                             found=found)
    return CaseResult(case.id, "agree" if not kinds else "disagree", tuple(kinds), detail,
                      agrees, size, found.get("mapping"))


def _soft(case) -> bool:
    y = case.y
    return case.variant != "softmax_focal_loss" and y.dtype.kind == "f" and \
        bool(np.any((y > 0) & (y < 1)))


def _infer_soft_targets(cases, results):
    """A case with only soft targets cannot show that hard ones agree: where the other
    cases do (some differ on soft targets only), its unexplained disagreement is that."""
    if not any("soft-targets" in r.kinds for r in results):
        return
    for case, r in zip(cases, results):
        if "other" in r.kinds and _soft(case):
            r.kinds = tuple("soft-targets" if k == "other" else k for k in r.kinds)


def _hints(cases, results, sig) -> list:
    """A vector alpha/gamma or alpha=None on which every such case crashed (and others ran):
    most likely the function takes numbers only, or has no 'off' value for alpha."""
    crashed = [("crash" in r.kinds, c.kwargs) for c, r in zip(cases, results)
               if r.status != "unsupported"]
    if all(bad for bad, _ in crashed):
        return []
    out = []
    vector = [k for k in ("alpha", "gamma") if k not in sig.scalar_only + sig.drop]
    vector = [k for k in vector if any(isinstance(kw.get(k), list) for _, kw in crashed)
              and all(bad for bad, kw in crashed if isinstance(kw.get(k), list))]
    if vector:
        out.append(f"every case giving {' or '.join(vector)} as a vector crashed: if the "
                   f"function takes numbers only, Signature(scalar_only={tuple(vector)!r}) "
                   f"(--map scalar_only={','.join(vector)}) reports them as not expressible")
    none = [bad for bad, kw in crashed if "alpha" in kw and kw["alpha"] is None]
    if sig.alpha_off is None and "alpha" not in sig.drop and none and all(none):
        out.append("every case with alpha=None crashed: give the function's value for no "
                   "alpha, Signature(alpha_off=-1) (--map alpha_off=-1), or "
                   "alpha_off=\"not expressible\"")
    return out


def compare(fn, *, loss: str = "sigmoid", signature: Signature | None = None,
            cases=None, fuzz: int = 0, time_limit: float | None = 10.0,
            framework: str | None = None) -> Report:
    """Run the golden cases of `loss` through ``fn`` in its own framework and classify
    every disagreement with the spec.

    Args:
      fn: the focal loss to check, ``fn(logits, targets, **keywords)`` (names and
        conventions as `signature` says). It gets the framework's arrays (logits in
        ``signature.dtype``); its gradient w.r.t. the logits comes from the framework's
        autograd (torch.autograd, jax.vjp, tf.GradientTape, paddle.grad; none for NumPy).
      loss: "sigmoid", "softmax" or "star" (FL*).
      signature: the function's parameter names and conventions (:class:`Signature`).
      cases: None (every golden case of the loss), "quick" (a fixed sample, :data:`QUICK`)
        or an iterable of case ids.
      fuzz: how many random cases (the NumPy reference's values) to add.
      time_limit: seconds per case (None: no limit); a case past it is a "time-out".
      framework: "torch", "jax", "tensorflow", "paddle" or "numpy"; None: the
        signature's, else detected from ``fn``'s module.

    Returns:
      A :class:`Report`: per case agree / disagree / not expressible; each disagreement
      with its kinds (:data:`KINDS`, found by probes: the spec under the other
      conventions, whichever the function matches) and the focalx call that agrees.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    variant = _variant(loss)
    sig = Signature() if signature is None else signature
    if not isinstance(sig, Signature):
        raise TypeError(f"signature must be a focalx.testing.Signature, got "
                        f"{type(sig).__name__}")
    if not isinstance(fuzz, int) or isinstance(fuzz, bool) or fuzz < 0:
        raise ValueError(f"fuzz must be an int >= 0, got {fuzz!r}")
    if time_limit is not None and not (isinstance(time_limit, (int, float))
                                       and not isinstance(time_limit, bool)
                                       and time_limit > 0):
        raise ValueError(f"time_limit must be a number > 0 or None, got {time_limit!r}")
    if time_limit is not None and time_limit >= threading.TIMEOUT_MAX:
        time_limit = None  # (inf: no limit; a thread cannot wait longer than TIMEOUT_MAX)
    if cases == "quick":
        pick = QUICK.get(variant)
    elif cases is None:
        pick = None
    elif isinstance(cases, str):
        raise ValueError(f"cases must be None, 'quick' or an iterable of case ids, "
                         f"got {cases!r}")
    else:
        try:
            pick = set(cases)
        except TypeError:
            raise TypeError(f"cases must be None, 'quick' or an iterable of case ids, "
                            f"got {type(cases).__name__}") from None
        if not pick or not all(isinstance(p, str) for p in pick):
            raise ValueError(f"cases: expected one or more case ids (strings), got {cases!r}")
        known = {c["id"] for c in runner.load_golden()["cases"]}
        unknown = sorted(p for p in pick if p not in known and p.replace(
            "sigmoid-index/", "", 1) not in known)
        if unknown:
            raise ValueError(f"cases: unknown case ids {unknown[:5]}")
    name = framework or sig.framework or detect(fn)
    run = Runner(name)
    from focalx.backends import REGISTRY
    default_axis = REGISTRY[name].class_axis if name in REGISTRY else -1
    if sig.class_axis is not None:
        default_axis = sig.class_axis
    t0 = time.perf_counter()
    if variant == "sigmoid_focal_loss" and sig.target_format == "index":
        if cases == "quick":  # (the index-target cases are the softmax cases' inputs)
            pick = QUICK["softmax_focal_loss"]
        todo = _derived(sig.dtype, pick, default_axis)
    else:
        todo = _golden(variant, sig.dtype, pick)
    todo += _fuzz(variant, fuzz)
    results = [_run_case(c, fn, sig, run, time_limit, default_axis) for c in todo]
    _infer_soft_targets(todo, results)
    return Report(_name(fn), variant, name, sig.dtype, results, time.perf_counter() - t0,
                  _hints(todo, results, sig))


def assert_matches(fn, **kwargs) -> Report:
    """:func:`compare`, raising AssertionError (naming the smallest disagreeing case, its
    kinds and the focalx call that agrees) unless every expressible case agrees."""
    report = compare(fn, **kwargs)
    worst = report.smallest_failure()
    if worst is not None:
        hint = f"; agrees with {worst.agrees_with}" if worst.agrees_with else ""
        raise AssertionError(
            f"{report.function} disagrees with focalx's {report.loss} on "
            f"{len(report.disagreed)} of {len(report.results)} cases; smallest: {worst.id} "
            f"({', '.join(worst.kinds)}): {worst.detail}{hint}\n{report.table()}")
    if not report.agreed:
        raise AssertionError(f"{report.function}: no case was expressible\n"
                             f"{report.table(unsupported=True)}")
    return report

