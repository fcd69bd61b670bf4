"""focalx.keras: Keras parity, serialisation, model.fit, the same numbers on every Keras backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .conftest import import_backend

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
tf = import_backend("tensorflow")
import keras  # noqa: E402

import focalx.keras as fk  # noqa: E402
from focalx import _numpy as ref  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="KERAS_BACKEND is set to another backend")

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _data(seed=0, n=64, c=7, lo=-15.0, hi=15.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(lo, hi, size=(n, c)).astype(np.float32)
    t = (rng.random((n, c)) < 0.3).astype(np.float32)
    y = rng.integers(0, c, size=n)
    sw = rng.random(n).astype(np.float32)
    return x, t, y, sw


def _close(a, b, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol,
                               atol=atol)


REDUCTIONS = ["sum_over_batch_size", "sum", "mean_with_sample_weight", "none"]


class TestBinaryFocalLoss:
    @pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 4.5])
    @pytest.mark.parametrize("alpha", [0.25, 0.6])
    def test_equals_keras_binary_focal_crossentropy_within_15(self, gamma, alpha):
        x, t, _, sw = _data(1)
        keras_loss = keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=alpha, gamma=gamma, from_logits=True)
        ours = fk.BinaryFocalLoss(alpha=alpha, gamma=gamma, from_logits=True)
        _close(ours(t, x), keras_loss(t, x), rtol=2e-6)
        _close(ours(t, x, sample_weight=sw), keras_loss(t, x, sample_weight=sw), rtol=2e-6)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_alpha_none_label_smoothing_and_reductions_equal_keras(self, reduction):
        x, t, _, sw = _data(2)
        keras_loss = keras.losses.BinaryFocalCrossentropy(
            gamma=2.0, from_logits=True, label_smoothing=0.1, reduction=reduction)
        ours = fk.BinaryFocalLoss(alpha=None, gamma=2.0, from_logits=True,
                                  label_smoothing=0.1, reduction=reduction)
        _close(ours(t, x, sample_weight=sw), keras_loss(t, x, sample_weight=sw), rtol=2e-6)

    def test_probabilities_equal_keras_where_keras_does_not_clip(self):
        x, t, _, _ = _data(3, lo=-5, hi=5)
        p = tf.sigmoid(x)
        keras_loss = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True)
        _close(fk.BinaryFocalLoss()(t, p), keras_loss(t, p), rtol=2e-6)

    def test_beyond_17_the_loss_is_not_clipped(self):
        x = np.array([[-30.0], [30.0], [-17.5], [40.0]], np.float32)
        t = np.array([[1.0], [0.0], [1.0], [0.0]], np.float32)
        got = fk.BinaryFocalLoss(from_logits=True, reduction="none")(t, x)
        want = ref.sigmoid_focal_loss(x, t, reduction="none")[:, 0]
        _close(got, want, rtol=1e-6)
        assert got.numpy()[0] == pytest.approx(7.5, rel=1e-6)  # 0.25 * 30
        # Keras' probability path is capped at -log(1e-7) per element; focalx is not
        p = tf.sigmoid(x)
        capped = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True,
                                                      reduction="none")(t, p).numpy()
        assert capped.max() < 0.75 * 16.2 and got.numpy().max() > 0.75 * 39

    def test_rank_one_targets_meet_a_trailing_unit_axis(self):
        x, t, _, _ = _data(4, c=1)
        _close(fk.BinaryFocalLoss(from_logits=True)(t[:, 0], x),
               ref.sigmoid_focal_loss(x, t), rtol=2e-6)


class TestSparseCategoricalFocalLoss:
    def test_gamma0_equals_sparse_categorical_crossentropy_and_tf_nn(self):
        x, _, y, sw = _data(5)
        ours = fk.SparseCategoricalFocalLoss(gamma=0.0, from_logits=True)
        keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        _close(ours(y, x), keras_loss(y, x), rtol=2e-6)
        _close(ours(y, x), tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=x)), rtol=2e-6)
        _close(ours(y[:, None], x, sample_weight=sw), keras_loss(y[:, None], x, sample_weight=sw),
               rtol=2e-6)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_ignore_index_equals_keras_ignore_class(self, reduction):
        x, _, y, sw = _data(6)
        y[:10] = 3
        ours = fk.SparseCategoricalFocalLoss(gamma=0.0, from_logits=True, ignore_index=3,
                                             reduction=reduction)
        keras_loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=3, reduction=reduction)
        _close(ours(y, x, sample_weight=sw), keras_loss(y, x, sample_weight=sw), rtol=2e-6)
        _close(ours(y, x), keras_loss(y, x), rtol=2e-6)

    def test_focal_values_match_the_reference(self):
        x, _, y, _ = _data(7)
        y[:5] = 2
        ours = fk.SparseCategoricalFocalLoss(gamma=2.0, alpha=[.1, .2, .3, .1, .1, .1, .1],
                                             weight=[1, 2, 1, 1, 3, 1, 1], from_logits=True,
                                             reduction="none", ignore_index=2)
        want = ref.softmax_focal_loss(x, y, gamma=2.0, alpha=[.1, .2, .3, .1, .1, .1, .1],
                                      weight=[1, 2, 1, 1, 3, 1, 1], ignore_index=2,
                                      reduction="none")
        _close(ours(y, x), want, rtol=2e-5, atol=1e-7)


class TestCategoricalFocalLoss:
    def test_gamma0_equals_categorical_crossentropy_with_label_smoothing(self):
        x, _, y, sw = _data(8)
        onehot = np.eye(7, dtype=np.float32)[y]
        ours = fk.CategoricalFocalLoss(gamma=0.0, from_logits=True, label_smoothing=0.1)
        keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
        _close(ours(onehot, x, sample_weight=sw), keras_loss(onehot, x, sample_weight=sw),
               rtol=2e-6)

    def test_equals_keras_categorical_focal_crossentropy_where_it_does_not_clip(self):
        x, _, y, _ = _data(9, lo=-4, hi=4)
        onehot = np.eye(7, dtype=np.float32)[y]
        ours = fk.CategoricalFocalLoss(gamma=2.0, alpha=0.25, from_logits=True)
        keras_loss = keras.losses.CategoricalFocalCrossentropy(gamma=2.0, alpha=0.25,
                                                               from_logits=True)
        _close(ours(onehot, x), keras_loss(onehot, x), rtol=1e-5)

    def test_keras_caps_a_confident_mistake_at_16_focalx_does_not(self):
        x = np.array([[40.0, -40.0, 0.0]], np.float32)
        target = np.array([[0.0, 1.0, 0.0]], np.float32)
        keras_value = float(keras.losses.CategoricalFocalCrossentropy(
            gamma=0.0, alpha=1.0, from_logits=True)(target, x))
        ours = float(fk.CategoricalFocalLoss(gamma=0.0, from_logits=True)(target, x))
        assert keras_value == pytest.approx(-np.log(1e-7), rel=1e-3)
        assert ours == pytest.approx(80.0, rel=1e-6)



def test_the_other_label_format_is_named_not_a_contradicting_dtype():
    """Class indices given to CategoricalFocalLoss, one-hot labels given to the sparse
    losses: a ValueError naming the format and the class to use (the cast each class
    makes to its targets' dtype used to turn this into a TypeError contradicting the dtype
    the user passed); (N, 1) class indices still work."""
    x, _, y, _ = _data(10)
    onehot = np.eye(7, dtype=np.float32)[y]
    with pytest.raises(ValueError, match=r"one-hot or probability targets.*got y_true of "
                                         r"shape \(\d+,\).*use SparseCategoricalFocalLoss"):
        fk.CategoricalFocalLoss(from_logits=True)(y.astype(np.int32), x)
    for loss, hint in ((fk.SparseCategoricalFocalLoss(from_logits=True),
                        "use CategoricalFocalLoss"),
                       (fk.SparseAsymmetricSoftmaxLoss(), "take their argmax")):
        with pytest.raises(ValueError, match=r"integer class indices.*got y_true of shape "
                                             r"\(\d+, 7\).*" + hint):
            loss(onehot, x)
        _close(loss(y[:, None], x), loss(y, x), rtol=1e-7)

class TestConstruction:
    @pytest.mark.parametrize("cls,kw,err,match", [
        (fk.BinaryFocalLoss, dict(gamma=-1.0), ValueError, "gamma"),
        (fk.BinaryFocalLoss, dict(alpha=1.5), ValueError, "alpha"),
        (fk.BinaryFocalLoss, dict(alpha="x"), TypeError, "alpha"),
        (fk.BinaryFocalLoss, dict(pos_weight=-1.0), ValueError, "pos_weight"),
        (fk.BinaryFocalLoss, dict(label_smoothing=1.0), ValueError, "label_smoothing"),
        (fk.BinaryFocalLoss, dict(axis="last"), TypeError, "axis"),
        (fk.CategoricalFocalLoss, dict(weight=2.0), TypeError, "weight"),
        (fk.SparseCategoricalFocalLoss, dict(ignore_index=1.5), TypeError, "ignore_index"),
        (fk.SparseCategoricalFocalLoss, dict(reduction="avg"), ValueError, "reduction"),
    ])
    def test_bad_arguments_name_the_argument(self, cls, kw, err, match):
        with pytest.raises(err, match=match):
            cls(**kw)

    def test_bad_inputs_raise_like_the_functions(self):
        x, t, y, _ = _data(10)
        with pytest.raises(ValueError, match="targets"):
            fk.SparseCategoricalFocalLoss(from_logits=True)(y + 7, x)
        with pytest.raises(ValueError, match="probabilities"):
            fk.BinaryFocalLoss()(t, x)  # logits passed where probabilities are expected

    @pytest.mark.parametrize("cls,kw", [
        (fk.BinaryFocalLoss, dict(gamma=0.5, alpha=None, pos_weight=[1, 2, 3, 1, 1, 1, 2],
                                  from_logits=True, label_smoothing=0.05, reduction="sum")),
        (fk.CategoricalFocalLoss, dict(gamma=1.0, alpha=[.1, .2, .3, .1, .1, .1, .1],
                                       weight=[1, 2, 1, 1, 3, 1, 1], from_logits=True)),
        (fk.SparseCategoricalFocalLoss, dict(gamma=3.0, ignore_index=0, from_logits=True,
                                             name="sfl")),
    ])
    def test_config_round_trip_gives_the_same_loss(self, cls, kw):
        loss = cls(**kw)
        config = loss.get_config()
        json.dumps(config)
        again = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(again) is cls and again.get_config() == config
        x, t, y, sw = _data(11)
        target = y if cls is fk.SparseCategoricalFocalLoss else \
            (t if cls is fk.BinaryFocalLoss else np.eye(7, dtype=np.float32)[y])
        _close(again(target, x, sample_weight=sw), loss(target, x, sample_weight=sw), rtol=0)


SAVED = textwrap.dedent("""
    import sys, numpy as np, keras
    import focalx.keras as fk
    model = keras.models.load_model(sys.argv[1])
    assert isinstance(model.loss, fk.SparseCategoricalFocalLoss), model.loss
    x = np.load(sys.argv[2])
    y = np.arange(len(x)) % 3
    print(repr(float(model.evaluate(x, y, verbose=0))))
""")


class TestModelFit:
    @pytest.mark.parametrize("jit", [False, True])
    def test_fit_trains_and_a_saved_model_reloads_with_its_loss(self, tmp_path, jit):
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(300, 4)).astype(np.float32)
        y = (np.arange(300) % 3)
        x[:, 0] += y * 2.0
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=jit,
                      loss=fk.SparseCategoricalFocalLoss(gamma=2.0, from_logits=True,
                                                         ignore_index=-1))
        hist = model.fit(x, y, batch_size=64, epochs=5, verbose=0)  # last batch: 44 samples
        assert hist.history["loss"][-1] < 0.7 * hist.history["loss"][0]
        path = str(tmp_path / "model.keras")
        model.save(path)
        np.save(tmp_path / "x.npy", x)
        want = model.evaluate(x, y, verbose=0)
        proc = subprocess.run([sys.executable, "-c", SAVED, path, str(tmp_path / "x.npy")],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, KERAS_BACKEND="tensorflow"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(want, rel=1e-6)

    def test_example_trains_all_three_losses(self):
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        try:
            import keras_imbalanced as example
        finally:
            sys.path.pop(0)
        results = example.main(epochs=1, quiet=True)
        assert len(results) == 3
        for r in results.values():
            assert np.isfinite(r["first_loss"]) and np.isfinite(r["last_loss"])
            assert 0.0 <= r["balanced_accuracy"] <= 1.0


# The same focalx losses, evaluated here and under another Keras backend (a dict
# expression over fk, np, x, t, y, sw); class vectors are given as lists (passed to
# focalx as they are).
FOCALX_LOSSES = textwrap.dedent("""{
    "binary": float(fk.BinaryFocalLoss(from_logits=True)(t, x, sample_weight=sw)),
    "categorical": float(fk.CategoricalFocalLoss(from_logits=True, alpha=0.5)(
        np.eye(x.shape[1], dtype=np.float32)[y], x)),
    "sparse": float(fk.SparseCategoricalFocalLoss(from_logits=True, ignore_index=1)(y, x)),
    "sparse_vectors": float(fk.SparseCategoricalFocalLoss(
        from_logits=True, alpha=[.1, .2, .3, .1, .1, .1, .1], weight=[1, 2, 1, 1, 3, 1, 1])(
        y, x)),
    "binary_vectors": float(fk.BinaryFocalLoss(
        from_logits=True, alpha=[.1, .2, .3, .4, .5, .6, .7],
        pos_weight=[1, 2, 3, 1, 1, 2, 1])(t, x)),
}""")

OTHER_BACKEND = textwrap.dedent("""
    import json, sys, numpy as np, keras
    import focalx.keras as fk
    assert keras.backend.backend() == sys.argv[1]
    data = json.loads(sys.argv[2])
    x = np.asarray(data["x"], np.float32); t = np.asarray(data["t"], np.float32)
    y = np.asarray(data["y"]); sw = np.asarray(data["sw"], np.float32)
""") + "out = " + FOCALX_LOSSES + textwrap.dedent("""
    out["keras_binary"] = float(keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, from_logits=True)(t, x, sample_weight=sw))
    print(json.dumps(out))
""")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_numbers_under_other_keras_backends(backend):
    import_backend(backend)
    x, t, y, sw = _data(12, n=16, lo=-30, hi=30)  # beyond the range Keras clips
    payload = json.dumps(dict(x=x.tolist(), t=t.tolist(), y=y.tolist(), sw=sw.tolist()))
    proc = subprocess.run([sys.executable, "-c", OTHER_BACKEND, backend, payload],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, KERAS_BACKEND=backend))
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = json.loads(proc.stdout.strip().splitlines()[-1])
    here = eval(FOCALX_LOSSES, dict(fk=fk, np=np, x=x, t=t, y=y, sw=sw))  # noqa: S307
    assert set(here) == {"binary", "categorical", "sparse", "sparse_vectors", "binary_vectors"}
    want = ref.sigmoid_focal_loss(x, t, alpha=[.1, .2, .3, .4, .5, .6, .7],
                                  pos_weight=[1, 2, 3, 1, 1, 2, 1], reduction="none").mean(-1)
    assert here["binary_vectors"] == pytest.approx(float(want.mean()), rel=1e-5)
    for k, v in here.items():
        assert other[k] == pytest.approx(v, rel=1e-5), k
    keras_here = float(keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, from_logits=True)(t, x, sample_weight=sw))
    # Keras itself differs between its backends at these logits; focalx does not
    assert abs(other["keras_binary"] - keras_here) > 1e-3 * keras_here


# ---- Generalized Focal Loss (QFL, DFL) and Varifocal Loss ------------------------------

class TestPoly1AndAsymmetricLoss:
    def test_epsilon_reaches_the_function_and_the_config(self):
        x, t, y, _ = _data(20, n=16)
        xs = x.astype(np.float64)
        got = fk.BinaryFocalLoss(from_logits=True, epsilon=-1.0, reduction="none")(t, x)
        want = ref.sigmoid_focal_loss(xs, t, epsilon=-1.0, reduction="none").mean(-1)
        _close(got, want, rtol=2e-5)
        got = fk.SparseCategoricalFocalLoss(from_logits=True, epsilon=2.0, reduction="none")(y, x)
        _close(got, ref.softmax_focal_loss(xs, y, epsilon=2.0, reduction="none"), rtol=2e-5)
        loss = fk.CategoricalFocalLoss(epsilon=1.5)
        assert loss.get_config()["epsilon"] == 1.5
        again = keras.losses.deserialize(keras.losses.serialize(loss))
        assert again.epsilon == 1.5
        with pytest.raises(ValueError, match="epsilon"):
            fk.BinaryFocalLoss(epsilon=float("inf"))

    def test_asymmetric_loss_is_the_function_and_round_trips(self):
        x, t, _, sw = _data(21, n=16)
        loss = fk.AsymmetricLoss(gamma_pos=1.0, gamma_neg=3.0, clip=0.1, label_smoothing=0.05)
        got = loss(t, x, sample_weight=sw)
        per = ref.asymmetric_loss(x.astype(np.float64), t, gamma_pos=1.0, gamma_neg=3.0,
                                  clip=0.1, label_smoothing=0.05, reduction="none").mean(-1)
        _close(got, np.sum(per * sw) / len(sw), rtol=2e-5)
        again = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(again) is fk.AsymmetricLoss and again.get_config() == loss.get_config()
        _close(again(t, x), loss(t, x), rtol=0)
        for kw, err, name in ((dict(clip=1.5), ValueError, "clip"),
                              (dict(gamma_pos="1"), TypeError, "gamma_pos")):
            with pytest.raises(err, match=name):
                fk.AsymmetricLoss(**kw)

    def test_sparse_asymmetric_softmax_loss_is_the_function_and_round_trips(self):
        x, _, y, _ = _data(22, n=16)
        loss = fk.SparseAsymmetricSoftmaxLoss(gamma_pos=1.0, gamma_neg=2.0, reduction="none")
        want = ref.asymmetric_softmax_loss(x.astype(np.float64), y, gamma_pos=1.0,
                                           gamma_neg=2.0, reduction="none")
        _close(loss(y, x), want, rtol=2e-5)
        again = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(again) is fk.SparseAsymmetricSoftmaxLoss
        _close(again(y, x), loss(y, x), rtol=0)
        with pytest.raises(ValueError, match="label_smoothing"):
            fk.SparseAsymmetricSoftmaxLoss(label_smoothing=1.0)
def test_gfl_keras_losses_are_the_functions_and_round_trip_their_config():
    rng = np.random.default_rng(18)
    x = rng.normal(size=(6, 4)) * 3
    q = np.where(rng.random((6, 4)) < 0.5, rng.random((6, 4)), 0.0)
    t = np.array([0.0, 1.5, 3.0, 2.25, 0.5, 1.0])
    for loss, y, want in [
            (fk.QualityFocalLoss(beta=0.5), q,
             ref.quality_focal_loss(x, q, beta=0.5, reduction="none").mean(-1).mean()),
            (fk.VarifocalLoss(alpha=0.5, gamma=1.0), q,
             ref.varifocal_loss(x, q, alpha=0.5, gamma=1.0, reduction="none").mean(-1).mean()),
            (fk.DistributionFocalLoss(), t, ref.distribution_focal_loss(x, t))]:
        got = loss(tf.constant(y), tf.constant(x))
        np.testing.assert_allclose(float(got), want, rtol=1e-6)  # (Keras: float32)
        again = type(loss).from_config(loss.get_config())
        assert again.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="gamma"):
        fk.VarifocalLoss(gamma=-1.0)
def test_loss_classes_take_a_per_class_gamma_and_serialise_it():
    rng = np.random.default_rng(18)
    x = rng.normal(size=(8, 3)) * 3
    y = rng.integers(0, 3, 8)
    t = (rng.random((8, 3)) < 0.4).astype(np.float64)
    gamma = [0.0, 0.25, 2.0]
    for loss, target, fn, kw in (
            (fk.SparseCategoricalFocalLoss(gamma=np.array(gamma), from_logits=True), y,
             ref.softmax_focal_loss, {}),
            (fk.BinaryFocalLoss(gamma=gamma, alpha=None, from_logits=True), t,
             ref.sigmoid_focal_loss, {"alpha": None})):
        want = fn(x, target, gamma=gamma, **kw)
        _close(loss(tf.constant(target), tf.constant(x)), want, rtol=2e-6)  # (Keras computes in float32)
        config = json.loads(json.dumps(loss.get_config()))
        assert config["gamma"] == gamma
        again = type(loss).from_config(config)
        _close(again(tf.constant(target), tf.constant(x)), want, rtol=2e-6)
    with pytest.raises(ValueError, match="gamma"):
        fk.SparseCategoricalFocalLoss(gamma=[1.0, -1.0, 1.0])


# ---- the fused linear + softmax focal loss as a Keras layer (issue 19) -------------------

# A small language-model head trained by fit through LinearFocalLoss in compute_loss, with
# a last batch smaller than the others (TensorFlow retraces with a None batch); prints the
# epochs' losses and the head's loss against the float64 reference.
LINEAR_FIT = textwrap.dedent("""
    import json, warnings, numpy as np, keras
    import focalx.keras as fk
    from focalx import _numpy as ref
    # the one-block fallback (rows unknown until run time without padded blocks) fails it
    warnings.filterwarnings("error", message="focalx: linear_softmax_focal_loss",
                            category=RuntimeWarning)
    rng = np.random.default_rng(0)
    N, T, H, V = 50, 4, 8, 30
    x = rng.normal(size=(N, T, H)).astype("float32")
    y = (np.abs(x[..., :3]).argmax(-1) * 7 + 1).astype("int32")
    y[0, 0] = -100

    class LM(keras.Model):
        def __init__(self):
            super().__init__()
            self.body = keras.layers.Dense(H, activation="tanh")
            self.head = fk.LinearFocalLoss(V, in_features=H, use_bias=True, gamma=2.0,
                                           chunk_size=16)

        def call(self, x):
            return self.body(x)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                         training=True):
            return self.head(y_pred, y)

    keras.utils.set_random_seed(0)
    model = LM()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history["loss"]
    states = keras.ops.convert_to_numpy(model(x)).astype(np.float64).reshape(-1, H)
    k, b = (keras.ops.convert_to_numpy(v.value).astype(np.float64)
            for v in (model.head.kernel, model.head.bias))
    got = float(keras.ops.convert_to_numpy(model.head(model(x), keras.ops.convert_to_tensor(y))))
    want = float(ref.softmax_focal_loss(states @ k.T + b, y.reshape(-1), gamma=2.0))
    print(json.dumps(dict(history=history, got=got, want=want)))
""")


class TestLinearFocalLoss:
    def test_loss_and_gradients_are_the_materialised_heads(self):
        rng = np.random.default_rng(40)
        B, T, H, V = 3, 5, 6, 40
        x, y = rng.normal(size=(B, T, H)), rng.integers(0, V, (B, T))
        y[0, 1] = -100
        for reduction in ("mean", "none"):
            layer = fk.LinearFocalLoss(V, use_bias=True, gamma=1.5, alpha=0.25, chunk_size=4,
                                       reduction=reduction, dtype="float64",
                                       bias_initializer="glorot_uniform")
            with tf.GradientTape() as tape:
                loss = layer(tf.constant(x), tf.constant(y))
                total = tf.reduce_sum(loss)
            gk, gb = tape.gradient(total, [layer.kernel, layer.bias])
            k, b = layer.kernel.numpy(), layer.bias.numpy()
            want, g = ref.softmax_focal_loss_and_grad(x.reshape(-1, H) @ k.T + b, y.reshape(-1),
                                                      gamma=1.5, alpha=0.25,
                                                      reduction=reduction)
            assert tuple(loss.shape) == ((B, T) if reduction == "none" else ())
            _close(np.reshape(loss, -1) if reduction == "none" else loss, want, rtol=1e-12)
            _close(gk, g.T @ x.reshape(-1, H), rtol=1e-10, atol=1e-12)
            _close(gb, g.sum(0), rtol=1e-10, atol=1e-12)

    def test_config_round_trips_and_bad_arguments_fail_by_name(self):
        layer = fk.LinearFocalLoss(12, in_features=4, gamma=[1.0] * 12, weight=[2.0] * 12,
                                   ignore_index=None, chunk_size=3, name="head")
        again = keras.layers.deserialize(keras.layers.serialize(layer))
        assert type(again) is fk.LinearFocalLoss and again.get_config() == layer.get_config()
        assert again.kernel.shape == (12, 4)
        for kw, name in ((dict(weight=[1.0] * 3), "weight"), (dict(gamma=-1.0), "gamma"),
                         (dict(chunk_size=0), "chunk_size"), (dict(reduction="avg"), "reduction"),
                         (dict(in_features=0), "in_features")):
            with pytest.raises(ValueError, match=name):
                fk.LinearFocalLoss(12, **kw)
        with pytest.raises(ValueError, match="num_classes"):
            fk.LinearFocalLoss(0)
        x = tf.zeros([2, 3, 4])
        with pytest.raises(ValueError, match=r"target must have shape \(2, 3\)"):
            layer(x, tf.zeros([3, 2], tf.int32))
        _close(layer(x, tf.fill([2, 3], 5.0)), layer(x, tf.fill([2, 3], 5)), rtol=0)

    @pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
    def test_fit_trains_a_head_with_a_smaller_last_batch_under_every_backend(self, backend):
        import_backend(backend)
        proc = subprocess.run([sys.executable, "-c", LINEAR_FIT], capture_output=True, text=True,
                              timeout=300, env=dict(os.environ, KERAS_BACKEND=backend))
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["history"][-1] < 0.5 * out["history"][0]
        assert out["got"] == pytest.approx(out["want"], rel=1e-5)
