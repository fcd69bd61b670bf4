"""TensorflowOps: the spec's Ops on tf tensors (eager, in a tf.function and under XLA), and
one run of the spec."""

from __future__ import annotations

import contextlib
import numbers

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record as _record
from tensorflow.python.saved_model import save_context as _save_context

try:  # XLA's optimization barrier (tf2xla's Python wrapper; not in TensorFlow's public API)
    from tensorflow.compiler.tf2xla.python.xla import optimization_barrier as _barrier
except ImportError:  # pragma: no cover - an older or stripped TensorFlow: no fork
    _barrier = None

from ... import _spec


try:  # the base class of tf.Tensor, which Keras 3's variables (keras.Variable) subclass
    from tensorflow.python.types.core import Tensor as _CoreTensor
except ImportError:  # pragma: no cover - an older TensorFlow
    _CoreTensor = tf.Tensor

_TENSORS = (tf.Tensor, tf.Variable, _CoreTensor)


def _kind(a) -> str:
    dt = a.dtype
    if dt == tf.bool:
        return "bool"
    if dt.is_floating:
        return "floating"
    if dt.is_complex:
        return "complex"
    if dt.is_integer:
        return "integer"
    return dt.name


_GPUS = []  # [whether TensorFlow sees a GPU], filled at the first call


def _unrecorded():
    """Eagerly, a context in which no GradientTape records (a loss's own ops, under its
    custom gradient); in a graph, none."""
    return _record.stop_recording() if tf.executing_eagerly() else contextlib.nullcontext()


ONCE = ("focalx losses are differentiable once: their gradient cannot be differentiated "
        "again (a GradientTape recording the backward pass, tf.gradients of a gradient), "
        "and they have no forward-mode derivative (tf.autodiff.ForwardAccumulator)")


def _differentiable_once(grads, inputs):
    """A custom gradient's results, which a second derivative in a graph (nested tapes
    in a tf.function, tf.gradients of tf.gradients) cannot go through: it raises there,
    as it does eagerly. It gave None (nested tapes: the results' own ops were not on an
    outer tape's path from the inputs) or missed terms of the curvature silently (the
    sigmoid loss's tf.gradients twice). `inputs`: the custom gradient's own, joined to
    the results here for that path. Eagerly: as they are."""
    if tf.executing_eagerly():
        return grads
    at = [i for i, g in enumerate(grads) if g is not None]
    if not at:
        return grads

    @tf.custom_gradient
    def once(*args):
        def no_second(*_, **__):
            if _save_context.in_save_context():
                # tf.saved_model.save traces every custom gradient of a function it saves
                # (one that takes a gradient through a loss): no gradient, as before
                return [None] * len(args)
            raise NotImplementedError(ONCE)
        return [tf.identity(g) for g in args[:len(at)]], no_second

    out = list(grads)
    for i, g in zip(at, once(*(grads[i] for i in at), *inputs)):
        out[i] = g
    return out


def _on_host(a) -> bool:
    """Whether `a` is computed on the CPU, where a value check may read a value (eagerly)
    or become an assertion (in a graph) without waiting for an accelerator.

    Its device where it has one (eager tensors, a graph under a device scope or a
    distribution strategy's replica); else (a graph that places nothing itself) whether
    TensorFlow sees no GPU, since the placer then puts the computation on the GPU.
    """
    dev = a.device or ""
    if dev:
        return "CPU" in dev
    if not _GPUS:
        _GPUS.append(bool(tf.config.list_logical_devices("GPU")))
    return not _GPUS[0]


def _readable(a) -> bool:
    """Eager, non-empty and on the CPU: values readable without a device sync."""
    return tf.executing_eagerly() and _on_host(a) and int(tf.size(a)) > 0


def _name(v) -> str:
    return f"{type(v).__module__}.{type(v).__name__}"


class TensorflowOps:
    """:class:`focalx._spec.Ops` for TensorFlow (one instance per call)."""

    exp = staticmethod(tf.math.exp)
    expm1 = staticmethod(tf.math.expm1)
    log = staticmethod(tf.math.log)
    log1p = staticmethod(tf.math.log1p)
    abs = staticmethod(tf.math.abs)
    expand_dims = staticmethod(tf.expand_dims)
    kind = staticmethod(_kind)

    #: The spec's lean sigmoid evaluation (one exp, one log1p, one division per element):
    #: under XLA on CPU the largest of the sigmoid loss's speed-ups (the fork and the
    #: folded checks did the rest).
    lean_sigmoid = True

    def __init__(self, compiled=False, logits=None):
        self.unchecked = []  # (condition, message) for values Python could not read
        # Inside the compiled function: value checks that checked_sum may fold into the
        # loss's sum (see there); `folded` holds the indices in `unchecked` of those it
        # folded; `x_shaped` the tensors that have the logits' run-time shape by
        # construction (the logits, and what broadcast_like and where make of them).
        self.foldable = [] if compiled else None
        self.folded = set()
        self.logits = logits
        self.x_shaped = [] if logits is None else [logits]
        # Inside the compiled function the sigmoid gradient gets its own copy of the
        # terms, behind an optimization barrier (see _fork).
        self.fork = _fork if compiled and _barrier is not None else None

    @staticmethod
    def maximum0(a):
        return tf.maximum(a, tf.zeros((), a.dtype))

    @staticmethod
    def minimum0(a):
        return tf.minimum(a, tf.zeros((), a.dtype))

    @staticmethod
    def full_like(a, value):
        return tf.fill(tf.shape(a), tf.constant(value, a.dtype))

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        return tf.reduce_sum(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def log_softmax(a, axis):
        return tf.nn.log_softmax(a, axis=axis)

    @staticmethod
    def _class_mask(index, num_classes, axis):
        """index == class number along `axis` (index has a size-1 class axis)."""
        shape = [1] * index.shape.rank
        shape[axis] = num_classes
        return tf.equal(tf.reshape(tf.range(num_classes, dtype=index.dtype), shape), index)

    @staticmethod
    def take(a, index, axis):
        mask = TensorflowOps._class_mask(index, a.shape[axis], axis)
        return tf.reduce_sum(tf.where(mask, a, tf.zeros((), a.dtype)), axis=axis,
                             keepdims=True)

    @staticmethod
    def scatter(a, index, values, axis):
        mask = TensorflowOps._class_mask(index, a.shape[axis], axis)
        return tf.where(mask, values, a)

    @staticmethod
    def one_hot(index, num_classes, axis, like):
        return tf.cast(TensorflowOps._class_mask(index, num_classes, axis), like.dtype)

    @staticmethod
    def shape(a):
        if a.shape.rank is None:
            raise ValueError("focalx needs tensors of known rank, got a tensor of unknown "
                             "rank")
        return tuple(a.shape.as_list())

    @staticmethod
    def count(a):
        return tf.cast(tf.size(a), a.dtype)

    @staticmethod
    def asarray(v, name, like):
        if isinstance(v, _TENSORS):
            t = tf.convert_to_tensor(v)
        elif isinstance(v, (np.ndarray, np.generic, numbers.Number, list, tuple)):
            t = tf.constant(_spec.host_array(v, name))
        else:
            raise TypeError(f"{name} must be a number, a sequence or a tf tensor, got "
                            f"{_name(v)}")
        if _kind(t) not in ("floating", "integer", "bool"):
            raise TypeError(f"{name} must be real, got {_kind(t)} dtype")
        return tf.cast(t, like.dtype)

    @staticmethod
    def as_float(a, like):
        return tf.cast(a, like.dtype)

    @staticmethod
    def as_index(a):
        return tf.cast(a, tf.int64)

    @staticmethod
    def as_mask(keep, like):
        return tf.cast(keep, like.dtype)

    def assert_values(self, a, cond, message):
        # A graph (tf.function, XLA) or a device whose values cannot be read without a
        # sync: checked when the graph runs (see _run).
        if self.foldable is not None and a.shape.rank:
            self.foldable.append((a, cond, len(self.unchecked)))
        self.unchecked.append((tf.reduce_all(cond(a)), message))

    def where(self, cond, a, b):
        out = tf.where(cond, a, b)
        if self.x_shaped and any(self._is_x_shaped(v) for v in (cond, a, b)):
            self.x_shaped.append(out)
        return out

    def _is_x_shaped(self, a):
        return any(a is v for v in self.x_shaped)

    def _foldable(self, a, loss):
        """Whether `a` has `loss`'s run-time shape: equal static shapes, or (sizes
        unknown until run time) `a` made from the logits and `loss` elementwise over them
        (a class vector of unknown length must not meet a per-sample loss)."""
        if a.shape.is_fully_defined() and loss.shape.is_fully_defined():
            return a.shape == loss.shape
        return self._is_x_shaped(a) and loss.shape.as_list() == self.logits.shape.as_list()

    def checked_sum(self, loss):
        """sum(loss), NaN where a value check on an array of loss's shape fails.

        XLA on CPU writes out the input of every reduction: a check reduced on its own
        writes a full-size boolean array and reduces it, a sizeable share of the loss's
        time. Folded into the loss, the check is a select in the loss's own loop, and
        the loss's sum is NaN where it fails. Only arrays known to have the loss's
        run-time shape are folded (see _foldable). The caller reads a NaN sum as a
        failed check (see _Compiled): so does a loss made NaN by a NaN or infinite logit.
        """
        if self.foldable and loss.shape.rank:
            conds = [(cond(a), i) for a, cond, i in self.foldable
                     if i not in self.folded and self._foldable(a, loss)]
            if conds:
                ok = conds[0][0]
                for c, _ in conds[1:]:
                    ok = ok & c
                loss = tf.where(ok, loss, tf.constant(float("nan"), loss.dtype))
                self.folded.update(i for _, i in conds)
        return tf.reduce_sum(loss)

    @staticmethod
    def tracing():
        return not tf.executing_eagerly()

    @staticmethod
    def concrete_range(a):
        if not _readable(a):
            return None
        return float(tf.reduce_min(a)), float(tf.reduce_max(a))

    def broadcast_like(self, a, like):
        out = tf.broadcast_to(a, tf.shape(like))
        if self._is_x_shaped(like):
            self.x_shaped.append(out)
        return out

    @staticmethod
    def squeeze(a, axis):
        return tf.squeeze(a, axis=axis)

    @staticmethod
    def class_view(v, ndim, axis):
        shape = [1] * ndim
        shape[axis] = -1
        return tf.reshape(v, shape)

    @staticmethod
    def gather_classes(v, idx):
        return tf.gather(v, idx)

    @staticmethod
    def matmul(a, b, transpose_a, transpose_b):
        return tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)

    @staticmethod
    def concat(arrays, axis):
        return tf.concat(arrays, axis)


def _fork(values):
    """The tensors among `values` through one XLA optimization barrier (other entries,
    None or Python numbers, as they are): XLA cannot merge what is computed from the
    copies with what is computed from the originals."""
    idx = [i for i, v in enumerate(values) if isinstance(v, tf.Tensor)]
    if not idx:
        return values
    copies = _barrier(*(values[i] for i in idx))
    out = list(values)
    for i, c in zip(idx, copies):
        # stop_gradient: the barrier has no registered gradient, and a tape recording a
        # call of the compiled function differentiates its whole graph (the copies feed
        # the closed-form gradient only, which is never differentiated).
        out[i] = tf.stop_gradient(c)
    return tuple(out)


def _run(fn, x, targets, need_grad, *, ops_type=None, **kw):
    """(out, grad, ok) of a spec function, op by op. Value checks Python could not do
    become graph assertions, and (for XLA, which drops assertions) a NaN loss where
    they fail; ok (None when Python did every check) is for the gradient's caller.
    ops_type: a TensorflowOps subclass with hooks of its own (the linear loss's)."""
    ops = (ops_type or TensorflowOps)()
    out, grad = fn(ops, x, targets, need_grad=need_grad, **kw)
    ok = None
    if ops.unchecked:
        conds = [c for c, _ in ops.unchecked]
        if _on_host(x):
            asserts = [tf.debugging.Assert(c, [m]) for c, m in ops.unchecked]
            with tf.control_dependencies(asserts):
                ok = tf.reduce_all(tf.stack(conds))
        else:
            # On a GPU an assertion (a CPU kernel) waits for the device to compute its
            # condition, eagerly and in a graph alike: a failed check gives NaN instead,
            # as tf.nn.sparse_softmax_cross_entropy_with_logits does on a GPU.
            ok = tf.reduce_all(tf.stack(conds))
        out = tf.where(ok, out, tf.constant(float("nan"), out.dtype))
    return out, grad, ok
