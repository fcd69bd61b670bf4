"""JAX backend: the spec on jax arrays (public name: ``focalx.jax``).

Works eagerly and under ``jax.jit``, ``jax.grad`` / ``jax.value_and_grad``,
``jax.vmap``, sharded inputs and ``shard_map``. The gradient w.r.t. the logits
is the spec's closed form, through ``jax.custom_vjp``: computed in the forward
pass of a differentiated call and kept as the only full-size residual.

Static and traced arguments:

- ``gamma``, ``beta``, ``label_smoothing``, ``ignore_index``, ``reduction``,
  ``axis`` and ``from_logits`` are Python values, validated when the function is
  traced (pass them as constants or ``static_argnames`` under ``jax.jit``);
- ``alpha``, ``pos_weight``, ``weight`` and ``normalizer`` may be numbers or
  arrays, and arrays may be traced (a ``psum`` of positives as the normalizer);
- value checks (targets in [0, 1], class indices in range, alpha in [0, 1], ...)
  raise ``ValueError`` on concrete CPU arrays. On traced values (under ``jit``,
  ``vmap``, ``grad``) Python cannot raise, so a failed check makes the loss and
  its gradient NaN instead (an out-of-range class index or a target of 2.0 gives
  NaN, not a plausible number).

Gradients: the logits get the spec's closed form. Floating targets and array
hyperparameters get the autodiff of the spec's formula, so soft targets from a
teacher or a learned ``alpha`` receive true gradients; it is computed only for
the inputs being differentiated (``custom_vjp`` with symbolic zeros). Second derivatives (``jax.hessian``) differentiate the
closed form by autodiff.

float16 / bfloat16 logits are computed in float32 and the loss is returned in
the input dtype; float64 needs ``jax_enable_x64``. The class axis defaults to
-1 (optax's and Flax's convention).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from .. import _spec
from .._numpy import ArrayModuleOps

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star"]


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


class JaxOps(ArrayModuleOps):
    """:class:`focalx._spec.Ops` for jax.numpy."""

    xp = jnp
    kind = staticmethod(_kind)

    @staticmethod
    def log_softmax(a, axis):
        return jax.nn.log_softmax(a, axis=axis)

    @staticmethod
    def scatter(a, index, values, axis):
        return jnp.put_along_axis(a, index, values, axis=axis, inplace=False)

    @staticmethod
    def asarray(v, name, like):
        if isinstance(v, (jax.Array, np.ndarray, np.generic, numbers.Number, list, tuple)):
            a = jnp.asarray(v)
        else:
            raise TypeError(f"{name} must be a number, a sequence or a jax array, got "
                            f"{type(v).__module__}.{type(v).__name__}")
        if _kind(a) not in ("floating", "integer", "bool"):
            raise TypeError(f"{name} must be real, got {_kind(a)} dtype")
        return a.astype(like.dtype)

    @staticmethod
    def as_index(a):
        return jnp.asarray(a).astype(jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)

    def __init__(self):
        self.unchecked = []  # conditions on values that could not be read (see poison)

    def assert_all(self, cond, message):
        # Reached for traced (jit, vmap, grad) or non-CPU values: Python cannot raise on
        # them without a host round trip, so the condition is recorded and the result
        # is made NaN where it fails (see _poison), instead of a plausible wrong number.
        self.unchecked.append(jnp.all(cond))

    @staticmethod
    def tracing():
        return False  # NumPy hyperparameters are constants to jax: always readable

    @staticmethod
    def concrete_range(a):
        if not _readable(a):
            return None
        host = np.asarray(a)  # concrete: read directly, also while an outer jit traces
        return float(host.min()), float(host.max())


def _run(fn, x, arrs, need_grad, **kw):
    """Run a spec function with a fresh JaxOps; NaN out the result where a value check
    that could not be done in Python fails."""
    ops = JaxOps()
    out, grad = fn(ops, x, arrs["targets"], need_grad=need_grad, **kw,
                   **{k: v for k, v in arrs.items() if k != "targets"})
    if ops.unchecked:
        ok = jnp.all(jnp.stack(ops.unchecked))
        out = jnp.where(ok, out, jnp.nan)
        if grad is not None:
            grad = jnp.where(ok, grad, jnp.nan)
    return out, grad


def _apply(run, logits, arrays, class_axis):
    """loss = run(x, arrays, need_grad) with the spec's gradient w.r.t. x (custom_vjp).

    `arrays` (targets and array-valued hyperparameters) are explicit primal inputs,
    so that tracers from jit / vmap / shard_map are never closed over. The logits get
    the spec's closed-form gradient when they are differentiated; `arrays` being
    differentiated (soft targets from a teacher, a learned alpha) get the autodiff of
    the spec's formula. Nothing is computed for inputs that are not differentiated.
    """
    x_dtype = logits.dtype
    compute = jnp.float64 if x_dtype == jnp.float64 else jnp.float32

    perturbed = {"arrays": ()}

    @jax.custom_vjp
    def loss(x, arrs):
        return run(x.astype(compute), arrs, False)[0].astype(x_dtype)

    def fwd(x_p, arrs_p):
        # symbolic_zeros: each input says whether it is being differentiated
        x = x_p.value
        arrs = {k: p.value for k, p in arrs_p.items()}
        # residuals must be arrays: which inputs are differentiated is kept here
        perturbed["arrays"] = tuple(k for k, p in arrs_p.items() if p.perturbed)
        xc = x.astype(compute)
        out, grad = run(xc, arrs, False)
        if x_p.perturbed:
            # The gradient from its own copy of the computation: when one XLA fusion has
            # to produce both the loss's sum and the full-size gradient, XLA on CPU
            # materialises the shared intermediates (value_and_grad at 4M elements:
            # 47 ms, against 29 ms as two computations, measured). The barrier keeps XLA
            # from merging the two again.
            _, grad = run(jax.lax.optimization_barrier(xc), arrs, True)
        return out.astype(x_dtype), (grad, x, arrs)

    def bwd(res, g_out):
        grad, x, arrs = res
        wanted = perturbed["arrays"]
        cts = {k: None for k in arrs}
        if isinstance(g_out, SymbolicZero):
            return None, cts
        g_x = None
        if grad is not None:
            g_expanded = g_out
            if class_axis is not None and g_out.ndim:  # per-sample softmax loss
                g_expanded = jnp.expand_dims(g_out, class_axis)
            g_x = (g_expanded.astype(grad.dtype) * grad).astype(x_dtype)
        if wanted:
            # Targets and array hyperparameters being differentiated: the spec's formula
            # by autodiff (rarely needed: soft targets from a teacher, a learned alpha).
            floats = {k: arrs[k] for k in wanted}
            _, vjp = jax.vjp(lambda fl: run(x.astype(compute), {**arrs, **fl}, False)[0]
                             .astype(x_dtype), floats)
            (ct,) = vjp(g_out)
            cts.update(ct)
        return g_x, cts

    loss.defvjp(fwd, bwd, symbolic_zeros=True)
    return loss(logits, arrays)


def _is_array(v):
    return isinstance(v, (jax.Array, np.ndarray))


def _split(**params):
    """Array-valued hyperparameters (traced through custom_vjp) vs static Python values."""
    arrays = {k: v for k, v in params.items() if _is_array(v)}
    static = {k: v for k, v in params.items() if not _is_array(v)}
    return arrays, static


def _check_arrays(logits, targets):
    if not isinstance(logits, jax.Array):
        raise TypeError(f"logits must be a jax array, got "
                        f"{type(logits).__module__}.{type(logits).__name__}")
    if not isinstance(targets, (jax.Array, np.ndarray)):
        raise TypeError(f"targets must be a jax array (the framework of logits), got "
                        f"{type(targets).__module__}.{type(targets).__name__}")
    _spec.check_logits_dtype(_kind(logits))


def sigmoid_focal_loss(logits, targets, *, gamma=2.0, alpha=0.25, pos_weight=None,
                       weight=None, ignore_index=None, label_smoothing=0.0, reduction="mean",
                       normalizer=None, from_logits=True):
    """Sigmoid focal loss on jax arrays. See :func:`focalx.sigmoid_focal_loss`."""
    _check_arrays(logits, targets)
    arrays, static = _split(alpha=alpha, pos_weight=pos_weight, weight=weight,
                            normalizer=normalizer)

    def run(x, arrs, need_grad):
        return _run(_spec.run_sigmoid_focal_loss, x, arrs, need_grad, gamma=gamma,
                    ignore_index=ignore_index, label_smoothing=label_smoothing,
                    reduction=reduction, from_logits=from_logits, **static)

    return _apply(run, logits, dict(arrays, targets=jnp.asarray(targets)), None)


def sigmoid_focal_loss_star(logits, targets, *, gamma=1.0, beta=0.0, alpha=None, weight=None,
                            ignore_index=None, label_smoothing=0.0, reduction="mean",
                            normalizer=None):
    """FL* on jax arrays. See :func:`focalx.sigmoid_focal_loss_star`."""
    _check_arrays(logits, targets)
    arrays, static = _split(alpha=alpha, weight=weight, normalizer=normalizer)

    def run(x, arrs, need_grad):
        return _run(_spec.run_sigmoid_focal_loss_star, x, arrs, need_grad, gamma=gamma,
                    beta=beta, ignore_index=ignore_index, label_smoothing=label_smoothing,
                    reduction=reduction, **static)

    return _apply(run, logits, dict(arrays, targets=jnp.asarray(targets)), None)


def softmax_focal_loss(logits, targets, *, gamma=2.0, alpha=None, weight=None,
                       ignore_index=-100, label_smoothing=0.0, reduction="mean",
                       normalizer=None, axis=-1, from_logits=True):
    """Softmax focal loss on jax arrays, class axis -1 by default (as optax).

    See :func:`focalx.softmax_focal_loss`.
    """
    _check_arrays(logits, targets)
    ndim = logits.ndim
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    arrays, static = _split(alpha=alpha, weight=weight, normalizer=normalizer)

    def run(x, arrs, need_grad):
        return _run(_spec.run_softmax_focal_loss, x, arrs, need_grad, gamma=gamma,
                    ignore_index=ignore_index, label_smoothing=label_smoothing,
                    reduction=reduction, axis=axis, from_logits=from_logits, **static)

    return _apply(run, logits, dict(arrays, targets=jnp.asarray(targets)), class_axis)
