"""Speed path: the spec traced once per configuration into a tf.function(jit_compile=True).

The switch is ``USE_XLA``; what the path keeps invariant is written below."""

from __future__ import annotations

import collections
import numbers
import threading
import time

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record as _record

from ... import _spec
from .. import _worker
from . import ops as _ops
from .ops import TensorflowOps, _TENSORS


# ---------------------------------------------------------------------------
# The compiled path: the same spec computation, traced once per configuration into
# a tf.function(jit_compile=True), so that XLA fuses its elementwise ops into a few
# loops instead of TensorFlow running each op (and writing each intermediate array)
# on its own. Called eagerly it runs as one XLA executable; called inside a user's
# tf.function it becomes one XLA cluster of that graph; inside a user's XLA function
# it is inlined. The numbers are those of the same formulas (XLA may round a fused
# expression or order a sum differently, within float32 rounding).
# ---------------------------------------------------------------------------

#: Eagerly, logits with fewer elements than this take the op-by-op path. Compiled calls
#: are faster even at small sizes, but the first call of each shape and configuration
#: compiles, which small eager calls (tests, notebooks, many shapes) would not earn back.
#: Graphs always take the compiled path (their compilation is part of the graph's).
EAGER_XLA_MIN_SIZE = 1 << 16
#: Compiled configurations kept (least recently used ones are dropped).
CACHE_SIZE = 64
#: Eagerly, the shapes compiled per configuration; further shapes run op by op.
EAGER_MAX_SHAPES = 8
#: False turns the compiled path off (every call takes the op-by-op path).
USE_XLA = True
#: Eagerly, a configuration and shape not compiled yet runs op by op while its function
#: compiles in a background thread, and takes the compiled path once that is done (an
#: XLA compile takes seconds, which no call should wait for). False: the call compiles
#: in the calling thread and runs compiled. Graphs always compile in the graph's own
#: trace (their compilation is part of the graph's).
BACKGROUND_COMPILE = True

_NOT_STATIC = object()
#: (gamma: a tensor gamma, per class or a schedule's 0-d one, is a run-time input; a
#: Python number is part of the configuration, as the spec branches on it)
_TENSOR_PARAMS = ("alpha", "pos_weight", "weight", "normalizer", "gamma", "scale",
                  "scale_div", "scale_mult")
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
        # backend does, is slower under TensorFlow's XLA.)

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
        """(out, grad, ok) as :func:`.ops._run`; None where the eager result fails a value
        check."""
        # Not recorded by a tape: the caller's tf.custom_gradient gives the gradient. A
        # recorded call would run (and first trace and compile) the function's forward
        # half of its own autodiff instead, which outputs every intermediate the
        # backward half needs: eagerly a slower call, in every case a longer compile.
        with _record.stop_recording():
            res = self.function(x, targets, *tensors)
        out, grad = (res[0], res[1]) if self.need_grad else (res[0], None)
        ok, conds = res[-2], res[-1]
        if not self.messages:
            return out, grad, None
        if not _ops._on_host(x):
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
        if BACKGROUND_COMPILE and tf.executing_eagerly():
            _submit(key, (fn, need_grad, static, names, specs), x.device)
            return None, None
        try:
            entry = _Compiled(fn, need_grad, static, names, specs)
        except Exception:  # noqa: BLE001 - the op-by-op path raises it (same message)
            return None, None
        _store(key, entry)
    return entry, tensors


def _store(key, entry):
    with _cache_lock:
        _cache[key] = entry
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


# ---------------------------------------------------------------------------
# The background compilations (BACKGROUND_COMPILE): one daemon thread compiles the
# queued configurations one at a time. Each job traces the configuration's function and
# runs it once on zeros of its argument specs (XLA compiles a jit_compile function on
# its first run), then adds it to the cache; a configuration that fails to compile is
# remembered and runs op by op from then on (that path raises the error, if any). The
# calling thread never waits: TensorFlow releases the GIL while an op or the compiler
# runs, and the trace itself is short. At interpreter exit the thread finishes the
# compilation in progress and stops (a daemon thread still inside TensorFlow's C++ code
# when the interpreter finalizes could abort the process).
# ---------------------------------------------------------------------------

#: seconds that interpreter exit waits for a compilation in progress
_EXIT_WAIT = 300.0
_WORKER = {"queue": None, "thread": None, "stopping": False, "hooked": False}
_pending: set = set()  # keys queued or compiling
_failed: set = set()  # keys whose compilation raised (bounded like _eager_shapes)


def _submit(key, args, device):
    with _cache_lock:
        if key in _pending or key in _failed or _WORKER["stopping"]:
            return
        if _WORKER["thread"] is None:
            _worker.start(_WORKER, _compile_worker, "focalx-tf-compile", _stop_worker)
        _pending.add(key)
        _WORKER["queue"].put((key, args, device))


def _compile_worker(jobs):
    while True:
        job = jobs.get()
        if job is None or _WORKER["stopping"]:
            return
        key, args, device = job
        try:
            with tf.device(device):
                entry = _Compiled(*args)
                entry.function(*[tf.zeros(s.shape, s.dtype) for s in args[-1]])
        except Exception:  # noqa: BLE001 - such calls run op by op, which raises it
            with _cache_lock:
                if len(_failed) > 4 * CACHE_SIZE:
                    _failed.clear()
                _failed.add(key)
        else:
            _store(key, entry)
        finally:
            with _cache_lock:
                _pending.discard(key)


def _stop_worker():
    """At interpreter exit: no new compilation starts; the one in progress finishes."""
    with _cache_lock:
        thread, jobs = _WORKER["thread"], _WORKER["queue"]
        _WORKER["stopping"] = True
    if thread is not None:
        jobs.put(None)
        thread.join(_EXIT_WAIT)


def wait_for_compiles(timeout: float | None = None) -> bool:
    """Wait until every compilation queued so far (see BACKGROUND_COMPILE) has finished
    or failed; False if `timeout` seconds passed first. For tests and benchmarks that
    want the compiled path from the next call on."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        with _cache_lock:
            if not _pending:
                return True
        if end is not None and time.monotonic() >= end:
            return False
        time.sleep(0.01)


def _linear_block(ops, x, targets, need_grad, scale=None, scale_div=None, scale_mult=None,
                  **kw):
    """The linear loss's block (the spec's loss_block hook), its scale as arrays: a
    Divide's two parts apart."""
    if scale_div is not None:
        scale = _spec.Divide(scale_div, scale_mult)
    return _spec.run_softmax_focal_loss(ops, x, targets, need_grad=need_grad, scale=scale,
                                        **kw)


def compiled_block(logits, targets, scale, params):
    """(out, g) of the linear loss's block (the spec's loss_block) from the compiled
    cache, eagerly and as the other losses' eager calls (large blocks; compiled in the
    background, None until then), or None."""
    if not USE_XLA or (logits.shape.num_elements() or 0) < EAGER_XLA_MIN_SIZE:
        return None
    kw = {k: v for k, v in params.items() if k != "need_grad"}
    parts = dict(scale_div=scale.div, scale_mult=scale.mult) if isinstance(
        scale, _spec.Divide) else dict(scale=scale)
    for k, v in parts.items():
        # (run-time inputs, as a normalizer: a mean's 1/N would compile a block per batch
        # size)
        kw[k] = tf.constant(v, logits.dtype) if isinstance(v, numbers.Real) else v
    entry, tensors = _compiled(_linear_block, logits, targets, kw, params["need_grad"])
    res = None if entry is None else entry(logits, targets, tensors)
    return None if res is None else res[:2]


def _compute(fn, x, targets, need_grad, kw):
    """(out, grad, ok) of a spec function (see :func:`.ops._run`): compiled where that pays,
    else op by op."""
    if USE_XLA and fn.__name__ not in _spec.PLAIN_RUNS and (not tf.executing_eagerly() or
                    (x.shape.num_elements() or 0) >= EAGER_XLA_MIN_SIZE):
        entry, tensors = _compiled(fn, x, targets, kw, need_grad)
        if entry is not None:
            res = entry(x, targets, tensors)
            if res is not None:
                return res
    return _ops._run(fn, x, targets, need_grad, **kw)
