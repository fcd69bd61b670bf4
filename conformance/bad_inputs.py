"""Bad inputs every backend must reject with the same exception type, naming the argument.

Each entry: (id, function, logits, targets, kwargs, exception type, argument name).
Arrays are NumPy; a harness converts logits, targets and array-valued kwargs to its
framework (lists stay lists: host data). The class axis is left to each backend's
default (axis 1 of a 2-D input is its last axis in every convention).

A "function" of ``SOFTMAX_MODULE`` or ``SIGMOID_MODULE`` is the backend's loss class
(torch's nn.Module, Paddle's Layer, the Keras loss for TensorFlow), constructed with the
kwargs: a bad array must be refused there, before any call (as torch's and Paddle's own
losses check what they can at construction). Backends without loss classes (NumPy,
JAX) report these as not applicable.
"""

from __future__ import annotations

import numpy as np

S, M, STAR = "sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star"
QFL, VFL, DFL = "quality_focal_loss", "varifocal_loss", "distribution_focal_loss"
SOFTMAX_MODULE, SIGMOID_MODULE = "softmax module", "sigmoid module"
MODULES = (SOFTMAX_MODULE, SIGMOID_MODULE)


def bad_inputs():
    X = np.zeros((4, 3))
    T = np.ones((4, 3))
    Y = np.array([0, 1, 2, 1])
    nan, inf, huge = float("nan"), float("inf"), 10 ** 400
    return [
        ("sigmoid/gamma<0", S, X, T, dict(gamma=-1.0), ValueError, "gamma"),
        ("sigmoid/gamma-str", S, X, T, dict(gamma="2"), TypeError, "gamma"),
        ("sigmoid/alpha>1", S, X, T, dict(alpha=1.5), ValueError, "alpha"),
        ("sigmoid/alpha-vector-values", S, X, T, dict(alpha=np.array([0.5, 2.0, 0.1])),
         ValueError, "alpha"),
        ("sigmoid/alpha-length", S, X, T, dict(alpha=[0.5, 0.5]), ValueError, "alpha"),
        ("sigmoid/pos_weight-length", S, X, T, dict(pos_weight=[1.0, 2.0]), ValueError,
         "pos_weight"),
        ("sigmoid/pos_weight<0", S, X, T, dict(pos_weight=[-1.0, 2.0, 1.0]), ValueError,
         "pos_weight"),
        ("sigmoid/weight-shape", S, X, T, dict(weight=np.ones((5, 3))), ValueError, "weight"),
        ("sigmoid/label_smoothing=1", S, X, T, dict(label_smoothing=1.0), ValueError,
         "label_smoothing"),
        ("sigmoid/reduction", S, X, T, dict(reduction="avg"), ValueError, "reduction"),
        ("sigmoid/normalizer=0", S, X, T, dict(normalizer=0.0), ValueError, "normalizer"),
        ("sigmoid/normalizer-shape", S, X, T, dict(normalizer=np.ones(2)), ValueError,
         "normalizer"),
        ("sigmoid/normalizer-bool", S, X, T, dict(normalizer=np.array(True)), TypeError,
         "normalizer"),
        ("sigmoid/ignore_index=1", S, X, T, dict(ignore_index=1), ValueError, "ignore_index"),
        ("sigmoid/from_logits-str", S, X, T, dict(from_logits="yes"), TypeError, "from_logits"),
        ("sigmoid/targets-shape", S, X, np.ones((4, 4)), {}, ValueError, "targets"),
        ("sigmoid/targets-enlarge", S, X, np.ones((2, 4, 3)), {}, ValueError, "targets"),
        ("sigmoid/targets>1", S, X, 2 * T, {}, ValueError, "targets"),
        ("sigmoid/probabilities>1", S, X + 2, T, dict(from_logits=False), ValueError, "logits"),
        ("sigmoid/integer-logits", S, np.zeros((4, 3), dtype=np.int64), T, {}, TypeError,
         "logits"),
        ("softmax/weight-length", M, X, Y, dict(weight=[1.0, 2.0]), ValueError, "weight"),
        ("softmax/alpha-length", M, X, Y, dict(alpha=[0.5, 0.5]), ValueError, "alpha"),
        ("softmax/alpha<0", M, X, Y, dict(alpha=-0.1), ValueError, "alpha"),
        ("softmax/index>=C", M, X, np.array([0, 1, 3, 1]), {}, ValueError, "targets"),
        ("softmax/index<0", M, X, np.array([0, 1, -2, 1]), {}, ValueError, "targets"),
        ("softmax/targets-shape", M, X, np.array([0, 1, 2]), {}, ValueError, "targets"),
        ("softmax/float-indices", M, X, np.array([0.0, 1.0, 2.0, 1.0]), {}, TypeError,
         "targets"),
        ("softmax/integer-probabilities", M, X, np.ones((4, 3), dtype=np.int64), {}, TypeError,
         "targets"),
        ("softmax/axis", M, X, Y, dict(axis=2), ValueError, "axis"),
        ("softmax/gamma-nan", M, X, Y, dict(gamma=nan), ValueError, "gamma"),
        ("softmax/label_smoothing<0", M, X, Y, dict(label_smoothing=-0.1), ValueError,
         "label_smoothing"),
        ("softmax/integer-logits", M, np.zeros((4, 3), dtype=np.int64), Y, {}, TypeError,
         "logits"),
        ("softmax/probabilities>1", M, X + 2, Y, dict(from_logits=False), ValueError, "logits"),
        ("softmax/ignore_index-str", M, X, Y, dict(ignore_index="none"), TypeError,
         "ignore_index"),
        ("softmax/reduction", M, X, Y, dict(reduction="batchmean"), ValueError, "reduction"),
        ("softmax/normalizer<0", M, X, Y, dict(normalizer=-2.0), ValueError, "normalizer"),
        ("softmax/from_logits-int", M, X, Y, dict(from_logits=0), TypeError, "from_logits"),
        ("star/gamma=0", STAR, X, T, dict(gamma=0.0), ValueError, "gamma"),
        ("star/integer-logits", STAR, np.zeros((4, 3), dtype=np.int64), T, {}, TypeError,
         "logits"),
        ("star/targets-shape", STAR, X, np.ones((3, 3)), {}, ValueError, "targets"),
        ("star/alpha>1", STAR, X, T, dict(alpha=2.0), ValueError, "alpha"),
        ("star/weight<0", STAR, X, T, dict(weight=-np.ones(3)), ValueError, "weight"),
        ("star/ignore_index=0", STAR, X, T, dict(ignore_index=0), ValueError, "ignore_index"),
        ("star/label_smoothing>1", STAR, X, T, dict(label_smoothing=1.5), ValueError,
         "label_smoothing"),
        ("star/reduction", STAR, X, T, dict(reduction=None), ValueError, "reduction"),
        ("star/normalizer-str", STAR, X, T, dict(normalizer="n"), TypeError, "normalizer"),
        ("star/beta-inf", STAR, X, T, dict(beta=float("inf")), ValueError, "beta"),
        # numbers too large for a float, integers beyond int64, arrays that are not numbers
        ("sigmoid/gamma-huge-int", S, X, T, dict(gamma=huge), ValueError, "gamma"),
        ("star/beta-huge-int", STAR, X, T, dict(beta=huge), ValueError, "beta"),
        ("sigmoid/alpha-huge-int", S, X, T, dict(alpha=huge), ValueError, "alpha"),
        ("sigmoid/label_smoothing-huge-int", S, X, T, dict(label_smoothing=huge), ValueError,
         "label_smoothing"),
        ("sigmoid/normalizer-huge-int", S, X, T, dict(normalizer=huge), ValueError,
         "normalizer"),
        ("sigmoid/weight-list-huge-int", S, X, T, dict(weight=[huge, 1, 1]), ValueError,
         "weight"),
        ("softmax/ignore_index-beyond-int64", M, X, Y, dict(ignore_index=10 ** 30), ValueError,
         "ignore_index"),
        ("softmax/ignore_index=2**63", M, X, Y, dict(ignore_index=2 ** 63), ValueError,
         "ignore_index"),
        ("sigmoid/alpha-strings", S, X, T, dict(alpha=["a", "b", "c"]), TypeError, "alpha"),
        ("sigmoid/alpha-ragged", S, X, T, dict(alpha=[[0.1], [0.1, 0.2]]), ValueError, "alpha"),
        ("softmax/index-beyond-int32", M, X, np.array([2 ** 32 + 1, 1, 2, 1]), {}, ValueError,
         "targets"),
        # NaN anywhere in a list (Python's min and max skip one that is not first)
        ("sigmoid/alpha-nan-in-list", S, X, T, dict(alpha=[0.1, nan, 0.2]), ValueError,
         "alpha"),
        ("sigmoid/pos_weight-nan-in-list", S, X, T, dict(pos_weight=[1.0, nan, 1.0]),
         ValueError, "pos_weight"),
        ("softmax/weight-nan-in-list", M, X, Y, dict(weight=[1.0, nan, 1.0]), ValueError,
         "weight"),
        # infinite weights: they would pass ">= 0", then give NaN
        ("sigmoid/pos_weight-inf", S, X, T, dict(pos_weight=inf), ValueError, "pos_weight"),
        ("softmax/weight-inf", M, X, Y, dict(weight=[1.0, inf, 1.0]), ValueError, "weight"),
        ("sigmoid/weight-inf-array", S, X, T, dict(weight=np.array([1.0, inf, 1.0])),
         ValueError, "weight"),
        # loss classes refuse bad arrays at construction
        ("module/softmax/alpha>1", SOFTMAX_MODULE, X, Y, dict(alpha=[1.5] * 3), ValueError,
         "alpha"),
        ("module/softmax/weight-strings", SOFTMAX_MODULE, X, Y, dict(weight="abc"), TypeError,
         "weight"),
        ("module/softmax/weight-2d", SOFTMAX_MODULE, X, Y, dict(weight=[[1.0, 2.0, 1.0]]),
         ValueError, "weight"),
        ("module/softmax/weight-nan", SOFTMAX_MODULE, X, Y, dict(weight=[1.0, nan, 1.0]),
         ValueError, "weight"),
        ("module/softmax/gamma<0", SOFTMAX_MODULE, X, Y, dict(gamma=-1.0), ValueError, "gamma"),
        ("module/sigmoid/pos_weight<0", SIGMOID_MODULE, X, T, dict(pos_weight=[-1.0, 1.0, 1.0]),
         ValueError, "pos_weight"),
        ("module/sigmoid/alpha-nan", SIGMOID_MODULE, X, T, dict(alpha=[0.5, nan, 0.5]),
         ValueError, "alpha"),
        ("module/sigmoid/pos_weight-inf", SIGMOID_MODULE, X, T,
         dict(pos_weight=[1.0, inf, 1.0]), ValueError, "pos_weight"),
        # gamma as a vector (per class)
        ("sigmoid/gamma-vector-length", S, X, T, dict(gamma=[1.0, 2.0]), ValueError, "gamma"),
        ("sigmoid/gamma-vector<0", S, X, T, dict(gamma=np.array([0.5, -1.0, 2.0])),
         ValueError, "gamma"),
        ("sigmoid/gamma-vector-nan-in-list", S, X, T, dict(gamma=[1.0, nan, 2.0]), ValueError,
         "gamma"),
        ("sigmoid/gamma-vector-strings", S, X, T, dict(gamma=["a", "b", "c"]), TypeError,
         "gamma"),
        ("sigmoid/gamma-vector-bool", S, X, T, dict(gamma=np.array([True, False, True])),
         TypeError, "gamma"),
        ("softmax/gamma-vector-length", M, X, Y, dict(gamma=[1.0, 2.0]), ValueError, "gamma"),
        ("softmax/gamma-vector-2d", M, X, Y, dict(gamma=np.ones((4, 3))), ValueError, "gamma"),
        ("softmax/gamma-vector<0", M, X, Y, dict(gamma=[0.5, -0.5, 1.0]), ValueError, "gamma"),
        ("softmax/gamma-vector-nan", M, X, Y, dict(gamma=np.array([1.0, nan, 1.0])),
         ValueError, "gamma"),
        ("softmax/gamma-vector-inf", M, X, Y, dict(gamma=[1.0, inf, 1.0]), ValueError, "gamma"),
        ("softmax/gamma-dict", M, X, Y, dict(gamma={"a": 1.0}), TypeError, "gamma"),
        ("module/softmax/gamma-vector<0", SOFTMAX_MODULE, X, Y, dict(gamma=[0.5, -1.0, 1.0]),
         ValueError, "gamma"),
        ("module/softmax/gamma-vector-2d", SOFTMAX_MODULE, X, Y,
         dict(gamma=[[1.0, 2.0, 1.0]]), ValueError, "gamma"),
        ("module/sigmoid/gamma-vector-nan", SIGMOID_MODULE, X, T, dict(gamma=[0.5, nan, 0.5]),
         ValueError, "gamma"),
    ] + _gfl_bad_inputs() + _poly1_bad(X, T, Y) + _asl_bad(X, T) + \
        _asl_softmax_bad(X, Y) + _linear_bad()


def _gfl_bad_inputs():
    """Quality Focal Loss, Varifocal Loss and Distribution Focal Loss."""
    X = np.zeros((4, 3))
    T = np.full((4, 3), 0.5)
    D = np.zeros((4, 5))  # n_bins = 4
    Y = np.array([0.0, 1.5, 4.0, 2.0])
    nan = float("nan")
    return [
        ("qfl/beta<0", QFL, X, T, dict(beta=-1.0), ValueError, "beta"),
        ("qfl/beta-str", QFL, X, T, dict(beta="2"), TypeError, "beta"),
        ("qfl/weight<0", QFL, X, T, dict(weight=-np.ones(3)), ValueError, "weight"),
        ("qfl/weight-shape", QFL, X, T, dict(weight=np.ones((5, 3))), ValueError, "weight"),
        ("qfl/reduction", QFL, X, T, dict(reduction="avg"), ValueError, "reduction"),
        ("qfl/normalizer=0", QFL, X, T, dict(normalizer=0.0), ValueError, "normalizer"),
        ("qfl/integer-logits", QFL, np.zeros((4, 3), dtype=np.int64), T, {}, TypeError,
         "logits"),
        ("qfl/targets>1", QFL, X, 3 * T, {}, ValueError, "targets"),
        ("qfl/targets-shape", QFL, X, np.ones((4, 4)), {}, ValueError, "targets"),
        ("vfl/alpha<0", VFL, X, T, dict(alpha=-0.5), ValueError, "alpha"),
        ("vfl/alpha-array", VFL, X, T, dict(alpha=[0.5, 0.5, 0.5]), TypeError, "alpha"),
        ("vfl/gamma-nan", VFL, X, T, dict(gamma=nan), ValueError, "gamma"),
        ("vfl/iou_weighted-int", VFL, X, T, dict(iou_weighted=1), TypeError, "iou_weighted"),
        ("vfl/weight-nan", VFL, X, T, dict(weight=[1.0, nan, 1.0]), ValueError, "weight"),
        ("vfl/reduction", VFL, X, T, dict(reduction="batchmean"), ValueError, "reduction"),
        ("vfl/normalizer<0", VFL, X, T, dict(normalizer=-1.0), ValueError, "normalizer"),
        ("vfl/integer-logits", VFL, np.zeros((4, 3), dtype=np.int64), T, {}, TypeError,
         "logits"),
        ("vfl/targets<0", VFL, X, -T, {}, ValueError, "targets"),
        ("dfl/targets>n_bins", DFL, D, np.array([0.0, 1.5, 4.5, 2.0]), {}, ValueError,
         "targets"),
        ("dfl/targets<0", DFL, D, np.array([0.0, -0.5, 1.0, 2.0]), {}, ValueError, "targets"),
        ("dfl/targets-shape", DFL, D, np.zeros((4, 5)), {}, ValueError, "targets"),
        ("dfl/integer-logits", DFL, np.zeros((4, 5), dtype=np.int64), Y, {}, TypeError,
         "logits"),
        ("dfl/weight-length", DFL, D, Y, dict(weight=[1.0, 2.0]), ValueError, "weight"),
        ("dfl/weight<0", DFL, D, Y, dict(weight=-1.0), ValueError, "weight"),
        ("dfl/ignore_index-in-range", DFL, D, Y, dict(ignore_index=2), ValueError,
         "ignore_index"),
        ("dfl/ignore_index-str", DFL, D, Y, dict(ignore_index="x"), TypeError, "ignore_index"),
        ("dfl/reduction", DFL, D, Y, dict(reduction="avg"), ValueError, "reduction"),
        ("dfl/normalizer-shape", DFL, D, Y, dict(normalizer=np.ones(2)), ValueError,
         "normalizer"),
        ("dfl/axis", DFL, D, Y, dict(axis=2), ValueError, "axis"),
    ]


def _poly1_bad(X, T, Y):
    """Poly-1's epsilon: a finite real number (negative allowed)."""
    nan, inf = float("nan"), float("inf")
    return [
        ("poly1/sigmoid/epsilon-nan", S, X, T, dict(epsilon=nan), ValueError, "epsilon"),
        ("poly1/sigmoid/epsilon-str", S, X, T, dict(epsilon="1"), TypeError, "epsilon"),
        ("poly1/sigmoid/epsilon-huge-int", S, X, T, dict(epsilon=10 ** 400), ValueError,
         "epsilon"),
        ("poly1/softmax/epsilon-inf", M, X, Y, dict(epsilon=-inf), ValueError, "epsilon"),
        ("poly1/softmax/epsilon-none", M, X, Y, dict(epsilon=None), TypeError, "epsilon"),
        ("poly1/module/softmax/epsilon-nan", SOFTMAX_MODULE, X, Y, dict(epsilon=nan),
         ValueError, "epsilon"),
        ("poly1/module/sigmoid/epsilon-bool", SIGMOID_MODULE, X, T, dict(epsilon=True),
         TypeError, "epsilon"),
    ]


ASL = "asymmetric_loss"


def _asl_bad(X, T):
    """The Asymmetric Loss: every parameter."""
    return [
        ("asl/gamma_pos<0", ASL, X, T, dict(gamma_pos=-0.5), ValueError, "gamma_pos"),
        ("asl/gamma_pos-str", ASL, X, T, dict(gamma_pos="1"), TypeError, "gamma_pos"),
        ("asl/gamma_neg-inf", ASL, X, T, dict(gamma_neg=float("inf")), ValueError,
         "gamma_neg"),
        ("asl/gamma_neg-none", ASL, X, T, dict(gamma_neg=None), TypeError, "gamma_neg"),
        ("asl/clip=1", ASL, X, T, dict(clip=1.0), ValueError, "clip"),
        ("asl/clip<0", ASL, X, T, dict(clip=-0.05), ValueError, "clip"),
        ("asl/clip-bool", ASL, X, T, dict(clip=True), TypeError, "clip"),
        ("asl/weight<0", ASL, X, T, dict(weight=-np.ones(3)), ValueError, "weight"),
        ("asl/ignore_index=1", ASL, X, T, dict(ignore_index=1), ValueError, "ignore_index"),
        ("asl/label_smoothing=1", ASL, X, T, dict(label_smoothing=1.0), ValueError,
         "label_smoothing"),
        ("asl/reduction", ASL, X, T, dict(reduction="avg"), ValueError, "reduction"),
        ("asl/normalizer=0", ASL, X, T, dict(normalizer=0.0), ValueError, "normalizer"),
        ("asl/targets>1", ASL, X, 2 * T, {}, ValueError, "targets"),
        ("asl/targets-shape", ASL, X, np.ones((4, 4)), {}, ValueError, "targets"),
        ("asl/integer-logits", ASL, np.zeros((4, 3), dtype=np.int64), T, {}, TypeError,
         "logits"),
    ]


ASL1 = "asymmetric_softmax_loss"


def _asl_softmax_bad(X, Y):
    """The single-label Asymmetric Loss: every parameter."""
    return [
        ("asl1/gamma_pos-nan", ASL1, X, Y, dict(gamma_pos=float("nan")), ValueError,
         "gamma_pos"),
        ("asl1/gamma_neg<0", ASL1, X, Y, dict(gamma_neg=-4.0), ValueError, "gamma_neg"),
        ("asl1/ignore_index-str", ASL1, X, Y, dict(ignore_index="x"), TypeError,
         "ignore_index"),
        ("asl1/label_smoothing<0", ASL1, X, Y, dict(label_smoothing=-0.1), ValueError,
         "label_smoothing"),
        ("asl1/reduction", ASL1, X, Y, dict(reduction="avg"), ValueError, "reduction"),
        ("asl1/normalizer<0", ASL1, X, Y, dict(normalizer=-1.0), ValueError, "normalizer"),
        ("asl1/axis", ASL1, X, Y, dict(axis=2), ValueError, "axis"),
        ("asl1/index>=C", ASL1, X, np.array([0, 1, 3, 1]), {}, ValueError, "targets"),
        ("asl1/float-targets", ASL1, X, np.array([0.0, 1.0, 2.0, 1.0]), {}, TypeError,
         "targets"),
        ("asl1/targets-shape", ASL1, X, np.array([0, 1, 2]), {}, ValueError, "targets"),
        ("asl1/integer-logits", ASL1, np.zeros((4, 3), dtype=np.int64), Y, {}, TypeError,
         "logits"),
    ]


LINEAR = "linear_softmax_focal_loss"


def _linear_bad():
    """The fused linear + softmax focal loss: its arrays' shapes and kinds, chunk_size, and
    the softmax parameters it passes on. "logits" is ``hidden`` (N=4, H=2); the kwarg
    ``linear_weight`` (V=3) is its second positional argument (see runner)."""
    H, W, Y = np.zeros((4, 2)), np.zeros((3, 2)), np.array([0, 1, 2, 1])
    ok = dict(linear_weight=W)
    return [
        ("linear/hidden-1d", LINEAR, np.zeros(8), Y, ok, ValueError, "hidden"),
        ("linear/hidden-int", LINEAR, np.zeros((4, 2), dtype=np.int64), Y, ok, TypeError,
         "hidden"),
        ("linear/weight-1d", LINEAR, H, Y, dict(linear_weight=np.zeros(6)), ValueError,
         "linear_weight"),
        ("linear/weight-features", LINEAR, H, Y, dict(linear_weight=np.zeros((3, 5))),
         ValueError, "linear_weight"),
        ("linear/weight-int", LINEAR, H, Y, dict(linear_weight=np.zeros((3, 2), np.int64)),
         TypeError, "linear_weight"),
        ("linear/bias-shape", LINEAR, H, Y, dict(ok, linear_bias=np.zeros(4)), ValueError,
         "linear_bias"),
        ("linear/targets-shape", LINEAR, H, np.array([0, 1, 2]), ok, ValueError, "targets"),
        ("linear/float-targets", LINEAR, H, np.array([0.0, 1.0, 2.0, 1.0]), ok, TypeError,
         "targets"),
        ("linear/index>=V", LINEAR, H, np.array([0, 1, 3, 1]), ok, ValueError, "targets"),
        ("linear/chunk_size=0", LINEAR, H, Y, dict(ok, chunk_size=0), ValueError,
         "chunk_size"),
        ("linear/chunk_size-float", LINEAR, H, Y, dict(ok, chunk_size=2.0), TypeError,
         "chunk_size"),
        ("linear/chunk_size-bool", LINEAR, H, Y, dict(ok, chunk_size=True), TypeError,
         "chunk_size"),
        ("linear/ignore_index-str", LINEAR, H, Y, dict(ok, ignore_index="x"), TypeError,
         "ignore_index"),
        ("linear/gamma<0", LINEAR, H, Y, dict(ok, gamma=-1.0), ValueError, "gamma"),
        ("linear/alpha-length", LINEAR, H, Y, dict(ok, alpha=[0.5, 0.5]), ValueError, "alpha"),
        ("linear/weight-length", LINEAR, H, Y, dict(ok, weight=[1.0, 2.0]), ValueError,
         "weight"),
        ("linear/label_smoothing=1", LINEAR, H, Y, dict(ok, label_smoothing=1.0), ValueError,
         "label_smoothing"),
        ("linear/reduction", LINEAR, H, Y, dict(ok, reduction="avg"), ValueError,
         "reduction"),
        ("linear/normalizer=0", LINEAR, H, Y, dict(ok, normalizer=0.0), ValueError,
         "normalizer"),
    ]
