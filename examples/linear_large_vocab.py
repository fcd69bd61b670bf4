"""The fused linear + softmax focal loss where the logits would not fit: N = 12288 rows,
H = 64 features, V = 262144 classes (a 256K vocabulary; the logits alone would be 12 GiB
of float32, and their gradient another 12).

    python examples/linear_large_vocab.py torch|jax|tensorflow|paddle [xla]

Times two fwd+bwd calls (w.r.t. the hidden states and the weight) in this fresh process
and prints the process's peak RSS (the inputs take about 0.3 GiB). ``xla``: TensorFlow's
tf.function with jit_compile.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np

N, H, V = 12288, 64, 262144


def _peak_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _call(framework, hn, wn, yn, xla):
    """A function making one fwd+bwd call and returning the loss as a float."""
    if framework == "torch":
        import torch

        import focalx.torch as fx
        h = torch.from_numpy(hn).requires_grad_()
        w = torch.from_numpy(wn).requires_grad_()
        y = torch.from_numpy(yn)

        def call():
            loss = fx.linear_softmax_focal_loss(h, w, y, gamma=2.0)
            torch.autograd.grad(loss, [h, w])
            return float(loss.detach())
    elif framework == "jax":
        import jax
        import jax.numpy as jnp

        import focalx.jax as fx
        h, w, y = jnp.asarray(hn), jnp.asarray(wn), jnp.asarray(yn)
        step = jax.jit(jax.value_and_grad(
            lambda a, b: fx.linear_softmax_focal_loss(a, b, y, gamma=2.0), argnums=(0, 1)))

        def call():
            return float(jax.block_until_ready(step(h, w))[0])
    elif framework == "tensorflow":
        import tensorflow as tf

        import focalx.tensorflow as fx
        h, w, y = tf.constant(hn), tf.constant(wn), tf.constant(yn)

        @tf.function(jit_compile=xla)
        def step(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                loss = fx.linear_softmax_focal_loss(a, b, y, gamma=2.0)
            return loss, tape.gradient(loss, [a, b])

        def call():
            return float(step(h, w)[0])
    elif framework == "paddle":
        import paddle

        import focalx.paddle as fx
        h, w, y = paddle.to_tensor(hn), paddle.to_tensor(wn), paddle.to_tensor(yn)
        h.stop_gradient = w.stop_gradient = False

        def call():
            loss = fx.linear_softmax_focal_loss(h, w, y, gamma=2.0)
            paddle.grad([loss], [h, w])
            return float(loss)
    else:
        raise SystemExit(f"unknown framework {framework!r}: torch, jax, tensorflow or paddle")
    return call


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    framework, xla = argv[0], argv[1:] == ["xla"]
    rng = np.random.default_rng(0)
    hn = rng.standard_normal((N, H), dtype=np.float32)
    wn = rng.standard_normal((V, H), dtype=np.float32) / np.float32(H ** 0.5)
    yn = rng.integers(0, V, size=N)
    call = _call(framework, hn, wn, yn, xla)
    before = _peak_gib()
    for i in range(2):
        start = time.perf_counter()
        loss = call()
        print(f"{framework}{' (xla)' if xla else ''} call {i + 1}: "
              f"{time.perf_counter() - start:.1f} s, loss {loss:.4f}, peak RSS "
              f"{_peak_gib():.2f} GiB (inputs loaded: {before:.2f} GiB)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
