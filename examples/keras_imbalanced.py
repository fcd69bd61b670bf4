"""Keras ``model.fit`` on imbalanced classes: cross-entropy vs focalx's sparse focal loss.

Five classes with 90 / 5 / 3 / 1.5 / 0.5 % of the samples, overlapping Gaussian
clusters in 20 dimensions. The same MLP is trained with Adam, once with
``keras.losses.SparseCategoricalCrossentropy`` and once with
``focalx.keras.SparseCategoricalFocalLoss(gamma=2)``, and once with a
per-class ``alpha`` from ``focalx.alpha_from_counts`` (Cui et al.'s effective
number of samples); each is evaluated on held-out
data: accuracy, recall per class and balanced accuracy (the mean recall).

    python examples/keras_imbalanced.py            # about 10 s on a 2-core CPU
    python examples/keras_imbalanced.py --epochs 1

Any Keras 3 backend works (``KERAS_BACKEND=tensorflow|jax|torch``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SHARES = (0.90, 0.05, 0.03, 0.015, 0.005)


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).normal(size=(len(SHARES), 20)) * 1.2
    y = rng.choice(len(SHARES), size=n, p=SHARES)
    x = centers[y] + rng.normal(size=(n, 20)) * 2.5
    return x.astype("float32"), y.astype("int64")


def build(keras, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(len(SHARES)),  # logits
    ])


def main(epochs=8, quiet=False, seed=0):
    import keras

    import focalx
    import focalx.keras as fk

    x, y = make_data(20000, seed)
    xt, yt = make_data(20000, seed + 1)
    losses = {
        "cross-entropy": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "focal (gamma 2)": fk.SparseCategoricalFocalLoss(gamma=2.0, from_logits=True),
        "focal (gamma 2, alpha from counts)": fk.SparseCategoricalFocalLoss(
            gamma=2.0, from_logits=True,
            alpha=focalx.alpha_from_counts(np.bincount(y, minlength=len(SHARES)),
                                           method="effective_number", beta=0.999)),
    }
    results = {}
    for name, loss in losses.items():
        model = build(keras, seed)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        start = time.perf_counter()
        hist = model.fit(x, y, batch_size=256, epochs=epochs, verbose=0)
        seconds = time.perf_counter() - start
        pred = np.argmax(np.asarray(model.predict(xt, batch_size=4096, verbose=0)), axis=-1)
        recall = [float(np.mean(pred[yt == c] == c)) for c in range(len(SHARES))]
        results[name] = dict(first_loss=float(hist.history["loss"][0]),
                             last_loss=float(hist.history["loss"][-1]),
                             accuracy=float(np.mean(pred == yt)), recall=recall,
                             balanced_accuracy=float(np.mean(recall)), seconds=seconds)
    if not quiet:
        print(f"keras {keras.__version__} ({keras.backend.backend()}), {epochs} epochs")
        print("| loss | accuracy | balanced accuracy | recall per class (90/5/3/1.5/0.5 %) | fit s |")
        print("|---|---|---|---|---|")
        for name, r in results.items():
            rec = " / ".join(f"{v:.2f}" for v in r["recall"])
            print(f"| {name} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {rec} | "
                  f"{r['seconds']:.1f} |")
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    if args.epochs < 1:
        ap.error("--epochs must be >= 1")
    main(epochs=args.epochs)
