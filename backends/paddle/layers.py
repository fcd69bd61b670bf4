"""nn.Layer drop-ins for CrossEntropyLoss / BCEWithLogitsLoss, and global_normalizer."""

from __future__ import annotations

import numbers

import numpy as np
import paddle

from ... import _spec
from .functional import (asymmetric_loss, asymmetric_softmax_loss, sigmoid_focal_loss,
                         sigmoid_focal_loss_star, softmax_focal_loss)
from .functional import distribution_focal_loss, quality_focal_loss, varifocal_loss
from .functional import linear_softmax_focal_loss
from .ops import _FLOATS, _is_tensor, _not_translated, _sot_fallback


# ---------------------------------------------------------------------------
# nn.Layer drop-ins
# ---------------------------------------------------------------------------

def _buffer(layer, name, value, *, class_vector=False, allow_scalar=True):
    """An optional tensor hyperparameter as a non-persistable buffer (it follows .to()),
    checked now as a call would check it (as Paddle's own losses check their arguments
    at construction)."""
    if value is None:
        setattr(layer, name, None)
        return
    if not _is_tensor(value):
        arr = _spec.check_param(name, value, class_vector=class_vector,
                                allow_scalar=allow_scalar)
        value = paddle.to_tensor(arr.astype(np.float64 if arr.dtype.kind == "f" else arr.dtype))
    elif paddle.in_dynamic_mode():
        host = value.astype("float64") if value.dtype in _FLOATS else value
        _spec.check_param(name, host.numpy(), class_vector=class_vector,
                          allow_scalar=allow_scalar)
    layer.register_buffer(name, value, persistable=False)


def _set_alpha(layer, alpha, *, class_vector=False):
    if alpha is None or isinstance(alpha, numbers.Real):  # (a bool: check_alpha_number refuses it)
        layer.alpha = _spec.check_alpha_number(alpha)
    else:
        _buffer(layer, "alpha", alpha, class_vector=class_vector)


def _set_gamma(layer, gamma, *, class_vector=False):
    """A number is an attribute; an array (per class) a buffer, as alpha."""
    if isinstance(gamma, numbers.Real) or not (isinstance(gamma, (list, tuple)) or
                                               hasattr(gamma, "shape")):
        layer.gamma = _spec.check_gamma(gamma)
    else:
        if not _is_tensor(gamma):
            _spec.check_gamma_param(gamma, class_vector=class_vector)  # (bool, 0-d: as calls)
        _buffer(layer, "gamma", gamma, class_vector=class_vector)


def _check_flag(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


@_not_translated
def _in_layer_words(loss, input, label):
    """loss(input, label), its errors in the words of FocalLoss's signature (input, label,
    use_softmax) rather than the functions' (logits, targets, from_logits)."""
    try:
        return loss(input, label)
    except (TypeError, ValueError) as exc:
        text = str(exc).replace("from_logits=False", "use_softmax=False").replace(
            "logits", "input").replace("targets", "label")
        raise type(exc)(text) from None


class FocalLoss(paddle.nn.Layer):
    r"""Softmax focal loss with ``paddle.nn.CrossEntropyLoss``'s signature plus ``gamma``, ``alpha``.

    ``paddle.nn.CrossEntropyLoss(...)`` -> ``focalx.paddle.FocalLoss(...)`` is the whole
    change. With ``gamma=0`` (and ``alpha=None``, the default) it equals Paddle's
    cross-entropy, except where that departs from the spec (see docs/usage.md, "Paddle": the mean
    with ``ignore_index`` and no ``weight``, soft labels with ``weight``).

    .. math:: \mathrm{FL} = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c

    Parameters
    ----------
    weight : paddle.Tensor or sequence, shape ``(C,)``, optional
        Per-class weights; the mean over class-index targets divides by the sum
        of the targets' weights.
    ignore_index : int
        Class-index targets equal to it contribute nothing (default -100).
    reduction : {"mean", "sum", "none"}
    soft_label : bool
        False: ``label`` holds class indices, shape ``input.shape`` without the
        class axis, or with a size-1 class axis (``(N, 1)`` for ``(N, C)`` input).
        True: ``label`` holds class probabilities of ``input``'s shape.
    axis : int
        The class axis (default -1).
    use_softmax : bool
        True: ``input`` holds logits. False: ``input`` holds probabilities
        (the spec's ``from_logits=False``), used as given.
    label_smoothing : float in [0, 1)
    name : str, optional
        Unused, as in Paddle.
    gamma : float >= 0 or a per-class vector of them, keyword-only
        Focusing parameter (default 2).
    alpha : None, float in [0, 1] or sequence of C floats, keyword-only
        Class balance factor; None (default) switches it off.
    epsilon : float, keyword-only
        Poly-1's coefficient (default 0: none); see :func:`softmax_focal_loss`.
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 soft_label: bool = False, axis: int = -1, use_softmax: bool = True,
                 label_smoothing: float = 0.0, name=None, *, gamma: float = 2.0,
                 alpha=None, epsilon: float = 0.0):
        super().__init__()
        self.epsilon = _spec.check_epsilon(epsilon)
        self.reduction = _spec.check_reduction(reduction)
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True,
                                                     binary=False)
        self.soft_label = _check_flag("soft_label", soft_label)
        self.use_softmax = _check_flag("use_softmax", use_softmax)
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise TypeError(f"axis must be an int, got {type(axis).__name__}")
        self.axis = int(axis)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        _set_gamma(self, gamma, class_vector=True)
        self.name = name
        _buffer(self, "weight", weight, class_vector=True, allow_scalar=False)
        _set_alpha(self, alpha, class_vector=True)

    def forward(self, input, label):
        _sot_fallback(recursive=True)
        if paddle.in_dynamic_mode():  # (errors are raised in dygraph, where values are read)
            return _in_layer_words(self._loss, input, label)
        return self._loss(input, label)

    def _loss(self, input, label):
        return softmax_focal_loss(
            input, label, gamma=self.gamma, alpha=self.alpha,
            weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction, axis=self.axis,
            from_logits=self.use_softmax, soft_label=self.soft_label, epsilon=self.epsilon)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, alpha=self.alpha, weight=self.weight,
                              ignore_index=self.ignore_index, soft_label=self.soft_label,
                              axis=self.axis, use_softmax=self.use_softmax,
                              label_smoothing=self.label_smoothing, reduction=self.reduction,
                              epsilon=self.epsilon)


class SigmoidFocalLoss(paddle.nn.Layer):
    r"""Sigmoid focal loss with ``paddle.nn.BCEWithLogitsLoss``'s signature plus ``gamma``, ``alpha``.

    ``SigmoidFocalLoss(gamma=0, alpha=None)`` equals ``paddle.nn.BCEWithLogitsLoss()``
    (with its ``weight`` and ``pos_weight``). See :func:`sigmoid_focal_loss`.

    Parameters
    ----------
    weight : paddle.Tensor, optional
        Elementwise weight, broadcastable to the input.
    reduction : {"mean", "sum", "none"}
    pos_weight : paddle.Tensor, optional
        Weight of the positive term, broadcastable to the input (e.g. ``(C,)``).
    name : str, optional
        Unused, as in Paddle.
    gamma : float >= 0 or array of them (e.g. per class), keyword-only (default 2)
    alpha : None, float in [0, 1] or array, keyword-only (default 0.25)
    epsilon : float, keyword-only
        Poly-1's coefficient (default 0: none); see :func:`sigmoid_focal_loss`.
    """

    def __init__(self, weight=None, reduction: str = "mean", pos_weight=None, name=None, *,
                 gamma: float = 2.0, alpha=0.25, epsilon: float = 0.0):
        super().__init__()
        self.epsilon = _spec.check_epsilon(epsilon)
        self.reduction = _spec.check_reduction(reduction)
        _set_gamma(self, gamma)
        self.name = name
        _buffer(self, "weight", weight)
        _buffer(self, "pos_weight", pos_weight)
        _set_alpha(self, alpha)

    def forward(self, logit, label, normalizer=None):
        _sot_fallback(recursive=True)
        return sigmoid_focal_loss(
            logit, label, gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
            weight=self.weight, reduction=self.reduction, normalizer=normalizer,
            epsilon=self.epsilon)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
                              weight=self.weight, reduction=self.reduction,
                              epsilon=self.epsilon)


class SigmoidFocalLossStar(paddle.nn.Layer):
    """FL* as a layer. See :func:`sigmoid_focal_loss_star`."""

    def __init__(self, *, gamma: float = 1.0, beta: float = 0.0, alpha=None,
                 reduction: str = "mean"):
        super().__init__()
        self.gamma = _spec.check_gamma(gamma, strictly_positive=True)
        self.beta = _spec.check_beta(beta)
        self.alpha = _spec.check_alpha_number(alpha)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, logit, label, normalizer=None):
        _sot_fallback(recursive=True)
        return sigmoid_focal_loss_star(logit, label, gamma=self.gamma, beta=self.beta,
                                       alpha=self.alpha, reduction=self.reduction,
                                       normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, beta=self.beta, alpha=self.alpha,
                              reduction=self.reduction)


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

class AsymmetricLoss(paddle.nn.Layer):
    """Asymmetric Loss (multi-label) as a layer. See :func:`asymmetric_loss`.

    ``AsymmetricLoss(gamma_neg=4, gamma_pos=1, clip=0.05, reduction="sum")`` gives the
    numbers of the ASL repository's ``AsymmetricLoss`` of the same arguments (without its
    eps=1e-8 clamp). ``forward(logit, label, normalizer=None)``."""

    def __init__(self, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 weight=None, reduction: str = "mean"):
        super().__init__()
        self.gamma_pos = _spec.check_exponent("gamma_pos", gamma_pos)
        self.gamma_neg = _spec.check_exponent("gamma_neg", gamma_neg)
        self.clip = _spec.check_clip(clip)
        _buffer(self, "weight", weight)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, logit, label, normalizer=None):
        _sot_fallback(recursive=True)
        return asymmetric_loss(logit, label, gamma_pos=self.gamma_pos,
                               gamma_neg=self.gamma_neg, clip=self.clip, weight=self.weight,
                               reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
                              clip=self.clip, weight=self.weight, reduction=self.reduction)


class AsymmetricSoftmaxLoss(paddle.nn.Layer):
    """The single-label Asymmetric Loss as a layer (the ASL repository's
    ``ASLSingleLabel(gamma_pos, gamma_neg, eps)`` is ``label_smoothing=eps``); class-index
    labels, class axis ``axis`` (default -1). See :func:`asymmetric_softmax_loss`."""

    def __init__(self, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0,
                 label_smoothing: float = 0.1, ignore_index: int = -100, axis: int = -1,
                 reduction: str = "mean"):
        super().__init__()
        self.gamma_pos = _spec.check_exponent("gamma_pos", gamma_pos)
        self.gamma_neg = _spec.check_exponent("gamma_neg", gamma_neg)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True,
                                                     binary=False)
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise TypeError(f"axis must be an int, got {type(axis).__name__}")
        self.axis = int(axis)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, logit, label):
        _sot_fallback(recursive=True)
        return asymmetric_softmax_loss(
            logit, label, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
            label_smoothing=self.label_smoothing, ignore_index=self.ignore_index,
            axis=self.axis, reduction=self.reduction)

    def extra_repr(self):
        return _spec.describe(gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
                              label_smoothing=self.label_smoothing,
                              ignore_index=self.ignore_index, axis=self.axis,
                              reduction=self.reduction)


class QualityFocalLoss(paddle.nn.Layer):
    """Quality Focal Loss as a layer; ``forward(logit, label, weight=None,
    normalizer=None)``, ``label`` dense or the pair ``(labels, scores)``. See
    :func:`quality_focal_loss`."""

    def __init__(self, *, beta: float = 2.0, reduction: str = "mean"):
        super().__init__()
        self.beta = _spec.check_exponent("beta", beta)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, logit, label, weight=None, normalizer=None):
        _sot_fallback(recursive=True)
        return quality_focal_loss(logit, label, beta=self.beta, weight=weight,
                                  reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(beta=self.beta, reduction=self.reduction)


class VarifocalLoss(paddle.nn.Layer):
    """Varifocal Loss as a layer; ``forward(logit, label, weight=None, normalizer=None)``.
    See :func:`varifocal_loss`."""

    def __init__(self, *, alpha: float = 0.75, gamma: float = 2.0, iou_weighted: bool = True,
                 reduction: str = "mean"):
        super().__init__()
        self.alpha = _spec.check_vfl_alpha(alpha)
        self.gamma = _spec.check_exponent("gamma", gamma)
        self.iou_weighted = _spec.check_bool(iou_weighted, "iou_weighted")
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, logit, label, weight=None, normalizer=None):
        _sot_fallback(recursive=True)
        return varifocal_loss(logit, label, alpha=self.alpha, gamma=self.gamma,
                              iou_weighted=self.iou_weighted, weight=weight,
                              reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(alpha=self.alpha, gamma=self.gamma,
                              iou_weighted=self.iou_weighted, reduction=self.reduction)


class DistributionFocalLoss(paddle.nn.Layer):
    """Distribution Focal Loss as a layer; ``forward(logit, label, weight=None,
    normalizer=None)``, logit ``(N, n_bins + 1)`` (bins on the last axis). See
    :func:`distribution_focal_loss`."""

    def __init__(self, *, ignore_index=None, reduction: str = "mean"):
        super().__init__()
        self.ignore_index = _spec.check_dfl_ignore_index(ignore_index)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, logit, label, weight=None, normalizer=None):
        _sot_fallback(recursive=True)
        return distribution_focal_loss(logit, label, weight=weight,
                                       ignore_index=self.ignore_index,
                                       reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(ignore_index=self.ignore_index, reduction=self.reduction)


def global_normalizer(num_pos, *, group=None):
    """RetinaNet's normalizer under data parallelism (paddle.DataParallel): the number of
    positives over every rank, clamped to at least 1, divided by the number of ranks.

    DataParallel averages the ranks' gradients, so a loss normalised by this on every
    rank, ``sigmoid_focal_loss(x, t, reduction="sum",
    normalizer=global_normalizer(num_pos))``, has the gradient of the whole batch's loss
    normalised by all its positives (as one process would compute it). ``num_pos``: this
    rank's count, a number or a tensor; the all-reduce runs where the tensor is. Without
    an initialised parallel environment it is ``max(num_pos, 1)``. Returns a 0-d float32
    tensor.
    """
    if _is_tensor(num_pos):
        total = num_pos.detach().astype("float32").reshape([])
    elif isinstance(num_pos, numbers.Real) and not isinstance(num_pos, bool):
        total = paddle.to_tensor(float(num_pos), dtype="float32")
    else:
        raise TypeError(f"num_pos must be a number or a tensor, got {type(num_pos).__name__}")
    dist = paddle.distributed
    world = dist.get_world_size(group) if dist.is_initialized() else 1
    if world > 1:
        total = total.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return paddle.clip(total, min=1.0) / world


@_not_translated
def _check_linear_shapes(input, label, in_features):
    # (a static program's unknown sizes are -1)
    _spec.check_linear_module_inputs([None if d == -1 else d for d in input.shape],
                                     [None if d == -1 else d for d in label.shape],
                                     in_features, target_name="label", trailing_one=True)


class LinearFocalLoss(paddle.nn.Layer):
    r"""A linear layer and the softmax focal loss of its output, fused: the logits are never
    held whole (see :func:`focalx.linear_softmax_focal_loss`).

    It owns ``linear_weight`` of shape ``(num_classes, in_features)`` (the loss's layout,
    torch's ``nn.Linear.weight``: ``paddle.nn.Linear``'s weight is its transpose) and, with
    ``bias=True``, ``linear_bias``; ``forward(input, label)`` takes ``input (...,
    in_features)`` and ``label (...)`` class indices; ``"none"`` returns the label's shape.
    ``weight`` is the per-class weight of the loss, as in ``CrossEntropyLoss``.
    """

    def __init__(self, in_features: int, num_classes: int, *, bias: bool = False,
                 weight=None, ignore_index: int | None = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, gamma: float = 2.0, alpha=None,
                 chunk_size: int | None = None):
        super().__init__()
        _spec.check_linear_module(in_features, num_classes)
        bound = 1.0 / max(in_features, 1) ** 0.5  # (nn.Linear's default initialisation)
        init = paddle.nn.initializer.Uniform(-bound, bound)
        self.linear_weight = self.create_parameter([num_classes, in_features],
                                                   default_initializer=init)
        self.linear_bias = self.create_parameter([num_classes], is_bias=True,
                                                 default_initializer=init) if bias else None
        self.reduction = _spec.check_reduction(reduction)
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True,
                                                     binary=False)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.chunk_size = _spec.check_chunk_size(chunk_size)
        _set_gamma(self, gamma, class_vector=True)
        _buffer(self, "weight", weight, class_vector=True, allow_scalar=False)
        _set_alpha(self, alpha, class_vector=True)
        # (per-class vectors of another length fail here, not at the first forward)
        _spec.check_linear_module(in_features, num_classes, **{
            name: tuple(v.shape) for name in ("gamma", "alpha", "weight")
            if isinstance(v := getattr(self, name), paddle.Tensor) and v.ndim})

    def forward(self, input, label):
        # (flattened separately, a label of another shape would pair rows with other
        # rows' labels)
        _check_linear_shapes(input, label, self.linear_weight.shape[1])
        lead = list(label.shape)
        loss = linear_softmax_focal_loss(
            input.reshape([-1, input.shape[-1]]), self.linear_weight, label.reshape([-1]),
            linear_bias=self.linear_bias, gamma=self.gamma, alpha=self.alpha,
            weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction,
            chunk_size=self.chunk_size)
        return loss.reshape(lead) if self.reduction == "none" else loss
