"""Keras 3 losses (and one loss layer) on focalx (public name: ``focalx.keras``).

Five :class:`keras.losses.Loss` subclasses, usable in ``model.compile(loss=...)``
and ``model.fit`` and saved with a model (``.keras`` files reload them once
``focalx.keras`` is imported; they are registered as ``focalx>ClassName``):

- :class:`BinaryFocalLoss`: the sigmoid focal loss, per sample the mean over
  ``axis`` (as ``keras.losses.BinaryFocalCrossentropy``);
- :class:`CategoricalFocalLoss`: the softmax focal loss against one-hot or
  probability targets (as ``keras.losses.CategoricalFocalCrossentropy``);
- :class:`SparseCategoricalFocalLoss`: the softmax focal loss against integer
  class indices, with ``ignore_index`` (Keras has no sparse focal loss);
- :class:`AsymmetricLoss`: the Asymmetric Loss (multi-label; Ridnik et al.), per
  sample the mean over ``axis``;
- :class:`SparseAsymmetricSoftmaxLoss`: its single-label (softmax) form against integer
  class indices.

and one layer, :class:`LinearFocalLoss`: a classifier head fused with the softmax focal
loss of its logits (:func:`focalx.linear_softmax_focal_loss`), for large class counts.

Each computes the per-sample loss with the focalx function of whatever array
type Keras hands it (:func:`focalx.sigmoid_focal_loss`,
:func:`focalx.softmax_focal_loss`), so the same class gives the same numbers
under ``KERAS_BACKEND=tensorflow``, ``jax`` and ``torch``. Keras then applies
``sample_weight``, masks and the ``reduction`` as it does for its own losses.

Unlike Keras' focal losses, nothing is clipped: Keras caps every element's
cross-entropy at -log(1e-7) = 16.118 on the JAX and torch backends (and for the
categorical loss on every backend), so its loss stops growing beyond logits of
about +-16; focalx keeps the exact value. ``from_logits`` defaults to False, as
in Keras; ``from_logits=True`` with a linear output layer is the accurate
choice (probabilities of exactly 0 or 1 give an infinite loss for a wrong
certain prediction).
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from .. import _spec
from .. import asymmetric_loss as _asymmetric_loss
from .. import asymmetric_softmax_loss as _asymmetric_softmax_loss
from .. import sigmoid_focal_loss as _sigmoid_focal_loss
from .. import softmax_focal_loss as _softmax_focal_loss
from .. import distribution_focal_loss as _distribution_focal_loss
from .. import quality_focal_loss as _quality_focal_loss
from .. import varifocal_loss as _varifocal_loss
from .. import linear_softmax_focal_loss as _linear_softmax_focal_loss

__all__ = ["BinaryFocalLoss", "CategoricalFocalLoss", "SparseCategoricalFocalLoss",
           "QualityFocalLoss", "VarifocalLoss", "DistributionFocalLoss",
           "AsymmetricLoss", "SparseAsymmetricSoftmaxLoss", "LinearFocalLoss"]


def _alpha_config(alpha, class_vector):
    """alpha as a JSON-serialisable value: None, a float or a list of floats."""
    if alpha is None or isinstance(alpha, numbers.Real):  # (a bool: check_alpha_number refuses it)
        return _spec.check_alpha_number(alpha)
    return _vector_config(alpha, "alpha", class_vector)


def _gamma_config(gamma, class_vector):
    """gamma as a JSON-serialisable value: a float, or a list of floats (per class)."""
    if isinstance(gamma, numbers.Real) or not (isinstance(gamma, (list, tuple)) or
                                               hasattr(gamma, "shape")):
        return _spec.check_gamma(gamma)
    if not isinstance(gamma, (list, tuple)):
        gamma = ops.convert_to_numpy(gamma)  # a tensor of any Keras backend
    arr = _spec.check_gamma_param(gamma, class_vector=class_vector)
    return arr if isinstance(arr, float) else (
        float(arr) if arr.ndim == 0 else [float(a) for a in arr.reshape(-1)])


def _vector_config(v, name, class_vector, allow_scalar=True):
    """A hyperparameter array as a JSON-serialisable list of floats (or a float), checked
    now as a call would check it."""
    if v is None:
        return None
    if not isinstance(v, (numbers.Number, list, tuple)) and hasattr(v, "shape"):
        v = ops.convert_to_numpy(v)  # a tensor of any Keras backend
    arr = _spec.check_param(name, v, class_vector=class_vector, allow_scalar=allow_scalar)
    return float(arr) if arr.ndim == 0 else [float(a) for a in arr.reshape(-1)]


def _check_axis_arg(axis):
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    return int(axis)


def _same_rank(y_true, y_pred):
    """Keras' convention: a trailing size-1 axis on one side only is dropped or added."""
    t, p = len(y_true.shape), len(y_pred.shape)
    if t == p + 1 and y_true.shape[-1] == 1:
        return ops.squeeze(y_true, axis=-1)
    if p == t + 1 and y_pred.shape[-1] == 1:
        return ops.expand_dims(y_true, axis=-1)
    return y_true


class _FocalLoss(keras.losses.Loss):
    #: the softmax losses' alpha and weight are per class
    _class_vectors = False

    def __init__(self, *, gamma, alpha, from_logits, label_smoothing, axis, reduction, name,
                 dtype, epsilon=0.0):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.epsilon = _spec.check_epsilon(epsilon)
        self.gamma = _gamma_config(gamma, self._class_vectors)
        self.alpha = _alpha_config(alpha, self._class_vectors)
        self.from_logits = _spec.check_from_logits(from_logits)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.axis = _check_axis_arg(axis)

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma, alpha=self.alpha, from_logits=self.from_logits,
                      label_smoothing=self.label_smoothing, axis=self.axis, dtype=self.dtype,
                      epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="focalx")
class BinaryFocalLoss(_FocalLoss):
    r"""Sigmoid focal loss (binary and multi-label) as a Keras loss.

    Per element :math:`\alpha_t (1-p_t)^\gamma \mathrm{BCE}` (see
    :func:`focalx.sigmoid_focal_loss`), then per sample the mean over ``axis``.
    With ``alpha`` a number and logits within +-15 it equals
    ``keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha,
    gamma=gamma, from_logits=True)`` on the TensorFlow backend; ``alpha=None``
    turns the balancing off (Keras' ``apply_class_balancing=False``).

    Args:
        gamma: focusing exponent, >= 0.
        alpha: None, a number in [0, 1], or a per-class list on the last axis.
        pos_weight: None, a number or a per-class list: weight of the positive term.
        from_logits: whether ``y_pred`` holds logits (True) or probabilities.
        label_smoothing: y -> y(1 - e) + e/2.
        axis: the axis averaged to give the per-sample loss.
        epsilon: Poly-1's coefficient (0: none); see :func:`focalx.sigmoid_focal_loss`.
        reduction, name, dtype: as for every ``keras.losses.Loss``.

    Shapes: ``y_pred`` (N, ..., K); ``y_true`` the same shape, or without a
    trailing axis of size 1; targets in [0, 1].
    """

    def __init__(self, *, gamma=2.0, alpha=0.25, pos_weight=None, from_logits=False,
                 label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_focal_loss", dtype=None, epsilon=0.0):
        super().__init__(gamma=gamma, alpha=alpha, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis, reduction=reduction,
                         name=name, dtype=dtype, epsilon=epsilon)
        self.pos_weight = _vector_config(pos_weight, "pos_weight", False)

    def call(self, y_true, y_pred):
        y_true = _same_rank(y_true, y_pred)
        loss = _sigmoid_focal_loss(
            y_pred, ops.cast(y_true, y_pred.dtype), gamma=self.gamma,
            alpha=self.alpha, pos_weight=self.pos_weight,
            label_smoothing=self.label_smoothing, from_logits=self.from_logits,
            reduction="none", epsilon=self.epsilon)
        return ops.mean(loss, axis=self.axis)

    def get_config(self):
        config = super().get_config()
        config.update(pos_weight=self.pos_weight)
        return config


@keras.saving.register_keras_serializable(package="focalx")
class CategoricalFocalLoss(_FocalLoss):
    r"""Softmax focal loss against one-hot or probability targets, as a Keras loss.

    Per sample :math:`-\sum_c w_c \alpha_c q_c (1-p_c)^\gamma \log p_c` over
    ``axis`` (see :func:`focalx.softmax_focal_loss`). ``alpha`` is None (the
    default), a number multiplying every class (as Keras' ``alpha``), or a
    per-class list. ``from_logits=False`` takes the probabilities as given: no
    renormalising and no clipping (Keras does both).

    Args:
        gamma: focusing exponent, >= 0.
        alpha: None, a number in [0, 1], or a per-class list.
        weight: None or a per-class list of weights >= 0.
        from_logits: whether ``y_pred`` holds logits (True) or probabilities.
        label_smoothing: q -> q(1 - e) + e/C.
        axis: the class axis.
        epsilon: Poly-1's coefficient (0: none); see :func:`focalx.softmax_focal_loss`.
        reduction, name, dtype: as for every ``keras.losses.Loss``.

    Shapes: ``y_pred`` and ``y_true`` (N, ..., C), ``y_true`` rows summing to 1.
    """

    _class_vectors = True

    def __init__(self, *, gamma=2.0, alpha=None, weight=None, from_logits=False,
                 label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="categorical_focal_loss", dtype=None, epsilon=0.0):
        super().__init__(gamma=gamma, alpha=alpha, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis, reduction=reduction,
                         name=name, dtype=dtype, epsilon=epsilon)
        if isinstance(weight, numbers.Number):
            raise TypeError("weight must be None or a per-class sequence of numbers, got "
                            f"{type(weight).__name__}")
        self.weight = _vector_config(weight, "weight", True, allow_scalar=False)

    def call(self, y_true, y_pred):
        if len(y_true.shape) != len(y_pred.shape):
            # (checked before the cast to floats, which would make an error about the
            # targets' dtype contradict what the user passed)
            raise ValueError(
                f"{type(self).__name__} takes one-hot or probability targets of y_pred's "
                f"shape {tuple(y_pred.shape)}, got y_true of shape {tuple(y_true.shape)}; "
                "for integer class indices use SparseCategoricalFocalLoss")
        return _softmax_focal_loss(
            y_pred, ops.cast(y_true, y_pred.dtype), gamma=self.gamma,
            alpha=self.alpha, weight=self.weight,
            ignore_index=None, label_smoothing=self.label_smoothing,
            from_logits=self.from_logits, axis=self.axis, reduction="none",
            epsilon=self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight)
        return config


def _class_indices(loss, y_true, y_pred):
    """y_true as class indices of shape (N, ...): a trailing size-1 class axis dropped;
    targets of y_pred's shape refused before a cast to integers (after which an error
    about their dtype would contradict what the user passed)."""
    if len(y_true.shape) != len(y_pred.shape) or y_true.shape[loss.axis] is None:
        return y_true
    if y_true.shape[loss.axis] == 1:
        return ops.squeeze(y_true, axis=loss.axis)
    hint = ("use CategoricalFocalLoss" if isinstance(loss, SparseCategoricalFocalLoss) else
            "take their argmax")
    raise ValueError(
        f"{type(loss).__name__} takes integer class indices of shape (N, ...) or (N, ..., 1) "
        f"for y_pred of shape {tuple(y_pred.shape)}, got y_true of shape "
        f"{tuple(y_true.shape)}; for one-hot or probability targets {hint}")


@keras.saving.register_keras_serializable(package="focalx")
class SparseCategoricalFocalLoss(CategoricalFocalLoss):
    r"""Softmax focal loss against integer class indices, as a Keras loss.

    The sparse form Keras lacks. With ``gamma=0`` it equals
    ``keras.losses.SparseCategoricalCrossentropy`` (``ignore_index`` playing the
    part of its ``ignore_class``: ignored samples add 0 and, for the
    ``"sum_over_batch_size"`` reduction, leave the denominator). See
    :class:`CategoricalFocalLoss` for the arguments; ``weight`` is per class, as
    in cross-entropy.

    Shapes: ``y_pred`` (N, ..., C); ``y_true`` (N, ...) or (N, ..., 1) holding
    class indices (Keras hands them over as floats; they are cast to integers).
    """

    def __init__(self, *, gamma=2.0, alpha=None, weight=None, ignore_index=None,
                 from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="sparse_categorical_focal_loss",
                 dtype=None, epsilon=0.0):
        super().__init__(gamma=gamma, alpha=alpha, weight=weight, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis, reduction=reduction,
                         name=name, dtype=dtype, epsilon=epsilon)
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True,
                                                     binary=False)

    def call(self, y_true, y_pred):
        y_true = _class_indices(self, y_true, y_pred)
        if "int" not in str(y_true.dtype):
            y_true = ops.cast(y_true, "int64" if keras.backend.backend() != "jax" else "int32")
        loss = _softmax_focal_loss(
            y_pred, y_true, gamma=self.gamma, alpha=self.alpha,
            weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, from_logits=self.from_logits,
            axis=self.axis, reduction="none", epsilon=self.epsilon)
        if self.ignore_index is not None:
            # Keras' own sparse cross-entropy marks ignored samples with a Keras mask,
            # which its reductions use (the mean over the others); so does this loss.
            from keras.src.backend import set_keras_mask
            set_keras_mask(loss, ops.not_equal(y_true, self.ignore_index))
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(ignore_index=self.ignore_index)
        return config


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

@keras.saving.register_keras_serializable(package="focalx")
class AsymmetricLoss(keras.losses.Loss):
    r"""Asymmetric Loss (multi-label) as a Keras loss: per element
    :math:`-[y (1-p)^{\gamma_+} \log p + (1-y) p_m^{\gamma_-} \log(1-p_m)]` with
    :math:`p_m = \max(p - \mathrm{clip}, 0)` (see :func:`focalx.asymmetric_loss`), then per
    sample the mean over ``axis``. ``y_pred`` holds logits (ASL is defined on them).

    Args:
        gamma_pos, gamma_neg: focusing exponents (>= 0) of the positive and negative terms.
        clip: the probability margin on negatives, in [0, 1).
        label_smoothing: y -> y(1 - e) + e/2.
        axis: the axis averaged to give the per-sample loss.
        reduction, name, dtype: as for every ``keras.losses.Loss``.
    """

    def __init__(self, *, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, label_smoothing=0.0,
                 axis=-1, reduction="sum_over_batch_size", name="asymmetric_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma_pos = _spec.check_exponent("gamma_pos", gamma_pos)
        self.gamma_neg = _spec.check_exponent("gamma_neg", gamma_neg)
        self.clip = _spec.check_clip(clip)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.axis = _check_axis_arg(axis)

    def call(self, y_true, y_pred):
        y_true = _same_rank(y_true, y_pred)
        loss = _asymmetric_loss(
            y_pred, ops.cast(y_true, y_pred.dtype), gamma_pos=self.gamma_pos,
            gamma_neg=self.gamma_neg, clip=self.clip, label_smoothing=self.label_smoothing,
            reduction="none")
        return ops.mean(loss, axis=self.axis)

    def get_config(self):
        config = super().get_config()
        config.update(gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg, clip=self.clip,
                      label_smoothing=self.label_smoothing, axis=self.axis, dtype=self.dtype)
        return config


@keras.saving.register_keras_serializable(package="focalx")
class SparseAsymmetricSoftmaxLoss(keras.losses.Loss):
    r"""The single-label Asymmetric Loss (the ASL repository's ``ASLSingleLabel``) against
    integer class indices, as a Keras loss: per sample
    :math:`-\sum_c q_c w_c \log p_c` (see :func:`focalx.asymmetric_softmax_loss`).
    ``y_pred`` holds logits.

    Args:
        gamma_pos, gamma_neg: exponents (>= 0) of the target class and of the others.
        label_smoothing: q -> q(1 - e) + e/C (ASLSingleLabel's eps; default 0.1).
        axis: the class axis.
        reduction, name, dtype: as for every ``keras.losses.Loss``.
    """

    def __init__(self, *, gamma_pos=0.0, gamma_neg=4.0, label_smoothing=0.1, axis=-1,
                 reduction="sum_over_batch_size", name="sparse_asymmetric_softmax_loss",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma_pos = _spec.check_exponent("gamma_pos", gamma_pos)
        self.gamma_neg = _spec.check_exponent("gamma_neg", gamma_neg)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.axis = _check_axis_arg(axis)

    def call(self, y_true, y_pred):
        y_true = _class_indices(self, y_true, y_pred)
        if "int" not in str(y_true.dtype):
            y_true = ops.cast(y_true, "int64" if keras.backend.backend() != "jax" else "int32")
        return _asymmetric_softmax_loss(
            y_pred, y_true, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
            label_smoothing=self.label_smoothing, ignore_index=None, axis=self.axis,
            reduction="none")

    def get_config(self):
        config = super().get_config()
        config.update(gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
                      label_smoothing=self.label_smoothing, axis=self.axis, dtype=self.dtype)
        return config
@keras.saving.register_keras_serializable(package="focalx")
class QualityFocalLoss(keras.losses.Loss):
    r"""Quality Focal Loss (dense targets) as a Keras loss: per element
    :math:`|y - p|^\beta \mathrm{BCE}` (see :func:`focalx.quality_focal_loss`), then per
    sample the mean over ``axis``. ``y_pred`` holds logits (a linear output layer);
    ``y_true`` quality targets in [0, 1] of ``y_pred``'s shape."""

    def __init__(self, *, beta=2.0, axis=-1, reduction="sum_over_batch_size",
                 name="quality_focal_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.beta = _spec.check_exponent("beta", beta)
        self.axis = _check_axis_arg(axis)

    def call(self, y_true, y_pred):
        y_true = _same_rank(y_true, y_pred)
        loss = _quality_focal_loss(y_pred, ops.cast(y_true, y_pred.dtype), beta=self.beta,
                                   reduction="none")
        return ops.mean(loss, axis=self.axis)

    def get_config(self):
        config = super().get_config()
        config.update(beta=self.beta, axis=self.axis, dtype=self.dtype)
        return config


@keras.saving.register_keras_serializable(package="focalx")
class VarifocalLoss(keras.losses.Loss):
    r"""Varifocal Loss as a Keras loss (see :func:`focalx.varifocal_loss`), per sample
    the mean over ``axis``. ``y_pred`` holds logits; ``y_true`` IoU-aware targets in
    [0, 1] (0: negative) of ``y_pred``'s shape."""

    def __init__(self, *, alpha=0.75, gamma=2.0, iou_weighted=True, axis=-1,
                 reduction="sum_over_batch_size", name="varifocal_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = _spec.check_vfl_alpha(alpha)
        self.gamma = _spec.check_exponent("gamma", gamma)
        self.iou_weighted = _spec.check_bool(iou_weighted, "iou_weighted")
        self.axis = _check_axis_arg(axis)

    def call(self, y_true, y_pred):
        y_true = _same_rank(y_true, y_pred)
        loss = _varifocal_loss(y_pred, ops.cast(y_true, y_pred.dtype), alpha=self.alpha,
                               gamma=self.gamma, iou_weighted=self.iou_weighted,
                               reduction="none")
        return ops.mean(loss, axis=self.axis)

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, gamma=self.gamma, iou_weighted=self.iou_weighted,
                      axis=self.axis, dtype=self.dtype)
        return config


@keras.saving.register_keras_serializable(package="focalx")
class DistributionFocalLoss(keras.losses.Loss):
    r"""Distribution Focal Loss as a Keras loss (see
    :func:`focalx.distribution_focal_loss`): the per-sample loss. ``y_pred`` (N, ...,
    n_bins + 1) logits, bins on ``axis``; ``y_true`` (N, ...) or (N, ..., 1)
    continuous targets in [0, n_bins]."""

    def __init__(self, *, axis=-1, reduction="sum_over_batch_size",
                 name="distribution_focal_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.axis = _check_axis_arg(axis)

    def call(self, y_true, y_pred):
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[self.axis] == 1:
            y_true = ops.squeeze(y_true, axis=self.axis)
        return _distribution_focal_loss(y_pred, ops.cast(y_true, y_pred.dtype),
                                        axis=self.axis, reduction="none")

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, dtype=self.dtype)
        return config


@keras.saving.register_keras_serializable(package="focalx")
class LinearFocalLoss(keras.layers.Layer):
    r"""A classifier head and the softmax focal loss of its logits, fused: the logits are
    never held whole (see :func:`focalx.linear_softmax_focal_loss`). For large class
    counts (a language model's vocabulary), where a Keras loss would need the N x V
    logits as ``y_pred``.

    It owns ``kernel`` of shape ``(num_classes, in_features)`` (the loss's layout; a
    ``Dense`` layer's kernel is its transpose) and, with ``use_bias=True``, ``bias``;
    ``call(inputs, targets)`` takes ``inputs (..., in_features)`` and ``targets (...)``
    class indices (a language model's ``(B, T, H)`` states and ``(B, T)`` tokens) and
    returns the loss (``"none"``: the targets' shape). Use it in a custom ``train_step``
    or through ``add_loss``. With ``gamma=0`` (and ``alpha=None``) it is the
    cross-entropy of the head's logits. The same numbers under every Keras backend.

    Args:
        num_classes: V, the classes (rows of ``kernel``).
        in_features: H, to build the weights now (else at the first call). A head used
            only in a model's ``compute_loss`` needs it under JAX's ``fit``.
        use_bias: whether the head has a bias (V,).
        gamma, alpha, weight, ignore_index, label_smoothing, reduction, chunk_size: as
            :func:`focalx.linear_softmax_focal_loss` (``ignore_index`` -100 by default).
        kernel_initializer, bias_initializer: Keras initializers of the head.
    """

    def __init__(self, num_classes, *, in_features=None, use_bias=False, gamma=2.0,
                 alpha=None, weight=None, ignore_index=-100, label_smoothing=0.0,
                 reduction="mean", chunk_size=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.gamma = _gamma_config(gamma, class_vector=True)
        self.alpha = _alpha_config(alpha, class_vector=True)
        self.weight = _vector_config(weight, "weight", class_vector=True, allow_scalar=False)
        _spec.check_linear_module(1 if in_features is None else in_features, num_classes, **{
            name: (len(v),) for name, v in (("gamma", self.gamma), ("alpha", self.alpha),
                                            ("weight", self.weight))
            if isinstance(v, list)})
        self.num_classes = int(num_classes)
        self.use_bias = _spec.check_bool(use_bias, "use_bias")
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True,
                                                     binary=False)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.reduction = _spec.check_reduction(reduction)
        self.chunk_size = _spec.check_chunk_size(chunk_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        if in_features is not None:
            # (built now: a head called only in a model's compute_loss is not built by
            # the model's own call, and JAX's fit needs every weight before its trace)
            self.build((in_features,))

    def build(self, inputs_shape, targets_shape=None):
        in_features = inputs_shape[-1]
        _spec.check_linear_module(in_features, self.num_classes)
        self.kernel = self.add_weight(shape=(self.num_classes, in_features), name="kernel",
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(shape=(self.num_classes,), name="bias",
                                    initializer=self.bias_initializer) if self.use_bias else None

    def call(self, inputs, targets):
        in_features = self.kernel.shape[1]
        # (flattened separately, targets of another shape would pair rows with other
        # rows' targets)
        _spec.check_linear_module_inputs(inputs.shape, targets.shape, in_features)
        if "int" not in str(targets.dtype):  # (as SparseCategoricalFocalLoss: Keras's floats)
            targets = ops.cast(targets, "int64" if keras.backend.backend() != "jax" else "int32")
        loss = _linear_softmax_focal_loss(
            ops.reshape(inputs, (-1, in_features)), self.kernel.value, ops.reshape(targets, (-1,)),
            linear_bias=None if self.bias is None else self.bias.value, gamma=self.gamma,
            alpha=self.alpha, weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction,
            chunk_size=self.chunk_size)
        return ops.reshape(loss, ops.shape(targets)) if self.reduction == "none" else loss

    def compute_output_shape(self, inputs_shape, targets_shape):
        return tuple(targets_shape) if self.reduction == "none" else ()

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, use_bias=self.use_bias,
                      in_features=self.kernel.shape[1] if self.built else None,
                      gamma=self.gamma,
                      alpha=self.alpha, weight=self.weight, ignore_index=self.ignore_index,
                      label_smoothing=self.label_smoothing, reduction=self.reduction,
                      chunk_size=self.chunk_size,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      bias_initializer=keras.initializers.serialize(self.bias_initializer))
        return config
