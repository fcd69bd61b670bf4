"""The public functions (signatures generated from focalx/_signatures.py)."""

from __future__ import annotations

from collections.abc import Sequence  # (the generated signatures' annotations, which
from typing import Literal  # Paddle's to_static may evaluate)

import numpy as np  # (the generated annotations name np.ndarray)
import paddle

from ... import _spec
from .autograd import (_cast, _empty, _FocalLayer, _in_compute_dtype, _other_grads, _run,
                       _wants_grad)
from .host import _F32, _F64, _TENSOR, _host_apply
from .linear import apply_linear
from .ops import _is_tensor, _kind, _not_translated, _sot_fallback


@_not_translated
def _split(targets, params):
    """({"targets": targets, tensor-valued params}, the other params). `params` is the
    caller's own dict (it may be returned)."""
    if _PLAIN.issuperset(map(type, params.values())):  # (no tensor: the usual call, in C)
        return {"targets": targets}, params
    arrays, static = {"targets": targets}, {}
    for k, v in params.items():
        # (None and numbers first: this runs at every call)
        if v is not None and not isinstance(v, (bool, int, float, str)) and _is_tensor(v):
            arrays[k] = v
        else:
            static[k] = v
    return arrays, static


_PLAIN = frozenset((type(None), bool, int, float, str))


def _apply(fn, logits, targets, params, class_axis=None):
    """fn(x, targets, **params) through the PyLayer when the logits need a gradient.

    Tensor-valued params (alpha, weight, ... given as paddle tensors) travel as
    PyLayer inputs; the rest (numbers, NumPy arrays, flags) as Python values. Floating
    ones that need a gradient get it from _other_grads.
    """
    arrays, static = _split(targets, params)
    host = _host_apply(fn, logits, arrays, static, class_axis)
    if host is not None:
        return host
    grad_mode = paddle.is_grad_enabled()
    others = grad_mode and any(_wants_grad(v) for v in arrays.values())
    # (cast where used: the PyLayer casts its own input)
    if others:
        extra = _other_grads(fn, _in_compute_dtype(logits), arrays, static)
        arrays = {k: v.detach() if _wants_grad(v) else v for k, v in arrays.items()}
    if logits.stop_gradient or not grad_mode:
        out, _ = _run(fn, _in_compute_dtype(logits), arrays, static, False)
        out = _cast(out, logits.dtype)
    elif _empty(logits):
        # Empty logits, whose gradient is empty: not through the PyLayer (in a static
        # program its 0-size output is left uninitialized, and the gradient then fails),
        # but tied to them by a zero, so that autograd reaches them.
        x = _in_compute_dtype(logits)
        out, _ = _run(fn, x, arrays, static, False)
        out = _cast(out + paddle.sum(x) * 0.0, logits.dtype)  # (x: float16 has no CPU add)
    else:
        names = tuple(arrays)
        out = _FocalLayer.apply(logits, fn, static, class_axis, names,
                                *(arrays[k] for k in names))
    return _cast(out + extra.astype(out.dtype), out.dtype) if others else out


def _check_tensors(logits, targets):
    # (the exact type and dtype first: this runs at every call)
    if type(logits) is not _TENSOR and not _is_tensor(logits):
        raise TypeError(f"logits must be a paddle.Tensor, got "
                        f"{type(logits).__module__}.{type(logits).__name__}")
    if type(targets) is not _TENSOR and not _is_tensor(targets):
        raise TypeError(f"targets must be a paddle.Tensor (the framework of logits), got "
                        f"{type(targets).__module__}.{type(targets).__name__}")
    dt = logits.dtype
    if not (dt is _F32 or dt is _F64):
        _spec.check_logits_dtype(_kind(logits))
    if paddle.in_dynamic_mode() and not _same_place(targets.place, logits.place):
        raise ValueError(f"targets is on {targets.place} but logits is on {logits.place}")


def _same_place(a, b) -> bool:
    # (two CPU places first: str() of a place is slow)
    return (a.is_cpu_place() and b.is_cpu_place()) or str(a) == str(b)


# focalx:signature sigmoid_focal_loss
def sigmoid_focal_loss(logits: paddle.Tensor, targets: paddle.Tensor, *,
                       gamma: float | Sequence[float] | paddle.Tensor | np.ndarray = 2.0,
                       alpha: float | Sequence[float] | paddle.Tensor | np.ndarray | None = 0.25,
                       pos_weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                       weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                       ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                       epsilon: float = 0.0, reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | paddle.Tensor | np.ndarray | None = None,
                       from_logits: bool = True) -> paddle.Tensor:
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

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    The default reduction is "mean", where ``paddle.nn.functional.sigmoid_focal_loss``'s
    is "sum"; its gradient is NaN at gamma < 1 for saturated logits, this one's is
    finite.

    Args:
      logits: floating array, any shape ``[...]``; probabilities if
        ``from_logits=False``.
      targets: broadcastable to ``logits`` (never enlarging it); hard {0, 1} or soft in
        [0, 1]; bool / integer targets are accepted.
      gamma: focusing parameter >= 0 (0 = no focusing): a number, or an array of values
        >= 0 broadcastable to ``logits`` (e.g. per class on the last axis, as alpha), a
        0-d array included (a gamma schedule under a compiler: see
        ``focalx.gamma_schedule``).
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
      epsilon: Poly-1's coefficient (Leng et al., arXiv 2204.12511), a finite real
        number (the paper uses epsilon >= -1): adds ``epsilon * (1 - p_t) ** (gamma +
        1)``, weighted as the focal term; 0 (default): the plain loss, at no extra cost.
        Not weighted by ``pos_weight``.
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
      (float16 / bfloat16 are computed in float32).

    Stability: log p and log(1-p) from softplus, 1-p_t without cancellation; the
    gradient is closed-form and finite for every finite logit and every gamma >= 0
    (no NaN at gamma < 1).

    References:
      Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    return _apply(_spec.run_sigmoid_focal_loss, logits, targets, dict(
        gamma=gamma, alpha=alpha, pos_weight=pos_weight, weight=weight,
        ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
        normalizer=normalizer, from_logits=from_logits, epsilon=epsilon))


# focalx:signature sigmoid_focal_loss_star
def sigmoid_focal_loss_star(logits: paddle.Tensor, targets: paddle.Tensor, *, gamma: float = 1.0,
                            beta: float = 0.0,
                            alpha: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                            weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                            ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | paddle.Tensor | np.ndarray | None = None) -> paddle.Tensor:
    r"""FL*, the focal loss variant of Lin et al.'s appendix A, with a tunable ``beta``.

    .. math::

        x_t = x\,(2y - 1), \qquad
        \mathrm{FL}^*(x, y) = -\,w\,\alpha_t \log\sigma(\gamma x_t + \beta) / \gamma

    fvcore's ``sigmoid_focal_loss_star`` is the case ``beta=0``.

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

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
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    return _apply(_spec.run_sigmoid_focal_loss_star, logits, targets, dict(
        gamma=gamma, beta=beta, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer))


# focalx:signature softmax_focal_loss
def softmax_focal_loss(logits: paddle.Tensor, targets: paddle.Tensor, *,
                       gamma: float | Sequence[float] | paddle.Tensor | np.ndarray = 2.0,
                       alpha: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                       weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                       ignore_index: int | None = -100, label_smoothing: float = 0.0,
                       epsilon: float = 0.0, reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | paddle.Tensor | np.ndarray | None = None, axis: int = -1,
                       from_logits: bool = True, soft_label: bool | None = None) -> paddle.Tensor:
    r"""Softmax (multi-class) focal loss.

    .. math::

        p = \mathrm{softmax}(x), \qquad
        \mathrm{FL}(x, q) = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c

    per sample, with ``q`` the one-hot target (class indices) or the given class
    probabilities, smoothed as ``(1 - e) * q + e / C``. With ``gamma=0, alpha=None``
    it equals ``torch.nn.functional.cross_entropy`` for every combination of
    ``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``, probability
    targets and N-d inputs (except that an all-ignored "mean" is 0, not NaN).

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    Class-index targets may also carry a size-1 class axis (``(N, 1)`` for ``(N, C)``),
    as ``paddle.nn.functional.cross_entropy`` takes them; "none" then keeps that axis in
    the result (as with ``soft_label=True``), as ``cross_entropy`` returns it.

    Args:
      logits: floating array ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` (class axis
        ``axis``); probabilities on that axis if ``from_logits=False``.
      targets: class indices (integer dtype, the logits' shape without the class axis)
        or class probabilities in [0, 1] (floating, the logits' shape), told apart as
        ``F.cross_entropy`` does.
      gamma: focusing parameter >= 0 (0 = no focusing): a number, or a per-class vector
        of length C with values >= 0 (class c's term is ``(1 - p_c) ** gamma[c]``), or a
        0-d array (see ``focalx.gamma_schedule``).
      alpha: None (1), a number in [0, 1] multiplying every class (as Keras does), or a
        per-class vector of length C with values in [0, 1].
      weight: None or a per-class vector >= 0 of length C, exactly as cross-entropy's:
        "mean" with class indices divides by the sum of ``weight[target]`` over the
        non-ignored samples.
      ignore_index: class-index targets equal to it add 0 and leave the mean's
        denominator (not used with probability targets); None disables it.
      label_smoothing: e in [0, 1).
      epsilon: Poly-1's coefficient (Leng et al., arXiv 2204.12511), a finite real
        number (the paper uses epsilon >= -1): adds ``epsilon * (1 - p_t) ** (gamma +
        1)``, weighted as the focal term; 0 (default): the plain loss, at no extra cost.
        Per sample ``epsilon * sum_c w_c alpha_c q_c (1 - p_c) ** (gamma + 1)``; at
        gamma=0 it is optax's ``poly_loss_cross_entropy``.
      reduction: ``"none"`` (per sample: the logits' shape without the class axis),
        ``"sum"`` or ``"mean"``.
      normalizer: None, a number > 0, or a 0-d or shape-(1,) array (e.g. the number of
        positive anchors): divides the result of any reduction. RetinaNet's
        normalisation is ``reduction="sum", normalizer=num_pos``. No host sync.
      axis: the class axis: -1 by default, as Paddle's ``cross_entropy``.
      from_logits: if False, ``logits`` holds probabilities used as given (not
        renormalised); ``p_c = 0`` for a target class costs ``+inf``.
      soft_label: Paddle's ``cross_entropy`` keyword: True says ``targets`` are class
        probabilities, False class indices; None tells them apart by shape and dtype.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
    finite for every finite logit and gamma >= 0.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    ndim = len(logits.shape)
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    targets, keep = _label(logits, targets, class_axis, soft_label)
    out = _apply(_spec.run_softmax_focal_loss, logits, targets, dict(
        gamma=gamma, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer,
        axis=axis, from_logits=from_logits, epsilon=epsilon), class_axis)
    if keep and reduction == "none":
        # (in the compute dtype: a static program has no CPU float16 unsqueeze)
        out = _cast(paddle.unsqueeze(_in_compute_dtype(out), class_axis), out.dtype)
    return out


def _label(logits, label, axis, soft_label):
    """(label as the spec takes it, whether a "none" loss keeps a size-1 class axis) for
    Paddle's conventions: class indices with a size-1 class axis, soft_label."""
    if soft_label is not None and not isinstance(soft_label, bool):
        raise TypeError(f"soft_label must be a bool or None, got {type(soft_label).__name__}")
    shape, lshape = tuple(logits.shape), tuple(label.shape)
    if soft_label:
        if lshape != shape:
            raise ValueError(f"label of shape {lshape} must have the input's shape {shape} "
                             "with soft_label=True (class probabilities)")
        return label, True
    if soft_label is False and _kind(label) == "floating" and lshape == shape and \
            shape[axis] != 1:
        raise ValueError("label has the input's shape and a floating dtype (class "
                         "probabilities): pass soft_label=True")
    if len(lshape) == len(shape) and len(shape) > 1 and lshape[axis] == 1 and \
            _kind(label) != "floating" and \
            lshape[:axis] + lshape[axis + 1:] == shape[:axis] + shape[axis + 1:]:
        return paddle.squeeze(label, axis), True
    return label, False


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

# focalx:signature asymmetric_loss
def asymmetric_loss(logits: paddle.Tensor, targets: paddle.Tensor, *, gamma_pos: float = 0.0,
                    gamma_neg: float = 4.0, clip: float = 0.05,
                    weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                    ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                    reduction: Literal["none", "mean", "sum"] = "mean",
                    normalizer: float | paddle.Tensor | np.ndarray | None = None) -> paddle.Tensor:
    r"""Asymmetric Loss (ASL) for multi-label classification (Ridnik et al.).

    .. math::

        p = \sigma(x), \quad p_m = \max(p - m, 0) \\
        \mathrm{ASL}(x, y) = -\,w \left[ y\,(1-p)^{\gamma_+} \log p
            + (1-y)\,p_m^{\gamma_-} \log(1 - p_m) \right]

    with the probability margin ``m = clip`` shifting negatives (easy negatives, p <= m,
    add 0). With ``gamma_pos == gamma_neg == gamma`` and ``clip=0`` it equals
    ``sigmoid_focal_loss(gamma=gamma, alpha=None)`` for hard targets (soft targets: each
    term weighted by y and 1 - y, as in the paper; the reference code interpolates p_t and
    the exponent instead). The reference ``AsymmetricLoss(gamma_neg, gamma_pos, clip)`` of
    the ASL repository and timm (``reduction="sum"`` here: they return the sum) clamps
    probabilities at eps = 1e-8, which caps each log term at 18.42; this one does not.

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array, any shape ``[...]`` (e.g. ``(N, C)``: one logit per
        label).
      targets: broadcastable to ``logits``, in [0, 1] (multi-hot labels).
      gamma_pos: focusing exponent of the positive term, >= 0.
      gamma_neg: focusing exponent of the negative term, >= 0.
      clip: the probability margin m in [0, 1) on negatives (0: none). At p = m the
        gradient takes its value from below (the kink; it is continuous there for
        gamma_neg > 0).
      weight: as in ``sigmoid_focal_loss``.
      ignore_index: as in ``sigmoid_focal_loss``.
      label_smoothing: as in ``sigmoid_focal_loss``.
      reduction: as in ``sigmoid_focal_loss``.
      normalizer: as in ``sigmoid_focal_loss``.

    Returns:
      The loss: shape of ``logits`` for ``"none"``, else 0-d.

    Stability: log p and log(1-p) from softplus, log(1 - p_m) as log1p(-p_m) near the
    margin and log(sigmoid(-x) + m) above, nothing clamped; closed-form gradient, finite
    for every finite logit and every exponent >= 0.

    References:
      Ridnik et al., `Asymmetric Loss For Multi-Label Classification
      <https://arxiv.org/abs/2009.14119>`_, ICCV 2021.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    return _apply(_spec.run_asymmetric_loss, logits, targets, dict(
        gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, weight=weight,
        ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
        normalizer=normalizer))


# focalx:signature asymmetric_softmax_loss
def asymmetric_softmax_loss(logits: paddle.Tensor, targets: paddle.Tensor, *,
                            gamma_pos: float = 0.0, gamma_neg: float = 4.0,
                            ignore_index: int | None = -100, label_smoothing: float = 0.1,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | paddle.Tensor | np.ndarray | None = None,
                            axis: int = -1) -> paddle.Tensor:
    r"""Single-label (softmax) Asymmetric Loss: the ASL repository's ``ASLSingleLabel``.

    .. math::

        p = \mathrm{softmax}(x), \qquad
        \mathrm{ASL}_1(x, y) = -\sum_c q_c\, w_c \log p_c, \qquad
        w_y = (1-p_y)^{\gamma_+}, \quad w_{c \ne y} = p_c^{\gamma_-}

    per sample, for the class index y, with q the one-hot target smoothed as
    ``(1 - e) * onehot + e / C``. The asymmetric weights follow the hard target: the target
    class is focused by gamma_pos, the smoothing mass on the other classes is weighted by
    p_c ** gamma_neg (without smoothing gamma_neg has no effect, and this is
    ``softmax_focal_loss(gamma=gamma_pos)``). ``ASLSingleLabel(gamma_pos, gamma_neg,
    eps=e)`` is ``label_smoothing=e`` here (the same default, 0.1), ``reduction="mean"``.

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` (class axis
        ``axis``).
      targets: class indices (integer dtype, the logits' shape without the class axis).
      gamma_pos: focusing exponent of the target class, >= 0.
      gamma_neg: exponent of the other classes' weights, >= 0.
      ignore_index: class-index targets equal to it add 0 and leave the mean's
        denominator; None disables it.
      label_smoothing: e in [0, 1) (ASLSingleLabel's eps).
      reduction: ``"none"`` (per sample), ``"sum"`` or ``"mean"`` (over the non-ignored
        samples).
      normalizer: None, a number > 0, or a 0-d or shape-(1,) array (e.g. the number of
        positive anchors): divides the result of any reduction. RetinaNet's
        normalisation is ``reduction="sum", normalizer=num_pos``. No host sync.
      axis: the class axis: -1 by default, as Paddle's ``cross_entropy``.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
    finite for every finite logit and exponents >= 0.

    References:
      Ridnik et al., `Asymmetric Loss For Multi-Label Classification
      <https://arxiv.org/abs/2009.14119>`_, ICCV 2021 (its repository's single-label form).
    """
    # focalx:end
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    ndim = len(logits.shape)
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    return _apply(_spec.run_asymmetric_softmax_loss, logits, targets, dict(
        gamma_pos=gamma_pos, gamma_neg=gamma_neg, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer,
        axis=axis), class_axis)
# focalx:signature quality_focal_loss
def quality_focal_loss(logits: paddle.Tensor, targets: paddle.Tensor, *, beta: float = 2.0,
                       weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                       reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | paddle.Tensor | np.ndarray | None = None) -> paddle.Tensor:
    r"""Quality Focal Loss (QFL), the classification half of Generalized Focal Loss.

    .. math::

        p = \sigma(x), \qquad
        \mathrm{QFL}(x, y) = -\,w\,|y - p|^\beta
            \left[y \log p + (1-y) \log(1-p)\right]

    per element, for a soft quality target :math:`y \in [0, 1]` (e.g. the IoU of the
    predicted box, 0 for every other class). With hard {0, 1} targets,
    :math:`|y - p| = 1 - p_t`, so QFL is ``sigmoid_focal_loss(gamma=beta, alpha=None)``.

    Targets come in two layouts: dense, an array broadcastable to ``logits`` (mmdet's
    ``quality_focal_loss_tensor_target``); or the detection pair ``(labels, scores)``, a
    tuple, with the classes on the last axis of ``logits`` (N, C): ``labels`` (N,)
    integer class indices, where ``C`` (mmdet's ``labels == num_classes``) or a negative
    label means background (every class has target 0), and ``scores`` (N,) the quality
    in [0, 1] of the labelled class. mmdet's ``QualityFocalLoss`` (per sample, summed over
    the classes, then ``avg_factor``) is ``reduction="sum", normalizer=avg_factor``, where
    mmdet's and PaddleDetection's GFL heads pass the number of positives (reduced over
    ranks, at least 1); its ``reduction="mean"`` without ``avg_factor`` is
    ``reduction="sum", normalizer=N``.

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array, any shape; (N, C), classes on the last axis, for the pair
        layout.
      targets: dense: broadcastable to ``logits``, quality in [0, 1]; or the tuple
        ``(labels, scores)``: integer class indices (``C`` or negative: background) and
        floating quality scores in [0, 1], both of the logits' shape without the last
        axis.
      beta: the exponent of |y - p|, a number >= 0 (0: plain binary cross-entropy
        against y).
      weight: None or an elementwise weight >= 0 broadcastable to ``logits`` (mmdet's
        per-sample ``weight`` of shape (N,) is ``weight[:, None]``); not in the mean's
        denominator.
      reduction: ``"none"`` (shape of ``logits``), ``"sum"`` or ``"mean"`` (over every
        element of ``logits``).
      normalizer: as in ``sigmoid_focal_loss``: GFL's normaliser, the number of
        positives, is ``reduction="sum", normalizer=num_pos``.

    Returns:
      The loss: shape of ``logits`` for ``"none"``, else 0-d.

    Gradient (closed form): with s = p - y (as (1-y)p - y(1-p), exact for hard
    targets), d|s|/dx = sign(s) p(1-p) and dBCE/dx = s, so
    ``dQFL/dx = w|s|^beta s + beta QFL p(1-p)/s``: |s|^(beta-1) never appears alone,
    and the gradient is finite for every finite logit and beta >= 0. At s == 0
    exactly, the second term is 0 (the subgradient of |s| at 0; for beta < 1 the
    one-sided derivatives are infinite there, where autograd through mmdet's formula
    gives NaN).

    References:
      Li et al., `Generalized Focal Loss <https://arxiv.org/abs/2006.04388>`_, NeurIPS 2020.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    if isinstance(targets, list):  # (to_static passes a tuple argument on as a list)
        targets = tuple(targets)
    labels, scores = _spec.split_quality_targets(targets)
    _check_tensors(logits, scores)
    params = dict(beta=beta, weight=weight, reduction=reduction, normalizer=normalizer)
    if labels is not None:
        _check_tensors(logits, labels)
        params["labels"] = labels
    return _apply(_spec.run_quality_focal_loss, logits, scores, params)


# focalx:signature varifocal_loss
def varifocal_loss(logits: paddle.Tensor, targets: paddle.Tensor, *, alpha: float = 0.75,
                   gamma: float = 2.0, iou_weighted: bool = True,
                   weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                   reduction: Literal["none", "mean", "sum"] = "mean",
                   normalizer: float | paddle.Tensor | np.ndarray | None = None) -> paddle.Tensor:
    r"""Varifocal Loss (VFL), VarifocalNet's IoU-aware classification loss.

    .. math::

        p = \sigma(x), \qquad
        \mathrm{VFL}(x, q) = w \begin{cases}
            -\,k\,\left[q \log p + (1-q) \log(1-p)\right] & q > 0 \\
            -\,\alpha\, p^\gamma \log(1-p) & q = 0
        \end{cases}

    per element, for an IoU-aware target :math:`q \in [0, 1]` (the IoU of the predicted
    box at the ground-truth class, 0 elsewhere), with :math:`k = q`
    (``iou_weighted=True``) or 1. The weight is differentiated with the rest, as
    autograd does through mmdet's and ultralytics' formulas (neither detaches it).

    mmdet's ``varifocal_loss(pred, target, weight, alpha, gamma, iou_weighted,
    reduction, avg_factor)`` is this, with ``reduction="sum", normalizer=avg_factor``
    where it is given an ``avg_factor`` (and the same reduction without). ultralytics'
    ``VarifocalLoss(pred, gt_score, label)`` (``.mean(1).sum()`` over (B, A, C)) weighs
    by ``label`` rather than ``q > 0``: it is ``reduction="sum", normalizer=A,
    weight=1 - label * (gt_score == 0)`` (the weight drops elements labelled positive with
    an IoU of 0, which ultralytics weighs by 0 and mmdet treats as negatives).
    PaddleDetection's PP-YOLOE ``_varifocal_loss`` (on probabilities, summed, then
    divided by ``assigned_scores_sum``) is ``reduction="sum",
    normalizer=assigned_scores_sum`` with the same weight, on the logits (Paddle's
    ``binary_cross_entropy`` clamps log at -100, focalx does not).

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array, any shape.
      targets: broadcastable to ``logits``, the IoU-aware target in [0, 1] (0:
        negative).
      alpha: the negatives' weight, a number >= 0.
      gamma: the negatives' exponent of p, a number >= 0.
      iou_weighted: True: positives are weighted by q (mmdet's default); False: by 1.
      weight: None or an elementwise weight >= 0 broadcastable to ``logits`` (mmdet's
        per-sample ``weight`` of shape (N,) is ``weight[:, None]``); not in the mean's
        denominator.
      reduction: ``"none"`` (shape of ``logits``), ``"sum"`` or ``"mean"`` (over every
        element of ``logits``).
      normalizer: as in ``sigmoid_focal_loss`` (mmdet's ``avg_factor``).

    Returns:
      The loss: shape of ``logits`` for ``"none"``, else 0-d.

    Gradient (closed form): p - q times the weight for a positive; for a
    negative, d/dx [alpha p^gamma softplus(x)] = alpha p^gamma (p + gamma (1-p)
    softplus(x)), with no p^(gamma-1) alone: finite for every finite logit and gamma >= 0.

    References:
      Zhang et al., `VarifocalNet: An IoU-aware Dense Object Detector
      <https://arxiv.org/abs/2008.13367>`_, CVPR 2021.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    return _apply(_spec.run_varifocal_loss, logits, targets, dict(
        alpha=alpha, gamma=gamma, iou_weighted=iou_weighted, weight=weight,
        reduction=reduction, normalizer=normalizer))


# focalx:signature distribution_focal_loss
def distribution_focal_loss(logits: paddle.Tensor, targets: paddle.Tensor, *,
                            weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                            ignore_index: int | float | None = None,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | paddle.Tensor | np.ndarray | None = None,
                            axis: int = -1) -> paddle.Tensor:
    r"""Distribution Focal Loss (DFL), the box-regression half of Generalized Focal Loss.

    .. math::

        p = \mathrm{softmax}(x), \quad y_l = \min(\lfloor y \rfloor, n - 1), \quad
        y_r = y_l + 1, \qquad
        \mathrm{DFL}(x, y) = -\,w \left[(y_r - y) \log p_{y_l} + (y - y_l) \log p_{y_r}\right]

    per sample, for logits over n + 1 bins (``n_bins``) and a continuous target
    :math:`y \in [0, n]`: the softmax cross-entropy against the two-hot distribution on
    the bins either side of y (at an integer y, the cross-entropy of bin y; at y == n,
    ``-log p_n``). mmdet's and ultralytics' ``distribution_focal_loss`` take the left bin
    as ``floor(y)`` and index bin ``floor(y) + 1`` too, out of range at y == n: their
    heads clamp the targets below n first (mmdet's ``bbox2distance``: ``n - 0.1``;
    ultralytics' ``bbox2dist``: its ``reg_max - 0.01``), so they never reach it. mmdet's per-sample loss with ``avg_factor`` is
    ``reduction="sum", normalizer=avg_factor`` (its GFL head passes the sum of the
    quality weights); ultralytics' ``.mean(-1, keepdim=True)`` over the 4 box sides is
    ``reduction="none"`` then a mean over that axis.

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array ``(N, n_bins + 1)`` or ``(..., n_bins + 1, ...)`` (bins on
        ``axis``).
      targets: the logits' shape without the bin axis: continuous targets in [0, n_bins]
        (or ignore_index).
      weight: None or a per-sample weight >= 0 broadcastable to ``targets``; not in the
        mean's denominator.
      ignore_index: None, or a negative target value marking samples that add 0 and
        leave the mean's denominator.
      reduction: ``"none"`` (per sample: the logits' shape without the class axis),
        ``"sum"`` or ``"mean"`` (over the samples not ignored).
      normalizer: as in ``sigmoid_focal_loss``.
      axis: the bin axis: -1 by default, as Paddle's ``cross_entropy``.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability and gradient: the softmax loss's (gamma 0): log-softmax, and the
    closed-form gradient ``p - q`` per sample, finite for every finite logit.

    References:
      Li et al., `Generalized Focal Loss <https://arxiv.org/abs/2006.04388>`_, NeurIPS 2020.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    ndim = len(logits.shape)
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    return _apply(_spec.run_distribution_focal_loss, logits, targets, dict(
        weight=weight, ignore_index=ignore_index, reduction=reduction, normalizer=normalizer,
        axis=axis), class_axis)


# ---- the fused linear + softmax focal loss (issue 19) -----------------------------------

# focalx:signature linear_softmax_focal_loss
def linear_softmax_focal_loss(hidden: paddle.Tensor, linear_weight: paddle.Tensor,
                              targets: paddle.Tensor, *, linear_bias: paddle.Tensor | None = None,
                              gamma: float | Sequence[float] | paddle.Tensor | np.ndarray = 2.0,
                              alpha: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                              weight: float | Sequence[float] | paddle.Tensor | np.ndarray | None = None,
                              ignore_index: int | None = -100, label_smoothing: float = 0.0,
                              reduction: Literal["none", "mean", "sum"] = "mean",
                              normalizer: float | paddle.Tensor | np.ndarray | None = None,
                              chunk_size: int | None = None) -> paddle.Tensor:
    r"""Softmax focal loss of a linear layer's output, without the logits.

    .. math::

        x = h W^\top + b, \qquad
        \mathrm{FL}(x, y) = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c,
        \quad p = \mathrm{softmax}(x)

    per row: exactly ``softmax_focal_loss(hidden @ linear_weight.T + linear_bias, targets,
    ...)`` (class axis last), computed on blocks of rows (``chunk_size``) so that the
    (N, V) logits and their gradient are never held whole: each block's logits are made,
    used for the loss and its closed-form gradient, turned into the block's share of the
    gradients w.r.t. ``hidden``, ``linear_weight`` and ``linear_bias``, and dropped. For
    language-model heads and extreme classification (V of 32K-256K classes). With
    ``gamma=0, alpha=None`` it is the cross-entropy of the linear layer (torch's
    ``F.linear_cross_entropy``).

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      hidden: floating array ``(N, H)``: the rows' features (e.g. a language model's
        last hidden states, flattened over batch and time).
      linear_weight: floating array ``(V, H)``: the linear layer's weight (torch's
        ``nn.Linear.weight`` layout; Keras' and Flax's kernels are its transpose).
      targets: class indices ``(N,)`` of an integer dtype, in [0, V) or
        ``ignore_index``.
      linear_bias: None or the layer's bias, shape ``(V,)``.
      gamma: focusing parameter >= 0 (0 = no focusing): a number, or a per-class vector
        of length V with values >= 0 (class c's term is ``(1 - p_c) ** gamma[c]``), or a
        0-d array (see ``focalx.gamma_schedule``).
      alpha: None (1), a number in [0, 1] multiplying every class, or a per-class vector
        of length V with values in [0, 1].
      weight: None or a per-class vector >= 0 of length V, exactly as cross-entropy's:
        "mean" divides by the sum of ``weight[target]`` over the non-ignored rows.
      ignore_index: targets equal to it add 0 and leave the mean's denominator; None
        disables it.
      label_smoothing: e in [0, 1): the target distribution is ``(1 - e) * onehot + e /
        V``.
      reduction: ``"none"`` (per row, shape ``(N,)``), ``"sum"`` or ``"mean"``.
      normalizer: None, a number > 0, or a 0-d or shape-(1,) array (e.g. the number of
        positive anchors): divides the result of any reduction. RetinaNet's
        normalisation is ``reduction="sum", normalizer=num_pos``. No host sync.
      chunk_size: rows per block (an int >= 1), or None: blocks of about 2**22 logits
        (``max(1, 2**22 // V)`` rows). Memory: one block's logits and gradient instead
        of N x V; the result does not depend on it beyond rounding.

    Returns:
      The loss (per row for ``"none"``, else 0-d).

    Gradients: the softmax focal loss's closed form G w.r.t. each block's logits,
    then ``G @ W`` (hidden), ``G.T @ h`` (weight, summed over blocks) and ``G.sum(0)``
    (bias). For "mean" and "sum" they are computed in the forward pass (one pass over the
    blocks, as the fused cross-entropy kernels do) and scaled by the incoming gradient;
    for "none" the backward pass recomputes each block's logits with the incoming
    per-row gradient. Stability: the softmax focal loss's.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    for name, a in (("hidden", hidden), ("linear_weight", linear_weight),
                    ("linear_bias", linear_bias)):
        if a is not None and type(a) is not _TENSOR and not _is_tensor(a):
            raise TypeError(f"{name} must be a paddle.Tensor, got "
                            f"{type(a).__module__}.{type(a).__name__}")
        if a is not None:
            _spec.check_logits_dtype(_kind(a), name)
    _check_tensors(hidden, targets)
    arrays, static = _split(targets, dict(
        gamma=gamma, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=_spec.check_reduction(reduction),
        normalizer=normalizer, chunk_size=chunk_size))
    return apply_linear(hidden, linear_weight, linear_bias, arrays, static)
