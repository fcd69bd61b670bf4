r"""The public signatures, written once: parameters, defaults, annotations and docs.

Every public loss function (``focalx.*``, ``focalx.torch.*``, ``focalx.jax.*``, ...)
has its ``def`` line and docstring generated from :data:`LOSSES` into its source file,
between the markers ``# focalx:signature NAME`` and ``# focalx:end``; the body below
is the backend's own. Generated source, not a runtime wrapper: type checkers and IDEs
read real signatures, a call costs nothing extra, and compilers that read source
(Paddle's to_static) see ordinary functions. After editing this table run

    python -m focalx._signatures        # rewrites the generated blocks in place

``tests/test_signatures.py`` fails while a block differs from what this table makes,
and checks each backend's signature at run time. The class axis of the softmax loss
follows each framework's cross-entropy (:data:`CLASS_AXIS`).
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple


class Param(NamedTuple):
    name: str
    default: Any
    annotation: str  # "{A}" stands for the module's array type
    doc: str


class Loss(NamedTuple):
    summary: str  # the docstring's head: one line, then the math and notes
    params: tuple[Param, ...]  # keyword-only, in order
    returns: str
    notes: str  # stability and references
    #: the positional array arguments, in order (their docs: _INPUTS, one per name)
    inputs: tuple[str, ...] = ("logits", "targets")


_ARRAYS = "float | Sequence[float] | {H} | None"  # {H}: the module's hyperparameter arrays

_GAMMA = Param("gamma", 2.0, "float", "focusing parameter, a number >= 0 (0 = no focusing).")
_GAMMAS = "float | Sequence[float] | {H}"  # a number, or per class (see _spec._gamma)
_GAMMA_SIGMOID = _GAMMA._replace(
    annotation=_GAMMAS,
    doc="focusing parameter >= 0 (0 = no focusing): a number, or an array of values >= 0 "
        "broadcastable to ``logits`` (e.g. per class on the last axis, as alpha), a "
        "0-d array included (a gamma schedule under a compiler: see "
        "``focalx.gamma_schedule``).")
_GAMMA_SOFTMAX = _GAMMA._replace(
    annotation=_GAMMAS,
    doc="focusing parameter >= 0 (0 = no focusing): a number, or a per-class vector of "
        "length C with values >= 0 (class c's term is ``(1 - p_c) ** gamma[c]``), or a "
        "0-d array (see ``focalx.gamma_schedule``).")
_REDUCTION = Param("reduction", "mean", 'Literal["none", "mean", "sum"]', "")
_NORMALIZER = Param(
    "normalizer", None, "float | {H} | None",
    "None, a number > 0, or a 0-d or shape-(1,) array (e.g. the number of positive "
    "anchors): divides the result of any reduction. RetinaNet's "
    'normalisation is ``reduction="sum", normalizer=num_pos``. No host sync.')
_SMOOTHING = Param("label_smoothing", 0.0, "float", "")
_EPSILON = Param(
    "epsilon", 0.0, "float",
    "Poly-1's coefficient (Leng et al., arXiv 2204.12511), a finite real number (the "
    "paper uses epsilon >= -1): adds ``epsilon * (1 - p_t) ** (gamma + 1)``, weighted as "
    "the focal term; 0 (default): the plain loss, at no extra cost.")

LOSSES: dict[str, Loss] = {
    "sigmoid_focal_loss": Loss(
        summary=r"""Sigmoid (binary / multi-label) focal loss.

.. math::

    p &= \sigma(x), \quad p_t = y p + (1-y)(1-p), \quad
    \alpha_t = y\alpha + (1-y)(1-\alpha) \\
    \mathrm{FL}(x, y) &= -\,w\,\alpha_t\,(1-p_t)^\gamma
        \left[w_+\,y \log p + (1-y) \log(1-p)\right]

With ``pos_weight=None`` this is exactly ``torchvision.ops.sigmoid_focal_loss``,
``optax.losses.sigmoid_focal_loss`` (alpha given) and Paddle's
``sigmoid_focal_loss``; with ``gamma=0, alpha=None`` it is exactly
``binary_cross_entropy_with_logits`` (with its ``weight`` and ``pos_weight``).""",
        params=(
            _GAMMA_SIGMOID,
            Param("alpha", 0.25, _ARRAYS,
                  "None (no class balancing, alpha_t = 1), a number in [0, 1], or an array "
                  "of values in [0, 1] broadcastable to ``logits`` (e.g. per class on the "
                  "last axis): alpha for positives, 1 - alpha for negatives."),
            Param("pos_weight", None, _ARRAYS,
                  "None or an array >= 0 broadcastable to ``logits``: weight of the "
                  "positive term of the cross-entropy, as in torch's ``BCEWithLogitsLoss``."),
            Param("weight", None, _ARRAYS,
                  "None or an elementwise weight >= 0 broadcastable to ``logits``. It does "
                  "not enter the mean's denominator (as in ``BCEWithLogitsLoss``)."),
            Param("ignore_index", None, "int | float | None",
                  "None, or a target value (not 0 or 1) marking elements that add 0 and "
                  "leave the mean's denominator."),
            _SMOOTHING._replace(doc="e in [0, 1): targets become ``y * (1 - e) + e / 2``."),
            _EPSILON._replace(doc=_EPSILON.doc + " Not weighted by ``pos_weight``."),
            _REDUCTION._replace(doc='``"none"`` (shape of ``logits``), ``"sum"`` or '
                                '``"mean"`` (sum over the count of non-ignored elements; '
                                "0, not NaN, when there are none)."),
            _NORMALIZER,
            Param("from_logits", True, "bool",
                  "if False, ``logits`` holds probabilities in [0, 1], used as given: "
                  "``log 0 = -inf``, so a certain wrong prediction costs ``+inf`` (gradient "
                  "``+-inf``) and a certain right one costs 0 (gradient: its one-sided "
                  "limit, 0 for gamma > 0). Nothing is clipped."),
        ),
        returns="The loss: shape of ``logits`` for ``\"none\"``, else 0-d, in the logits' dtype "
                "(float16 / bfloat16 are computed in float32).",
        notes="""Stability: log p and log(1-p) from softplus, 1-p_t without cancellation; the
gradient is closed-form and finite for every finite logit and every gamma >= 0
(no NaN at gamma < 1).

References:
  Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.""",
    ),
    "softmax_focal_loss": Loss(
        summary=r"""Softmax (multi-class) focal loss.

.. math::

    p = \mathrm{softmax}(x), \qquad
    \mathrm{FL}(x, q) = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c

per sample, with ``q`` the one-hot target (class indices) or the given class
probabilities, smoothed as ``(1 - e) * q + e / C``. With ``gamma=0, alpha=None``
it equals ``torch.nn.functional.cross_entropy`` for every combination of
``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``, probability
targets and N-d inputs (except that an all-ignored "mean" is 0, not NaN).""",
        params=(
            _GAMMA_SOFTMAX,
            Param("alpha", None, _ARRAYS,
                  "None (1), a number in [0, 1] multiplying every class (as Keras does), or "
                  "a per-class vector of length C with values in [0, 1]."),
            Param("weight", None, _ARRAYS,
                  "None or a per-class vector >= 0 of length C, exactly as cross-entropy's: "
                  '"mean" with class indices divides by the sum of ``weight[target]`` over '
                  "the non-ignored samples."),
            Param("ignore_index", -100, "int | None",
                  "class-index targets equal to it add 0 and leave the mean's denominator "
                  "(not used with probability targets); None disables it."),
            _SMOOTHING._replace(doc="e in [0, 1)."),
            _EPSILON._replace(doc=_EPSILON.doc + " Per sample ``epsilon * sum_c w_c alpha_c "
                              "q_c (1 - p_c) ** (gamma + 1)``; at gamma=0 it is optax's "
                              "``poly_loss_cross_entropy``."),
            _REDUCTION._replace(doc='``"none"`` (per sample: the logits\' shape without the '
                                'class axis), ``"sum"`` or ``"mean"``.'),
            _NORMALIZER,
            Param("axis", None, "int", "the class axis: {AXIS}."),
            Param("from_logits", True, "bool",
                  "if False, ``logits`` holds probabilities used as given (not "
                  "renormalised); ``p_c = 0`` for a target class costs ``+inf``."),
        ),
        returns="The loss (per sample for ``\"none\"``, else 0-d).",
        notes="""Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
finite for every finite logit and gamma >= 0.""",
    ),
    "sigmoid_focal_loss_star": Loss(
        summary=r"""FL*, the focal loss variant of Lin et al.'s appendix A, with a tunable ``beta``.

.. math::

    x_t = x\,(2y - 1), \qquad
    \mathrm{FL}^*(x, y) = -\,w\,\alpha_t \log\sigma(\gamma x_t + \beta) / \gamma

fvcore's ``sigmoid_focal_loss_star`` is the case ``beta=0``.""",
        params=(
            Param("gamma", 1.0, "float", "a number > 0."),
            Param("beta", 0.0, "float", "the shift of the scaled logit, a real number."),
            Param("alpha", None, _ARRAYS, "as in ``sigmoid_focal_loss`` (default None here)."),
            Param("weight", None, _ARRAYS, "as in ``sigmoid_focal_loss``."),
            Param("ignore_index", None, "int | float | None", "as in ``sigmoid_focal_loss``."),
            _SMOOTHING._replace(doc="as in ``sigmoid_focal_loss``."),
            _REDUCTION._replace(doc="as in ``sigmoid_focal_loss``."),
            _NORMALIZER._replace(doc="as in ``sigmoid_focal_loss``."),
        ),
        returns="The loss: shape of ``logits`` for ``\"none\"``, else 0-d.",
        notes="Stability: log-sigmoid from softplus; closed-form gradient, finite everywhere.",
    ),
    "asymmetric_loss": Loss(
        summary=r"""Asymmetric Loss (ASL) for multi-label classification (Ridnik et al.).

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
probabilities at eps = 1e-8, which caps each log term at 18.42; this one does not.""",
        params=(
            Param("gamma_pos", 0.0, "float", "focusing exponent of the positive term, >= 0."),
            Param("gamma_neg", 4.0, "float", "focusing exponent of the negative term, >= 0."),
            Param("clip", 0.05, "float",
                  "the probability margin m in [0, 1) on negatives (0: none). At p = m the "
                  "gradient takes its value from below (the kink; it is continuous there "
                  "for gamma_neg > 0)."),
            Param("weight", None, _ARRAYS, "as in ``sigmoid_focal_loss``."),
            Param("ignore_index", None, "int | float | None", "as in ``sigmoid_focal_loss``."),
            _SMOOTHING._replace(doc="as in ``sigmoid_focal_loss``."),
            _REDUCTION._replace(doc="as in ``sigmoid_focal_loss``."),
            _NORMALIZER._replace(doc="as in ``sigmoid_focal_loss``."),
        ),
        returns="The loss: shape of ``logits`` for ``\"none\"``, else 0-d.",
        notes="""Stability: log p and log(1-p) from softplus, log(1 - p_m) as log1p(-p_m) near the
margin and log(sigmoid(-x) + m) above, nothing clamped; closed-form gradient, finite
for every finite logit and every exponent >= 0.

References:
  Ridnik et al., `Asymmetric Loss For Multi-Label Classification
  <https://arxiv.org/abs/2009.14119>`_, ICCV 2021.""",
    ),
    "asymmetric_softmax_loss": Loss(
        summary=r"""Single-label (softmax) Asymmetric Loss: the ASL repository's ``ASLSingleLabel``.

.. math::

    p = \mathrm{softmax}(x), \qquad
    \mathrm{ASL}_1(x, y) = -\sum_c q_c\, w_c \log p_c, \qquad
    w_y = (1-p_y)^{\gamma_+}, \quad w_{c \ne y} = p_c^{\gamma_-}

per sample, for the class index y, with q the one-hot target smoothed as
``(1 - e) * onehot + e / C``. The asymmetric weights follow the hard target: the target
class is focused by gamma_pos, the smoothing mass on the other classes is weighted by
p_c ** gamma_neg (without smoothing gamma_neg has no effect, and this is
``softmax_focal_loss(gamma=gamma_pos)``). ``ASLSingleLabel(gamma_pos, gamma_neg,
eps=e)`` is ``label_smoothing=e`` here (the same default, 0.1), ``reduction="mean"``.""",
        params=(
            Param("gamma_pos", 0.0, "float", "focusing exponent of the target class, >= 0."),
            Param("gamma_neg", 4.0, "float", "exponent of the other classes' weights, >= 0."),
            Param("ignore_index", -100, "int | None",
                  "class-index targets equal to it add 0 and leave the mean's denominator; "
                  "None disables it."),
            _SMOOTHING._replace(default=0.1, doc="e in [0, 1) (ASLSingleLabel's eps)."),
            _REDUCTION._replace(doc='``"none"`` (per sample), ``"sum"`` or ``"mean"`` (over '
                                "the non-ignored samples)."),
            _NORMALIZER,
            Param("axis", None, "int", "the class axis: {AXIS}."),
        ),
        returns="The loss (per sample for ``\"none\"``, else 0-d).",
        notes="""Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
finite for every finite logit and exponents >= 0.

References:
  Ridnik et al., `Asymmetric Loss For Multi-Label Classification
  <https://arxiv.org/abs/2009.14119>`_, ICCV 2021 (its repository's single-label form).""",
    ),
}

# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss (issue 18) ------------------
_NEW_WEIGHT = Param("weight", None, _ARRAYS,
                    "None or an elementwise weight >= 0 broadcastable to ``logits`` (mmdet's "
                    "per-sample ``weight`` of shape (N,) is ``weight[:, None]``); not in the "
                    "mean's denominator.")
_NEW_REDUCTION = _REDUCTION._replace(doc='``"none"`` (shape of ``logits``), ``"sum"`` or '
                                     '``"mean"`` (over every element of ``logits``).')

LOSSES.update({
    "quality_focal_loss": Loss(
        summary=r"""Quality Focal Loss (QFL), the classification half of Generalized Focal Loss.

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
``reduction="sum", normalizer=N``.""",
        params=(
            Param("beta", 2.0, "float", "the exponent of |y - p|, a number >= 0 (0: plain "
                  "binary cross-entropy against y)."),
            _NEW_WEIGHT,
            _NEW_REDUCTION,
            _NORMALIZER._replace(doc="as in ``sigmoid_focal_loss``: GFL's normaliser, the "
                                 "number of positives, is ``reduction=\"sum\", "
                                 "normalizer=num_pos``."),
        ),
        returns="The loss: shape of ``logits`` for ``\"none\"``, else 0-d.",
        notes="""Gradient (closed form): with s = p - y (as (1-y)p - y(1-p), exact for hard
targets), d|s|/dx = sign(s) p(1-p) and dBCE/dx = s, so
``dQFL/dx = w|s|^beta s + beta QFL p(1-p)/s``: |s|^(beta-1) never appears alone,
and the gradient is finite for every finite logit and beta >= 0. At s == 0
exactly, the second term is 0 (the subgradient of |s| at 0; for beta < 1 the
one-sided derivatives are infinite there, where autograd through mmdet's formula
gives NaN).

References:
  Li et al., `Generalized Focal Loss <https://arxiv.org/abs/2006.04388>`_, NeurIPS 2020.""",
    ),
    "varifocal_loss": Loss(
        summary=r"""Varifocal Loss (VFL), VarifocalNet's IoU-aware classification loss.

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
``binary_cross_entropy`` clamps log at -100, focalx does not).""",
        params=(
            Param("alpha", 0.75, "float", "the negatives' weight, a number >= 0."),
            Param("gamma", 2.0, "float", "the negatives' exponent of p, a number >= 0."),
            Param("iou_weighted", True, "bool",
                  "True: positives are weighted by q (mmdet's default); False: by 1."),
            _NEW_WEIGHT,
            _NEW_REDUCTION,
            _NORMALIZER._replace(doc="as in ``sigmoid_focal_loss`` (mmdet's ``avg_factor``)."),
        ),
        returns="The loss: shape of ``logits`` for ``\"none\"``, else 0-d.",
        notes="""Gradient (closed form): p - q times the weight for a positive; for a
negative, d/dx [alpha p^gamma softplus(x)] = alpha p^gamma (p + gamma (1-p)
softplus(x)), with no p^(gamma-1) alone: finite for every finite logit and gamma >= 0.

References:
  Zhang et al., `VarifocalNet: An IoU-aware Dense Object Detector
  <https://arxiv.org/abs/2008.13367>`_, CVPR 2021.""",
    ),
    "distribution_focal_loss": Loss(
        summary=r"""Distribution Focal Loss (DFL), the box-regression half of Generalized Focal Loss.

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
``reduction="none"`` then a mean over that axis.""",
        params=(
            Param("weight", None, _ARRAYS,
                  "None or a per-sample weight >= 0 broadcastable to ``targets``; not in "
                  "the mean's denominator."),
            Param("ignore_index", None, "int | float | None",
                  "None, or a negative target value marking samples that add 0 and leave "
                  "the mean's denominator."),
            _REDUCTION._replace(doc='``"none"`` (per sample: the logits\' shape without the '
                                'class axis), ``"sum"`` or ``"mean"`` (over the samples not '
                                "ignored)."),
            _NORMALIZER._replace(doc="as in ``sigmoid_focal_loss``."),
            Param("axis", None, "int", "the bin axis: {AXIS}."),
        ),
        returns="The loss (per sample for ``\"none\"``, else 0-d).",
        notes="""Stability and gradient: the softmax loss's (gamma 0): log-softmax, and the
closed-form gradient ``p - q`` per sample, finite for every finite logit.

References:
  Li et al., `Generalized Focal Loss <https://arxiv.org/abs/2006.04388>`_, NeurIPS 2020.""",
    ),
})

_INPUTS = {
    "sigmoid_focal_loss": (
        "floating array, any shape ``[...]``; probabilities if ``from_logits=False``.",
        "broadcastable to ``logits`` (never enlarging it); hard {0, 1} or soft in [0, 1]; "
        "bool / integer targets are accepted."),
    "softmax_focal_loss": (
        "floating array ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` (class axis ``axis``); "
        "probabilities on that axis if ``from_logits=False``.",
        "class indices (integer dtype, the logits' shape without the class axis) or class "
        "probabilities in [0, 1] (floating, the logits' shape), told apart as "
        "``F.cross_entropy`` does."),
    "sigmoid_focal_loss_star": (
        "floating array, any shape.", "broadcastable to ``logits``, in [0, 1]."),
    "asymmetric_loss": (
        "floating array, any shape ``[...]`` (e.g. ``(N, C)``: one logit per label).",
        "broadcastable to ``logits``, in [0, 1] (multi-hot labels)."),
    "asymmetric_softmax_loss": (
        "floating array ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` (class axis ``axis``).",
        "class indices (integer dtype, the logits' shape without the class axis)."),
}
_INPUTS.update({
    "quality_focal_loss": (
        "floating array, any shape; (N, C), classes on the last axis, for the pair layout.",
        "dense: broadcastable to ``logits``, quality in [0, 1]; or the tuple ``(labels, "
        "scores)``: integer class indices (``C`` or negative: background) and floating "
        "quality scores in [0, 1], both of the logits' shape without the last axis."),
    "varifocal_loss": (
        "floating array, any shape.",
        "broadcastable to ``logits``, the IoU-aware target in [0, 1] (0: negative)."),
    "distribution_focal_loss": (
        "floating array ``(N, n_bins + 1)`` or ``(..., n_bins + 1, ...)`` (bins on "
        "``axis``).",
        "the logits' shape without the bin axis: continuous targets in [0, n_bins] (or "
        "ignore_index)."),
})

# ---- the fused linear + softmax focal loss (issue 19) ----------------------------------
LOSSES["linear_softmax_focal_loss"] = Loss(
    summary=r"""Softmax focal loss of a linear layer's output, without the logits.

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
``F.linear_cross_entropy``).""",
    params=(
        Param("linear_bias", None, "{A} | None",
              "None or the layer's bias, shape ``(V,)``."),
        _GAMMA_SOFTMAX._replace(doc=_GAMMA_SOFTMAX.doc.replace("length C", "length V")),
        LOSSES["softmax_focal_loss"].params[1]._replace(
            doc="None (1), a number in [0, 1] multiplying every class, or a per-class "
                "vector of length V with values in [0, 1]."),
        LOSSES["softmax_focal_loss"].params[2]._replace(
            doc="None or a per-class vector >= 0 of length V, exactly as cross-entropy's: "
                '"mean" divides by the sum of ``weight[target]`` over the non-ignored rows.'),
        LOSSES["softmax_focal_loss"].params[3]._replace(
            doc="targets equal to it add 0 and leave the mean's denominator; None disables "
                "it."),
        _SMOOTHING._replace(doc="e in [0, 1): the target distribution is ``(1 - e) * "
                            "onehot + e / V``."),
        _REDUCTION._replace(doc='``"none"`` (per row, shape ``(N,)``), ``"sum"`` or '
                            '``"mean"``.'),
        _NORMALIZER,
        Param("chunk_size", None, "int | None",
              "rows per block (an int >= 1), or None: blocks of about 2**22 logits "
              "(``max(1, 2**22 // V)`` rows). Memory: one block's logits and gradient "
              "instead of N x V; the result does not depend on it beyond rounding."),
    ),
    returns="The loss (per row for ``\"none\"``, else 0-d).",
    notes="""Gradients: the softmax focal loss's closed form G w.r.t. each block's logits,
then ``G @ W`` (hidden), ``G.T @ h`` (weight, summed over blocks) and ``G.sum(0)``
(bias). For "mean" and "sum" they are computed in the forward pass (one pass over the
blocks, as the fused cross-entropy kernels do) and scaled by the incoming gradient;
for "none" the backward pass recomputes each block's logits with the incoming
per-row gradient. Stability: the softmax focal loss's.""",
    inputs=("hidden", "linear_weight", "targets"),
)
_INPUTS["linear_softmax_focal_loss"] = (
    "floating array ``(N, H)``: the rows' features (e.g. a language model's last hidden "
    "states, flattened over batch and time).",
    "floating array ``(V, H)``: the linear layer's weight (torch's ``nn.Linear.weight`` "
    "layout; Keras' and Flax's kernels are its transpose).",
    "class indices ``(N,)`` of an integer dtype, in [0, V) or ``ignore_index``.")

#: the framework-neutral defaults of every loss (``axis`` follows the framework)
DEFAULTS: dict[str, dict[str, Any]] = {
    name: {p.name: p.default for p in loss.params if p.name != "axis"}
    for name, loss in LOSSES.items()}


class Target(NamedTuple):
    """A module whose public functions are generated."""

    path: str  # relative to the repository root
    array: str  # the array type's annotation
    hyper: str  # the annotation of hyperparameter arrays (the array type, or NumPy's)
    axis: Any  # the softmax loss's class axis default
    axis_doc: str
    extra: dict  # loss -> tuple of extra Params (the framework's own spellings)
    note: str  # one line on where the arrays come from
    loss_notes: dict = {}  # loss -> what this framework's users should know besides


_SOFT_LABEL = Param(
    "soft_label", None, "bool | None",
    "Paddle's ``cross_entropy`` keyword: True says ``targets`` are class probabilities, "
    "False class indices; None tells them apart by shape and dtype.")

#: what a framework's users get besides the table: extra parameters in their framework's
#: own spelling, and notes per loss
EXTRAS = {
    "paddle": ({"softmax_focal_loss": (_SOFT_LABEL,)}, {
        "sigmoid_focal_loss":
        'The default reduction is "mean", where '
        '``paddle.nn.functional.sigmoid_focal_loss``\'s is "sum"; its gradient is '
        "NaN at gamma < 1 for saturated logits, this one's is finite.",
        "softmax_focal_loss":
        "Class-index targets may also carry a size-1 class axis (``(N, 1)`` for "
        "``(N, C)``), as ``paddle.nn.functional.cross_entropy`` takes them; "
        '"none" then keeps that axis in the result (as with ``soft_label=True``), '
        "as ``cross_entropy`` returns it."}),
}


def _registry():
    try:
        from .backends import REGISTRY
    except ImportError:  # run as a script: the registry module imports nothing of focalx
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "_focalx_registry", root() / "backends" / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        REGISTRY = module.REGISTRY
    return REGISTRY


def _targets() -> dict[str, Target]:
    registry = _registry()
    out = {"focalx": Target("focalx/__init__.py", "ArrayLike", "ArrayLike", None,
                            "None means the framework's cross-entropy convention ("
                            + "; ".join(f"{b.name}: {b.class_axis}" for b in registry.values())
                            + "; NumPy: -1)", {},
                            "Any supported framework's arrays, or NumPy arrays and Python "
                            "sequences (computed by the float64 reference, which returns "
                            "float64).")}
    for b in registry.values():
        extra, notes = EXTRAS.get(b.name, ({}, {}))
        path = "backends/" + b.functions.removeprefix("focalx.backends.").replace(".", "/")
        out[b.name] = Target(path + ".py", b.array_annotation,
                             f"{b.array_annotation} | np.ndarray", b.class_axis,
                             b.class_axis_doc, extra,
                             f"On {b.array_annotation} values (hyperparameter arrays may also "
                             "be NumPy).", notes)
    return out


def root() -> Path:
    return Path(__file__).resolve().parent.parent


#: every module whose public functions are generated (focalx and each registered backend)
TARGETS: dict[str, Target] = _targets()


def params(loss: str, target: str) -> list[Param]:
    """The keyword-only parameters of `loss` in module `target`, defaults filled in."""
    t = TARGETS[target]
    out = [p._replace(default=t.axis, annotation="int" if t.axis is not None else "int | None")
           if p.name == "axis" else p for p in LOSSES[loss].params]
    return out + list(t.extra.get(loss, ()))


def _fmt(v) -> str:
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _doc(loss: str, target: str, indent: str) -> str:
    t, spec = TARGETS[target], LOSSES[loss]
    width = 88 - len(indent)

    def arg(name, text):
        return textwrap.wrap(f"{name}: {text}", width=width, subsequent_indent="    ",
                             initial_indent="  ", break_on_hyphens=False)
    lines = spec.summary.split("\n") + [""] + textwrap.wrap(t.note, width=width)
    if loss in t.loss_notes:
        lines += [""] + textwrap.wrap(t.loss_notes[loss], width=width)
    lines += ["", "Args:"]
    for name, text in zip(spec.inputs, _INPUTS[loss]):
        lines += arg(name, text)
    for p in params(loss, target):
        lines += arg(p.name, p.doc.replace("{AXIS}", t.axis_doc))
    lines += ["", "Returns:"] + textwrap.wrap(spec.returns, width=width, initial_indent="  ",
                                              subsequent_indent="  ")
    lines += [""] + spec.notes.split("\n")
    body = "\n".join((indent + ln) if ln else "" for ln in lines)
    return f'{indent}r"""{body[len(indent):]}\n{indent}"""'


def render(loss: str, target: str) -> str:
    """The generated block for `loss` in module `target` (markers included)."""
    t = TARGETS[target]
    head = f"def {loss}("
    parts = [f"{name}: {t.array}" for name in LOSSES[loss].inputs] + ["*"]
    for p in params(loss, target):
        ann = p.annotation.replace("{A}", t.array).replace("{H}", t.hyper)
        parts.append(f"{p.name}: {ann} = {_fmt(p.default)}")
    lines, cur = [], head
    for i, part in enumerate(parts):
        piece = part + (", " if i < len(parts) - 1 else f") -> {t.array}:")
        if len(cur) + len(piece.rstrip()) > 100:
            lines.append(cur.rstrip())
            cur = " " * len(head)
        cur += piece
    lines.append(cur)
    return "\n".join([f"# focalx:signature {loss}", *lines, _doc(loss, target, "    "),
                      "    # focalx:end"])


_BLOCK = re.compile(r"^# focalx:signature (\w+)\n.*?^    # focalx:end$", re.M | re.S)


def regenerate(text: str, target: str) -> str:
    """`text` (a module's source) with each generated block made anew."""
    return _BLOCK.sub(lambda m: render(m.group(1), target), text)


def main(argv=None) -> int:
    """Rewrite every target's generated blocks; with --check, only say which differ."""
    argv = sys.argv[1:] if argv is None else argv
    stale = []
    for name, t in TARGETS.items():
        path = root() / t.path
        if not path.is_file():
            print(f"{path} not found: run this in a source checkout", file=sys.stderr)
            return 2
        old = path.read_text()
        new = regenerate(old, name)
        if new != old:
            stale.append(t.path)
            if "--check" not in argv:
                path.write_text(new)
    verb = "differ" if "--check" in argv else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "all generated signatures are current")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main())
