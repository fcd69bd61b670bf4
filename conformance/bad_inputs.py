"""Bad inputs every backend must reject with the same exception type, naming the argument.

Each entry: (id, function, logits, targets, kwargs, exception type, argument name).
Arrays are NumPy; a harness converts logits, targets and array-valued kwargs to its
framework. The class axis is left to each backend's default (axis 1 of a 2-D input
is its last axis in every convention).
"""

from __future__ import annotations

import numpy as np

S, M, STAR = "sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star"


def bad_inputs():
    X = np.zeros((4, 3))
    T = np.ones((4, 3))
    Y = np.array([0, 1, 2, 1])
    nan = float("nan")
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
    ]
