"""Properties every backend shares, one test each, run on every installed backend (through
the conformance harnesses, which import one framework each)."""

from __future__ import annotations

import numpy as np
import pytest

from focalx import _numpy as ref
from focalx.conformance import _harness, runner, tolerances

from .conftest import import_backend

BACKENDS = [name for name in runner.BACKENDS if name != "numpy" and _harness.available(name)[0]]


@pytest.fixture(scope="module", params=BACKENDS)
def harness(request):
    import_backend(request.param)
    return _harness.create(request.param)


def _numeric(f, v, h=1e-6):
    """Central differences of a scalar function of an array, in float64."""
    v = np.asarray(v, np.float64)
    out = np.zeros_like(v)
    for i in np.ndindex(v.shape):
        up, down = v.copy(), v.copy()
        up[i] += h
        down[i] -= h
        out[i] = (f(up) - f(down)) / (2 * h)
    return out


CASES = [  # (variant, logits shape, targets kind, kwargs, differentiated)
    ("sigmoid_focal_loss", (3, 4), "soft", dict(gamma=1.5, reduction="mean"), ("targets",)),
    ("sigmoid_focal_loss", (3, 4), "soft",
     dict(gamma=0.5, alpha=[0.2, 0.4, 0.6, 0.8], pos_weight=[1.0, 2.0, 0.5, 1.0],
          weight=[[1.0], [0.5], [2.0]], label_smoothing=0.1, reduction="sum"),
     ("targets", "alpha", "pos_weight", "weight")),
    ("sigmoid_focal_loss", (5,), "soft", dict(gamma=2.0, reduction="sum", normalizer=3.0,
                                              from_logits=False), ("targets", "normalizer")),
    ("softmax_focal_loss", (3, 4), "probs", dict(gamma=2.0, axis=-1, reduction="mean"),
     ("targets",)),
    ("softmax_focal_loss", (3, 4), "index", dict(gamma=0.5, axis=-1, weight=[1.0, 2.0, 0.5, 1.0],
                                                 alpha=[0.3, 0.5, 0.7, 0.9], reduction="mean"),
     ("weight", "alpha")),
    ("sigmoid_focal_loss_star", (2, 3), "soft", dict(gamma=2.0, beta=0.5, reduction="mean"),
     ("targets",)),
]


@pytest.mark.parametrize("variant, shape, kind, kwargs, wrt", CASES,
                         ids=[f"{c[0]}-{'+'.join(c[4])}" for c in CASES])
def test_targets_and_hyperparameter_arrays_get_the_gradient_of_the_definition(
        harness, variant, shape, kind, kwargs, wrt):
    """One rule in every backend: floating targets and hyperparameter arrays are
    differentiable (distillation, learned soft labels, a learned alpha), with the
    derivative of the spec's formula; here against central differences of the float64
    reference."""
    rng = np.random.default_rng(len(wrt) + len(shape))
    x = rng.normal(size=shape) * 2
    if kwargs.get("from_logits") is False:
        x = rng.uniform(0.05, 0.95, size=shape)
    if kind == "soft":
        y = rng.uniform(0.05, 0.95, size=shape)
    elif kind == "probs":
        y = rng.dirichlet(np.ones(shape[-1]), size=shape[0])
    else:
        y = rng.integers(0, shape[-1], shape[:-1])
    arrays = {k: np.asarray(v, np.float64) for k, v in kwargs.items()
              if isinstance(v, list) or k in wrt}
    static = {k: v for k, v in kwargs.items() if k not in arrays}

    def conv(a, index=False):
        a = np.asarray(a)
        return harness.to_array(a.ravel().tolist(), a.shape, index=index, dtype="float64")
    got = harness.grads(variant, conv(x), conv(y, index=kind == "index"),
                        {**static, **{k: conv(v) for k, v in arrays.items()}}, wrt)

    def loss(**over):
        kw = {**static, **arrays, **{k: v for k, v in over.items() if k != "targets"}}
        return float(np.sum(getattr(ref, variant)(x, over.get("targets", y), **kw)))
    _, want_x = getattr(ref, variant + "_and_grad")(x, y, **static, **arrays)
    np.testing.assert_allclose(got["logits"], want_x, rtol=1e-10, atol=1e-12)
    for name in wrt:
        base = y if name == "targets" else arrays[name]
        want = _numeric(lambda v, name=name: loss(**{name: v}), base)
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("variant, x, y, kw, want", [
    # a certain wrong prediction at an infinite logit is +inf, the sigmoid loss elementwise
    ("sigmoid_focal_loss", [-np.inf, np.inf, 1.0], [1.0, 0.3, 1.0], {}, [np.inf, np.inf, None]),
    # a -inf logit is a probability of 0; +inf makes its sample NaN
    ("softmax_focal_loss", [[0.0, -np.inf], [0.0, -np.inf], [0.0, np.inf]], [0, 1, 0],
     dict(axis=-1), [None, np.inf, np.nan]),
    ("sigmoid_focal_loss", [np.nan, 1.0], [1.0, 0.0], {}, [np.nan, None]),
])
def test_infinite_and_nan_logits_give_what_the_reference_gives(harness, variant, x, y, kw, want):
    x, y = np.asarray(x, np.float64), np.asarray(y)
    out = harness.call_public(variant, harness.to_array(x.ravel().tolist(), x.shape),
                              harness.to_array(y.ravel().tolist(), y.shape,
                                               index=y.dtype.kind == "i"),
                              dict(kw, reduction="none"))
    got = np.asarray(harness.values(out))
    expected = getattr(ref, variant)(x, y, reduction="none", **kw)
    for g, w, e in zip(got, want, expected.ravel()):
        if w is None:
            assert np.isfinite(g) and np.isclose(g, e, rtol=1e-12)
        elif np.isnan(w):
            assert np.isnan(g) and np.isnan(e)
        else:
            assert g == w == e


GAMMAS = [0.0, 0.25, 0.5, 1.0, 2.0, 5.0]
_SIGMOID_EXTREMES = ([100.0, -100.0, 1e4, -1e4, 88.0, -89.0, 17.0, 0.0] * 2, [1.0] * 8 + [0.0] * 8,
                     (16,))
_SOFTMAX_EXTREMES = ([100.0, -100.0, 0.0, 1e4, 0.0, -1e4, 40.0, -40.0, 3.0, -1e4, 1e4, 0.0],
                     [0, 0, 1, 1], (4, 3))
#: logits at and far beyond saturation (exp overflows at 89 in float32, 710 in float64),
#: each with either target; the softmax loss with class indices, plain and smoothed (two
#: paths)
EXTREMES = {
    "sigmoid_focal_loss": ("sigmoid_focal_loss", _SIGMOID_EXTREMES, {}),
    "sigmoid_focal_loss_star": ("sigmoid_focal_loss_star", _SIGMOID_EXTREMES, {"beta": 0.5}),
    "softmax_focal_loss": ("softmax_focal_loss", _SOFTMAX_EXTREMES, {"axis": -1}),
    "softmax_focal_loss/smoothed": ("softmax_focal_loss", _SOFTMAX_EXTREMES,
                                    {"axis": -1, "label_smoothing": 0.1}),
}


def _within_tolerance(got, want, dtype, scale=1.0, atol=None):
    """The conformance suite's comparison (conformance/tolerances.py) of value arrays;
    `atol` replaces its absolute term (times `scale`)."""
    rtol, atol_, tiny = tolerances.tolerance(dtype)
    atol = atol_ if atol is None else atol
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bad = ~(np.abs(got - want) <= rtol * np.abs(want) + atol * scale + tiny)
    assert not bad.any(), f"{dtype}: got {got[bad]}, want {want[bad]}"


def _extreme_cases():
    out = []
    for case, (variant, _, _) in EXTREMES.items():
        for gamma in GAMMAS:
            if gamma == 0 and variant == "sigmoid_focal_loss_star":
                continue  # (FL* needs gamma > 0)
            for dtype in ("float32", "float64"):
                out.append((case, gamma, dtype, 0))
        out.append((case, 0.5, "float32", 1))  # every other mode: one gamma below 1
    return out


@pytest.mark.parametrize("case, gamma, dtype, modes", _extreme_cases())
def test_gradient_is_finite_and_exact_at_extreme_logits(harness, case, gamma, dtype, modes):
    """Where the textbook formula gives NaN or inf (saturated probabilities, gamma < 1),
    every backend's loss and gradient are finite and equal the float64 reference's, in
    each of its execution modes; tiny gradients to 1e-30 absolutely."""
    variant, (x, y, shape), kw = EXTREMES[case]
    kwargs = dict(kw, gamma=gamma, reduction="sum")
    index = variant == "softmax_focal_loss"
    want, want_g = getattr(ref, variant + "_and_grad")(np.reshape(x, shape), np.asarray(y),
                                                       **kwargs)
    for mode in harness.modes[:1] if modes == 0 else harness.modes[1:]:
        xa = harness.to_array(x, shape, dtype=dtype)
        ya = harness.to_array(y, (len(y),) if index else shape, index=index, dtype=dtype)
        try:
            loss, grad, _, out_dtype = harness.call(mode, variant, xa, ya, kwargs, 1.0)
        except _harness.NotRun:
            continue  # (a mode that declines these inputs, e.g. torch's kernel below its size)
        assert out_dtype == dtype, mode
        assert np.isfinite(loss).all() and np.isfinite(grad).all(), mode
        _within_tolerance(loss, np.ravel(want), dtype, atol=1e-30)
        _within_tolerance(grad, np.ravel(want_g), dtype, atol=1e-30)


@pytest.mark.parametrize("variant", ["sigmoid_focal_loss", "sigmoid_focal_loss_star",
                                     "softmax_focal_loss"])
def test_each_dtype_is_computed_to_its_tolerance_and_returned_in_the_input_dtype(harness,
                                                                                 variant):
    """float16 / bfloat16 are computed in float32 and rounded once; float32 / float64 in
    themselves: on every backend and device, against the float64 reference evaluated at
    the rounded inputs, to the conformance tolerance of the dtype (the harness checks that
    the gradient has the logits' dtype)."""
    rng = np.random.default_rng(26)
    shape = (64, 5)
    x = rng.normal(size=shape) * 4
    index = variant == "softmax_focal_loss"
    y = rng.integers(0, 5, 64) if index else (rng.random(shape) < 0.3).astype(np.float64)
    kwargs = {"reduction": "sum", **({"axis": -1} if index else {})}
    for device in harness.devices():
        for dtype in harness.dtypes(device):
            xa = harness.to_array(x.ravel().tolist(), shape, device=device, dtype=dtype)
            ya = harness.to_array(y.ravel().tolist(), y.shape, index=index, device=device,
                                  dtype=dtype)
            loss, grad, _, out_dtype = harness.call(harness.modes[0], variant, xa, ya, kwargs,
                                                    1.0)
            assert out_dtype == harness.result_dtype(dtype), (device, dtype)
            seen = harness.values(xa).reshape(shape)  # the rounded inputs
            want, want_g = getattr(ref, variant + "_and_grad")(seen, y, **kwargs)
            _within_tolerance(loss, np.ravel(want), out_dtype)
            _within_tolerance(grad, np.ravel(want_g), out_dtype)


def test_every_ops_class_implements_the_protocol(harness):
    """Each Ops implementation the registry names for the backend has every method of
    focalx._spec.Ops; the optional hooks it adds are OptionalOps' (same parameters), and
    it adds no other public method (a misspelt hook would be silently ignored). The spec
    passes arguments by position: the counts must agree."""
    import inspect

    from focalx import _spec
    from focalx.backends import REGISTRY, load

    required = {n for n in vars(_spec.Ops) if not n.startswith("_")}
    optional = set(_spec.OPTIONAL_OPS)

    def params(fn):
        return [p for p in inspect.signature(fn).parameters if p != "self"]
    for path in REGISTRY[harness.name].ops:
        cls = load(path)
        have = {n for n in dir(cls) if not n.startswith("_")}
        assert required <= have, (path, sorted(required - have))
        for hook in have & optional:
            want = getattr(_spec.OptionalOps, hook, None)
            if callable(want):
                assert len(params(getattr(cls, hook))) == len(params(want)), (path, hook)
        extra = {n for n in have - required - optional
                 if inspect.isfunction(inspect.getattr_static(cls, n))
                 or isinstance(inspect.getattr_static(cls, n), (staticmethod, classmethod))}
        assert not extra, (path, sorted(extra))


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

_GFL_X = [100.0, -100.0, 1e4, -1e4, 88.0, -89.0, 17.0, 0.0, 1e-8, -30.0]
#: every logit with quality 0, 1 and a soft one
_GFL_ELEMENTWISE = (_GFL_X * 3, [0.0] * 10 + [1.0] * 10 + [0.375] * 10, (30,))
_EXPONENT = {"quality_focal_loss": "beta", "varifocal_loss": "gamma"}

# ---- Poly-1 (epsilon) -------------------------------------------------------------------

def _modes(harness, every):
    """Every execution mode of the backend, or (for the cases that only vary the
    arguments) its first: a mode that compiles takes seconds a call."""
    return harness.modes if every else harness.modes[:1]


def _in_every_mode(harness, variant, x, y, kw, index):
    """[(mode, loss, gradient w.r.t. x in x's shape)] of float64 x and targets y in every
    mode of the backend that runs the call (at least one must)."""
    xa = harness.to_array(x.ravel().tolist(), x.shape, dtype="float64")
    ya = harness.to_array(y.ravel().tolist(), y.shape, index=index, dtype="float64")
    out = []
    for mode in harness.modes:
        try:
            loss, grad = harness.call(mode, variant, xa, ya, kw, 1.0)[:2]
        except _harness.NotRun:
            continue
        out.append((mode, loss, np.asarray(grad).reshape(x.shape)))
    assert out, "no mode ran"
    return out


_POLY1 = [  # (variant, targets kind, kwargs, every mode)
    ("sigmoid_focal_loss", "soft", dict(gamma=2.0, alpha=[0.25, 0.5, 0.75, 0.4],
                                        weight=[[1.0], [0.5], [2.0]], label_smoothing=0.125,
                                        reduction="mean"), True),
    ("sigmoid_focal_loss", "hard", dict(gamma=0.5, alpha=None, pos_weight=[2.0, 1.0, 0.5, 1.0],
                                        reduction="sum", normalizer=3.0), False),
    ("softmax_focal_loss", "index", dict(gamma=2.0, axis=-1, weight=[1.0, 2.0, 0.5, 1.0],
                                         alpha=[0.3, 0.5, 0.7, 0.9], reduction="mean"), True),
    ("softmax_focal_loss", "index", dict(gamma=0.5, axis=-1, label_smoothing=0.125,
                                         reduction="sum"), False),
    ("softmax_focal_loss", "probs", dict(gamma=1.0, axis=-1, reduction="none"), False),
]


def _poly1_inputs(kind, shape=(3, 4), seed=18):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 3
    if kind == "soft":
        y = rng.uniform(0, 1, size=shape)
    elif kind == "hard":
        y = (rng.random(shape) < 0.4).astype(np.float64)
    elif kind == "probs":
        y = rng.dirichlet(np.ones(shape[-1]), size=shape[0])
    else:
        y = rng.integers(0, shape[-1], shape[:-1])
    return x, y


def _poly1_term(variant, x, y, kw):
    """The Poly-1 term per the definition (Leng et al., arXiv 2204.12511), in plain NumPy:
    sum of w alpha_t (1 - p_t)^(gamma + 1) (sigmoid, elementwise) or of w_c alpha_c q_c
    (1 - p_c)^(gamma + 1) (softmax, per sample), reduced as the loss is."""
    g, red, e = kw["gamma"], kw["reduction"], kw.get("label_smoothing", 0.0)
    if variant == "sigmoid_focal_loss":
        y = y * (1 - e) + e / 2
        p = 1 / (1 + np.exp(-x))
        a = kw.get("alpha")
        at = 1.0 if a is None else y * np.asarray(a) + (1 - y) * (1 - np.asarray(a))
        w = np.asarray(kw.get("weight", 1.0))
        term = w * at * (y * (1 - p) + (1 - y) * p) ** (g + 1)
        denom = x.size
    else:
        C = x.shape[-1]
        q = y if y.shape == x.shape else np.eye(C)[y]
        q = q * (1 - e) + e / C
        p = np.exp(x - x.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        k = np.asarray(kw.get("weight", np.ones(C))) * np.asarray(kw.get("alpha", np.ones(C)))
        term = np.sum(k * q * (1 - p) ** (g + 1), axis=-1)
        denom = x.shape[0] if y.shape == x.shape or "weight" not in kw else \
            np.sum(np.asarray(kw["weight"])[y])
    out = term if red == "none" else term.sum() / (denom if red == "mean" else 1.0)
    return out / kw.get("normalizer", 1.0)


@pytest.mark.parametrize("variant, kind, kwargs, every", _POLY1,
                         ids=[f"{v}-{k}-{i}" for i, (v, k, _, _) in enumerate(_POLY1)])
def test_poly1_adds_epsilon_times_its_term_and_epsilon_zero_is_the_plain_loss(
        harness, variant, kind, kwargs, every):
    """epsilon=0 gives exactly the loss without it (the term is skipped); another epsilon
    adds epsilon times the Poly-1 term computed here from the paper's definition
    (negative epsilon too), with the float64 reference's gradient. In every execution
    mode (the fused and compiled paths included) for one sigmoid and one softmax case."""
    x, y = _poly1_inputs(kind)
    index = kind == "index"
    xa = harness.to_array(x.ravel().tolist(), x.shape, dtype="float64")
    ya = harness.to_array(y.ravel().tolist(), y.shape, index=index, dtype="float64")
    want_term = np.ravel(_poly1_term(variant, x, y, kwargs))
    for mode in _modes(harness, every):
        try:
            plain, plain_g, _, _ = harness.call(mode, variant, xa, ya, kwargs, 1.0)
        except _harness.NotRun:
            continue
        zero, zero_g, _, _ = harness.call(mode, variant, xa, ya, dict(kwargs, epsilon=0.0), 1.0)
        np.testing.assert_array_equal(zero, plain, err_msg=mode)
        np.testing.assert_array_equal(zero_g, plain_g, err_msg=mode)
        for eps in (1.5, -1.0):
            got, got_g, _, _ = harness.call(mode, variant, xa, ya, dict(kwargs, epsilon=eps),
                                            1.0)
            # (rtol 1e-7: Paddle's full static graph makes a Python float, such as the
            # mean's 1/count, a float32 constant)
            np.testing.assert_allclose((got - plain) / eps, want_term, rtol=1e-7, atol=1e-13,
                                       err_msg=f"{mode} epsilon={eps}")
            _, want_g = getattr(ref, variant + "_and_grad")(x, y, **kwargs, epsilon=eps)
            np.testing.assert_allclose(got_g, np.ravel(want_g), rtol=1e-7, atol=1e-13,
                                       err_msg=f"{mode} epsilon={eps}")


@pytest.mark.parametrize("variant, kind", [("softmax_focal_loss", "index"),
                                           ("softmax_focal_loss", "probs"),
                                           ("sigmoid_focal_loss", "soft")])
def test_poly1_at_gamma0_is_optax_poly_loss_cross_entropy(harness, variant, kind):
    """At gamma=0 (alpha None) Poly-1 is optax.losses.poly_loss_cross_entropy: for the
    softmax loss directly (class indices as one-hot labels, or a distribution), for the
    sigmoid loss as the two-class softmax of logits (0, x) against (1 - y, y). Loss and
    gradient (optax in its default float32)."""
    import_backend("jax")
    from .conftest import import_companion
    optax = import_companion("optax", "jax")
    import jax
    import jax.numpy as jnp

    x, y = _poly1_inputs(kind, shape=(6, 5), seed=2204)
    if variant == "sigmoid_focal_loss":
        ox = np.stack([np.zeros_like(x), x], -1)
        oy = np.stack([1 - y, y], -1)
        kw = dict(gamma=0.0, alpha=None, reduction="sum")
    else:
        ox, oy = x, (y if kind == "probs" else np.eye(x.shape[-1])[y])
        kw = dict(gamma=0.0, axis=-1, reduction="sum")
    for eps in (2.0, -1.0):
        def total(a, eps=eps):
            return jnp.sum(optax.losses.poly_loss_cross_entropy(
                a, jnp.asarray(oy, jnp.float32), epsilon=eps))
        want, want_g = jax.value_and_grad(total)(jnp.asarray(ox, jnp.float32))
        want_g = np.asarray(want_g, np.float64)
        if variant == "sigmoid_focal_loss":
            want_g = want_g[..., 1]  # (d/dx of the logits (0, x))
        xa = harness.to_array(x.ravel().tolist(), x.shape, dtype="float64")
        ya = harness.to_array(y.ravel().tolist(), y.shape, index=kind == "index",
                              dtype="float64")
        for mode in _modes(harness, False):
            try:
                got, got_g, _, _ = harness.call(mode, variant, xa, ya, dict(kw, epsilon=eps),
                                                1.0)
            except _harness.NotRun:
                continue
            np.testing.assert_allclose(got, [float(want)], rtol=2e-6, err_msg=mode)
            np.testing.assert_allclose(got_g, want_g.ravel(), rtol=1e-4, atol=1e-6,
                                       err_msg=mode)


@pytest.mark.parametrize("variant", ["sigmoid_focal_loss", "softmax_focal_loss"])
@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 2.0])
def test_poly1_gradient_is_finite_at_extreme_logits(harness, variant, gamma):
    """Poly-1's gradient at logits +-1e4 (and saturation) is finite and the reference's,
    for every gamma, with epsilon of either sign. (To the conformance suite's absolute
    tolerance: at epsilon = -1 the term cancels the first-order term of the cross-entropy,
    so where p_t -> 1 the result is a second-order difference of first-order terms,
    accurate to their rounding.)"""
    case = "sigmoid_focal_loss" if variant == "sigmoid_focal_loss" else \
        "softmax_focal_loss/smoothed"
    _, (x, y, shape), kw = EXTREMES[case]
    index = variant == "softmax_focal_loss"
    for eps in (1.0, -1.0):
        kwargs = dict(kw, gamma=gamma, reduction="sum", epsilon=eps)
        want, want_g = getattr(ref, variant + "_and_grad")(np.reshape(x, shape),
                                                           np.asarray(y), **kwargs)
        for dtype in ("float32", "float64"):
            xa = harness.to_array(x, shape, dtype=dtype)
            ya = harness.to_array(y, (len(y),) if index else shape, index=index, dtype=dtype)
            loss, grad, _, _ = harness.call(harness.modes[0], variant, xa, ya, kwargs, 1.0)
            assert np.isfinite(loss).all() and np.isfinite(grad).all()
            _within_tolerance(loss, np.ravel(want), dtype)
            _within_tolerance(grad, np.ravel(want_g), dtype)


# ---- Asymmetric Loss ---------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("options", [dict(reduction="none"),
                                     dict(weight=[[1.0], [0.5], [2.0], [0.0]], ignore_index=-1,
                                          reduction="mean"),
                                     dict(reduction="sum", normalizer=3.0)])
def test_asymmetric_loss_is_the_focal_loss_at_equal_exponents_without_margin(harness, gamma,
                                                                             options):
    """asymmetric_loss(gamma_pos = gamma_neg = gamma, clip=0) is
    sigmoid_focal_loss(gamma, alpha=None) (hard targets; with ignore_index, weights and
    a normalizer), loss and gradient; in every execution mode at gamma 0.5."""
    rng = np.random.default_rng(2009)
    x = rng.normal(size=(4, 5)) * 4
    y = (rng.random((4, 5)) < 0.4).astype(np.float64)
    if "ignore_index" in options:
        y[1, 2] = y[3, 0] = -1.0
    xa = harness.to_array(x.ravel().tolist(), x.shape, dtype="float64")
    ya = harness.to_array(y.ravel().tolist(), y.shape, dtype="float64")
    for mode in _modes(harness, gamma == 0.5):
        try:
            want, want_g, _, _ = harness.call(mode, "sigmoid_focal_loss", xa, ya,
                                              dict(options, gamma=gamma, alpha=None), 1.0)
        except _harness.NotRun:
            continue
        got, got_g, _, _ = harness.call(mode, "asymmetric_loss", xa, ya,
                                        dict(options, gamma_pos=gamma, gamma_neg=gamma,
                                             clip=0.0), 1.0)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300, err_msg=mode)
        np.testing.assert_allclose(got_g, want_g, rtol=1e-12, atol=1e-300, err_msg=mode)


@pytest.mark.parametrize("clip", [0.0, 0.05])
@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 2.0])
def test_asymmetric_loss_gradient_is_finite_at_extreme_logits(harness, gamma, clip):
    """ASL's loss and gradient at logits +-1e4 (and at saturation) are finite and the
    float64 reference's, for every exponent in {0, 0.25, 0.5, 1, 2} on either term, in
    float32 and float64."""
    x, y, shape = _SIGMOID_EXTREMES
    for gamma_pos, gamma_neg in ((gamma, 4.0), (0.0, gamma), (gamma, gamma)):
        kwargs = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, reduction="sum")
        want, want_g = ref.asymmetric_loss_and_grad(np.reshape(x, shape), np.asarray(y),
                                                    **kwargs)
        for dtype in ("float32", "float64"):
            xa = harness.to_array(x, shape, dtype=dtype)
            ya = harness.to_array(y, shape, dtype=dtype)
            loss, grad, _, _ = harness.call(harness.modes[0], "asymmetric_loss", xa, ya,
                                            kwargs, 1.0)
            assert np.isfinite(loss).all() and np.isfinite(grad).all()
            _within_tolerance(loss, np.ravel(want), dtype, atol=1e-30)
            _within_tolerance(grad, np.ravel(want_g), dtype, atol=1e-30)


# ---- single-label (softmax) Asymmetric Loss ----------------------------------------------

@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_asymmetric_softmax_loss_without_smoothing_is_the_softmax_focal_loss(harness, gamma):
    """Without label smoothing the other classes carry no mass: asymmetric_softmax_loss is
    softmax_focal_loss(gamma=gamma_pos) whatever gamma_neg (with ignore_index and a mean);
    in every execution mode at gamma 0.5."""
    rng = np.random.default_rng(2015)
    x = rng.normal(size=(6, 5)) * 4
    y = rng.integers(0, 5, 6)
    y[2] = -100
    xa = harness.to_array(x.ravel().tolist(), x.shape, dtype="float64")
    ya = harness.to_array(y.tolist(), y.shape, index=True, dtype="float64")
    for mode in _modes(harness, gamma == 0.5):
        try:  # (a mode that one of them does not take: Paddle's row blocks, ...)
            want, want_g, _, _ = harness.call(mode, "softmax_focal_loss", xa, ya,
                                              dict(gamma=gamma, axis=-1), 1.0)
            got, got_g, _, _ = harness.call(mode, "asymmetric_softmax_loss", xa, ya,
                                            dict(gamma_pos=gamma, gamma_neg=3.0,
                                                 label_smoothing=0.0, axis=-1), 1.0)
        except _harness.NotRun:
            continue
        np.testing.assert_allclose(got, want, rtol=1e-13, err_msg=mode)
        np.testing.assert_allclose(got_g, want_g, rtol=1e-12, atol=1e-300, err_msg=mode)


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 2.0])
def test_asymmetric_softmax_loss_gradient_is_finite_at_extreme_logits(harness, gamma):
    """The single-label ASL's loss and gradient at logits +-1e4 are finite and the float64
    reference's, for every exponent in {0, 0.25, 0.5, 1, 2} on either side."""
    x, y, shape = _SOFTMAX_EXTREMES
    for gamma_pos, gamma_neg in ((gamma, 4.0), (0.0, gamma), (gamma, gamma)):
        kwargs = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, label_smoothing=0.1, axis=-1,
                      reduction="sum")
        want, want_g = ref.asymmetric_softmax_loss_and_grad(np.reshape(x, shape),
                                                            np.asarray(y), **kwargs)
        for dtype in ("float32", "float64"):
            xa = harness.to_array(x, shape, dtype=dtype)
            ya = harness.to_array(y, (len(y),), index=True, dtype=dtype)
            loss, grad, _, _ = harness.call(harness.modes[0], "asymmetric_softmax_loss", xa,
                                            ya, kwargs, 1.0)
            assert np.isfinite(loss).all() and np.isfinite(grad).all()
            _within_tolerance(loss, np.ravel(want), dtype, atol=1e-30)
            _within_tolerance(grad, np.ravel(want_g), dtype, atol=1e-30)
def _gfl_modes(harness, exponent, dtype):
    # every execution mode (the framework's compilers: torch.compile, jax.jit,
    # tf.function and XLA, paddle.jit.to_static) once; the first for the rest
    return harness.modes if (exponent, dtype) == (0.5, "float32") else harness.modes[:1]


def _run_modes(harness, modes, variant, xa, ya, kwargs, want, want_g, dtype):
    ran = 0
    for mode in modes:
        try:
            loss, grad, _, out_dtype = harness.call(mode, variant, xa, ya, kwargs, 1.0)
        except _harness.NotRun:
            continue  # (a speed path these losses do not take: torch's kernel, Paddle's blocks)
        ran += 1
        assert out_dtype == dtype, mode
        assert np.isfinite(loss).all() and np.isfinite(grad).all(), mode
        _within_tolerance(loss, np.ravel(want), dtype, atol=1e-30)
        _within_tolerance(grad, np.ravel(want_g), dtype, atol=1e-30)
    assert ran


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("exponent", [0.0, 0.25, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("variant", ["quality_focal_loss", "varifocal_loss"])
def test_qfl_vfl_gradient_is_finite_and_exact_at_extreme_logits(harness, variant, exponent,
                                                                 dtype):
    """QFL's beta and VFL's gamma in {0, 0.25, 0.5, 1, 2}, logits to +-1e4, quality 0, 1
    and soft: finite loss and gradient equal to the float64 reference's, in every
    execution mode of the backend."""
    x, y, shape = _GFL_ELEMENTWISE
    kwargs = {_EXPONENT[variant]: exponent, "reduction": "sum"}
    want, want_g = getattr(ref, variant + "_and_grad")(np.asarray(x), np.asarray(y), **kwargs)
    xa, ya = harness.to_array(x, shape, dtype=dtype), harness.to_array(y, shape, dtype=dtype)
    _run_modes(harness, _gfl_modes(harness, exponent, dtype), variant, xa, ya, kwargs, want,
               want_g, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_qfl_pair_and_dfl_in_every_mode(harness, dtype):
    """The detection pair (labels, scores) and Distribution Focal Loss (targets at the
    bins, between them and at n_bins; logits to +-1e4) in every execution mode."""
    rows = [[0.0, 1e-8, -1e-8], [15.0, -15.0, 0.0], [88.0, -89.0, 0.0], [1e4, 0.0, -1e4],
            [-1e4, 1e4, 0.0], [0.0, -1e4, 1e4]]
    x = np.asarray(rows)
    labels, scores = np.array([0, 3, 2, -1, 1, 2]), np.array([0.5, 0.25, 1.0, 0.75, 0.0, 0.875])
    modes = harness.modes if dtype == "float32" else harness.modes[:1]
    xa = harness.to_array(x.ravel().tolist(), x.shape, dtype=dtype)
    pair = (harness.to_array(labels.tolist(), (6,), index=True),
            harness.to_array(scores.tolist(), (6,), dtype=dtype))
    kwargs = {"beta": 0.5, "reduction": "sum"}
    want, want_g = ref.quality_focal_loss_and_grad(x, (labels, scores), **kwargs)
    _run_modes(harness, modes, "quality_focal_loss", xa, pair, kwargs, want, want_g, dtype)
    t = np.array([0.0, 0.5, 1.0, 1.75, 2.0, 2.0])
    kwargs = {"reduction": "none", "axis": -1}
    want, want_g = ref.distribution_focal_loss_and_grad(x, t, **kwargs)
    _run_modes(harness, modes, "distribution_focal_loss", xa,
               harness.to_array(t.tolist(), (6,), dtype=dtype), kwargs, want, want_g, dtype)


@pytest.mark.parametrize("variant", ["quality_focal_loss", "varifocal_loss",
                                     "distribution_focal_loss"])
def test_gfl_reduce_to_the_plain_losses_in_every_backend(harness, variant):
    """At the neutral parameters: QFL with hard targets is sigmoid_focal_loss(gamma=beta,
    alpha=None); VFL with every target 0 is alpha times it; DFL at integer targets is the
    cross-entropy (softmax_focal_loss with gamma 0); each backend against itself."""
    rng = np.random.default_rng(18)
    x = rng.normal(size=(6, 5)) * 4
    xa = harness.to_array(x.ravel().tolist(), x.shape)
    if variant == "distribution_focal_loss":
        t = rng.integers(0, 5, 6)
        got = harness.call_public(variant, xa, harness.to_array(t.astype(float).tolist(), (6,)),
                                  dict(axis=-1))
        want = harness.call_public("softmax_focal_loss", xa,
                                   harness.to_array(t.tolist(), (6,), index=True),
                                   dict(axis=-1, gamma=0.0))
        np.testing.assert_allclose(harness.values(got), harness.values(want), rtol=1e-14)
        return
    y = (rng.random(x.shape) < 0.4).astype(np.float64) if variant == "quality_focal_loss" \
        else np.zeros(x.shape)
    ya = harness.to_array(y.ravel().tolist(), y.shape)
    kw = dict(beta=0.5) if variant == "quality_focal_loss" else dict(gamma=0.5, alpha=0.75)
    got = harness.call_public(variant, xa, ya, dict(kw, reduction="none"))
    want = harness.call_public("sigmoid_focal_loss", xa, ya,
                               dict(gamma=0.5, alpha=None, reduction="none"))
    scale = 1.0 if variant == "quality_focal_loss" else 0.75
    np.testing.assert_allclose(harness.values(got), scale * harness.values(want), rtol=1e-14)
PER_CLASS = [  # (variant, kind of targets, kwargs)
    ("sigmoid_focal_loss", "hard", {"alpha": 0.25}),
    ("sigmoid_focal_loss", "probabilities", {"alpha": None, "from_logits": False}),
    ("softmax_focal_loss", "index", {"axis": -1}),
    # (a dyadic smoothing: Paddle's full_graph programs round a Python float to float32)
    ("softmax_focal_loss", "index", {"axis": -1, "label_smoothing": 0.125, "weight": [1, 2, 1, 1]}),
    ("softmax_focal_loss", "probs", {"axis": -1}),
]


@pytest.mark.parametrize("variant, kind, kw", PER_CLASS,
                         ids=[f"{v}-{k}-{'+'.join(kw)}" for v, k, kw in PER_CLASS])
@pytest.mark.parametrize("host", [True, False], ids=["list", "array"])
def test_per_class_gamma_is_the_scalar_gamma_of_each_class(harness, variant, kind, kw, host):
    """gamma as a vector on the class axis, in every execution mode of every backend (as a
    list, or as the framework's array): all entries equal give the scalar gamma's loss
    and gradient; otherwise each class's column (sigmoid) or each sample of that target
    class (softmax with class indices) is the scalar loss with that class's gamma, and
    every loss equals the float64 reference's; finite at saturated logits with gamma 0
    and 0.25 among the classes."""
    rng = np.random.default_rng(18)
    shape, C = (6, 4), 4
    x = rng.normal(size=shape) * 3
    x[0] = [1e4, -1e4, 30.0, -30.0]
    x[1] = [-1e4, 1e4, 0.0, 100.0]
    index = kind == "index"
    if kind == "probabilities":
        x = rng.uniform(0.0, 1.0, size=shape)
        x[0] = [0.0, 1.0, 2.0 ** -30, 1 - 2.0 ** -30]
        y = (rng.random(shape) < 0.5).astype(np.float64)
        y[0] = [0.0, 1.0, 0.0, 1.0]  # certain right predictions (a gradient's limit)
    elif kind == "hard":
        y = (rng.random(shape) < 0.4).astype(np.float64)
    elif index:
        y = np.array([0, 1, 2, 3, 1, 0])
    else:
        y = rng.dirichlet(np.ones(C), size=shape[0])
    xa = harness.to_array(x.ravel().tolist(), shape, dtype="float64")
    ya = harness.to_array(y.ravel().tolist(), y.shape, index=index, dtype="float64")

    def gamma_arg(v):
        return list(v) if host else harness.to_array(list(v), (C,), dtype="float64")

    def run(mode, gamma):
        return harness.call(mode, variant, xa, ya, dict(kw, gamma=gamma, reduction="none"),
                            1.0)[:2]
    gammas = [0.0, 0.25, 1.0, 2.5]
    want, want_g = getattr(ref, variant + "_and_grad")(x, y, **dict(kw, gamma=gammas,
                                                                    reduction="none"))
    ran = 0
    for mode in harness.modes:
        try:
            loss, grad = run(mode, gamma_arg([2.0] * C))
            loss_s, grad_s = run(mode, 2.0)
            np.testing.assert_allclose(loss, loss_s, rtol=1e-13, atol=0, err_msg=mode)
            np.testing.assert_allclose(grad, grad_s, rtol=1e-13, atol=1e-300, err_msg=mode)
            loss, grad = run(mode, gamma_arg(gammas))
        except _harness.NotRun:
            continue
        ran += 1
        assert np.isfinite(grad).all() and np.isfinite(loss).all(), mode
        np.testing.assert_allclose(loss, want.ravel(), rtol=1e-12, atol=1e-300, err_msg=mode)
        np.testing.assert_allclose(grad, want_g.ravel(), rtol=1e-12, atol=1e-300, err_msg=mode)
        if mode != harness.modes[0]:
            continue  # (the identities below, in the first mode: compiling modes are slow)
        for g in (0.0, 0.5):
            loss_v, grad_v = run(mode, gamma_arg([g] * C))
            loss_s, grad_s = run(mode, g)
            np.testing.assert_allclose(loss_v, loss_s, rtol=1e-13, atol=0, err_msg=mode)
            np.testing.assert_allclose(grad_v, grad_s, rtol=1e-13, atol=1e-300, err_msg=mode)
        grad = grad.reshape(shape)
        for c, g in enumerate(gammas):
            loss_s, grad_s = run(mode, g)
            grad_s = grad_s.reshape(shape)
            if variant == "sigmoid_focal_loss":  # elementwise: class c is column c
                np.testing.assert_allclose(loss.reshape(shape)[:, c],
                                           loss_s.reshape(shape)[:, c], rtol=1e-13, atol=0)
                np.testing.assert_allclose(grad[:, c], grad_s[:, c], rtol=1e-13, atol=1e-300)
            elif index and not kw.get("label_smoothing"):  # the samples of target class c
                rows = y == c
                np.testing.assert_allclose(loss[rows], loss_s[rows], rtol=1e-13, atol=0)
                np.testing.assert_allclose(grad[rows], grad_s[rows], rtol=1e-13, atol=1e-300)
    assert ran, "no mode ran"


def test_ignored_samples_add_zero_beside_a_class_masked_with_minus_infinity(harness):
    """Class-index targets, class 0 masked with a -inf logit (a padding token's): an
    ignored sample (whose stand-in target is class 0) adds exactly 0 to the loss and
    gets a zero gradient, in every mode; the others are the float64 reference's of the
    kept samples alone (0 * inf was NaN)."""
    rng = np.random.default_rng(19)
    x = rng.normal(size=(5, 4)) * 2
    x[:, 0] = -np.inf
    y = np.array([1, -100, 3, 2, -100])
    kept = y != -100
    want, want_g = ref.softmax_focal_loss_and_grad(x[kept], y[kept])
    for mode, loss, grad in _in_every_mode(harness, "softmax_focal_loss", x, y,
                                           dict(ignore_index=-100), True):
        np.testing.assert_allclose(loss, want, rtol=1e-12, err_msg=mode)
        assert (grad[~kept] == 0).all(), mode
        np.testing.assert_allclose(grad[kept], want_g, rtol=1e-12, atol=1e-300, err_msg=mode)



MASKED = [  # (variant, targets' kind, kwargs): a class masked with -inf that adds 0
    # soft targets with no mass on the masked class (distillation over a masked vocabulary)
    ("softmax_focal_loss", "probs", dict(gamma=2.0)),
    ("softmax_focal_loss", "probs", dict(gamma=0.5, epsilon=1.0, alpha=[0.5, 0.25, 1.0, 0.75])),
    ("softmax_focal_loss", "probs", dict(gamma=[0.0, 0.25, 2.0, 1.0])),
    # smoothing puts mass on the masked class, whose weight is 0; ignored samples beside it
    # (dyadic smoothings: Paddle's full_graph programs round a Python float to float32)
    ("softmax_focal_loss", "index", dict(gamma=2.0, label_smoothing=0.125, weight=[0, 1, 2, 1],
                                         ignore_index=-100)),
    # p^gamma_neg (-log p) -> 0 as p -> 0, whatever the smoothing's mass there
    ("asymmetric_softmax_loss", "index", dict(ignore_index=-100, label_smoothing=0.125)),
    ("asymmetric_softmax_loss", "index", dict(gamma_pos=1.0, gamma_neg=0.5, label_smoothing=0.0)),
]


@pytest.mark.parametrize("variant, kind, kw", MASKED,
                         ids=[f"{v}-{k}-{'+'.join(kw)}" for v, k, kw in MASKED])
def test_a_class_masked_with_minus_infinity_adds_its_limit_zero(harness, variant, kind, kw):
    """Class 0 masked with a -inf logit where its term's limit is 0 (no target mass, a
    zero weight, or ASL's p^gamma_neg): the loss and gradient are the float64 reference's
    at a logit of -1e4, where the limit is reached (0 * inf was NaN in the dense and ASL
    paths), in every mode; the masked class's gradient is 0."""
    rng = np.random.default_rng(23)
    x = rng.normal(size=(5, 4)) * 2
    x[:, 0] = -np.inf
    if kind == "probs":
        y = rng.dirichlet(np.ones(3), size=5)
        y = np.concatenate([np.zeros((5, 1)), y], axis=1)
    else:
        y = np.array([1, -100, 3, 2, -100])
    kw = dict(kw, axis=-1, reduction="none")
    limit = np.where(np.isinf(x), -1e4, x)
    run = getattr(ref, variant + "_and_grad")
    want, want_g = run(limit, y, **kw)
    assert np.isfinite(want).all() and (want_g[:, 0] == 0).all()
    got_ref = run(x, y, **kw)  # (the spec bound to NumPy)
    np.testing.assert_array_equal(got_ref[0], want)
    np.testing.assert_array_equal(got_ref[1], want_g)
    for mode, loss, grad in _in_every_mode(harness, variant, x, y, kw, kind == "index"):
        np.testing.assert_allclose(loss, want, rtol=1e-12, atol=1e-300, err_msg=mode)
        np.testing.assert_allclose(grad, want_g, rtol=1e-12, atol=1e-300, err_msg=mode)


@pytest.mark.parametrize("mask", ["lowest", "nan-row"])
@pytest.mark.parametrize("variant, kind, kw", [
    ("softmax_focal_loss", "probs", dict(gamma=2.0, epsilon=1.0)), MASKED[4]],
                         ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_a_mask_of_the_lowest_float_or_a_nan_elsewhere_keeps_the_limit(
        harness, variant, kind, kw, mask):
    """The masked class of test_a_class_masked_with_minus_infinity_adds_its_limit_zero
    masked with float64's lowest value (whose -log p overflowed a gradient's
    intermediate, NaN), or with -inf beside a NaN logit in another sample (which made a
    read of the logits' range look finite and skip the selects): every other sample is
    still the reference's at the limit; the NaN sample stays NaN."""
    rng = np.random.default_rng(37)
    x = rng.normal(size=(5, 4)) * 2
    x[:, 0] = np.finfo(np.float64).min if mask == "lowest" else -np.inf
    if kind == "probs":
        y = np.concatenate([np.zeros((5, 1)), rng.dirichlet(np.ones(3), size=5)], axis=1)
    else:
        y = np.array([1, -100, 3, 2, -100])
    kw = dict(kw, axis=-1, reduction="none")
    run = getattr(ref, variant + "_and_grad")
    want, want_g = run(np.where(x < -1e4, -1e4, x), y, **kw)
    rows = slice(None)
    if mask == "nan-row":
        x[3, 2] = np.nan
        rows = np.arange(5) != 3
    for mode, loss, grad in _in_every_mode(harness, variant, x, y, kw, kind == "index"):
        loss = np.asarray(loss)
        np.testing.assert_allclose(loss[rows], want[rows], rtol=1e-12, err_msg=mode)
        np.testing.assert_allclose(grad[rows], want_g[rows], rtol=1e-12, atol=1e-300,
                                   err_msg=mode)
        if mask == "nan-row":
            assert np.isnan(loss[3]) and np.isnan(grad[3]).all(), mode


@pytest.mark.parametrize("variant, kw", [
    ("softmax_focal_loss", dict(gamma=0.0)), ("softmax_focal_loss", dict(gamma=2.0)),
    ("softmax_focal_loss", dict(gamma=0.5, epsilon=1.0)),
    ("softmax_focal_loss", dict(gamma=2.0, label_smoothing=0.125)),
    ("asymmetric_softmax_loss", dict(label_smoothing=0.125))],
    ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_an_ignored_sample_with_every_class_masked_gets_a_zero_gradient(harness, variant, kw):
    """An ignored sample whose logits are all -inf (an additive mask over a padded
    position), or hold a +inf: its softmax is NaN, yet it adds 0 and gets a zero gradient,
    as in cross-entropy with ignore_index / a where= mask; the kept samples are the float64
    reference's of the kept samples alone. Every mode (0 * NaN was NaN in every backend)."""
    rng = np.random.default_rng(29)
    x = rng.normal(size=(5, 4)) * 2
    x[1] = -np.inf
    x[4, 2] = np.inf
    y = np.array([1, -100, 3, 2, -100])
    kept = y != -100
    kw = dict(kw, axis=-1, ignore_index=-100)
    want, want_g = getattr(ref, variant + "_and_grad")(x[kept], y[kept], **kw)
    for mode, loss, grad in _in_every_mode(harness, variant, x, y, kw, True):
        np.testing.assert_allclose(loss, want, rtol=1e-12, err_msg=mode)
        assert (grad[~kept] == 0).all(), (mode, grad[~kept])
        np.testing.assert_allclose(grad[kept], want_g, rtol=1e-12, atol=1e-300, err_msg=mode)


_LEFT_OUT = [  # (variant, kwargs): binary losses with ignore_index
    ("sigmoid_focal_loss", dict(gamma=2.0)),
    ("sigmoid_focal_loss", dict(gamma=0.5, alpha=0.25, pos_weight=2.0, label_smoothing=0.125)),
    ("sigmoid_focal_loss", dict(gamma=2.0, epsilon=1.0, reduction="mean")),
    ("sigmoid_focal_loss", dict(gamma=[0.0, 2.0, 0.5, 1.0], reduction="sum")),
    ("sigmoid_focal_loss_star", dict(gamma=2.0, beta=0.5)),
    ("asymmetric_loss", dict(clip=0.0625)),
    ("asymmetric_loss", dict(gamma_pos=1.0, gamma_neg=2.0, clip=0.0, reduction="mean"))]
_LEFT_OUT_CASES = [(v, kw, by) for v, kw in _LEFT_OUT for by in ("ignore_index", "weight")] + [
    # (weights only: no ignore_index)
    ("quality_focal_loss", dict(beta=2.0), "weight"),
    ("varifocal_loss", dict(alpha=0.75, gamma=2.0, reduction="mean"), "weight")]


@pytest.mark.parametrize("variant, kw, by", _LEFT_OUT_CASES, ids=[
    f"{v}-{by}-{'+'.join(map(str, kw.values()))}" for v, kw, by in _LEFT_OUT_CASES])
def test_an_ignored_element_with_an_infinite_or_nan_logit_adds_zero(harness, variant, kw, by):
    """Binary losses: an element left out (its target ignore_index, or its weight 0) whose
    logit is +inf, -inf or NaN (a masked or padded position) adds exactly 0 and gets a zero
    gradient, as it does at a finite logit; the others are the float64 reference's with
    those logits finite (0 * inf was NaN, and NaN the whole mean). Every mode."""
    rng = np.random.default_rng(31)
    x = rng.normal(size=(2, 4)) * 2
    y = (rng.random((2, 4)) < 0.5).astype(np.float64)
    out = np.zeros((2, 4), bool)
    out[0, 1] = out[0, 2] = out[1, 0] = out[1, 3] = True
    bad = x.copy()
    bad[0, 1], bad[0, 2], bad[1, 0], bad[1, 3] = np.inf, np.inf, -np.inf, np.nan
    y[0, 1], y[0, 2] = 1.0, 0.0  # (+inf beside either target)
    kw = dict(kw)
    kw.setdefault("reduction", "none")
    if by == "ignore_index":
        y = np.where(out, -1.0, y)
        kw["ignore_index"] = -1
    else:
        # (dyadic weights, clip and means: Paddle's full_graph programs round Python
        # floats to float32)
        kw["weight"] = np.where(out, 0.0, rng.integers(2, 9, size=(2, 4)) / 4).tolist()
    run = getattr(ref, variant + "_and_grad")
    finite = np.where(out, 0.0, x)
    want, want_g = run(finite, y, **kw)
    assert np.isfinite(want).all() and np.isfinite(want_g).all()
    got_ref = run(bad, y, **kw)  # (the spec bound to NumPy)
    np.testing.assert_array_equal(got_ref[0], want)
    np.testing.assert_array_equal(got_ref[1], want_g)
    for mode, loss, grad in _in_every_mode(harness, variant, bad, y, kw, False):
        loss = np.asarray(loss).reshape(want.shape)
        if kw["reduction"] == "none":
            assert (loss[out] == 0).all(), (mode, loss[out])
        np.testing.assert_allclose(loss, want, rtol=1e-12, atol=1e-300, err_msg=mode)
        assert (grad[out] == 0).all(), (mode, grad[out])
        np.testing.assert_allclose(grad, want_g, rtol=1e-12, atol=1e-300, err_msg=mode)


# ---- the fused linear + softmax focal loss (issue 19) ------------------------------------

class TestLinearSoftmaxFocalLoss:
    """linear_softmax_focal_loss in every backend: the softmax focal loss of the
    materialised logits hidden @ W.T + b, in its loss and its three gradients, whatever
    the blocks (float64, small shapes: the arrays travel packed, as the golden cases)."""

    N, H, V = 7, 3, 5

    def _inputs(self, seed=19, bias=True):
        rng = np.random.default_rng(seed)
        h = rng.normal(size=(self.N, self.H))
        w = rng.normal(size=(self.V, self.H))
        b = rng.normal(size=self.V) if bias else None
        y = rng.integers(0, self.V, self.N)
        y[[1, 4]] = -100
        return h, w, b, y

    def _run(self, harness, h, w, b, y, kwargs, cotangent=None):
        """(loss, d hidden, d weight, d bias) of sum(cotangent * loss) from the backend."""
        layout = {"hidden_shape": [self.N, self.H], "weight_shape": [self.V, self.H],
                  "bias": b is not None}
        packed = np.concatenate([h.ravel(), w.ravel()] + ([] if b is None else [b]))
        fn = harness.default_fn("linear_softmax_focal_loss")
        if cotangent is not None:
            c = harness.to_array(list(cotangent), cotangent.shape, dtype="float64")

            def scaled(*args, **kw):
                return fn(*args, **kw) * c
            call = scaled
        else:
            call = fn
        x = harness.to_array(packed.tolist(), packed.shape, dtype="float64")
        t = harness.to_array(y.tolist(), y.shape, index=True, dtype="float64")
        loss, grad, _, _ = harness.evaluate(_harness.packed_linear(harness, call, layout), x,
                                            t, kwargs, own=True)
        a, bb = self.N * self.H, self.N * self.H + self.V * self.H
        return (loss, grad[:a].reshape(h.shape), grad[a:bb].reshape(w.shape),
                None if b is None else grad[bb:])

    @staticmethod
    def _materialised(h, w, b, y, kwargs, cotangent=None):
        """The float64 reference's softmax focal loss of h @ w.T + b, and its gradients
        by the chain rule."""
        x = h @ w.T + (0.0 if b is None else b)
        loss, g = ref.softmax_focal_loss_and_grad(x, y, axis=-1, **kwargs)
        if cotangent is not None:
            loss, g = loss * cotangent, g * cotangent[:, None]
        return loss, g @ w, g.T @ h, None if b is None else g.sum(0)

    def _close(self, got, want, rtol=1e-9):
        for a, b in zip(got, want):
            if b is None:
                assert a is None
                continue
            np.testing.assert_allclose(np.ravel(a), np.ravel(b), rtol=rtol, atol=1e-12)

    @pytest.mark.parametrize("kwargs", [
        dict(gamma=2.0),
        dict(gamma=0.5, alpha=[0.2, 0.4, 0.6, 0.8, 1.0], weight=[1.0, 2.0, 0.5, 0.0, 1.5],
             reduction="sum", normalizer=3.0),
        dict(gamma=1.0, alpha=0.25, label_smoothing=0.1, reduction="mean", chunk_size=2),
        dict(gamma=[0.0, 0.5, 1.0, 2.0, 3.0], reduction="mean", chunk_size=3),
    ], ids=["default", "weights-sum", "smoothing", "gamma-vector"])
    def test_equals_the_softmax_focal_loss_of_the_materialised_logits(self, harness, kwargs):
        h, w, b, y = self._inputs()
        mat = {k: v for k, v in kwargs.items() if k != "chunk_size"}
        self._close(self._run(harness, h, w, b, y, kwargs),
                    self._materialised(h, w, b, y, mat))

    def test_none_takes_each_rows_incoming_gradient(self, harness):
        h, w, b, y = self._inputs(seed=7)
        c = np.linspace(0.5, 2.0, self.N)
        kwargs = dict(gamma=2.0, reduction="none", chunk_size=3)
        self._close(self._run(harness, h, w, b, y, kwargs, c),
                    self._materialised(h, w, b, y, dict(gamma=2.0, reduction="none"), c))

    @pytest.mark.parametrize("chunk_size", [2, None])
    def test_a_left_out_row_with_a_nan_or_infinite_hidden_state_adds_zero(self, harness,
                                                                          chunk_size):
        """Rows left out (ignored: 1 and 4; row 5's class has weight 0) whose hidden state
        is NaN or infinite (a padded position's) add 0 to the loss and to every gradient:
        the weight gradient was NaN (G's zero row times h). The reference: those rows
        finite."""
        h, w, b, y = self._inputs(seed=23)
        y[5] = 3
        kwargs = dict(gamma=2.0, weight=[1.0, 2.0, 0.5, 0.0, 1.5], reduction="mean")
        bad = h.copy()
        bad[1], bad[4, 0], bad[5, 2] = np.nan, np.inf, -np.inf
        got = self._run(harness, bad, w, b, y, dict(kwargs, chunk_size=chunk_size))
        want = self._materialised(np.where(np.isfinite(bad), bad, 0.0), w, b, y, kwargs)
        assert (got[1][[1, 4, 5]] == 0).all()
        self._close(got, want)

    def test_chunk_size_does_not_change_the_result(self, harness):
        h, w, b, y = self._inputs(seed=3, bias=False)
        results = [self._run(harness, h, w, b, y, dict(gamma=2.0, chunk_size=cs))
                   for cs in (1, 2, 4, None)]
        for other in results[1:]:
            self._close(other, results[0], rtol=1e-12)

    def test_ignored_rows_add_nothing_and_get_no_gradient(self, harness):
        h, w, b, y = self._inputs(seed=5)
        loss, dh, dw, db = self._run(harness, h, w, b, y, dict(gamma=2.0, reduction="none"))
        ignored = y == -100
        assert np.all(loss[ignored] == 0) and np.all(dh[ignored] == 0)
        kept = self._materialised(h[~ignored], w, b, y[~ignored], dict(gamma=2.0,
                                                                       reduction="sum"))
        self._close((loss.sum(), dw, db), (kept[0], kept[2], kept[3]))

    def test_gamma0_without_alpha_is_the_cross_entropy_of_the_logits(self, harness):
        h, w, b, y = self._inputs(seed=11)
        loss = self._run(harness, h, w, b, y, dict(gamma=0.0, chunk_size=2))[0]
        x = h @ w.T + b
        kept = y != -100
        lse = np.log(np.exp(x).sum(1))
        ce = (lse - x[np.arange(self.N), np.where(kept, y, 0)])[kept].mean()
        np.testing.assert_allclose(loss, [ce], rtol=1e-12)
