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
(smaller eager calls run op by op: a compilation per shape would not pay). Eagerly,
a configuration's first calls run op by op while its function compiles in a
background thread (``BACKGROUND_COMPILE``; ``wait_for_compiles()`` waits for it), so
no call waits seconds for XLA. The
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

The package's files, by job: ``ops`` (TensorflowOps and one run of the spec), ``xla``
(the compiled speed path, switched by ``xla.USE_XLA``) and ``functional`` (the public
functions and their custom gradient).
"""

from __future__ import annotations

from .._forward import forward
from .functional import (asymmetric_loss, asymmetric_softmax_loss, sigmoid_focal_loss,
                         sigmoid_focal_loss_star, softmax_focal_loss)
from .functional import distribution_focal_loss, quality_focal_loss, varifocal_loss
from .functional import linear_softmax_focal_loss
from .xla import wait_for_compiles

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star",
           "quality_focal_loss", "varifocal_loss", "distribution_focal_loss",
           "asymmetric_loss", "asymmetric_softmax_loss", "linear_softmax_focal_loss",
           "wait_for_compiles"]

# the compiled path's settings, documented on this module before it became a package
forward(__name__, {n: f"{__name__}.xla" for n in (
    "USE_XLA", "EAGER_XLA_MIN_SIZE", "CACHE_SIZE", "EAGER_MAX_SHAPES",
    "BACKGROUND_COMPILE")})
