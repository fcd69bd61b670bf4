"""PyTorch backend: the spec on torch tensors (public name: ``focalx.torch``).

CPU and CUDA run the same code. Value checks (class-index range, targets in
[0, 1], ...) raise ValueError on CPU tensors outside ``torch.compile``; on an
accelerator or while compiling, where reading values would need a host sync,
they become device-side asserts (``torch._assert_async``, RuntimeError). The gradient w.r.t. the logits is the spec's closed form, computed
in the forward pass when autograd needs it and saved as the only full-size
tensor for backward (a second derivative, ``create_graph=True``, raises).

float16 / bfloat16 logits are computed in float32 and the loss and gradient are
returned in the input dtype (the loss in float32 under ``torch.autocast``);
float32 and float64 are computed as they are.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import math
import numbers
import os
import queue
import sys
import threading
import time
import types
import warnings
from collections.abc import Sequence  # (annotations of the generated signatures)
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake as _is_fake

from .. import _spec
from . import _blocks, _kept as kept
from ._kept import KeptCopies

__all__ = [
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "sigmoid_focal_loss_star",
    "FocalLoss",
    "SigmoidFocalLoss",
    "SigmoidFocalLossStar",
    "global_normalizer",
    "wait_for_kernels",
]


def _kind(a: torch.Tensor) -> str:
    if a.dtype == torch.bool:
        return "bool"
    if a.dtype.is_floating_point:
        return "floating"
    if a.dtype.is_complex:
        return "complex"
    return "integer"


def _symbolic(*tensors) -> bool:
    """Whether this code runs symbolically, so that tensor values cannot be read: traced
    by dynamo (torch.compile, strict torch.export), where
    torch.compiler.is_dynamo_compiling() is the constant True (it returns False when
    run), or under make_fx (non-strict torch.export, AOTAutograd) on fake tensors.

    Not torch.compiler.is_compiling(): that reads one process-wide flag, set while any
    thread compiles, so that another thread's eager call would skip its value checks
    and its fused kernel.
    """
    return torch.compiler.is_dynamo_compiling() or any(_is_fake(t) for t in tensors)


#: Small host vectors copied to an accelerator (see _to_device).
_KEPT = KeptCopies()


def _to_device(t, like):
    """t on like's device in like's dtype. A CPU tensor copied to an accelerator is a
    blocking copy, which waits for the device's queued work. So off the CPU a single
    value (a pos_weight number, a CPU normalizer) becomes a fill on the device, and a
    small host vector (a class vector given as a list, a module's CPU buffer) is copied
    once and reused, keyed by its contents (read on the host: no wait)."""
    if like.device.type == "cpu" or t.device.type != "cpu" or t.requires_grad or \
            _symbolic(t, like):
        return t.to(device=like.device, dtype=like.dtype)
    if t.numel() == 1:
        return torch.full(tuple(t.shape), t.item(), dtype=like.dtype, device=like.device)
    if t.numel() > kept.MAX_NUMEL:
        return t.to(device=like.device, dtype=like.dtype)
    key = (t.dtype, tuple(t.shape),
           t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes(),
           like.dtype, like.device)
    return _KEPT.get(key, lambda: t.to(device=like.device, dtype=like.dtype))


def _off_host(x) -> bool:
    return x.device.type != "cpu"


def _checkable(a: torch.Tensor) -> bool:
    return a.device.type == "cpu" and not _symbolic(a) and a.numel() > 0


class TorchOps:
    """:class:`focalx._spec.Ops` for torch."""

    #: The spec's lean sigmoid evaluation (one exp, one log1p, one division per element):
    #: the fused kernel's sigmoid loss fwd+bwd at 4M elements 8.7 -> 5.3 ms, and under a
    #: user's torch.compile at 16M 58-62 -> 22 and 42 ms (focalx bench, two runs each).
    lean_sigmoid = True

    exp = staticmethod(torch.exp)
    expm1 = staticmethod(torch.expm1)
    log = staticmethod(torch.log)
    log1p = staticmethod(torch.log1p)
    abs = staticmethod(torch.abs)
    where = staticmethod(torch.where)
    full_like = staticmethod(torch.full_like)
    kind = staticmethod(_kind)

    @staticmethod
    def maximum0(a):
        return torch.clamp_min(a, 0.0)

    @staticmethod
    def minimum0(a):
        return torch.clamp_max(a, 0.0)

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        if axis is None:
            return torch.sum(a)
        return torch.sum(a, dim=axis, keepdim=keepdims)

    @staticmethod
    def log_softmax(a, axis):
        return torch.log_softmax(a, dim=axis)

    @staticmethod
    def take(a, index, axis):
        return torch.gather(a, axis, index)

    @staticmethod
    def scatter(a, index, values, axis):
        return a.scatter_(axis, index, values)  # `a` is a fresh temporary of the spec's

    @staticmethod
    def one_hot(index, num_classes, axis, like):
        shape = list(index.shape)
        shape[axis] = num_classes
        out = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return out.scatter_(axis, index, 1.0)

    @staticmethod
    def shape(a):
        return tuple(a.shape)

    @staticmethod
    def count(a):
        return torch.tensor(a.numel(), dtype=a.dtype, device=a.device)

    @staticmethod
    def broadcast_like(a, like):
        return a.expand_as(like)

    @staticmethod
    def asarray(v, name, like):
        if isinstance(v, torch.Tensor):
            t = v
        elif isinstance(v, np.ndarray) and torch.compiler.is_dynamo_compiling():
            t = torch.as_tensor(v)  # (dynamo traces a NumPy array as a tensor: no dtype to read)
        elif isinstance(v, (np.ndarray, np.generic, numbers.Number, list, tuple)):
            t = torch.as_tensor(_spec.host_array(v, name))
        else:
            raise TypeError(f"{name} must be a number, a sequence or a torch tensor, got "
                            f"{type(v).__module__}.{type(v).__name__}")
        if _kind(t) not in ("floating", "integer", "bool"):
            raise TypeError(f"{name} must be real, got {_kind(t)} dtype")
        return _to_device(t, like)

    @staticmethod
    def as_float(a, like):
        return a.to(like.dtype)

    @staticmethod
    def as_index(a):
        return a.long()

    @staticmethod
    def as_mask(keep, like):
        return keep.to(like.dtype)

    @staticmethod
    def assert_values(a, cond, message):
        # Reached where values cannot be read without a host sync (an accelerator, or
        # inside torch.compile): a device-side assert, raised as RuntimeError when it
        # is next synchronised.
        torch._assert_async(cond(a).all(), message)

    @staticmethod
    def tracing():
        # (the spec asks this before reading NumPy hyperparameters, which dynamo traces
        # as tensors; under make_fx they are still plain host arrays)
        return torch.compiler.is_dynamo_compiling()

    @staticmethod
    def concrete_range(a):
        if not _checkable(a):
            return None
        lo, hi = torch.aminmax(a)
        return lo.item(), hi.item()

    @staticmethod
    def expand_dims(a, axis):
        return a.unsqueeze(axis)

    @staticmethod
    def squeeze(a, axis):
        return a.squeeze(axis)

    @staticmethod
    def class_view(v, ndim, axis):
        shape = [1] * ndim
        shape[axis] = -1
        return v.reshape(shape)

    @staticmethod
    def gather_classes(v, idx):
        return v[idx]


OPS = TorchOps()


# ---------------------------------------------------------------------------
# The op-by-op path of eager CPU calls: the spec on row blocks, with selects that
# do not branch
# ---------------------------------------------------------------------------

#: The integer dtype of each floating dtype's bits (see _EagerOps.where).
_BITS = {torch.float64: torch.int64, torch.float32: torch.int32,
         torch.float16: torch.int16, torch.bfloat16: torch.int16}
_BLEND_MIN = 1 << 12


class _EagerOps(TorchOps):
    """TorchOps for the op-by-op run of an eager call on the CPU (_call: inside the
    autograd Function's forward, so never differentiated, never traced)."""

    #: exps of the log-sigmoids: no select per element, where the lean evaluation has two
    #: (the lean one is for compilers, which fuse its extra passes)
    lean_sigmoid = False

    @staticmethod
    def where(cond, a, b):
        # torch.where on the CPU branches per element, slow where the condition is
        # unpredictable; selecting the bits with a mask does not branch, and gives
        # exactly the selected values (NaN and infinities included).
        if type(a) is torch.Tensor and type(b) is torch.Tensor and a.dtype == b.dtype and \
                a.dtype in _BITS and cond.dtype == torch.bool and \
                a.shape == b.shape == cond.shape and a.numel() >= _BLEND_MIN:
            bits = _BITS[a.dtype]
            ai, bi = a.view(bits), b.view(bits)
            mask = cond.to(bits).neg_()  # all ones where cond holds
            out = torch.bitwise_xor(ai, bi)
            out.bitwise_and_(mask)
            return out.bitwise_xor_(bi).view(a.dtype)
        return torch.where(cond, a, b)

    def __init__(self, out=None):
        #: where log_softmax_at may write the softmax, and add_result the sigmoid loss's
        #: gradient: the rows of the whole gradient that this (block's) run produces, so
        #: that the gradient is built in place
        self.out = out

    def add_result(self, a, b):
        out = self.out
        if out is not None and type(a) is torch.Tensor and type(b) is torch.Tensor and \
                a.shape == b.shape == out.shape and a.dtype == b.dtype == out.dtype:
            return torch.add(a, b, out=out)
        return a + b

    def log_softmax_at(self, x, index, axis):
        # The softmax from torch's one fused kernel (exp(x - max) times 1/sum: more
        # accurate than exp of the log-softmax, and one exp pass instead of two), and
        # log p at the target as log_softmax forms it, (x_y - max) - log(sum), with
        # 1/sum read off the softmax as its row maximum (exp(0) = 1 at the max): one
        # rounding of 1/sum more, half an epsilon of absolute error, within the error
        # that the sum's own rounding gives log_softmax.
        out = self.out
        if out is not None and out.shape == x.shape and out.dtype == x.dtype and \
                out.is_contiguous() and x.is_contiguous():
            p = torch.ops.aten._softmax.out(x, axis, False, out=out)
        else:
            p = torch.softmax(x, dim=axis)
        lp_y = torch.gather(x, axis, index).sub_(torch.amax(x, dim=axis, keepdim=True))
        return lp_y.add_(torch.amax(p, dim=axis, keepdim=True).log_()), p

    @staticmethod
    def one_at_zero(m):
        # The select as m + (m <= 0) (the same bits: see Ops.one_at_zero), with the
        # comparison written as floats: one vectorized pass, where a bool result and the
        # select are several. (Not for bfloat16, whose sum rounds through float32 and
        # changes a NaN's bits.)
        if type(m) is torch.Tensor and m.dtype in (torch.float32, torch.float64) and \
                m.numel() >= _BLEND_MIN:
            return torch.le(m, 0.0, out=torch.empty_like(m)).add_(m)
        return torch.where(m <= 0, m + 1.0, m)

    @staticmethod
    def mul_owned(a, b):
        # `a`: log_softmax_at's softmax, which the spec no longer reads
        if isinstance(b, torch.Tensor) and (b.dtype != a.dtype or b.dim() > a.dim() or any(
                s not in (1, t) for s, t in zip(b.shape[::-1], a.shape[::-1]))):
            return a * b
        return a.mul_(b)


_EAGER_OPS = _EagerOps()

# Row blocks. Every fresh tensor of more than a few hundred KiB is new memory from the
# system (page faults, about as costly as the op itself), while freed small tensors are
# reused from the allocator's cache. So a large op-by-op call on the CPU runs the spec on
# row blocks (slices of the leading axis) of about _BLOCK_ELEMS elements (an elementwise
# loss: sigmoid, FL*) or _SOFTMAX_BLOCK_ELEMS (the softmax loss, whose samples are
# independent when the class axis is not the leading one), and writes each block's
# gradient into its rows of the whole gradient (the one full-size tensor). The whole's
# reduction scale (mean denominator, normalizer) is computed first and passed to every
# block (the spec's `scale`); each block is reduced by the spec as a "sum" and the blocks'
# sums are summed (the whole's sum up to the order of the summation), or for "none" its
# losses are written into the whole's. Blocks start at multiples of _BLOCK_ALIGN
# elements, so every element takes the same (vector or scalar) path through a kernel as
# in the whole array. The same rules as the Paddle backend's blocks (backends/paddle.py).
_BLOCK_ELEMS = 1 << 16
#: (a softmax block outgrows L2 either way; larger ones halve the per-block Python and
#: dispatch, which a block of small per-sample ops is made of)
_SOFTMAX_BLOCK_ELEMS = 1 << 20
#: run whole below this many elements
_BLOCK_MIN = 1 << 18
_SOFTMAX_BLOCK_MIN = 1 << 20
_BLOCK_ALIGN = 64
_ELEMENTWISE = ("run_sigmoid_focal_loss", "run_sigmoid_focal_loss_star")
_SOFTMAX = "run_softmax_focal_loss"


def _row_blocks(spec_name, x, targets, params):
    """[(start, stop), ...] rows of x to run the spec on block by block, or None to run
    whole: an eager CPU call, an elementwise loss without ignore_index (the mean's
    denominator is then the element count) or the softmax loss with its class axis not
    the leading one; hyperparameters that are numbers, None, host arrays or tensors (an
    elementwise loss's array with x's leading size is sliced with it, one without that
    axis or of size 1 there is used whole); a valid reduction."""
    softmax = spec_name == _SOFTMAX
    if not softmax and (spec_name not in _ELEMENTWISE or
                        params.get("ignore_index") is not None):
        return None
    if x.device.type != "cpu" or params.get("reduction") not in _spec.REDUCTIONS:
        return None
    shape = tuple(x.shape)
    n = x.numel()
    if not shape or n < (_SOFTMAX_BLOCK_MIN if softmax else _BLOCK_MIN) or shape[0] < 2:
        return None
    if softmax:
        axis = params.get("axis")
        if not isinstance(axis, int) or isinstance(axis, bool) or \
                not -len(shape) <= axis < len(shape) or axis % len(shape) == 0 or \
                tuple(targets.shape)[:1] != shape[:1]:
            return None
    else:
        for a in (targets, *params.values()):
            if isinstance(a, torch.Tensor) and (a.dim() > len(shape) or (
                    a.dim() == len(shape) and a.shape[0] not in (1, shape[0]))):
                return None
    return _blocks.row_blocks(shape, softmax=softmax, align=_BLOCK_ALIGN,
                              elems=_SOFTMAX_BLOCK_ELEMS if softmax else _BLOCK_ELEMS)


#: The whole gradient of the last blocked call, {"t": tensor}. A fresh full-size tensor
#: can be new memory from the system, whose first touch (page faults, worst with several
#: threads) lands in the block kernels that write it; so the next call of the same shape
#: writes its gradient into this one again where nothing else holds it any more (its
#: caller let go of it, as a training step does after its backward). It keeps one
#: gradient's memory between calls.
_SPARE = {"t": None}
_SPARE_LOCK = threading.Lock()
_SPARE_REUSE = True  # (False: always fresh; for A/B measurements)


def _refs(d):
    """sys.getrefcount of d["t"] as seen from a local name."""
    t = d["t"]
    return sys.getrefcount(t)


#: _refs of a tensor that only its dict holds (calibrated, not assumed: how references
#: are counted differs between interpreters and versions; without CPython's counts, no
#: reuse)
_ALONE = _refs({"t": torch.empty(0)}) if sys.implementation.name == "cpython" else -1


def _unheld(d) -> bool:
    """Whether only d holds d["t"]: no other Python reference, no C++ one (autograd's
    saved tensors, .grad, DLPack), no view or storage object of its memory."""
    try:
        if _refs(d) != _ALONE:
            return False
        t = d["t"]
        storage = t.untyped_storage()
        # (t itself holds the tensor's one use; the storage object made here one more),
        # and its memory is still all its own (a caller may have changed its strides or
        # storage in place before letting go)
        return t._use_count() == 1 and torch._C._storage_Use_Count(storage._cdata) == 2 \
            and t.is_contiguous() and t.storage_offset() == 0 and \
            storage.nbytes() == t.numel() * t.element_size()
    except (AttributeError, RuntimeError, TypeError):  # private APIs: when in doubt, fresh
        return False


def _spare_like(x):
    """An uninitialized contiguous tensor like x (see _SPARE)."""
    with _SPARE_LOCK:
        t = _SPARE["t"]
        if _SPARE_REUSE and t is not None and t.shape == x.shape and t.dtype == x.dtype and \
                t.device == x.device and not t.requires_grad:
            del t  # (not counted by _unheld)
            if _unheld(_SPARE):
                return _SPARE["t"]
        t = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        _SPARE["t"] = t
        return t


def _run_blocks(spec_name, x, targets, need_grad, params, blocks):
    """The spec on row blocks of x (see above). Raises whatever a block raises: the caller
    then runs the whole, which raises the spec's own first error."""
    fn = getattr(_spec, spec_name)
    softmax = spec_name == _SOFTMAX
    reduction = params["reduction"]
    lead = x.shape[0]
    arrays = {k: v for k, v in params.items() if k in _spec.ARRAY_PARAMS and v is not None
              and not isinstance(v, (numbers.Number, torch.Tensor))}
    # host data (lists, NumPy arrays) becomes a tensor once, checked as the spec checks it
    arrays = {k: _spec._param_array(OPS, v, k, x) for k, v in arrays.items()}
    normalizer = _spec._normalizer(OPS, params.get("normalizer"), x)
    denom = None
    if reduction == "mean":
        if softmax:
            denom = _spec.softmax_mean_denominator(
                OPS, x, targets, weight=arrays.get("weight", params.get("weight")),
                ignore_index=params.get("ignore_index"), axis=params["axis"])
        else:
            denom = _spec._count(OPS, x)
    scale = _spec.reduction_scale(OPS, reduction=reduction, denom=denom,
                                  normalizer=normalizer, divide=softmax)
    per_block = dict(params, reduction="none" if reduction == "none" else "sum",
                     normalizer=None, scale=scale, **arrays)

    # the arrays sliced with x (found once: the rest is the same for every block)
    rows = [] if softmax else [k for k, v in per_block.items() if isinstance(v, torch.Tensor)
                               and v.dim() == x.dim() and v.shape[0] == lead]
    slice_t = softmax or (targets.dim() == x.dim() and targets.shape[0] == lead)

    grad = _spare_like(x) if need_grad else None
    out = None
    sums = []
    for i, j in blocks:
        kw = dict(per_block, **{k: per_block[k][i:j] for k in rows}) if rows else per_block
        t = targets[i:j] if slice_t else targets
        dest = grad[i:j] if need_grad else None
        o, g = fn(_EagerOps(dest) if need_grad else _EAGER_OPS, x[i:j], t,
                  need_grad=need_grad, **kw)
        if need_grad and not (g.data_ptr() == dest.data_ptr() and g.shape == dest.shape
                              and g.stride() == dest.stride()):
            dest.copy_(g)
        if reduction == "none":
            if out is None:
                out = o.new_empty((lead,) + tuple(o.shape[1:]))
            out[i:j].copy_(o)
        else:
            sums.append(o.reshape(1))
    if reduction != "none":
        out = _spec.reduce(OPS, torch.cat(sums), reduction="sum")
    return out, grad


#: Eager CPU calls with logits of this many elements (those that the fused path takes)
#: run op by op by _EagerOps; smaller ones by TorchOps, as traced calls do.
_EAGER_MIN = 1 << 14


def _eager(spec_name, x, targets, need_grad, params):
    """The spec op by op: for a large eager call on the CPU by _EagerOps, in row blocks
    where they apply; otherwise by TorchOps."""
    if x.device.type != "cpu" or x.numel() < _EAGER_MIN or _symbolic(x, targets):
        return getattr(_spec, spec_name)(OPS, x, targets, need_grad=need_grad, **params)
    # (whole while a kernel compiles: each torch op of a call waits for the GIL, which
    # the compile thread holds, and blocks multiply the ops)
    blocks = None if _WORKER["running"] else _row_blocks(spec_name, x, targets, params)
    if blocks is not None:
        try:
            return _run_blocks(spec_name, x, targets, need_grad, params, blocks)
        except Exception:  # noqa: BLE001 - the whole run raises the spec's own error
            pass
    return getattr(_spec, spec_name)(_EAGER_OPS, x, targets, need_grad=need_grad, **params)


# ---------------------------------------------------------------------------
# The fused path: large eager calls run the spec through torch.compile
# ---------------------------------------------------------------------------

class _RecordingOps(TorchOps):
    """TorchOps for the compiled kernel: value checks are returned as one flag."""

    def __init__(self):
        self.unchecked = []
        self.softmaxes = []  # (log_softmax's output, exp(a - max), the sum of that)

    @staticmethod
    def concrete_range(a):
        return None

    def assert_values(self, a, cond, message):
        self.unchecked.append(cond(a).all())

    @staticmethod
    def expm1(a):
        # Inductor's CPU expm1 is exp(x) - 1 (torch 2.13: relative error 1 for |x| < 1e-8,
        # measured), which would destroy 1 - p = -expm1(log p). Kahan's form from exp and
        # log is exact to a few ulps: the rounding of u = exp(x) cancels in (u - 1) / log(u).
        u = torch.exp(a)
        um1 = u - 1.0
        lu = torch.log(u)
        ratio = um1 * a / torch.where(um1 == 0, 1.0, lu)
        # |x| > 1: u - 1 itself is within 2 ulps (and exp may overflow or be subnormal)
        return torch.where(um1 == 0, a, torch.where(torch.abs(a) > 1.0, um1, ratio))

    def log_softmax(self, a, axis):
        # As the NumPy reference: log-sum-exp = max + log1p(sum of exp(a - max) over all
        # but one maximal entry), so the log-probability of a dominant class keeps its
        # relative precision. (The compiler's own log_softmax takes the log of the whole
        # sum: 1e-11 relative error in float64 on the golden "extreme" cases.)
        # Ties: k maximal entries add k - 1 to the rest (exp(0) = 1 each).
        m = torch.amax(a, dim=axis, keepdim=True)
        shifted = a - m
        top = shifted == 0
        e = torch.exp(shifted)
        rest = torch.where(top, 0.0, e).sum(dim=axis, keepdim=True)
        # (counted in the logits' dtype, exact below 2**24 ties: an integer count made
        # the kernel widen every mask lane to int64, 5-16% of the softmax loss's fwd+bwd
        # kernel at 4M elements, measured)
        ties = top.to(a.dtype).sum(dim=axis, keepdim=True) - 1.0
        out = shifted - torch.log1p(rest + ties)
        self.softmaxes.append((out, e, (rest + ties) + 1.0))
        return out

    def softmax_parts(self, lp):
        # The spec's softmax from the log-softmax's own exp and sum (_spec._softmax): the
        # kernel keeps exp(a - max) from its row reductions and turns it into the
        # gradient in place, one exp per element (the softmax loss's fwd+bwd kernel at 4M
        # elements, 1000 classes: 3.5-4.2 -> 3.0-3.2 ms, medians of two in-process A/B
        # runs, against exp of the log-softmax).
        for out, e, total in self.softmaxes:
            if out is lp:
                return e, total
        return None

    # Class indices are clamped before they index: an out-of-range index inside a
    # compiled CPU kernel aborts the process, and a failed check is reported anyway.
    @staticmethod
    def take(a, index, axis):
        return torch.gather(a, axis, index.clamp(0, a.shape[axis] - 1))

    @staticmethod
    def scatter(a, index, values, axis):
        # a select against the class number, which the compiler fuses into the loop that
        # produces `a` (an in-place scatter would be a separate pass)
        shape = [1] * a.dim()
        shape[axis] = a.shape[axis]
        classes = torch.arange(a.shape[axis], device=a.device).view(shape)
        return torch.where(classes == index, values, a)

    @staticmethod
    def one_hot(index, num_classes, axis, like):
        return TorchOps.one_hot(index.clamp(0, num_classes - 1), num_classes, axis, like)

    @staticmethod
    def gather_classes(v, idx):
        return v[idx.clamp(0, v.shape[0] - 1)]

    @staticmethod
    def pow(a, gamma):
        # a ** gamma with gamma a symbolic float (a run-time input: see _compile_call) as
        # a tensor power: dynamo turns a tensor-to-symbolic-float power into a constant
        # (torch 2.13's tensorify pass takes the tensor form only), which would compile a
        # kernel per gamma. (The exponent is in a's dtype, as in a ** gamma.)
        return torch.pow(a, torch.zeros((), dtype=a.dtype, device=a.device) + gamma)

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        if axis is None and a.dtype == torch.float32:
            # A fused float32 reduction accumulates in a few long sequential chains (3e-6
            # relative error on a 1M-element mean, measured, where torch.sum gives 3e-8);
            # accumulating in float64 inside the kernel costs nothing measurable.
            return torch.sum(a, dtype=torch.float64).to(a.dtype)
        return TorchOps.sum(a, axis=axis, keepdims=keepdims)


def _fused_kernel(spec_name, x, targets, tensors, static, need_grad):
    if not torch.compiler.is_dynamo_compiling():
        # Run as plain Python: dynamo found no compiled entry for these arguments in
        # run-only mode (_Kernel.runner), or declined to compile (its recompile limit).
        # The caller then runs op by op. (Traced, this branch is constant False.)
        return None
    ops = _RecordingOps()
    out, grad = getattr(_spec, spec_name)(ops, x, targets, need_grad=need_grad, **tensors,
                                          **static)
    ok = torch.stack(ops.unchecked).all() if ops.unchecked else None
    return out, grad, ok


#: FOCALX_TORCH_COMPILE=0 turns the fused path off, =sync compiles in the calling thread
#: (each new kernel blocks its first call); by default kernels compile in a background
#: thread while calls run op by op. FOCALX_TORCH_COMPILE_MIN_NUMEL sets the smallest
#: logits (in elements) that take the fused path. "compile" is torch.compile (tests
#: replace it).
#: Once compiled, the kernel's fwd+bwd was faster at every size measured, 1K to 256K
#: elements (sigmoid loss at 16K: 188 against 420 us op by op; at 64K: 264 against 2216 us,
#: where every op's fresh 256 KiB result page-faults). Below 16K elements a call takes
#: 0.1-0.4 ms either way, and the first call's compilation (seconds) would dominate a
#: small job, so those run op by op.
_MODE = os.environ.get("FOCALX_TORCH_COMPILE", "1")
_FUSED = {"enabled": _MODE != "0", "background": _MODE != "sync",
          "min_numel": int(os.environ.get("FOCALX_TORCH_COMPILE_MIN_NUMEL", 2 ** 14)),
          "compile": None, "calls": 0, "forked_mid_compile": False}
_KERNELS: dict = {}  # (function, branch class of the arguments) -> _Kernel
_MAX_KERNELS = 64
#: distinct argument signatures (shapes, dtypes, thread state) one kernel compiles for
_MAX_SIGNATURES = 16
_KERNELS_LOCK = threading.Lock()
#: Hyperparameters that are run-time inputs of a kernel (symbolic floats: see
#: _compile_call), not constants compiled into it: a kernel serves every value of the
#: branch class that _branch names.
_RUNTIME_FLOATS = ("gamma", "alpha", "label_smoothing", "beta")


class _Kernel:
    """The compiled kernel of one spec function and one branch class of its arguments.

    `fn` is its own copy of _fused_kernel; `compiled`, made by the first compilation
    (torch.compile imports dynamo: seconds, which the calling thread does not wait
    for), compiles when called (only ever under _compile_call); `runner` runs what
    is compiled and never compiles (dynamo's run-only mode), returning None where no
    compiled entry fits the arguments. `ready`: something is compiled; `busy`: a
    compilation is queued or running; `tried`: the signatures compiled for (a miss on
    one of them means a guard that the background thread cannot reproduce: no retry);
    `eager`: the compiler cannot take this configuration."""

    __slots__ = ("fn", "compiled", "runner", "ready", "busy", "tried", "eager")

    def __init__(self, fn):
        self.fn, self.compiled, self.runner = fn, None, None
        self.ready = self.busy = self.eager = False
        self.tried = {}


def _branch(spec_name, name, v):
    """What the spec's Python branches on for hyperparameter `name` with value v: the
    kernel's key holds this instead of the value. For gamma: 0 (no focal factor), an
    integer up to 4 (repeated products), another integer or a fraction (a power); for
    label_smoothing: 0 or not. Never raises (a bad value fails in the op-by-op run)."""
    if name not in _RUNTIME_FLOATS or type(v) is not float or not math.isfinite(v):
        return repr(v)
    if name == "gamma" and spec_name != "run_sigmoid_focal_loss_star":  # (FL*: a divisor)
        if v == 0 or (v == int(v) and v <= _spec._MAX_INT_GAMMA):
            return f"gamma={int(v)}"
        return "gamma=int" if v == int(v) else "gamma=frac"
    if name == "label_smoothing":
        return "0" if v == 0 else "smoothed"
    return "float"


def _kernel_for(spec_name, static, tensors):
    """The kernel for one function and the branch class of its arguments.

    Each gets a copy of _fused_kernel's code object, so that each has its own compile
    cache (torch.compile caches per code object, up to a small recompile limit): the
    kernels of different losses and branch classes do not crowd each other out.
    """
    branches = tuple(sorted((k, _branch(spec_name, k, v)) for k, v in static.items()))
    key = (spec_name, branches, tuple(sorted(tensors)))
    with _KERNELS_LOCK:
        kernel = _KERNELS.get(key)
        if kernel is None:
            kernel = _Kernel(types.FunctionType(_fused_kernel.__code__.replace(),
                                                _fused_kernel.__globals__, "_fused_kernel"))
            if len(_KERNELS) >= _MAX_KERNELS:
                _KERNELS.pop(next(iter(_KERNELS)))
            _KERNELS[key] = kernel
    return kernel


def _fusable(x) -> bool:
    return (_FUSED["enabled"] and x.numel() >= _FUSED["min_numel"]
            and x.device.type in ("cpu", "cuda") and not _symbolic(x)
            and not torch.jit.is_scripting())


def _compiler_failed(exc) -> bool:
    """The compiler itself failed (no C++ compiler, a broken toolchain), as opposed to
    a configuration it cannot trace or one recompiled too often."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"BackendCompilerFailed", "InductorError", "CppCompileError"})


def _disable_fused(exc, stacklevel=5):
    _FUSED["enabled"] = False
    warnings.warn(f"focalx: torch.compile cannot compile here ({type(exc).__name__}: {exc}); "
                  "focalx.torch falls back to eager kernels (set FOCALX_TORCH_COMPILE=0 to "
                  "silence this)", RuntimeWarning, stacklevel=stacklevel)


def _host_value(v):
    """NumPy scalars and 0-d arrays as Python numbers (the compiler traces those)."""
    if isinstance(v, np.generic) or (isinstance(v, np.ndarray) and v.ndim == 0):
        return v.item()
    return v


def _device_params(args, x):
    """For a kernel: hyperparameters given as host data (sequences, NumPy arrays, CPU
    tensors off the CPU; numbers for pos_weight and weight) checked here, as the spec
    does, and moved to x's device (off the CPU without a per-call copy: _to_device), to
    be passed to the kernel as tensors: the kernel then neither bakes them in nor copies
    them per call. A CPU tensor normalizer likewise. Raises the spec's TypeError /
    ValueError."""
    out = dict(args)
    for name in _spec.ARRAY_PARAMS:
        v = out.get(name)
        if v is None or (isinstance(v, torch.Tensor) and v.device == x.device) or \
                (name == "alpha" and (_spec._is_real(v) or isinstance(v, bool))):
            continue
        out[name] = _spec._param_array(OPS, v, name, x)
    norm = out.get("normalizer")
    if isinstance(norm, torch.Tensor) and norm.device != x.device:
        out["normalizer"] = OPS.asarray(norm, "normalizer", x)
    return out


def _kernel_args(x, params):
    """(tensors, static): the kernel's arguments, or None where converting them raised
    (a bad argument: the op-by-op run raises the spec's own error). Hyperparameter arrays
    and the numbers that the spec turns into arrays (normalizer, pos_weight, weight)
    become tensors, run-time inputs; so do, as symbolic floats, the floats of
    _RUNTIME_FLOATS."""
    try:
        args = _device_params({k: _host_value(v) for k, v in params.items()}, x)
    except (TypeError, ValueError):
        return None
    norm = args.get("normalizer")
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool) and norm > 0:
        # (torch.full: a fill on the device; torch.tensor would copy from the host,
        # which off the CPU waits for the device.)
        args["normalizer"] = torch.full((), float(norm), dtype=x.dtype, device=x.device)
    for name in _RUNTIME_FLOATS:
        v = args.get(name)
        if type(v) is int and abs(v) <= 2 ** 53:  # (an int would be a constant: see _branch)
            args[name] = float(v)
    tensors = {k: v.detach() for k, v in args.items() if isinstance(v, torch.Tensor)}
    static = {k: v for k, v in args.items() if k not in tensors}
    return tensors, static


def _compile_lock():
    """Dynamo's own lock around a compilation. Held around ours, so that the config we
    patch for it is seen by no other thread's compilation."""
    try:
        from torch._dynamo.convert_frame import compile_lock
    except ImportError:  # (another torch: the patch may then leak into a concurrent compile)
        return contextlib.nullcontext()
    return compile_lock


def _forget_float_specializations():
    """Forget the symbolic floats that dynamo's previous compilation made constants. In
    torch 2.13 it keeps their names (zf0, zf1, ...) after a compilation, and a later one
    then makes constants of its own floats of those names: a kernel that recompiles for
    every gamma. (Called under the compile lock.)"""
    try:
        from torch._dynamo.symbolic_convert import TensorifyState
        TensorifyState.clear()
    except (ImportError, AttributeError):
        pass


def _compile_call(kernel, args):
    """The kernel on `args`, compiling it for them if needed: floats (the hyperparameters
    of _RUNTIME_FLOATS) as symbolic inputs, whose guards follow the spec's branches (so
    one compilation serves every value of a branch class), sizes dynamic (one serves
    every batch shape). Ints (ignore_index, axis) stay constants. Returns None where
    dynamo declined to compile (see _fused_kernel)."""
    import torch._dynamo
    import torch.fx.experimental._config as fx_config
    if kernel.compiled is None:
        # fx_graph_cache off: with it, torch 2.13 handed the gamma=0.25 kernel's code to a
        # gamma=0.5 call for some elements (a wrong loss, reproduced in the tests). (Made
        # outside the lock, which callers take: the first torch.compile imports for a while.)
        compiled = (_FUSED["compile"] or torch.compile)(
            kernel.fn, fullgraph=True, options={"fx_graph_cache": False})
        with _KERNELS_LOCK:
            if kernel.compiled is None:
                kernel.compiled = compiled
    # (no duck shapes: equal sizes in the first call would otherwise be guarded equal)
    with _compile_lock(), torch._dynamo.config.patch(assume_static_by_default=False,
                                                      specialize_int=True), \
            fx_config.patch(use_duck_shape=False), torch.no_grad():
        _forget_float_specializations()
        try:
            out = kernel.compiled(*args)
        finally:
            _forget_float_specializations()
    if out is not None and kernel.runner is None:
        kernel.runner = torch._dynamo.run(kernel.compiled)
        kernel.ready = True
    return out


def _signature(args):
    """What a compilation for `args` is for: the tensors' metadata and the thread state
    that dynamo guards on (see _thread_state). (Sizes are dynamic, so one compilation
    usually serves other sizes as well.)"""
    spec_name, x, targets, tensors, static, need_grad = args
    return (_meta_of(x), _meta_of(targets),
            tuple((k, _meta_of(v)) for k, v in sorted(tensors.items())), need_grad,
            _thread_state())


#: Devices whose autocast state dynamo's guards read and a compile thread copies.
_AUTOCAST = ("cpu", "cuda", "xpu", "mps", "hpu")


def _thread_state():
    """The calling thread's state that a compiled entry is guarded on and that is the
    thread's own: inference mode, autocast, torch's thread count (as this thread sees it)."""
    autocast = []
    for dev in _AUTOCAST:
        try:
            autocast.append((dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)))
        except (RuntimeError, TypeError, AttributeError):  # (a device this build lacks)
            pass
    return (torch.is_inference_mode_enabled(), torch.get_num_threads(), tuple(autocast),
            torch.is_autocast_cache_enabled())


@contextlib.contextmanager
def _in_state(state):
    """The compile thread in the calling thread's state (see _thread_state)."""
    inference, threads, autocast, cache = state
    saved = [(dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
             for dev, _, _ in autocast]
    saved_cache = torch.is_autocast_cache_enabled()
    if torch.get_num_threads() != threads:
        # (a thread sees the count as it was when it last set it or was started; this
        # sets the count the calling thread already has)
        torch.set_num_threads(threads)
    try:
        for dev, enabled, dtype in autocast:
            torch.set_autocast_enabled(dev, enabled)
            torch.set_autocast_dtype(dev, dtype)
        torch.set_autocast_cache_enabled(cache)
        with torch.inference_mode(inference):
            yield
    finally:
        for dev, enabled, dtype in saved:
            torch.set_autocast_enabled(dev, enabled)
            torch.set_autocast_dtype(dev, dtype)
        torch.set_autocast_cache_enabled(saved_cache)


_WORKER = {"queue": None, "thread": None, "running": False, "stopping": False,
           "hooked": False}
#: seconds that interpreter exit waits for the compile thread to stop
_EXIT_WAIT = 10.0
#: the interpreter's switch interval (seconds) while the compile thread compiles
_COMPILE_SWITCH_INTERVAL = 2e-4


class _Stop(SystemExit):
    """Raised in the compile thread at interpreter exit (see _stop_worker)."""


def _compile_worker(jobs):
    while True:
        with _KERNELS_LOCK:
            if jobs.empty() and _WORKER["queue"] is jobs:
                # Nothing queued: the thread ends (the next _submit starts another). An idle
                # thread that has run an OpenMP region keeps its OpenMP team, and with more
                # OpenMP threads than cores libgomp stops spinning: every parallel torch op
                # of the caller then waits for a woken thread (8x slower at 64K elements).
                _WORKER.update(queue=None, thread=None)
                return
        job = jobs.get()
        if job is None or _WORKER["stopping"]:
            return
        _WORKER["running"] = True
        # A compilation is Python that holds the GIL for whole switch intervals, and an
        # op-by-op call takes the GIL back after each of its torch ops: so while this
        # thread compiles, the interval is short (restored unless changed meanwhile).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, _COMPILE_SWITCH_INTERVAL))
        short = sys.getswitchinterval()  # (as stored: rounded to whole microseconds)
        try:
            job()
        except BaseException:  # noqa: BLE001 - a job reports its own failures
            pass
        finally:
            _WORKER["running"] = False
            if sys.getswitchinterval() == short:
                sys.setswitchinterval(interval)


def _stop_worker():
    """At interpreter exit: stop the compile thread, interrupting a compilation in
    progress. A daemon thread still inside torch's C++ code when the interpreter
    finalizes is unwound from there, which aborts the process ("terminate called
    without an active exception", reproduced in the tests)."""
    # (the lock: an idle thread ends on its own, under it; bounded, as exit must not hang)
    locked = _KERNELS_LOCK.acquire(timeout=_EXIT_WAIT)
    try:
        thread, jobs = _WORKER["thread"], _WORKER["queue"]
        if thread is None:
            return
        _WORKER["stopping"] = True
        jobs.put(None)
    finally:
        if locked:
            _KERNELS_LOCK.release()
    unraisable = sys.unraisablehook

    def quiet(info):  # (_Stop raised inside a callback: reported, not propagated)
        if not isinstance(info.exc_value, _Stop):
            unraisable(info)
    sys.unraisablehook = quiet
    deadline = time.monotonic() + _EXIT_WAIT
    # Raised when the thread next runs Python code (compilation is mostly Python); again
    # until it stops, as a handler in the compiler may swallow one.
    while thread.is_alive() and _WORKER["running"] and time.monotonic() < deadline:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(_Stop))
        thread.join(0.05)
    thread.join(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child():
    # The child has none of its parent's threads: no compile thread (the next
    # compilation starts one), no compilation in progress, and a lock that the parent's
    # compile thread held would never be released.
    global _KERNELS_LOCK
    _KERNELS_LOCK = threading.Lock()
    if _WORKER["running"]:
        # forked during a compilation: the compiler's own locks may be held for good
        # (a compilation here would hang), so this process compiles nothing; what is
        # compiled already still runs
        _FUSED["forked_mid_compile"] = True
    _WORKER.update(queue=None, thread=None, running=False, stopping=False)
    for kernel in _KERNELS.values():
        kernel.busy = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _submit(job):
    with _KERNELS_LOCK:
        if _WORKER["thread"] is None:
            if not _WORKER["hooked"]:
                # (threading's exit hook runs before atexit's, some of which stop what a
                # compilation uses)
                getattr(threading, "_register_atexit", atexit.register)(_stop_worker)
                _WORKER["hooked"] = True
            jobs = queue.SimpleQueue()
            thread = threading.Thread(target=_compile_worker, args=(jobs,), daemon=True,
                                      name="focalx-torch-compile")
            thread.start()  # (it waits for this lock before it reads the queue)
            _WORKER.update(queue=jobs, thread=thread, stopping=False)
        _WORKER["queue"].put(job)


def wait_for_kernels(timeout: float | None = None) -> bool:
    """Wait until every fused kernel queued for compilation so far has compiled (or
    failed to). By default kernels compile in a background thread while calls run op by
    op; a benchmark or a test that means to time or check the compiled kernel calls this
    after a first call. Returns False if `timeout` (seconds) passed first."""
    if timeout is not None and (not isinstance(timeout, numbers.Real) or
                                isinstance(timeout, bool) or not timeout >= 0):
        raise ValueError(f"timeout must be a number >= 0 or None, got {timeout!r}")
    if _WORKER["stopping"]:
        return False  # (interpreter exit: queued compilations will not run)
    thread = _WORKER["thread"]
    if thread is None or not thread.is_alive():
        return True
    done = threading.Event()
    _submit(done.set)  # (one worker, first in first out: done once those before it are)
    return done.wait(timeout)


def _schedule(kernel, args):
    """Compile `kernel` for `args` in the background thread, unless it is compiling, was
    compiled for this signature before, or has compiled for too many. Called after the
    op-by-op run has validated the arguments."""
    if kernel.busy or kernel.eager or len(kernel.tried) >= _MAX_SIGNATURES or \
            _FUSED["forked_mid_compile"]:
        return  # (read without the lock: checked again under it)
    sig = _signature(args)
    with _KERNELS_LOCK:
        if kernel.busy or kernel.eager or len(kernel.tried) >= _MAX_SIGNATURES:
            return
        if sig in kernel.tried:
            # compiled for this signature, yet no entry fits it: unless the compiled
            # entries are gone (torch._dynamo.reset()), a guard the compile thread cannot
            # reproduce (a torch function mode, ...): op by op from now on
            try:
                entries = torch._C._dynamo.eval_frame._debug_get_cache_entry_list(
                    kernel.fn.__code__)
            except (AttributeError, RuntimeError, TypeError):
                entries = [None]
            if entries:
                return
        kernel.tried[sig] = True
        kernel.busy = True
    spec_name, x, targets, tensors, static, need_grad = args
    # The compile thread compiles on tensors of zeros made from the metadata of the
    # caller's (it holds none of them); small hyperparameters are copied now, as they
    # are (a normalizer must be > 0).
    small = {k: v.clone() for k, v in tensors.items() if v.numel() <= 4096}
    metas = (_meta_of(x), _meta_of(targets),
             {k: _meta_of(v) for k, v in tensors.items() if k not in small})
    state = sig[-1]
    try:
        global_state = torch._C._dynamo.guards.GlobalStateGuard()
    except (AttributeError, RuntimeError, TypeError):
        global_state = None

    def job():
        try:
            with _in_state(state), torch.no_grad():
                if global_state is not None and not global_state.check():
                    return  # (a state the entry would be guarded on that this thread lacks)
                xb, tb = (_from_meta(m) for m in metas[:2])
                tens = dict(small, **{k: _from_meta(m) for k, m in metas[2].items()})
                _compile_call(kernel, (spec_name, xb, tb, tens, static, need_grad))
        except Exception as exc:  # noqa: BLE001
            if _compiler_failed(exc):
                _disable_fused(exc, stacklevel=2)
            elif type(exc).__name__ != "FailOnRecompileLimitHit":
                kernel.eager = True  # a configuration the compiler cannot take
        finally:
            kernel.busy = False
    try:
        _submit(job)
    except RuntimeError:
        # no thread can start (interpreter shutdown: "can't register atexit after
        # shutdown", "can't start new thread"): this call's result stands, op by op
        kernel.busy = False


def _meta_of(t):
    return (tuple(t.shape), t.stride(), t.dtype, t.device, t.is_inference())


def _from_meta(meta):
    """A tensor of these shape, strides, dtype and device (inference or not), of zeros: a
    valid logit, target (probability or class index), weight or alpha. Not a view: a
    compiled entry is guarded on its arguments' being views or not."""
    shape, stride, dtype, device, inference = meta
    with torch.inference_mode(inference):
        return torch.empty_strided(shape, stride, dtype=dtype, device=device).zero_()


def _call(spec_name, x, targets, need_grad, params):
    """The spec's `spec_name` on x: through one compiled (fused) kernel for large eager
    calls once it is compiled, else op by op. Both compute the same formulas; the eager
    run also raises the precise ValueError when the kernel reports a failed value check.

    A kernel compiles in a background thread (unless FOCALX_TORCH_COMPILE=sync): the
    calling thread never waits for a compilation. It calls the kernel in dynamo's
    run-only mode, which runs a compiled entry whose guards pass or else returns None
    (then this call runs op by op, and queues a compilation for its arguments)."""
    if _fusable(x):
        prepared = _kernel_args(x, params)
        if prepared is not None:
            tensors, static = prepared
            kernel = _kernel_for(spec_name, static, tensors)
            args = (spec_name, x.detach(), targets.detach(), tensors, static, need_grad)
            if not kernel.eager:
                result = _kernel_result(kernel, args, spec_name, x, targets, need_grad, params)
                if result is not None:
                    return result
                if _FUSED["background"] and _FUSED["enabled"] and not kernel.eager:
                    result = _eager(spec_name, x, targets, need_grad, params)
                    _schedule(kernel, args)
                    return result
    return _eager(spec_name, x, targets, need_grad, params)


def _kernel_result(kernel, args, spec_name, x, targets, need_grad, params):
    """(out, grad) from the kernel, or None: not compiled for these arguments (yet), a
    failed value check (the caller's op-by-op run raises the precise error), or the
    kernel failed (then it is not used again; see _compiler_failed)."""
    try:
        res = kernel.runner(*args) if kernel.ready else None
        if res is None and not _FUSED["background"] and not _FUSED["forked_mid_compile"]:
            res = _compile_call(kernel, args)
    except Exception as exc:  # noqa: BLE001
        # Bad arguments: the eager run raises the spec's own error. Otherwise the
        # compiler failed: for good (no C++ compiler, ...), or for this configuration
        # only (one it cannot trace).
        result = _eager(spec_name, x, targets, need_grad, params)
        if _compiler_failed(exc):
            _disable_fused(exc, stacklevel=6)
        elif type(exc).__name__ != "FailOnRecompileLimitHit":
            kernel.eager = True
        return result
    if res is None:
        return None
    out, grad, ok = res
    if ok is None:
        _FUSED["calls"] += 1
        return out, grad
    if x.device.type != "cpu":  # no host sync: a device-side assert
        torch._assert_async(ok, "focalx: a value check failed (targets or a "
                                "hyperparameter out of range)")
        _FUSED["calls"] += 1
        return out, grad
    if bool(ok):
        _FUSED["calls"] += 1
        return out, grad
    return None


#: forward's arguments before the tensors that may take a gradient besides the logits
_N_FIXED = 7


def _compute_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _FocalFunction(torch.autograd.Function):
    """The loss of spec function `spec_name`; the logits' closed-form gradient is computed
    in forward and saved. Floating targets and hyperparameter tensors that require a
    gradient come after the fixed arguments (`names` says which is which): theirs is the
    autodiff of the spec's formula, computed in backward (see _other_grads)."""

    @staticmethod
    def forward(ctx, x, spec_name, targets, params, class_axis, grad_mode, out_dtype, names,
                *others):
        need_grad = grad_mode and ctx.needs_input_grad[0]
        out, grad = _call(spec_name, x.to(_compute_dtype(x)), targets, need_grad, params)
        ctx.class_axis = class_axis
        ctx.x_dtype = x.dtype
        ctx.others = None
        if grad_mode and any(ctx.needs_input_grad[_N_FIXED + 1:]):
            ctx.others = (spec_name, targets, params, names)
            ctx.x = x  # (kept for backward only where one of `others` takes a gradient)
        ctx.own_grad = False
        if need_grad:
            # The only full-size tensor kept for backward, in the compute dtype: for
            # float16/bfloat16 input the 1/N of a mean and the loss scale of a
            # GradScaler meet in float32, and only the result is rounded.
            ctx.save_for_backward(grad)
            # saved-tensor hooks (save_on_cpu, a user's pack hook) may keep the saved
            # gradient where backward must not overwrite it
            ctx.own_grad = _no_saved_tensor_hooks(grad)
        return out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            # create_graph=True: a second derivative through this loss would silently
            # miss its curvature, so refuse it.
            raise RuntimeError(
                "focalx losses are differentiable once: their backward cannot be "
                "differentiated twice (create_graph=True is not supported)")
        n_others = len(ctx.needs_input_grad) - _N_FIXED - 1
        others = _other_grads(ctx, grad_out) if ctx.others else (None,) * n_others
        fixed = (None,) * _N_FIXED
        if not ctx.needs_input_grad[0]:
            return (None,) + fixed + tuple(others)
        (grad,) = ctx.saved_tensors
        if grad_out.dim() and ctx.class_axis is not None:  # per-sample softmax loss
            grad_out = grad_out.unsqueeze(ctx.class_axis)
        grad_out = grad_out.to(grad.dtype)
        if grad.dtype == ctx.x_dtype and ctx.own_grad and _reusable(grad, grad_out):
            # The saved gradient is used this once: scaled in place, it becomes the
            # result without a fresh full-size tensor (whose page faults cost as much
            # as the product: the backward product at 4M elements 3.5 -> 0.5 ms,
            # measured with torch.profiler). A loss's backward() seeds a gradient of
            # exactly 1: on the CPU that is read without a device sync, and the product
            # is skipped (0.5 ms of a 5 ms fwd+bwd at 4M elements, torch.profiler).
            if grad_out.numel() == 1 and grad_out.device.type == "cpu" and \
                    grad_out.item() == 1.0:
                return (grad,) + fixed + tuple(others)
            return (grad.mul_(grad_out),) + fixed + tuple(others)
        return ((grad_out * grad).to(ctx.x_dtype),) + fixed + tuple(others)


def _other_grads(ctx, grad_out):
    """The gradients of the targets and hyperparameter tensors among forward's `others`:
    the spec's formula run again op by op, differentiated by autograd (as the JAX backend
    does), for those that need one."""
    spec_name, targets, params, names = ctx.others
    wanted = ctx.needs_input_grad[_N_FIXED + 1:]
    with torch.enable_grad():
        copies = {k: (targets if k == "targets" else params[k]).detach().requires_grad_(w)
                  for k, w in zip(names, wanted)}
        kw = {k: copies.get(k, v) for k, v in params.items()}
        out, _ = getattr(_spec, spec_name)(OPS, ctx.x.detach().to(_compute_dtype(ctx.x)),
                                           copies.get("targets", targets), need_grad=False,
                                           **kw)
        inputs = [copies[k] for k, w in zip(names, wanted) if w]
        grads = iter(torch.autograd.grad(out, inputs, grad_out.to(out.dtype),
                                         allow_unused=True))
    return [next(grads) if w else None for w in wanted]


def _no_saved_tensor_hooks(grad) -> bool:
    if _symbolic(grad):
        return False  # (backward is traced, never in place; and dynamo cannot trace this)
    try:
        return torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    except (AttributeError, RuntimeError, TypeError):  # a private API: when in doubt, no
        return False


def _reusable(grad, grad_out) -> bool:
    """Whether backward may overwrite its saved gradient: a plain tensor of its own
    memory, the product keeps its shape (not a vmapped backward, is_grads_batched or
    jacobian(vectorize=True), whose grad_out carries a hidden batch axis), and the
    autograd graph is not kept for another backward (retain_graph=True) nor traced."""
    try:
        ft = torch._C._functorch
        if ft.is_functorch_wrapped_tensor(grad_out) or ft.is_legacy_batchedtensor(grad_out):
            return False
    except (AttributeError, RuntimeError, TypeError):
        return False
    if _symbolic(grad, grad_out) or grad._base is not None or \
            not grad.is_contiguous() or grad_out.dim() > grad.dim() or \
            any(o not in (1, g) for o, g in zip(grad_out.shape[::-1], grad.shape[::-1])):
        return False
    try:
        return not torch._C._autograd._get_current_graph_task_keep_graph()
    except (AttributeError, RuntimeError):  # a private API: when in doubt, copy
        return False


def _apply(logits, spec_name, targets, params, class_axis):
    """Run spec function `spec_name` through the autograd Function. The result has the
    logits' dtype, except under torch.autocast, where it is float32 like torch's own
    losses. Targets and hyperparameter tensors that require a gradient get one."""
    out_dtype = logits.dtype
    if logits.dtype in (torch.float16, torch.bfloat16) and \
            torch.is_autocast_enabled(logits.device.type):
        out_dtype = torch.float32
    grad_mode = torch.is_grad_enabled()
    others = {}
    if grad_mode:
        others = {k: v for k, v in (("targets", targets), *params.items())
                  if isinstance(v, torch.Tensor) and v.requires_grad}
    return _FocalFunction.apply(logits, spec_name, targets, params, class_axis, grad_mode,
                                out_dtype, tuple(others), *others.values())


def _check_tensors(logits, targets):
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got "
                        f"{type(logits).__module__}.{type(logits).__name__}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor (the framework of logits), got "
                        f"{type(targets).__module__}.{type(targets).__name__}")
    _spec.check_logits_dtype(_kind(logits))
    if targets.device != logits.device:
        raise ValueError(f"targets is on {targets.device} but logits is on {logits.device}")


# focalx:signature sigmoid_focal_loss
def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 2.0,
                       alpha: float | Sequence[float] | torch.Tensor | np.ndarray | None = 0.25,
                       pos_weight: float | Sequence[float] | torch.Tensor | np.ndarray | None = None,
                       weight: float | Sequence[float] | torch.Tensor | np.ndarray | None = None,
                       ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                       reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | torch.Tensor | np.ndarray | None = None,
                       from_logits: bool = True) -> torch.Tensor:
    r"""Sigmoid (binary / multi-label) focal loss.

    .. math::

        p &= \sigma(x), \quad p_t = y p + (1-y)(1-p), \quad
        \alpha_t = y\alpha + (1-y)(1-\alpha) \\
        \mathrm{FL}(x, y) &= -\,w\,\alpha_t\,(1-p_t)^\gamma
            \left[w_+\,y \log p + (1-y) \log(1-p)\right]

    With ``pos_weight=None`` this is exactly ``torchvision.ops.sigmoid_focal_loss``,
    ``optax.losses.sigmoid_focal_loss`` (alpha given) and Paddle's
    ``sigmoid_focal_loss``; with ``gamma=0, alpha=None`` it is exactly
    ``binary_cross_entropy_with_logits`` (with its ``weight`` and ``pos_weight``).

    On torch.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array, any shape ``[...]``; probabilities if
        ``from_logits=False``.
      targets: broadcastable to ``logits`` (never enlarging it); hard {0, 1} or soft in
        [0, 1]; bool / integer targets are accepted.
      gamma: focusing parameter, a number >= 0 (0 = no focusing).
      alpha: None (no class balancing, alpha_t = 1), a number in [0, 1], or an array of
        values in [0, 1] broadcastable to ``logits`` (e.g. per class on the last axis):
        alpha for positives, 1 - alpha for negatives.
      pos_weight: None or an array >= 0 broadcastable to ``logits``: weight of the
        positive term of the cross-entropy, as in torch's ``BCEWithLogitsLoss``.
      weight: None or an elementwise weight >= 0 broadcastable to ``logits``. It does
        not enter the mean's denominator (as in ``BCEWithLogitsLoss``).
      ignore_index: None, or a target value (not 0 or 1) marking elements that add 0 and
        leave the mean's denominator.
      label_smoothing: e in [0, 1): targets become ``y * (1 - e) + e / 2``.
      reduction: ``"none"`` (shape of ``logits``), ``"sum"`` or ``"mean"`` (sum over the
        count of non-ignored elements; 0, not NaN, when there are none).
      normalizer: None, a number > 0, or a 0-d or shape-(1,) array (e.g. the number of
        positive anchors): divides the result of any reduction. RetinaNet's
        normalisation is ``reduction="sum", normalizer=num_pos``. No host sync.
      from_logits: if False, ``logits`` holds probabilities in [0, 1], used as given:
        ``log 0 = -inf``, so a certain wrong prediction costs ``+inf`` (gradient
        ``+-inf``) and a certain right one costs 0 (gradient: its one-sided limit, 0 for
        gamma > 0). Nothing is clipped.

    Returns:
      The loss: shape of ``logits`` for ``"none"``, else 0-d, in the logits' dtype
      (float16 / bfloat16 are computed in float32).

    Stability: log p and log(1-p) from softplus, 1-p_t without cancellation; the
    gradient is closed-form and finite for every finite logit and every gamma >= 0
    (no NaN at gamma < 1).

    References:
      Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.
    """
    # focalx:end
    _check_tensors(logits, targets)
    return _apply(logits, "run_sigmoid_focal_loss", targets, dict(
        gamma=gamma, alpha=alpha, pos_weight=pos_weight, weight=weight,
        ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
        normalizer=normalizer, from_logits=from_logits), None)


# focalx:signature sigmoid_focal_loss_star
def sigmoid_focal_loss_star(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 1.0,
                            beta: float = 0.0,
                            alpha: float | Sequence[float] | torch.Tensor | np.ndarray | None = None,
                            weight: float | Sequence[float] | torch.Tensor | np.ndarray | None = None,
                            ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    r"""FL*, the focal loss variant of Lin et al.'s appendix A, with a tunable ``beta``.

    .. math::

        x_t = x\,(2y - 1), \qquad
        \mathrm{FL}^*(x, y) = -\,w\,\alpha_t \log\sigma(\gamma x_t + \beta) / \gamma

    fvcore's ``sigmoid_focal_loss_star`` is the case ``beta=0``.

    On torch.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array, any shape.
      targets: broadcastable to ``logits``, in [0, 1].
      gamma: a number > 0.
      beta: the shift of the scaled logit, a real number.
      alpha: as in ``sigmoid_focal_loss`` (default None here).
      weight: as in ``sigmoid_focal_loss``.
      ignore_index: as in ``sigmoid_focal_loss``.
      label_smoothing: as in ``sigmoid_focal_loss``.
      reduction: as in ``sigmoid_focal_loss``.
      normalizer: as in ``sigmoid_focal_loss``.

    Returns:
      The loss: shape of ``logits`` for ``"none"``, else 0-d.

    Stability: log-sigmoid from softplus; closed-form gradient, finite everywhere.
    """
    # focalx:end
    _check_tensors(logits, targets)
    return _apply(logits, "run_sigmoid_focal_loss_star", targets, dict(
        gamma=gamma, beta=beta, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer), None)


# focalx:signature softmax_focal_loss
def softmax_focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 2.0,
                       alpha: float | Sequence[float] | torch.Tensor | np.ndarray | None = None,
                       weight: float | Sequence[float] | torch.Tensor | np.ndarray | None = None,
                       ignore_index: int | None = -100, label_smoothing: float = 0.0,
                       reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | torch.Tensor | np.ndarray | None = None, axis: int = 1,
                       from_logits: bool = True) -> torch.Tensor:
    r"""Softmax (multi-class) focal loss.

    .. math::

        p = \mathrm{softmax}(x), \qquad
        \mathrm{FL}(x, q) = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c

    per sample, with ``q`` the one-hot target (class indices) or the given class
    probabilities, smoothed as ``(1 - e) * q + e / C``. With ``gamma=0, alpha=None``
    it equals ``torch.nn.functional.cross_entropy`` for every combination of
    ``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``, probability
    targets and N-d inputs (except that an all-ignored "mean" is 0, not NaN).

    On torch.Tensor values (hyperparameter arrays may also be NumPy).

    Args:
      logits: floating array ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` (class axis
        ``axis``); probabilities on that axis if ``from_logits=False``.
      targets: class indices (integer dtype, the logits' shape without the class axis)
        or class probabilities in [0, 1] (floating, the logits' shape), told apart as
        ``F.cross_entropy`` does.
      gamma: focusing parameter, a number >= 0 (0 = no focusing).
      alpha: None (1), a number in [0, 1] multiplying every class (as Keras does), or a
        per-class vector of length C with values in [0, 1].
      weight: None or a per-class vector >= 0 of length C, exactly as cross-entropy's:
        "mean" with class indices divides by the sum of ``weight[target]`` over the
        non-ignored samples.
      ignore_index: class-index targets equal to it add 0 and leave the mean's
        denominator (not used with probability targets); None disables it.
      label_smoothing: e in [0, 1).
      reduction: ``"none"`` (per sample: the logits' shape without the class axis),
        ``"sum"`` or ``"mean"``.
      normalizer: None, a number > 0, or a 0-d or shape-(1,) array (e.g. the number of
        positive anchors): divides the result of any reduction. RetinaNet's
        normalisation is ``reduction="sum", normalizer=num_pos``. No host sync.
      axis: the class axis: 1 by default, as ``F.cross_entropy`` (1-D logits ``(C,)``
        take a 0-d target).
      from_logits: if False, ``logits`` holds probabilities used as given (not
        renormalised); ``p_c = 0`` for a target class costs ``+inf``.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
    finite for every finite logit and gamma >= 0.
    """
    # focalx:end
    _check_tensors(logits, targets)
    ndim = logits.dim()
    if ndim == 1 and axis == 1:  # F.cross_entropy's unbatched (C,) input
        axis = 0
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    return _apply(logits, "run_softmax_focal_loss", targets, dict(
        gamma=gamma, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer,
        axis=axis, from_logits=from_logits), class_axis)


# ---------------------------------------------------------------------------
# nn.Module drop-ins
# ---------------------------------------------------------------------------

def _legacy_reduction(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        return torch.nn._reduction.legacy_get_string(size_average, reduce)
    return reduction


def _param_buffer(name, value, *, class_vector=False, allow_scalar=True):
    """A hyperparameter array for a module, checked now as a call would check it (torch's
    own losses check what they can at construction), as a tensor (a buffer follows .to())."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        _spec.check_param(name, value, class_vector=class_vector, allow_scalar=allow_scalar)
        return torch.as_tensor(value)
    if value.device.type != "meta":  # (a meta tensor has no values to check)
        host = value.detach().cpu()
        _spec.check_param(name, (host.double() if host.is_floating_point() else host).numpy(),
                          class_vector=class_vector, allow_scalar=allow_scalar)
    return value


def _set_alpha(module: nn.Module, alpha, *, class_vector=False) -> None:
    """A number (or None) is an attribute; a per-class vector is a buffer that follows .to()."""
    if alpha is None or isinstance(alpha, numbers.Real):  # (a bool: check_alpha_number refuses it)
        module.alpha = _spec.check_alpha_number(alpha)
    else:
        module.register_buffer("alpha", _param_buffer("alpha", alpha,
                                                      class_vector=class_vector))


class FocalLoss(nn.Module):
    r"""Softmax focal loss with :class:`torch.nn.CrossEntropyLoss`'s signature plus ``gamma``, ``alpha``.

    ``nn.CrossEntropyLoss(...)`` -> ``focalx.torch.FocalLoss(...)`` is the whole change;
    with ``gamma=0`` (and ``alpha=None``, the default) the two give the same numbers.
    Input ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``; target class indices or probabilities.
    See :func:`focalx.softmax_focal_loss` for the formula.
    """

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0, *,
                 gamma: float = 2.0, alpha=None):
        super().__init__()
        self.reduction = _spec.check_reduction(
            _legacy_reduction(size_average, reduce, reduction))
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True, binary=False)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.gamma = _spec.check_gamma(gamma)
        self.register_buffer("weight", _param_buffer("weight", weight, class_vector=True,
                                                     allow_scalar=False))
        _set_alpha(self, alpha, class_vector=True)

    def forward(self, input, target):
        return softmax_focal_loss(
            input, target, gamma=self.gamma, alpha=self.alpha, weight=self.weight,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
            reduction=self.reduction)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, alpha=self.alpha, weight=self.weight,
                              ignore_index=self.ignore_index,
                              label_smoothing=self.label_smoothing, reduction=self.reduction)


class SigmoidFocalLoss(nn.Module):
    r"""Sigmoid focal loss with :class:`torch.nn.BCEWithLogitsLoss`'s signature plus ``gamma``, ``alpha``.

    ``SigmoidFocalLoss(gamma=0, alpha=None)`` equals ``nn.BCEWithLogitsLoss()`` (with its
    ``weight`` and ``pos_weight``). ``forward(input, target, normalizer=None)``: RetinaNet's
    normalisation is ``reduction="sum"`` and ``normalizer=num_pos`` (a number or a 0-d
    tensor; under DDP, :func:`global_normalizer`). See :func:`focalx.sigmoid_focal_loss`.
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean",
                 pos_weight=None, *, gamma: float = 2.0, alpha=0.25):
        super().__init__()
        self.reduction = _spec.check_reduction(
            _legacy_reduction(size_average, reduce, reduction))
        self.gamma = _spec.check_gamma(gamma)
        self.register_buffer("weight", _param_buffer("weight", weight))
        self.register_buffer("pos_weight", _param_buffer("pos_weight", pos_weight))
        _set_alpha(self, alpha)

    def forward(self, input, target, normalizer=None):
        return sigmoid_focal_loss(
            input, target, gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
            weight=self.weight, reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
                              weight=self.weight, reduction=self.reduction)


class SigmoidFocalLossStar(nn.Module):
    """FL* as a module. See :func:`focalx.sigmoid_focal_loss_star`."""

    def __init__(self, *, gamma: float = 1.0, beta: float = 0.0, alpha=None,
                 reduction: str = "mean"):
        super().__init__()
        self.gamma = _spec.check_gamma(gamma, strictly_positive=True)
        self.beta = _spec.check_beta(beta)
        self.alpha = _spec.check_alpha_number(alpha)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, input, target, normalizer=None):
        return sigmoid_focal_loss_star(input, target, gamma=self.gamma, beta=self.beta,
                                       alpha=self.alpha, reduction=self.reduction,
                                       normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, beta=self.beta, alpha=self.alpha,
                              reduction=self.reduction)


def global_normalizer(num_pos, *, group=None):
    """RetinaNet's normalizer under data parallelism (DDP): the number of positives over
    every rank, clamped to at least 1, divided by the number of ranks.

    DDP averages the ranks' gradients, so a loss normalised by this on every rank,
    ``sigmoid_focal_loss(x, t, reduction="sum", normalizer=global_normalizer(num_pos))``,
    has the gradient of the whole batch's loss normalised by all its positives (as one
    process would compute it). ``num_pos``: this rank's count, a number or a tensor (of
    the logits' device); the all-reduce runs on the device (no host sync). Without an
    initialised process group it is ``max(num_pos, 1)``. Returns a 0-d float32 tensor.
    """
    if isinstance(num_pos, torch.Tensor):
        total = num_pos.detach().to(torch.float32).reshape(())
    elif isinstance(num_pos, numbers.Real) and not isinstance(num_pos, bool):
        total = torch.tensor(float(num_pos))
    else:
        raise TypeError(f"num_pos must be a number or a tensor, got {type(num_pos).__name__}")
    world = 1
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        if total.device.type == "cpu" and dist.get_backend(group) == "nccl":
            total = total.to(torch.device("cuda", torch.cuda.current_device()))
        total = total.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        world = dist.get_world_size(group)
    return torch.clamp_min(total, 1.0) / world
