"""Property-based conformance fuzzing: random calls of every focalx function, on every
backend and execution mode, against the float64 reference at the same inputs.

A call is drawn at random (hypothesis): the function, dtype, shape (0-size, 0-d, N-d,
the class axis anywhere), logits (moderate, extreme, huge, subnormal, +-inf, NaN),
targets (hard, soft, integer, bool, class indices, class probabilities, ignored ones),
every hyperparameter as a number, a list, a NumPy array or a framework tensor, and the
upstream gradient (1, 0.5 or -2). The backend runs it in one of its modes (see
``_harness``: torch eager, its fused kernel, a user's torch.compile; JAX eager and
jit; TensorFlow eager, through its cached XLA function, in a tf.function and under
XLA; Paddle dygraph, in row blocks, under to_static and full_graph), and its loss and
gradient are compared with the float64 reference (``focalx._numpy``) evaluated at the
inputs the backend holds (its rounding of the logits and targets, and of hyperparameter
arrays to the compute dtype), within the conformance tolerances
(``tolerances.py``). The reference itself is checked against the mpmath oracle
(backend "numpy", mode "oracle").

The rules for what is not a number:

- NaN is expected where the reference gives NaN, and nowhere else; an infinity where the
  reference gives one (beyond the output dtype's range included).
- Where a loss element (or a sample's loss, or the reduced loss) is not finite, the
  gradient there is not compared; where the reduced loss is NaN, none is (TensorFlow's
  graphs fold their value checks into the loss's sum).
- On backends whose runtimes flush subnormal numbers (JAX, TensorFlow), values that
  depend on a subnormal input are not compared (see runner.flushed_values).
- Paddle's full static graph (``full_graph``) rounds Python-number constants to float32,
  so there float64 is compared with float32's relative tolerance.

``focalx check --fuzz N`` runs N examples on each backend, spread over its modes, each
backend in its own process; ``tests/test_fuzz.py`` runs a fixed-seed slice. A failure
is shrunk by hypothesis to a minimal call and reported with a reproducer: Python code
that makes the call with the backend's public API and prints what the reference
expects. Needs hypothesis (the ``test`` extra).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from . import tolerances
from .runner import flushed_values, progress

SIGMOID, SOFTMAX, STAR = "sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star"
ASL = "asymmetric_loss"  # (elementwise, on logits: the sigmoid losses' paths)
FUNCTIONS = (SIGMOID, SOFTMAX, STAR, ASL)
DTYPES = ("float64", "float32", "float16", "bfloat16")
COTANGENTS = (1.0, 0.5, -2.0)

#: How many of a backend's examples each mode gets (relative weights): the modes that
#: compile every call take seconds an example.
MODE_WEIGHTS = {
    "oracle": 1, "eager": 4, "fused": 2, "compile": 0.15, "jit": 2, "eager_xla": 2,
    "function": 1.5, "xla": 1.5, "dygraph": 4, "blocks": 2, "to_static": 0.3,
    "full_graph": 0.5,
}
#: Modes where every new configuration compiles (seconds each): their draws come from a
#: few configurations, so that compiled kernels are reused.
FEW_CONFIGS = ("fused",)
#: Modes that take their path only for some calls (see _harness.NotRun): what they need.
#: "rows": a leading axis of at least 2 (not the class axis), hyperparameter arrays as
#: tensors, no ignore_index for an elementwise loss (Paddle's row blocks); "nonempty".
NEEDS = {"fused": ("nonempty",), "blocks": ("nonempty", "rows")}


class Mismatch(AssertionError):
    """A backend disagreed with the reference; the message holds a reproducer."""


# ---------------------------------------------------------------------------
# Drawing a call
# ---------------------------------------------------------------------------

def _specials(dtype: str, softmax: bool) -> list:
    """Logits worth trying in a dtype: extremes, its huge and subnormal numbers."""
    out = [0.0, -0.0, 1e-8, -1e-8, 15.0, -15.0, 17.0, -17.0, 30.0, -30.0, 88.0, -88.0,
           89.0, -89.0, 100.0, -100.0, 1e4, -1e4]
    big = tolerances.MAX[dtype] / (2.0 if softmax else 1.0)  # (x - max must fit)
    out += [big, -big, big / 3, -big / 3]
    if dtype == "float16":
        out += [6e-8, -6e-8, 3e-5]
    elif dtype == "float64":
        out += [1e300, -1e300, 1e37, -3e38, 1e-310, -1e-310, 5e-324]
    else:
        out += [1e30, -1e30, 1e37, -1e37, 1e-40, -1e-40, 1.4e-45]
    return out


def strategy(backend: str, mode: str):
    """A hypothesis strategy of calls (plain dicts, see :func:`reproducer`) for a
    backend's mode."""
    from hypothesis import strategies as st

    few = mode in FEW_CONFIGS
    oracle = mode == "oracle"
    needs = NEEDS.get(mode, ())

    @st.composite
    def calls(draw):
        fn = draw(st.sampled_from(FUNCTIONS))
        dtype = "float64" if oracle else draw(st.sampled_from(DTYPES))
        softmax = fn == SOFTMAX
        from_logits = True if fn in (STAR, ASL) else \
            draw(st.sampled_from([True, True, True, False]))
        small = _smallest(dtype, from_logits)
        # shape
        max_size = 12 if oracle else 48
        rows = "rows" in needs
        ndim = draw(st.integers(2 if rows else (1 if softmax else 0), 4 if not oracle else 2))
        low = 1 if "nonempty" in needs else 0
        shape = list(draw(st.lists(st.integers(low, 5), min_size=ndim, max_size=ndim)))
        if rows:
            shape[0] = max(shape[0], 2)
        while math.prod(shape) > max_size:
            i = shape.index(max(shape))
            shape[i] -= 1
        axis = None
        if softmax:
            axis = draw(st.integers(1 - ndim if rows else -ndim, ndim - 1))
            if axis == 0 and rows:
                axis = 1
            if shape[axis] == 0:
                shape[axis] = 1  # (a class axis of size 0 is refused)
        n = math.prod(shape)
        # logits
        if from_logits:
            pool = _specials(dtype, softmax)
            nonfinite = [] if oracle or few else [math.inf, -math.inf, math.nan]
            value = st.one_of(st.floats(-20, 20), st.sampled_from(pool),
                              *([st.sampled_from(nonfinite)] if nonfinite else []))
            if oracle:  # (the oracle evaluates finite numbers of modest size fast)
                value = st.one_of(st.floats(-20, 20), st.sampled_from(
                    [v for v in pool if abs(v) <= 1e4]))
        else:
            tiny = {"float64": 1e-310, "float16": 3e-5}.get(dtype, 1e-40)
            value = st.one_of(st.floats(0, 1), st.sampled_from(
                [0.0, 1.0, 0.5, 1e-8, 1 - 1e-8, 2.0 ** -20, 1 - 2.0 ** -20, tiny]))
        logits = draw(st.lists(value, min_size=n, max_size=n))
        kw = {}
        if softmax:
            kw["axis"] = axis
        # targets
        ignore = None
        if softmax:
            C = shape[axis]
            kind = draw(st.sampled_from(["index", "index", "probs"]))
            if kind == "index":
                ignore = draw(st.sampled_from([None, -100, -100, 255, draw(st.integers(0, C - 1))]))
                kw["ignore_index"] = ignore
                tshape = shape[:axis % ndim] + shape[axis % ndim + 1:]
                choices = list(range(C)) + ([ignore] if ignore is not None else [])
                targets = draw(st.lists(st.sampled_from(choices), min_size=math.prod(tshape),
                                        max_size=math.prod(tshape)))
                tdtype = draw(st.sampled_from(["int64", "int64", "int32"]))
            else:
                tshape = list(shape)
                targets = draw(st.lists(_unit(st, small), min_size=n, max_size=n))
                tdtype = dtype
        else:
            tshape = list(shape)
            if ndim and draw(st.integers(0, 4)) == 0:  # broadcast targets
                cut = draw(st.integers(0, ndim))
                tshape = [1 if draw(st.booleans()) else s for s in shape[cut:]]
            tn = math.prod(tshape)
            kind = draw(st.sampled_from(["hard", "soft", "soft", "int", "bool"]))
            if kind == "bool":
                targets = draw(st.lists(st.booleans(), min_size=tn, max_size=tn))
                tdtype = "bool"
            else:
                if kind == "soft":
                    value = _unit(st, small)
                else:
                    value = st.sampled_from([0.0, 1.0])
                if (kind != "soft" or draw(st.booleans())) and "rows" not in needs:
                    ignore = draw(st.sampled_from([None, -1, 255, 2]))
                    if ignore is not None:
                        kw["ignore_index"] = ignore
                        value = st.one_of(value, st.just(float(ignore)))
                targets = draw(st.lists(value, min_size=tn, max_size=tn))
                tdtype = dtype if kind != "int" else "int64"
        # hyperparameters
        if fn == STAR:
            kw["gamma"] = draw(st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]) if few else
                               st.one_of(st.sampled_from([0.25, 1.0, 2.0, 4.0]),
                                         st.floats(0.05, 6.0, allow_subnormal=False)))
            kw["beta"] = draw(st.sampled_from([0.0, 1.0, -0.5]) if few else
                              st.floats(-3.0, 3.0))
        elif fn == ASL:
            exponent = st.sampled_from([0.0, 0.5, 2.0]) if few else st.one_of(
                st.sampled_from([0.0, 0.25, 1.0, 4.0]), st.floats(0.0, 6.0, allow_subnormal=False))
            kw["gamma_pos"], kw["gamma_neg"] = draw(exponent), draw(exponent)
            kw["clip"] = draw(st.sampled_from([0.0, 0.05]) if few else
                              st.one_of(st.sampled_from([0.0, 0.05, 0.2]), st.floats(0.0, 0.9)))
        else:
            # (the oracle's one-sided derivative at a probability of exactly 0 or 1 converges
            # like h**gamma: not for small gammas)
            low = 0.25 if oracle and not from_logits else 0.0
            kw["gamma"] = draw(st.sampled_from([0.0, 0.5, 2.0]) if few else st.one_of(
                st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0]),
                st.floats(low, 6.0, allow_subnormal=False)))
        arrays = {}
        cls_shape = [shape[axis]] if softmax else ([shape[-1]] if ndim else [])
        # alpha: a number, or an array (per class, or broadcastable)
        a_kind = "default" if fn == ASL else \
            draw(st.sampled_from(["default", "none", "number", "array"]))
        if a_kind == "none":
            kw["alpha"] = None
        elif a_kind == "number":
            kw["alpha"] = draw(st.sampled_from([0.25, 0.5]) if few else
                               st.one_of(st.sampled_from([0.0, 1.0, 0.25]), _unit(st, small)))
        elif a_kind == "array":
            arrays["alpha"] = _param(draw, st, shape, cls_shape, softmax, (0.0, 1.0), small)
        if fn == SIGMOID and draw(st.booleans()):
            if draw(st.booleans()):
                kw["pos_weight"] = draw(st.sampled_from([0.0, 0.5, 2.0, 100.0]))
            else:
                arrays["pos_weight"] = _param(draw, st, shape, cls_shape, False, (0.0, 10.0),
                                              small)
        if draw(st.booleans()):
            arrays["weight"] = _param(draw, st, shape, cls_shape, softmax, (0.0, 4.0), small,
                                      vector=softmax)
        if not few and draw(st.booleans()):
            # (a smoothing below 1e-6 makes targets that products underflow: see _unit)
            kw["label_smoothing"] = draw(st.one_of(st.sampled_from([0.1, 0.5]),
                                                   st.floats(1e-6, 0.95)))
        kw["reduction"] = draw(st.sampled_from(["none", "sum", "mean"]))
        norm = draw(st.sampled_from([None, None, "number", "array"]))
        if norm == "number":
            kw["normalizer"] = draw(st.sampled_from([0.5, 3.0, 1000.0, 1e-3]))
        elif norm == "array":
            arrays["normalizer"] = {"values": [draw(st.sampled_from([0.5, 7.0, 250.0]))],
                                    "shape": []}
        if fn in (SIGMOID, SOFTMAX):
            kw["from_logits"] = from_logits
        if fn in (SIGMOID, SOFTMAX) and draw(st.integers(0, 2)) == 0:  # Poly-1 (either sign)
            kw["epsilon"] = draw(st.sampled_from([1.0, -1.0]) if few else
                                 st.one_of(st.sampled_from([1.0, -1.0, 2.0]),
                                           st.floats(-1.0, 4.0)))
        for name, spec in arrays.items():
            # numbers and lists are host data; arrays may be NumPy or the framework's
            forms = ["tensor"] if few or "rows" in needs else (
                ["list", "numpy", "tensor"] if spec["shape"] and 0 not in spec["shape"]
                else ["numpy", "tensor"])
            spec["form"] = draw(st.sampled_from(forms))
        return {"fn": fn, "dtype": dtype, "shape": shape, "logits": logits,
                "targets": targets, "targets_shape": tshape, "targets_dtype": tdtype,
                "kwargs": kw, "arrays": arrays,
                "cotangent": draw(st.sampled_from(COTANGENTS))}

    return calls()


def _unit(st, small):
    """Values in [0, 1]: soft targets, alpha; none in (0, small) (see _smallest)."""
    return st.one_of(st.just(0.0), st.floats(small, 1), st.sampled_from([1.0, small, 1 - 1e-7]))


def _smallest(dtype, from_logits):
    """The smallest positive soft target or hyperparameter a call draws. Below 1e-30 a
    product with another small coefficient leaves float64's normal range and its
    precision. With probability inputs, in float32 and below, a product of several small
    coefficients (alpha, weight, pos_weight, the focal factor y**gamma, the mean's scale)
    can underflow to 0 and cancel the infinite cross-entropy of a probability of 0: not
    below 1e-3 there (see "Reliability" in docs/numerics.md)."""
    return 1e-30 if from_logits or dtype == "float64" else 1e-3


def _param(draw, st, shape, cls_shape, softmax, bounds, small, vector=False):
    """A hyperparameter array: per class (softmax: (C,), or 0-d unless `vector`), or a
    shape broadcastable to the logits (sigmoid)."""
    if softmax:
        pshape = list(cls_shape) if vector or draw(st.booleans()) else []
    else:
        options = [[], list(cls_shape), list(shape)]
        pshape = draw(st.sampled_from([o for o in options if math.prod(o) <= 48]))
    lo, hi = bounds
    values = draw(st.lists(st.one_of(st.floats(max(lo, small), hi), st.sampled_from([lo, hi])),
                           min_size=math.prod(pshape), max_size=math.prod(pshape)))
    return {"values": values, "shape": pshape}


# ---------------------------------------------------------------------------
# Running and checking one call
# ---------------------------------------------------------------------------

def _kwargs(harness, call):
    """The call's keyword arguments with its arrays in their form (list, NumPy array or
    the harness's framework tensor, float64)."""
    kw = dict(call["kwargs"])
    for name, spec in call["arrays"].items():
        a = np.asarray(spec["values"], dtype=np.float64).reshape(spec["shape"])
        if spec["form"] == "list":
            kw[name] = a.tolist()
        elif spec["form"] == "numpy":
            kw[name] = a
        else:
            kw[name] = harness.to_array(a.ravel().tolist(), a.shape, dtype="float64")
    return kw


def _compute(dtype):
    return np.float64 if dtype == "float64" else np.float32


def expected(call, x, t, *, flushes=False):
    """(loss, gradient w.r.t. the logits of sum(cotangent * loss), element loss, scale,
    unchecked masks or None) from the float64 reference at the inputs the backend holds:
    x and t as it holds them, hyperparameter arrays rounded to the compute dtype."""
    from focalx import _numpy as ref
    fn, dtype = call["fn"], call["dtype"]
    kw = dict(call["kwargs"])
    for name, spec in call["arrays"].items():
        kw[name] = np.asarray(spec["values"], dtype=np.float64).astype(
            _compute(dtype)).astype(np.float64).reshape(spec["shape"])
    x = np.asarray(x, dtype=np.float64).reshape(call["shape"])
    t = np.asarray(t).reshape(call["targets_shape"])
    with np.errstate(all="ignore"):
        loss, grad = getattr(ref, fn + "_and_grad")(x, t, **kw)
        elements = loss if kw["reduction"] == "none" else getattr(ref, fn)(
            x, t, **dict(kw, reduction="none", normalizer=None))
    unchecked = None
    if flushes:
        floats = t if call["targets_dtype"] not in ("int64", "int32", "bool") else None
        unchecked = flushed_values(fn, call["shape"], x.ravel(), None if floats is None else
                                   floats.ravel(), call["targets_shape"], kw, dtype)
    return (np.asarray(loss, np.float64).ravel(), call["cotangent"] * grad.ravel(),
            np.asarray(elements, np.float64), _scale(call, x, t, kw), unchecked)


def _scale(call, x, t, kw):
    """The reduction's factor: 1/denominator for a mean, over any normalizer."""
    norm = kw.get("normalizer")
    scale = 1.0 if norm is None else 1.0 / float(np.asarray(norm))
    if kw["reduction"] != "mean":
        return scale
    ignore = kw.get("ignore_index")
    if call["fn"] == SOFTMAX:
        axis = kw["axis"] % x.ndim
        if t.shape == x.shape:
            denom = x.size // x.shape[axis] if x.shape[axis] else 0
        else:
            keep = np.ones(t.shape, bool) if ignore is None else t != ignore
            w = kw.get("weight")
            denom = keep.sum() if w is None else np.asarray(w)[np.where(keep, t, 0)][keep].sum()
    else:
        tb = np.broadcast_to(t, x.shape)
        denom = tb.size if ignore is None else (tb != ignore).sum()
    return 0.0 if denom == 0 else scale / float(denom)


def _overflow(dtype):
    """Magnitudes from which a value rounds to infinity in dtype (its largest finite
    value plus half an ulp)."""
    return {"float64": math.inf, "float32": 3.4028235677973366e38, "float16": 65520.0,
            "bfloat16": 3.3961775292304e38}[dtype]


def _check(got, want, rtol, atol, dtype, what, skip=None, loose=None):
    """Problems of `got` against `want` (float64 arrays) elementwise. `skip`: values not
    compared; `loose`: values where any non-number will do if `want` is not finite."""
    problems = []
    if got.shape != want.shape:
        return [f"{what} has {got.size} values, expected {want.size}"]
    limit = _overflow(dtype)
    for i, (g, w) in enumerate(zip(got, want)):
        if skip is not None and skip[i]:
            continue
        if loose is not None and loose[i] and not math.isfinite(w):
            if math.isfinite(g):
                problems.append(f"{what}[{i}] = {g!r}, expected NaN or an infinity")
            continue
        if math.isnan(w):
            if not math.isnan(g):
                problems.append(f"{what}[{i}] = {g!r}, expected NaN")
            continue
        if math.isnan(g):
            problems.append(f"{what}[{i}] = NaN, expected {w!r}")
            continue
        lo, hi = abs(w) * (1 - rtol) - atol, abs(w) * (1 + rtol) + atol
        if lo >= limit or (math.isinf(w)):  # only an infinity of w's sign will do
            if g != math.copysign(math.inf, w):
                problems.append(f"{what}[{i}] = {g!r}, expected {math.copysign(math.inf, w)}")
            continue
        if math.isinf(g) and hi >= limit and math.copysign(1, g) == math.copysign(1, w):
            continue  # w rounds to the largest finite value or to infinity
        if not abs(g - w) <= rtol * abs(w) + atol:
            problems.append(f"{what}[{i}] = {g!r}, expected {w!r} "
                            f"({abs(g - w) / (rtol * abs(w) + atol):.3g} x tolerance)")
    return problems


def check_call(harness, mode, call):
    """Run one call in a mode and compare it with the reference; raises Mismatch (with a
    reproducer) on disagreement, _harness.NotRun where the mode did not take its path."""
    dtype, fn = call["dtype"], call["fn"]
    x = harness.to_array(call["logits"], call["shape"], dtype=dtype)
    tdtype = call["targets_dtype"]
    t = harness.to_array(call["targets"], call["targets_shape"],
                         dtype=tdtype if tdtype in ("int64", "int32", "bool") else dtype)
    kwargs = _kwargs(harness, call)
    try:
        loss, grad, shape, out_dtype = harness.call(mode, fn, x, t, kwargs, call["cotangent"])
    except Exception as exc:  # noqa: BLE001 - a valid call must not raise
        from ._harness import NotRun
        if isinstance(exc, NotRun):
            raise
        raise Mismatch(_report(harness, mode, call, [f"raised {type(exc).__name__}: {exc}"]))
    if mode == "oracle":
        want, want_grad, elements, scale, unchecked = _oracle(call)
    else:
        held_t = (np.asarray(call["targets"], dtype=tdtype) if tdtype in ("int64", "int32",
                                                                          "bool")
                  else harness.values(t))
        want, want_grad, elements, scale, unchecked = expected(
            call, harness.values(x), held_t,
            flushes=getattr(harness, "flushes_subnormals", False))
    problems = []
    want_shape = tuple(np.shape(elements)) if call["kwargs"]["reduction"] == "none" else ()
    if tuple(shape) != want_shape:
        problems.append(f"loss has shape {tuple(shape)}, expected {want_shape}")
    result_dtype = "float64" if mode == "oracle" else dtype
    if out_dtype != result_dtype:
        problems.append(f"loss has dtype {out_dtype}, expected {result_dtype}")
    rtol_dtype = dtype
    if mode == "full_graph" and dtype == "float64":
        rtol_dtype = "float32"  # (a static program's number constants are float32)
    rtol, atol, tiny = tolerances.tolerance(rtol_dtype)
    atol = atol * abs(scale) + tiny
    loss_skip = grad_skip = None
    if unchecked is not None:
        loss_skip, grad_skip = unchecked
    # where a logit is not finite, any non-number will do where the reference gives one;
    # and an ignored or zero-weighted element's loss may be 0 or NaN
    x_bad = ~np.isfinite(np.asarray(call["logits"], np.float64)).reshape(call["shape"])
    axis = call["kwargs"]["axis"] % len(call["shape"]) if fn == SOFTMAX else None
    per_loss = x_bad.any(axis=axis) if fn == SOFTMAX else x_bad
    free = per_loss & _dont_care(call)
    none = call["kwargs"]["reduction"] == "none"
    loose = per_loss.ravel() if none else np.array([per_loss.any()])
    free = free.ravel() if none else np.array([free.any()])
    loss_skip = free if loss_skip is None else (loss_skip | free)
    problems += _check(loss, want, rtol, atol, dtype, "loss", loss_skip, loose)
    # the gradient where the loss is finite in the compute dtype and the logits are
    # finite (see the module docstring)
    limit = _overflow(tolerances.COMPUTE[dtype])
    bad = ~(np.abs(np.asarray(elements, np.float64)) * scale < limit)
    if fn == SOFTMAX:
        bad = np.broadcast_to(np.expand_dims(bad, axis), call["shape"])
    bad = np.broadcast_to(bad, call["shape"]).ravel() | (
        np.broadcast_to(np.expand_dims(per_loss, axis), call["shape"]) if fn == SOFTMAX
        else x_bad).ravel()
    if np.isnan(want).any() and call["kwargs"]["reduction"] != "none":
        bad = np.ones_like(bad)
    if grad_skip is not None:
        bad = bad | grad_skip
    # (the gradient is computed before the upstream gradient multiplies it: one beyond the
    # compute dtype's range there is infinite, even where the product would fit)
    with np.errstate(invalid="ignore"):
        bad = bad | (np.abs(want_grad / call["cotangent"]) >= limit)
    # (a NaN gradient where the loss is finite is a defect, also in the reference)
    problems += _check(grad, want_grad, rtol, atol * abs(call["cotangent"]), dtype,
                       "grad", bad)
    if problems:
        raise Mismatch(_report(harness, mode, call, problems))


def _dont_care(call):
    """The loss elements (samples for the softmax loss) that add nothing: ignored, or
    weighted 0. With a non-finite logit their loss is 0 or NaN (0 times infinity), as a
    compiler simplifies it or not."""
    shape = tuple(call["shape"])
    t = np.asarray(call["targets"], np.float64).reshape(call["targets_shape"])
    ignore = call["kwargs"].get("ignore_index", -100 if call["fn"] == SOFTMAX else None)
    if call["fn"] == SOFTMAX:
        out_shape = shape[:call["kwargs"]["axis"] % len(shape)] + \
            shape[call["kwargs"]["axis"] % len(shape) + 1:]
        if t.shape == shape or ignore is None:
            return np.zeros(out_shape, bool)
        return t == ignore
    out = np.zeros(shape, bool)
    if ignore is not None:
        out = out | np.broadcast_to(t == ignore, shape)
    w = call["arrays"].get("weight")
    if w is not None:
        out = out | np.broadcast_to(np.asarray(w["values"]).reshape(w["shape"]) == 0, shape)
    return out


def _oracle(call):
    """The mpmath oracle's loss and gradient (and its element losses) for a float64 call."""
    from . import oracle
    case = {"fn": call["fn"], "logits": call["logits"], "shape": call["shape"],
            "targets": call["targets"], "targets_shape": call["targets_shape"],
            "kwargs": dict(call["kwargs"])}
    for name, spec in call["arrays"].items():
        case["kwargs"][name] = np.asarray(spec["values"]).reshape(spec["shape"]).tolist()
    loss, grad, scale = oracle.evaluate(case)
    none = dict(case, kwargs=dict(case["kwargs"], reduction="none", normalizer=None))
    elements = np.asarray([float(v) for v in oracle.evaluate(none)[0]], np.float64)
    if call["fn"] == SOFTMAX:
        shape = list(call["shape"])
        del shape[call["kwargs"]["axis"] % len(shape)]
    else:
        shape = call["shape"]
    return (np.asarray([float(v) for v in loss], np.float64),
            np.asarray([math.nan if v is None else call["cotangent"] * float(v)
                        for v in grad], np.float64),
            elements.reshape(shape), float(scale), None)


# ---------------------------------------------------------------------------
# Reproducers
# ---------------------------------------------------------------------------

def reproducer(backend: str, mode: str, call) -> str:
    """Python code that makes the call with the backend's public API (in eager mode; the
    mode's own wrapper is named in a comment), then replays it exactly as the fuzzer did."""
    from . import _harness

    harness = _harness.harness_class(backend)
    imports, make = harness.repro_imports, harness.repro_make
    dtype = call["dtype"]

    def arr(values, shape, dt):
        a = np.asarray(values, dtype=np.float64 if dt not in ("int64", "int32", "bool")
                       else dt).reshape(shape)
        text = np.array2string(a, separator=", ", threshold=10 ** 6, floatmode="unique")
        if dt in ("int64", "int32", "bool"):
            return f"{make}(np.array({text}, dtype='{dt}'))"
        return harness.repro_float.format(a=f"np.array({text})", dt=dt)

    lines = ["import json", "import numpy as np", imports, "nan, inf = np.nan, np.inf",
             f"x = {arr(call['logits'], call['shape'], dtype)}",
             f"t = {arr(call['targets'], call['targets_shape'], call['targets_dtype'])}"]
    kw = {**call["kwargs"]}
    args = [f"{k}={v!r}" for k, v in kw.items()]
    for name, spec in call["arrays"].items():
        a = np.asarray(spec["values"], dtype=np.float64).reshape(spec["shape"])
        if spec["form"] == "list":
            args.append(f"{name}={a.tolist()!r}")
        elif spec["form"] == "numpy" or backend == "numpy":
            args.append(f"{name}=np.array({a.tolist()!r})")
        else:
            args.append(f"{name}={make}(np.array({a.tolist()!r}))")
    lines.append(f"loss = fx.{call['fn']}(x, t, {', '.join(args)})  # mode: {mode}")
    lines += ["print(loss)", "",
              "# the same call as the fuzzer made it, compared with the reference:",
              "from focalx.conformance import fuzz",
              f"print(fuzz.replay({backend!r}, {mode!r}, json.loads({json.dumps(call)!r})))"]
    return "\n".join(lines)


def _report(harness, mode, call, problems) -> str:
    head = f"{harness.name} ({mode}) disagrees with the float64 reference:"
    shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
    return "\n".join([head] + ["  " + p for p in shown] + ["reproducer:", "```python",
                                                            reproducer(harness.name, mode,
                                                                       call), "```"])


def replay(backend: str, mode: str, call) -> str:
    """Run one recorded call again (see :func:`reproducer`): "ok", or the disagreement."""
    from . import _harness
    try:
        check_call(_harness.create(backend), mode, call)
    except Mismatch as exc:
        return str(exc)
    return "ok"


# ---------------------------------------------------------------------------
# Running many
# ---------------------------------------------------------------------------

def split(examples: int, modes) -> dict:
    """Examples per mode, by MODE_WEIGHTS, at least 1 each."""
    total = sum(MODE_WEIGHTS[m] for m in modes)
    return {m: max(1, round(examples * MODE_WEIGHTS[m] / total)) for m in modes}


def run_mode(harness, mode: str, examples: int, *, seed=None) -> dict:
    """`examples` random calls in one mode: {"mode", "examples" (checked), "not_run"
    (calls the mode did not take its own path for), "seconds", "failure" (the shrunk
    reproducer, or None)}."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from ._harness import NotRun
    counts = {"examples": 0, "not_run": 0}

    @settings(max_examples=examples, deadline=None, database=None, print_blob=False,
              derandomize=seed is None, suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @given(call=strategy(harness.name, mode))
    def body(call):
        try:
            check_call(harness, mode, call)
        except NotRun:
            counts["not_run"] += 1
            return
        counts["examples"] += 1

    if seed is not None:
        body = hseed(seed)(body)
    t0 = time.perf_counter()
    failure = None
    try:
        body()
    except Mismatch as exc:
        failure = str(exc)
    return {"mode": mode, **counts, "seconds": round(time.perf_counter() - t0, 1),
            "failure": failure}


def run_backend(name: str, examples: int, *, seed=None, modes=None) -> dict:
    """Every mode of one backend (in this process): the fuzz worker's job."""
    from . import _harness
    harness = _harness.create(name)
    chosen = [m for m in harness.modes if modes is None or m in modes]
    runs = []
    for i, (m, n) in enumerate(split(examples, chosen).items()):
        progress(i, len(chosen), m)
        runs.append(run_mode(harness, m, n, seed=seed))
    return {"backend": name, "version": harness.version, "runs": runs}


def format_report(reports) -> str:
    lines = ["| backend | mode | examples checked | not run in the mode | seconds | result |",
             "|---|---|---|---|---|---|"]
    failures = []
    for rep in reports:
        if "crashed" in rep:
            lines.append(f"| {rep['backend']} | - | - | - | - | CRASHED: {rep['crashed']} |")
            continue
        for run in rep["runs"]:
            lines.append(f"| {rep['backend']} | {run['mode']} | {run['examples']} | "
                         f"{run['not_run']} | {run['seconds']} | "
                         f"{'FAILED' if run['failure'] else 'passed'} |")
            if run["failure"]:
                failures.append(run["failure"])
    return "\n".join(lines + [""] + failures)
