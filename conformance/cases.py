"""The golden cases: every function and parameter of the spec, as plain data.

Deterministic (Python's ``random.Random`` with fixed seeds, whose sequence is
stable across Python versions) and framework-free. Values are chosen to be
exactly representable where that keeps low-precision comparisons clean:
random logits are multiples of 1/8 in [-16, 16] and hyperparameters are
dyadic (0.25, 0.375, 2.0, ...), so float32, float16 and bfloat16 hold them
exactly; the extreme logits that they do not hold (1e-8, 1e4) get golden values
at the rounded inputs as well (see ``generate.py``).
"""

from __future__ import annotations

import math
import random

GAMMAS = (0.0, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0)
EXTREME = (0.0, 1e-8, -1e-8, 15.0, -15.0, 17.0, -17.0, 30.0, -30.0, 88.0, -88.0, 89.0, -89.0,
           100.0, -100.0, 1e4, -1e4)
SIGMOID, SOFTMAX, STAR = "sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star"
QFL, VFL, DFL = "quality_focal_loss", "varifocal_loss", "distribution_focal_loss"
NOT_FLOAT16 = ("float64", "float32", "bfloat16")  # (float16 holds nothing above 65504)


def _flat(nested):
    if not isinstance(nested, list):
        return [nested], ()
    out, shape, level = [], [], nested
    while isinstance(level, list):
        shape.append(len(level))
        level = level[0] if level else None

    def walk(a):
        if isinstance(a, list):
            for b in a:
                walk(b)
        else:
            out.append(a)
    walk(nested)
    return out, tuple(shape)


def _logits(rng, shape, lo=-128, hi=128):
    n = math.prod(shape)
    flat = [rng.randint(lo, hi) / 8 for _ in range(n)]
    return flat, tuple(shape)


class _Builder:
    def __init__(self):
        self.cases = []

    def add(self, cid, fn, logits, shape, targets, tshape, kwargs, *, index=False,
            array_kwargs=(), dtypes=None, labels=None):
        """dtypes: the dtypes the case runs in, where not all (a logit that a smaller
        dtype cannot hold)."""
        assert not any(c["id"] == cid for c in self.cases), cid
        case = {
            "id": cid, "fn": fn,
            "logits": [float(v) for v in logits], "shape": list(shape),
            "targets": [int(v) if index else float(v) for v in targets],
            "targets_shape": list(tshape), "targets_dtype": "int" if index else "float",
            "kwargs": kwargs, "array_kwargs": list(array_kwargs),
        }
        if dtypes is not None:
            case["dtypes"] = list(dtypes)
        if labels is not None:  # quality_focal_loss's pair: (labels, targets as scores)
            case["labels"] = [int(v) for v in labels]
        self.cases.append(case)


def _hard(rng, n, p=0.4):
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def _soft(rng, n):
    return [rng.randint(0, 8) / 8 for _ in range(n)]


def build_cases() -> list[dict]:
    b = _Builder()
    rng = random.Random(20261123)

    # ---- sigmoid ---------------------------------------------------------------------
    x, sh = _logits(rng, (4, 3))
    y = _hard(rng, 12)
    for gamma in GAMMAS:
        for aname, alpha in (("none", None), ("0.25", 0.25), ("vector", [0.25, 0.75, 0.5])):
            b.add(f"sigmoid/gamma={gamma}/alpha={aname}", SIGMOID, x, sh, y, sh,
                  {"gamma": gamma, "alpha": alpha, "reduction": "none"})
    ys = _soft(rng, 12)
    for gamma in (0.0, 0.5, 2.0):
        b.add(f"sigmoid/soft/gamma={gamma}", SIGMOID, x, sh, ys, sh,
              {"gamma": gamma, "alpha": 0.25, "reduction": "none"})
    b.add("sigmoid/pos_weight/vector", SIGMOID, x, sh, ys, sh,
          {"gamma": 2.0, "pos_weight": [2.0, 0.5, 1.0], "reduction": "sum"})
    b.add("sigmoid/pos_weight/scalar", SIGMOID, x, sh, y, sh,
          {"gamma": 0.5, "alpha": None, "pos_weight": 3.0, "reduction": "mean"})
    b.add("sigmoid/weight/rows", SIGMOID, x, sh, y, sh,
          {"gamma": 2.0, "weight": [[0.5], [1.5], [0.0], [2.0]], "reduction": "none"})
    b.add("sigmoid/gamma0/bce", SIGMOID, x, sh, ys, sh,
          {"gamma": 0.0, "alpha": None, "pos_weight": [2.0, 0.5, 1.0],
           "weight": [[0.5], [1.5], [1.0], [2.0]], "reduction": "mean"})
    yi = list(y)
    yi[1] = yi[5] = yi[6] = -1.0
    for red in ("none", "sum", "mean"):
        b.add(f"sigmoid/ignore_index/{red}", SIGMOID, x, sh, yi, sh,
              {"gamma": 2.0, "ignore_index": -1, "reduction": red})
    b.add("sigmoid/ignore_index/all", SIGMOID, x[:3], (3,), [-1.0] * 3, (3,),
          {"gamma": 2.0, "ignore_index": -1, "reduction": "mean"})
    b.add("sigmoid/label_smoothing", SIGMOID, x, sh, y, sh,
          {"gamma": 2.0, "label_smoothing": 0.125, "reduction": "none"})
    b.add("sigmoid/label_smoothing/soft", SIGMOID, x, sh, ys, sh,
          {"gamma": 0.5, "alpha": 0.375, "label_smoothing": 0.25, "reduction": "mean"})
    b.add("sigmoid/normalizer/number", SIGMOID, x, sh, y, sh,
          {"gamma": 2.0, "reduction": "sum", "normalizer": 3.0})
    b.add("sigmoid/normalizer/array", SIGMOID, x, sh, y, sh,
          {"gamma": 2.0, "reduction": "mean", "normalizer": 7.5}, array_kwargs=["normalizer"])
    b.add("sigmoid/normalizer/none", SIGMOID, x, sh, y, sh,
          {"gamma": 1.0, "reduction": "none", "normalizer": 4.0})
    xn, shn = _logits(rng, (2, 3, 2, 2))
    b.add("sigmoid/nd/alpha-last-axis", SIGMOID, xn, shn, _hard(rng, 24), shn,
          {"gamma": 2.0, "alpha": [0.25, 0.75], "reduction": "mean"})
    b.add("sigmoid/broadcast-targets", SIGMOID, x, sh, [1.0, 0.0, 1.0], (3,),
          {"gamma": 2.0, "reduction": "none"})
    b.add("sigmoid/empty", SIGMOID, [], (0, 3), [], (0, 3), {"gamma": 2.0, "reduction": "mean"})
    b.add("sigmoid/empty/sum", SIGMOID, [], (0, 3), [], (0, 3), {"gamma": 2.0, "reduction": "sum"})
    probs = [0.125, 0.5, 0.875, 0.0, 1.0, 2.0 ** -20, 1 - 2.0 ** -20, 0.25]
    ptarg = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.625]
    for gamma in (0.0, 0.5, 2.0):
        b.add(f"sigmoid/probabilities/gamma={gamma}", SIGMOID, probs, (8,), ptarg, (8,),
              {"gamma": gamma, "from_logits": False, "reduction": "none"})
    b.add("sigmoid/probabilities/certain-wrong", SIGMOID, [0.0, 1.0], (2,), [1.0, 0.0], (2,),
          {"gamma": 2.0, "from_logits": False, "reduction": "none"})
    # a certain-wrong probability that is ignored, weighted 0, or given alpha_t = 0
    b.add("sigmoid/probabilities/masked-infinity", SIGMOID, [0.25, 1.0, 1.0, 0.0, 0.5],
          (5,), [1.0, -1.0, 0.0, 1.0, 0.0], (5,),
          {"gamma": 0.5, "alpha": [0.25, 0.25, 1.0, 0.5, 0.5], "ignore_index": -1,
           "weight": [1.0, 1.0, 1.0, 0.0, 2.0], "from_logits": False, "reduction": "mean"})
    n = len(EXTREME)
    for gamma in (0.0, 0.25, 0.5, 2.0, 5.0):
        for t in (0.0, 1.0, 0.375):
            b.add(f"sigmoid/extreme/gamma={gamma}/y={t}", SIGMOID, list(EXTREME), (n,),
                  [t] * n, (n,), {"gamma": gamma, "alpha": 0.25, "reduction": "none"})
    # Probabilities below the smallest normal number of float32 (1.2e-38) and float64
    # (2.2e-308): JAX and TensorFlow read them as 0 (see generate.py), and a zero
    # pos_weight must cancel the 1/p of the gradient however large it is
    tiny = [1e-40, 1e-310, 2.0 ** -1074, 1e-300, 0.5]
    b.add("sigmoid/probabilities/subnormal", SIGMOID, tiny, (5,), [1.0] * 5, (5,),
          {"gamma": 2.0, "from_logits": False, "reduction": "none"})
    b.add("sigmoid/probabilities/subnormal/pos_weight=0", SIGMOID, tiny, (5,),
          [1.0, 1.0, 1.0, 0.0, 1.0], (5,),
          {"gamma": 2.0, "from_logits": False, "pos_weight": [0.0, 0.0, 0.0, 1.0, 0.0],
           "reduction": "sum"})
    # Logits near each dtype's largest finite number: no intermediate may overflow
    # where the result does not (the scale of a mean or a normalizer enters first)
    huge = [1e37, -1e37, 3e38, -3e38, 1e30, -1e30]
    for red in ("none", "mean"):
        b.add(f"sigmoid/huge/{red}", SIGMOID, huge, (6,), [0.125, 0.125, 0.0, 1.0, 1.0, 0.0],
              (6,), {"gamma": 2.0, "pos_weight": 2.0, "reduction": red, "normalizer": 7.0},
              dtypes=NOT_FLOAT16)
    b.add("sigmoid/huge/float64", SIGMOID, [1e300, -1e300, 1.7e308, -1.7e308], (4,),
          [0.125, 1.0, 0.0, 0.5], (4,), {"gamma": 0.5, "reduction": "mean"},
          dtypes=["float64"])

    # ---- softmax ---------------------------------------------------------------------
    x, sh = _logits(rng, (5, 4))
    yi = [rng.randrange(4) for _ in range(5)]
    for gamma in GAMMAS:
        for aname, alpha in (("none", None), ("0.25", 0.25),
                             ("vector", [0.25, 0.75, 0.5, 1.0])):
            b.add(f"softmax/gamma={gamma}/alpha={aname}", SOFTMAX, x, sh, yi, (5,),
                  {"gamma": gamma, "alpha": alpha, "axis": 1, "reduction": "none"}, index=True)
    w = [0.5, 1.5, 2.0, 1.0]
    for red in ("none", "sum", "mean"):
        b.add(f"softmax/weight/{red}", SOFTMAX, x, sh, yi, (5,),
              {"gamma": 2.0, "weight": w, "axis": 1, "reduction": red}, index=True)
    yig = list(yi)
    yig[1] = yig[3] = -100
    for red in ("none", "mean"):
        b.add(f"softmax/ignore_index/weight/{red}", SOFTMAX, x, sh, yig, (5,),
              {"gamma": 2.0, "weight": w, "axis": 1, "reduction": red}, index=True)
    b.add("softmax/ignore_index/custom", SOFTMAX, x, sh, yi, (5,),
          {"gamma": 0.5, "ignore_index": yi[0], "axis": 1, "reduction": "mean"}, index=True)
    b.add("softmax/ignore_index/all", SOFTMAX, x[:8], (2, 4), [-100, -100], (2,),
          {"gamma": 2.0, "axis": 1, "reduction": "mean"}, index=True)
    b.add("softmax/label_smoothing", SOFTMAX, x, sh, yig, (5,),
          {"gamma": 2.0, "label_smoothing": 0.125, "weight": w, "axis": 1, "reduction": "mean"},
          index=True)
    b.add("softmax/gamma0/cross-entropy", SOFTMAX, x, sh, yig, (5,),
          {"gamma": 0.0, "label_smoothing": 0.25, "weight": w, "axis": 1, "reduction": "mean"},
          index=True)
    q = []
    for _ in range(5):
        row = [rng.randint(0, 4) for _ in range(4)]
        row[rng.randrange(4)] += 1
        tot = sum(row)
        scale = 8 if tot <= 8 else 16
        # dyadic distributions: scale counts to a power-of-two total
        row = [v * scale // tot for v in row]
        row[0] += scale - sum(row)
        q += [v / scale for v in row]
    b.add("softmax/probs", SOFTMAX, x, sh, q, sh,
          {"gamma": 2.0, "alpha": [0.25, 0.75, 0.5, 1.0], "axis": 1, "reduction": "mean"})
    b.add("softmax/probs/smoothing-weight", SOFTMAX, x, sh, q, sh,
          {"gamma": 0.5, "label_smoothing": 0.25, "weight": w, "axis": 1, "reduction": "sum"})
    b.add("softmax/normalizer/array", SOFTMAX, x, sh, yi, (5,),
          {"gamma": 2.0, "axis": 1, "reduction": "sum", "normalizer": 3.0},
          index=True, array_kwargs=["normalizer"])
    xn, shn = _logits(rng, (2, 3, 2, 2))
    yn = [rng.randrange(3) for _ in range(8)]
    yn[2] = -100
    b.add("softmax/nd/axis=1", SOFTMAX, xn, shn, yn, (2, 2, 2),
          {"gamma": 2.0, "weight": [0.5, 1.0, 2.0], "axis": 1, "reduction": "mean"}, index=True)
    b.add("softmax/nd/axis=-1/none", SOFTMAX, xn, shn, [rng.randrange(2) for _ in range(12)],
          (2, 3, 2), {"gamma": 1.0, "axis": -1, "reduction": "none"}, index=True)
    b.add("softmax/1d", SOFTMAX, x[:4], (4,), [2], (), {"gamma": 2.0, "axis": 0,
                                                          "reduction": "mean"}, index=True)
    b.add("softmax/empty", SOFTMAX, [], (0, 4), [], (0,), {"gamma": 2.0, "axis": 1,
                                                            "reduction": "mean"}, index=True)
    pr = [0.5, 0.25, 0.25, 0.125, 0.375, 0.5, 1.0, 0.0, 0.0, 2.0 ** -20, 1 - 2.0 ** -20, 0.0]
    for gamma in (0.0, 0.5, 2.0):
        b.add(f"softmax/probabilities/gamma={gamma}", SOFTMAX, pr, (4, 3), [0, 2, 0, 1], (4,),
              {"gamma": gamma, "from_logits": False, "axis": 1, "reduction": "none"},
              index=True)
    b.add("softmax/probabilities/tiny", SOFTMAX, [1e-40, 0.5, 0.5, 1e-310, 0.25, 0.75], (2, 3),
          [0, 0], (2,), {"gamma": 2.0, "from_logits": False, "axis": 1, "reduction": "sum",
                         "normalizer": 1000.0}, index=True)
    b.add("softmax/probabilities/soft-targets", SOFTMAX, pr[:9], (3, 3),
          [0.5, 0.5, 0.0, 0.25, 0.25, 0.5, 1.0, 0.0, 0.0], (3, 3),
          {"gamma": 2.0, "from_logits": False, "axis": 1, "reduction": "mean"})
    rows = [[0.0, 1e-8, -1e-8], [15.0, -15.0, 0.0], [17.0, -17.0, 0.0], [30.0, -30.0, 0.0],
            [88.0, -89.0, 0.0], [100.0, -100.0, 0.0], [1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]]
    flat_rows = [v for r in rows for v in r]
    for gamma in (0.0, 0.25, 0.5, 2.0, 5.0):
        for t in (0, 2):
            b.add(f"softmax/extreme/gamma={gamma}/target={t}", SOFTMAX, flat_rows,
                  (len(rows), 3), [t] * len(rows), (len(rows),),
                  {"gamma": gamma, "axis": 1, "reduction": "none"}, index=True)
        b.add(f"softmax/extreme/gamma={gamma}/smoothing", SOFTMAX, flat_rows, (len(rows), 3),
              [0] * len(rows), (len(rows),),
              {"gamma": gamma, "label_smoothing": 0.125, "axis": 1, "reduction": "none"},
              index=True)

    # ---- FL* -------------------------------------------------------------------------
    x, sh = _logits(rng, (4, 3))
    y = _hard(rng, 12)
    for gamma in (0.5, 1.0, 2.0):
        for beta in (0.0, 1.0, -0.5):
            b.add(f"star/gamma={gamma}/beta={beta}", STAR, x, sh, y, sh,
                  {"gamma": gamma, "beta": beta, "reduction": "none"})
    yi = list(y)
    yi[0] = yi[4] = -1.0
    b.add("star/options", STAR, x, sh, yi, sh,
          {"gamma": 2.0, "beta": 1.0, "alpha": 0.25, "weight": [[0.5], [1.0], [2.0], [1.5]],
           "ignore_index": -1, "label_smoothing": 0.125, "reduction": "mean"})
    b.add("star/normalizer", STAR, x, sh, _soft(rng, 12), sh,
          {"gamma": 1.0, "beta": 0.0, "reduction": "sum", "normalizer": 2.5})
    for t in (0.0, 1.0):
        b.add(f"star/extreme/y={t}", STAR, list(EXTREME), (n,), [t] * n, (n,),
              {"gamma": 0.5, "beta": 1.0, "reduction": "none"})
    b.add("star/huge", STAR, [3e38, -3e38, 1e37, -1e37], (4,), [0.0, 1.0, 1.0, 0.0], (4,),
          {"gamma": 4.0, "beta": 1.0, "alpha": 0.25, "reduction": "mean", "normalizer": 7.0},
          dtypes=NOT_FLOAT16)
    _per_class_gamma(b)
    _gfl_cases(b, random.Random(20261203))
    _poly1_cases(b)
    _asl_cases(b)
    _asl_softmax_cases(b)
    _per_class_gamma_poly1(b)
    _linear_cases(b)
    return b.cases


EXPONENTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def _gfl_cases(b, rng):
    """Quality Focal Loss, Varifocal Loss and Distribution Focal Loss (issue 18)."""
    n = len(EXTREME)
    # ---- QFL -------------------------------------------------------------------------
    x, sh = _logits(rng, (4, 3))
    # soft quality targets: multiples of 1/8 other than 1/2 (sigmoid of a multiple of 1/8
    # equals none of them, so |y - p| > 0: for beta < 1 the derivative at |y - p| = 0 is
    # a cusp, which focalx defines and the paper does not)
    ys = [rng.choice([0.0, 0.125, 0.25, 0.375, 0.625, 0.75, 0.875, 1.0]) for _ in range(12)]
    for beta in EXPONENTS:
        b.add(f"qfl/dense/beta={beta}", QFL, x, sh, ys, sh,
              {"beta": beta, "reduction": "none"})
    b.add("qfl/dense/hard", QFL, x, sh, _hard(rng, 12), sh, {"beta": 2.0, "reduction": "none"})
    b.add("qfl/dense/weight-mean", QFL, x, sh, ys, sh,
          {"beta": 2.0, "weight": [[0.5], [1.5], [0.0], [2.0]], "reduction": "mean"})
    b.add("qfl/dense/broadcast-targets", QFL, x, sh, [0.25, 0.0, 0.875], (3,),
          {"beta": 0.5, "reduction": "sum", "normalizer": 3.0}, array_kwargs=["normalizer"])
    labels, scores = [0, 3, 2, -1], [0.5, 0.875, 0.25, 0.75]
    for beta in (0.5, 2.0):
        b.add(f"qfl/pair/beta={beta}", QFL, x, sh, scores, (4,),
              {"beta": beta, "reduction": "none"}, labels=labels)
    b.add("qfl/pair/gfl-normalizer", QFL, x, sh, scores, (4,),
          {"beta": 2.0, "reduction": "sum", "normalizer": 2.0,
           "weight": [[1.0], [0.5], [2.0], [1.0]]}, labels=labels)
    b.add("qfl/pair/quality-0-and-1", QFL, x, sh, [0.0, 1.0, 1.0, 0.0], (4,),
          {"beta": 2.0, "reduction": "mean"}, labels=[1, 2, 0, 3])
    for beta in (0.0, 0.25, 0.5, 2.0):
        for t in (0.0, 1.0, 0.375):
            b.add(f"qfl/extreme/beta={beta}/y={t}", QFL, list(EXTREME), (n,), [t] * n, (n,),
                  {"beta": beta, "reduction": "none"})
    # ---- VFL -------------------------------------------------------------------------
    x, sh = _logits(rng, (4, 3))
    q = [v if rng.random() < 0.4 else 0.0 for v in
         (rng.choice([0.125, 0.25, 0.5, 0.75, 1.0]) for _ in range(12))]
    for gamma in EXPONENTS:
        b.add(f"vfl/gamma={gamma}", VFL, x, sh, q, sh, {"gamma": gamma, "reduction": "none"})
    b.add("vfl/not-iou-weighted", VFL, x, sh, q, sh,
          {"alpha": 0.5, "gamma": 1.5, "iou_weighted": False, "reduction": "none"})
    b.add("vfl/weight-mean", VFL, x, sh, q, sh,
          {"weight": [[0.5], [1.5], [0.0], [2.0]], "reduction": "mean"})
    b.add("vfl/normalizer", VFL, x, sh, q, sh,
          {"alpha": 1.0, "reduction": "sum", "normalizer": 2.5}, array_kwargs=["normalizer"])
    b.add("vfl/all-negative", VFL, x, sh, [0.0] * 12, sh, {"gamma": 2.0, "reduction": "sum"})
    for gamma in (0.0, 0.25, 0.5, 2.0):
        for t in (0.0, 1.0, 0.375):
            b.add(f"vfl/extreme/q={t}/gamma={gamma}", VFL, list(EXTREME), (n,), [t] * n, (n,),
                  {"gamma": gamma, "reduction": "none"})
    # ---- DFL -------------------------------------------------------------------------
    x, sh = _logits(rng, (6, 8))  # n_bins = 7
    t = [0.0, 2.5, 7.0, 3.25, 6.875, 1.0]
    for red in ("none", "sum", "mean"):
        b.add(f"dfl/{red}", DFL, x, sh, t, (6,), {"axis": 1, "reduction": red})
    b.add("dfl/weight-normalizer", DFL, x, sh, t, (6,),
          {"axis": 1, "weight": [0.5, 1.0, 2.0, 0.0, 1.5, 1.0], "reduction": "sum",
           "normalizer": 4.0}, array_kwargs=["normalizer"])
    ti = [0.0, -1.0, 7.0, 3.25, -1.0, 4.0]
    for red in ("none", "mean"):
        b.add(f"dfl/ignore_index/{red}", DFL, x, sh, ti, (6,),
              {"axis": 1, "ignore_index": -1, "reduction": red})
    b.add("dfl/ignore_index/all", DFL, x[:16], (2, 8), [-1.0, -1.0], (2,),
          {"axis": 1, "ignore_index": -1, "reduction": "mean"})
    b.add("dfl/integer-targets", DFL, x, sh, [0, 1, 2, 3, 7, 5], (6,),
          {"axis": 1, "reduction": "none"}, index=True)
    xn, shn = _logits(rng, (2, 4, 3))
    b.add("dfl/nd/axis=-1", DFL, xn, shn, [0.5, 2.0, 1.25, 0.0, 1.875, 2.0, 0.125, 1.0], (2, 4),
          {"axis": -1, "reduction": "none"})
    b.add("dfl/empty", DFL, [], (0, 8), [], (0,), {"axis": 1, "reduction": "mean"})
    rows = [[0.0, 1e-8, -1e-8], [15.0, -15.0, 0.0], [30.0, -30.0, 0.0], [88.0, -89.0, 0.0],
            [100.0, -100.0, 0.0], [1e4, 0.0, -1e4], [-1e4, 1e4, 0.0], [0.0, -1e4, 1e4]]
    flat_rows = [v for r in rows for v in r]
    for tv in (0.0, 0.5, 1.0, 1.75, 2.0):
        b.add(f"dfl/extreme/y={tv}", DFL, flat_rows, (len(rows), 3), [tv] * len(rows),
              (len(rows),), {"axis": 1, "reduction": "none"})


def _per_class_gamma(b):
    """gamma as a vector: per class on the sigmoid loss's last axis (or per element) and
    on the softmax loss's class axis, zeros and fractions (gamma < 1) among them; as a
    list and as a framework array (array_kwargs). Its own random stream: the cases above
    keep their data."""
    rng = random.Random(18003)
    x, sh = _logits(rng, (4, 3))
    y, ys = _hard(rng, 12), _soft(rng, 12)
    g3 = [0.0, 0.25, 2.0]
    b.add("sigmoid/gamma-vector/alpha=0.25", SIGMOID, x, sh, y, sh,
          {"gamma": g3, "alpha": 0.25, "reduction": "none"})
    b.add("sigmoid/gamma-vector/array", SIGMOID, x, sh, ys, sh,
          {"gamma": [0.5, 1.0, 0.0], "alpha": [0.25, 0.75, 0.5], "reduction": "mean"},
          array_kwargs=["gamma"])
    b.add("sigmoid/gamma-vector/rows", SIGMOID, x, sh, y, sh,
          {"gamma": [[0.25], [0.0], [2.5], [1.0]], "alpha": None, "label_smoothing": 0.125,
           "reduction": "sum"})
    n = len(EXTREME)
    ge = [(0.0, 0.25, 0.5, 1.0, 2.0)[i % 5] for i in range(n)]
    for t in (0.0, 1.0, 0.375):
        b.add(f"sigmoid/gamma-vector/extreme/y={t}", SIGMOID, list(EXTREME), (n,), [t] * n,
              (n,), {"gamma": ge, "alpha": 0.25, "reduction": "none"})
    probs = [0.125, 0.5, 0.875, 0.0, 1.0, 2.0 ** -20, 1 - 2.0 ** -20, 0.25]
    ptarg = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.625]
    b.add("sigmoid/gamma-vector/probabilities", SIGMOID, probs, (8,), ptarg, (8,),
          {"gamma": [0.0, 0.25, 0.5, 2.0, 0.0, 0.25, 0.5, 2.0], "from_logits": False,
           "reduction": "none"})

    x, sh = _logits(rng, (5, 4))
    yi = [rng.randrange(4) for _ in range(5)]
    yi[3] = -100
    g4 = [0.0, 0.25, 2.0, 0.5]
    b.add("softmax/gamma-vector", SOFTMAX, x, sh, yi, (5,),
          {"gamma": g4, "axis": 1, "reduction": "none"}, index=True)
    b.add("softmax/gamma-vector/alpha-weight/array", SOFTMAX, x, sh, yi, (5,),
          {"gamma": [1.0, 0.0, 0.5, 2.5], "alpha": [0.25, 0.75, 0.5, 1.0],
           "weight": [0.5, 1.5, 2.0, 1.0], "axis": 1, "reduction": "mean"},
          index=True, array_kwargs=["gamma"])
    b.add("softmax/gamma-vector/label_smoothing", SOFTMAX, x, sh, yi, (5,),
          {"gamma": g4, "label_smoothing": 0.125, "axis": 1, "reduction": "sum"}, index=True)
    q = [v / 8 for v in (2, 2, 4, 0, 8, 0, 0, 0, 1, 3, 3, 1, 0, 0, 4, 4, 2, 6, 0, 0)]
    b.add("softmax/gamma-vector/probs", SOFTMAX, x, sh, q, sh,
          {"gamma": g4, "axis": 1, "reduction": "mean"})
    xn, shn = _logits(rng, (2, 3, 2, 2))
    b.add("softmax/gamma-vector/nd/axis=1", SOFTMAX, xn, shn,
          [rng.randrange(3) for _ in range(8)], (2, 2, 2),
          {"gamma": [2.0, 0.25, 0.0], "axis": 1, "reduction": "none"}, index=True)
    pr = [0.5, 0.25, 0.25, 0.125, 0.375, 0.5, 1.0, 0.0, 0.0, 2.0 ** -20, 1 - 2.0 ** -20, 0.0]
    b.add("softmax/gamma-vector/probabilities", SOFTMAX, pr, (4, 3), [0, 2, 0, 1], (4,),
          {"gamma": [0.25, 0.0, 2.0], "from_logits": False, "axis": 1, "reduction": "none"},
          index=True)
    rows = [[0.0, 1e-8, -1e-8], [15.0, -15.0, 0.0], [17.0, -17.0, 0.0], [30.0, -30.0, 0.0],
            [88.0, -89.0, 0.0], [100.0, -100.0, 0.0], [1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]]
    flat_rows = [v for r in rows for v in r]
    for gname, gv in (("0,0.25,2", [0.0, 0.25, 2.0]), ("0.5,1,0", [0.5, 1.0, 0.0])):
        for t in (0, 1, 2):
            b.add(f"softmax/gamma-vector/extreme/{gname}/target={t}", SOFTMAX, flat_rows,
                  (len(rows), 3), [t] * len(rows), (len(rows),),
                  {"gamma": gv, "axis": 1, "reduction": "none"}, index=True)
        b.add(f"softmax/gamma-vector/extreme/{gname}/smoothing", SOFTMAX, flat_rows,
              (len(rows), 3), [1] * len(rows), (len(rows),),
              {"gamma": gv, "label_smoothing": 0.125, "axis": 1, "reduction": "none"},
              index=True)


def _poly1_cases(b):
    """Poly-1 (``epsilon``) on the sigmoid and softmax losses: a few epsilons, negative
    ones included, at gamma 0 and 2, with the options that weight its term, soft
    targets, label smoothing, probabilities and extreme logits."""
    rng = random.Random(20261203)  # (its own sequence: the cases above keep theirs)
    n = len(EXTREME)
    x, sh = _logits(rng, (4, 3))
    y, ys = _hard(rng, 12), _soft(rng, 12)
    for gamma in (0.0, 2.0):
        for eps in (1.0, -1.0, 2.5):
            b.add(f"poly1/sigmoid/gamma={gamma}/eps={eps}", SIGMOID, x, sh, y, sh,
                  {"gamma": gamma, "epsilon": eps, "alpha": 0.25, "reduction": "none"})
        b.add(f"poly1/sigmoid/soft/gamma={gamma}", SIGMOID, x, sh, ys, sh,
              {"gamma": gamma, "epsilon": 2.0, "alpha": None, "reduction": "none"})
    b.add("poly1/sigmoid/gamma=0.5/options", SIGMOID, x, sh, ys, sh,
          {"gamma": 0.5, "epsilon": -0.5, "alpha": [0.25, 0.75, 0.5],
           "pos_weight": [2.0, 0.5, 1.0], "weight": [[0.5], [1.5], [0.0], [2.0]],
           "label_smoothing": 0.125, "reduction": "mean"})
    yi = list(y)
    yi[2] = yi[7] = -1.0
    b.add("poly1/sigmoid/ignore_index/normalizer", SIGMOID, x, sh, yi, sh,
          {"gamma": 2.0, "epsilon": 1.0, "ignore_index": -1, "reduction": "sum",
           "normalizer": 3.0})
    probs = [0.125, 0.5, 0.875, 0.0, 1.0, 2.0 ** -20, 1 - 2.0 ** -20, 0.25]
    ptarg = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.625]
    for gamma in (0.0, 2.0):
        b.add(f"poly1/sigmoid/probabilities/gamma={gamma}", SIGMOID, probs, (8,), ptarg, (8,),
              {"gamma": gamma, "epsilon": 1.0, "from_logits": False, "reduction": "none"})
    for gamma in (0.0, 0.25, 2.0):
        for t in (0.0, 1.0, 0.375):
            b.add(f"poly1/sigmoid/saturation/gamma={gamma}/y={t}", SIGMOID, list(EXTREME), (n,),
                  [t] * n, (n,), {"gamma": gamma, "epsilon": -1.0 if t == 1.0 else 1.0,
                                  "alpha": 0.25, "reduction": "none"})

    x, sh = _logits(rng, (5, 4))
    yi = [rng.randrange(4) for _ in range(5)]
    w = [0.5, 1.5, 2.0, 1.0]
    # (|epsilon| <= 1 here: a framework's log-softmax of a dominant class is exact only to
    # an ulp of 1, an error the term multiplies by 1 + epsilon)
    for gamma in (0.0, 2.0):
        for eps in (1.0, -1.0, 0.5):
            b.add(f"poly1/softmax/gamma={gamma}/eps={eps}", SOFTMAX, x, sh, yi, (5,),
                  {"gamma": gamma, "epsilon": eps, "alpha": [0.25, 0.75, 0.5, 1.0], "axis": 1,
                   "reduction": "none"}, index=True)
    yig = list(yi)
    yig[1] = -100
    b.add("poly1/softmax/weight/ignore_index/mean", SOFTMAX, x, sh, yig, (5,),
          {"gamma": 2.0, "epsilon": 1.0, "weight": w, "axis": 1, "reduction": "mean"},
          index=True)
    b.add("poly1/softmax/label_smoothing", SOFTMAX, x, sh, yig, (5,),
          {"gamma": 0.5, "epsilon": -0.5, "label_smoothing": 0.125, "weight": w, "axis": 1,
           "reduction": "mean"}, index=True)
    q = []
    for _ in range(5):
        row = [rng.randint(0, 4) for _ in range(4)]
        row[rng.randrange(4)] += 1
        tot = sum(row)
        scale = 8 if tot <= 8 else 16
        row = [v * scale // tot for v in row]
        row[0] += scale - sum(row)
        q += [v / scale for v in row]
    for gamma in (0.0, 2.0):
        b.add(f"poly1/softmax/probs/gamma={gamma}", SOFTMAX, x, sh, q, sh,
              {"gamma": gamma, "epsilon": 2.0, "axis": 1, "reduction": "sum"})
    pr = [0.5, 0.25, 0.25, 0.125, 0.375, 0.5, 1.0, 0.0, 0.0, 2.0 ** -20, 1 - 2.0 ** -20, 0.0]
    for gamma in (0.0, 2.0):
        b.add(f"poly1/softmax/probabilities/gamma={gamma}", SOFTMAX, pr, (4, 3), [0, 2, 0, 1],
              (4,), {"gamma": gamma, "epsilon": 1.0, "from_logits": False, "axis": 1,
                     "reduction": "none"}, index=True)
    rows = [[0.0, 1e-8, -1e-8], [15.0, -15.0, 0.0], [17.0, -17.0, 0.0], [30.0, -30.0, 0.0],
            [88.0, -89.0, 0.0], [100.0, -100.0, 0.0], [1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]]
    flat_rows = [v for r in rows for v in r]
    for gamma in (0.0, 0.25, 2.0):
        for t, eps in ((0, 1.0), (2, -1.0)):
            b.add(f"poly1/softmax/saturation/gamma={gamma}/target={t}", SOFTMAX, flat_rows,
                  (len(rows), 3), [t] * len(rows), (len(rows),),
                  {"gamma": gamma, "epsilon": eps, "axis": 1, "reduction": "none"},
                  index=True)
        b.add(f"poly1/softmax/saturation/gamma={gamma}/smoothing", SOFTMAX, flat_rows,
              (len(rows), 3), [0] * len(rows), (len(rows),),
              {"gamma": gamma, "epsilon": 1.0, "label_smoothing": 0.125, "axis": 1,
               "reduction": "none"}, index=True)


ASL = "asymmetric_loss"


def _asl_cases(b):
    """The Asymmetric Loss (multi-label, sigmoid): exponents and margins (the defaults,
    none, the focal loss's case gamma_pos = gamma_neg with clip 0, a margin with
    gamma_neg = 0, whose gradient jumps at the margin), soft targets, the options,
    logits on either side of the margin, extremes."""
    rng = random.Random(20092014)  # (its own sequence: the cases above keep theirs)
    n = len(EXTREME)
    x, sh = _logits(rng, (4, 3))
    y, ys = _hard(rng, 12), _soft(rng, 12)
    for gp, gn, clip in ((0.0, 4.0, 0.05), (1.0, 4.0, 0.05), (0.0, 0.0, 0.0), (2.0, 2.0, 0.0),
                         (0.5, 0.25, 0.25), (0.0, 0.0, 0.125), (1.0, 2.5, 0.0)):
        b.add(f"asl/gamma_pos={gp}/gamma_neg={gn}/clip={clip}", ASL, x, sh, y, sh,
              {"gamma_pos": gp, "gamma_neg": gn, "clip": clip, "reduction": "none"})
    b.add("asl/soft", ASL, x, sh, ys, sh,
          {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "reduction": "none"})
    yi = list(y)
    yi[3] = yi[8] = -1.0
    b.add("asl/options", ASL, x, sh, yi, sh,
          {"gamma_pos": 0.5, "gamma_neg": 2.0, "clip": 0.125,
           "weight": [[0.5], [1.5], [0.0], [2.0]], "ignore_index": -1,
           "label_smoothing": 0.125, "reduction": "mean"})
    b.add("asl/normalizer", ASL, x, sh, ys, sh,
          {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, "reduction": "sum",
           "normalizer": 3.0})
    b.add("asl/defaults", ASL, x, sh, y, sh, {})
    # sigmoid(-3) = 0.047 < 0.05 < sigmoid(-2.875) = 0.053: negatives on either side of the
    # margin (and of one of 0.25, near logit 0.25 = -1.0986)
    near = [-3.0, -2.875, -2.9375, -1.125, -1.0, -1.0625, 0.0, -16.0]
    for clip in (0.05, 0.25):
        for gn in (0.0, 1.0, 4.0):
            b.add(f"asl/margin/clip={clip}/gamma_neg={gn}", ASL, near, (8,), [0.0] * 8, (8,),
                  {"gamma_pos": 0.0, "gamma_neg": gn, "clip": clip, "reduction": "none"})
    for gp, gn, clip in ((0.0, 4.0, 0.05), (0.25, 0.5, 0.05), (2.0, 0.25, 0.0),
                         (0.5, 0.0, 0.0), (1.0, 0.0, 0.25)):
        for t in (0.0, 1.0, 0.375):
            b.add(f"asl/extreme/gamma_pos={gp}/gamma_neg={gn}/clip={clip}/y={t}", ASL,
                  list(EXTREME), (n,), [t] * n, (n,),
                  {"gamma_pos": gp, "gamma_neg": gn, "clip": clip, "reduction": "none"})
    b.add("asl/empty", ASL, [], (0, 3), [], (0, 3), {"reduction": "mean"})


ASL1 = "asymmetric_softmax_loss"


def _asl_softmax_cases(b):
    """The single-label (softmax) Asymmetric Loss: exponents with and without smoothing,
    ignore_index, a normalizer, N-d logits, extremes."""
    rng = random.Random(20092015)  # (its own sequence)
    x, sh = _logits(rng, (5, 4))
    yi = [rng.randrange(4) for _ in range(5)]
    for gp, gn in ((0.0, 4.0), (1.0, 4.0), (2.0, 0.5), (0.25, 0.0), (0.5, 1.0)):
        for e in (0.1, 0.25):
            b.add(f"asl1/gamma_pos={gp}/gamma_neg={gn}/smoothing={e}", ASL1, x, sh, yi, (5,),
                  {"gamma_pos": gp, "gamma_neg": gn, "label_smoothing": e, "axis": 1,
                   "reduction": "none"}, index=True)
    b.add("asl1/no-smoothing", ASL1, x, sh, yi, (5,),
          {"gamma_pos": 2.0, "gamma_neg": 4.0, "label_smoothing": 0.0, "axis": 1,
           "reduction": "none"}, index=True)
    yig = list(yi)
    yig[1] = -100
    b.add("asl1/ignore_index/mean", ASL1, x, sh, yig, (5,),
          {"gamma_pos": 1.0, "gamma_neg": 4.0, "axis": 1, "reduction": "mean"}, index=True)
    b.add("asl1/normalizer", ASL1, x, sh, yi, (5,),
          {"gamma_pos": 0.0, "gamma_neg": 2.0, "axis": 1, "reduction": "sum",
           "normalizer": 3.0}, index=True)
    b.add("asl1/defaults", ASL1, x, sh, yi, (5,), {"axis": 1}, index=True)
    xn, shn = _logits(rng, (2, 3, 2, 2))
    b.add("asl1/nd/axis=1", ASL1, xn, shn, [rng.randrange(3) for _ in range(8)], (2, 2, 2),
          {"gamma_pos": 1.0, "gamma_neg": 2.0, "ignore_index": None, "axis": 1,
           "reduction": "mean"}, index=True)
    rows = [[0.0, 1e-8, -1e-8], [15.0, -15.0, 0.0], [17.0, -17.0, 0.0], [30.0, -30.0, 0.0],
            [88.0, -89.0, 0.0], [100.0, -100.0, 0.0], [1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]]
    flat_rows = [v for r in rows for v in r]
    for gp, gn in ((0.0, 4.0), (0.25, 0.5), (2.0, 0.25), (0.5, 0.0)):
        for t in (0, 2):
            b.add(f"asl1/extreme/gamma_pos={gp}/gamma_neg={gn}/target={t}", ASL1, flat_rows,
                  (len(rows), 3), [t] * len(rows), (len(rows),),
                  {"gamma_pos": gp, "gamma_neg": gn, "label_smoothing": 0.125, "axis": 1,
                   "reduction": "none"}, index=True)
    b.add("asl1/empty", ASL1, [], (0, 4), [], (0,), {"axis": 1, "reduction": "mean"},
          index=True)



def _per_class_gamma_poly1(b):
    """Poly-1 with a per-class gamma: the term's exponent is each class's gamma + 1 (the
    two were written apart; these cases check them together). Its own random stream."""
    rng = random.Random(18103)
    x, sh = _logits(rng, (4, 3))
    b.add("poly1/gamma-vector/sigmoid", SIGMOID, x, sh, _soft(rng, 12), sh,
          {"gamma": [0.0, 0.25, 2.0], "alpha": 0.25, "epsilon": 1.5, "reduction": "none"})
    n = len(EXTREME)
    ge = [(0.0, 0.25, 0.5, 1.0, 2.0)[i % 5] for i in range(n)]
    b.add("poly1/gamma-vector/sigmoid/saturated", SIGMOID, list(EXTREME), (n,), [1.0] * n, (n,),
          {"gamma": ge, "alpha": None, "epsilon": 0.5, "reduction": "none"})
    x, sh = _logits(rng, (5, 4))
    yi = [rng.randrange(4) for _ in range(5)]
    for extra in ({}, {"label_smoothing": 0.125}):
        tag = "smoothing" if extra else "index"
        b.add(f"poly1/gamma-vector/softmax/{tag}", SOFTMAX, x, sh, yi, (5,),
              {"gamma": [0.0, 0.5, 2.0, 1.0], "epsilon": -0.5, "axis": 1, "reduction": "none",
               **extra}, index=True)
    q = [v / 8 for v in (1, 3, 0, 4, 2, 2, 2, 2, 8, 0, 0, 0, 0, 5, 3, 0, 1, 1, 1, 5)]
    b.add("poly1/gamma-vector/softmax/probabilities-targets", SOFTMAX, x, sh, q, sh,
          {"gamma": [0.25, 0.0, 2.0, 1.0], "epsilon": 1.0, "axis": 1, "reduction": "mean"})


LINEAR = "linear_softmax_focal_loss"


def _linear_cases(b):
    """The fused linear + softmax focal loss. Its three (or four) arrays travel packed in
    "logits", hidden (N, H), then linear_weight (V, H), then linear_bias (V,) where
    "linear" says there is one; the gradient is theirs, packed the same way. The inputs
    are multiples of 1/8 (exact in every dtype). Its own random stream."""
    rng = random.Random(19)
    N, H, V = 5, 3, 4

    def add(cid, kwargs, *, targets, bias=True, rows=N, scale=(-16, 16)):
        hidden = [rng.randint(*scale) / 8 for _ in range(rows * H)]
        weight = [rng.randint(*scale) / 8 for _ in range(V * H)]
        packed = hidden + weight + ([rng.randint(-16, 16) / 8 for _ in range(V)]
                                    if bias else [])
        b.add(cid, LINEAR, packed, (len(packed),), targets, (rows,), kwargs, index=True)
        b.cases[-1]["linear"] = {"hidden_shape": [rows, H], "weight_shape": [V, H],
                                 "bias": bias}
    y = [rng.randrange(V) for _ in range(N)]
    yi = list(y)
    yi[1] = yi[3] = -100
    for gamma in (0.0, 0.5, 2.0):
        add(f"linear/gamma={gamma}", {"gamma": gamma, "reduction": "none"}, targets=y)
    # gamma 0, alpha None: the cross-entropy of the linear layer's logits
    add("linear/cross-entropy/mean", {"gamma": 0.0, "alpha": None}, targets=yi)
    add("linear/cross-entropy/no-bias", {"gamma": 0.0, "reduction": "sum"}, targets=y,
        bias=False)
    for red in ("none", "sum", "mean"):
        add(f"linear/ignore_index/{red}", {"gamma": 2.0, "reduction": red}, targets=yi)
    add("linear/ignore_index/none-disabled", {"gamma": 1.0, "ignore_index": None,
                                              "reduction": "mean"}, targets=y)
    add("linear/ignore_index/all", {"gamma": 2.0, "reduction": "mean"}, targets=[-100] * N)
    add("linear/alpha-weight", {"gamma": 2.0, "alpha": [0.25, 0.5, 0.75, 1.0],
                                "weight": [1.0, 0.5, 2.0, 0.0], "reduction": "mean"},
        targets=yi)
    add("linear/alpha-number/normalizer", {"gamma": 0.5, "alpha": 0.25, "reduction": "sum",
                                           "normalizer": 3.0}, targets=y)
    add("linear/label_smoothing", {"gamma": 2.0, "label_smoothing": 0.125,
                                   "reduction": "mean"}, targets=yi)
    for cs in (1, 2):
        add(f"linear/chunk_size={cs}", {"gamma": 2.0, "chunk_size": cs, "reduction": "mean",
                                         "weight": [0.5, 1.0, 2.0, 1.0]}, targets=yi)
    # large logits (|x| up to ~24): saturated rows
    add("linear/saturated", {"gamma": 2.0, "reduction": "none"}, targets=y,
        scale=(-24, 24))
    add("linear/empty", {"gamma": 2.0, "reduction": "mean"}, targets=[], rows=0)


__all__ = ["build_cases", "GAMMAS", "EXTREME"]
