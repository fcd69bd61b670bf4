"""Speed path for large dygraph calls on the CPU: the spec on row blocks, on threads."""

from __future__ import annotations

import math
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import paddle

from ... import _spec
from .. import _blocks
from . import ops as _ops
from .ops import PaddleOps, _kind


# ---------------------------------------------------------------------------
# Row blocks. Paddle's CPU kernels are single-threaded and every fresh tensor of
# more than a few MiB is new memory from the system (page faults, about as costly as
# the kernel itself), while freed small tensors are reused. So a large loss in
# dygraph mode runs the spec on row blocks (slices of the leading axis) of about
# _BLOCK_ELEMS elements (an elementwise loss: sigmoid, FL*) or _SOFTMAX_BLOCK_ELEMS
# (the softmax loss, whose samples are independent when the class axis is not the
# leading one), and only the reduction runs on the whole, by the spec's own `reduce`
# with the whole array's denominator and normalizer. For "none" it gets the blocks'
# losses concatenated: the same numbers bit for bit. For a sum or mean it gets each
# block's sum (a concatenation would be a fresh full-size array): the same number up
# to the order of the summation, a float rounding. The gradient is the whole's, bit
# for bit, in every reduction. Blocks start at multiples of _BLOCK_ALIGN elements,
# so every element takes the same (vector or scalar) path through a kernel as in the
# whole array. Paddle releases the
# GIL inside its kernels, so the blocks run on THREADS threads at once: the CPU's
# other cores, which Paddle's own kernels leave idle.
# ---------------------------------------------------------------------------

_BLOCK_ELEMS = 1 << 18      # 1 MiB of float32 per block
#: Blocks of the softmax loss (4 MiB of float32): the fastest block size for its loss
#: and gradient, and far faster than the whole array at once, whose fresh memory
#: page-faults.
_SOFTMAX_BLOCK_ELEMS = 1 << 20
#: Run whole below this many elements: the sigmoid loss gains from blocks only above it,
#: and the softmax loss's blocks are slower than the whole up to _SOFTMAX_BLOCK_MIN.
_BLOCK_MIN = 1 << 17
_SOFTMAX_BLOCK_MIN = 1 << 20
_BLOCK_ALIGN = 64
_BLOCKWISE = (_spec.run_sigmoid_focal_loss, _spec.run_sigmoid_focal_loss_star,
              _spec.run_asymmetric_loss)
_SOFTMAX = _spec.run_softmax_focal_loss
#: Threads that run row blocks (1: one after another, in the calling thread).
THREADS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else (os.cpu_count() or 1))
_pool = None                # (pid, threads, executor): a fork gets a new one
_pool_lock = threading.Lock()


def _executor():
    """The block threads' executor, or None for THREADS <= 1."""
    global _pool
    if THREADS <= 1:
        return None
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != THREADS:
            # (after a fork the parent's threads do not exist in the child)
            _pool = (os.getpid(), THREADS,
                     ThreadPoolExecutor(THREADS, thread_name_prefix="focalx-paddle"))
        return _pool[2]


def _map(f, items):
    """[f(item) ...], on the block threads where there are several."""
    pool = _executor()
    return list(pool.map(f, items)) if pool is not None else [f(a) for a in items]


def _row_blocks(fn, x, arrays, static):
    """[(start, stop), ...] rows of x to run fn on block by block, or None to run whole.

    Blocks are used only on the CPU and where they give the whole's numbers and
    errors: an elementwise loss without ignore_index (the mean's denominator is then the
    element count), or the softmax loss with its class axis not the leading one (its
    targets are sliced with the logits, its class vectors and the mean's denominator are
    the whole's); hyperparameters that are numbers or paddle tensors (for an elementwise
    loss, a tensor with x's leading size is sliced with it, one without that axis or of
    size 1 there is broadcast whole); and a valid reduction. Anything a block's run
    raises makes :func:`_run` run the whole instead, which raises the spec's error.
    """
    softmax = fn is _SOFTMAX
    if not softmax and (fn not in _BLOCKWISE or static.get("ignore_index") is not None):
        return None
    if math.prod(x.shape) < (_SOFTMAX_BLOCK_MIN if softmax else _BLOCK_MIN):
        return None  # (first: the common small call pays for nothing else)
    # (x.place inline: read through a helper, it broke to_static's SOT translation)
    if not x.place.is_cpu_place():
        return None  # a GPU kernel is not slowed by fresh memory, and blocks add launches
    if static.get("reduction") not in _spec.REDUCTIONS:
        return None
    for v in static.values():
        if not (v is None or isinstance(v, (bool, numbers.Real, str))):
            return None  # NumPy arrays, sequences: shaped like x, or the spec's error
    shape = tuple(x.shape)
    n = math.prod(shape) if shape else 0
    if n < (_SOFTMAX_BLOCK_MIN if softmax else _BLOCK_MIN) or shape[0] < 2:
        return None
    if softmax:
        try:
            if _spec.check_axis(static.get("axis"), len(shape)) == 0:
                return None  # the leading axis holds the classes
        except (TypeError, ValueError):
            return None
        if tuple(arrays["targets"].shape)[:1] != shape[:1]:
            return None
    else:
        for a in arrays.values():
            ash = tuple(a.shape)
            if len(ash) == len(shape) and ash[0] not in (1, shape[0]):
                return None
            if len(ash) > len(shape):
                return None
    return _blocks.row_blocks(shape, softmax=softmax, align=_BLOCK_ALIGN,
                              elems=_SOFTMAX_BLOCK_ELEMS if softmax else _BLOCK_ELEMS,
                              threads=THREADS)


class _Blocks(list):
    """Per-block gradients (the row blocks of the whole gradient, in order, each with the
    whole's reduction scale): :class:`_FocalLayer` keeps the blocks for
    backward, where they meet the incoming gradient and are written into their rows of
    the result."""

    def __init__(self, grads, bounds):
        super().__init__(grads)
        self.bounds = bounds  # [(start, stop), ...] rows of each block


def _run_blocks(fn, x, arrays, static, need_grad, blocks):
    """fn on row blocks of x, then the spec's reduction on the whole (see above)."""
    ops = PaddleOps()
    lead = x.shape[0]
    softmax = fn is _SOFTMAX
    reduction = static["reduction"]
    # The whole's denominator and scale come first: each block's elements take them, as
    # the whole's do (see _spec.reduction_scale). They are computed from arguments
    # that the blocks validate: whatever is wrong raises there, or here (then _run runs
    # the whole, which raises the spec's error).
    normalizer = _spec._normalizer(ops, arrays.get("normalizer", static.get("normalizer")), x)
    # the fused kernel for every block or none, as for the whole (see PaddleOps.fuse)
    fuse = softmax and _kind(arrays["targets"]) == "integer" and \
        not static.get("label_smoothing") and static.get("from_logits") is True and \
        _ops._fusable(x)
    denom = None  # (a sum or "none" has none)
    if reduction == "mean":
        if softmax:
            denom = _spec.softmax_mean_denominator(
                ops, x, arrays["targets"], weight=arrays.get("weight", static.get("weight")),
                ignore_index=static.get("ignore_index"), axis=static.get("axis"))
        else:
            denom = _spec._count(ops, x)
    scale = _spec.reduction_scale(ops, reduction=reduction, denom=denom,
                                  normalizer=normalizer, divide=softmax)

    def part(name, a, i, j):
        if softmax:  # the targets are per sample, the rest class vectors
            return a[i:j] if name == "targets" else a
        if len(a.shape) == len(x.shape) and a.shape[0] == lead:
            return a[i:j]
        return a

    # each block's elements take the whole's scale, as in the whole's run
    per_block = dict(static, reduction="none", normalizer=None, scale=scale)

    def run(bounds):
        i, j = bounds
        with paddle.no_grad():  # (the grad mode of a worker thread is its own)
            sub = {k: part(k, v, i, j) for k, v in arrays.items() if k != "normalizer"}
            # (an Ops of its own: it keeps the block's softmax parts while it runs)
            out, grad = fn(PaddleOps(need_grad, fuse), x[i:j], sub.pop("targets"),
                           need_grad=need_grad, **per_block, **sub)
            # a sum or mean needs only the block's sum: no full-size concatenation
            return (out if reduction == "none" else paddle.sum(out).reshape([1])), grad

    results = _map(run, blocks)
    loss = paddle.concat([out for out, _ in results], axis=0)
    out = _spec.reduce(ops, loss, reduction=reduction)
    return out, (_Blocks((g for _, g in results), blocks) if need_grad else None)
