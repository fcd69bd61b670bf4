"""Speed path for eager CPU calls run op by op: the spec on row blocks, with in-place
work on buffers the path owns. It runs whenever the fused kernel does not (below its
size, before it is compiled, with FOCALX_TORCH_COMPILE=0); its rules are written below."""

from __future__ import annotations

import numbers
import sys
import threading

import torch

from ... import _spec
from .. import _blocks
from . import fused as _fused
from .ops import OPS, TorchOps, _symbolic


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
# in the whole array. The same rules as the Paddle backend's blocks
# (backends/paddle/blocks.py).
#: An elementwise loss's block: _BLOCK_ELEMS elements if set, else _BLOCK_ELEMS_PER_THREAD
#: for each of torch's intra-op threads (up to _BLOCK_ELEMS_MAX): every op of a block is a
#: parallel region, whose fork and join cost the same whatever the block's size, so a
#: block grows with the threads that share it (docs/design-measurements.md). With one
#: thread nothing forks: the block is _BLOCK_ELEMS_ONE_THREAD, sized so that an op's
#: inputs and output stay in the core's own L2 cache (what other processes do to the
#: shared L3 then slows the call less).
_BLOCK_ELEMS = None
_BLOCK_ELEMS_PER_THREAD = 1 << 17
_BLOCK_ELEMS_ONE_THREAD = 1 << 16
_BLOCK_ELEMS_MAX = 1 << 20
#: (a softmax block outgrows L2 either way; larger ones halve the per-block Python and
#: dispatch, which a block of small per-sample ops is made of)
_SOFTMAX_BLOCK_ELEMS = 1 << 20
#: run whole below this many elements
_BLOCK_MIN = 1 << 18
_SOFTMAX_BLOCK_MIN = 1 << 20
_BLOCK_ALIGN = 64
_ELEMENTWISE = ("run_sigmoid_focal_loss", "run_sigmoid_focal_loss_star", "run_asymmetric_loss")
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
    if softmax:
        elems = _SOFTMAX_BLOCK_ELEMS
    else:
        threads = torch.get_num_threads()
        elems = _BLOCK_ELEMS or (_BLOCK_ELEMS_ONE_THREAD if threads == 1 else
                                 min(_BLOCK_ELEMS_PER_THREAD * threads, _BLOCK_ELEMS_MAX))
    return _blocks.row_blocks(shape, softmax=softmax, align=_BLOCK_ALIGN, elems=elems)


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
    blocks = None if _fused._WORKER["running"] else _row_blocks(spec_name, x, targets, params)
    if blocks is not None:
        try:
            return _run_blocks(spec_name, x, targets, need_grad, params, blocks)
        except Exception:  # noqa: BLE001 - the whole run raises the spec's own error
            pass
    return getattr(_spec, spec_name)(_EAGER_OPS, x, targets, need_grad=need_grad, **params)
