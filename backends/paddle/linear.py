"""The fused linear + softmax focal loss: a PyLayer around the spec's blocks (dygraph).

The spec (``run_linear_softmax_focal_loss``) makes, uses and drops one block of rows'
logits at a time. For "mean" and "sum" the forward pass computes the gradients w.r.t.
hidden, weight and bias with the loss (each block's logits made once) and saves them
(N x H, V x H, V: nothing of size N x V); backward scales them by the incoming
gradient. For "none" backward runs the blocks again with the per-row incoming gradient.
Hyperparameter tensors and the targets get no gradient here.
"""

from __future__ import annotations

import math

import paddle
from paddle.autograd import PyLayer

from ... import _spec
from . import blocks
from .autograd import _cast, _compute_dtype, _nan_like
from . import ops as pops
from .ops import PaddleOps


class _BlockOps(PaddleOps):
    """PaddleOps that keeps only the latest block's softmax parts (PaddleOps keeps those
    of every log-softmax of a call for the gradient: here, every block's)."""

    def log_softmax(self, a, axis):
        if self.softmaxes:
            self.softmaxes = []
        return super().log_softmax(a, axis)

    @staticmethod
    def add_matmul(c, a, b, transpose_a, transpose_b):
        # On the CPU, a^T b (the weight gradient, V x H) is kept as its transpose b^T a,
        # in column ranges (_Columns), one per block thread: Paddle's CPU matmul uses one
        # core, and its in-place addmm_ into an H x V product is faster than into a V x H
        # one for a block's few rows (on one core too). On a device: in place, as it is.
        static = pops._static()
        if transpose_a and not transpose_b and (c is None or isinstance(c, _Columns)) and \
                not static and a.place.is_cpu_place() and \
                a.shape[1] * b.shape[1] >= _COLUMNS_MIN:
            return _Columns.add(c, a, b)
        if c is None or static:  # (a static program: its own buffers)
            p = PaddleOps.matmul(a, b, transpose_a, transpose_b)
            return p if c is None else c + p
        return c.addmm_(a.T if transpose_a else a, b.T if transpose_b else b)

    @staticmethod
    def matmul_sum(c):
        return c.total() if isinstance(c, _Columns) else c

    @staticmethod
    def kept_rows(keep):
        # dygraph on the CPU only: elsewhere the number of kept rows is a device sync (a
        # GPU) or unknown (a static program; SOT, which would break its graph there)
        if pops._static() or pops._in_sot() or not pops._on_host(keep):
            return None
        return paddle.nonzero(keep).squeeze(1)

    @staticmethod
    def take_rows(a, index):
        return paddle.index_select(a, index, axis=0)

    @staticmethod
    def put_rows(a, index, num_rows):
        out = paddle.zeros([num_rows] + list(a.shape[1:]), dtype=a.dtype)
        return paddle.scatter(out, index, a, overwrite=True)

    def split_rows(self, fn, arrays, summed, classes):
        # Paddle's CPU kernels (elementwise and matmul) use one core: a block's logits,
        # loss, logit gradient and its rows of d hidden run on the block threads, a part
        # of its rows each. Parts start at multiples of blocks._BLOCK_ALIGN logits, so
        # every element takes the kernels' path it takes in the whole block.
        n = arrays[0].shape[0]
        step = blocks._BLOCK_ALIGN // math.gcd(classes, blocks._BLOCK_ALIGN)
        parts = min(blocks.THREADS, n // step)
        if parts <= 1 or pops._static() or not arrays[0].place.is_cpu_place() or \
                n * classes < blocks._SOFTMAX_BLOCK_MIN:
            return fn(self, *arrays)
        cuts = [(n * i // parts) // step * step for i in range(parts)] + [n]

        def run(i):
            lo, hi = cuts[i], cuts[i + 1]
            ops = _BlockOps(self.softmaxes is not None, self.fuse)
            with paddle.no_grad():  # (the grad mode of a worker thread is its own)
                res = fn(ops, *(a[lo:hi] if _has_rows(a, n) else a for a in arrays))
            return res, ops.unchecked

        results = blocks._map(run, range(parts))
        for _, unchecked in results:
            self.unchecked += unchecked
        outs = [res[0] for res, _ in results]
        out = paddle.add_n(outs) if summed else paddle.concat(outs, axis=0)
        # the rest as the parts' (the spec takes them in row order): joined, G was one
        # more copy of the block's largest array
        rest = [None if results[0][0][k] is None else [res[k] for res, _ in results]
                for k in range(1, len(results[0][0]))]
        return (out, *rest)


#: V x H at and above which add_matmul keeps the weight gradient in _Columns
_COLUMNS_MIN = 1 << 16


class _Columns:
    """The linear loss's weight gradient a^T b (V x H), kept as its transpose's column
    ranges ``(b^T a)[:, lo:hi]``, one per block thread, each added to in place by its
    thread (addmm_); total() makes the V x H array once, at the end."""

    def __init__(self, cuts, parts):
        self.cuts, self.parts = cuts, parts

    @classmethod
    def add(cls, c, a, b):
        if c is None:
            v = a.shape[1]
            k = max(1, min(blocks.THREADS, v))
            cuts = [v * i // k for i in range(k + 1)]
            c = cls(cuts, [None] * k)
        bt = b.T

        def one(j):
            lo, hi = c.cuts[j], c.cuts[j + 1]
            with paddle.no_grad():
                if c.parts[j] is None:
                    c.parts[j] = paddle.matmul(bt, a[:, lo:hi])
                else:
                    c.parts[j].addmm_(bt, a[:, lo:hi])
        blocks._map(one, range(len(c.parts)))
        return c

    def total(self):
        # Each range's transpose made contiguous and the range dropped, one at a time,
        # then joined: a concat of the transposed views made contiguous copies of all
        # of them first (one more weight-gradient-sized array at the peak).
        parts, self.parts = self.parts, None
        out = []
        while parts:
            out.append(parts.pop(0).T.contiguous())
        return out[0] if len(out) == 1 else paddle.concat(out, axis=0)


def _has_rows(a, n):
    return isinstance(a, paddle.Tensor) and len(a.shape) >= 1 and a.shape[0] == n


@pops._not_translated
def _run(h, w, b, arrays, static, need_grad, cotangent=None):
    """(loss, grads): NaN where a value check that could not be read fails (see
    autograd._run)."""
    cd = _compute_dtype(h.dtype)
    ops = _BlockOps(need_grad)
    out, grads = _spec.run_linear_softmax_focal_loss(
        ops, h.astype(cd), w.astype(cd), arrays["targets"],
        linear_bias=None if b is None else b.astype(cd), need_grad=need_grad,
        cotangent=cotangent, **static, **{k: v for k, v in arrays.items() if k != "targets"})
    if ops.unchecked:
        ok = paddle.all(paddle.stack(ops.unchecked))
        out = paddle.where(ok, out, _nan_like(out))
        if grads is not None:
            grads = tuple(None if g is None else paddle.where(ok, g, _nan_like(g))
                          for g in grads)
    return out, grads


class _LinearFocalLayer(PyLayer):

    @staticmethod
    def forward(ctx, hidden, weight, bias, static, names, *tensors):
        if len(tensors) == 1 and isinstance(tensors[0], tuple):
            tensors = tensors[0]  # a static program passes the variadic inputs as one tuple
        arrays = dict(zip(names, tensors))
        per_row = static["reduction"] == "none"
        out, grads = _run(hidden, weight, bias, arrays, static, not per_row)
        ctx.static, ctx.names, ctx.per_row = static, names, per_row
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.n_tensors, ctx.has_bias = len(tensors), bias is not None
        # (Paddle wants None for an input that needs no gradient)
        ctx.wants = [not t.stop_gradient for t in (hidden, weight, bias) if t is not None]
        if per_row:
            ctx.save_for_backward(hidden, weight, bias, *tensors)
        else:
            ctx.save_for_backward(*(g for g in grads if g is not None))
        return _cast(out, hidden.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        pops._refuse_create_graph()
        saved = ctx.saved_tensor()
        if ctx.per_row:
            hidden, weight, bias, *tensors = saved
            cot = grad_out.astype(_compute_dtype(hidden.dtype))
            _, grads = _run(hidden, weight, bias, dict(zip(ctx.names, tensors)), ctx.static,
                            True, cot)
        else:
            go = grad_out.astype(saved[0].dtype)
            grads = [g * go for g in saved]
        out = [_cast(g, dt) for g, dt in zip(grads, ctx.dtypes) if g is not None]
        out = [g if want else None for g, want in zip(out, ctx.wants)]
        return tuple(out) + (None,) * ctx.n_tensors


def apply_linear(hidden, weight, bias, arrays, static):
    """The loss, through the PyLayer where a gradient is needed (hidden's dtype)."""
    wants = not (hidden.stop_gradient and weight.stop_gradient and
                 (bias is None or bias.stop_gradient))
    if not wants or not paddle.is_grad_enabled():
        out, _ = _run(hidden, weight, bias, arrays, static, False)
        return _cast(out, hidden.dtype)
    names = tuple(arrays)
    return _LinearFocalLayer.apply(hidden, weight, bias, static, names,
                                   *(arrays[k] for k in names))
