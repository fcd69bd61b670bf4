"""The public functions (signatures generated from focalx/_signatures.py) and their
autograd (tf.custom_gradient)."""

from __future__ import annotations

from collections.abc import Sequence  # (annotations of the generated signatures)
from typing import Literal

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record as _record

from ... import _signatures, _spec
from . import ops as _ops
from .linear import apply_linear
from .ops import TensorflowOps, _TENSORS, _kind, _name, _unrecorded
from .xla import _TENSOR_PARAMS, _compute


def _apply(fn, logits, targets, kw, class_axis):
    """loss = fn(x, targets, **kw) with the spec's closed-form gradient w.r.t. x.

    Floating targets and hyperparameter tensors that a GradientTape watches get the
    autodiff of the spec's formula (see _other_grads); in a graph differentiated
    without a tape (tf.gradients) they get none."""
    x = tf.convert_to_tensor(logits)
    x_dtype = x.dtype
    compute = tf.float64 if x_dtype == tf.float64 else tf.float32
    recording = _record.could_possibly_record()
    if tf.executing_eagerly() and not recording:
        # eager, no tape: no gradient needed
        out = _compute(fn, tf.cast(x, compute), targets, False, kw)[0]
        return tf.cast(out, x_dtype)
    # A graph with no tape in sight (a forward pass, or tf.gradients later): the
    # forward computes the loss only, and the gradient is computed if it is asked
    # for. Op by op, graph pruning does that by itself; a compiled call cannot be
    # pruned in part, so it is split here.
    split = not recording and not tf.executing_eagerly()
    others = {}
    if recording:
        candidates = {"targets": targets, **{k: kw[k] for k in _TENSOR_PARAMS
                                             if isinstance(kw.get(k), tf.Tensor)}}
        others = {k: v for k, v in candidates.items()
                  if v.dtype.is_floating and _record.should_record_backprop([v])}
    names = tuple(others)

    @tf.custom_gradient
    def loss(x, *values):
        xc = tf.cast(x, compute)
        given = dict(zip(names, values))
        t = given.pop("targets", targets)
        kw_in = {**kw, **given}
        # Eagerly not recorded by a tape (this custom gradient gives the gradient): op by
        # op, a recording tape kept every intermediate array to its end. (In a graph the
        # recorded ops cost no memory, and TensorFlow differentiates a function's ops.)
        with _unrecorded():
            out, grad, ok = _compute(fn, xc, t, not split, kw_in)

        def backward(g_out, variables=None):
            if tf.executing_eagerly() and _record.could_possibly_record():
                raise NotImplementedError(_ops.ONCE)
            g_values = _other_grads(fn, xc, t, kw_in, names, values, g_out)
            g, g_ok = (grad, ok) if grad is not None else \
                _compute(fn, xc, t, True, kw_in)[1:]
            if g_ok is not None:
                # A failed value check makes the whole gradient NaN: applied to the
                # incoming gradient, so it costs no pass over the full-size one.
                g_out = tf.where(g_ok, g_out, tf.constant(float("nan"), g_out.dtype))
            if class_axis is not None and g_out.shape.rank:  # per-sample softmax loss
                g_out = tf.expand_dims(g_out, class_axis)
            g_x, *g_values = _ops._differentiable_once(
                [tf.cast(tf.cast(g_out, g.dtype) * g, x_dtype), *g_values], (x, *values))
            if variables is not None:  # variables read inside: no gradient for them
                return (g_x, *g_values), [None] * len(variables)
            return (g_x, *g_values)

        return tf.cast(out, x_dtype), backward

    return loss(x, *others.values())


def _other_grads(fn, xc, targets, kw, names, values, g_out):
    """The gradients of the targets and hyperparameter tensors in `values` (named by
    `names`): the spec's formula run again op by op under a GradientTape (as the JAX
    backend differentiates it)."""
    if not names:
        return []
    with tf.GradientTape() as tape:
        tape.watch(values)
        given = dict(zip(names, values))
        out = _ops._run(fn, xc, given.pop("targets", targets), False, **{**kw, **given})[0]
    return tape.gradient(out, list(values), output_gradients=tf.cast(g_out, out.dtype))


def _check_tensors(logits, targets):
    if not isinstance(logits, _TENSORS):
        raise TypeError(f"logits must be a tf.Tensor, got {_name(logits)}")
    if not isinstance(targets, _TENSORS + (np.ndarray,)):
        raise TypeError(f"targets must be a tf.Tensor (the framework of logits), got "
                        f"{_name(targets)}")
    _spec.check_logits_dtype(_kind(_read(logits)))
    return tf.convert_to_tensor(targets)


def _read(v):
    """Variables (tf.Variable, keras.Variable) are read outside the custom gradient (they
    get no gradient from it)."""
    return tf.convert_to_tensor(v) if isinstance(v, _TENSORS) and \
        not isinstance(v, tf.Tensor) else v


# focalx:signature sigmoid_focal_loss
def sigmoid_focal_loss(logits: tf.Tensor, targets: tf.Tensor, *,
                       gamma: float | Sequence[float] | tf.Tensor | np.ndarray = 2.0,
                       alpha: float | Sequence[float] | tf.Tensor | np.ndarray | None = 0.25,
                       pos_weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                       weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                       ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                       epsilon: float = 0.0, reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | tf.Tensor | np.ndarray | None = None,
                       from_logits: bool = True) -> tf.Tensor:
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

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
    targets = _check_tensors(logits, targets)
    alpha, pos_weight, weight, normalizer = map(_read, (alpha, pos_weight, weight, normalizer))
    gamma = _read(gamma)  # (a tf.Variable gamma: a schedule's, assigned every step)

    kw = dict(gamma=gamma, alpha=alpha, pos_weight=pos_weight, weight=weight,
              ignore_index=ignore_index, label_smoothing=label_smoothing,
              reduction=reduction, normalizer=normalizer, from_logits=from_logits,
              epsilon=epsilon)
    return _apply(_spec.run_sigmoid_focal_loss, logits, targets, kw, None)


# focalx:signature sigmoid_focal_loss_star
def sigmoid_focal_loss_star(logits: tf.Tensor, targets: tf.Tensor, *, gamma: float = 1.0,
                            beta: float = 0.0,
                            alpha: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                            weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                            ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    r"""FL*, the focal loss variant of Lin et al.'s appendix A, with a tunable ``beta``.

    .. math::

        x_t = x\,(2y - 1), \qquad
        \mathrm{FL}^*(x, y) = -\,w\,\alpha_t \log\sigma(\gamma x_t + \beta) / \gamma

    fvcore's ``sigmoid_focal_loss_star`` is the case ``beta=0``.

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
    targets = _check_tensors(logits, targets)
    alpha, weight, normalizer = map(_read, (alpha, weight, normalizer))

    kw = dict(gamma=gamma, beta=beta, alpha=alpha, weight=weight, ignore_index=ignore_index,
              label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer)
    return _apply(_spec.run_sigmoid_focal_loss_star, logits, targets, kw, None)


# focalx:signature softmax_focal_loss
def softmax_focal_loss(logits: tf.Tensor, targets: tf.Tensor, *,
                       gamma: float | Sequence[float] | tf.Tensor | np.ndarray = 2.0,
                       alpha: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                       weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                       ignore_index: int | None = -100, label_smoothing: float = 0.0,
                       epsilon: float = 0.0, reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | tf.Tensor | np.ndarray | None = None, axis: int = -1,
                       from_logits: bool = True) -> tf.Tensor:
    r"""Softmax (multi-class) focal loss.

    .. math::

        p = \mathrm{softmax}(x), \qquad
        \mathrm{FL}(x, q) = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c

    per sample, with ``q`` the one-hot target (class indices) or the given class
    probabilities, smoothed as ``(1 - e) * q + e / C``. With ``gamma=0, alpha=None``
    it equals ``torch.nn.functional.cross_entropy`` for every combination of
    ``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``, probability
    targets and N-d inputs (except that an all-ignored "mean" is 0, not NaN).

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
      axis: the class axis: -1 by default, as Keras.
      from_logits: if False, ``logits`` holds probabilities used as given (not
        renormalised); ``p_c = 0`` for a target class costs ``+inf``.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
    finite for every finite logit and gamma >= 0.
    """
    # focalx:end
    targets = _check_tensors(logits, targets)
    ndim = len(TensorflowOps.shape(logits))
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    alpha, weight, normalizer = map(_read, (alpha, weight, normalizer))
    gamma = _read(gamma)

    kw = dict(gamma=gamma, alpha=alpha, weight=weight, ignore_index=ignore_index,
              label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer,
              axis=axis, from_logits=from_logits, epsilon=epsilon)
    return _apply(_spec.run_softmax_focal_loss, logits, targets, kw, class_axis)


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

# focalx:signature asymmetric_loss
def asymmetric_loss(logits: tf.Tensor, targets: tf.Tensor, *, gamma_pos: float = 0.0,
                    gamma_neg: float = 4.0, clip: float = 0.05,
                    weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                    ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                    reduction: Literal["none", "mean", "sum"] = "mean",
                    normalizer: float | tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
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

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
    targets = _check_tensors(logits, targets)
    weight, normalizer = map(_read, (weight, normalizer))

    kw = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, weight=weight,
              ignore_index=ignore_index, label_smoothing=label_smoothing,
              reduction=reduction, normalizer=normalizer)
    return _apply(_spec.run_asymmetric_loss, logits, targets, kw, None)


# focalx:signature asymmetric_softmax_loss
def asymmetric_softmax_loss(logits: tf.Tensor, targets: tf.Tensor, *, gamma_pos: float = 0.0,
                            gamma_neg: float = 4.0, ignore_index: int | None = -100,
                            label_smoothing: float = 0.1,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | tf.Tensor | np.ndarray | None = None,
                            axis: int = -1) -> tf.Tensor:
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

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
      axis: the class axis: -1 by default, as Keras.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
    finite for every finite logit and exponents >= 0.

    References:
      Ridnik et al., `Asymmetric Loss For Multi-Label Classification
      <https://arxiv.org/abs/2009.14119>`_, ICCV 2021 (its repository's single-label form).
    """
    # focalx:end
    targets = _check_tensors(logits, targets)
    ndim = len(TensorflowOps.shape(logits))
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    normalizer = _read(normalizer)

    kw = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, ignore_index=ignore_index,
              label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer,
              axis=axis)
    return _apply(_spec.run_asymmetric_softmax_loss, logits, targets, kw, class_axis)
# focalx:signature quality_focal_loss
def quality_focal_loss(logits: tf.Tensor, targets: tf.Tensor, *, beta: float = 2.0,
                       weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                       reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
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

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
    labels, scores = _spec.split_quality_targets(targets)
    scores = _check_tensors(logits, scores)
    weight, normalizer = map(_read, (weight, normalizer))
    kw = dict(beta=beta, weight=weight, reduction=reduction, normalizer=normalizer)
    if labels is not None:
        kw["labels"] = _check_tensors(logits, labels)
    return _apply(_spec.run_quality_focal_loss, logits, scores, kw, None)


# focalx:signature varifocal_loss
def varifocal_loss(logits: tf.Tensor, targets: tf.Tensor, *, alpha: float = 0.75,
                   gamma: float = 2.0, iou_weighted: bool = True,
                   weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                   reduction: Literal["none", "mean", "sum"] = "mean",
                   normalizer: float | tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
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

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
    targets = _check_tensors(logits, targets)
    weight, normalizer = map(_read, (weight, normalizer))
    kw = dict(alpha=alpha, gamma=gamma, iou_weighted=iou_weighted, weight=weight,
              reduction=reduction, normalizer=normalizer)
    return _apply(_spec.run_varifocal_loss, logits, targets, kw, None)


# focalx:signature distribution_focal_loss
def distribution_focal_loss(logits: tf.Tensor, targets: tf.Tensor, *,
                            weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                            ignore_index: int | float | None = None,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | tf.Tensor | np.ndarray | None = None,
                            axis: int = -1) -> tf.Tensor:
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

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
      axis: the bin axis: -1 by default, as Keras.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability and gradient: the softmax loss's (gamma 0): log-softmax, and the
    closed-form gradient ``p - q`` per sample, finite for every finite logit.

    References:
      Li et al., `Generalized Focal Loss <https://arxiv.org/abs/2006.04388>`_, NeurIPS 2020.
    """
    # focalx:end
    targets = _check_tensors(logits, targets)
    ndim = len(TensorflowOps.shape(logits))
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    weight, normalizer = map(_read, (weight, normalizer))
    kw = dict(weight=weight, ignore_index=ignore_index, reduction=reduction,
              normalizer=normalizer, axis=axis)
    return _apply(_spec.run_distribution_focal_loss, logits, targets, kw, class_axis)


# ---- the fused linear + softmax focal loss (issue 19) -----------------------------------

# focalx:signature linear_softmax_focal_loss
def linear_softmax_focal_loss(hidden: tf.Tensor, linear_weight: tf.Tensor, targets: tf.Tensor, *,
                              linear_bias: tf.Tensor | None = None,
                              gamma: float | Sequence[float] | tf.Tensor | np.ndarray = 2.0,
                              alpha: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                              weight: float | Sequence[float] | tf.Tensor | np.ndarray | None = None,
                              ignore_index: int | None = -100, label_smoothing: float = 0.0,
                              reduction: Literal["none", "mean", "sum"] = "mean",
                              normalizer: float | tf.Tensor | np.ndarray | None = None,
                              chunk_size: int | None = None) -> tf.Tensor:
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

    On tf.Tensor values (hyperparameter arrays may also be NumPy).

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
    arrays = {}
    for name, a in (("hidden", hidden), ("linear_weight", linear_weight),
                    ("linear_bias", linear_bias)):
        if a is not None and not isinstance(a, _TENSORS):
            raise TypeError(f"{name} must be a tf.Tensor, got {_name(a)}")
        arrays[name] = None if a is None else _read(a)
        if a is not None:
            _spec.check_logits_dtype(_kind(arrays[name]), name)
    targets = _check_tensors(arrays["hidden"], targets)
    return apply_linear(arrays["hidden"], arrays["linear_weight"], arrays["linear_bias"],
                        targets, dict(gamma=_read(gamma), alpha=_read(alpha),
                                      weight=_read(weight), ignore_index=ignore_index,
                                      label_smoothing=label_smoothing,
                                      reduction=_spec.check_reduction(reduction),
                                      normalizer=_read(normalizer), chunk_size=chunk_size))


# Autograph (on in a user's tf.function by default) would rewrite these functions and
# everything they call, the spec included, at every new trace: seconds of source
# transformation. They branch on Python values only (never on a tensor's), so autograph
# is told to call them as they are.
for _loss in _signatures.LOSSES:  # (not _name: that is ops' helper, used above)
    globals()[_loss] = tf.autograph.experimental.do_not_convert(globals()[_loss])
del _loss
