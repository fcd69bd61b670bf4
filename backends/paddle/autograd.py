"""Running the spec on paddle tensors: one call (value checks that cannot be read become
NaN), the PyLayer that carries the closed-form gradient, low-precision dtypes."""

from __future__ import annotations


import paddle
from paddle.autograd import PyLayer

from . import blocks as _rows
from .blocks import _Blocks, _map, _row_blocks
from .ops import PaddleOps, _FLOATS, _not_translated, _refuse_create_graph, _static


@_not_translated
def _run(fn, x, arrays, static, need_grad):
    """Run a spec function with a fresh PaddleOps; NaN out the result where a value
    check that could not be done in Python (a static program, a GPU tensor) fails.

    A large loss in dygraph mode on the CPU runs in row blocks (:func:`.blocks._run_blocks`).
    """
    if not _static():
        blocks = _row_blocks(fn, x, arrays, static)
        if blocks is not None:
            try:
                return _rows._run_blocks(fn, x, arrays, static, need_grad, blocks)
            except Exception:  # noqa: BLE001 - rerun whole: the spec raises its own error
                pass
    ops = PaddleOps(need_grad)
    out, grad = fn(ops, x, arrays["targets"], need_grad=need_grad, **static,
                   **{k: v for k, v in arrays.items() if k != "targets"})
    if ops.unchecked:
        ok = paddle.all(paddle.stack(ops.unchecked))
        out = paddle.where(ok, out, _nan_like(out))
        if grad is not None:
            grad = paddle.where(ok, grad, _nan_like(grad))
    return out, grad


def _nan_like(a):
    """NaN of a's shape and dtype. In a static program it is computed, inf - inf, not a
    NaN constant: Paddle 3.3.1's paddle.jit.save writes a NaN constant that
    paddle.jit.load cannot read back (RuntimeError "key 'D' not found")."""
    if not _static():
        return paddle.full_like(a, float("nan"))
    inf = paddle.full_like(a, float("inf"))
    return inf - inf


def _compute_dtype(dtype):
    return paddle.float64 if dtype == paddle.float64 else paddle.float32


def _in_compute_dtype(a):
    return a.astype(_compute_dtype(a.dtype))


# Half the smallest float16 subnormal: what rounds to zero.
_HALF_UNDERFLOW = 2.0 ** -25


def _cast(a, dtype):
    """a.astype(dtype), with float16 rounding like IEEE (and NumPy).

    Paddle 3.3.1's CPU float32 -> float16 cast turns some values far below the
    float16 range into garbage (8.3e-26 -> 1.55e-6; measured over 200,000 random
    float32 values, 14,676 differ from NumPy, all of magnitude < 6.7e-24), so
    magnitudes that round to zero are zeroed first; the result then equals
    NumPy's cast on every value tried.
    """
    if dtype == paddle.float16 and a.dtype != paddle.float16:
        a = paddle.where(paddle.abs(a) <= _HALF_UNDERFLOW, a * 0.0, a)
    return a.astype(dtype)


class _FocalLayer(PyLayer):
    """loss = fn(x, ...); the logits' closed-form gradient is computed in forward and
    saved.

    The targets and tensor hyperparameters are explicit inputs (after ``x``), not
    closed over: a static program (to_static) counts every outside value a PyLayer
    uses as an input, and backward returns one gradient (None) for each (their own
    gradients, where they need one, come from _other_grads).
    """

    @staticmethod
    def forward(ctx, x, fn, static, class_axis, names, *tensors):
        if len(tensors) == 1 and isinstance(tensors[0], tuple):
            tensors = tensors[0]  # a static program passes the variadic inputs as one tuple
        out, grad = _run(fn, x.astype(_compute_dtype(x.dtype)), dict(zip(names, tensors)),
                         static, True)
        # The only full-size tensor kept for backward, in the compute dtype: for
        # float16/bfloat16 input the 1/N of a mean and a loss scale meet in float32,
        # and only the result is rounded. Row blocks (blocks._run_blocks) are kept as blocks.
        ctx.blocks = grad.bounds if isinstance(grad, _Blocks) else None
        if ctx.blocks:
            ctx.save_for_backward(*grad)
        else:
            ctx.save_for_backward(grad)
        ctx.class_axis = class_axis
        ctx.x_dtype = x.dtype
        ctx.n_tensors = len(tensors)
        return _cast(out, x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_create_graph()
        if ctx.blocks:  # the same products, block by block
            whole = len(grad_out.shape) == 0  # else "none": grad_out has the logits' shape

            saved = ctx.saved_tensor()
            shape = [ctx.blocks[-1][1]] + list(saved[0].shape[1:])
            grad_x = paddle.empty(shape, dtype=ctx.x_dtype, device=saved[0].place)
            # each thread writes its rows of the result, so the result's fresh memory
            # is touched in parallel rather than by one serial concatenation; that
            # needs slices to be views (Paddle's default, FLAGS_use_stride_kernel)
            shared = getattr(grad_x[0:1], "_is_shared_buffer_with", None)
            views = shared is not None and shared(grad_x)
            # A loss's backward() seeds a gradient of exactly 1 (read here without a
            # device sync: blocks run on the CPU only); 1 * g is g, so the product is
            # skipped (a pass over the gradient).
            unit = whole and float(grad_out) == 1.0

            def part(block):
                (i, j), g = block
                with paddle.no_grad():
                    go = (grad_out if whole else grad_out[i:j]).astype(g.dtype)
                    if not whole and ctx.class_axis is not None:  # per-sample softmax loss
                        go = paddle.unsqueeze(go, ctx.class_axis)
                    prod = _cast(g if unit else go * g, ctx.x_dtype)
                    if not views:
                        return prod
                    paddle.assign(prod, output=grad_x[i:j])
            parts = _map(part, zip(ctx.blocks, saved))
            if not views:
                grad_x = paddle.concat(parts, axis=0)
            return (grad_x,) + (None,) * ctx.n_tensors
        (grad,) = ctx.saved_tensor()
        # (in the compute dtype first: a static program has no CPU float16 unsqueeze)
        grad_out = grad_out.astype(grad.dtype)
        if len(grad_out.shape) and ctx.class_axis is not None:  # per-sample softmax loss
            grad_out = paddle.unsqueeze(grad_out, ctx.class_axis)
        grad_x = _cast(grad_out * grad, ctx.x_dtype)
        return (grad_x,) + (None,) * ctx.n_tensors


def _wants_grad(t) -> bool:
    """A floating tensor that needs a gradient. (Not in a static program: there the flag
    says nothing of what the user wants, an InputSpec's stop_gradient defaulting to
    False, labels included; the targets get no gradient, as in Paddle's own losses.)"""
    return not t.stop_gradient and t.dtype in _FLOATS and not _static()


def _other_grads(fn, x, arrays, static):
    """A term of value 0 whose gradient w.r.t. the targets and hyperparameter tensors
    that need one is the autodiff of the spec's formula (as the JAX backend
    differentiates it): the formula run again op by op on the detached logits. (Not
    computed in the PyLayer's backward: Paddle crashes on a paddle.grad there.)"""
    s, _ = fn(PaddleOps(False), x.detach(), arrays["targets"], need_grad=False, **static,
              **{k: v for k, v in arrays.items() if k != "targets"})
    zero = s - s.detach()
    return paddle.where(paddle.isfinite(s), zero, paddle.zeros_like(zero))


@_not_translated
def _empty(a) -> bool:
    """A size-0 axis (a Python bool: the AST translator would make a test of `in` on a
    static shape a tensor)."""
    return any(s == 0 for s in a.shape)
