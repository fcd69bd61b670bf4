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

The package's files, by job: ``ops`` (JaxOps) and ``functional`` (a run of the spec,
its custom_vjp, the public functions).
"""

from __future__ import annotations

from .functional import (asymmetric_loss, asymmetric_softmax_loss, sigmoid_focal_loss,
                         sigmoid_focal_loss_star, softmax_focal_loss)
from .functional import distribution_focal_loss, quality_focal_loss, varifocal_loss
from .functional import linear_softmax_focal_loss

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star",
           "quality_focal_loss", "varifocal_loss", "distribution_focal_loss",
           "asymmetric_loss", "asymmetric_softmax_loss", "linear_softmax_focal_loss"]
