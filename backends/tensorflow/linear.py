"""The fused linear + softmax focal loss: a tf.custom_gradient around the spec's blocks.

The spec (``run_linear_softmax_focal_loss``) makes, uses and drops one block of rows'
logits at a time, op by op. For "mean" and "sum", where a gradient may be asked for,
the forward pass computes the gradients w.r.t. hidden, weight and bias with the loss
(each block's logits made once; nothing of size N x V is kept) and the backward pass
scales them; for "none" the backward pass runs the blocks again with the per-row
incoming gradient. A tf.Variable (a Keras layer's kernel) is read outside the custom
gradient, so its gradient flows through the read. The number of rows must be static
(the blocks are laid out in Python).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.eager import record as _record

from ... import _spec
from . import ops as _ops


def apply_linear(hidden, weight, bias, targets, params):
    h_dtype = hidden.dtype
    dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
    compute = tf.float64 if h_dtype == tf.float64 else tf.float32
    per_row = params["reduction"] == "none"
    recording = _record.could_possibly_record()

    def run(h, w, b, need_grad, cotangent=None):
        wc = tf.cast(w, compute)

        def fn(ops, x, t, need_grad, **kw):  # (ops._run's argument order: ops, x, targets)
            return _spec.run_linear_softmax_focal_loss(ops, x, wc, t, need_grad=need_grad,
                                                       **kw)
        return _ops._run(fn, tf.cast(h, compute), targets, need_grad,
                         linear_bias=None if b is None else tf.cast(b, compute),
                         cotangent=cotangent, **params)

    if tf.executing_eagerly() and not recording:  # no tape: no gradient needed
        return tf.cast(run(hidden, weight, bias, False)[0], h_dtype)

    @tf.custom_gradient
    def loss(h, w, *b):
        b = b[0] if b else None
        out, grads, ok = run(h, w, b, not per_row)

        def backward(g_out, variables=None):
            if tf.executing_eagerly() and _record.could_possibly_record():
                raise NotImplementedError(
                    "focalx losses are differentiable once: their gradient cannot be "
                    "differentiated again (a GradientTape recording the backward pass)")
            if per_row:
                _, gs, g_ok = run(h, w, b, True, tf.cast(g_out, compute))
            else:
                gs, g_ok = [None if g is None else g * tf.cast(g_out, g.dtype)
                            for g in grads], ok
            out = []
            for g, dt in zip(gs, dtypes):
                if g is None:
                    continue
                if g_ok is not None:  # a failed value check: NaN gradients
                    g = tf.where(g_ok, g, tf.constant(float("nan"), g.dtype))
                out.append(tf.cast(g, dt))
            if variables is not None:
                return tuple(out), [None] * len(variables)
            return tuple(out)

        return tf.cast(out, h_dtype), backward

    return loss(hidden, weight, *(() if bias is None else (bias,)))
