"""JaxOps: the spec's Ops on jax arrays (the NumPy-API ops with jax's numerics)."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from ... import _spec
from ..._numpy import ArrayModuleOps


def _kind(a) -> str:
    dt = jnp.asarray(a).dtype if not hasattr(a, "dtype") else a.dtype
    if dt == jnp.bool_:
        return "bool"
    if jnp.issubdtype(dt, jnp.floating):
        return "floating"
    if jnp.issubdtype(dt, jnp.complexfloating):
        return "complex"
    if jnp.issubdtype(dt, jnp.integer):
        return "integer"
    return str(dt)


def _readable(a) -> bool:
    """Concrete (not traced), non-empty, and on CPU: values readable without a device sync."""
    if isinstance(a, jax.core.Tracer) or a.size == 0:
        return False
    try:
        return all(d.platform == "cpu" for d in a.devices())
    except AttributeError:  # a NumPy array
        return True


@jax.custom_jvp
def _ratio(a, b):
    return a / b


@_ratio.defjvp
def _ratio_jvp(primals, tangents):
    # The quotient rule as (a' - (a/b) b') / b: autodiff's a'/b - a b'/b**2 is 0/0 where
    # b**2 underflows (the sigmoid gradient's p(1-p)/(1-p_t) at saturated logits), which
    # made jax.hessian NaN there.
    a, b = primals
    ta, tb = tangents
    r = a / b
    return r, (ta - r * tb) / b


class JaxOps(ArrayModuleOps):
    """:class:`focalx._spec.Ops` for jax.numpy."""

    xp = jnp
    kind = staticmethod(_kind)
    #: second derivatives (jax.hessian) differentiate the spec's closed-form gradient
    ratio = staticmethod(_ratio)

    def log_softmax(self, a, axis):
        # jax.nn.log_softmax's formula, with its parts kept for take() below.
        m = jax.lax.stop_gradient(jnp.max(a, axis=axis, keepdims=True))
        shifted = a - m
        e = jnp.exp(shifted)
        s = jnp.sum(e, axis=axis, keepdims=True)
        ls = jnp.log(s)
        out = shifted - ls
        self.log_softmaxes.append((out, a, m, ls, axis, e, s))
        return out

    def softmax_parts(self, lp):
        # The spec's softmax from the log-softmax's own exp and sum (_spec._softmax), one
        # exp per element: a second exp over the log-softmax left the softmax loss well
        # behind optax's cross-entropy, this way it keeps pace.
        for out, _, _, _, _, e, s in self.log_softmaxes:
            if out is lp:
                return e, s
        return None

    def take(self, a, index, axis):
        # A log-softmax's value at the target, from the logits there: the same
        # operations on the same numbers as the full array's element. Gathering from
        # the full log-softmax makes XLA write it out in full, a pass and a fresh
        # full-size array of its own.
        for out, x, m, ls, ax, _, _ in self.log_softmaxes:
            if out is a and ax == axis:
                return (jnp.take_along_axis(x, index, axis=axis) - m) - ls
        return jnp.take_along_axis(a, index, axis=axis)

    @staticmethod
    def scatter(a, index, values, axis):
        # An elementwise select against the class number rather than an XLA scatter:
        # it fuses with what comes before and after (a scatter is a pass of its own,
        # and the mean's scaling then another).
        classes = jax.lax.broadcasted_iota(index.dtype, a.shape, axis % a.ndim)
        return jnp.where(classes == index, values, a)

    # The gradient's own pass (checks=False, see _apply) clamps at -0.0, the loss's at
    # 0.0: equal numbers, but distinct constants. With one constant XLA merged the two
    # passes' full-size broadcasts of 0 and wrote it out as a full-size array for the
    # loss's reduction (a pass and fresh memory that page-faults).
    def maximum0(self, a):
        return jnp.maximum(a, 0.0 if self.checks else -0.0)

    def minimum0(self, a):
        return jnp.minimum(a, 0.0 if self.checks else -0.0)

    @staticmethod
    def asarray(v, name, like):
        if isinstance(v, jax.Array):
            a = v
        elif isinstance(v, (np.ndarray, np.generic, numbers.Number, list, tuple)):
            a = jnp.asarray(_spec.host_array(v, name))
        else:
            raise TypeError(f"{name} must be a number, a sequence or a jax array, got "
                            f"{type(v).__module__}.{type(v).__name__}")
        if _kind(a) not in ("floating", "integer", "bool"):
            raise TypeError(f"{name} must be real, got {_kind(a)} dtype")
        return a.astype(like.dtype)

    @staticmethod
    def as_index(a):
        return jnp.asarray(a).astype(jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)

    def __init__(self, checks=True):
        self.checks = checks  # False: a second pass over values already checked
        self.unchecked = []  # conditions on values that could not be read (see _run)
        self.log_softmaxes = []  # (output, input, max, log-sum-exp, axis) of log_softmax

    def assert_values(self, a, cond, message):
        # Reached for traced (jit, vmap, grad) or non-CPU values: Python cannot raise on
        # them without a host round trip, so the condition is recorded and the result
        # is made NaN where it fails (see _run), instead of a plausible wrong number.
        # cond is an interval test, so it is tested on a's min and max (both NaN where a
        # holds a NaN): an elementwise test would share its broadcast constants with the
        # loss's fusion, and XLA then materialises them as full-size arrays.
        if self.checks and a.size:
            self.unchecked.append(cond(jnp.min(a)) & cond(jnp.max(a)))

    @staticmethod
    def tracing():
        return False  # NumPy hyperparameters are constants to jax: always readable

    @staticmethod
    def concrete_range(a):
        if not _readable(a):
            return None
        host = np.asarray(a)  # concrete: read directly, also while an outer jit traces
        return float(host.min()), float(host.max())
