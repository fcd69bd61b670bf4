"""The JAX backend: transformations, optax parity, numerics, multi-device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .conftest import import_backend, import_companion

jax = import_backend("jax")
jax.config.update("jax_enable_x64", True)  # float64 tests; float32 is requested explicitly
jnp = jax.numpy
optax = import_companion("optax", "jax")

import focalx  # noqa: E402
import focalx.jax as fj  # noqa: E402
from focalx import _numpy as ref  # noqa: E402
from focalx.conformance import _harness, runner  # noqa: E402


def _data(seed=0, shape=(16, 5), dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * 3).astype(dtype)
    t = (rng.random(shape) < 0.3).astype(dtype)
    y = rng.integers(0, shape[-1], size=shape[:-1])
    return x, t, y


def _close(a, b, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol,
                               atol=atol)


def _under_jit(harness):
    """The harness, evaluating a case's loss and gradient as one jax.jit program (the jit
    of the vjp, as a training step) per function, Python hyperparameters and shapes:
    one compilation per case, where the vjp of a jitted loss compiles its forward and
    backward apart. (The vjp of a jitted loss: the harness's "jit" mode, test_backends.)"""
    cache = {}

    def evaluate(fn, x, y, kwargs, *, own=False):
        arrays = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array)}
        static = {k: v for k, v in kwargs.items() if k not in arrays}
        key = (fn, repr(sorted(static.items())))
        if key not in cache:
            def step(v, w, arrs):
                loss, vjp = jax.vjp(lambda a: fn(a, w, **static, **arrs), v)
                return loss, vjp(jnp.ones_like(loss))[0]
            cache[key] = jax.jit(step)
        loss, grad = cache[key](x, y, arrays)
        return (np.asarray(loss, np.float64).ravel(), np.asarray(grad, np.float64).ravel(),
                tuple(loss.shape), loss.dtype.name)
    harness.evaluate = evaluate
    return harness


class TestOptaxParity:
    @pytest.mark.parametrize("alpha", [None, 0.25, 0.6])
    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
    def test_sigmoid_equals_optax_sigmoid_focal_loss(self, alpha, gamma):
        x, t, _ = _data(1, dtype=np.float64)
        t = t * 0.8 + 0.1  # soft labels too
        got = fj.sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(t), alpha=alpha, gamma=gamma,
                                    reduction="none")
        want = optax.losses.sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(t), alpha=alpha,
                                               gamma=gamma)
        _close(got, want, rtol=1e-12)

    def test_softmax_gamma0_equals_optax_cross_entropy(self):
        x, _, y = _data(2, dtype=np.float64)
        got = fj.softmax_focal_loss(jnp.asarray(x), jnp.asarray(y), gamma=0.0, reduction="none")
        want = optax.losses.softmax_cross_entropy_with_integer_labels(jnp.asarray(x),
                                                                      jnp.asarray(y))
        _close(got, want, rtol=1e-12)
        q = jax.nn.softmax(jnp.asarray(_data(3, dtype=np.float64)[0]), axis=-1)
        got = fj.softmax_focal_loss(jnp.asarray(x), q, gamma=0.0, reduction="none")
        _close(got, optax.losses.softmax_cross_entropy(jnp.asarray(x), q), rtol=1e-12)

    def test_gradients_match_optax_where_optax_is_finite(self):
        x, t, _ = _data(4, dtype=np.float64)
        g = jax.grad(lambda v: fj.sigmoid_focal_loss(v, jnp.asarray(t), gamma=2.0,
                                                     reduction="sum"))(jnp.asarray(x))
        g_optax = jax.grad(lambda v: optax.losses.sigmoid_focal_loss(
            v, jnp.asarray(t), alpha=0.25, gamma=2.0).sum())(jnp.asarray(x))
        _close(g, g_optax, rtol=1e-10, atol=1e-300)


class TestOps:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_take_of_a_log_softmax_equals_the_full_arrays_element_bit_for_bit(self, dtype):
        from focalx.backends.jax.ops import JaxOps
        rng = np.random.default_rng(40)
        x = (rng.normal(size=(64, 7, 9)) * rng.choice([1.0, 30.0, 3e3], size=(64, 1, 1)))
        x[0, :, 0] = 200.0  # ties for the largest
        x = jnp.asarray(x.astype(dtype))
        for axis in (-1, 1, 0):
            ops = JaxOps()
            lp = ops.log_softmax(x, axis)
            idx = jnp.asarray(rng.integers(0, x.shape[axis], size=np.shape(
                np.take(np.asarray(x), [0], axis=axis))))
            got = jax.jit(lambda v, i: ops.take(JaxOps.log_softmax(ops, v, axis), i, axis))(
                x, idx)  # traced: the gather from the logits
            want = np.take_along_axis(np.asarray(lp), np.asarray(idx), axis=axis)
            np.testing.assert_array_equal(np.asarray(got), want)
            np.testing.assert_array_equal(np.asarray(ops.take(lp, idx, axis)), want)
            np.testing.assert_allclose(np.asarray(lp), jax.nn.log_softmax(x, axis=axis),
                                       rtol=0, atol=0)


class TestTransformations:
    def test_jit_grad_value_and_grad_match_reference(self):
        x, t, y = _data(5)
        for fn, targ, rfn, extra in [
            (fj.sigmoid_focal_loss, t, ref.sigmoid_focal_loss_and_grad, {}),
            (fj.softmax_focal_loss, y, ref.softmax_focal_loss_and_grad, {}),
            (fj.sigmoid_focal_loss_star, t, ref.sigmoid_focal_loss_star_and_grad, {}),
        ]:
            vg = jax.jit(jax.value_and_grad(lambda v, w: fn(v, w, gamma=0.5, **extra)))
            loss, g = vg(jnp.asarray(x), jnp.asarray(targ))
            want, want_g = rfn(x, targ, gamma=0.5)
            _close(loss, want, rtol=2e-6)
            _close(g, want_g, rtol=2e-5, atol=1e-9)

    def test_vmap_over_samples_equals_reduction_none(self):
        x, t, y = _data(6)
        per = jax.vmap(lambda a, b: fj.softmax_focal_loss(a, b, reduction="sum"))(
            jnp.asarray(x), jnp.asarray(y))
        _close(per, fj.softmax_focal_loss(jnp.asarray(x), jnp.asarray(y), reduction="none"),
               rtol=1e-6)
        g = jax.vmap(jax.grad(lambda a, b: fj.sigmoid_focal_loss(a, b, reduction="sum")))(
            jnp.asarray(x), jnp.asarray(t))
        g_all = jax.grad(lambda a: fj.sigmoid_focal_loss(a, jnp.asarray(t), reduction="sum"))(
            jnp.asarray(x))
        _close(g, g_all, rtol=1e-6)

    def test_traced_array_hyperparameters(self):
        x, t, y = _data(7)

        @jax.jit
        def f(v, targets, alpha, weight, normalizer):
            return fj.softmax_focal_loss(v, targets, alpha=alpha, weight=weight,
                                         normalizer=normalizer, reduction="sum")
        a = jnp.asarray([0.25, 0.5, 0.75, 1.0, 0.5])
        w = jnp.asarray([1.0, 2.0, 0.5, 1.0, 1.5])
        got = f(jnp.asarray(x), jnp.asarray(y), a, w, jnp.asarray(4.0))
        want = ref.softmax_focal_loss(x, y, alpha=np.asarray(a), weight=np.asarray(w),
                                      normalizer=4.0, reduction="sum")
        _close(got, want, rtol=2e-6)

    def test_bad_hyperparameters_fail_at_trace_time_with_the_same_errors(self):
        x, _, y = _data(8)
        with pytest.raises(ValueError, match="gamma"):
            jax.jit(lambda v, w: fj.softmax_focal_loss(v, w, gamma=-1.0))(jnp.asarray(x),
                                                                          jnp.asarray(y))
        with pytest.raises(ValueError, match="weight"):
            jax.jit(lambda v, w: fj.softmax_focal_loss(v, w, weight=jnp.ones(3)))(
                jnp.asarray(x), jnp.asarray(y))
        with pytest.raises(ValueError, match="targets"):  # eager: the data check runs
            fj.softmax_focal_loss(jnp.asarray(x), jnp.asarray(y) + 10)

    def test_every_golden_case_under_jit_float32(self):
        harness = _under_jit(_harness.create("jax"))
        cases = runner.load_golden()["cases"]
        failures = []
        for variant in ("sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star"):
            results = runner.run_cases(harness, runner.select(cases, variant=variant), "cpu",
                                       "float32", fn=getattr(fj, variant))
            failures += [f"{r['id']}: {r.get('detail')}" for r in results
                         if r["status"] != "passed"]
        assert not failures, "\n".join(failures)


class TestDispatch:
    def test_top_level_functions_take_jax_arrays(self):
        x, t, y = _data(10)
        out = focalx.softmax_focal_loss(jnp.asarray(x), jnp.asarray(y))
        assert isinstance(out, jax.Array)
        _close(out, fj.softmax_focal_loss(jnp.asarray(x), jnp.asarray(y)), rtol=0)
        with pytest.raises(TypeError, match="targets"):
            focalx.sigmoid_focal_loss(jnp.asarray(x), [[1.0] * 5] * 16)


MULTI_DEVICE = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import focalx.jax as fj
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 10)).astype(np.float32) * 3)
    t = jnp.asarray((rng.random((64, 10)) < 0.1).astype(np.float32))

    def single(x, t):  # RetinaNet normalisation: sum over the positives
        return fj.sigmoid_focal_loss(x, t, reduction="sum", normalizer=jnp.maximum(t.sum(), 1.0))
    want, want_g = jax.jit(jax.value_and_grad(single))(x, t)

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    def per_shard(x, t):
        num_pos = jax.lax.psum(t.sum(), "batch")
        local = fj.sigmoid_focal_loss(x, t, reduction="sum", normalizer=jnp.maximum(num_pos, 1.0))
        return jax.lax.psum(local, "batch")
    sharded = jax.shard_map(per_shard, mesh=mesh, in_specs=(P("batch"), P("batch")),
                            out_specs=P())
    xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
    ts = jax.device_put(t, NamedSharding(mesh, P("batch")))
    got, got_g = jax.jit(jax.value_and_grad(sharded))(xs, ts)
    assert len(got_g.sharding.device_set) == 4
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-5, atol=1e-9)

    # plain jit on sharded inputs (GSPMD partitions the computation)
    auto, auto_g = jax.jit(jax.value_and_grad(single))(xs, ts)
    np.testing.assert_allclose(auto, want, rtol=1e-6)
    np.testing.assert_allclose(auto_g, want_g, rtol=1e-5, atol=1e-9)

    # pmap: per-device losses with the global normalizer, summed across devices
    xp, tp = x.reshape(4, 16, 10), t.reshape(4, 16, 10)
    def local(x, t):
        num_pos = jax.lax.psum(t.sum(), "i")
        return fj.sigmoid_focal_loss(x, t, reduction="sum", normalizer=jnp.maximum(num_pos, 1.0))
    losses, grads = jax.pmap(jax.value_and_grad(local), axis_name="i")(xp, tp)
    np.testing.assert_allclose(losses.sum(), want, rtol=1e-6)
    np.testing.assert_allclose(grads.reshape(64, 10), want_g, rtol=1e-5, atol=1e-9)
    print("ok", float(got), float(want))
""")


def test_sharded_shard_map_and_pmap_over_four_devices_match_one_device():
    proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok")


def test_flax_example_trains_both_losses():
    import_companion("flax", "jax")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    try:
        import jax_flax_imbalanced as example
    finally:
        sys.path.pop(0)
    results = example.main(steps=60, quiet=True)
    assert set(results) == {"cross-entropy", "focal"}
    for r in results.values():
        assert r["last_loss"] < r["first_loss"]
        assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
        assert 0.0 < r["AP"] <= 1.0


def test_value_and_grad_keeps_no_full_size_temporary():
    # XLA on CPU writes out what two fusions share: the sigmoid loss's gradient pass
    # shares nothing with the loss pass (optimization barrier, own clamping constant),
    # and the softmax loss keeps only its exp; the gradient itself is the output.
    # (Compiled buffer sizes, not timings: a merged constant or a shared intermediate
    # shows up as a full-size temporary. Not yet so: a non-integer gamma, label
    # smoothing or ignore_index, whose constants XLA still merges across the passes.)
    x = jnp.zeros((512, 256), jnp.float32)
    t = jnp.zeros((512, 256), jnp.float32)
    y = jnp.zeros((512,), jnp.int32)
    for fn, targets, allowed in [
        (lambda a, b: fj.sigmoid_focal_loss(a, b), t, 0),
        (lambda a, b: fj.sigmoid_focal_loss(a, b, gamma=3.0, alpha=None, pos_weight=2.0,
                                            reduction="sum"), t, 0),
        (lambda a, b: fj.softmax_focal_loss(a, b), y, 1),
    ]:
        mem = jax.jit(jax.value_and_grad(fn)).lower(x, targets).compile().memory_analysis()
        assert mem.temp_size_in_bytes < (allowed + 0.5) * x.nbytes, mem


class TestOnAGpu:
    """On a GPU (simulated: focalx.backends.jax.ops._readable says no, as for a GPU array) no
    call reads an array's value, eagerly or under jit (a read would wait for the
    device): a failed check gives NaN, and good inputs the reference numbers."""

    CALLS = [
        ("sigmoid_focal_loss", "t", dict(gamma=0.5, label_smoothing=0.1)),
        ("sigmoid_focal_loss", "t", dict(alpha="vec", pos_weight="vec", reduction="sum",
                                         normalizer="num")),
        ("sigmoid_focal_loss_star", "t", dict(gamma=2.0, beta=1.0)),
        ("softmax_focal_loss", "y", dict(gamma=2.0, weight="vec", ignore_index=1)),
        ("softmax_focal_loss", "y", dict(gamma=1.5, alpha="vec", label_smoothing=0.1)),
    ]

    @staticmethod
    def _guarded(monkeypatch):
        from jax._src import array as jax_array

        from focalx.backends.jax import ops
        monkeypatch.setattr(ops, "_readable", lambda a: False)

        def read(self):
            raise AssertionError("an array's value was read")
        monkeypatch.setattr(jax_array.ArrayImpl, "_value", property(read))

    @pytest.mark.parametrize("jit", [False, True])
    @pytest.mark.parametrize("variant,kind,kw", CALLS)
    def test_no_value_is_read_and_bad_values_give_nan(self, monkeypatch, variant, kind, kw,
                                                        jit):
        x, t, y = _data(60, shape=(12, 5))
        good = t if kind == "t" else y
        bad = t * 2 if kind == "t" else y + 5
        arrays = {k: (np.linspace(0.2, 0.8, 5, dtype=np.float32) if v == "vec" else
                      np.float32(4.0)) for k, v in kw.items() if v in ("vec", "num")}
        static = {k: v for k, v in kw.items() if k not in arrays}
        fn = getattr(fj, variant)

        def loss(a, b, arrs):
            return fn(a, b, **static, **arrs)
        f = jax.value_and_grad(loss)
        f = jax.jit(f) if jit else f
        args = [(jnp.asarray(x), jnp.asarray(v), {k: jnp.asarray(a) for k, a in arrays.items()})
                for v in (good, bad)]
        with monkeypatch.context() as m:
            self._guarded(m)
            got = [jax.block_until_ready(f(*a)) for a in args]
        want, want_g = getattr(ref, variant + "_and_grad")(x, good, **static, **arrays)
        _close(got[0][0], want, rtol=2e-5)
        _close(got[0][1], want_g, rtol=2e-5, atol=1e-6 * np.abs(want_g).max())
        assert np.isnan(float(got[1][0])) and np.all(np.isnan(np.asarray(got[1][1])))


class TestDifferentiationBeyondLogits:
    def test_top_level_functions_work_under_jit_grad_and_vmap(self):
        x, t, y = _data(20)
        xj, tj, yj = jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)
        _close(jax.jit(lambda a, b: focalx.softmax_focal_loss(a, b))(xj, yj),
               fj.softmax_focal_loss(xj, yj), rtol=1e-6)
        _close(jax.grad(lambda a: focalx.sigmoid_focal_loss(a, tj))(xj),
               jax.grad(lambda a: fj.sigmoid_focal_loss(a, tj))(xj), rtol=1e-6)
        _close(jax.vmap(lambda a, b: focalx.sigmoid_focal_loss_star(a, b))(xj, tj),
               jax.vmap(lambda a, b: fj.sigmoid_focal_loss_star(a, b))(xj, tj), rtol=1e-6)

    @pytest.mark.parametrize("variant", ["sigmoid_focal_loss", "asymmetric_loss",
                                         "quality_focal_loss"])
    def test_a_zero_weights_gradient_is_its_elements_loss_under_jit(self, variant):
        """d sum(w * loss) / dw is each element's loss, also where w is 0 (learning to
        reweight starts there): under jit a select for left-out elements gave 0."""
        x = jnp.asarray([0.5, -1.0, 2.0, 3.0])
        y = jnp.asarray([1.0, 0.0, 0.0, 0.5])
        w = jnp.asarray([1.0, 0.0, 0.0, 2.0])
        fn = getattr(fj, variant)
        want = fn(x, y, reduction="none")
        f = lambda w, x: fn(x, y, weight=w, reduction="sum")  # noqa: E731
        for g in (jax.grad(f), jax.jit(jax.grad(f))):
            _close(g(w, x), want, rtol=1e-12)

    def test_soft_target_gradients_equal_optax(self):
        x, _, _ = _data(21, dtype=np.float64)
        t = np.random.default_rng(22).random(x.shape)
        g = jax.grad(lambda s: fj.sigmoid_focal_loss(jnp.asarray(x), s, alpha=0.25,
                                                     reduction="sum"))(jnp.asarray(t))
        g_optax = jax.grad(lambda s: optax.losses.sigmoid_focal_loss(
            jnp.asarray(x), s, alpha=0.25).sum())(jnp.asarray(t))
        _close(g, g_optax, rtol=1e-10, atol=1e-12)
        q = jax.nn.softmax(jnp.asarray(t), axis=-1)
        g = jax.grad(lambda s: fj.softmax_focal_loss(jnp.asarray(x), s, gamma=0.0,
                                                     reduction="sum"))(q)
        g_optax = jax.grad(lambda s: optax.losses.softmax_cross_entropy(
            jnp.asarray(x), s).sum())(q)
        _close(g, g_optax, rtol=1e-10, atol=1e-12)

    def test_alpha_and_normalizer_gradients_match_central_differences(self):
        x, _, y = _data(23, dtype=np.float64)
        xj, yj = jnp.asarray(x), jnp.asarray(y)

        def f(alpha, norm):
            return fj.softmax_focal_loss(xj, yj, alpha=alpha, normalizer=norm, reduction="sum")
        a0, n0 = jnp.asarray([0.3, 0.5, 0.7, 0.9, 0.2]), jnp.asarray(3.0)
        ga, gn = jax.grad(f, argnums=(0, 1))(a0, n0)
        eps = 1e-6
        num_a = [(f(a0.at[i].add(eps), n0) - f(a0.at[i].add(-eps), n0)) / (2 * eps)
                 for i in range(5)]
        _close(ga, num_a, rtol=1e-6)
        _close(gn, (f(a0, n0 + eps) - f(a0, n0 - eps)) / (2 * eps), rtol=1e-6)

    def test_hessian_is_finite_at_saturation_and_right_elsewhere(self):
        f = lambda v: fj.sigmoid_focal_loss(v, jnp.asarray([1.0, 0.0, 1.0]), gamma=0.5,  # noqa: E731
                                            reduction="sum")
        assert np.all(np.isfinite(np.asarray(jax.hessian(f)(jnp.asarray([120.0, -3.0, 2.0],
                                                                          jnp.float32)))))
        x = jnp.asarray([0.7, -1.3, 2.1])
        h = jax.hessian(f)(x)
        eps = 1e-5
        num = [(jax.grad(f)(x.at[i].add(eps)) - jax.grad(f)(x.at[i].add(-eps))) / (2 * eps)
               for i in range(3)]
        _close(h, np.stack(num), rtol=1e-6, atol=1e-9)
        g = lambda v: fj.softmax_focal_loss(v, jnp.asarray([0]), gamma=0.5,  # noqa: E731
                                            reduction="sum")
        assert np.all(np.isfinite(np.asarray(jax.hessian(g)(jnp.asarray([[20.0, 0.0, 0.0]],
                                                                          jnp.float32)))))

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("fn, ys, gammas", [
        ("sigmoid_focal_loss", [0.0, 1.0, 0.3, 1e-30, 1 - 1e-7], [0.0, 0.25, 0.5, 1.0, 2.0, 5.0]),
        ("sigmoid_focal_loss_star", [0.0, 1.0, 0.3], [0.25, 1.0, 2.0]),
    ])
    def test_hessian_is_finite_at_every_logit(self, dtype, fn, ys, gammas):
        """The closed-form gradient differentiated again stays finite at saturation (it
        was NaN for hard targets from |x| of 44 (float32) or 360 (float64): 0/0 where
        (1-p_t)**2 underflows), and equals finite differences of the gradient elsewhere."""
        xs = np.concatenate([-np.logspace(-3, 4, 30), np.logspace(-3, 4, 30)])
        for gamma in gammas:
            for yv in ys:
                def f(a, yv=yv, gamma=gamma):
                    return getattr(fj, fn)(a, jnp.full(a.shape, yv, dtype), gamma=gamma,
                                           reduction="sum")
                h = jax.vmap(lambda a, f=f: jax.hessian(f)(a[None])[0, 0])(jnp.asarray(xs, dtype))
                assert np.all(np.isfinite(np.asarray(h))), (fn, gamma, yv)
                if dtype == "float64":
                    x = jnp.asarray([0.7, -1.3, 2.1, 9.0, -25.0])
                    g = jax.grad(f)
                    eps = 1e-6
                    num = (g(x + eps) - g(x - eps)) / (2 * eps)
                    hd = jax.vmap(lambda a, f=f: jax.hessian(f)(a[None])[0, 0])(x)
                    _close(hd, num, rtol=1e-5, atol=1e-9)

    def test_failed_value_checks_under_jit_and_vmap_give_nan_not_a_number(self):
        x, t, y = _data(24)
        f = jax.jit(lambda a, b: fj.softmax_focal_loss(a, b))
        assert np.isfinite(float(f(jnp.asarray(x), jnp.asarray(y))))
        for bad in (-1, 5, 255):
            assert np.isnan(float(f(jnp.asarray(x), jnp.asarray(y).at[3].set(bad))))
        bad_t = jax.jit(lambda a, b: fj.sigmoid_focal_loss(a, b))(jnp.asarray(x),
                                                                  jnp.asarray(t) * 2)
        assert np.isnan(float(bad_t))
        per = jax.vmap(lambda a, b: fj.softmax_focal_loss(a, b))(jnp.asarray(x),
                                                               jnp.asarray(y).at[2].set(-1))
        assert np.isnan(per[2]) and np.all(np.isfinite(np.delete(np.asarray(per), 2)))

    def test_failed_value_checks_under_jit_make_the_whole_gradient_nan(self):
        # The gradient comes from its own pass (see _apply), which skips the checks:
        # the loss pass's verdict must still reach it. NaN targets fail the checks too.
        x, t, y = _data(25)
        x, t, y = jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)
        sig = jax.jit(jax.value_and_grad(lambda a, b, al: fj.sigmoid_focal_loss(a, b, alpha=al)))
        loss, g = sig(x, t, jnp.asarray(0.25))
        assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(g)))
        for bad_t, bad_alpha in ((t.at[3, 1].set(2.0), 0.25), (t.at[0, 0].set(-0.5), 0.25),
                                 (t.at[5, 4].set(np.nan), 0.25), (t, 1.5)):
            loss, g = sig(x, bad_t, jnp.asarray(bad_alpha))
            assert np.isnan(float(loss)) and np.all(np.isnan(np.asarray(g)))
        soft = jax.jit(jax.value_and_grad(lambda a, b: fj.softmax_focal_loss(a, b, axis=1)))
        loss, g = soft(x, y.at[2].set(7))
        assert np.isnan(float(loss)) and np.all(np.isnan(np.asarray(g)))
        # differentiated targets and alpha too (soft targets from a teacher, a learned alpha)
        every = jax.jit(jax.grad(lambda a, b, al: fj.sigmoid_focal_loss(a, b * 0.8 + 0.1,
                                                                        alpha=al),
                                 argnums=(0, 1, 2)))
        assert all(np.all(np.isfinite(np.asarray(v))) for v in every(x, t, jnp.asarray(0.25)))
        for bad_t, bad_alpha in ((t.at[3, 1].set(2.0), 0.25), (t, 1.5)):
            grads = every(x, bad_t, jnp.asarray(bad_alpha))
            assert all(np.all(np.isnan(np.asarray(v))) for v in grads)


def test_int64_numpy_targets_without_x64_are_refused_not_truncated(tmp_path):
    """Without jax_enable_x64, jnp.asarray makes int64 int32 by dropping the high bits
    (2**32 + 1 becomes 1, a valid class): such targets raise, as in NumPy and torch; an
    ignore_index beyond int32 matches nothing. (A fresh process: this one enables x64.)"""
    script = tmp_path / "no_x64.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, jax, jax.numpy as jnp, focalx.jax as fj
        assert not jax.config.jax_enable_x64
        x = jnp.zeros((2, 3))
        for fn, t in ((fj.softmax_focal_loss, np.array([2 ** 32 + 1, 2], np.int64)),
                      (fj.sigmoid_focal_loss, np.full((2, 3), 2 ** 32 + 1, np.int64))):
            try:
                fn(x, t)
            except ValueError as e:
                assert "targets" in str(e), e
            else:
                raise AssertionError("no error")
        ok = fj.softmax_focal_loss(x, np.array([1, 2], np.int64), ignore_index=2 ** 40)
        assert abs(float(ok) - float(fj.softmax_focal_loss(x, np.array([1, 2])))) < 1e-7
        print("ok")
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "JAX_ENABLE_X64": "0"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

class TestGeneralizedFocalOptaxParity:
    """optax has no QFL, VFL or DFL; their neutral cases are optax's cross-entropies."""

    def test_qfl_beta0_and_vfl_positives_equal_optax_sigmoid_bce(self):
        rng = np.random.default_rng(18)
        x, q = rng.normal(size=(8, 5)) * 3, rng.uniform(0.01, 1.0, size=(8, 5))
        bce = optax.losses.sigmoid_binary_cross_entropy(jnp.asarray(x), jnp.asarray(q))
        got = fj.quality_focal_loss(jnp.asarray(x), jnp.asarray(q), beta=0.0, reduction="none")
        _close(got, bce, rtol=1e-13)
        got = fj.varifocal_loss(jnp.asarray(x), jnp.asarray(q), iou_weighted=False,
                                reduction="none")
        _close(got, bce, rtol=1e-13)

    def test_dfl_equals_optax_softmax_cross_entropy_on_the_two_hot_target(self):
        rng = np.random.default_rng(19)
        x = rng.normal(size=(6, 9)) * 3
        t = np.array([0.0, 3.0, 8.0, 2.5, 7.125, 5.0])
        q = np.zeros((6, 9))
        for i, v in enumerate(t):
            lo = min(int(v), 7)
            q[i, lo], q[i, lo + 1] = lo + 1 - v, v - lo
        want = optax.losses.softmax_cross_entropy(jnp.asarray(x), jnp.asarray(q))
        got = fj.distribution_focal_loss(jnp.asarray(x), jnp.asarray(t), reduction="none")
        _close(got, want, rtol=1e-13, atol=1e-15)
        ti = t.astype(np.int64)[[0, 1, 2, 5]]
        want = optax.losses.softmax_cross_entropy_with_integer_labels(jnp.asarray(x[[0, 1, 2, 5]]),
                                                                      jnp.asarray(ti))
        got = fj.distribution_focal_loss(jnp.asarray(x[[0, 1, 2, 5]]),
                                         jnp.asarray(ti.astype(float)), reduction="none")
        _close(got, want, rtol=1e-13)


def test_every_gfl_golden_case_under_jit_float32():
    """QFL (both layouts), VFL and DFL under jax.jit: every golden case."""
    harness = _under_jit(_harness.create("jax"))
    cases = runner.load_golden()["cases"]
    failures = []
    for variant in ("quality_focal_loss", "varifocal_loss", "distribution_focal_loss"):
        results = runner.run_cases(harness, runner.select(cases, variant=variant), "cpu",
                                   "float32", fn=getattr(fj, variant))
        assert results
        failures += [f"{r['id']}: {r.get('detail')}" for r in results if r["status"] != "passed"]
    assert not failures, "\n".join(failures)
class TestGammaSchedule:
    """A gamma schedule under jax.jit: gamma as a 0-d array is a traced input, so a value
    that changes every step compiles nothing after the first step; a Python float gamma is
    static (the spec branches on it) and retraces for every value."""

    def _step(self, variant, traces, **static):
        @jax.jit
        def step(x, t, gamma):
            traces.append(1)  # (runs when jit traces, not when it runs the compiled step)
            return jax.value_and_grad(lambda x: getattr(fj, variant)(
                x, t, gamma=gamma, **static))(x)
        return step

    @pytest.mark.parametrize("variant, per_class", [
        ("sigmoid_focal_loss", False), ("softmax_focal_loss", False),
        ("sigmoid_focal_loss", True), ("softmax_focal_loss", True)])
    def test_a_schedule_under_jit_traces_and_compiles_once(self, variant, per_class):
        x, t, y = _data(3, dtype=np.float64)
        target = t if variant == "sigmoid_focal_loss" else y
        sched = focalx.gamma_schedule("linear", start=0.0, end=2.0, steps=12)
        traces = []
        step = self._step(variant, traces)
        for i in range(14):
            g = sched(i)
            gamma = np.full(x.shape[-1], g) * np.linspace(0.5, 1.0, x.shape[-1]) if per_class \
                else g
            loss, grad = step(jnp.asarray(x), jnp.asarray(target), jnp.asarray(gamma))
            want, want_g = getattr(ref, variant + "_and_grad")(x, target, gamma=gamma)
            _close(loss, want, 1e-12, 1e-300)
            _close(grad, want_g, 1e-12, 1e-300)
        assert len(traces) == 1
        assert step._cache_size() == 1  # one compiled executable for all 14 values

    def test_a_python_float_gamma_retraces_for_every_value(self):
        # the contrast: gamma as a static argument compiles once per value
        x, t, _ = _data(4, dtype=np.float64)
        sched = focalx.gamma_schedule("step", boundaries=[2, 4, 6], values=[0.0, 0.5, 1.0, 2.0])
        traces = []

        @jax.jit
        def step(x, t, gamma):
            traces.append(gamma)
            return fj.sigmoid_focal_loss(x, t, gamma=gamma)
        step = jax.jit(step.__wrapped__, static_argnames=("gamma",))
        for i in range(8):
            step(jnp.asarray(x), jnp.asarray(t), gamma=sched(i))
        assert len(traces) == 4  # one per distinct value

    def test_a_traced_gamma_that_fails_its_check_gives_nan(self):
        x, t, _ = _data(5, dtype=np.float64)
        step = jax.jit(lambda x, g: jax.value_and_grad(
            lambda x: fj.sigmoid_focal_loss(x, jnp.asarray(t), gamma=g))(x))
        for bad in (-1.0, np.nan, np.inf):
            loss, grad = step(jnp.asarray(x), jnp.asarray(bad))
            assert np.isnan(float(loss)) and np.isnan(np.asarray(grad)).all()


# ---- the fused linear + softmax focal loss (issue 19) ------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_under_jit_is_the_eager_result_and_the_materialised_loss(reduction):
    """custom_vjp under jit (the blocks unrolled in one program) gives the eager numbers,
    which are the reference's of the materialised logits."""
    import jax.numpy as jnp
    rng = np.random.default_rng(0)
    h, w, b = rng.normal(size=(9, 3)), rng.normal(size=(6, 3)), rng.normal(size=6)
    y = rng.integers(0, 6, 9)
    y[2] = -100
    c = np.linspace(0.5, 1.5, 9) if reduction == "none" else 1.0

    def total(h, w, b):
        loss = fj.linear_softmax_focal_loss(h, w, jnp.asarray(y), linear_bias=b,
                                            reduction=reduction, chunk_size=4)
        return (loss * c).sum()
    args = tuple(jnp.asarray(a) for a in (h, w, b))
    eager = jax.value_and_grad(total, argnums=(0, 1, 2))(*args)
    jitted = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2)))(*args)
    loss, g = ref.softmax_focal_loss_and_grad(h @ w.T + b, y, reduction=reduction)
    g = g * (c[:, None] if reduction == "none" else 1.0)
    want = ((loss * c).sum(), (g @ w, g.T @ h, g.sum(0)))
    for got in (eager, jitted):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        for a, e in zip(got[1], want[1]):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_linear_weight_gradient_tiles_add_every_class_once(monkeypatch, jitted):
    """The weight gradient's accumulator is updated a tile of classes at a time (tiles of
    2 of 7 classes here: three in the loop and a remainder of one): every class's rows
    get their share once, as the materialised logits' gradient."""
    import jax.numpy as jnp
    from focalx.backends.jax import linear as jlinear
    monkeypatch.setattr(jlinear, "_ADD_TILE_ELEMENTS", 6)  # 6 // H=3: tiles of 2 rows
    updates = []
    dus = jax.lax.dynamic_update_slice_in_dim
    monkeypatch.setattr(jax.lax, "dynamic_update_slice_in_dim",
                        lambda *a, **k: updates.append(1) or dus(*a, **k))
    rng = np.random.default_rng(4)
    h, w, b = rng.normal(size=(10, 3)), rng.normal(size=(7, 3)), rng.normal(size=7)
    y = rng.integers(0, 7, 10)

    def total(h, w, b):
        return fj.linear_softmax_focal_loss(h, w, jnp.asarray(y), linear_bias=b,
                                            gamma=1.5, chunk_size=2)
    fn = jax.value_and_grad(total, argnums=(0, 1, 2))
    loss, grads = (jax.jit(fn) if jitted else fn)(*(jnp.asarray(a) for a in (h, w, b)))
    assert updates, "the tiled update did not run"
    want, g = ref.softmax_focal_loss_and_grad(h @ w.T + b, y, gamma=1.5)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    for a, e in zip(grads, (g @ w, g.T @ h, g.sum(0))):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
