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


# ---- Poly-1 (epsilon) -------------------------------------------------------------------

def _modes(harness, every):
    """Every execution mode of the backend, or (for the cases that only vary the
    arguments) its first: a mode that compiles takes seconds a call."""
    return harness.modes if every else harness.modes[:1]


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
