"""PyTorch backend: the spec on torch tensors (public name: ``focalx.torch``).

CPU and CUDA run the same code. Value checks (class-index range, targets in
[0, 1], ...) raise ValueError on CPU tensors outside ``torch.compile``; on an
accelerator or while compiling, where reading values would need a host sync,
they become device-side asserts (``torch._assert_async``, RuntimeError). The gradient w.r.t. the logits is the spec's closed form, computed
in the forward pass when autograd needs it and saved as the only full-size
tensor for backward (a second derivative, ``create_graph=True``, raises).

float16 / bfloat16 logits are computed in float32 and the loss and gradient are
returned in the input dtype (the loss in float32 under ``torch.autocast``);
float32 and float64 are computed as they are.

The package's files, by job: ``ops`` (TorchOps), ``autograd`` (the autograd.Function
and one call), the two speed paths of eager calls, ``eager`` (op by op on row blocks)
and ``fused`` (the compiled kernel, switched by FOCALX_TORCH_COMPILE), each with its
rules at its top, ``functional`` (the public functions) and ``modules`` (the nn.Module
drop-ins and global_normalizer).
"""

from __future__ import annotations

from .functional import (asymmetric_loss, asymmetric_softmax_loss, sigmoid_focal_loss,
                         sigmoid_focal_loss_star, softmax_focal_loss)
from .functional import distribution_focal_loss, quality_focal_loss, varifocal_loss
from .fused import wait_for_kernels
from .modules import (AsymmetricLoss, AsymmetricSoftmaxLoss, FocalLoss, SigmoidFocalLoss,
                      SigmoidFocalLossStar, global_normalizer)
from .modules import DistributionFocalLoss, QualityFocalLoss, VarifocalLoss
from .functional import linear_softmax_focal_loss
from .modules import LinearFocalLoss

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
    "wait_for_kernels",
    "quality_focal_loss",
    "varifocal_loss",
    "distribution_focal_loss",
    "QualityFocalLoss",
    "VarifocalLoss",
    "DistributionFocalLoss",
    "linear_softmax_focal_loss",
    "LinearFocalLoss",
]
