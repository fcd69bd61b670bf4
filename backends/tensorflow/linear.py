"""The fused linear + softmax focal loss: a tf.custom_gradient around the spec's blocks.

The spec (``run_linear_softmax_focal_loss``) makes, uses and drops one block of rows'
logits at a time, op by op. For "mean" and "sum", where a gradient may be asked for,
the forward pass computes the gradients w.r.t. hidden, weight and bias with the loss
(each block's logits made once; nothing of size N x V is kept) and the backward pass
scales them; for "none" the backward pass runs the blocks again with the per-row
incoming gradient. A tf.Variable (a Keras layer's kernel) is read outside the custom
gradient, so its gradient flows through the read. A number of rows unknown until run
time (a None batch) is padded to whole blocks in the graph (pad_rows).
"""

from __future__ import annotations

import functools

import tensorflow as tf
from tensorflow.python.eager import record as _record

try:  # XLA's slices (tf2xla's Python wrappers; XLA-only ops, not in the public API)
    from tensorflow.compiler.tf2xla.python import xla as _xla
    from tensorflow.python.framework import ops as _tf_ops
    from tensorflow.python.ops import control_flow_util as _cf_util
except ImportError:  # pragma: no cover - an older or stripped TensorFlow
    _xla = None

from ... import _spec
from . import ops as _ops
from . import xla as _xla_path


#: elements of the weight gradient updated at a time by add_matmul under XLA
_ADD_TILE_ELEMENTS = 2 ** 20


def _in_xla():
    """Whether the graph being built is compiled by XLA (tf.function(jit_compile=True))."""
    if _xla is None or tf.executing_eagerly():
        return False
    return _cf_util.GraphOrParentsInXlaContext(_tf_ops.get_default_graph())


@functools.lru_cache(maxsize=None)
def _tile_rows(rows, target):
    """The largest divisor of rows from target down to a quarter of it, or None: whole
    tiles make one view of the accumulator whose rows are the tiles."""
    if rows <= target:
        return rows
    return next((d for d in range(target, max(1, target // 4) - 1, -1) if rows % d == 0),
                None)


def _add_matmul_in_place(c, a, b):
    """c + a^T b written into c's memory a tile of c's rows at a time, or None where c's
    rows have no divisor near the tile size. c is the first block's product, made by
    this call's own MatMul, or what this function returned: nobody else reads it."""
    rows, cols = c.shape.as_list()
    tile = _tile_rows(rows, max(1, _ADD_TILE_ELEMENTS // max(cols, 1)))
    if tile is None:
        return None
    # InplaceAdd adds whole rows of its first axis (one Eigen assignment each, so a row
    # of c each would be slow): a view whose rows are the tiles (a reshape shares memory)
    view = tf.reshape(c, [rows // tile, tile * cols])
    for t in range(rows // tile):  # (eagerly: one tile's product at a time)
        p = tf.linalg.matmul(a[:, t * tile:(t + 1) * tile], b, transpose_a=True)
        view = tf.raw_ops.InplaceAdd(x=view, i=[t], v=tf.reshape(p, [1, tile * cols]))
    return tf.reshape(view, [rows, cols])


@functools.lru_cache(maxsize=None)
def _eigen_matmul():
    """Whether TensorFlow's CPU matmul is Eigen's: oneDNN off (TF_ENABLE_ONEDNN_OPTS=0,
    which TensorFlow suggests for reproducible results, or a build without it)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return not _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return False


class _LinearOps(_ops.TensorflowOps):
    """TensorflowOps with the blocks in a tf.while_loop inside a graph."""

    def matmul(self, a, b, transpose_a, transpose_b):
        # A block's logits h W^T (few rows, many classes) with Eigen's CPU matmul: as
        # (W h^T)^T. Eigen's h W^T copied all of W (V x H) in every call and ran 2-7
        # times slower at these shapes; oneDNN's and XLA's do neither.
        rows, classes = a.shape[0], b.shape[0]
        if (transpose_b and not transpose_a and rows is not None and classes is not None
                and classes > rows and a.shape.rank == 2 and not _in_xla()
                and _eigen_matmul() and _ops._on_host(a)):
            return tf.transpose(tf.linalg.matmul(b, a, transpose_b=True))
        return tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)

    def add_matmul(self, c, a, b, transpose_a, transpose_b):
        # c + a^T b (the weight gradient's accumulator) one tile of c's rows at a time,
        # each written back into c: a whole a^T b was a V x H temporary per block beside
        # c, and its sum another pass over both. Under XLA with its slices (in place in
        # XLA's loop); eagerly with InplaceAdd where Eigen multiplies (as fast as the
        # plain sum, measured; with oneDNN the tiles' smaller products were slower).
        if c is None:
            return self.matmul(a, b, transpose_a, transpose_b)
        rows, cols = c.shape.as_list()
        n = a.shape.as_list()[0]
        if None in (rows, cols, n) or not transpose_a or transpose_b:
            return c + self.matmul(a, b, transpose_a, transpose_b)
        if not _in_xla():
            # (not in a graph: TensorFlow may differentiate a graph's ops, and InplaceAdd
            # has none; Grappler may fold c into a constant, which it would write into)
            out = (_add_matmul_in_place(c, a, b) if tf.executing_eagerly()
                   and _eigen_matmul() and _ops._on_host(a) else None)
            return c + self.matmul(a, b, True, False) if out is None else out
        tile = max(1, _ADD_TILE_ELEMENTS // max(cols, 1))
        full = rows // tile
        if full < 2:
            return c + self.matmul(a, b, transpose_a, transpose_b)

        def one(j, c):
            start = j * tile
            part = _xla.dynamic_slice(a, [0, start], [n, tile])
            old = _xla.dynamic_slice(c, [start, 0], [tile, cols])
            new = old + tf.linalg.matmul(part, b, transpose_a=True)
            return j + 1, _xla.dynamic_update_slice(c, new, [start, 0])

        _, c = tf.while_loop(lambda j, _: j < full, one, (tf.constant(0), c),
                             parallel_iterations=1)
        rest = full * tile
        if rest < rows:
            tail = c[rest:] + tf.linalg.matmul(a[:, rest:], b, transpose_a=True)
            c = tf.concat([c[:rest], tail], 0)
        return c

    def loss_block(self, fn, logits, targets, scale, params):
        # In a graph that XLA does not compile, a block's loss and logit gradient as one
        # XLA function between TensorFlow's matmuls: TensorFlow's own kernels ran the
        # spec's elementwise ops one by one over the block, each writing its array (as
        # the other losses take the compiled path in a graph). Eagerly, from the compiled
        # cache as the other losses' eager calls (compiled in the background: op by op
        # until then). Under XLA (compiled already): as it is.
        if tf.executing_eagerly():
            res = _xla_path.compiled_block(logits, targets, scale, params)
            return fn(self, logits, targets, scale) if res is None else res
        if _in_xla() or not _xla_path.USE_XLA:
            return fn(self, logits, targets, scale)
        messages = []

        def body(x, t, s):
            ops = _ops.TensorflowOps()
            out, g = fn(ops, x, t, s)
            messages[:] = [m for _, m in ops.unchecked]
            return out, g, [c for c, _ in ops.unchecked]

        out, g, conds = tf.function(body, jit_compile=True, autograph=False)(
            logits, targets, scale)
        self.unchecked += list(zip(conds, messages))
        return out, g

    def pad_rows(self, arrays, rows):
        # In a graph with a None batch: zero rows up to a multiple of rows; under XLA two
        # blocks at least (the spec's first block, then at least one in the loop: XLA
        # compiles the loop's slices of a block even where it would run no block). The
        # padded targets are class 0, weighted 0 by the spec. Eagerly the shapes are known.
        if tf.executing_eagerly():
            return None
        n = tf.shape(next(a for a in arrays if a is not None))[0]
        extra = (-n) % rows
        if _in_xla():
            extra = tf.maximum(extra, 2 * rows - n)
        padded = [None if a is None else
                  tf.pad(a, [[0, extra]] + [[0, 0]] * (a.shape.rank - 1)) for a in arrays]
        return padded, lambda a: a[:n]

    def scan_blocks(self, step, carry, xs, rows, ys_like):
        # In a graph (tf.function, XLA) the Python loop's blocks are independent ops that
        # the runtime may run in any order and at once: the bench's peak held several
        # N x V arrays. A while loop of one iteration at a time holds one block. Value
        # checks made in the body (traced there) leave it as one condition. Eagerly the
        # ops run one after another already: declined (the spec's loop).
        if tf.executing_eagerly():
            return None
        first = next(x for x in xs if x is not None)
        k = first.shape[0]  # (None: padded rows, pad_rows)
        k = tf.shape(first)[0] // rows if k is None else int(k) // rows
        blocks = [None if x is None else tf.reshape(x, [k, rows] + x.shape[1:].as_list())
                  for x in xs]
        c_at = [i for i, c in enumerate(carry) if c is not None]
        y_at = [i for i, y in enumerate(ys_like) if y is not None]
        messages = []

        def body(i, cs, arrays, ok):
            full = list(carry)
            for j, c in zip(c_at, cs):
                full[j] = c
            outer, self.unchecked = self.unchecked, []
            try:
                new, ys = step(tuple(full), *(None if b is None else b[i] for b in blocks))
                checks = self.unchecked
            finally:
                self.unchecked = outer
            for cond, message in checks:
                ok = tf.logical_and(ok, cond)
                if message not in messages:
                    messages.append(message)
            return (i + 1, [new[j] for j in c_at],
                    [ta.write(i, ys[j]) for ta, j in zip(arrays, y_at)], ok)

        arrays = [tf.TensorArray(ys_like[j].dtype, size=k, element_shape=ys_like[j].shape)
                  for j in y_at]
        _, cs, arrays, ok = tf.while_loop(
            lambda i, *_: i < k, body,
            (tf.constant(0), [carry[j] for j in c_at], arrays, tf.constant(True)),
            parallel_iterations=1)
        if messages:
            self.unchecked.append((ok, "; ".join(m for m in messages if m)))
        out = list(carry)
        for j, c in zip(c_at, cs):
            out[j] = c
        ys = [None] * len(ys_like)
        for j, ta in zip(y_at, arrays):
            stacked = ta.stack()
            ys[j] = tf.reshape(stacked, [k * rows] + stacked.shape[2:].as_list())
        return tuple(out), tuple(ys)


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
        return _ops._run(fn, tf.cast(h, compute), targets, need_grad, ops_type=_LinearOps,
                         linear_bias=None if b is None else tf.cast(b, compute),
                         cotangent=cotangent, **params)

    if tf.executing_eagerly() and not recording:  # no tape: no gradient needed
        return tf.cast(run(hidden, weight, bias, False)[0], h_dtype)

    @tf.custom_gradient
    def loss(h, w, *b):
        b = b[0] if b else None
        # Eagerly not recorded by a tape (the custom gradient gives the gradient): a
        # recording tape kept every block's arrays (the logits among them) to its end
        with _ops._unrecorded():
            out, grads, ok = run(h, w, b, not per_row)

        def backward(g_out, variables=None):
            if tf.executing_eagerly() and _record.could_possibly_record():
                raise NotImplementedError(_ops.ONCE)
            if per_row:
                with _ops._unrecorded():
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
