"""The float64 NumPy reference: the spec's formulas bound to NumPy.

Every function computes in float64 whatever the input dtype and returns float64
arrays (0-d for "sum"/"mean"). It needs no framework and is what the backends
are tested against. ``*_and_grad`` variants also return the derivative of the
result (summed over its elements for ``reduction="none"``) w.r.t. the logits.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _spec

_F64 = np.float64


def _kind(a) -> str:
    k = np.asarray(a).dtype.kind
    return {"f": "floating", "i": "integer", "u": "integer", "b": "bool", "c": "complex"}.get(
        k, np.asarray(a).dtype.name)


def _foreign(v) -> bool:
    """True for array objects of another framework (torch, jax, tf, paddle, ...)."""
    if isinstance(v, (np.ndarray, np.generic, numbers.Number, list, tuple)):
        return False
    return hasattr(v, "shape") and hasattr(v, "dtype")


class NumpyOps:
    """:class:`focalx._spec.Ops` for NumPy, in float64."""

    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    abs = staticmethod(np.abs)
    where = staticmethod(np.where)
    broadcast_to = staticmethod(np.broadcast_to)
    expand_dims = staticmethod(np.expand_dims)

    @staticmethod
    def maximum0(a):
        return np.maximum(a, 0.0)

    @staticmethod
    def minimum0(a):
        return np.minimum(a, 0.0)

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        return np.sum(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def log_softmax(a, axis):
        # lse = m + log1p(sum of exp(a - m) over all but one maximal entry): no
        # rounding of log(1 + tiny) for a dominant class.
        m = np.max(a, axis=axis, keepdims=True)
        e = np.exp(a - m)
        np.put_along_axis(e, np.argmax(a, axis=axis, keepdims=True), 0.0, axis=axis)
        return (a - m) - np.log1p(np.sum(e, axis=axis, keepdims=True))

    @staticmethod
    def take(a, index, axis):
        return np.take_along_axis(a, index, axis=axis)

    @staticmethod
    def scatter(a, index, values, axis):
        out = np.array(a, copy=True)
        np.put_along_axis(out, index, values, axis)
        return out

    @staticmethod
    def one_hot(index, num_classes, axis, like):
        shape = [1] * index.ndim
        shape[axis] = num_classes
        return (np.arange(num_classes).reshape(shape) == index).astype(_F64)

    @staticmethod
    def full_like(a, value):
        return np.full_like(a, value)

    @staticmethod
    def shape(a):
        return tuple(np.shape(a))

    kind = staticmethod(_kind)

    @staticmethod
    def asarray(v, name, like):
        if _foreign(v):
            raise TypeError(f"{name} must be a number, a sequence or a numpy array, got "
                            f"{type(v).__module__}.{type(v).__name__}")
        arr = np.asarray(v)
        if _kind(arr) not in ("floating", "integer", "bool"):
            raise TypeError(f"{name} must be real, got {_kind(arr)} dtype")
        return arr.astype(_F64)

    @staticmethod
    def as_float(a, like):
        return np.asarray(a).astype(_F64)

    @staticmethod
    def as_index(a):
        return np.asarray(a).astype(np.int64)

    @staticmethod
    def as_mask(keep, like):
        return keep.astype(_F64)

    @staticmethod
    def assert_all(cond, message):
        if not np.all(cond):
            raise ValueError(message)

    @staticmethod
    def tracing():
        return False

    @staticmethod
    def concrete_range(a):
        a = np.asarray(a)
        if a.size == 0:
            return None
        return float(np.min(a)), float(np.max(a))

    @staticmethod
    def squeeze(a, axis):
        return np.squeeze(a, axis=axis)

    @staticmethod
    def class_view(v, ndim, axis):
        shape = [1] * ndim
        shape[axis] = -1
        return np.reshape(v, shape)

    @staticmethod
    def gather_classes(v, idx):
        return np.asarray(v)[idx]


OPS = NumpyOps()


def _logits(logits):
    if _foreign(logits):
        raise TypeError("logits must be a numpy array for the NumPy reference, got "
                        f"{type(logits).__module__}.{type(logits).__name__}")
    x = np.asarray(logits)
    _spec.check_logits_dtype(_kind(x))
    return x.astype(_F64)


def _targets(targets):
    if _foreign(targets):
        raise TypeError("targets must be a numpy array (the same framework as logits), got "
                        f"{type(targets).__module__}.{type(targets).__name__}")
    return np.asarray(targets)


def _run(fn, logits, targets, need_grad, kw):
    x, y = _logits(logits), _targets(targets)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        out, grad = fn(OPS, x, y, need_grad=need_grad, **kw)
    out = np.asarray(out, dtype=_F64)
    if need_grad:
        grad = np.broadcast_to(np.asarray(grad, dtype=_F64), x.shape).copy()
    return out, grad


def _kwargs(name, given):
    kw = dict(_spec.DEFAULTS[name])
    kw.update(given)
    return kw


def sigmoid_focal_loss_and_grad(logits, targets, **kw):
    """(loss, d loss / d logits) of :func:`focalx.sigmoid_focal_loss` in float64."""
    return _run(_spec.run_sigmoid_focal_loss, logits, targets, True,
                _kwargs("sigmoid_focal_loss", kw))


def softmax_focal_loss_and_grad(logits, targets, *, axis=-1, **kw):
    """(loss, d loss / d logits) of :func:`focalx.softmax_focal_loss` in float64."""
    return _run(_spec.run_softmax_focal_loss, logits, targets, True,
                dict(_kwargs("softmax_focal_loss", kw), axis=axis))


def sigmoid_focal_loss_star_and_grad(logits, targets, **kw):
    """(loss, d loss / d logits) of :func:`focalx.sigmoid_focal_loss_star` in float64."""
    return _run(_spec.run_sigmoid_focal_loss_star, logits, targets, True,
                _kwargs("sigmoid_focal_loss_star", kw))


def sigmoid_focal_loss(logits, targets, **kw):
    return _run(_spec.run_sigmoid_focal_loss, logits, targets, False,
                _kwargs("sigmoid_focal_loss", kw))[0]


def softmax_focal_loss(logits, targets, *, axis=-1, **kw):
    return _run(_spec.run_softmax_focal_loss, logits, targets, False,
                dict(_kwargs("softmax_focal_loss", kw), axis=axis))[0]


def sigmoid_focal_loss_star(logits, targets, **kw):
    return _run(_spec.run_sigmoid_focal_loss_star, logits, targets, False,
                _kwargs("sigmoid_focal_loss_star", kw))[0]
