"""Paddle backend: the spec on paddle tensors (public name: ``focalx.paddle``).

Works in dygraph (eager) mode and under ``paddle.jit.to_static`` (both the
default SOT translator and ``full_graph=True``). Under SOT a call is one graph break:
the loss runs in dygraph mode, with dygraph's numbers and value checks. The gradient w.r.t. the logits
is the spec's closed form, through ``paddle.autograd.PyLayer``: computed in the
forward pass when the logits need a gradient and saved as the only full-size
tensor; backward is one multiplication. A second derivative through it is not
supported: ``paddle.grad(..., create_graph=True)`` raises, as in the torch backend. Small calls (up to
``_HOST_MAX`` float32 / float64 logits) in dygraph mode on the CPU run the same spec
on NumPy copies instead of Paddle's operations, whose per-operation dispatch dominates
them, and return the loss and gradient through the same kind of PyLayer.

Value checks (targets in [0, 1], class indices in range, alpha in [0, 1], ...)
raise ``ValueError`` in dygraph mode on the CPU, where tensor values are read
directly. On a GPU, where that read would be a host synchronisation (Paddle's
own ``cross_entropy`` makes one for its label check), and in a static graph
(``to_static(full_graph=True)``), where values are symbolic, a failed check
makes the loss and its gradient NaN instead of a plausible wrong number, as
:mod:`focalx.backends.jax` does under ``jit``.

float16 / bfloat16 logits are computed in float32 (Paddle 3.3 has no CPU
float16 kernels for ``abs``, ``log_softmax``, ``maximum``, nor bfloat16 ones
for ``exp``) and the loss and gradient are returned in the input dtype;
float32 and float64 are computed as they are.

The class axis of the softmax loss defaults to -1, as in
``paddle.nn.functional.cross_entropy``. :class:`FocalLoss` and
:class:`SigmoidFocalLoss` take the exact signatures of
``paddle.nn.CrossEntropyLoss`` and ``paddle.nn.BCEWithLogitsLoss`` plus
``gamma`` and ``alpha``.

The package's files, by job: ``ops`` (PaddleOps: the spec's operations on paddle
tensors, Paddle's numerical quirks, places, dtypes and kernels), ``autograd`` (a call
and its PyLayer), ``blocks`` and ``host`` (the two speed paths, each with its switch
and invariants at its top), ``functional`` (the public functions) and ``layers`` (the
nn.Layer drop-ins and global_normalizer).
"""

from __future__ import annotations

import sys

import paddle

# focalx's dispatch (focalx._dispatch) is plain Python that behaves the same in
# dygraph and static mode; to_static(full_graph=True)'s AST translator would rewrite
# it (and break it), so the translator is told to leave that module alone. focalx
# loads this adapter at `import focalx` when paddle is already imported (__init__).
paddle.jit.ignore_module([sys.modules["focalx._dispatch"]])

from .._forward import forward  # noqa: E402
from .functional import (  # noqa: E402
    asymmetric_loss, asymmetric_softmax_loss, sigmoid_focal_loss, sigmoid_focal_loss_star,
    softmax_focal_loss)
from .layers import (  # noqa: E402
    AsymmetricLoss, AsymmetricSoftmaxLoss, FocalLoss, SigmoidFocalLoss, SigmoidFocalLossStar,
    global_normalizer)
from .functional import (  # noqa: E402
    distribution_focal_loss, quality_focal_loss, varifocal_loss)
from .layers import (  # noqa: E402
    DistributionFocalLoss, QualityFocalLoss, VarifocalLoss)
from .functional import linear_softmax_focal_loss  # noqa: E402
from .layers import LinearFocalLoss  # noqa: E402

__all__ = [
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "sigmoid_focal_loss_star",
    "asymmetric_loss",
    "asymmetric_softmax_loss",
    "FocalLoss",
    "SigmoidFocalLoss",
    "SigmoidFocalLossStar",
    "AsymmetricLoss",
    "AsymmetricSoftmaxLoss",
    "global_normalizer",
    "quality_focal_loss",
    "varifocal_loss",
    "distribution_focal_loss",
    "QualityFocalLoss",
    "VarifocalLoss",
    "DistributionFocalLoss",
    "linear_softmax_focal_loss",
    "LinearFocalLoss",
]

# settings documented on this module before it became a package
forward(__name__, {"THREADS": f"{__name__}.blocks", "_HOST_MAX": f"{__name__}.host"})
