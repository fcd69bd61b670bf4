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


class ArrayModuleOps:
    """:class:`focalx._spec.Ops` for a NumPy-like array module ``xp`` (NumPy, jax.numpy).

    A subclass sets ``xp`` and supplies what differs between array libraries:
    log_softmax, scatter, asarray, kind, as_index, assert_values, tracing,
    concrete_range.
    """

    xp = np

    def exp(self, a):
        return self.xp.exp(a)

    def expm1(self, a):
        return self.xp.expm1(a)

    def log(self, a):
        return self.xp.log(a)

    def log1p(self, a):
        return self.xp.log1p(a)

    def abs(self, a):
        return self.xp.abs(a)

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def full_like(self, a, value):
        return self.xp.full_like(a, value)

    def broadcast_like(self, a, like):
        return self.xp.broadcast_to(a, like.shape)

    def count(self, a):
        return self.xp.asarray(a.size, dtype=a.dtype)

    def expand_dims(self, a, axis):
        return self.xp.expand_dims(a, axis)

    def squeeze(self, a, axis):
        return self.xp.squeeze(a, axis=axis)

    def maximum0(self, a):
        return self.xp.maximum(a, 0.0)

    def minimum0(self, a):
        return self.xp.minimum(a, 0.0)

    def sum(self, a, axis=None, keepdims=False):
        return self.xp.sum(a, axis=axis, keepdims=keepdims)

    def take(self, a, index, axis):
        return self.xp.take_along_axis(a, index, axis=axis)

    def one_hot(self, index, num_classes, axis, like):
        shape = [1] * index.ndim
        shape[axis] = num_classes
        return (self.xp.arange(num_classes).reshape(shape) == index).astype(like.dtype)

    def shape(self, a):
        return tuple(a.shape)

    def as_float(self, a, like):
        return self.xp.asarray(a).astype(like.dtype)

    def as_mask(self, keep, like):
        return keep.astype(like.dtype)

    def class_view(self, v, ndim, axis):
        shape = [1] * ndim
        shape[axis] = -1
        return self.xp.reshape(v, shape)

    def gather_classes(self, v, idx):
        return self.xp.take(v, idx, axis=0)

    def matmul(self, a, b, transpose_a, transpose_b):
        return self.xp.matmul(a.T if transpose_a else a, b.T if transpose_b else b)

    def concat(self, arrays, axis):
        return self.xp.concatenate(arrays, axis=axis)


class NumpyOps(ArrayModuleOps):
    """:class:`focalx._spec.Ops` for NumPy, in float64."""

    xp = np
    kind = staticmethod(_kind)

    @staticmethod
    def log_softmax(a, axis):
        # lse = m + log1p(sum of exp(a - m) over all but one maximal entry): no
        # rounding of log(1 + tiny) for a dominant class.
        # (+ (m - m): NaN for a sample with an infinite largest logit, as every backend's
        # log-softmax gives, where zeroing the largest entry's exp would hide it)
        m = np.max(a, axis=axis, keepdims=True)
        e = np.exp(a - m)
        np.put_along_axis(e, np.argmax(a, axis=axis, keepdims=True), 0.0, axis=axis)
        return (a - m) - np.log1p(np.sum(e, axis=axis, keepdims=True)) + (m - m)

    @staticmethod
    def scatter(a, index, values, axis):
        out = np.array(a, copy=True)
        np.put_along_axis(out, index, values, axis)
        return out

    @staticmethod
    def asarray(v, name, like):
        if _foreign(v):
            raise TypeError(f"{name} must be a number, a sequence or a numpy array, got "
                            f"{type(v).__module__}.{type(v).__name__}")
        return _spec.host_array(v, name).astype(_F64)

    @staticmethod
    def as_index(a):
        return np.asarray(a).astype(np.int64)

    @staticmethod
    def assert_values(a, cond, message):
        if not np.all(cond(a)):
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


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

def _quality_run(logits, targets, need_grad, kw):
    labels, scores = _spec.split_quality_targets(targets)
    if labels is not None:
        kw = dict(kw, labels=_targets(labels))
    return _run(_spec.run_quality_focal_loss, logits, scores, need_grad, kw)


def quality_focal_loss_and_grad(logits, targets, **kw):
    """(loss, d loss / d logits) of :func:`focalx.quality_focal_loss` in float64."""
    return _quality_run(logits, targets, True, _kwargs("quality_focal_loss", kw))


def quality_focal_loss(logits, targets, **kw):
    return _quality_run(logits, targets, False, _kwargs("quality_focal_loss", kw))[0]


def varifocal_loss_and_grad(logits, targets, **kw):
    """(loss, d loss / d logits) of :func:`focalx.varifocal_loss` in float64."""
    return _run(_spec.run_varifocal_loss, logits, targets, True, _kwargs("varifocal_loss", kw))


def varifocal_loss(logits, targets, **kw):
    return _run(_spec.run_varifocal_loss, logits, targets, False,
                _kwargs("varifocal_loss", kw))[0]


def distribution_focal_loss_and_grad(logits, targets, *, axis=-1, **kw):
    """(loss, d loss / d logits) of :func:`focalx.distribution_focal_loss` in float64."""
    return _run(_spec.run_distribution_focal_loss, logits, targets, True,
                dict(_kwargs("distribution_focal_loss", kw), axis=axis))


def distribution_focal_loss(logits, targets, *, axis=-1, **kw):
    return _run(_spec.run_distribution_focal_loss, logits, targets, False,
                dict(_kwargs("distribution_focal_loss", kw), axis=axis))[0]


def asymmetric_loss_and_grad(logits, targets, **kw):
    """(loss, d loss / d logits) of :func:`focalx.asymmetric_loss` in float64."""
    return _run(_spec.run_asymmetric_loss, logits, targets, True,
                _kwargs("asymmetric_loss", kw))


def asymmetric_loss(logits, targets, **kw):
    return _run(_spec.run_asymmetric_loss, logits, targets, False,
                _kwargs("asymmetric_loss", kw))[0]


def asymmetric_softmax_loss_and_grad(logits, targets, *, axis=-1, **kw):
    """(loss, d loss / d logits) of :func:`focalx.asymmetric_softmax_loss` in float64."""
    return _run(_spec.run_asymmetric_softmax_loss, logits, targets, True,
                dict(_kwargs("asymmetric_softmax_loss", kw), axis=axis))


def asymmetric_softmax_loss(logits, targets, *, axis=-1, **kw):
    return _run(_spec.run_asymmetric_softmax_loss, logits, targets, False,
                dict(_kwargs("asymmetric_softmax_loss", kw), axis=axis))[0]


# ---- the fused linear + softmax focal loss (issue 19) -----------------------------------

def _linear_run(hidden, linear_weight, targets, need_grad, kw):
    arrays = {"hidden": hidden, "linear_weight": linear_weight,
              "linear_bias": kw.pop("linear_bias", None)}
    for name, v in arrays.items():
        if _foreign(v):
            raise TypeError(f"{name} must be a numpy array for the NumPy reference, got "
                            f"{type(v).__module__}.{type(v).__name__}")
        if v is not None:
            _spec.check_logits_dtype(_kind(v), name)
    h, w, b = (None if v is None else np.asarray(v).astype(_F64) for v in arrays.values())
    y = _targets(targets)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        out, grads = _spec.run_linear_softmax_focal_loss(
            OPS, h, w, y, linear_bias=b, need_grad=need_grad, **kw)
    return np.asarray(out, dtype=_F64), grads


def linear_softmax_focal_loss_and_grad(hidden, linear_weight, targets, **kw):
    """(loss, (d hidden, d linear_weight, d linear_bias or None)) of
    :func:`focalx.linear_softmax_focal_loss` in float64."""
    return _linear_run(hidden, linear_weight, targets, True,
                       _kwargs("linear_softmax_focal_loss", kw))


def linear_softmax_focal_loss(hidden, linear_weight, targets, **kw):
    return _linear_run(hidden, linear_weight, targets, False,
                       _kwargs("linear_softmax_focal_loss", kw))[0]
