"""The TensorFlow backend: tf.function / XLA, tf.nn parity, numerics, tf.distribute."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from .conftest import import_backend

tf = import_backend("tensorflow")

import focalx  # noqa: E402
import focalx.tensorflow as ftf  # noqa: E402
from focalx import _numpy as ref  # noqa: E402
from focalx import _spec  # noqa: E402
from focalx.backends.tensorflow import ops as tf_ops, xla as tf_xla  # noqa: E402
from focalx.conformance import _harness, runner  # noqa: E402

_ON_HOST = tf_ops._on_host  # the real placement rule (see the fixture below)


@pytest.fixture(autouse=True)
def _value_checks_as_on_the_cpu(monkeypatch):
    """Every tensor counts as on the CPU (as it is in CI), so that the tests of value
    checks get the CPU's behaviour on a machine where TensorFlow sees a GPU too: there
    a graph that places nothing would otherwise count as on the GPU. TestOnAGpu
    simulates the GPU; the real placement rule is tested with _ON_HOST."""
    monkeypatch.setattr(tf_ops, "_on_host", lambda a: True)


@pytest.fixture(autouse=True)
def _compile_in_the_calling_thread(request, monkeypatch):
    """Eager calls that take the compiled path compile it in the calling thread, so that
    a test's first call runs compiled (TestBackgroundCompile tests the default)."""
    if request.cls is not TestBackgroundCompile:
        monkeypatch.setattr(tf_xla, "BACKGROUND_COMPILE", False)


def _data(seed=0, shape=(16, 5), dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * 3).astype(dtype)
    t = (rng.random(shape) < 0.3).astype(dtype)
    y = rng.integers(0, shape[-1], size=shape[:-1])
    return x, t, y


def _close(a, b, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol,
                               atol=atol)


def _loss_and_grad(fn, x, *args, **kw):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = fn(x, *args, **kw)
    return loss, tape.gradient(loss, x)


class TestTfNnParity:
    def test_sigmoid_gamma0_equals_sigmoid_cross_entropy_with_logits(self):
        x, t, _ = _data(1, dtype=np.float64)
        t = t * 0.8 + 0.1
        got = ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t), gamma=0.0, alpha=None,
                                     reduction="none")
        want = tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=x)
        _close(got, want, rtol=1e-12)

    def test_pos_weight_equals_weighted_cross_entropy_with_logits(self):
        x, t, _ = _data(2, dtype=np.float64)
        got = ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t), gamma=0.0, alpha=None,
                                     pos_weight=3.0, reduction="none")
        want = tf.nn.weighted_cross_entropy_with_logits(labels=t, logits=x, pos_weight=3.0)
        _close(got, want, rtol=1e-12)

    def test_softmax_gamma0_equals_sparse_and_dense_softmax_cross_entropy(self):
        x, _, y = _data(3, dtype=np.float64)
        got = ftf.softmax_focal_loss(tf.constant(x), tf.constant(y), gamma=0.0, reduction="none")
        want = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=x)
        _close(got, want, rtol=1e-12)
        q = tf.nn.softmax(_data(4, dtype=np.float64)[0], axis=-1)
        got = ftf.softmax_focal_loss(tf.constant(x), q, gamma=0.0, reduction="none")
        want = tf.nn.softmax_cross_entropy_with_logits(labels=q, logits=x)
        _close(got, want, rtol=1e-12)

    def test_gradients_equal_tf_nn_at_gamma0(self):
        x, _, y = _data(5, dtype=np.float64)
        _, got = _loss_and_grad(ftf.softmax_focal_loss, x, tf.constant(y), gamma=0.0,
                                reduction="sum")
        _, want = _loss_and_grad(lambda v: tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=v)), x)
        _close(got, want, rtol=1e-12, atol=1e-15)


def _reference(variant, x, y, **kw):
    return getattr(ref, variant + "_and_grad")(x, y, **kw)


CALLS = [
    ("sigmoid_focal_loss", dict(gamma=0.5, pos_weight=2.0, label_smoothing=0.1)),
    ("sigmoid_focal_loss", dict(gamma=2.0, alpha=0.25, ignore_index=-1, reduction="sum")),
    ("sigmoid_focal_loss_star", dict(gamma=2.0, beta=1.0, alpha=0.25)),
    ("softmax_focal_loss", dict(gamma=2.0, ignore_index=1, weight=[1.0, 2.0, 0.5, 1.0, 1.5])),
    ("softmax_focal_loss", dict(gamma=0.25, label_smoothing=0.1, alpha=[.1, .2, .3, .2, .2])),
]


class TestGraphs:
    @pytest.mark.parametrize("jit", [False, True], ids=["tf.function", "xla"])
    @pytest.mark.parametrize("variant,kw", CALLS, ids=[f"{v}-{i}" for i, (v, _) in
                                                         enumerate(CALLS)])
    def test_tf_function_with_unknown_batch_size_matches_reference(self, variant, kw, jit):
        x, t, y = _data(6)
        if variant == "sigmoid_focal_loss" and kw.get("ignore_index") == -1:
            t[0, :2] = -1
        targets = y if variant == "softmax_focal_loss" else t
        fn = getattr(ftf, variant)
        spec = tf.TensorSpec([None, None] if variant != "softmax_focal_loss" else [None, 5],
                             tf.float32)
        tspec = tf.TensorSpec([None], tf.int64) if variant == "softmax_focal_loss" else spec

        @tf.function(jit_compile=jit, input_signature=[spec, tspec])
        def step(x, targets):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = fn(x, targets, **kw)
            return loss, tape.gradient(loss, x)

        loss, grad = step(tf.constant(x), tf.constant(targets))
        want, want_g = _reference(variant, x, targets, **kw)
        _close(loss, want, rtol=2e-6, atol=1e-7)
        _close(grad, want_g, rtol=2e-5, atol=1e-7)

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_every_golden_case_in_a_tf_function(self, dtype):
        """Graphs take the compiled (XLA) path: its numerics against every golden case."""
        harness = _harness.create("tensorflow")
        cases = runner.load_golden()["cases"]

        def in_graph(variant):
            base = getattr(ftf, variant)
            return lambda x, y, **kw: tf.function(lambda a, b: base(a, b, **kw))(x, y)
        failures = []
        for variant in ("sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star"):
            results = runner.run_cases(harness, runner.select(cases, variant=variant), "cpu",
                                       dtype, fn=in_graph(variant))
            failures += [f"{r['id']}: {r.get('detail')}" for r in results
                         if r["status"] != "passed"]
        assert not failures, "\n".join(failures)

    def test_bad_hyperparameters_fail_at_trace_time_with_the_same_errors(self):
        x, t, y = _data(7)
        for fn, args, kw, err, match in [
            (ftf.sigmoid_focal_loss, (x, t), dict(gamma=-1.0), ValueError, "gamma"),
            (ftf.sigmoid_focal_loss, (x, t[:, :2]), {}, ValueError, "targets"),
            (ftf.softmax_focal_loss, (x, y), dict(weight=[1.0, 2.0]), ValueError, "weight"),
            (ftf.softmax_focal_loss, (x, y), dict(reduction="avg"), ValueError, "reduction"),
            (ftf.softmax_focal_loss, (x, y.astype(np.float32)), {}, TypeError, "integer"),
        ]:
            graph = tf.function(lambda a, b: fn(a, b, **kw))
            with pytest.raises(err, match=match):
                graph(tf.constant(args[0]), tf.constant(args[1]))
            with pytest.raises(err, match=match):
                fn(tf.constant(args[0]), tf.constant(args[1]), **kw)

    def test_unknown_class_axis_size_is_a_clear_error(self):
        graph = tf.function(lambda a, b: ftf.softmax_focal_loss(a, b),
                            input_signature=[tf.TensorSpec([None, None]),
                                             tf.TensorSpec([None], tf.int64)])
        with pytest.raises(ValueError, match="static size on the class axis"):
            graph.get_concrete_function()


class TestValueChecks:
    def test_eager_cpu_raises_value_error(self):
        x, t, y = _data(8)
        with pytest.raises(ValueError, match="targets"):
            ftf.softmax_focal_loss(tf.constant(x), tf.constant(y + 5))
        with pytest.raises(ValueError, match="targets"):
            ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t * 2))

    def test_graph_raises_when_run_naming_the_argument(self):
        x, _, y = _data(9)
        graph = tf.function(lambda a, b: ftf.softmax_focal_loss(a, b))
        with pytest.raises(tf.errors.InvalidArgumentError, match="targets must be class indices"):
            graph(tf.constant(x), tf.constant(y + 5))
        _close(graph(tf.constant(x), tf.constant(y)),
               ref.softmax_focal_loss(x, y), rtol=2e-6)

    def test_xla_gives_nan_not_a_plausible_number(self):
        x, t, y = _data(10)

        @tf.function(jit_compile=True)
        def step(a, b, c):
            with tf.GradientTape() as tape:
                tape.watch(a)
                loss = ftf.softmax_focal_loss(a, b) + ftf.sigmoid_focal_loss(a, c)
            return loss, tape.gradient(loss, a)
        loss, grad = step(tf.constant(x), tf.constant(y), tf.constant(t))
        assert np.isfinite(loss.numpy()) and np.isfinite(grad.numpy()).all()
        for bad_y, bad_t in [(y + 5, t), (y, t * 2)]:
            loss, grad = step(tf.constant(x), tf.constant(bad_y), tf.constant(bad_t))
            assert np.isnan(loss.numpy()) and np.isnan(grad.numpy()).all()


class TestOnAGpu:
    """On a GPU (simulated: focalx.backends.tensorflow._on_host says no) a value check
    neither reads a value nor asserts on one, eagerly or in a graph (either would wait
    for the device): a failed check gives NaN, and good inputs the reference numbers."""

    @staticmethod
    def _gpu(monkeypatch):
        monkeypatch.setattr(tf_ops, "_on_host", lambda a: False)

    @staticmethod
    def _no_reads(monkeypatch):
        from tensorflow.python.framework import ops as tf_ops

        def read(self):
            raise AssertionError("a tensor's value was read")
        monkeypatch.setattr(tf_ops._EagerTensorBase, "_numpy", read)

    @pytest.mark.parametrize("n", [16, 256])  # op by op; compiled (above EAGER_XLA_MIN_SIZE)
    def test_eager_calls_read_no_value_and_give_nan_for_bad_values(self, monkeypatch, n):
        x, t, y = _data(40, shape=(n, 256))
        assert (x.size >= tf_xla.EAGER_XLA_MIN_SIZE) == (n == 256)
        self._gpu(monkeypatch)
        cases = [(ftf.softmax_focal_loss, y, y + 256, "softmax_focal_loss"),
                 (ftf.sigmoid_focal_loss, t, t * 2, "sigmoid_focal_loss")]
        results = []
        with monkeypatch.context() as m:
            self._no_reads(m)
            for fn, good, bad, _ in cases:
                results.append((_loss_and_grad(fn, x, tf.constant(good)),
                                _loss_and_grad(fn, x, tf.constant(bad))))
        for (fn, good, _, variant), (got, got_bad) in zip(cases, results):
            want, want_g = _reference(variant, x, good)
            _close(got[0], want, rtol=2e-5)
            _close(got[1], want_g, rtol=2e-5, atol=1e-6 * np.abs(want_g).max())
            assert np.isnan(got_bad[0].numpy()) and np.isnan(got_bad[1].numpy()).all()

    @pytest.mark.parametrize("jit", [False, True])
    def test_graphs_have_no_assertions_and_give_nan_for_bad_values(self, monkeypatch, jit):
        x, t, y = _data(41, shape=(32, 8))

        def step(a, b, c):
            with tf.GradientTape() as tape:
                tape.watch(a)
                loss = ftf.softmax_focal_loss(a, b) + ftf.sigmoid_focal_loss(a, c)
            return loss, tape.gradient(loss, a)

        def asserts():
            graph = tf.function(step, jit_compile=jit).get_concrete_function(
                tf.constant(x), tf.constant(y), tf.constant(t)).graph
            ops = list(graph.get_operations())
            for f in graph._functions.values():  # the compiled path's function bodies
                ops += f.graph.get_operations() if hasattr(f, "graph") else []
            return [op.type for op in ops if op.type == "Assert"]

        assert asserts(), "the test cannot tell: no assertion on the CPU either"
        self._gpu(monkeypatch)
        assert asserts() == []
        graph = tf.function(step, jit_compile=jit)
        loss, grad = graph(tf.constant(x), tf.constant(y), tf.constant(t))
        want = ref.softmax_focal_loss(x, y) + ref.sigmoid_focal_loss(x, t)
        _close(loss, want, rtol=2e-5)
        for bad_y, bad_t in [(y + 8, t), (y, t * 2)]:
            loss, grad = graph(tf.constant(x), tf.constant(bad_y), tf.constant(bad_t))
            assert np.isnan(loss.numpy()) and np.isnan(grad.numpy()).all()

    def test_graph_placement_follows_the_visible_devices(self):
        seen = []

        @tf.function
        def f(a):
            seen.append(_ON_HOST(a))
            with tf.device("/CPU:0"):
                seen.append(_ON_HOST(a * 2))
            return a

        f(tf.constant(1.0))
        gpus = bool(tf.config.list_logical_devices("GPU"))
        assert seen == [not gpus, True]
        assert _ON_HOST(tf.constant(1.0)) == (not gpus)
        with tf.device("/CPU:0"):
            assert _ON_HOST(tf.constant(1.0))


class TestNumerics:

    @pytest.mark.parametrize("xla", [True, False], ids=["compiled", "op_by_op"])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_confident_elements_keep_their_loss_in_a_tf_function(self, dtype, xla, monkeypatch):
        # Grappler (the graph optimizer of a plain tf.function) folds (1 + e) - 1 to e and
        # log(1 + e) to log1p(e); each element's loss must still be its own, however small.
        monkeypatch.setattr(tf_xla, "USE_XLA", xla)
        monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
        xs = [-10.0, -16.0, -30.0, -60.0, -150.0] if dtype == np.float64 else [-10.0, -16.0, -30.0]
        x = np.array(xs + [-v for v in xs], dtype)
        t = np.array([0.0] * len(xs) + [1.0] * len(xs), dtype)
        for fn, kw in [(ftf.sigmoid_focal_loss, dict(gamma=0.25)),
                       (ftf.sigmoid_focal_loss_star, dict(gamma=0.25, beta=0.0))]:
            graph = tf.function(lambda a, b: fn(a, b, reduction="none", **kw))
            # (the whole batch, and one element alone: XLA folded differently there)
            for part in [slice(None), slice(len(xs) - 1, len(xs))]:
                got = graph(tf.constant(x[part]), tf.constant(t[part])).numpy()
                want = getattr(ref, fn.__name__)(x[part].astype(np.float64),
                                                 t[part].astype(np.float64), reduction="none",
                                                 **kw)
                assert (want > 0).all()
                _close(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)

    def test_no_gradient_is_computed_without_a_tape(self, monkeypatch):
        seen = []
        real = _spec.run_sigmoid_focal_loss

        def spy(*args, need_grad, **kw):
            seen.append(need_grad)
            return real(*args, need_grad=need_grad, **kw)
        monkeypatch.setattr(_spec, "run_sigmoid_focal_loss", spy)
        x, t, _ = _data(12)
        ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t))
        _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t))
        assert seen == [False, True]

    def test_second_derivatives_raise(self):
        x, t, _ = _data(13)
        xv, tv = tf.constant(x), tf.constant(t * 0.5 + 0.25)
        with tf.GradientTape() as outer:
            outer.watch(xv)
            with tf.GradientTape() as inner:
                inner.watch(xv)
                loss = ftf.sigmoid_focal_loss(xv, tv)
            with pytest.raises(NotImplementedError, match="differentiable once"):
                inner.gradient(loss, xv)

    @pytest.mark.parametrize("variant", ["sigmoid_focal_loss", "asymmetric_loss",
                                         "quality_focal_loss"])
    def test_a_zero_weights_gradient_is_its_elements_loss_in_a_graph(self, variant):
        """d sum(w * loss) / dw is each element's loss, also where w is 0: in a graph a
        select for left-out elements gave 0."""
        x = tf.constant([0.5, -1.0, 2.0, 3.0], tf.float64)
        y = tf.constant([1.0, 0.0, 0.0, 0.5], tf.float64)
        w = tf.constant([1.0, 0.0, 0.0, 2.0], tf.float64)
        fn = getattr(ftf, variant)
        want = fn(x, y, reduction="none").numpy()

        def grad(w):
            with tf.GradientTape() as tape:
                tape.watch(w)
                loss = fn(x, y, weight=w, reduction="sum")
            return tape.gradient(loss, w)
        for g in (grad, tf.function(grad), tf.function(grad, jit_compile=True)):
            np.testing.assert_allclose(g(w).numpy(), want, rtol=1e-12)

    def test_a_function_taking_a_gradient_saves_and_loads(self, tmp_path):
        """tf.saved_model.save traces the custom gradients of what it saves, the one that
        refuses a second derivative included (it raised there); the loaded function's
        gradient is the eager one."""
        x, t, _ = _data(19, shape=(6, 4))

        class Train(tf.Module):
            def __init__(self):
                self.w = tf.Variable(np.eye(4, dtype=np.float32))

            @tf.function(input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None, 4])])
            def grad(self, a, b):
                with tf.GradientTape() as tape:
                    loss = ftf.sigmoid_focal_loss(a @ self.w, b)
                return tape.gradient(loss, self.w)

        module = Train()
        want = module.grad(tf.constant(x), tf.constant(t)).numpy()
        tf.saved_model.save(module, str(tmp_path))
        loaded = tf.saved_model.load(str(tmp_path))  # (held: it owns the variable)
        got = loaded.grad(tf.constant(x), tf.constant(t))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)

    @pytest.mark.parametrize("mode", ["tf.function", "jit_compile", "tf.gradients"])
    @pytest.mark.parametrize("variant", ["sigmoid", "softmax", "asymmetric", "soft targets"])
    def test_second_derivatives_raise_in_a_graph_too(self, mode, variant):
        """Nested tapes in a tf.function gave None and tf.gradients of tf.gradients a
        curvature missing terms (the sigmoid loss: 2.6e-3 off finite differences), both
        silently; the first derivative (with a persistent tape as well) is unchanged."""
        x, t, y = _data(17, shape=(4, 3), dtype=np.float64)
        t_soft = tf.constant(t * 0.5 + 0.25)
        calls = {
            "sigmoid": lambda a, tt: ftf.sigmoid_focal_loss(a, tf.constant(t), gamma=2.0),
            "softmax": lambda a, tt: ftf.softmax_focal_loss(a, tf.constant(y), gamma=2.0,
                                                            axis=-1),
            "asymmetric": lambda a, tt: ftf.asymmetric_loss(a, tf.constant(t)),
            # (a watched target gets the autodiff of the formula: its gradient too)
            "soft targets": lambda a, tt: ftf.sigmoid_focal_loss(a, tt, gamma=0.5)}
        f = calls[variant]

        def second(a, tt):
            if mode == "tf.gradients":
                g = tf.gradients(f(a, tt), a)[0]
                return tf.gradients(tf.reduce_sum(g * g), a)[0]
            with tf.GradientTape() as outer:
                outer.watch([a, tt])
                with tf.GradientTape() as inner:
                    inner.watch([a, tt])
                    loss = f(a, tt)
                g = inner.gradient(loss, [a, tt])
                s = tf.reduce_sum(g[0] * g[0])
            return outer.gradient(s, a)

        def first(a, tt):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch([a, tt])
                loss = f(a, tt)
            return tape.gradient(loss, [a, tt])

        jit = mode == "jit_compile"
        with pytest.raises(NotImplementedError, match="differentiable once"):
            tf.function(second, jit_compile=jit)(tf.constant(x), t_soft)
        got = tf.function(first, jit_compile=jit)(tf.constant(x), t_soft)
        want = first(tf.constant(x), t_soft)
        for g, w in zip(got, want):
            assert (g is None) == (w is None)
            if w is not None:
                np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-9, atol=1e-15)

    def test_variables_as_logits_and_hyperparameters(self):
        x, t, y = _data(14)
        v = tf.Variable(x)
        w = tf.Variable([1.0, 2.0, 0.5, 1.0, 1.5])
        with tf.GradientTape() as tape:
            loss = ftf.softmax_focal_loss(v, tf.constant(y), weight=w)
        grad = tape.gradient(loss, v)
        want, want_g = ref.softmax_focal_loss_and_grad(x, y, weight=w.numpy())
        _close(loss, want, rtol=2e-6)
        _close(grad, want_g, rtol=2e-5, atol=1e-8)

    def test_keras_variables_as_logits_weight_and_bias(self):
        """Keras 3's variables (a Dense layer's kernel and bias, add_weight's) are not
        tf.Variables: every loss and the top-level dispatch take them, and their gradients
        reach them."""
        keras = pytest.importorskip("keras")
        if keras.backend.backend() != "tensorflow":
            pytest.skip("Keras runs on another backend here")
        x, t, y = _data(16)
        v = keras.Variable(x)
        with tf.GradientTape() as tape:
            loss = focalx.softmax_focal_loss(v, tf.constant(y))
        want, want_g = ref.softmax_focal_loss_and_grad(x, y)
        _close(loss, want, rtol=2e-6)
        _close(tape.gradient(loss, v), want_g, rtol=2e-5, atol=1e-8)
        with tf.GradientTape() as tape:
            loss = ftf.sigmoid_focal_loss(v, tf.constant(t))
        want, want_g = ref.sigmoid_focal_loss_and_grad(x, t)
        _close(loss, want, rtol=2e-6)
        _close(tape.gradient(loss, v), want_g, rtol=2e-5, atol=1e-8)

        rng = np.random.default_rng(16)
        h, w, b = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)), rng.normal(size=5)
        yl = rng.integers(0, 5, 7)
        kw, kb = keras.Variable(w), keras.Variable(b)
        with tf.GradientTape() as tape:
            loss = focalx.linear_softmax_focal_loss(tf.constant(h), kw, tf.constant(yl),
                                                    linear_bias=kb, chunk_size=3)
        gw, gb = tape.gradient(loss, [kw, kb])
        want, g = ref.softmax_focal_loss_and_grad(h @ w.T + b, yl)
        _close(loss, want, rtol=1e-12)
        _close(gw, g.T @ h, rtol=1e-10, atol=1e-12)
        _close(gb, g.sum(0), rtol=1e-10, atol=1e-12)
        with pytest.raises(TypeError, match="logits must have a floating dtype"):
            ftf.softmax_focal_loss(keras.Variable(np.zeros((2, 3), np.int32)), tf.constant([0, 1]))


class TestDispatch:
    def test_top_level_functions_take_tf_tensors_and_variables(self):
        x, t, y = _data(15)
        out = focalx.softmax_focal_loss(tf.constant(x), tf.constant(y))
        assert isinstance(out, tf.Tensor)
        _close(out, ftf.softmax_focal_loss(tf.constant(x), tf.constant(y)), rtol=0)
        out = focalx.sigmoid_focal_loss(tf.Variable(x), tf.constant(t))
        _close(out, ref.sigmoid_focal_loss(x, t), rtol=2e-6)
        with pytest.raises(TypeError, match="targets"):
            focalx.sigmoid_focal_loss(tf.constant(x), [[1.0] * 5] * 16)
        graph = tf.function(lambda a, b: focalx.softmax_focal_loss(a, b))
        _close(graph(tf.constant(x), tf.constant(y)), ref.softmax_focal_loss(x, y), rtol=2e-6)

    def test_focalx_tensorflow_is_the_backend_module(self):
        import focalx.backends.tensorflow as b
        assert ftf.sigmoid_focal_loss is b.sigmoid_focal_loss
        assert ftf.__name__ == "focalx.tensorflow"


def test_the_optimization_barrier_is_set_only_inside_the_compiled_function():
    # (fork is set per instance, inside the compiled function)
    from focalx.backends.tensorflow.ops import TensorflowOps
    assert TensorflowOps(compiled=True).fork is not None
    assert TensorflowOps().fork is None


MIRRORED = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import focalx.tensorflow as ftf
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype(np.float32) * 3
    t = (rng.random((64, 10)) < 0.1).astype(np.float32)

    def single(x, t):  # RetinaNet normalisation: the sum over the positives
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = ftf.sigmoid_focal_loss(x, t, reduction="sum",
                                          normalizer=tf.maximum(tf.reduce_sum(t), 1.0))
        return loss, tape.gradient(loss, x)
    want, want_g = single(x, t)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    ds = tf.data.Dataset.from_tensor_slices((x, t)).batch(64)
    dist = strategy.experimental_distribute_dataset(ds)

    @tf.function
    def step(batch):
        def replica(xb, tb):
            ctx = tf.distribute.get_replica_context()
            num_pos = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(tb))
            with tf.GradientTape() as tape:
                tape.watch(xb)
                loss = ftf.sigmoid_focal_loss(xb, tb, reduction="sum",
                                              normalizer=tf.maximum(num_pos, 1.0))
            return loss, tape.gradient(loss, xb)
        losses, grads = strategy.run(replica, args=batch)
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
        return total, strategy.experimental_local_results(grads)
    got, grads = step(next(iter(dist)))
    assert len(grads) == 2 and grads[0].shape == (32, 10)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in grads]), want_g.numpy(),
                               rtol=1e-5, atol=1e-9)
    print("ok", float(got), float(want))
""")


def test_mirrored_strategy_over_two_devices_matches_one_device():
    proc = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok")


class TestCompiledPath:
    """The XLA-compiled computation (see EAGER_XLA_MIN_SIZE): same numbers, same errors."""

    @staticmethod
    def _large(seed=20):
        n = 256  # 256 x 256 logits: above EAGER_XLA_MIN_SIZE
        return _data(seed, shape=(n, 256))

    @staticmethod
    def _no_op_by_op(monkeypatch):

        def fail(*args, **kw):
            raise AssertionError("the op-by-op path ran")
        monkeypatch.setattr(tf_ops, "_run", fail)

    def test_large_eager_inputs_take_the_compiled_path_with_reference_numbers(
            self, monkeypatch):
        x, t, y = self._large()
        assert x.size >= tf_xla.EAGER_XLA_MIN_SIZE
        self._no_op_by_op(monkeypatch)
        for variant, targets, kw in [
            ("sigmoid_focal_loss", t, dict(gamma=2.0, alpha=0.25)),
            ("sigmoid_focal_loss", t, dict(gamma=0.5, pos_weight=tf.constant(2.0),
                                           label_smoothing=0.1, reduction="sum")),
            ("sigmoid_focal_loss_star", t, dict(gamma=2.0, beta=1.0)),
            ("softmax_focal_loss", y, dict(gamma=2.0, alpha=[0.5] * 256)),
        ]:
            fn = getattr(ftf, variant)
            loss, grad = _loss_and_grad(fn, x, tf.constant(targets), **kw)
            kw = {k: (v.numpy() if isinstance(v, tf.Tensor) else v) for k, v in kw.items()}
            want, want_g = _reference(variant, x, targets, **kw)
            _close(loss, want, rtol=2e-5)
            _close(grad, want_g, rtol=2e-5, atol=1e-6 * np.abs(want_g).max())
            _close(fn(tf.constant(x), tf.constant(targets), **kw), want, rtol=2e-5)

    def test_compiled_and_op_by_op_paths_agree(self, monkeypatch):
        x, t, _ = self._large(21)
        compiled = _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t), reduction="none")
        monkeypatch.setattr(tf_xla, "USE_XLA", False)
        plain = _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t), reduction="none")
        for got, want in zip(compiled, plain):
            _close(got, want, rtol=1e-5, atol=1e-30)

    def test_bad_values_through_the_compiled_path_raise_the_same_value_error(self):
        x, t, y = self._large(22)
        want = "targets must be class indices"
        with pytest.raises(ValueError, match=want):
            ftf.softmax_focal_loss(tf.constant(x), tf.constant(y + 256))
        with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
            _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t * 2))
        with pytest.raises(ValueError, match="normalizer must be finite and > 0"):
            ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t), normalizer=tf.constant(0.0))
        # and a good call with the same configuration still works afterwards
        _close(ftf.softmax_focal_loss(tf.constant(x), tf.constant(y)),
               ref.softmax_focal_loss(x, y), rtol=2e-5)

    def test_checks_folded_into_the_loss_sum_still_make_loss_and_whole_gradient_nan(
            self, monkeypatch):
        # Checks on arrays of the summed loss's shape are folded into the sum under XLA
        # (checked_sum); a failed one must still poison the whole gradient, with static
        # and with unknown batch sizes, and a plain graph must still raise.
        monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
        self._no_op_by_op(monkeypatch)
        x, t, y = _data(28, shape=(6, 5), dtype=np.float64)
        probs = 1 / (1 + np.exp(-x))
        cases = [  # (fn, logits, good targets, bad logits, bad targets, kw)
            (ftf.sigmoid_focal_loss, x, t, x, t * 2, {}),
            (ftf.sigmoid_focal_loss, probs, t, probs + 1, t, dict(from_logits=False)),
            (ftf.softmax_focal_loss, x, y, x, y + 5, {}),
        ]
        for fn, logits, good, bad_logits, bad, kw in cases:
            for signature in (None, [tf.TensorSpec([None, 5], tf.float64),
                                     tf.TensorSpec([None] + list(good.shape[1:]),
                                                   tf.as_dtype(good.dtype))]):
                @tf.function(jit_compile=True, input_signature=signature)
                def step(a, c, fn=fn, kw=kw):
                    with tf.GradientTape() as tape:
                        tape.watch(a)
                        loss = fn(a, c, **kw)
                    return loss, tape.gradient(loss, a)
                loss, grad = step(tf.constant(logits), tf.constant(good))
                variant = fn.__name__
                want, want_g = _reference(variant, logits, good, **kw)
                _close(loss, want, rtol=1e-12)
                _close(grad, want_g, rtol=1e-12, atol=1e-15)
                loss, grad = step(tf.constant(bad_logits), tf.constant(bad))
                assert np.isnan(loss.numpy()) and np.isnan(grad.numpy()).all(), (fn, kw)
        # the bad elementwise weight

        @tf.function(jit_compile=True)
        def weighted(a, c, w):
            with tf.GradientTape() as tape:
                tape.watch(a)
                loss = ftf.sigmoid_focal_loss(a, c, weight=w)
            return loss, tape.gradient(loss, a)
        loss, grad = weighted(tf.constant(x), tf.constant(t), tf.constant(-np.ones_like(t)))
        assert np.isnan(loss.numpy()) and np.isnan(grad.numpy()).all()
        # folded: every sigmoid check on the targets or the logits, and the softmax's
        # index check where sizes are static (an unknown batch size leaves the per-sample
        # check unfolded: only what is made from the logits is known to match the loss)
        checked = [(k, e) for k, e in tf_xla._cache.items() if e.messages]
        assert len(checked) == 7
        for (config, shapes), e in checked:
            static = all(s is not None and None not in s for s, _ in shapes)
            assert bool(e.folded) == (config[0] is _spec.run_sigmoid_focal_loss or static), \
                (config, shapes)
        # outside XLA the folded checks still raise, naming the argument
        graph = tf.function(lambda a, c: ftf.sigmoid_focal_loss(a, c))
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"targets must lie in"):
            graph(tf.constant(x), tf.constant(t * 2))

    def test_class_vectors_of_unknown_length_are_not_folded_into_a_per_sample_loss(self):
        # a [None] alpha and a [None] per-sample loss have equal static shapes, but not
        # equal run-time shapes (C against N): folding broadcast one into the other
        sig = [tf.TensorSpec([None, 5], tf.float32), tf.TensorSpec([None], tf.int64),
               tf.TensorSpec([None], tf.float32)]
        graph = tf.function(lambda a, c, al: ftf.softmax_focal_loss(a, c, alpha=al,
                                                                     reduction="sum"),
                            input_signature=sig)
        for n in (1, 2, 3):
            x, _, y = _data(30 + n, shape=(n, 5))
            alpha = np.array([0.1, 0.2, 0.3, 0.2, 0.2], np.float32)
            want = ref.softmax_focal_loss(x, y, alpha=alpha, reduction="sum")
            _close(graph(tf.constant(x), tf.constant(y), tf.constant(alpha)), want, rtol=2e-6)

    def test_nan_logits(self):
        # In a graph (every graph takes the compiled path) a NaN loss reads as a failed
        # check: the whole gradient is NaN. Eagerly on the CPU the checks are read in
        # Python, and the gradient is NaN only where the logit is.
        x, t, _ = self._large(29)
        x[3, 4] = np.nan

        @tf.function(jit_compile=True)
        def step(a, c):
            with tf.GradientTape() as tape:
                tape.watch(a)
                loss = ftf.sigmoid_focal_loss(a, c)
            return loss, tape.gradient(loss, a)
        loss, grad = step(tf.constant(x), tf.constant(t))
        assert np.isnan(loss.numpy()) and np.isnan(grad.numpy()).all()
        loss, grad = _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t))
        grad = grad.numpy()
        assert np.isnan(loss.numpy()) and np.isnan(grad[3, 4])
        assert np.isfinite(np.delete(grad.ravel(), 3 * 256 + 4)).all()

    def test_small_eager_inputs_and_numpy_hyperparameters_take_the_op_by_op_path(
            self, monkeypatch):
        monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
        x, t, _ = _data(23)
        ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t))
        xl, tl, _ = self._large(23)
        got = ftf.sigmoid_focal_loss(tf.constant(xl), tf.constant(tl),
                                     alpha=np.full(256, 0.25, np.float32))
        assert len(tf_xla._cache) == 0
        _close(got, ref.sigmoid_focal_loss(xl, tl), rtol=2e-5)

    def test_the_cache_is_bounded(self, monkeypatch):
        monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
        monkeypatch.setattr(tf_xla, "CACHE_SIZE", 3)
        x, t, _ = _data(24)
        for gamma in (0.5, 1.0, 1.5, 2.0, 2.5):  # graphs always take the compiled path
            tf.function(lambda a, c: ftf.sigmoid_focal_loss(a, c, gamma=gamma)) \
                .get_concrete_function(tf.constant(x), tf.constant(t))
        assert len(tf_xla._cache) == 3
        assert [k[0][2][0] for k in tf_xla._cache] == [("gamma", (float, g))
                                                  for g in (1.5, 2.0, 2.5)]

    def test_a_per_step_normalizer_and_numpy_scalars_reuse_one_compiled_function(
            self, monkeypatch):
        monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
        x, t, _ = self._large(26)
        self._no_op_by_op(monkeypatch)
        for norm in (np.float64(5.0), 6, 7.5, np.array(9.0)):
            got = ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t), reduction="sum",
                                         gamma=np.float64(2.0), normalizer=norm)
            _close(got, ref.sigmoid_focal_loss(x, t, reduction="sum", normalizer=float(norm)),
                   rtol=2e-5)
        assert len(tf_xla._cache) == 1

    def test_eager_calls_with_many_shapes_stop_compiling(self, monkeypatch):
        monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
        monkeypatch.setattr(tf_xla, "_eager_shapes", {})
        monkeypatch.setattr(tf_xla, "EAGER_MAX_SHAPES", 2)
        x, t, _ = _data(27, shape=(300, 256))  # every row count above EAGER_XLA_MIN_SIZE
        for rows in (300, 299, 298, 297):
            got = ftf.sigmoid_focal_loss(tf.constant(x[:rows]), tf.constant(t[:rows]))
            _close(got, ref.sigmoid_focal_loss(x[:rows], t[:rows]), rtol=2e-5)
        assert len(tf_xla._cache) == 2

    def test_gradient_asked_for_outside_the_graph_or_by_tf_gradients(self):
        x, t, y = _data(25)
        want, want_g = _reference("sigmoid_focal_loss", x, t)
        graph = tf.function(lambda a, c: ftf.sigmoid_focal_loss(a, c))
        xv = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xv)
            loss = graph(xv, tf.constant(t))
        _close(loss, want, rtol=2e-6)
        _close(tape.gradient(loss, xv), want_g, rtol=2e-5, atol=1e-9)

        @tf.function
        def symbolic(a, c):
            loss = ftf.softmax_focal_loss(a, c)
            return loss, tf.gradients(loss, a)[0]
        loss, grad = symbolic(xv, tf.constant(y))
        want, want_g = _reference("softmax_focal_loss", x, y)
        _close(loss, want, rtol=2e-6)
        _close(grad, want_g, rtol=2e-5, atol=1e-9)


def test_compiled_path_settings_are_set_on_the_backend_module(monkeypatch):
    """USE_XLA and the cache sizes, documented on focalx.backends.tensorflow, still reach the
    compiled path (tensorflow.xla) that reads them."""
    import focalx.backends.tensorflow as b
    for name in ("USE_XLA", "EAGER_XLA_MIN_SIZE", "CACHE_SIZE", "EAGER_MAX_SHAPES"):
        monkeypatch.setattr(b, name, getattr(tf_xla, name))  # (restored after the test)
    b.USE_XLA, b.CACHE_SIZE = False, 7
    assert tf_xla.USE_XLA is False and tf_xla.CACHE_SIZE == 7 and b.USE_XLA is False
    x = tf.constant(np.linspace(-3, 3, 1 << 17).reshape(256, -1), tf.float32)
    before = len(tf_xla._cache)
    ftf.sigmoid_focal_loss(x, tf.zeros_like(x))
    assert len(tf_xla._cache) == before  # op by op: nothing compiled


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_gfl_golden_case_in_a_tf_function(dtype):
    """QFL (both layouts), VFL and DFL in a tf.function graph: every golden case."""
    harness = _harness.create("tensorflow")
    cases = runner.load_golden()["cases"]
    failures = []
    for variant in ("quality_focal_loss", "varifocal_loss", "distribution_focal_loss"):
        base = getattr(ftf, variant)

        def in_graph(x, y, base=base, **kw):
            return tf.function(lambda a, b: base(a, b, **kw))(x, y)
        results = runner.run_cases(harness, runner.select(cases, variant=variant), "cpu",
                                   dtype, fn=in_graph)
        assert results
        failures += [f"{r['id']}: {r.get('detail')}" for r in results if r["status"] != "passed"]
    assert not failures, "\n".join(failures)
class TestBackgroundCompile:
    """Eagerly, a configuration's first calls run op by op while its XLA function compiles
    in a background thread (BACKGROUND_COMPILE, the default), then the compiled path runs;
    the compiled function is never recorded by the caller's tape."""

    @pytest.fixture(autouse=True)
    def _fresh(self, monkeypatch):
        assert tf_xla.BACKGROUND_COMPILE is True  # the default (no fixture changed it)
        monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
        monkeypatch.setattr(tf_xla, "_eager_shapes", {})
        monkeypatch.setattr(tf_xla, "_failed", set())
        runs = []
        op_by_op = tf_ops._run
        monkeypatch.setattr(tf_ops, "_run", lambda *a, **k: runs.append(1) or op_by_op(*a, **k))
        self.op_by_op_runs = runs

    def test_the_first_call_runs_op_by_op_then_the_compiled_function_with_the_same_numbers(self):
        x, t, _ = _data(30, shape=(300, 256))
        assert x.size >= tf_xla.EAGER_XLA_MIN_SIZE
        want, want_g = _reference("sigmoid_focal_loss", x, t, gamma=1.5, alpha=0.3)
        loss, grad = _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t), gamma=1.5,
                                    alpha=0.3)
        assert self.op_by_op_runs, "the first call should not wait for a compilation"
        _close(loss, want, rtol=2e-5)
        _close(grad, want_g, rtol=2e-5, atol=1e-6 * np.abs(want_g).max())
        assert ftf.wait_for_compiles(timeout=300)
        assert len(tf_xla._cache) == 1 and not tf_xla._pending
        del self.op_by_op_runs[:]
        loss, grad = _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t), gamma=1.5,
                                    alpha=0.3)
        assert not self.op_by_op_runs
        _close(loss, want, rtol=2e-5)
        _close(grad, want_g, rtol=2e-5, atol=1e-6 * np.abs(want_g).max())

    def test_the_compiled_function_runs_unrecorded_under_the_callers_tape(self, monkeypatch):
        # (a recorded call runs, and first compiles, the function's forward half of its
        # own autodiff, which outputs every intermediate of the spec)
        from tensorflow.python.eager import record
        x, t, _ = _data(31, shape=(300, 256))
        _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t))
        assert ftf.wait_for_compiles(timeout=300)
        (entry,) = tf_xla._cache.values()
        seen = []
        function = entry.function

        def spy(*args):
            seen.append(record.could_possibly_record())
            return function(*args)
        monkeypatch.setattr(entry, "function", spy)
        want = _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t))
        assert seen == [False]
        monkeypatch.setattr(tf_xla, "USE_XLA", False)
        got = _loss_and_grad(ftf.sigmoid_focal_loss, x, tf.constant(t))
        _close(want[1], got[1], rtol=2e-5, atol=1e-9)

    def test_a_configuration_that_fails_to_compile_runs_op_by_op_and_is_not_retried(
            self, monkeypatch):
        built = []

        class Failing:
            def __init__(self, *args):
                built.append(1)
                raise RuntimeError("no XLA here")
        monkeypatch.setattr(tf_xla, "_Compiled", Failing)
        x, t, _ = _data(32, shape=(300, 256))
        want = _reference("sigmoid_focal_loss", x, t)[0]
        for _ in range(3):
            _close(ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t)), want, rtol=2e-5)
            assert ftf.wait_for_compiles(timeout=300)
        assert built == [1] and len(self.op_by_op_runs) == 3 and not tf_xla._cache

    def test_graphs_compile_in_their_own_trace(self):
        x, t, _ = _data(33, shape=(300, 256))
        loss = tf.function(lambda a, b: ftf.sigmoid_focal_loss(a, b, gamma=2.0))(
            tf.constant(x), tf.constant(t))
        assert len(tf_xla._cache) == 1 and not tf_xla._pending and not self.op_by_op_runs
        _close(loss, _reference("sigmoid_focal_loss", x, t, gamma=2.0)[0], rtol=2e-5)


EXIT_WHILE_COMPILING = textwrap.dedent("""
    import tensorflow as tf
    import focalx.tensorflow as ftf
    from focalx.backends.tensorflow import xla
    x = tf.random.normal((512, 1024))
    t = tf.cast(tf.random.uniform((512, 1024)) < 0.1, tf.float32)
    for axis in (-1, 0):  # two configurations queued: one compiling, one waiting
        ftf.softmax_focal_loss(x, tf.zeros(x.shape[:1] if axis == -1 else x.shape[1:],
                                           tf.int32), axis=axis)
    assert xla._pending, "nothing was compiling at exit"
    print("exiting")
""")


def test_interpreter_exit_while_a_function_compiles_is_clean():
    proc = subprocess.run([sys.executable, "-c", EXIT_WHILE_COMPILING], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "exiting" and "terminate" not in proc.stderr


class TestGammaSchedule:
    """A gamma schedule changing gamma every step: as a tf.Variable (assigned each step) or
    a tensor argument, gamma is a run-time input of the user's tf.function (one trace) and
    of focalx's XLA cache (one compiled function); a Python float is part of both keys."""

    def _data(self, seed=0, shape=(32, 6)):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=shape) * 3
        return x, (rng.random(shape) < 0.3).astype(np.float64), rng.integers(0, shape[1],
                                                                              shape[0])

    @pytest.mark.parametrize("jit_compile", [False, True])
    @pytest.mark.parametrize("variant", ["sigmoid_focal_loss", "softmax_focal_loss"])
    def test_a_variable_gamma_traces_once(self, variant, jit_compile):
        x, t, y = self._data(1)
        target = t if variant == "sigmoid_focal_loss" else y
        gamma = tf.Variable(0.0, dtype=tf.float64)

        @tf.function(jit_compile=jit_compile)
        def step(x, t):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = getattr(ftf, variant)(x, t, gamma=gamma)
            return loss, tape.gradient(loss, x)
        sched = focalx.gamma_schedule("linear", start=0.0, end=2.0, steps=10)
        for i in range(12):
            gamma.assign(sched(i))
            loss, grad = step(tf.constant(x), tf.constant(target))
            want, want_g = getattr(ref, variant + "_and_grad")(x, target, gamma=sched(i))
            np.testing.assert_allclose(loss.numpy(), want, rtol=1e-12)
            np.testing.assert_allclose(grad.numpy(), want_g, rtol=1e-12, atol=1e-300)
        assert step.experimental_get_tracing_count() == 1

    def test_a_tensor_argument_gamma_traces_once_and_a_float_per_value(self):
        x, t, _ = self._data(2)

        @tf.function
        def step(x, t, gamma):
            return ftf.sigmoid_focal_loss(x, t, gamma=gamma)
        sched = focalx.gamma_schedule("step", boundaries=[2, 4, 6], values=[0.0, 0.5, 1.0, 2.0])
        for i in range(8):
            step(tf.constant(x), tf.constant(t), tf.constant(sched(i), tf.float64))
        assert step.experimental_get_tracing_count() == 1
        for i in range(8):  # the contrast: a Python float is part of the trace's key
            step(tf.constant(x), tf.constant(t), sched(i))
        assert step.experimental_get_tracing_count() == 1 + 4

    def test_the_xla_cache_compiles_one_function_for_a_tensor_gamma(self, monkeypatch):
        monkeypatch.setattr(tf_xla, "EAGER_XLA_MIN_SIZE", 0)  # eager calls compiled
        monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
        x, t, _ = self._data(3)
        sched = focalx.gamma_schedule("linear", start=0.0, end=2.0, steps=10)
        for i in range(12):
            xv = tf.constant(x)
            with tf.GradientTape() as tape:
                tape.watch(xv)
                loss = ftf.sigmoid_focal_loss(xv, tf.constant(t),
                                              gamma=tf.constant(sched(i), tf.float64))
            grad = tape.gradient(loss, xv)
            want, want_g = ref.sigmoid_focal_loss_and_grad(x, t, gamma=sched(i))
            np.testing.assert_allclose(loss.numpy(), want, rtol=1e-12)
            np.testing.assert_allclose(grad.numpy(), want_g, rtol=1e-12, atol=1e-300)
        assert len(tf_xla._cache) == 1
        for i in range(12):  # the contrast: a Python float gamma is part of the key
            ftf.sigmoid_focal_loss(tf.constant(x), tf.constant(t), gamma=sched(i))
        assert len(tf_xla._cache) == 1 + 11  # (sched(10) == sched(11) == 2.0)


# ---- the fused linear + softmax focal loss (issue 19) ------------------------------------

def test_linear_in_a_tf_function_with_a_variable_weight_is_the_materialised_loss():
    """A Keras-style variable kernel (V, H) gets its gradient through the read outside the
    custom gradient; inside tf.function the numbers are the eager reference's."""
    rng = np.random.default_rng(0)
    h, w, b = rng.normal(size=(9, 3)), rng.normal(size=(6, 3)), rng.normal(size=6)
    y = rng.integers(0, 6, 9)
    y[2] = -100
    W = tf.Variable(w)
    hb = [tf.constant(h), tf.constant(b)]

    @tf.function(autograph=False)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(hb)
            loss = ftf.linear_softmax_focal_loss(hb[0], W, tf.constant(y), linear_bias=hb[1],
                                                 chunk_size=4)
        return loss, tape.gradient(loss, [hb[0], W, hb[1]])
    loss, grads = step()
    want, g = ref.softmax_focal_loss_and_grad(h @ w.T + b, y)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    for a, e in zip(grads, (g @ w, g.T @ h, g.sum(0))):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


def _linear_loss_and_grads(y, **kw):
    """step(h, w, b): the linear loss of targets y (kw its arguments) and its gradients
    w.r.t. h, w and the bias b, under a GradientTape."""
    def step(h, w, b):
        with tf.GradientTape() as tape:
            tape.watch([h, w, b])
            loss = ftf.linear_softmax_focal_loss(h, w, tf.constant(y), linear_bias=b, **kw)
        return loss, tape.gradient(loss, [h, w, b])
    return step


def _assert_linear_loss(loss, grads, h, w, b, y, c, *, rtol, grad_rtol, **kw):
    """loss and (d hidden, d weight, d bias) are the float64 reference's of the
    materialised logits h @ w.T + b (for "none": of sum(c * loss))."""
    want, g = ref.softmax_focal_loss_and_grad(h @ w.T + b, y, **kw)
    if kw.get("reduction") == "none":
        g = g * c[:, None]
    np.testing.assert_allclose(loss, want, rtol=rtol, atol=1e-15)
    for a, e in zip(grads, (g @ w, g.T @ h, g.sum(0))):
        np.testing.assert_allclose(a, e, rtol=grad_rtol, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_eager_blocks_run_compiled_with_the_materialised_numbers(monkeypatch,
                                                                        reduction):
    """Eagerly, a large block's loss and logit gradient come from the compiled cache (as
    the other losses' large eager calls): a mean over kept rows (a Divide scale), a sum,
    per-row incoming gradients ("none"), a per-class gamma; the numbers are the
    materialised logits', and a bad target still raises the op-by-op path's error."""
    monkeypatch.setattr(tf_xla, "_cache", type(tf_xla._cache)())
    monkeypatch.setattr(tf_xla, "_eager_shapes", {})
    rng = np.random.default_rng(11)
    n, hdim, v = 40, 8, 2048  # blocks of 32 rows: 32 x 2048 logits take the compiled path
    assert 32 * v >= tf_xla.EAGER_XLA_MIN_SIZE > 8 * v
    h, w, b = rng.normal(size=(n, hdim)), rng.normal(size=(v, hdim)), rng.normal(size=v)
    y = rng.integers(0, v, n)
    y[[3, 17]] = -100
    gamma = rng.uniform(0.0, 3.0, v)
    c = rng.normal(size=n)
    hw = [tf.constant(h), tf.constant(w), tf.constant(b)]
    kw = dict(gamma=gamma, label_smoothing=0.05, reduction=reduction)
    with tf.GradientTape() as tape:
        tape.watch(hw)
        loss = ftf.linear_softmax_focal_loss(hw[0], hw[1], tf.constant(y), linear_bias=hw[2],
                                             chunk_size=32, **kw)
        total = tf.reduce_sum(loss * c) if reduction == "none" else loss
    grads = tape.gradient(total, hw)
    assert any(key[0][0] is tf_xla._linear_block for key in tf_xla._cache)
    _assert_linear_loss(loss, grads, h, w, b, y, c, rtol=1e-11, grad_rtol=1e-9, **kw)
    y[5] = v
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="target"):
        ftf.linear_softmax_focal_loss(hw[0], hw[1], tf.constant(y), linear_bias=hw[2],
                                      chunk_size=32, **kw)


@pytest.mark.parametrize("ignore_index", [-100, None])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_linear_with_rows_unknown_until_run_time_runs_padded_blocks(jit, reduction,
                                                                    ignore_index):
    """A tf.function traced with a None batch (as Keras's fit retraces for a last, smaller
    batch): the rows are padded to whole blocks in the graph's loop, the padding weighted
    0; the loss and gradients of the materialised logits for several batch sizes through
    one trace, and no one-block fallback (its warning)."""
    rng = np.random.default_rng(7)
    w, b = rng.normal(size=(6, 3)), rng.normal(size=6)
    W, B = tf.constant(w), tf.constant(b)

    @tf.function(jit_compile=jit, autograph=False, input_signature=[
        tf.TensorSpec([None, 3], tf.float64), tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None], tf.float64)])
    def step(h, y, c):
        with tf.GradientTape() as tape:
            tape.watch([h, W, B])
            loss = ftf.linear_softmax_focal_loss(h, W, y, linear_bias=B, chunk_size=2,
                                                 reduction=reduction, alpha=0.25,
                                                 ignore_index=ignore_index)
            total = tf.reduce_sum(loss * c) if reduction == "none" else loss
        return loss, tape.gradient(total, [h, W, B])

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        graph = step.get_concrete_function().graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function
                                         for n in f.node_def}
    assert ops & {"While", "StatelessWhile"}
    for n in (9, 4, 1, 0):
        h, y, c = rng.normal(size=(n, 3)), rng.integers(0, 6, n), rng.normal(size=n)
        if n and ignore_index is not None:
            y[-1] = ignore_index
        loss, grads = step(tf.constant(h), tf.constant(y), tf.constant(c))
        kw = dict(reduction=reduction, alpha=0.25, ignore_index=ignore_index)
        _assert_linear_loss(loss, grads, h, w, b, y, c, rtol=1e-12, grad_rtol=1e-10, **kw)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_linear_padding_and_ignored_rows_stay_finite_beside_a_masked_class(jit):
    """A class masked with a -inf bias (class 0, the padding rows' and the ignored rows'
    stand-in target): padded and ignored rows add exactly 0, so a None batch gives the
    static batch's finite numbers (0 * inf was NaN)."""
    rng = np.random.default_rng(8)
    h, w, b = rng.normal(size=(5, 3)), rng.normal(size=(6, 3)), rng.normal(size=6)
    b[0] = -np.inf
    y = rng.integers(1, 6, 5)
    y[2] = -100
    W, B = tf.constant(w), tf.constant(b)
    results = []
    for spec in ([5, 3], [None, 3]):
        @tf.function(jit_compile=jit, autograph=False, input_signature=[
            tf.TensorSpec(spec, tf.float64), tf.TensorSpec(spec[:1], tf.int64)])
        def step(h, y):
            with tf.GradientTape() as tape:
                tape.watch([h, W, B])
                loss = ftf.linear_softmax_focal_loss(h, W, y, linear_bias=B, chunk_size=2)
            return [loss] + tape.gradient(loss, [h, W, B])
        results.append(step(tf.constant(h), tf.constant(y)))
    want, g = ref.softmax_focal_loss_and_grad(h @ w.T + b, y)
    for got in results:
        for a, e in zip(got, (want, g @ w, g.T @ h, g.sum(0))):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


def test_linear_blocks_in_a_plain_graph_are_xla_functions_and_a_bad_target_still_fails():
    """In a tf.function without jit_compile, each block's loss and logit gradient is an
    XLA function between TensorFlow's matmuls (the first block, the loop's body, the
    remainder); the numbers are the materialised logits', and a target out of range
    still fails the call."""
    rng = np.random.default_rng(5)
    # 13 rows in blocks of 4: the first block, two in the loop, one remainder row
    h, w, b = rng.normal(size=(13, 3)), rng.normal(size=(6, 3)), rng.normal(size=6)
    y = rng.integers(0, 6, 13)
    y[2] = -100

    @tf.function(autograph=False)
    def step(h, w, b, y):
        with tf.GradientTape() as tape:
            tape.watch([h, w, b])
            loss = ftf.linear_softmax_focal_loss(h, w, y, linear_bias=b, gamma=1.5,
                                                 chunk_size=4)
        return loss, tape.gradient(loss, [h, w, b])
    args = [tf.constant(a) for a in (h, w, b, y)]
    graph = step.get_concrete_function(*args).graph
    assert any(op.type in ("While", "StatelessWhile") for op in graph.get_operations())
    lib = graph.as_graph_def().library.function
    assert sum(fd.attr["_XlaMustCompile"].b for fd in lib) == 3
    loss, grads = step(*args)
    want, g = ref.softmax_focal_loss_and_grad(h @ w.T + b, y, gamma=1.5)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    for a, e in zip(grads, (g @ w, g.T @ h, g.sum(0))):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
    y[6] = 6  # (in a block of the loop)
    with pytest.raises(tf.errors.InvalidArgumentError, match="targets must be class indices"):
        step(*args[:3], tf.constant(y))


def test_linear_weight_gradient_tiles_under_xla_add_every_class_once(monkeypatch):
    """Under XLA the weight gradient's accumulator is updated a tile of classes at a time
    (tiles of 2 of 7 classes here: three in the loop and a remainder of one): every
    class's rows get their share once, as the materialised logits' gradient."""
    from focalx.backends.tensorflow import linear as tlinear
    monkeypatch.setattr(tlinear, "_ADD_TILE_ELEMENTS", 6)  # 6 // H=3: tiles of 2 rows
    tiled = []
    in_xla = tlinear._in_xla
    monkeypatch.setattr(tlinear, "_in_xla", lambda: tiled.append(in_xla()) or tiled[-1])
    rng = np.random.default_rng(4)
    h, w, b = rng.normal(size=(10, 3)), rng.normal(size=(7, 3)), rng.normal(size=7)
    y = rng.integers(0, 7, 10)
    args = [tf.constant(a) for a in (h, w, b)]
    step = tf.function(_linear_loss_and_grads(y, gamma=1.5, chunk_size=2), jit_compile=True,
                       autograph=False)
    loss, grads = step(*args)
    assert tiled and all(tiled), "the tiled update did not run under XLA"
    want, g = ref.softmax_focal_loss_and_grad(h @ w.T + b, y, gamma=1.5)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    for a, e in zip(grads, (g @ w, g.T @ h, g.sum(0))):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)



@pytest.mark.parametrize("classes,tiled", [(12, True), (13, False)],
                         ids=["tiles", "no-divisor"])
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_linear_with_eigen_matmul_transposes_logits_and_adds_weight_tiles_in_place(
        monkeypatch, mode, classes, tiled):
    """Where TensorFlow's CPU matmul is Eigen's (oneDNN off), a block's logits are
    (W h^T)^T and, eagerly, each tile of the weight gradient's classes is added into the
    accumulator in place (two tiles of 6 of 12 classes here; 13 classes have no divisor
    near the tile size: the plain sum); in a graph, the plain sum. Either way the
    materialised logits' numbers."""
    from focalx.backends.tensorflow import linear as tlinear
    monkeypatch.setattr(tlinear, "_eigen_matmul", lambda: True)
    monkeypatch.setattr(tlinear, "_ADD_TILE_ELEMENTS", 24)  # 24 // H=3: up to 8 classes
    added, transposed = [], []
    in_place = tlinear._add_matmul_in_place
    monkeypatch.setattr(tlinear, "_add_matmul_in_place",
                        lambda c, a, b: added.append(in_place(c, a, b)) or added[-1])
    real_transpose = tf.transpose
    monkeypatch.setattr(tlinear.tf, "transpose", lambda a, *args, **kw: transposed.append(
        a.shape.as_list()) or real_transpose(a, *args, **kw))
    rng = np.random.default_rng(12)
    # 13 rows in blocks of 3: the first block, three in the graph's loop, one row more
    h, w, b = (rng.normal(size=(13, 3)), rng.normal(size=(classes, 3)),
               rng.normal(size=classes))
    y = rng.integers(0, classes, 13)
    y[4] = -100
    step = _linear_loss_and_grads(y, gamma=1.5, chunk_size=3)
    if mode == "graph":
        step = tf.function(step, autograph=False)
    loss, grads = step(*(tf.constant(a) for a in (h, w, b)))
    if mode == "eager":
        assert added and all((a is not None) == tiled for a in added)
    else:
        assert not added
    assert [classes, 3] in transposed and [classes, 1] in transposed
    _assert_linear_loss(loss, grads, h, w, b, y, None, rtol=1e-12, grad_rtol=1e-10,
                        gamma=1.5)


def test_weight_tiles_added_in_place_write_into_the_accumulator():
    """The in-place sum writes into the accumulator's memory (the tensor given is changed:
    no V x H copy), a tile at a time, every class once."""
    from focalx.backends.tensorflow import linear as tlinear
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=(5, 4096)), rng.normal(size=(5, 512))  # tiles of 2048 classes
    c = tf.linalg.matmul(tf.constant(a), tf.constant(b), transpose_a=True)
    want = 2 * (a.T @ b)
    out = tlinear._add_matmul_in_place(c, tf.constant(a), tf.constant(b))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c, want, rtol=1e-12, atol=1e-13)  # (c's own memory)
    assert tlinear._tile_rows(4096, 2048) == 2048
    assert tlinear._tile_rows(13, 8) is None and tlinear._tile_rows(7, 8) == 7


@pytest.mark.parametrize("eigen", [False, True], ids=["onednn", "eigen"])
def test_linear_in_a_graph_stays_differentiable_by_tensorflow(monkeypatch, eigen):
    """In a tf.function the weight gradient is made by ops TensorFlow can differentiate
    and that own their memory: with constant inputs (which Grappler folds) repeated calls
    give the same gradient; a persistent tape around the function differentiates it; a
    second derivative taken inside one matches finite differences of the first."""
    from focalx.backends.tensorflow import linear as tlinear
    monkeypatch.setattr(tlinear, "_eigen_matmul", lambda: eigen)
    rng = np.random.default_rng(15)
    h, w, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)), rng.integers(0, 5, 6)
    _, g = ref.softmax_focal_loss_and_grad(h @ w.T, y)

    @tf.function(autograph=False)
    def constant_inputs():
        ww = tf.constant(w)
        with tf.GradientTape() as tape:
            tape.watch(ww)
            loss = ftf.linear_softmax_focal_loss(tf.constant(h), ww, tf.constant(y),
                                                 chunk_size=2)
        return tape.gradient(loss, ww)
    for _ in range(3):
        np.testing.assert_allclose(constant_inputs(), g.T @ h, rtol=1e-10, atol=1e-12)

    hw = [tf.constant(h), tf.constant(w)]
    fn = tf.function(lambda a, b: ftf.linear_softmax_focal_loss(a, b, tf.constant(y),
                                                                chunk_size=2))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(hw)
        loss = fn(*hw)
    for a, e in zip(tape.gradient(loss, hw), (g @ w, g.T @ h)):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)

    def first(a):
        with tf.GradientTape() as inner:
            inner.watch(a)
            loss = ftf.linear_softmax_focal_loss(a, hw[1], tf.constant(y), chunk_size=2)
        return inner.gradient(loss, a)

    @tf.function(autograph=False)
    def second(a):
        with tf.GradientTape() as outer:
            outer.watch(a)
            s = tf.reduce_sum(first(a) ** 2)
        return outer.gradient(s, a)
    got = second(hw[0])
    assert got is not None
    eps, fd = 1e-6, np.zeros_like(h)
    for i in np.ndindex(h.shape):
        d = np.zeros_like(h)
        d[i] = eps
        fd[i] = (np.sum(first(tf.constant(h + d)) ** 2)
                 - np.sum(first(tf.constant(h - d)) ** 2)) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-8)


EIGEN_MATMUL = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    import focalx.tensorflow as ftf
    from focalx import _numpy as ref
    from focalx.backends.tensorflow import linear as tlinear
    assert tlinear._eigen_matmul()
    rng = np.random.default_rng(3)
    h, w, y = rng.normal(size=(40, 8)), rng.normal(size=(3000, 8)), rng.integers(0, 3000, 40)
    hw = [tf.constant(h), tf.constant(w)]

    @tf.function(autograph=False)
    def step(h, w):
        with tf.GradientTape() as tape:
            tape.watch([h, w])
            loss = ftf.linear_softmax_focal_loss(h, w, tf.constant(y), chunk_size=8)
        return loss, tape.gradient(loss, [h, w])
    graph = step.get_concrete_function(*hw).graph.as_graph_def()
    ops = {n.op for f in graph.library.function for n in f.node_def}
    assert "Transpose" in ops and "InplaceAdd" not in ops, sorted(ops)
    added = []
    in_place = tlinear._add_matmul_in_place
    tlinear._add_matmul_in_place = lambda *a: added.append(in_place(*a)) or added[-1]
    want, g = ref.softmax_focal_loss_and_grad(h @ w.T, y)
    for loss, grads in (step(*hw), step.python_function(*hw)):
        np.testing.assert_allclose(loss, want, rtol=1e-12)
        for a, e in zip(grads, (g @ w, g.T @ h)):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
    assert added and all(a is not None for a in added)  # (eagerly)
    print("ok")
""")


def test_linear_with_onednn_off_runs_the_eigen_path():
    """TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's advice for reproducible results) is read as
    Eigen's matmul: the linear loss's graph transposes its logits, its eager call adds the
    weight tiles in place, both with the materialised logits' numbers."""
    proc = subprocess.run([sys.executable, "-c", EIGEN_MATMUL], capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0",
                                   TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok")


@pytest.mark.parametrize("name", ["linear_softmax_focal_loss", "softmax_focal_loss"])
def test_an_eager_tape_keeps_no_array_of_the_forward_pass(monkeypatch, name):
    """Eagerly under a GradientTape, the arrays a loss makes op by op are freed when its
    forward pass ends, not kept by the tape to its end (the custom gradient gives the
    gradient): the fused linear loss kept every block's logits (4.9 logits arrays at the
    bench's size, the materialised logits' path 3.0)."""
    import gc
    import inspect
    import weakref
    from focalx.backends.tensorflow import linear as tlinear
    monkeypatch.setattr(tf_xla, "USE_XLA", False)  # (op by op)
    made = []
    for cls, method in ((tlinear._LinearOps, "matmul"), (tf_ops.TensorflowOps, "log_softmax")):
        real = getattr(cls, method)  # (a function, or a staticmethod's function)

        def spy(*args, real=real):
            out = real(*args)
            made.append(weakref.ref(out))
            return out
        static = isinstance(inspect.getattr_static(cls, method), staticmethod)
        monkeypatch.setattr(cls, method, staticmethod(spy) if static else spy)
    rng = np.random.default_rng(14)
    h, w, y = rng.normal(size=(12, 3)), rng.normal(size=(7, 3)), rng.integers(0, 7, 12)
    hw = [tf.constant(h), tf.constant(w)]
    with tf.GradientTape() as tape:
        tape.watch(hw)
        if name == "softmax_focal_loss":
            loss = ftf.softmax_focal_loss(tf.linalg.matmul(hw[0], hw[1], transpose_b=True),
                                          tf.constant(y), axis=-1)
        else:
            loss = ftf.linear_softmax_focal_loss(hw[0], hw[1], tf.constant(y), chunk_size=4)
        gc.collect()
        alive = sum(r() is not None for r in made)
    assert made and alive == 0, f"{alive} of {len(made)} arrays kept"
    grads = tape.gradient(loss, hw)
    want, g = ref.softmax_focal_loss_and_grad(h @ w.T, y)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    for a, e in zip(grads, (g @ w, g.T @ h)):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("top_level", [False, True], ids=["focalx.tensorflow", "focalx"])
@pytest.mark.parametrize("name", ["sigmoid_focal_loss", "softmax_focal_loss",
                                  "linear_softmax_focal_loss"])
def test_autograph_runs_the_loss_as_written(monkeypatch, name, top_level):
    """tf.function's autograph (on by default, and in Keras' train step) does not rewrite
    focalx's functions and the spec they call (seconds per trace): the spec's checks are
    called from focalx's own code, not from converted copies."""
    import sys
    from focalx import _spec
    from focalx import _dispatch
    callers = []

    def spying(real):
        def spy(*args, **kwargs):
            callers.append(sys._getframe(1).f_code.co_filename)
            return real(*args, **kwargs)
        return spy
    for check in ("check_reduction", "check_logits_dtype"):
        monkeypatch.setattr(_spec, check, spying(getattr(_spec, check)))
    # (the top-level dispatchers' own call, caught where they look the backend up)
    monkeypatch.setattr(_dispatch, "framework_of", spying(_dispatch.framework_of))
    rng = np.random.default_rng(3)
    if name == "linear_softmax_focal_loss":
        args = (tf.constant(rng.normal(size=(6, 3))), tf.constant(rng.normal(size=(5, 3))),
                tf.constant(rng.integers(0, 5, 6)))
    elif name == "softmax_focal_loss":
        args = (tf.constant(rng.normal(size=(6, 5))), tf.constant(rng.integers(0, 5, 6)))
    else:
        args = (tf.constant(rng.normal(size=(6, 5))),
                tf.constant((rng.random((6, 5)) > 0.7).astype(np.float64)))

    @tf.function  # autograph on, as a user writes it
    def step(*a):
        return getattr(focalx if top_level else ftf, name)(*a)
    step(*args)
    assert callers and not [f for f in callers if "autograph" in f], set(callers)


def test_a_non_tensor_argument_raises_a_type_error_naming_it():
    """A list (or a NumPy array where only tensors are taken) where a tensor is expected: a
    TypeError naming the argument and the type given (not a NameError from the module's
    own helpers)."""
    y = np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"logits must be a tf.Tensor, got builtins.list"):
        ftf.sigmoid_focal_loss([[0.5, 0.1, 0.2]] * 2, tf.constant(y))
    with pytest.raises(TypeError, match=r"targets .*builtins.list"):
        ftf.sigmoid_focal_loss(tf.constant(y), y.tolist())
    with pytest.raises(TypeError, match=r"linear_weight must be a tf.Tensor"):
        ftf.linear_softmax_focal_loss(tf.constant(y), np.zeros((4, 3)), tf.constant([0, 1]))
