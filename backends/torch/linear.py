"""The fused linear + softmax focal loss: one autograd.Function around the spec's blocks.

The spec (``run_linear_softmax_focal_loss``) makes, uses and drops one block of rows'
logits at a time; this file is its plumbing: dtypes, what is saved for backward, and
the incoming gradient. Nothing of size N x V is saved:

- "mean" / "sum": the gradients w.r.t. hidden, weight and bias are computed in the
  forward pass (one pass over the blocks: each block's logits are made once) and saved
  (N x H, V x H, V); backward scales them by the incoming 0-d gradient.
- "none": forward computes the loss only and saves the inputs; backward runs the blocks
  again with the incoming per-row gradient (the spec's ``cotangent``).

No value is read on the host in the path (no ``.item()``, no tensor in a Python
condition): it runs on an accelerator without a sync, and on the meta device.
"""

from __future__ import annotations

import torch

from ... import _spec
from .autograd import _apply, _batched, _no_saved_tensor_hooks, _reusable, _transformed
from .eager import _EagerOps
from .ops import OPS, _kind, _symbolic


class _LinearEagerOps(_EagerOps):
    """_EagerOps whose blocks live in one buffer of a block's size, reused across the
    call: the matmul writes a block's logits there, and the softmax, which becomes the
    logit gradient (mul_owned, scatter), overwrites them in place. A fresh block-size
    tensor is new memory from the system (page faults), and a block's logits and
    gradient are dead once its products are made: the buffer holds no block's values
    past its step."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight
        self.buffer = None
        self.logits = None  # the latest block's logits (a view of the buffer)

    def matmul(self, a, b, transpose_a, transpose_b):
        if b is self.weight and transpose_b and not transpose_a and a.dim() == 2 and \
                a.dtype == b.dtype:
            rows = a.shape[0]
            if self.buffer is None or self.buffer.shape[0] < rows:
                self.buffer = torch.empty((rows, b.shape[0]), dtype=b.dtype)
            self.logits = torch.matmul(a, b.mT, out=self.buffer[:rows])
            return self.logits
        return super().matmul(a, b, transpose_a, transpose_b)

    def log_softmax_at(self, x, index, axis):
        if x is not self.logits:
            return super().log_softmax_at(x, index, axis)
        # _EagerOps.log_softmax_at's numbers, with what it reads of the logits read
        # first: the softmax then overwrites them (row by row, each element read before
        # it is written)
        self.logits = None
        lp_y = torch.gather(x, axis, index).sub_(torch.amax(x, dim=axis, keepdim=True))
        p = torch.ops.aten._softmax.out(x, axis, False, out=x)
        return lp_y.add_(torch.amax(p, dim=axis, keepdim=True).log_()), p


def _ops(*tensors):
    """The eager CPU path's Ops (in-place selects, the fused log-softmax at the target,
    the blocks in one reused buffer) for CPU tensors outside a trace and outside a
    vmapped backward (whose in-place ops on batched tensors torch refuses); TorchOps
    elsewhere."""
    if all(t.device.type == "cpu" for t in tensors) and not _symbolic(*tensors) and \
            not any(_batched(t) for t in tensors):
        return _LinearEagerOps(tensors[1])
    return OPS


def _compute_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _LinearFocalFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, params, grad_mode, out_dtype):
        cd = _compute_dtype(hidden)
        h, w = hidden.to(cd), weight.to(cd)
        b = None if bias is None else bias.to(cd)
        wanted = ctx.needs_input_grad[:3]
        need = grad_mode and any(wanted)
        per_row = params["reduction"] == "none"
        out, grads = _spec.run_linear_softmax_focal_loss(
            _ops(h, w), h, w, targets, linear_bias=b, need_grad=need and not per_row, **params)
        ctx.params, ctx.per_row = params, per_row
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        if need and per_row:
            ctx.save_for_backward(hidden, weight, bias, targets)
        elif need:
            ctx.save_for_backward(*(g if want else None for g, want in zip(grads, wanted)))
            # (saved-tensor hooks may keep the gradients where backward must not hand
            # them out: see backward)
            ctx.own = _no_saved_tensor_hooks(grads[0])
        return out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "focalx losses are differentiable once: their backward cannot be "
                "differentiated twice (create_graph=True is not supported)")
        if ctx.per_row:
            hidden, weight, bias, targets = ctx.saved_tensors
            cd = _compute_dtype(hidden)
            h, w = hidden.to(cd), weight.to(cd)
            _, grads = _spec.run_linear_softmax_focal_loss(
                _ops(h, w, grad_out), h, w, targets,
                linear_bias=None if bias is None else bias.to(cd), need_grad=True,
                cotangent=grad_out.to(cd), **ctx.params)
        else:
            grads = ctx.saved_tensors
            # A loss's backward() seeds a gradient of exactly 1: on the CPU that is read
            # without a device sync, and the saved gradients (used this once) are the
            # result, without a V x H copy each.
            unit = grad_out.device.type == "cpu" and grad_out.numel() == 1 and \
                not _symbolic(grad_out) and not _batched(grad_out) and grad_out.item() == 1.0
            if not (unit and ctx.own and all(_reusable(g, grad_out) for g in grads
                                             if g is not None)):
                scale = grad_out.to(next((g.dtype for g in grads if g is not None),
                                         grad_out.dtype))
                grads = [None if g is None else g * scale for g in grads]
        out = [None if g is None or not want else g.to(dt)
               for g, want, dt in zip(grads, ctx.needs_input_grad[:3], ctx.dtypes)]
        return (*out, None, None, None, None)


def apply_linear(hidden, weight, bias, targets, params):
    """The loss through the autograd Function: in hidden's dtype (float32 under
    torch.autocast for float16 / bfloat16 input, like torch's own losses)."""
    for name, t in (("hidden", hidden), ("linear_weight", weight), ("targets", targets),
                    ("linear_bias", bias)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got "
                            f"{type(t).__module__}.{type(t).__name__}")
        if t is not None and name != "targets":  # (before the cast to the compute dtype)
            _spec.check_logits_dtype(_kind(t), name)
        # (a weight on the meta device next to CPU hidden states: torch's matmul returns
        # uninitialised memory there, not an error)
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{name} is on {t.device} but hidden is on {hidden.device}")
    if _transformed():
        # Inside torch.func (grad, vmap, jacrev): the softmax focal loss of the
        # materialised logits, whose matmul the transform differentiates (the same
        # numbers; not the memory saving).
        _spec.check_linear_inputs(OPS, hidden, weight, targets, bias)
        _spec.check_chunk_size(params["chunk_size"])
        kw = {k: v for k, v in params.items() if k != "chunk_size"}
        return _apply(torch.nn.functional.linear(hidden, weight, bias),
                      "run_softmax_focal_loss", targets, dict(kw, axis=1, from_logits=True), 1)
    out_dtype = hidden.dtype
    if hidden.dtype in (torch.float16, torch.bfloat16) and \
            torch.is_autocast_enabled(hidden.device.type):
        out_dtype = torch.float32
    return _LinearFocalFunction.apply(hidden, weight, bias, targets, params,
                                      torch.is_grad_enabled(), out_dtype)
