"""nn.Module drop-ins for CrossEntropyLoss / BCEWithLogitsLoss, and global_normalizer."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from ... import _spec
from .functional import (asymmetric_loss, asymmetric_softmax_loss, sigmoid_focal_loss,
                         sigmoid_focal_loss_star, softmax_focal_loss)
from .functional import distribution_focal_loss, quality_focal_loss, varifocal_loss
from .functional import linear_softmax_focal_loss


# ---------------------------------------------------------------------------
# nn.Module drop-ins
# ---------------------------------------------------------------------------

def _legacy_reduction(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        return torch.nn._reduction.legacy_get_string(size_average, reduce)
    return reduction


def _param_buffer(name, value, *, class_vector=False, allow_scalar=True):
    """A hyperparameter array for a module, checked now as a call would check it (torch's
    own losses check what they can at construction), as a tensor (a buffer follows .to())."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        _spec.check_param(name, value, class_vector=class_vector, allow_scalar=allow_scalar)
        return torch.as_tensor(value)
    if value.device.type != "meta":  # (a meta tensor has no values to check)
        host = value.detach().cpu()
        _spec.check_param(name, (host.double() if host.is_floating_point() else host).numpy(),
                          class_vector=class_vector, allow_scalar=allow_scalar)
    return value


def _set_alpha(module: nn.Module, alpha, *, class_vector=False) -> None:
    """A number (or None) is an attribute; a per-class vector is a buffer that follows .to()."""
    if alpha is None or isinstance(alpha, numbers.Real):  # (a bool: check_alpha_number refuses it)
        module.alpha = _spec.check_alpha_number(alpha)
    else:
        module.register_buffer("alpha", _param_buffer("alpha", alpha,
                                                      class_vector=class_vector))


def _set_gamma(module: nn.Module, gamma, *, class_vector=False) -> None:
    """A number is an attribute; an array (per class) a buffer that follows .to(), as
    alpha."""
    if isinstance(gamma, numbers.Real) or not (isinstance(gamma, (list, tuple, torch.Tensor))
                                               or hasattr(gamma, "shape")):
        module.gamma = _spec.check_gamma(gamma)
    elif isinstance(gamma, torch.Tensor):
        module.register_buffer("gamma", _param_buffer("gamma", gamma, class_vector=class_vector))
    else:
        _spec.check_gamma_param(gamma, class_vector=class_vector)
        module.register_buffer("gamma", torch.as_tensor(gamma))


class FocalLoss(nn.Module):
    r"""Softmax focal loss with :class:`torch.nn.CrossEntropyLoss`'s signature plus ``gamma``, ``alpha``.

    ``nn.CrossEntropyLoss(...)`` -> ``focalx.torch.FocalLoss(...)`` is the whole change;
    with ``gamma=0`` (and ``alpha=None``, the default) the two give the same numbers.
    Input ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``; target class indices or probabilities.
    See :func:`focalx.softmax_focal_loss` for the formula.
    """

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0, *,
                 gamma: float = 2.0, alpha=None, epsilon: float = 0.0):
        super().__init__()
        self.epsilon = _spec.check_epsilon(epsilon)
        self.reduction = _spec.check_reduction(
            _legacy_reduction(size_average, reduce, reduction))
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True, binary=False)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        _set_gamma(self, gamma, class_vector=True)
        self.register_buffer("weight", _param_buffer("weight", weight, class_vector=True,
                                                     allow_scalar=False))
        _set_alpha(self, alpha, class_vector=True)

    def forward(self, input, target):
        return softmax_focal_loss(
            input, target, gamma=self.gamma, alpha=self.alpha, weight=self.weight,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
            reduction=self.reduction, epsilon=self.epsilon)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, alpha=self.alpha, weight=self.weight,
                              ignore_index=self.ignore_index,
                              label_smoothing=self.label_smoothing, reduction=self.reduction,
                              epsilon=self.epsilon)


class SigmoidFocalLoss(nn.Module):
    r"""Sigmoid focal loss with :class:`torch.nn.BCEWithLogitsLoss`'s signature plus ``gamma``, ``alpha``.

    ``SigmoidFocalLoss(gamma=0, alpha=None)`` equals ``nn.BCEWithLogitsLoss()`` (with its
    ``weight`` and ``pos_weight``). ``forward(input, target, normalizer=None)``: RetinaNet's
    normalisation is ``reduction="sum"`` and ``normalizer=num_pos`` (a number or a 0-d
    tensor; under DDP, :func:`global_normalizer`). See :func:`focalx.sigmoid_focal_loss`.
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean",
                 pos_weight=None, *, gamma: float = 2.0, alpha=0.25, epsilon: float = 0.0):
        super().__init__()
        self.epsilon = _spec.check_epsilon(epsilon)
        self.reduction = _spec.check_reduction(
            _legacy_reduction(size_average, reduce, reduction))
        _set_gamma(self, gamma)
        self.register_buffer("weight", _param_buffer("weight", weight))
        self.register_buffer("pos_weight", _param_buffer("pos_weight", pos_weight))
        _set_alpha(self, alpha)

    def forward(self, input, target, normalizer=None):
        return sigmoid_focal_loss(
            input, target, gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
            weight=self.weight, reduction=self.reduction, normalizer=normalizer,
            epsilon=self.epsilon)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
                              weight=self.weight, reduction=self.reduction,
                              epsilon=self.epsilon)


class SigmoidFocalLossStar(nn.Module):
    """FL* as a module. See :func:`focalx.sigmoid_focal_loss_star`."""

    def __init__(self, *, gamma: float = 1.0, beta: float = 0.0, alpha=None,
                 reduction: str = "mean"):
        super().__init__()
        self.gamma = _spec.check_gamma(gamma, strictly_positive=True)
        self.beta = _spec.check_beta(beta)
        self.alpha = _spec.check_alpha_number(alpha)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, input, target, normalizer=None):
        return sigmoid_focal_loss_star(input, target, gamma=self.gamma, beta=self.beta,
                                       alpha=self.alpha, reduction=self.reduction,
                                       normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, beta=self.beta, alpha=self.alpha,
                              reduction=self.reduction)


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

class AsymmetricLoss(nn.Module):
    """Asymmetric Loss (multi-label) as a module. See :func:`focalx.asymmetric_loss`.

    ``AsymmetricLoss(gamma_neg=4, gamma_pos=1, clip=0.05, reduction="sum")`` gives the
    numbers of the ASL repository's and timm's ``AsymmetricLoss`` of the same arguments
    (without their eps=1e-8 clamp). ``forward(input, target, normalizer=None)``."""

    def __init__(self, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 weight=None, reduction: str = "mean"):
        super().__init__()
        self.gamma_pos = _spec.check_exponent("gamma_pos", gamma_pos)
        self.gamma_neg = _spec.check_exponent("gamma_neg", gamma_neg)
        self.clip = _spec.check_clip(clip)
        self.register_buffer("weight", _param_buffer("weight", weight))
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, input, target, normalizer=None):
        return asymmetric_loss(input, target, gamma_pos=self.gamma_pos,
                               gamma_neg=self.gamma_neg, clip=self.clip, weight=self.weight,
                               reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
                              clip=self.clip, weight=self.weight, reduction=self.reduction)


class AsymmetricSoftmaxLoss(nn.Module):
    """The single-label Asymmetric Loss as a module (the ASL repository's
    ``ASLSingleLabel(gamma_pos, gamma_neg, eps)`` is ``label_smoothing=eps``). Input
    ``(N, C)`` or ``(N, C, d1, ...)``, class-index targets. See
    :func:`focalx.asymmetric_softmax_loss`."""

    def __init__(self, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0,
                 label_smoothing: float = 0.1, ignore_index: int = -100,
                 reduction: str = "mean"):
        super().__init__()
        self.gamma_pos = _spec.check_exponent("gamma_pos", gamma_pos)
        self.gamma_neg = _spec.check_exponent("gamma_neg", gamma_neg)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True, binary=False)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, input, target):
        return asymmetric_softmax_loss(
            input, target, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
            label_smoothing=self.label_smoothing, ignore_index=self.ignore_index,
            reduction=self.reduction)

    def extra_repr(self):
        return _spec.describe(gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
                              label_smoothing=self.label_smoothing,
                              ignore_index=self.ignore_index, reduction=self.reduction)


class QualityFocalLoss(nn.Module):
    """Quality Focal Loss as a module; ``forward(input, target, weight=None,
    normalizer=None)``, ``target`` dense or the pair ``(labels, scores)``. GFL's
    normalisation is ``reduction="sum"`` and ``normalizer=num_pos``. See
    :func:`focalx.quality_focal_loss`."""

    def __init__(self, *, beta: float = 2.0, reduction: str = "mean"):
        super().__init__()
        self.beta = _spec.check_exponent("beta", beta)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, input, target, weight=None, normalizer=None):
        return quality_focal_loss(input, target, beta=self.beta, weight=weight,
                                  reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(beta=self.beta, reduction=self.reduction)


class VarifocalLoss(nn.Module):
    """Varifocal Loss as a module; ``forward(input, target, weight=None,
    normalizer=None)``. See :func:`focalx.varifocal_loss`."""

    def __init__(self, *, alpha: float = 0.75, gamma: float = 2.0, iou_weighted: bool = True,
                 reduction: str = "mean"):
        super().__init__()
        self.alpha = _spec.check_vfl_alpha(alpha)
        self.gamma = _spec.check_exponent("gamma", gamma)
        self.iou_weighted = _spec.check_bool(iou_weighted, "iou_weighted")
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, input, target, weight=None, normalizer=None):
        return varifocal_loss(input, target, alpha=self.alpha, gamma=self.gamma,
                              iou_weighted=self.iou_weighted, weight=weight,
                              reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(alpha=self.alpha, gamma=self.gamma,
                              iou_weighted=self.iou_weighted, reduction=self.reduction)


class DistributionFocalLoss(nn.Module):
    """Distribution Focal Loss as a module; ``forward(input, target, weight=None,
    normalizer=None)``, input ``(N, n_bins + 1)`` (bins on axis 1). See
    :func:`focalx.distribution_focal_loss`."""

    def __init__(self, *, ignore_index=None, reduction: str = "mean"):
        super().__init__()
        self.ignore_index = _spec.check_dfl_ignore_index(ignore_index)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, input, target, weight=None, normalizer=None):
        return distribution_focal_loss(input, target, weight=weight,
                                       ignore_index=self.ignore_index,
                                       reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(ignore_index=self.ignore_index, reduction=self.reduction)


def global_normalizer(num_pos, *, group=None):
    """RetinaNet's normalizer under data parallelism (DDP): the number of positives over
    every rank, clamped to at least 1, divided by the number of ranks.

    DDP averages the ranks' gradients, so a loss normalised by this on every rank,
    ``sigmoid_focal_loss(x, t, reduction="sum", normalizer=global_normalizer(num_pos))``,
    has the gradient of the whole batch's loss normalised by all its positives (as one
    process would compute it). ``num_pos``: this rank's count, a number or a tensor (of
    the logits' device); the all-reduce runs on the device (no host sync). Without an
    initialised process group it is ``max(num_pos, 1)``. Returns a 0-d float32 tensor.
    """
    if isinstance(num_pos, torch.Tensor):
        total = num_pos.detach().to(torch.float32).reshape(())
    elif isinstance(num_pos, numbers.Real) and not isinstance(num_pos, bool):
        total = torch.tensor(float(num_pos))
    else:
        raise TypeError(f"num_pos must be a number or a tensor, got {type(num_pos).__name__}")
    world = 1
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        if total.device.type == "cpu" and dist.get_backend(group) == "nccl":
            total = total.to(torch.device("cuda", torch.cuda.current_device()))
        total = total.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        world = dist.get_world_size(group)
    return torch.clamp_min(total, 1.0) / world


class LinearFocalLoss(nn.Module):
    r"""A linear layer and the softmax focal loss of its output, fused: the logits are never
    held whole (see :func:`focalx.linear_softmax_focal_loss`).

    :class:`torch.nn.LinearCrossEntropyLoss`'s arguments plus ``gamma``, ``alpha`` and
    ``chunk_size``: it owns ``self.linear`` (``nn.Linear(in_features, num_classes,
    bias)``), and ``forward(input, target)`` takes ``input (..., in_features)`` and
    ``target (...)`` class indices (a language model's ``(B, T, H)`` states and ``(B, T)``
    tokens); ``"none"`` returns the target's shape. With ``gamma=0`` (and ``alpha=None``)
    it is the cross-entropy of the layer's output. ``ignore_index`` is -100 by default,
    as ``nn.CrossEntropyLoss``'s.
    """

    def __init__(self, in_features: int, num_classes: int, *, bias: bool = False,
                 device=None, dtype=None, reduction: str = "mean", weight=None,
                 ignore_index: int | None = -100, label_smoothing: float = 0.0,
                 gamma: float = 2.0, alpha=None, chunk_size: int | None = None):
        super().__init__()
        _spec.check_linear_module(in_features, num_classes)
        self.linear = nn.Linear(in_features, num_classes, bias=bias, device=device,
                                dtype=dtype)
        self.reduction = _spec.check_reduction(reduction)
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True,
                                                     binary=False)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.chunk_size = _spec.check_chunk_size(chunk_size)
        _set_gamma(self, gamma, class_vector=True)
        self.register_buffer("weight", _param_buffer("weight", weight, class_vector=True,
                                                     allow_scalar=False))
        _set_alpha(self, alpha, class_vector=True)
        # (per-class vectors of another length fail here, not at the first forward)
        _spec.check_linear_module(in_features, num_classes, **{
            name: tuple(v.shape) for name in ("gamma", "alpha", "weight")
            if isinstance(v := getattr(self, name), torch.Tensor) and v.ndim})

    def forward(self, input, target):
        # (flattened separately, a target of another shape would pair rows with other
        # rows' targets)
        _spec.check_linear_module_inputs(input.shape, target.shape, self.linear.in_features)
        lead = tuple(target.shape)
        loss = linear_softmax_focal_loss(
            input.reshape(-1, input.shape[-1]), self.linear.weight, target.reshape(-1),
            linear_bias=self.linear.bias, gamma=self.gamma, alpha=self.alpha,
            weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction,
            chunk_size=self.chunk_size)
        return loss.reshape(lead) if self.reduction == "none" else loss

    def extra_repr(self):
        return (f"in_features={self.linear.in_features}, num_classes="
                f"{self.linear.out_features}, bias={self.linear.bias is not None}, " +
                _spec.describe(gamma=self.gamma, alpha=self.alpha, weight=self.weight,
                               ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing,
                               reduction=self.reduction, chunk_size=self.chunk_size))
