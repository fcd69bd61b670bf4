"""The float64 NumPy reference against the definitions (tests/oracles.py) and mpmath."""

from __future__ import annotations

import math

import numpy as np
import pytest

import focalx
from focalx import _numpy as ref
from focalx.conformance import oracle

from . import oracles

RTOL = 1e-10


def _rng(seed=0):
    return np.random.default_rng(seed)


def _close(a, b, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


class TestSigmoidFocalLoss:
    @pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0])
    @pytest.mark.parametrize("alpha", [None, 0.0, 0.25, 1.0, "vector"])
    def test_matches_definition_hard_targets(self, gamma, alpha):
        rng = _rng(1)
        x = rng.normal(size=(6, 4)) * 3
        y = (rng.random((6, 4)) < 0.4).astype(float)
        a = rng.random(4) if alpha == "vector" else alpha
        got = focalx.sigmoid_focal_loss(x, y, gamma=gamma, alpha=a, reduction="none")
        _close(got, oracles.naive_sigmoid_focal(x, y, gamma=gamma, alpha=a))

    def test_soft_targets_pos_weight_weight(self):
        rng = _rng(2)
        x = rng.normal(size=(5, 3)) * 2
        y = rng.random((5, 3))
        pw, w = np.array([0.5, 1.0, 3.0]), rng.random((5, 1))
        got = focalx.sigmoid_focal_loss(x, y, gamma=1.5, alpha=0.3, pos_weight=pw, weight=w,
                                        reduction="none")
        _close(got, oracles.naive_sigmoid_focal(x, y, gamma=1.5, alpha=0.3, pos_weight=pw,
                                                weight=w))

    def test_anchor_b4_soft_labels(self):
        # anchors.md B4: torchvision / optax / Paddle / Keras give [0.2134, 0.0407, 0.3743].
        got = focalx.sigmoid_focal_loss(np.array([1.0, 1.0, -2.0]), np.array([0.3, 0.7, 0.9]),
                                        reduction="none")
        _close(got, [0.2134, 0.0407, 0.3743], rtol=0, atol=5e-5)

    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
    @pytest.mark.parametrize("options", [
        {}, {"pos_weight": [2.0, 0.5, 1.0]}, {"label_smoothing": 0.1},
        {"alpha": None, "weight": [[1.0], [0.0], [2.0], [0.5]]},
    ])
    def test_gradient_matches_central_differences(self, gamma, options):
        rng = _rng(3)
        x = rng.normal(size=(4, 3)) * 2
        y = rng.random((4, 3))
        _, g = ref.sigmoid_focal_loss_and_grad(x, y, gamma=gamma, reduction="sum", **options)
        num = oracles.central_diff(
            lambda v: ref.sigmoid_focal_loss(v, y, gamma=gamma, reduction="sum", **options), x)
        _close(g, num, rtol=1e-6, atol=1e-9)

    @pytest.mark.parametrize("x", [0.0, 1e-8, -1e-8, 15.0, -15.0, 30.0, -30.0, 88.0, -89.0,
                                   100.0, -100.0, 700.0])
    @pytest.mark.parametrize("y", [0.0, 1.0, 0.3])
    @pytest.mark.parametrize("gamma", [0.0, 0.25, 2.0])
    def test_extreme_logits_match_mpmath(self, x, y, gamma):
        l, g = ref.sigmoid_focal_loss_and_grad(np.array([x]), np.array([y]), gamma=gamma,
                                               alpha=0.25, reduction="sum")
        want, want_g, _ = oracle.evaluate(dict(
            fn="sigmoid_focal_loss", logits=[x], shape=[1], targets=[y], targets_shape=[1],
            kwargs=dict(gamma=gamma, alpha=0.25, reduction="sum")))
        _close(l, float(want[0]), rtol=1e-12, atol=1e-300)
        _close(g, [float(want_g[0])], rtol=1e-9, atol=1e-300)

    def test_reductions_ignore_index_and_normalizer(self):
        rng = _rng(4)
        x = rng.normal(size=(3, 4))
        y = (rng.random((3, 4)) < 0.5).astype(float)
        y[0, :2] = -1
        keep = y != -1
        per = oracles.naive_sigmoid_focal(x, np.where(keep, y, 0)) * keep
        _close(focalx.sigmoid_focal_loss(x, y, ignore_index=-1, reduction="none"), per)
        _close(focalx.sigmoid_focal_loss(x, y, ignore_index=-1, reduction="sum"), per.sum())
        _close(focalx.sigmoid_focal_loss(x, y, ignore_index=-1), per.sum() / keep.sum())
        _close(focalx.sigmoid_focal_loss(x, y, ignore_index=-1, reduction="sum", normalizer=4),
               per.sum() / 4)

    def test_all_ignored_mean_is_zero(self):
        got, g = ref.sigmoid_focal_loss_and_grad(np.ones((2, 2)), -np.ones((2, 2)),
                                                 ignore_index=-1)
        assert got == 0.0 and np.all(g == 0)
        assert focalx.sigmoid_focal_loss(np.ones((0, 3)), np.ones((0, 3))) == 0.0

    def test_probability_inputs_match_logits(self):
        rng = _rng(5)
        x = rng.normal(size=(4, 3)) * 3
        y = rng.random((4, 3))
        p = 1 / (1 + np.exp(-x))
        for gamma in (0.0, 0.5, 2.0):
            _close(focalx.sigmoid_focal_loss(p, y, gamma=gamma, from_logits=False,
                                             reduction="none"),
                   focalx.sigmoid_focal_loss(x, y, gamma=gamma, reduction="none"), rtol=1e-9)
            _, gp = ref.sigmoid_focal_loss_and_grad(p, y, gamma=gamma, from_logits=False,
                                                    reduction="sum")
            _, gx = ref.sigmoid_focal_loss_and_grad(x, y, gamma=gamma, reduction="sum")
            _close(gp * p * (1 - p), gx, rtol=1e-8)  # chain rule dp/dx = p(1-p)

    def test_probability_endpoints_are_exact_limits(self):
        p = np.array([0.0, 1.0, 1.0, 0.0])
        y = np.array([0.0, 1.0, 0.0, 1.0])
        loss, g = ref.sigmoid_focal_loss_and_grad(p, y, gamma=0.5, alpha=None,
                                                  from_logits=False, reduction="none")
        assert list(loss) == [0.0, 0.0, math.inf, math.inf]
        assert list(g) == [0.0, 0.0, math.inf, -math.inf]
        # gamma = 0: plain cross-entropy, d/dp(-log p) = -1 at p = 1.
        _, g0 = ref.sigmoid_focal_loss_and_grad(p[:2], y[:2], gamma=0.0, alpha=None,
                                                from_logits=False, reduction="none")
        assert list(g0) == [1.0, -1.0]


class TestSoftmaxFocalLoss:
    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
    @pytest.mark.parametrize("smoothing", [0.0, 0.2])
    @pytest.mark.parametrize("classweight", [None, "vector"])
    def test_matches_definition(self, gamma, smoothing, classweight):
        rng = _rng(6)
        x = rng.normal(size=(5, 4)) * 2
        y = rng.integers(0, 4, size=5)
        w = rng.random(4) if classweight else None
        q = np.eye(4)[y] * (1 - smoothing) + smoothing / 4
        got = focalx.softmax_focal_loss(x, y, gamma=gamma, weight=w, label_smoothing=smoothing,
                                        reduction="none")
        _close(got, oracles.naive_softmax_focal(x, q, gamma=gamma, classweight=w))
        # the same with probability targets
        got_p = focalx.softmax_focal_loss(x, np.eye(4)[y], gamma=gamma, weight=w,
                                          label_smoothing=smoothing, reduction="none")
        _close(got_p, got)

    def test_alpha_scalar_multiplies_every_class_and_vector_per_class(self):
        rng = _rng(7)
        x, y = rng.normal(size=(4, 3)), np.array([0, 1, 2, 1])
        base = focalx.softmax_focal_loss(x, y, reduction="none")
        _close(focalx.softmax_focal_loss(x, y, alpha=0.25, reduction="none"), 0.25 * base)
        a = np.array([0.75, 0.25, 0.5])
        _close(focalx.softmax_focal_loss(x, y, alpha=a, reduction="none"), a[y] * base)

    def test_anchor_b2_sample_zero(self):
        # anchors.md B2: with per-class alpha [.75,.25,.25] sample 0 scores 0.008320
        # (0.75 x the no-alpha value 0.011093); Keras' scalar alpha gives 0.25 x 0.011093.
        rng = _rng(8)
        x = rng.normal(size=(1, 3))
        base = float(focalx.softmax_focal_loss(x, [0], reduction="sum"))
        _close(focalx.softmax_focal_loss(x, [0], alpha=[0.75, 0.25, 0.25], reduction="sum"),
               0.75 * base)

    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
    @pytest.mark.parametrize("options", [
        {}, {"label_smoothing": 0.1}, {"weight": [1.0, 2.0, 0.5], "alpha": [0.2, 1.0, 0.6]},
        {"probs": True},
    ])
    def test_gradient_matches_central_differences(self, gamma, options):
        rng = _rng(9)
        x = rng.normal(size=(4, 3)) * 2
        options = dict(options)
        y = np.array([0, 2, 1, 1])
        if options.pop("probs", False):
            y = rng.dirichlet(np.ones(3), size=4)
        _, g = ref.softmax_focal_loss_and_grad(x, y, gamma=gamma, reduction="sum", **options)
        num = oracles.central_diff(
            lambda v: ref.softmax_focal_loss(v, y, gamma=gamma, reduction="sum", **options), x)
        _close(g, num, rtol=1e-6, atol=1e-9)

    @pytest.mark.parametrize("row", [[40.0, -40.0, 0.0], [100.0, 0.0, -100.0], [1e4, 0.0, -1e4],
                                     [0.0, 1e-8, -1e-8], [17.0, -17.0, 3.0]])
    @pytest.mark.parametrize("target", [0, 2])
    @pytest.mark.parametrize("gamma", [0.0, 0.25, 2.0])
    def test_extreme_logits_match_mpmath(self, row, target, gamma):
        l, g = ref.softmax_focal_loss_and_grad(np.array([row]), np.array([target]), gamma=gamma,
                                               reduction="sum")
        want, want_g, _ = oracle.evaluate(dict(
            fn="softmax_focal_loss", logits=row, shape=[1, len(row)], targets=[target],
            targets_shape=[1], kwargs=dict(gamma=gamma, axis=-1, reduction="sum")))
        _close(l, float(want[0]), rtol=1e-12, atol=1e-300)
        _close(g[0], [float(v) for v in want_g], rtol=1e-9, atol=1e-300)

    def test_nd_input_class_axis(self):
        rng = _rng(10)
        x = rng.normal(size=(2, 3, 4, 5))  # (N, d1, d2, C) with axis=-1
        y = rng.integers(0, 5, size=(2, 3, 4))
        got = focalx.softmax_focal_loss(x, y, reduction="none")
        want = oracles.naive_softmax_focal(x, np.eye(5)[y], gamma=2.0)
        _close(got, want)
        moved = np.moveaxis(x, -1, 1)
        _close(focalx.softmax_focal_loss(moved, y, axis=1, reduction="none"), want)

    def test_mean_divides_by_weight_of_non_ignored_targets(self):
        rng = _rng(11)
        x = rng.normal(size=(4, 3))
        y = np.array([0, -100, 2, 1])
        w = np.array([1.0, 2.0, 3.0])
        per = focalx.softmax_focal_loss(x, y, weight=w, reduction="none")
        assert per[1] == 0.0
        _close(focalx.softmax_focal_loss(x, y, weight=w), per.sum() / (1.0 + 3.0 + 2.0))

    def test_all_ignored_mean_is_zero(self):
        loss, g = ref.softmax_focal_loss_and_grad(np.ones((2, 3)), np.array([-100, -100]))
        assert loss == 0.0 and np.all(g == 0)


class TestSigmoidFocalLossStar:
    @pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
    @pytest.mark.parametrize("beta", [0.0, 1.0, -2.0])
    def test_matches_definition(self, gamma, beta):
        rng = _rng(12)
        x, y = rng.normal(size=(4, 3)) * 2, (rng.random((4, 3)) < 0.5).astype(float)
        got, g = ref.sigmoid_focal_loss_star_and_grad(x, y, gamma=gamma, beta=beta,
                                                      reduction="none")
        want = oracles.naive_focal_star(x, y, gamma=gamma, beta=beta)
        _close(got, want)
        _close(g, oracles.central_diff(
            lambda v: oracles.naive_focal_star(v, y, gamma=gamma, beta=beta), x), rtol=1e-6,
               atol=1e-9)

    def test_anchor_b7_beta(self):
        # anchors.md B7: at x=0, 0.3466 with beta=0, 0.1566 with beta=1 (gamma=2, y=1).
        for beta, want in ((0.0, 0.3466), (1.0, 0.1566)):
            got = focalx.sigmoid_focal_loss_star(np.array([0.0]), np.array([1.0]), gamma=2.0,
                                                 beta=beta, reduction="sum")
            _close(got, want, rtol=0, atol=5e-5)


class TestHelpers:
    def test_prior_bias(self):
        assert math.isclose(focalx.prior_bias(0.01), -math.log(99.0), rel_tol=1e-15)
        assert 1 / (1 + math.exp(-focalx.prior_bias(0.3))) == pytest.approx(0.3, rel=1e-15)

    def test_pos_weight_from_counts(self):
        assert focalx.pos_weight_from_counts(100, 300) == 3.0
        np.testing.assert_array_equal(focalx.pos_weight_from_counts([1, 4], [3, 2]), [3.0, 0.5])

    def test_alpha_from_counts(self):
        np.testing.assert_allclose(focalx.alpha_from_counts([10, 100, 1000]), [1.0, 0.1, 0.01])
        beta = 0.99
        n = np.array([10.0, 100.0, 1000.0])
        eff = (1 - beta) / (1 - beta ** n)
        np.testing.assert_allclose(
            focalx.alpha_from_counts(n, method="effective_number", beta=beta), eff / eff.max(),
            rtol=1e-14)
        np.testing.assert_array_equal(
            focalx.alpha_from_counts([1, 5], method="effective_number", beta=0.0), [1.0, 1.0])

    @pytest.mark.parametrize("call, exc, match", [
        (lambda: focalx.prior_bias(0.0), ValueError, "pi"),
        (lambda: focalx.prior_bias("x"), TypeError, "pi"),
        (lambda: focalx.pos_weight_from_counts(0, 3), ValueError, "num_pos"),
        (lambda: focalx.pos_weight_from_counts([1, 2], [1, 2, 3]), ValueError, "num_pos"),
        (lambda: focalx.alpha_from_counts([1, 0]), ValueError, "counts"),
        (lambda: focalx.alpha_from_counts([[1, 2]]), ValueError, "counts"),
        (lambda: focalx.alpha_from_counts([1, 2], method="sqrt"), ValueError, "method"),
        (lambda: focalx.alpha_from_counts([1, 2], method="effective_number", beta=1.0),
         ValueError, "beta"),
    ])
    def test_bad_input(self, call, exc, match):
        with pytest.raises(exc, match=match):
            call()


def _protocol_names():
    from focalx._spec import Ops
    return {n for n in vars(Ops) if not n.startswith("_")}


def test_numpy_ops_implement_exactly_the_protocol():
    from focalx._numpy import NumpyOps
    assert {n for n in dir(NumpyOps) if not n.startswith("_")} - {"xp"} == _protocol_names()


# ---------------------------------------------------------------------------
# The spec's own shortcuts (issue 16): the same answers as the general forms
# ---------------------------------------------------------------------------

def test_number_checks_take_exact_types_and_others_alike():
    from fractions import Fraction

    from focalx import _spec
    for g in (2, 2.0, np.float32(2.0), np.int64(2), Fraction(2)):
        v = _spec.check_gamma(g)
        assert v == 2.0 and type(v) is float
    x = 0.1
    assert _spec._to_float("gamma", x) is x
    assert _spec._is_real(1) and _spec._is_real(1.5) and _spec._is_real(np.float64(1.5))
    assert not _spec._is_real(True) and not _spec._is_real("1") and not _spec._is_real(None)
    for bad, exc in [(True, TypeError), ("2", TypeError), (None, TypeError),
                     (float("nan"), ValueError), (-1, ValueError), (10 ** 400, ValueError)]:
        with pytest.raises(exc, match="gamma"):
            _spec.check_gamma(bad)
    assert _spec.check_axis(np.int64(-1), 2) == 1 and _spec.check_axis(1, 2) == 1
    for bad in (True, 1.0, "1"):
        with pytest.raises(TypeError, match="axis must be an int"):
            _spec.check_axis(bad, 2)
    assert _spec.check_ignore_index(np.int32(-1), allow_none=True, binary=False) == -1
    assert _spec.check_ignore_index(-100, allow_none=True, binary=False) == -100
    for bad in (True, 1.0):
        with pytest.raises(TypeError, match="ignore_index must be an int"):
            _spec.check_ignore_index(bad, allow_none=True, binary=False)
    with pytest.raises(ValueError, match="ignore_index must fit in int64"):
        _spec.check_ignore_index(2 ** 63, allow_none=True, binary=False)
    from focalx._numpy import OPS
    assert _spec._normalizer(OPS, None, np.zeros(3)) is None
    assert _spec._normalizer(OPS, 2, np.zeros(3)) == 2.0
    with pytest.raises(TypeError, match="normalizer"):
        _spec._normalizer(OPS, True, np.zeros(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_u_over_omp_and_the_index_gradient_as_written_before(dtype):
    """_u_over_omp shares its `omp + 1` and softmax_focal_index writes (p_y - 1) g at the
    target: bit for bit the two-`where` form and -(1 - p_y) g they replace."""
    from focalx import _spec
    from focalx._numpy import OPS
    rng = _rng(31)
    with np.errstate(all="ignore"):
        lp = np.concatenate([-np.abs(rng.normal(size=40) * 3), [0.0, -0.0, -1e-30, -800.0,
                                                                 -np.inf, np.nan]]).astype(dtype)
        u = 0.0 - lp
        omp = -np.expm1(lp)
        zero = omp <= 0
        before = np.where(zero, omp + 1.0, u / np.where(zero, omp + 1.0, omp))
        got = _spec._u_over_omp(OPS, u, omp)
        assert got.dtype == before.dtype
        np.testing.assert_array_equal(got, before)
        assert got[40] == 1.0 and got[41] == 1.0

        x = (rng.normal(size=(30, 6)) * 4).astype(dtype)
        x[0] = [60.0, -60.0, -60.0, -60.0, -60.0, -60.0]  # (p_y == 1: omp == 0)
        x[1, 2] = 1e4
        idx = rng.integers(0, 6, (30, 1))
        idx[0] = 0
        for gamma, k in [(2.0, None), (0.0, None), (1.5, np.full((30, 1), 0.25, dtype))]:
            loss, grad = _spec.softmax_focal_index(OPS, x, idx, k_y=k, sample_coef=None,
                                                   gamma=gamma, axis=-1, need_grad=True)
            # the formula as it was written before
            lpx = OPS.log_softmax(x, -1)
            lp_y = np.take_along_axis(lpx, idx, axis=-1)
            u = 0.0 - lp_y
            omp = -np.expm1(lp_y)
            f = _spec._focal_factor(OPS, omp, gamma)
            c = k
            if gamma == 0:
                g = np.full_like(u, 1.0) if c is None else c
            else:
                zero = omp <= 0
                r = np.where(zero, omp + 1.0, u / np.where(zero, omp + 1.0, omp))
                g = _spec._mul(c, f * (1.0 + gamma * np.exp(lp_y) * r))
            want = np.exp(lpx) * g
            np.put_along_axis(want, idx, -omp * g, axis=-1)
            np.testing.assert_array_equal(grad, want)


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

class TestGeneralizedFocalLosses:
    """Each reduces to the plain loss at its neutral parameters (the plain losses are
    themselves checked against the oracle and torch / optax), and agrees with the mpmath
    oracle written from the papers."""

    @pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 1.0, 2.0])
    def test_qfl_with_hard_targets_is_the_sigmoid_focal_loss(self, beta):
        rng = _rng(1)
        x = rng.normal(size=(6, 4)) * 4
        y = (rng.random((6, 4)) < 0.4).astype(np.float64)
        got, g = ref.quality_focal_loss_and_grad(x, y, beta=beta, reduction="none")
        want, wg = ref.sigmoid_focal_loss_and_grad(x, y, gamma=beta, alpha=None,
                                                   reduction="none")
        _close(got, want, rtol=1e-14)
        _close(g, wg, rtol=1e-14)

    def test_qfl_at_beta_0_is_bce_against_the_soft_target(self):
        rng = _rng(2)
        x, y = rng.normal(size=(5, 3)) * 3, rng.random((5, 3))
        want = np.logaddexp(0, x) - y * x  # softplus(x) - y x
        _close(ref.quality_focal_loss(x, y, beta=0.0, reduction="none"), want, rtol=1e-13)

    def test_qfl_pair_layout_is_the_dense_one(self):
        rng = _rng(3)
        x = rng.normal(size=(5, 4))
        labels, scores = np.array([0, 4, 3, -1, 1]), rng.random(5)
        dense = np.zeros((5, 4))
        for i, (lab, s) in enumerate(zip(labels, scores)):
            if 0 <= lab < 4:
                dense[i, lab] = s
        for red in ("none", "sum", "mean"):
            a, ga = ref.quality_focal_loss_and_grad(x, (labels, scores), reduction=red)
            b, gb = ref.quality_focal_loss_and_grad(x, dense, reduction=red)
            _close(a, b, rtol=0)
            _close(ga, gb, rtol=0)
        with pytest.raises(ValueError, match="labels"):
            focalx.quality_focal_loss(x, (np.array([0, 5, 0, 0, 0]), scores))
        with pytest.raises(TypeError, match="labels"):
            focalx.quality_focal_loss(x, (labels.astype(float), scores))
        with pytest.raises(ValueError, match="pair"):
            focalx.quality_focal_loss(x, (labels, scores, scores))

    @pytest.mark.parametrize("beta", [0.25, 0.5])
    def test_qfl_gradient_at_y_equal_p_is_finite_below_beta_1(self, beta):
        """At |y - p| = 0 (x = 0, y = 1/2) the one-sided derivatives are infinite for
        beta < 1; focalx defines the gradient as 0 there (|s|'s subgradient), and it is
        finite (large) right next to it."""
        x = np.array([0.0, 1e-12, -1e-12])
        _, g = ref.quality_focal_loss_and_grad(x, np.full(3, 0.5), beta=beta, reduction="none")
        assert np.isfinite(g).all() and g[0] == 0.0 and g[1] > 0 > g[2]

    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
    def test_vfl_reduces_to_the_sigmoid_focal_loss(self, gamma):
        rng = _rng(4)
        x = rng.normal(size=(6, 4)) * 4
        zero = np.zeros((6, 4))
        # all negatives: alpha times the focal loss of target 0 (alpha_t = 1)
        got, g = ref.varifocal_loss_and_grad(x, zero, alpha=0.3, gamma=gamma, reduction="sum")
        want, wg = ref.sigmoid_focal_loss_and_grad(x, zero, gamma=gamma, alpha=None,
                                                   reduction="sum")
        _close(got, 0.3 * want, rtol=1e-14)
        _close(g, 0.3 * wg, rtol=1e-14)
        # all positives: BCE against q, weighted by q (iou_weighted) or by 1
        q = rng.uniform(0.01, 1.0, size=(6, 4))
        plain = ref.sigmoid_focal_loss(x, q, gamma=0.0, alpha=None, reduction="none")
        _close(ref.varifocal_loss(x, q, gamma=gamma, reduction="none"), q * plain, rtol=1e-14)
        _close(ref.varifocal_loss(x, q, gamma=gamma, iou_weighted=False, reduction="none"),
               plain, rtol=1e-14)

    def test_vfl_weight_is_differentiated_like_the_references_autograd(self):
        """mmdet and ultralytics do not detach the negatives' weight alpha p^gamma: the
        gradient includes its derivative (central differences of the loss)."""
        x = np.array([-3.0, -0.5, 0.25, 2.0, 6.0])
        q = np.array([0.0, 0.0, 0.0, 0.5, 0.0])
        _, g = ref.varifocal_loss_and_grad(x, q, reduction="sum")
        h = 1e-6
        num = [(ref.varifocal_loss(x + h * e, q, reduction="sum") -
                ref.varifocal_loss(x - h * e, q, reduction="sum")) / (2 * h) for e in np.eye(5)]
        _close(g, num, rtol=1e-7, atol=1e-8)

    def test_dfl_at_integer_targets_is_cross_entropy(self):
        rng = _rng(5)
        x = rng.normal(size=(7, 9)) * 3
        t = rng.integers(0, 9, 7)
        got, g = ref.distribution_focal_loss_and_grad(x, t.astype(np.float64), reduction="mean")
        want, wg = ref.softmax_focal_loss_and_grad(x, t, gamma=0.0, reduction="mean")
        _close(got, want, rtol=1e-14)
        _close(g, wg, rtol=1e-14)

    def test_dfl_is_cross_entropy_against_the_two_hot_target(self):
        rng = _rng(6)
        x = rng.normal(size=(6, 5)) * 3
        t = np.array([0.0, 0.5, 3.25, 4.0, 2.875, 1.0])  # n_bins = 4, 4.0 the top bin
        q = np.zeros((6, 5))
        for i, v in enumerate(t):
            lo = min(int(np.floor(v)), 3)
            q[i, lo], q[i, lo + 1] = lo + 1 - v, v - lo
        got, g = ref.distribution_focal_loss_and_grad(x, t, reduction="none")
        want, wg = ref.softmax_focal_loss_and_grad(x, q, gamma=0.0, reduction="none")
        _close(got, want, rtol=1e-13)
        _close(g, wg, rtol=1e-13, atol=1e-16)
        lp = x - np.log(np.sum(np.exp(x), axis=1, keepdims=True))
        _close(got[3], -lp[3, 4], rtol=1e-13)  # y == n_bins: -log p_n

    def test_dfl_ignore_index_and_weight(self):
        rng = _rng(7)
        x = rng.normal(size=(4, 5))
        t = np.array([1.5, -1.0, 4.0, 0.25])
        w = np.array([2.0, 3.0, 0.5, 1.0])
        per = ref.distribution_focal_loss(x, np.where(t < 0, 0.0, t), reduction="none")
        got = ref.distribution_focal_loss(x, t, weight=w, ignore_index=-1, reduction="mean")
        _close(got, np.sum((w * per)[t >= 0]) / 3, rtol=1e-14)

    @pytest.mark.parametrize("fn, kw", [("quality_focal_loss", dict(beta=0.5)),
                                        ("varifocal_loss", dict(gamma=0.5, alpha=0.5))])
    def test_against_the_oracle(self, fn, kw):
        rng = _rng(8)
        x = (rng.integers(-64, 64, (3, 4)) / 8).astype(np.float64)
        y = rng.choice([0.0, 0.125, 0.375, 1.0], size=(3, 4))
        got, g = getattr(ref, fn + "_and_grad")(x, y, reduction="sum", **kw)
        case = {"fn": fn, "logits": x.ravel().tolist(), "shape": [3, 4],
                "targets": y.ravel().tolist(), "targets_shape": [3, 4],
                "kwargs": dict(kw, reduction="sum")}
        want, wg, _ = oracle.evaluate(case)
        _close(got, float(want[0]), rtol=1e-13)
        _close(g.ravel(), [float(v) for v in wg], rtol=1e-10, atol=1e-15)
