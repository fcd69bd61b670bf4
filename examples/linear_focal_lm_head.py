"""A tiny language-model head trained with the fused linear + softmax focal loss, in every
installed framework: run `python examples/linear_focal_lm_head.py` (seconds).

The model predicts the next token of a synthetic stream from an embedding of the current
one: hidden = E[token] (N, H), logits = hidden @ W.T + b (N, V). The loss is
``linear_softmax_focal_loss(hidden, W, next_token, linear_bias=b, gamma=2)``: focalx makes
the logits one block of rows at a time (``chunk_size``), so the N x V logits and their
gradient are never held whole, and returns the gradients w.r.t. hidden (hence E), W and b.
Padding positions (target -100) add nothing. Each framework runs in its own process
(TensorFlow and Paddle cannot share one); `--framework torch` runs one.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

import numpy as np

V, H, N, STEPS, LR, CHUNK = 512, 32, 256, 30, 0.5, 64
FRAMEWORKS = ("torch", "jax", "tensorflow", "paddle")


def data(seed=0):
    """Token pairs (current, next) of a stream where the next token is mostly a fixed
    function of the current one; every 16th target is padding (-100)."""
    rng = np.random.default_rng(seed)
    tokens = rng.zipf(1.3, size=N) % V
    follow = (np.arange(V) * 7 + 3) % V
    nxt = np.where(rng.random(N) < 0.8, follow[tokens], rng.integers(0, V, N))
    nxt[::16] = -100
    init = np.random.default_rng(1)
    emb = init.normal(size=(V, H)).astype(np.float32) * 0.1
    w = init.normal(size=(V, H)).astype(np.float32) * 0.1
    return tokens.astype(np.int64), nxt.astype(np.int64), emb, w, np.zeros(V, np.float32)


def train_torch():
    import torch

    import focalx.torch as ft
    tok, nxt, emb, w, _ = data()
    E = torch.nn.Parameter(torch.from_numpy(emb))
    head = ft.LinearFocalLoss(H, V, bias=True, gamma=2.0, chunk_size=CHUNK)
    with torch.no_grad():
        head.linear.weight.copy_(torch.from_numpy(w))
        head.linear.bias.zero_()
    opt = torch.optim.SGD([E, *head.parameters()], lr=LR)
    tok, nxt = torch.from_numpy(tok), torch.from_numpy(nxt)
    losses = []
    for _ in range(STEPS):
        loss = head(E[tok], nxt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train_jax():
    import jax
    import jax.numpy as jnp

    import focalx.jax as fj
    tok, nxt, emb, w, b = data()
    params = {"E": jnp.asarray(emb), "W": jnp.asarray(w), "b": jnp.asarray(b)}
    tok, nxt = jnp.asarray(tok), jnp.asarray(nxt)

    @jax.jit
    def step(p):
        def loss_fn(p):
            return fj.linear_softmax_focal_loss(p["E"][tok], p["W"], nxt, linear_bias=p["b"],
                                                gamma=2.0, chunk_size=CHUNK)
        loss, g = jax.value_and_grad(loss_fn)(p)
        return loss, jax.tree_util.tree_map(lambda a, da: a - LR * da, p, g)
    losses = []
    for _ in range(STEPS):
        loss, params = step(params)
        losses.append(float(loss))
    return losses


def train_tensorflow():
    import tensorflow as tf

    import focalx.tensorflow as ftf
    tok, nxt, emb, w, b = data()
    E, W, B = tf.Variable(emb), tf.Variable(w), tf.Variable(b)
    tok, nxt = tf.constant(tok), tf.constant(nxt)
    opt = tf.keras.optimizers.SGD(LR)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = ftf.linear_softmax_focal_loss(tf.gather(E, tok), W, nxt, linear_bias=B,
                                                 gamma=2.0, chunk_size=CHUNK)
        opt.apply_gradients(zip(tape.gradient(loss, [E, W, B]), [E, W, B]))
        return loss
    return [float(step()) for _ in range(STEPS)]


def train_paddle():
    import paddle

    import focalx.paddle as fpd
    tok, nxt, emb, w, b = data()
    params = [paddle.to_tensor(a, stop_gradient=False) for a in (emb, w, b)]
    tok, nxt = paddle.to_tensor(tok), paddle.to_tensor(nxt)
    losses = []
    for _ in range(STEPS):
        E, W, B = params
        loss = fpd.linear_softmax_focal_loss(paddle.gather(E, tok), W, nxt, linear_bias=B,
                                             gamma=2.0, chunk_size=CHUNK)
        grads = paddle.grad(loss, params)
        with paddle.no_grad():
            params = [(p - LR * g).detach() for p, g in zip(params, grads)]
        for p in params:
            p.stop_gradient = False
        losses.append(float(loss))
    return losses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", choices=FRAMEWORKS)
    args = ap.parse_args(argv)
    if args.framework:
        losses = globals()[f"train_{args.framework}"]()
        print(f"{args.framework:>10}: focal loss {losses[0]:.4f} -> {losses[-1]:.4f} "
              f"in {STEPS} steps (V={V}, blocks of {CHUNK} rows)")
        return 0 if losses[-1] < 0.9 * losses[0] else 1
    failed = 0
    for fw in FRAMEWORKS:
        if importlib.util.find_spec(fw) is None:
            print(f"{fw:>10}: not installed, skipped")
            continue
        failed |= subprocess.run([sys.executable, __file__, "--framework", fw]).returncode
    return failed


if __name__ == "__main__":
    sys.exit(main())
