"""Classifying a disagreement: the spec (NumPy reference, float64) recomputed under each
other convention the survey found; the kind is the convention whose values the function
matches. Nothing here knows which library is being checked."""

from __future__ import annotations

from dataclasses import replace as _replace

import numpy as np

from focalx import _numpy, _spec
from focalx.conformance import runner, tolerances

from ._signature import one_hot

CAP = 1e-7  # Keras' probability clip (its epsilon), also focal-loss (TF)'s


def _match(got, want, rtol, atol) -> bool:
    if got is None or want is None:
        return True
    if np.shape(got) != np.shape(want):
        return False
    err = runner._errors(np.ravel(got).astype(np.float64), np.ravel(want).astype(np.float64),
                         rtol, atol)
    return not err.size or float(err.max()) <= 1.0


def _close(got, want, loose) -> bool:
    """Within 1e-3 relative or `loose` absolute (NaN in `want`: not compared): a probe's
    convention differs by far more, a function's rounding (float32, cancellation) by less."""
    if got is None or want is None:
        return True
    if np.shape(got) != np.shape(want):
        return False
    g, w = np.ravel(got).astype(np.float64), np.ravel(want).astype(np.float64)
    keep = ~np.isnan(w)
    g, w = g[keep], w[keep]
    same_inf = np.isinf(w) & (g == w)
    fin = ~np.isinf(w)
    with np.errstate(invalid="ignore"):
        ok = np.abs(g[fin] - w[fin]) <= 1e-3 * np.abs(w[fin]) + loose
    return bool(ok.all()) and bool((same_inf | fin).all())


def _worst(got, want, rtol, atol, what) -> str:
    g, w = np.ravel(got).astype(np.float64), np.ravel(want).astype(np.float64)
    idx = np.flatnonzero(~np.isnan(w))
    err = runner._errors(g, w, rtol, atol)
    if not err.size:
        return ""
    i = int(idx[int(np.argmax(err))])
    return f"{what}[{i}] = {g[i]:.6g}, spec {w[i]:.6g}"


def _ref(variant, x, y, kw, grad=True):
    fn = getattr(_numpy, variant + "_and_grad")
    loss, g = fn(x, y, **kw)
    return loss, (g if grad else None)


def _softmax(x, axis):
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _capped(case, kw, dtype):
    """The spec on probabilities clipped to [CAP, 1 - CAP] (the loss only), computed from
    the logits in `dtype` as a function working in it gets them (float32's sigmoid
    1 / (1 + exp(-x)) rounds 1 + 1.9e-7 to 1 + 2.4e-7, so the log near 16 moves too)."""
    x = case.x.astype(np.float32) if dtype == "float32" else case.x
    with np.errstate(over="ignore", under="ignore"):
        if case.variant == "softmax_focal_loss":
            p = _softmax(x, kw["axis"])
        elif case.variant == "sigmoid_focal_loss":
            p = x.dtype.type(1) / (x.dtype.type(1) + np.exp(-x))
        else:
            return None
    p = np.clip(p, x.dtype.type(CAP), x.dtype.type(1) - x.dtype.type(CAP)).astype(np.float64)
    return _ref(case.variant, p, case.y, {**kw, "from_logits": False}, grad=False)


def _alpha_probes(case, alpha_off):
    kw, v, y = case.kwargs, case.variant, case.y
    a = kw.get("alpha")
    hard = y.dtype.kind in "iu" or bool(np.all((y == 0) | (y == 1)))
    if a is not None:
        yield "alpha-ignored", "alpha=None", {"alpha": None}
        if v != "softmax_focal_loss":
            yield "alpha-reversed", "alpha=1 - alpha", {
                "alpha": (1 - np.asarray(a, np.float64)).tolist()}
            if kw.get("weight") is None and hard and y.shape == case.x.shape:
                w = np.where(y == 1, np.broadcast_to(np.asarray(a, np.float64), y.shape), 1.0)
                yield ("alpha-positives", "alpha=None, weight=where(targets == 1, alpha, 1)",
                       {"alpha": None, "weight": w})
        elif np.ndim(a) == 0:
            c = case.x.shape[kw["axis"]]
            yield ("alpha-background", "alpha=[1 - alpha, alpha, ..., alpha]",
                   {"alpha": [1 - a] + [a] * (c - 1)})
    elif v != "softmax_focal_loss" and isinstance(alpha_off, (int, float)) and hard \
            and kw.get("weight") is None and y.shape == case.x.shape:
        w = np.where(y == 1, float(alpha_off), 1.0 - float(alpha_off))
        hint = f"alpha=None (the function has no 'off' value: {alpha_off!r} is used as alpha)"
        yield "alpha-off", hint, {"alpha": None, "_times": w}


def _keyword_probes(case):
    kw, v = case.kwargs, case.variant
    d = _spec.DEFAULTS[v]
    for k in ("label_smoothing", "pos_weight", "weight", "normalizer", "epsilon"):
        if k in kw and kw[k] is not None and kw[k] != d.get(k) and \
                not (k == "normalizer" and kw["reduction"] == "none"):
            yield "keyword-ignored", f"{k}={d.get(k)!r} ({k} has no effect)", {k: d.get(k)}
    if v == "sigmoid_focal_loss_star" and kw.get("beta", 0.0) != 0.0:
        yield "beta", "beta=0.0", {"beta": 0.0}


def _divisors(case):
    """(name, value, counts ignored elements) of each count a 'mean' may divide by."""
    x, y, kw = case.x, case.y, case.kwargs
    softmax = case.variant == "softmax_focal_loss"
    c = x.shape[kw["axis"]] if softmax and x.ndim else 1
    ign = kw.get("ignore_index")
    ignored = int(np.sum(y == ign)) if ign is not None else 0
    samples = x.size // max(c, 1)
    out = [("logits.numel()", x.size, ignored > 0), ("logits.shape[0]", x.shape[0] if x.ndim
                                                     else 1, ignored > 0)]
    if softmax:
        out += [("the number of samples", samples, ignored > 0),
                ("the number of classes", c, False)]
        out += [("the number of valid samples", samples - ignored, False)]
    else:
        out += [("the number of valid elements", y.size - ignored, False),
                ("the number of positives", int(np.sum(y == 1)), False),
                ("logits.shape[-1]", x.shape[-1] if x.ndim else 1, False)]
    return [(n, d, i) for n, d, i in out if d > 0]


def _mix(case, kw):
    """Soft targets as a mixture of the two hard losses: t FL(x, 1) + (1 - t) FL(x, 0)."""
    x, t = case.x, case.y
    if kw["reduction"] == "mean" and (kw.get("ignore_index") is not None
                                      or kw.get("weight") is not None):
        return None
    none = {**kw, "reduction": "none", "normalizer": None}
    l1, g1 = _ref(case.variant, x, np.ones_like(t), none)
    l0, g0 = _ref(case.variant, x, np.zeros_like(t), none)
    loss, grad = t * l1 + (1 - t) * l0, t * g1 + (1 - t) * g0
    if kw["reduction"] == "none":
        return loss, grad
    div = (kw.get("normalizer") or 1.0) if kw["reduction"] == "sum" else loss.size
    return np.asarray(loss.sum() / div), grad / div


def classify(case, loss, grad, dtype, *, alpha_off=None, class_axis=-1, found=None):
    """(kinds, detail, the focalx call that agrees or None); no kinds: the case agrees.
    `found` (a dict), when given, gets "mapping": the focalx keyword arguments changed in
    that call (``{}``: focalx as it is), where the agreeing call is focalx's function."""
    found = {} if found is None else found
    rtol, atol, tiny = tolerances.tolerance(dtype)
    atol = atol * abs(case.scale) + tiny
    want_l, want_g = case.loss, case.grad
    kinds = []
    if loss.shape != want_l.shape:
        if loss.size == want_l.size:
            ok = _match(loss.reshape(want_l.shape), want_l, rtol, atol)
            return ["shape"], (f"loss has shape {loss.shape}, spec {want_l.shape}"
                               f"{' (values agree)' if ok else ''}"), None
        axes = [ax for ax in range(loss.ndim) if tuple(np.delete(loss.shape, ax)) == want_l.shape]
        if loss.ndim and class_axis % loss.ndim in axes:
            axes = [class_axis % loss.ndim]
        reverse = [ax for ax in range(want_l.ndim)
                   if tuple(np.delete(want_l.shape, ax)) == loss.shape]
        if want_l.ndim and class_axis % want_l.ndim in reverse:
            reverse = [class_axis % want_l.ndim]
        if not axes and reverse:
            # the classes reduced where the spec keeps them: compare with the spec's sum or
            # mean over them (whichever is nearer), and go on with that as the spec
            ax = reverse[0]
            c = want_l.shape[ax]
            with np.errstate(invalid="ignore"):
                s_err = np.nansum(np.abs(want_l.sum(axis=ax) - loss))
                m_err = np.nansum(np.abs(want_l.sum(axis=ax) / c - loss))
            div = 1 if s_err <= m_err else c
            want_l, want_g = want_l.sum(axis=ax) / div, want_g / div
            kinds.append("class-axis")
            note = f"the spec's {'sum' if div == 1 else 'mean'} over axis {ax}"
            case = _replace(case, loss=want_l, grad=want_g)
            if _match(loss, want_l, rtol, atol) and _match(grad, want_g, rtol, atol):
                return kinds, f"loss has shape {loss.shape}: {note}", None
        elif not axes:
            return ["shape"], f"loss has shape {loss.shape}, spec {want_l.shape}", None
        else:
            # per-class values where the spec sums over the classes: compare their sum
            kinds.append("class-axis")
            loss = loss.sum(axis=axes[0])
    if grad is not None and grad.shape != want_g.shape:
        grad = None
    if _match(loss, want_l, rtol, atol) and _match(grad, want_g, rtol, atol):
        return kinds, ("its per-class values' sum agrees" if kinds else ""), None
    detail = (_worst(loss, want_l, rtol, atol, "loss") if not _match(loss, want_l, rtol, atol)
              else _worst(grad, want_g, rtol, atol, "grad"))
    want_l, want_g = want_l.copy(), want_g.copy()
    nan_l = np.isnan(loss) & np.isfinite(want_l)
    if nan_l.any():
        kinds.append("nan-loss")
        want_l[nan_l] = np.nan
    if grad is not None:
        nan_g = np.isnan(grad) & np.isfinite(want_g)
        if nan_g.any():
            kinds.append("nan-gradient")
            want_g[nan_g] = np.nan
    else:
        nan_g = None
    nans = bool(nan_l.any() or (nan_g is not None and nan_g.any()))
    if nans and _match(loss, want_l, rtol, atol) and _match(grad, want_g, rtol, atol):
        found["mapping"] = {}
        return kinds, detail, f"focalx.{case.variant}(...), finite here"

    # rounding allowance: 8 epsilons of the inputs' magnitude (a cancelling log1p(exp(-|x|)))
    loose = 8 * tolerances.EPS[dtype] * (1 + float(np.abs(case.x).max(initial=0))) \
        * abs(case.scale)

    def agrees(alt, with_grad=True):
        if alt is None:
            return False
        al, ag = alt
        al = np.asarray(al, np.float64).reshape(np.shape(loss)) if np.size(al) == loss.size \
            else al
        if nan_l.any():
            al = np.where(nan_l, np.nan, al)
        if not _close(loss, al, loose):
            return False
        if not with_grad or grad is None or ag is None:
            return True
        ag = np.where(nan_g, np.nan, ag) if nan_g is not None else ag
        return _close(grad, ag, loose)

    if agrees((want_l, want_g)):
        return kinds + ["precision"], detail, None
    if agrees((want_l, None)):  # the loss agrees, the gradient does not (and is not NaN)
        return kinds + ["gradient"], detail, None
    kw, v = case.kwargs, case.variant
    fl = kw.get("from_logits", True)
    may_cap = fl and v != "sigmoid_focal_loss_star"
    probes = [("", "", {})] + list(_alpha_probes(case, alpha_off)) \
        + list(_keyword_probes(case))
    for kind, hint, changes in probes:
        new = {**kw, **changes}
        for cap in ((False, True) if may_cap else (False,)):
            if not kind and not cap:
                continue
            times = new.pop("_times", None)
            if times is not None and (cap or kw["reduction"] != "none"):
                continue
            try:
                alt = _capped(case, new, dtype) if cap else _ref(v, case.x, case.y, new)
            except (ValueError, TypeError):
                continue
            if times is not None:  # a factor focalx's weight cannot take (negative)
                alt = (alt[0] * times, alt[1] * times)
                changes, hint = None, ""
            if agrees(alt, with_grad=not cap):
                if not cap and changes is not None:
                    found["mapping"] = changes
                found = kinds + [k for k in (kind, "cap" if cap else "") if k]
                what = ", ".join(h for h in (hint, "probabilities clipped to [1e-7, 1 - 1e-7]"
                                             if cap else "") if h)
                return found, detail, f"focalx.{v}(..., {what})" if hint else \
                    (f"focalx.{v} on clip(probabilities, 1e-7, 1 - 1e-7) with "
                     "from_logits=False" if cap else None)
    if case.id.startswith("sigmoid-index/") and case.y.dtype.kind in "iu":
        # index targets read with class 0 as the background (mmdet 1.x): label k is class
        # k - 1, label 0 no class
        c = case.x.shape[class_axis]
        shifted = one_hot(case.y - 1, c, class_axis)
        try:
            alt = _ref(v, case.x, shifted, kw)
        except (ValueError, TypeError):
            alt = None
        if agrees(alt):
            return kinds + ["background"], detail, None
    if kw["reduction"] == "mean" and kw.get("normalizer") is None and loss.ndim == 0:
        try:
            total, gtotal = _ref(v, case.x, case.y, {**kw, "reduction": "sum"})
        except (ValueError, TypeError):
            total = None
        if total is not None:
            for name, d, counts_ignored in _divisors(case):
                if agrees((total / d, gtotal / d)):
                    found["mapping"] = {"reduction": "sum", "normalizer": float(d)}
                    kind = "ignore-mean" if counts_ignored else "mean-divisor"
                    return kinds + [kind], detail, (
                        f'focalx.{v}(..., reduction="sum", normalizer={name})')
    soft = v != "softmax_focal_loss" and case.y.dtype.kind == "f" and \
        case.y.shape == case.x.shape and bool(np.any((case.y > 0) & (case.y < 1)))
    if soft:
        if agrees(_mix(case, kw)):
            return kinds + ["soft-targets"], detail, (
                f"t * focalx.{v}(x, ones_like(t), ...) + (1 - t) * focalx.{v}(x, zeros_like(t),"
                " ...) (a mixture of the hard losses)")
        if kw["reduction"] == "none" and loss.shape == want_l.shape:
            hard = (case.y == 0) | (case.y == 1)
            if hard.any() and _close(np.where(hard, loss, np.nan), np.where(hard, want_l, np.nan), loose):
                return kinds + ["soft-targets"], detail, None
    ign = kw.get("ignore_index")
    if ign is not None and kw["reduction"] == "none" and np.any(case.y == ign) and \
            loss.shape == case.y.shape:
        keep = case.y != ign
        if _close(np.where(keep, loss, np.nan), np.where(keep, want_l, np.nan), loose):
            return kinds + ["ignore"], detail, None
    return kinds + ["other"], detail, None
