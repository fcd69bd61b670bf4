"""Focal loss vs cross-entropy for a Flax (NNX) classifier on imbalanced data, trained with optax.

Run: `python examples/jax_flax_imbalanced.py` (needs jax, flax, optax; under a minute on a CPU).

The data is generated here: 8 features, about 3% positives that sit in a thin slab of feature
space, with label noise. The same MLP is trained twice from the same initialisation (the output
bias set to focalx.prior_bias(positive rate), as RetinaNet does): once with
optax.sigmoid_binary_cross_entropy, once with focalx.jax.sigmoid_focal_loss. It prints precision
and recall at threshold 0.5 and average precision (AP) on held-out data.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import focalx
import focalx.jax as fj


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    score = x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] ** 2
    y = (score > 2.0).astype(np.float32)
    flip = rng.random(n) < 0.005  # label noise
    y[flip] = 1.0 - y[flip]
    return x, y


class MLP(nnx.Module):
    def __init__(self, d, prior, rngs):
        self.l1 = nnx.Linear(d, 32, rngs=rngs)
        self.l2 = nnx.Linear(32, 32, rngs=rngs)
        self.out = nnx.Linear(32, 1, rngs=rngs)
        self.out.bias[...] = jnp.full((1,), prior)

    def __call__(self, x):
        return self.out(nnx.relu(self.l2(nnx.relu(self.l1(x)))))[..., 0]


def average_precision(scores, labels):
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0.5
    if not hits.any():
        return float("nan")
    precision_at_hits = np.cumsum(hits)[hits] / (np.nonzero(hits)[0] + 1)
    return float(precision_at_hits.mean())


def train(loss_name, x, y, *, steps, seed, batch=512):
    prior = focalx.prior_bias(float(y.mean()))
    model = MLP(x.shape[1], prior, nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    if loss_name == "focal":
        def loss_fn(m, xb, yb):
            return fj.sigmoid_focal_loss(m(xb), yb, gamma=2.0, alpha=0.25)
    else:
        def loss_fn(m, xb, yb):
            return optax.sigmoid_binary_cross_entropy(m(xb), yb).mean()

    @nnx.jit
    def step(m, opt, xb, yb):
        loss, grads = nnx.value_and_grad(loss_fn)(m, xb, yb)
        opt.update(m, grads)
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        idx = rng.integers(0, len(x), size=batch)
        losses.append(float(step(model, optimizer, jnp.asarray(x[idx]), jnp.asarray(y[idx]))))
    return model, losses


def evaluate(model, x, y):
    scores = np.asarray(jax.nn.sigmoid(model(jnp.asarray(x))))
    pred = scores > 0.5
    pos = y > 0.5
    tp = int((pred & pos).sum())
    return {"precision": tp / max(1, int(pred.sum())), "recall": tp / max(1, int(pos.sum())),
            "AP": average_precision(scores, y)}


def main(steps=1500, seed=0, quiet=False):
    x_train, y_train = make_data(40_000, seed)
    x_test, y_test = make_data(20_000, seed + 1)
    results = {}
    for name in ("cross-entropy", "focal"):
        model, losses = train(name, x_train, y_train, steps=steps, seed=seed)
        results[name] = dict(evaluate(model, x_test, y_test), first_loss=losses[0],
                             last_loss=float(np.mean(losses[-20:])))
    if not quiet:
        print(f"positives: train {y_train.mean():.2%}, test {y_test.mean():.2%}; {steps} steps")
        print("| loss | precision@0.5 | recall@0.5 | AP |")
        print("|---|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['AP']:.3f} |")
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(a.steps, a.seed)
