"""Swap paddle.nn.CrossEntropyLoss for focalx.paddle.FocalLoss in a small training loop.

Synthetic, imbalanced 3-class data (2-D Gaussian blobs that overlap; 90% / 8% / 2%
of the training set), a small MLP, the same seed and optimiser for both losses.
Recall per class is measured on a balanced test set, where cross-entropy's
preference for the majority class shows. CPU only, a few seconds.

    python examples/paddle_imbalanced.py            # 400 steps per loss
    python examples/paddle_imbalanced.py --steps 20 # a smoke run
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import paddle

import focalx.paddle as fpd

CENTRES = np.array([[0.0, 0.0], [1.6, 0.4], [0.4, 1.8]])
TRAIN_SHARE = (0.90, 0.08, 0.02)


def make_data(n, shares, seed):
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, shares)
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    x = CENTRES[y] + rng.normal(scale=0.7, size=(n, 2))
    return x.astype(np.float32), y.astype(np.int64)


def train(loss_fn, x, y, steps, seed, batch=256):
    paddle.seed(seed)
    model = paddle.nn.Sequential(paddle.nn.Linear(2, 32), paddle.nn.ReLU(),
                                 paddle.nn.Linear(32, 3))
    opt = paddle.optimizer.Adam(learning_rate=0.01, parameters=model.parameters())
    rng = np.random.default_rng(seed)
    xt, yt = paddle.to_tensor(x), paddle.to_tensor(y)
    for _ in range(steps):
        idx = paddle.to_tensor(rng.integers(0, len(x), batch))
        loss = loss_fn(model(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        opt.clear_grad()
    return model


def recall(model, x, y):
    with paddle.no_grad():
        pred = model(paddle.to_tensor(x)).argmax(axis=-1).numpy()
    return [float((pred[y == k] == k).mean()) for k in range(3)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paddle.set_device("cpu")
    x, y = make_data(20000, TRAIN_SHARE, args.seed)
    xv, yv = make_data(6000, (1 / 3, 1 / 3, 1 / 3), args.seed + 1)
    results = {}
    for name, loss_fn in [
        ("CrossEntropyLoss", paddle.nn.CrossEntropyLoss()),
        ("FocalLoss(gamma=2)", fpd.FocalLoss(gamma=2.0)),  # the only line that changes
        ("FocalLoss(gamma=2, alpha)", fpd.FocalLoss(gamma=2.0, alpha=[0.1, 0.3, 0.6])),
    ]:
        t0 = time.perf_counter()
        model = train(loss_fn, x, y, args.steps, args.seed)
        r = recall(model, xv, yv)
        results[name] = r
        print(f"{name:26s} recall per class (balanced test set): "
              + ", ".join(f"{v:.3f}" for v in r)
              + f"; balanced accuracy {np.mean(r):.3f}; {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main()
