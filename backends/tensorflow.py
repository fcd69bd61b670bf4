"""TensorFlow backend: the spec on tf tensors (public name: ``focalx.tensorflow``).

Works eagerly, inside ``tf.function`` (also with ``jit_compile=True``, XLA) and
under ``tf.distribute`` strategies, with no host round trip inside a graph. The
gradient w.r.t. the logits is the spec's closed form, through
``tf.custom_gradient``: computed in the forward pass and multiplied by the
incoming gradient in the backward pass. Eagerly it is computed only while a
``GradientTape`` records; in a graph traced with no tape recording (a forward
pass, or ``tf.gradients``) the forward pass computes the loss only and the
gradient is computed in the backward pass, if one is built.

Speed: the computation (loss, gradient and value checks) runs as one cached
``tf.function(jit_compile=True)`` per configuration, so XLA fuses its ~45
elementwise ops into a few loops: always inside a graph (in a user's
``tf.function`` it is an XLA cluster of that graph; in a user's XLA function it
is inlined), and eagerly for logits of at least ``EAGER_XLA_MIN_SIZE`` elements
(smaller eager calls run op by op: a compilation per shape would not pay). The
formulas are the same; XLA may round a fused expression or order a sum
differently (float rounding). The sigmoid losses use the spec's lean evaluation
(one exp, one log1p and one division per element), and inside XLA the sigmoid
gradient is computed from its own copy of the terms, sharing only the exp with
the loss: XLA on CPU writes out every intermediate that two loops share.
Configurations are keyed by the Python hyperparameters and the shapes and dtypes
of the tensor arguments; the ``CACHE_SIZE`` most recently used are kept. A
hyperparameter given as a NumPy array takes the op-by-op path. ``USE_XLA = False``
turns the compiled path off.

Static and run-time arguments:

- ``gamma``, ``beta``, ``label_smoothing``, ``ignore_index``, ``reduction``,
  ``axis`` and ``from_logits`` are Python values, checked when the function is
  traced;
- ``alpha``, ``pos_weight``, ``weight`` and ``normalizer`` may be numbers,
  NumPy arrays or tensors (a replica-summed count of positives as the
  normalizer);
- sizes unknown until run time (a ``None`` batch size in a ``tf.function``
  signature, as Keras' ``fit`` produces) are fine except on the class axis;
  shapes that are known are checked at trace time, unknown ones by TensorFlow
  when the graph runs;
- value checks (targets in [0, 1], class indices in range, ...) raise
  ``ValueError`` eagerly on CPU. In a graph Python cannot read the values, so
  a failed check raises ``InvalidArgumentError`` (naming the argument) when the
  graph runs, and under XLA, which drops assertions, it makes the loss and its
  whole gradient NaN instead: never a plausible wrong number. On a GPU, eagerly
  or in a graph, reading a value or asserting on it would wait for the device,
  so there a failed check gives NaN too (as TensorFlow's sparse softmax
  cross-entropy does on a GPU). (In every graph, and eagerly on a GPU for
  calls that take the compiled path, a summed loss that is NaN for another reason,
  from a NaN or infinite logit, also makes the whole gradient NaN: checks on arrays
  of the loss's shape are folded into its sum, see ``TensorflowOps.checked_sum``.)

Gradients: the logits get the spec's closed form. Floating targets and
hyperparameter tensors that a ``GradientTape`` watches (soft targets from a
teacher, a learned ``alpha``) get the autodiff of the spec's formula, computed in
the backward pass only for them; in a graph differentiated without a tape
(``tf.gradients``) they get none. A second derivative through the loss raises,
because the closed form is not itself differentiated.

float16 / bfloat16 logits are computed in float32 and the loss is returned in
the input dtype. The class axis of ``softmax_focal_loss`` defaults to -1 (Keras'
convention). Keras loss classes are in :mod:`focalx.keras`.
"""

from __future__ import annotations

import collections
import numbers
import threading
from collections.abc import Sequence  # (annotations of the generated signatures)
from typing import Literal

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record as _record

try:  # XLA's optimization barrier (tf2xla's Python wrapper; not in TensorFlow's public API)
    from tensorflow.compiler.tf2xla.python.xla import optimization_barrier as _barrier
except ImportError:  # pragma: no cover - an older or stripped TensorFlow: no fork
    _barrier = None

from .. import _spec

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star"]

_TENSORS = (tf.Tensor, tf.Variable)


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
    #: under XLA on CPU the sigmoid loss's fwd+bwd at 4M elements went from 0.69x to
    #: 0.95x keras' with it alone (measured; the fork and the folded checks did the rest).
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
        writes a full-size boolean array and reduces it (about 2.5 ms of a 11 ms forward
        and backward at 4M elements, measured). Folded into the loss, the check is a
        select in the loss's own loop, and the loss's sum is NaN where it fails. Only
        arrays known to have the loss's run-time shape are folded (see _foldable). The
        caller reads a NaN sum as a failed check (see _Compiled): so does a loss made
        NaN by a NaN or infinite logit.
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


def _run(fn, x, targets, need_grad, **kw):
    """(out, grad, ok) of a spec function, op by op. Value checks Python could not do
    become graph assertions, and (for XLA, which drops assertions) a NaN loss where
    they fail; ok (None when Python did every check) is for the gradient's caller."""
    ops = TensorflowOps()
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


# ---------------------------------------------------------------------------
# The compiled path: the same spec computation, traced once per configuration into
# a tf.function(jit_compile=True), so that XLA fuses its elementwise ops into a few
# loops instead of TensorFlow running each op (and writing each intermediate array)
# on its own. Called eagerly it runs as one XLA executable; called inside a user's
# tf.function it becomes one XLA cluster of that graph; inside a user's XLA function
# it is inlined. The numbers are those of the same formulas (XLA may round a fused
# expression or order a sum differently, within float32 rounding).
# ---------------------------------------------------------------------------

#: Eagerly, logits with fewer elements than this take the op-by-op path. Measured on 2
#: busy CPU cores: compiled calls were 3-4x faster from 16K to 256K elements (fwd+bwd),
#: but the first call of each shape and configuration compiles (1-4 s there), which
#: small eager calls (tests, notebooks, many shapes) would not earn back. Graphs always
#: take the compiled path (their compilation is part of the graph's).
EAGER_XLA_MIN_SIZE = 1 << 16
#: Compiled configurations kept (least recently used ones are dropped).
CACHE_SIZE = 64
#: Eagerly, the shapes compiled per configuration; further shapes run op by op.
EAGER_MAX_SHAPES = 8
#: False turns the compiled path off (every call takes the op-by-op path).
USE_XLA = True

_NOT_STATIC = object()
_TENSOR_PARAMS = ("alpha", "pos_weight", "weight", "normalizer")
_cache: "collections.OrderedDict" = collections.OrderedDict()
_cache_lock = threading.Lock()
_eager_shapes: dict = {}  # configuration -> shapes compiled for it in eager calls


def _static_key(v):
    """A hashable key for a Python hyperparameter, or _NOT_STATIC."""
    if v is None or isinstance(v, (bool, str)):
        return (type(v), v)
    if isinstance(v, numbers.Number) and not isinstance(v, (np.ndarray,) + _TENSORS):
        try:
            hash(v)
            if v != v:  # NaN: never equal to itself, so never a cache hit
                return _NOT_STATIC
        except (TypeError, ValueError):
            return _NOT_STATIC
        return (type(v), v)
    if isinstance(v, (list, tuple)):
        keys = tuple(_static_key(a) for a in v)
        if any(k is _NOT_STATIC for k in keys):
            return _NOT_STATIC
        return (type(v), keys)
    return _NOT_STATIC


def _spec_of(t):
    return tf.TensorSpec(t.shape, t.dtype)


class _Compiled:
    """One configuration's compiled computation: (x, targets, *tensor params) ->
    (out, [grad,] ok, conditions); `messages` names each recorded value check."""

    def __init__(self, fn, need_grad, static, names, specs):
        self.messages = None
        self.folded = 0  # value checks folded into the loss's sum (see checked_sum)
        self.need_grad = need_grad
        # (The sigmoid gradient recomputes its terms from forked copies of the loss's
        # exp and inputs (TensorflowOps.fork); recomputing the exp too, as the JAX
        # backend does, was slower: 0.81x keras under XLA at 4M elements against about
        # 1.0x, measured before value checks were folded into the sum.)

        def body(x, targets, *tensors):
            ops = TensorflowOps(compiled=True, logits=x)
            out, grad = fn(ops, x, targets, need_grad=need_grad, **static,
                           **dict(zip(names, tensors)))
            self.messages = [m for _, m in ops.unchecked]
            self.folded = len(ops.folded)
            if ops.unchecked:
                conds = tf.stack([c for c, _ in ops.unchecked])
                # Checks folded into the loss's sum (see checked_sum) failed where it is
                # NaN: their own reductions are left to the graph's assertions (XLA
                # drops those, and with them the reductions, in a user's XLA function).
                rest = [c for i, (c, _) in enumerate(ops.unchecked) if i not in ops.folded]
                if ops.folded:
                    rest.append(tf.logical_not(tf.math.is_nan(out)))
                ok = tf.reduce_all(tf.stack(rest))
                out = tf.where(ok, out, tf.constant(float("nan"), out.dtype))
            else:
                conds = tf.zeros([0], tf.bool)
                ok = tf.constant(True)
            return (out, ok, conds) if grad is None else (out, grad, ok, conds)

        self.function = tf.function(body, input_signature=specs, jit_compile=True,
                                    autograph=False).get_concrete_function()

    def __call__(self, x, targets, tensors):
        """(out, grad, ok) as :func:`_run`; None where the eager result fails a value
        check."""
        res = self.function(x, targets, *tensors)
        out, grad = (res[0], res[1]) if self.need_grad else (res[0], None)
        ok, conds = res[-2], res[-1]
        if not self.messages:
            return out, grad, None
        if not _on_host(x):
            # On a GPU: neither read ok nor assert it (either waits for the device); out
            # is NaN where a check failed, and the caller makes the gradient NaN too.
            return out, grad, ok
        if tf.executing_eagerly():
            # The op-by-op path then raises the precise error (or gives its result).
            return (out, grad, None) if bool(ok) else None
        asserts = [tf.debugging.Assert(conds[i], [m]) for i, m in enumerate(self.messages)]
        with tf.control_dependencies(asserts):
            out = tf.identity(out)
            if grad is not None:
                grad = tf.identity(grad)
        return out, grad, ok


def _compiled(fn, x, targets, kw, need_grad):
    """The cached compiled computation for this call and its tensor arguments, or
    (None, None) where the call cannot be compiled (a NumPy array hyperparameter, ...)."""
    static, names, tensors, key = {}, [], [], []
    for name, v in kw.items():
        if isinstance(v, np.generic) or (isinstance(v, np.ndarray) and v.ndim == 0):
            v = v.item()
        if name == "normalizer" and isinstance(v, numbers.Real) and \
                not isinstance(v, bool) and v > 0 and v != float("inf"):
            # a run-time input, not part of the key: a normalizer that changes every
            # step (the number of positives) must not compile a function every step
            v = tf.constant(float(v), x.dtype)
        if name in _TENSOR_PARAMS and isinstance(v, tf.Tensor):
            names.append(name)
            tensors.append(v)
            key.append((name, "tensor"))
            continue
        k = _static_key(v)
        if k is _NOT_STATIC:
            return None, None
        static[name] = v
        key.append((name, k))
    specs = [_spec_of(t) for t in [x, targets] + tensors]
    shapes = tuple((tuple(s.shape.as_list()) if s.shape.rank is not None else None, s.dtype)
                   for s in specs)
    config = (fn, need_grad, tuple(key))
    key = (config, shapes)
    with _cache_lock:
        if tf.executing_eagerly():
            # Eagerly every new shape compiles anew: a configuration seen with many
            # shapes (a varying batch size) runs op by op from then on.
            if len(_eager_shapes) > 4 * CACHE_SIZE:
                _eager_shapes.clear()
            seen = _eager_shapes.setdefault(config, set())
            if shapes not in seen and len(seen) >= EAGER_MAX_SHAPES:
                return None, None
            seen.add(shapes)
        entry = _cache.get(key)
        if entry is not None:
            _cache.move_to_end(key)
    if entry is None:
        try:
            entry = _Compiled(fn, need_grad, static, names, specs)
        except Exception:  # noqa: BLE001 - the op-by-op path raises it (same message)
            return None, None
        with _cache_lock:
            _cache[key] = entry
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return entry, tensors


def _compute(fn, x, targets, need_grad, kw):
    """(out, grad, ok) of a spec function (see :func:`_run`): compiled where that pays,
    else op by op."""
    if USE_XLA and (not tf.executing_eagerly() or
                    (x.shape.num_elements() or 0) >= EAGER_XLA_MIN_SIZE):
        entry, tensors = _compiled(fn, x, targets, kw, need_grad)
        if entry is not None:
            res = entry(x, targets, tensors)
            if res is not None:
                return res
    return _run(fn, x, targets, need_grad, **kw)


def _apply(fn, logits, targets, kw, class_axis):
    """loss = fn(x, targets, **kw) with the spec's closed-form gradient w.r.t. x.

    Floating targets and hyperparameter tensors that a GradientTape watches get the
    autodiff of the spec's formula (see _other_grads); in a graph differentiated
    without a tape (tf.gradients) they get none."""
    x = tf.convert_to_tensor(logits)
    x_dtype = x.dtype
    compute = tf.float64 if x_dtype == tf.float64 else tf.float32
    recording = _record.could_possibly_record()
    if tf.executing_eagerly() and not recording:
        # eager, no tape: no gradient needed
        out = _compute(fn, tf.cast(x, compute), targets, False, kw)[0]
        return tf.cast(out, x_dtype)
    # A graph with no tape in sight (a forward pass, or tf.gradients later): the
    # forward computes the loss only, and the gradient is computed if it is asked
    # for. Op by op, graph pruning does that by itself; a compiled call cannot be
    # pruned in part, so it is split here.
    split = not recording and not tf.executing_eagerly()
    others = {}
    if recording:
        candidates = {"targets": targets, **{k: kw[k] for k in _TENSOR_PARAMS
                                             if isinstance(kw.get(k), tf.Tensor)}}
        others = {k: v for k, v in candidates.items()
                  if v.dtype.is_floating and _record.should_record_backprop([v])}
    names = tuple(others)

    @tf.custom_gradient
    def loss(x, *values):
        xc = tf.cast(x, compute)
        given = dict(zip(names, values))
        t = given.pop("targets", targets)
        kw_in = {**kw, **given}
        out, grad, ok = _compute(fn, xc, t, not split, kw_in)

        def backward(g_out, variables=None):
            if tf.executing_eagerly() and _record.could_possibly_record():
                raise NotImplementedError(
                    "focalx losses are differentiable once: their gradient cannot be "
                    "differentiated again (a GradientTape recording the backward pass)")
            g_values = _other_grads(fn, xc, t, kw_in, names, values, g_out)
            g, g_ok = (grad, ok) if grad is not None else \
                _compute(fn, xc, t, True, kw_in)[1:]
            if g_ok is not None:
                # A failed value check makes the whole gradient NaN: applied to the
                # incoming gradient, so it costs no pass over the full-size one.
                g_out = tf.where(g_ok, g_out, tf.constant(float("nan"), g_out.dtype))
            if class_axis is not None and g_out.shape.rank:  # per-sample softmax loss
                g_out = tf.expand_dims(g_out, class_axis)
            g_x = tf.cast(tf.cast(g_out, g.dtype) * g, x_dtype)
            if variables is not None:  # variables read inside: no gradient for them
                return (g_x, *g_values), [None] * len(variables)
            return (g_x, *g_values)

        return tf.cast(out, x_dtype), backward

    return loss(x, *others.values())


def _other_grads(fn, xc, targets, kw, names, values, g_out):
    """The gradients of the targets and hyperparameter tensors in `values` (named by
    `names`): the spec's formula run again op by op under a GradientTape (as the JAX
    backend differentiates it)."""
    if not names:
        return []
    with tf.GradientTape() as tape:
        tape.watch(values)
        given = dict(zip(names, values))
        out = _run(fn, xc, given.pop("targets", targets), False, **{**kw, **given})[0]
    return tape.gradient(out, list(values), output_gradients=tf.cast(g_out, out.dtype))


def _check_tensors(logits, targets):
    if not isinstance(logits, _TENSORS):
        raise TypeError(f"logits must be a tf.Tensor, got {_name(logits)}")
    if not isinstance(targets, _TENSORS + (np.ndarray,)):
        raise TypeError(f"targets must be a tf.Tensor (the framework of logits), got "
                        f"{_name(targets)}")
    _spec.check_logits_dtype(_kind(logits))
    return tf.convert_to_tensor(targets)


def _read(v):
    """Variables are read outside the custom gradient (they get no gradient from it)."""
    return tf.convert_to_tensor(v) if isinstance(v, tf.Variable) else v


# focalx:signature sigmoid_focal_loss
def sigmoid_focal_loss(logits: tf.Tensor, targets: tf.Tensor, *, gamma: float = 2.0,
                       alpha: float | Sequence[float] | tf.Tensor | None = 0.25,
                       pos_weight: float | Sequence[float] | tf.Tensor | None = None,
                       weight: float | Sequence[float] | tf.Tensor | None = None,
                       ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                       reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | tf.Tensor | None = None,
                       from_logits: bool = True) -> tf.Tensor:
    r"""Sigmoid (binary / multi-label) focal loss.

    .. math::

        p &= \sigma(x), \quad p_t = y p + (1-y)(1-p), \quad
        \alpha_t = y\alpha + (1-y)(1-\alpha) \\
        \mathrm{FL}(x, y) &= -\,w\,\alpha_t\,(1-p_t)^\gamma
            \left[w_+\,y \log p + (1-y) \log(1-p)\right]

    With ``pos_weight=None`` this is exactly ``torchvision.ops.sigmoid_focal_loss``,
    ``optax.losses.sigmoid_focal_loss`` (alpha given) and Paddle's
    ``sigmoid_focal_loss``; with ``gamma=0, alpha=None`` it is exactly
    ``binary_cross_entropy_with_logits`` (with its ``weight`` and ``pos_weight``).

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array, any shape ``[...]``; probabilities if
        ``from_logits=False``.
      targets: broadcastable to ``logits`` (never enlarging it); hard {0, 1} or soft in
        [0, 1]; bool / integer targets are accepted.
      gamma: focusing parameter, a number >= 0 (0 = no focusing).
      alpha: None (no class balancing, alpha_t = 1), a number in [0, 1], or an array of
        values in [0, 1] broadcastable to ``logits`` (e.g. per class on the last axis):
        alpha for positives, 1 - alpha for negatives.
      pos_weight: None or an array >= 0 broadcastable to ``logits``: weight of the
        positive term of the cross-entropy, as in torch's ``BCEWithLogitsLoss``.
      weight: None or an elementwise weight >= 0 broadcastable to ``logits``. It does
        not enter the mean's denominator (as in ``BCEWithLogitsLoss``).
      ignore_index: None, or a target value (not 0 or 1) marking elements that add 0 and
        leave the mean's denominator.
      label_smoothing: e in [0, 1): targets become ``y * (1 - e) + e / 2``.
      reduction: ``"none"`` (shape of ``logits``), ``"sum"`` or ``"mean"`` (sum over the
        count of non-ignored elements; 0, not NaN, when there are none).
      normalizer: None, a number > 0, or a 0-d or shape-(1,) array (e.g. the number of
        positive anchors): divides the result of any reduction. RetinaNet's
        normalisation is ``reduction="sum", normalizer=num_pos``. No host sync.
      from_logits: if False, ``logits`` holds probabilities in [0, 1], used as given:
        ``log 0 = -inf``, so a certain wrong prediction costs ``+inf`` (gradient
        ``+-inf``) and a certain right one costs 0 (gradient: its one-sided limit, 0 for
        gamma > 0). Nothing is clipped.

    Returns:
      The loss: shape of ``logits`` for ``"none"``, else 0-d, in the logits' dtype
      (float16 / bfloat16 are computed in float32; NumPy input gives float64).

    Stability: log p and log(1-p) from softplus, 1-p_t without cancellation; the
    gradient is closed-form and finite for every finite logit and every gamma >= 0
    (no NaN at gamma < 1).

    References:
      Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.
    """
    # focalx:end
    targets = _check_tensors(logits, targets)
    alpha, pos_weight, weight, normalizer = map(_read, (alpha, pos_weight, weight, normalizer))

    kw = dict(gamma=gamma, alpha=alpha, pos_weight=pos_weight, weight=weight,
              ignore_index=ignore_index, label_smoothing=label_smoothing,
              reduction=reduction, normalizer=normalizer, from_logits=from_logits)
    return _apply(_spec.run_sigmoid_focal_loss, logits, targets, kw, None)


# focalx:signature sigmoid_focal_loss_star
def sigmoid_focal_loss_star(logits: tf.Tensor, targets: tf.Tensor, *, gamma: float = 1.0,
                            beta: float = 0.0,
                            alpha: float | Sequence[float] | tf.Tensor | None = None,
                            weight: float | Sequence[float] | tf.Tensor | None = None,
                            ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | tf.Tensor | None = None) -> tf.Tensor:
    r"""FL*, the focal loss variant of Lin et al.'s appendix A, with a tunable ``beta``.

    .. math::

        x_t = x\,(2y - 1), \qquad
        \mathrm{FL}^*(x, y) = -\,w\,\alpha_t \log\sigma(\gamma x_t + \beta) / \gamma

    fvcore's ``sigmoid_focal_loss_star`` is the case ``beta=0``.

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array, any shape.
      targets: broadcastable to ``logits``, in [0, 1].
      gamma: a number > 0.
      beta: the shift of the scaled logit, a real number.
      alpha: as in ``sigmoid_focal_loss`` (default None here).
      weight: as in ``sigmoid_focal_loss``.
      ignore_index: as in ``sigmoid_focal_loss``.
      label_smoothing: as in ``sigmoid_focal_loss``.
      reduction: as in ``sigmoid_focal_loss``.
      normalizer: as in ``sigmoid_focal_loss``.

    Returns:
      The loss: shape of ``logits`` for ``"none"``, else 0-d.

    Stability: log-sigmoid from softplus; closed-form gradient, finite everywhere.
    """
    # focalx:end
    targets = _check_tensors(logits, targets)
    alpha, weight, normalizer = map(_read, (alpha, weight, normalizer))

    kw = dict(gamma=gamma, beta=beta, alpha=alpha, weight=weight, ignore_index=ignore_index,
              label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer)
    return _apply(_spec.run_sigmoid_focal_loss_star, logits, targets, kw, None)


# focalx:signature softmax_focal_loss
def softmax_focal_loss(logits: tf.Tensor, targets: tf.Tensor, *, gamma: float = 2.0,
                       alpha: float | Sequence[float] | tf.Tensor | None = None,
                       weight: float | Sequence[float] | tf.Tensor | None = None,
                       ignore_index: int | None = -100, label_smoothing: float = 0.0,
                       reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | tf.Tensor | None = None, axis: int = -1,
                       from_logits: bool = True) -> tf.Tensor:
    r"""Softmax (multi-class) focal loss.

    .. math::

        p = \mathrm{softmax}(x), \qquad
        \mathrm{FL}(x, q) = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c

    per sample, with ``q`` the one-hot target (class indices) or the given class
    probabilities, smoothed as ``(1 - e) * q + e / C``. With ``gamma=0, alpha=None``
    it equals ``torch.nn.functional.cross_entropy`` for every combination of
    ``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``, probability
    targets and N-d inputs (except that an all-ignored "mean" is 0, not NaN).

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` (class axis
        ``axis``); probabilities on that axis if ``from_logits=False``.
      targets: class indices (integer dtype, the logits' shape without the class axis)
        or class probabilities in [0, 1] (floating, the logits' shape), told apart as
        ``F.cross_entropy`` does.
      gamma: focusing parameter, a number >= 0 (0 = no focusing).
      alpha: None (1), a number in [0, 1] multiplying every class (as Keras does), or a
        per-class vector of length C with values in [0, 1].
      weight: None or a per-class vector >= 0 of length C, exactly as cross-entropy's:
        "mean" with class indices divides by the sum of ``weight[target]`` over the
        non-ignored samples.
      ignore_index: class-index targets equal to it add 0 and leave the mean's
        denominator (not used with probability targets); None disables it.
      label_smoothing: e in [0, 1).
      reduction: ``"none"`` (per sample: the logits' shape without the class axis),
        ``"sum"`` or ``"mean"``.
      normalizer: None, a number > 0, or a 0-d or shape-(1,) array (e.g. the number of
        positive anchors): divides the result of any reduction. RetinaNet's
        normalisation is ``reduction="sum", normalizer=num_pos``. No host sync.
      axis: the class axis: -1 by default, as Keras.
      from_logits: if False, ``logits`` holds probabilities used as given (not
        renormalised); ``p_c = 0`` for a target class costs ``+inf``.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
    finite for every finite logit and gamma >= 0.
    """
    # focalx:end
    targets = _check_tensors(logits, targets)
    ndim = len(TensorflowOps.shape(logits))
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    alpha, weight, normalizer = map(_read, (alpha, weight, normalizer))

    kw = dict(gamma=gamma, alpha=alpha, weight=weight, ignore_index=ignore_index,
              label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer,
              axis=axis, from_logits=from_logits)
    return _apply(_spec.run_softmax_focal_loss, logits, targets, kw, class_axis)
