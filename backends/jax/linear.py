"""The fused linear + softmax focal loss: a jax.custom_vjp around the spec's blocks.

The spec (``run_linear_softmax_focal_loss``) makes, uses and drops one block of rows'
logits at a time. For "mean" and "sum" the forward pass computes the gradients w.r.t.
hidden, weight and bias with the loss (each block's logits made once) and keeps them as
residuals (N x H, V x H, V: nothing of size N x V); the backward pass scales them by the
incoming cotangent. For "none" the backward pass runs the blocks again with the
per-row cotangent. Hyperparameter arrays and the targets get no gradient here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ... import _spec
from .ops import JaxOps

#: elements of the weight gradient updated at a time by add_matmul (a tile of its rows)
_ADD_TILE_ELEMENTS = 2 ** 20


class _BlockOps(JaxOps):
    """JaxOps that keeps only the latest block's log-softmax parts (JaxOps keeps every
    log-softmax of a call for its take/softmax_parts: here, every block's logits, which
    eager calls would then hold to the end)."""

    def log_softmax(self, a, axis):
        self.log_softmaxes = []
        return super().log_softmax(a, axis)

    def add_matmul(self, c, a, b, transpose_a, transpose_b):
        # c + a^T b (the weight gradient's accumulator) one tile of c's rows at a time,
        # each written back into c (in place in XLA's loops): a whole a^T b was a V x H
        # temporary per block beside c, and its separate sum one more pass over both.
        if c is None:
            return self.matmul(a, b, transpose_a, transpose_b)
        tile = max(1, _ADD_TILE_ELEMENTS // max(c.shape[1], 1))
        full = c.shape[0] // tile
        if not transpose_a or transpose_b or full < 2:
            return c + self.matmul(a, b, transpose_a, transpose_b)

        def one(j, c):
            start = j * tile
            part = jax.lax.dynamic_slice_in_dim(a, start, tile, 1)
            rows = jax.lax.dynamic_slice_in_dim(c, start, tile, 0)
            return jax.lax.dynamic_update_slice_in_dim(c, rows + part.T @ b, start, 0)

        # a fori_loop, not unrolled tiles: those XLA may all compute before the first sum
        c = jax.lax.fori_loop(0, full, one, c)
        rest = full * tile
        if rest < c.shape[0]:
            c = c.at[rest:].add(a[:, rest:].T @ b)
        return c

    def scan_blocks(self, step, carry, xs, rows, ys_like):
        # The blocks as one lax.scan: under jit, a Python loop's blocks are one XLA
        # program whose scheduler kept every block's logits live at once (a peak of
        # several N x V arrays); the scan's body holds one block at a time. Value checks
        # made in the body (traced there) leave it as one flag.
        k = next(x for x in xs if x is not None).shape[0] // rows
        blocks = [None if x is None else x.reshape((k, rows) + x.shape[1:]) for x in xs]

        def body(c, blk):
            carry, ok = c
            outer, self.unchecked = self.unchecked, []
            try:
                carry, ys = step(carry, *blk)
                checks = self.unchecked
            finally:
                self.unchecked, self.log_softmaxes = outer, []
            for cond in checks:
                ok = ok & cond
            return (carry, ok), ys

        (carry, ok), ys = jax.lax.scan(body, (carry, jnp.bool_(True)), blocks)
        if self.checks:
            self.unchecked.append(ok)
        ys = jax.tree_util.tree_map(lambda y: y.reshape((k * rows,) + y.shape[2:]), ys)
        return carry, ys


def _run(h, w, b, arrs, static, need_grad, cotangent=None):
    """(loss, grads, ok): see functional._run for ok (value checks made in the graph)."""
    ops = _BlockOps()
    out, grads = _spec.run_linear_softmax_focal_loss(
        ops, h, w, arrs["targets"], linear_bias=b, need_grad=need_grad, cotangent=cotangent,
        **static, **{k: v for k, v in arrs.items() if k != "targets"})
    ok = None
    if ops.unchecked:
        ok = jnp.all(jnp.stack(ops.unchecked))
        out = jnp.where(ok, out, jnp.nan)
    return out, grads, ok


def apply_linear(hidden, weight, bias, arrays, static):
    """The loss (hidden's dtype; float16 / bfloat16 computed in float32) with the spec's
    gradients w.r.t. hidden, weight and bias."""
    dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
    compute = jnp.float64 if hidden.dtype == jnp.float64 else jnp.float32
    per_row = static["reduction"] == "none"

    def cast(h, w, b):
        return h.astype(compute), w.astype(compute), None if b is None else b.astype(compute)

    def back(grads, ok):
        out = []
        for g, dt in zip(grads, dtypes):
            if g is None:
                out.append(None)
                continue
            if ok is not None:  # a failed value check: NaN gradients, as the loss
                g = jnp.where(ok, g, jnp.nan)
            out.append(g.astype(dt))
        return tuple(out)

    @jax.custom_vjp
    def loss(h, w, b, arrs):
        return _run(*cast(h, w, b), arrs, static, False)[0].astype(dtypes[0])

    def fwd(h, w, b, arrs):
        out, grads, ok = _run(*cast(h, w, b), arrs, static, not per_row)
        res = (h, w, b, arrs) if per_row else (grads, ok)
        return out.astype(dtypes[0]), res

    def bwd(res, g_out):
        if per_row:
            h, w, b, arrs = res
            _, grads, ok = _run(*cast(h, w, b), arrs, static, True,
                                g_out.astype(compute))
        else:
            grads, ok = res
            grads = [None if g is None else g * g_out.astype(g.dtype) for g in grads]
        return back(grads, ok) + ({k: None for k in arrays},)

    loss.defvjp(fwd, bwd)
    return loss(hidden, weight, bias, arrays)
