"""Paddle backend: the spec on paddle tensors (public name: ``focalx.paddle``).

Works in dygraph (eager) mode and under ``paddle.jit.to_static`` (both the
default SOT translator and ``full_graph=True``). Under SOT a call is one graph break:
the loss runs in dygraph mode, with dygraph's numbers and value checks. The gradient w.r.t. the logits
is the spec's closed form, through ``paddle.autograd.PyLayer``: computed in the
forward pass when the logits need a gradient and saved as the only full-size
tensor; backward is one multiplication. A second derivative through it
(``paddle.grad(..., create_graph=True)`` then differentiating again) is not
supported (and, unlike the torch backend, not detected). Small calls (up to
``_HOST_MAX`` float32 / float64 logits) in dygraph mode on the CPU run the same spec
on NumPy copies instead of Paddle's operations, whose per-operation dispatch dominates
them, and return the loss and gradient through the same kind of PyLayer.

Value checks (targets in [0, 1], class indices in range, alpha in [0, 1], ...)
raise ``ValueError`` in dygraph mode on the CPU, where tensor values are read
directly. On a GPU, where that read would be a host synchronisation (Paddle's
own ``cross_entropy`` makes one for its label check), and in a static graph
(``to_static(full_graph=True)``), where values are symbolic, a failed check
makes the loss and its gradient NaN instead of a plausible wrong number, as
:mod:`focalx.backends.jax` does under ``jit``.

float16 / bfloat16 logits are computed in float32 (Paddle 3.3 has no CPU
float16 kernels for ``abs``, ``log_softmax``, ``maximum``, nor bfloat16 ones
for ``exp``) and the loss and gradient are returned in the input dtype;
float32 and float64 are computed as they are.

The class axis of the softmax loss defaults to -1, as in
``paddle.nn.functional.cross_entropy``. :class:`FocalLoss` and
:class:`SigmoidFocalLoss` take the exact signatures of
``paddle.nn.CrossEntropyLoss`` and ``paddle.nn.BCEWithLogitsLoss`` plus
``gamma`` and ``alpha``.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import sys
import threading
from collections.abc import Sequence  # (the generated signatures' annotations, which a
from concurrent.futures import ThreadPoolExecutor
from typing import Literal  # compiler may evaluate: Paddle's to_static)

import numpy as np
import paddle
from paddle.autograd import PyLayer

from .. import _spec
from .._numpy import ArrayModuleOps
from . import _blocks, _kept as kept
from ._kept import KeptCopies

# focalx's dispatch (focalx._dispatch) is plain Python that behaves the same in
# dygraph and static mode; to_static(full_graph=True)'s AST translator would rewrite
# it (and break it), so the translator is told to leave that module alone. focalx
# loads this adapter at `import focalx` when paddle is already imported (__init__).
paddle.jit.ignore_module([sys.modules["focalx._dispatch"]])

__all__ = [
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "sigmoid_focal_loss_star",
    "FocalLoss",
    "SigmoidFocalLoss",
    "SigmoidFocalLossStar",
    "global_normalizer",
]

_FLOATS = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)
_INTS = (paddle.int8, paddle.uint8, paddle.int16, paddle.int32, paddle.int64)
_LOW = (paddle.float16, paddle.bfloat16)

try:  # whether to_static's SOT translator is simulating this code (its ops are symbolic)
    from paddle.base.dygraph.base import in_sot_simulation_mode as _in_sot
except ImportError:  # pragma: no cover - paddle without it: never in place
    def _in_sot():
        return True

try:
    # Called first in each public function and layer: to_static's SOT translator then
    # runs that frame, and all it calls, as plain dygraph Python (one graph break, the
    # loss eager, its numbers dygraph's bit for bit). Simulated, the spec would be
    # translated op by op and translated again at every call (its guards test the
    # identity of the fresh PaddleOps and scale objects) until SOT's cache limit per
    # function. Outside SOT, and in the AST translator (full_graph), it does nothing.
    from paddle.jit.sot.psdb import fallback as _sot_fallback
except ImportError:  # pragma: no cover - a paddle without SOT
    def _sot_fallback(recursive=False):
        pass

try:  # the symbolic value of a static (PIR) program
    _Value = paddle.pir.Value
except AttributeError:  # pragma: no cover - paddle without PIR
    _Value = ()


def _not_translated(fn):
    """Keep paddle.jit.to_static's AST translator out of the spec: it is plain Python on
    tensors with no control flow on tensor values and runs as is on a static program's
    values (the translator's rewrite of its Python-value checks breaks). The rest of
    this module is translated, so that PyLayer.apply becomes the static PyLayer."""
    return paddle.jit.not_to_static(fn)


def _on_host(a) -> bool:
    """Whether a's values can be read without a device synchronisation."""
    return a.place.is_cpu_place()


def _in_range(index, size):
    """Class indices as they index: clamped to [0, size) where their values were not read
    (a static program, a GPU tensor), so that an index out of range never reaches a
    gather (Paddle's CPU gather raises IndexError, a GPU one may read out of bounds);
    its failed value check makes the result NaN anyway (see _run)."""
    n = -1 if size is None else int(size)  # (-1: unknown in a static program)
    if n > 0 and (_static() or not _on_host(index)):
        return paddle.clip(index, 0, n - 1)
    return index


def _is_tensor(v) -> bool:
    return isinstance(v, paddle.Tensor) or (bool(_Value) and isinstance(v, _Value))


def _kind(a) -> str:
    # (a dict first: a paddle dtype's == costs a microsecond, and this runs several
    # times a call)
    kind = _KINDS.get(a.dtype)
    return kind if kind is not None else _dtype_kind(a.dtype)


def _dtype_kind(dt) -> str:
    if dt == paddle.bool:
        return "bool"
    if dt in _FLOATS:
        return "floating"
    if dt in _INTS:
        return "integer"
    if dt in (paddle.complex64, paddle.complex128):
        return "complex"
    return str(dt).replace("paddle.", "")


_KINDS = {**{d: "floating" for d in _FLOATS}, **{d: "integer" for d in _INTS},
          paddle.bool: "bool"}


#: Small host values copied to a GPU (see _device_copy).
_KEPT = KeptCopies()


def _device_copy(arr, like):
    """Host data as a tensor on like's device in like's dtype, copied once and reused
    (see focalx.backends._kept): a pos_weight number or a class vector given as a list
    would otherwise wait for the device at every call."""
    key = (arr.dtype.str, arr.shape, arr.tobytes(), str(like.place), str(like.dtype))
    return _KEPT.get(key, lambda: paddle.to_tensor(arr.astype(np.float64),
                                                   place=like.place).astype(like.dtype))


def _static() -> bool:
    """True while a static program is being built (to_static full graph): values are symbolic."""
    return not paddle.in_dynamic_mode()


def _numel(a) -> int:
    return math.prod(a.shape)


#: Read through NumPy up to this many elements (one copy, no kernel launch and no 0-d
#: tensors per read); larger tensors through Paddle's reductions, which NumPy would copy.
_HOST_READ_MAX = 1 << 18
_NUMPY_READ = frozenset((paddle.float32, paddle.float64, paddle.int64, paddle.int32,
                         paddle.bool, paddle.int16, paddle.int8, paddle.uint8))
#: (sets: a paddle dtype's == is slow, its hash is not)
_FUSED_DTYPES = frozenset((paddle.float32, paddle.float64))


def _host_min(a) -> float:
    """min(a) of a non-empty tensor on the CPU, as a Python float (NaN if a value is)."""
    if _numel(a) <= _HOST_READ_MAX and a.dtype in _NUMPY_READ:
        return float(a.numpy().min())
    return float(paddle.min(a))


def _host_range(a):
    """(min, max) of a non-empty tensor on the CPU, as Python floats (NaN if a value is)."""
    if _numel(a) <= _HOST_READ_MAX and a.dtype in _NUMPY_READ:
        v = a.numpy()
        return float(v.min()), float(v.max())
    if a.dtype == paddle.bool:
        a = a.astype(paddle.int32)
    return float(paddle.min(a).item()), float(paddle.max(a).item())


def _kernels():
    """Paddle's kernels behind take_along_axis, put_along_axis_, where and
    softmax_with_cross_entropy, to call without their Python wrappers (see their uses):
    {name: kernel} for those that give the public API's results here, checked once on a
    small input (a Paddle whose kernels have other signatures gets the public API)."""
    found = {}
    try:
        from paddle import _C_ops as ops
        if not paddle.in_dynamic_mode():
            return found
        x = paddle.to_tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -3.0]], dtype="float64")
        i = paddle.to_tensor([[2], [0]], dtype="int64")
        v = paddle.to_tensor([[7.0], [8.0]], dtype="float64")
        same = lambda a, b: np.array_equal(a.numpy(), b.numpy())  # noqa: E731
        with paddle.no_grad():
            if same(ops.take_along_axis(x, i, 1), paddle.take_along_axis(x, i, axis=1)):
                found["take_along_axis"] = ops.take_along_axis
            if same(ops.put_along_axis_(x.clone(), i, v, 1, "assign", True),
                    paddle.put_along_axis(x, i, v, 1)):
                found["put_along_axis_"] = ops.put_along_axis_
            if same(ops.where(x > 0, x, -x), paddle.where(x > 0, x, -x)):
                found["where"] = ops.where
            p, loss = ops.cross_entropy_with_softmax(x, i, False, True, True, -1, 1)
            want = paddle.nn.functional.cross_entropy(x, i, reduction="none")
            if np.allclose(loss.numpy(), want.numpy(), rtol=1e-12, atol=0) and \
                    np.allclose(p.numpy(), paddle.nn.functional.softmax(x).numpy(),
                                rtol=1e-12, atol=0):
                found["cross_entropy_with_softmax"] = ops.cross_entropy_with_softmax
    except Exception:  # noqa: BLE001 - (pragma: no cover) another Paddle: the public API
        pass
    return found


_KERNELS = _kernels()
_take_kernel = _KERNELS.get("take_along_axis")
_put_kernel = _KERNELS.get("put_along_axis_")
_softmax_ce_kernel = _KERNELS.get("cross_entropy_with_softmax")
_where_kernel = _KERNELS.get("where")


#: Logits whose largest and smallest values are at most this far apart go through
#: Paddle's softmax cross-entropy kernel (see _fusable).
_FUSED_RANGE = 60.0


def _fusable(x) -> bool:
    """Whether Paddle's fused softmax cross-entropy kernel (cross_entropy_with_softmax)
    gives the spec's log-softmax at the target and softmax for the logits x.

    Its CPU kernel computes the softmax p = exp(s) / sum(exp(s)) of s = x - max(x),
    with s clipped at -64 (as log_softmax: a logit 20000 below the largest would get
    p = exp(-64) / sum), and -log p at the target from that p. Where max(x) - min(x)
    is at most _FUSED_RANGE (a margin below 64) nothing is clipped (s >= min - max, and
    rounding keeps the order), no exp underflows (see PaddleOps.exp), and -log p carries
    about one epsilon of absolute error, as s - log(sum) does. Read on the CPU in dygraph mode only (a
    host read of the range; NaN or infinite logits fail it), for float32 and float64.
    """
    if _softmax_ce_kernel is None or _static() or _in_sot() or not _on_host(x) or \
            x.dtype not in _FUSED_DTYPES or _numel(x) == 0:
        return False
    lo, hi = _host_range(x)
    return hi - lo <= _FUSED_RANGE  # (False for NaN)


#: The smallest float32 / float64 x whose exp is not 0: below it the exact exp rounds to 0
#: (log of half the smallest subnormal; NumPy's exp turns 0 there too). See PaddleOps.exp.
_EXP_ZERO_BELOW_F32 = -103.97207641601562
_EXP_ZERO_BELOW_F64 = -745.1332191019411
_EXP_ZERO_BELOW = {paddle.float32: _EXP_ZERO_BELOW_F32, paddle.float64: _EXP_ZERO_BELOW_F64}


class PaddleOps:
    """:class:`focalx._spec.Ops` for paddle.

    In dygraph mode on the CPU value checks read the tensor (``concrete_range``); in a
    static program, and for tensors off the CPU, ``assert_values`` records the condition
    and :func:`_run` makes the result NaN where one fails.
    """

    expm1 = staticmethod(paddle.expm1)
    log = staticmethod(paddle.log)
    log1p = staticmethod(paddle.log1p)
    abs = staticmethod(paddle.abs)

    @staticmethod
    def where(cond, a, b):
        # the kernel itself for operands of one shape (the spec's, but for a 0-d one):
        # the Python API compares and broadcasts shapes first, several times the kernel
        if _where_kernel is not None and paddle.in_dynamic_mode() and not _in_sot():
            shape = a.shape
            if b.shape == shape and cond.shape == shape:
                return _where_kernel(cond, a, b)
        return paddle.where(cond, a, b)
    full_like = staticmethod(paddle.full_like)
    kind = staticmethod(_kind)

    def __init__(self, need_grad=True, fuse=None):
        self.unchecked = []
        # (log_softmax's output, exp(a - max), the sum of that), kept for the softmax
        # of a gradient only: a loss alone would keep one more full-size array alive
        self.softmaxes = [] if need_grad else None
        # whether log_softmax_at uses Paddle's fused kernel: decided once for the whole
        # logits (_fusable), so that row blocks take the path the whole would; None:
        # decided at the first call, from the logits it gets
        self.fuse = fuse

    def log_softmax_at(self, x, index, axis):
        """Paddle's softmax cross-entropy kernel: -log p at the index and p in one pass
        over the logits, where it is exact (see _fusable); else None (the spec's
        log_softmax)."""
        if self.fuse is None:
            self.fuse = _fusable(x)
        if not self.fuse:
            return None
        # (soft_label False, use_softmax and numeric_stable_mode True; no index is
        # ignored: the spec has replaced and masked those)
        softmax, loss = _softmax_ce_kernel(x, index, False, True, True, -1, axis % len(x.shape))
        return -loss, softmax

    @staticmethod
    def exp(a):
        """paddle.exp, with 0 where the exact result rounds to 0 (x < _EXP_ZERO_BELOW).

        Paddle 3.3.1's CPU exp, in whole SIMD vectors (8 float32 / 4 float64 elements),
        gives 2**-128 / 2**-1024 instead of 0 for every x below -88.72 / -709.78 (-inf
        included); multiplied by a huge logit that is a wrong gradient. (Results between
        that bound and the zero threshold, subnormal, keep an error of at most that.)
        On the CPU in dygraph mode the where runs only if an input is below the bound:
        a min() is cheaper than the where.
        """
        e = paddle.exp(a)
        low = _EXP_ZERO_BELOW.get(a.dtype)
        if low is None:
            return e
        if not _static() and not _in_sot() and _on_host(a):
            # (a NaN minimum is not >= low: then the where below runs)
            if _numel(a) == 0 or _host_min(a) >= low:
                return e
        # (full: a Python float in a static program is a float32 constant)
        return paddle.where(a < paddle.full([], low, dtype=a.dtype),
                            paddle.zeros([], dtype=a.dtype), e)

    @staticmethod
    def pow(a, exponent):
        """a ** exponent for a Python float exponent (the spec's focal factor).

        Not ``a ** exponent`` (nor paddle.pow with a number): Paddle rounds a number
        exponent to float32, also for float64 tensors. A 0-d tensor exponent of a's
        dtype is exact, under to_static too (and its kernel is the faster one).
        """
        return paddle.pow(a, paddle.full([], exponent, dtype=a.dtype))

    @staticmethod
    def maximum0(a):
        # (an explicit max: paddle.clip's default upper bound is the dtype's largest
        # finite value, which would turn +inf into 3.4e38)
        return paddle.clip(a, min=0.0, max=math.inf)

    @staticmethod
    def minimum0(a):
        return paddle.clip(a, min=-math.inf, max=0.0)

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        nd = len(a.shape)
        if axis is not None and nd >= 2 and axis in (-1, nd - 1) and \
                a.dtype in (paddle.float32, paddle.float64) and not _static() and \
                not _in_sot() and _on_host(a) and int(a.shape[-1]) > 0:
            # Along the last axis on the CPU, as a product with a vector of ones: one
            # pass of the BLAS, where paddle.sum's CPU kernel took 0.81 ms for 1024 x 1000
            # float32 (0.08 ms this way), and more accurately (largest relative error over
            # 4194 rows of 1000 positive numbers: 4e-7 against paddle.sum's 1.1e-6;
            # measured). Not on a GPU, whose float32 products may round inputs to TF32,
            # nor in a program, which may run on one.
            ones = paddle.ones([int(a.shape[-1])] + ([1] if keepdims else []), dtype=a.dtype)
            return paddle.matmul(a, ones)
        return paddle.sum(a, axis=axis, keepdim=keepdims)

    def log_softmax(self, a, axis):
        # Not paddle.nn.functional.log_softmax: its CPU kernel clips x - max(x) at -64,
        # so a logit 20000 below the largest gets a log-probability of -64.
        s = a - paddle.max(a, axis=axis, keepdim=True)
        e = self.exp(s)
        total = self.sum(e, axis=axis, keepdims=True)
        out = s - paddle.log(total)
        if self.softmaxes is not None:
            self.softmaxes.append((out, e, total))
        return out

    def softmax_parts(self, lp):
        # The spec's softmax from the log-softmax's own exp and sum (_spec._softmax): a
        # product instead of a second exp (0.35 against 0.86 ms for 1024 x 1000 float32,
        # measured).
        for out, e, total in self.softmaxes or ():
            if out is lp:
                return e, total
        return None

    @staticmethod
    def take(a, index, axis):
        if not _in_sot():
            index = _in_range(index, a.shape[axis])
            if _take_kernel is not None and not _static():
                # (the Python API broadcasts `a` to its own shape first: a copy of it)
                return _take_kernel(a, index, axis % len(a.shape))
        return paddle.take_along_axis(a, index, axis=axis)

    @staticmethod
    def scatter(a, index, values, axis):
        if _in_sot():
            return paddle.put_along_axis(a, index, values, axis)
        index = _in_range(index, a.shape[axis])
        if _static():
            return paddle.put_along_axis(a, index, values, axis)
        # in place: `a` is a fresh temporary of the spec's (a copy of 1024 x 1000
        # float32 took 0.12 ms, the in-place write 0.016 ms; measured); the kernel
        # itself where there is one: the Python API broadcasts and range-checks the
        # indices again (more kernels and a host read), which the spec has done
        if _put_kernel is not None:
            return _put_kernel(a, index, values, axis % len(a.shape), "assign", True)
        return a.put_along_axis_(index, values, axis)

    @staticmethod
    def one_hot(index, num_classes, axis, like):
        shape = [1] * len(index.shape)
        shape[axis] = num_classes
        classes = paddle.arange(num_classes, dtype=index.dtype).reshape(shape)
        return (classes == index).astype(like.dtype)

    @staticmethod
    def shape(a):
        if paddle.in_dynamic_mode():
            return tuple(a.shape)
        # a static program built from an InputSpec with a None size has -1 there
        return tuple(None if s is None or int(s) < 0 else int(s) for s in a.shape)

    @staticmethod
    def count(a):
        return paddle.numel(a).astype(a.dtype)

    @staticmethod
    def broadcast_like(a, like):
        return paddle.expand_as(a, like)

    @staticmethod
    def asarray(v, name, like):
        if _is_tensor(v):
            t = v
        elif isinstance(v, (np.ndarray, np.generic, numbers.Number, list, tuple)):
            arr = _spec.host_array(v, name)
            if _static():
                t = paddle.to_tensor(arr.astype(np.float64))
            elif not _in_sot() and not _on_host(like) and arr.size <= kept.MAX_NUMEL:
                return _device_copy(arr, like)
            else:
                t = paddle.to_tensor(arr.astype(np.float64), place=like.place)
        else:
            raise TypeError(f"{name} must be a number, a sequence or a paddle tensor, got "
                            f"{type(v).__module__}.{type(v).__name__}")
        if _kind(t) not in ("floating", "integer", "bool"):
            raise TypeError(f"{name} must be real, got {_kind(t)} dtype")
        return t.astype(like.dtype)

    @staticmethod
    def as_float(a, like):
        return a.astype(like.dtype)

    @staticmethod
    def as_index(a):
        return a.astype(paddle.int64)

    @staticmethod
    def as_mask(keep, like):
        return keep.astype(like.dtype)

    def assert_values(self, a, cond, message):
        # Reached in a static program, where values are symbolic, and for tensors off
        # the CPU, whose values a read would synchronise: recorded, and the result is
        # made NaN where it fails (see _run).
        self.unchecked.append(paddle.all(cond(a)))

    @staticmethod
    def tracing():
        return _static()

    @staticmethod
    def concrete_range(a):
        if _static() or _numel(a) == 0:
            return None
        if not _in_sot() and not _on_host(a):
            return None  # a read would be a host sync: a NaN result instead (_run)
        if _in_sot():  # (values symbolic: SOT breaks the graph at the read)
            if a.dtype == paddle.bool:
                a = a.astype(paddle.int32)
            return float(paddle.min(a).item()), float(paddle.max(a).item())
        return _host_range(a)

    @staticmethod
    def expand_dims(a, axis):
        return paddle.unsqueeze(a, axis)

    @staticmethod
    def squeeze(a, axis):
        return paddle.squeeze(a, axis)

    @staticmethod
    def class_view(v, ndim, axis):
        shape = [1] * ndim
        shape[axis] = -1
        return v.reshape(shape)

    @staticmethod
    def gather_classes(v, idx):
        if _in_sot():  # (SOT reads the values: see concrete_range)
            return v[idx]
        return v[_in_range(idx, v.shape[0])]


@_not_translated
def _run(fn, x, arrays, static, need_grad):
    """Run a spec function with a fresh PaddleOps; NaN out the result where a value
    check that could not be done in Python (a static program, a GPU tensor) fails.

    A large loss in dygraph mode on the CPU runs in row blocks (:func:`_run_blocks`).
    """
    if not _static():
        blocks = _row_blocks(fn, x, arrays, static)
        if blocks is not None:
            try:
                return _run_blocks(fn, x, arrays, static, need_grad, blocks)
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
# block's sum (a 16 MiB concatenation cost 9 ms at 4M elements): the same number up
# to the order of the summation, a float rounding. The gradient is the whole's, bit
# for bit, in every reduction. Blocks start at multiples of _BLOCK_ALIGN elements,
# so every element takes the same (vector or scalar) path through a kernel as in the
# whole array. Paddle releases the
# GIL inside its kernels, so the blocks run on THREADS threads at once: the CPU's
# other cores, which Paddle's own kernels leave idle.
# ---------------------------------------------------------------------------

_BLOCK_ELEMS = 1 << 18      # 1 MiB of float32 per block
#: Blocks of the softmax loss: at 4194 x 1000, its loss and gradient over blocks of 256 /
#: 512 / 1024 / 2048 rows took 19 / 16 / 15 / 18 ms (the whole array at once: 76 ms;
#: measured, 2 threads).
_SOFTMAX_BLOCK_ELEMS = 1 << 20
#: Run whole below this many elements. In blocks, the sigmoid loss's fwd+bwd went from
#: 9.2 / 38 / 58 ms to 6.6 / 20 / 20 ms at 256K / 655K / 1M elements, and was unchanged at
#: 164K; the softmax loss's was slower in blocks up to 1M elements (3.8 against 2.2 ms at
#: 256 x 1000; measured, 2 threads).
_BLOCK_MIN = 1 << 17
_SOFTMAX_BLOCK_MIN = 1 << 20
_BLOCK_ALIGN = 64
_BLOCKWISE = (_spec.run_sigmoid_focal_loss, _spec.run_sigmoid_focal_loss_star)
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
        _fusable(x)
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
        # and only the result is rounded. Row blocks (_run_blocks) are kept as blocks.
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
            # skipped (a pass over the gradient, ~1 ms at 4M elements).
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


# ---------------------------------------------------------------------------
# Small calls on the host. A small loss in dygraph mode on the CPU is dominated by
# Paddle's per-operation dispatch (the spec issues a few dozen operations, each
# costing far more than its arithmetic at these sizes). Up to _HOST_MAX elements the
# same spec function runs on NumPy copies of the tensors, in the logits' own dtype
# (float32 / float64; float16 / bfloat16 keep the Paddle path), and only the loss and
# its closed-form gradient come back as tensors, through a minimal PyLayer. Where
# anything differs from the ordinary path (another place, a static program or SOT's
# simulation, a hyperparameter tensor or target that needs a gradient, an exotic
# dtype) the ordinary path runs; a call the spec refuses on the host is rerun on the
# ordinary path, which raises its own error.
# ---------------------------------------------------------------------------

#: Largest number of logits a call runs on the host (0: never); and only below the size
#: where row blocks start (_BLOCK_MIN, _SOFTMAX_BLOCK_MIN). On the host the softmax
#: loss's fwd+bwd was faster than on Paddle's operations up to twice this size, and
#: slower from about 1M elements, where row blocks take over (measured).
_HOST_MAX = 1 << 18
_HOST_FLOATS = frozenset((paddle.float32, paddle.float64))
#: Dtypes of targets and hyperparameter tensors that NumPy holds as Paddle does.
_HOST_DTYPES = frozenset((paddle.float16, paddle.float32, paddle.float64, paddle.int8,
                          paddle.uint8, paddle.int16, paddle.int32, paddle.int64, paddle.bool))
#: The first flat position of each row of a 2-D array of a shape (see HostOps._flat).
_ROW_STARTS = {}
_NP_KINDS = {"f": "floating", "i": "integer", "u": "integer", "b": "bool", "c": "complex"}


def _where_kernel_np():
    """np.where without its __array_function__ dispatch (a Python function per call),
    for the host path's NumPy arrays; np.where itself where that is not there or
    gives something else."""
    impl = getattr(np.where, "_implementation", None)
    try:
        cond = np.array([[True, False], [False, True]])
        a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
        b = np.float32(-1.0) * a
        got, want = impl(cond, a, b), np.where(cond, a, b)
        if type(got) is np.ndarray and got.dtype == want.dtype and np.array_equal(got, want):
            return impl
    except Exception:  # noqa: BLE001 - (pragma: no cover) another NumPy
        pass
    return np.where


_np_where = _where_kernel_np()


class _Held:
    """A hyperparameter tensor's values on the host, for HostOps.asarray: not an
    ndarray, so that the spec treats it as it treats the tensor (its range is read
    after the cast to the logits' dtype, as PaddleOps does, not from host data)."""

    __slots__ = ("arr", "dtype")

    def __init__(self, t):
        self.arr = t.numpy()
        self.dtype = t.dtype  # (the spec's normalizer reads str(dtype) for "bool")


class HostOps(ArrayModuleOps):
    """:class:`focalx._spec.Ops` for the host path: NumPy in the logits' dtype, with
    PaddleOps' plumbing (its asarray rules, the softmax from the log-softmax's parts)."""

    xp = np
    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    abs = staticmethod(np.abs)
    where = staticmethod(_np_where)
    full_like = staticmethod(np.full_like)
    # (C callables, not Python functions: the spec calls these at every call)
    shape = staticmethod(operator.attrgetter("shape"))  # (a tuple already)

    def __init__(self, need_grad):
        self.softmaxes = [] if need_grad else None
        self._flat_of = None  # (index, shape, its flat positions): see _flat

    @staticmethod
    def squeeze(a, axis):
        return a.squeeze(axis)  # (np.squeeze wraps it)

    @staticmethod
    def kind(a):
        kind = _NP_KINDS.get(a.dtype.kind)
        return kind if kind is not None else a.dtype.name

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        if keepdims and a.ndim == 2 and axis in (-1, 1):
            return _sum_keep(a)
        return _np_sum(a, axis=axis, keepdims=keepdims)  # (a.sum() and np.sum wrap it)

    def log_softmax(self, a, axis):
        # (PaddleOps.log_softmax's formula)
        s = a - _max_keep(a, axis)
        e = np.exp(s)
        total = _sum_keep(e) if e.ndim == 2 and axis in (-1, 1) else \
            _np_sum(e, axis=axis, keepdims=True)
        out = s - np.log(total)
        if self.softmaxes is not None:
            self.softmaxes.append((out, e, total))
        return out

    softmax_parts = PaddleOps.softmax_parts

    def log_softmax_at(self, x, index, axis):
        # log_softmax then take, without writing out the whole log-softmax: the same
        # operations on the same numbers at the target (and the softmax from the same
        # parts as softmax_parts gives)
        flat = self._flat(x, index, axis)
        if flat is None:
            return None
        s = x - _max_keep(x, axis)
        e = np.exp(s)
        total = _sum_keep(e)
        lp_y = s.reshape(-1)[flat].reshape(index.shape) - np.log(total)
        return lp_y, np.multiply(e, 1.0 / total, out=e)  # (e is ours: in place)

    @staticmethod
    def expand_dims(a, axis):
        # (a reshape: np.expand_dims normalises its axis through several Python calls)
        shape = a.shape
        axis = axis + len(shape) + 1 if axis < 0 else axis
        return a.reshape(shape[:axis] + (1,) + shape[axis:])

    def _flat(self, a, index, axis):
        """Flat positions of index along the last axis of a 2-D a (take_along_axis and
        put_along_axis are Python functions, several times the indexing), else None.
        Kept for the last index: the spec gathers and scatters at the same one."""
        if a.ndim == 2 and axis in (-1, 1):
            key = a.shape
            last = self._flat_of
            if last is not None and last[0] is index and last[1] == key:
                return last[2]
            starts = _ROW_STARTS.get(key)
            if starts is None:
                if len(_ROW_STARTS) >= 64:
                    _ROW_STARTS.clear()
                starts = _ROW_STARTS[key] = np.arange(0, a.size, a.shape[1])
                starts.flags.writeable = False
            flat = starts + index.reshape(-1)
            self._flat_of = (index, key, flat)
            return flat
        return None

    def take(self, a, index, axis):
        flat = self._flat(a, index, axis)
        if flat is None:
            return np.take_along_axis(a, index, axis=axis)
        return a.reshape(-1)[flat].reshape(index.shape)

    def scatter(self, a, index, values, axis):
        # in place: `a` is a fresh temporary of the spec's (as in PaddleOps.scatter)
        flat = self._flat(a, index, axis)
        if flat is None or not a.flags.c_contiguous:
            # (reshape(-1) of a non-C-contiguous array is a copy: the write would be lost;
            # the logits of a transposed view come to NumPy in Fortran order)
            np.put_along_axis(a, index, values, axis)
        else:
            if values.shape != index.shape:
                values = np.broadcast_to(values, index.shape)
            a.reshape(-1)[flat] = values.reshape(-1)
        return a

    @staticmethod
    def asarray(v, name, like):
        # PaddleOps.asarray's rules: a tensor (held) is cast, host data goes through
        # host_array and float64 first
        if isinstance(v, _Held):
            if _kind(v) not in ("floating", "integer", "bool"):
                raise TypeError(f"{name} must be real, got {_kind(v)} dtype")
            return v.arr.astype(like.dtype)
        if isinstance(v, (np.ndarray, np.generic, numbers.Number, list, tuple)):
            return _spec.host_array(v, name).astype(np.float64).astype(like.dtype)
        raise TypeError(f"{name} must be a number, a sequence or a paddle tensor, got "
                        f"{type(v).__module__}.{type(v).__name__}")

    # (a C callable: a.astype(np.int64, copy=False))
    as_index = staticmethod(operator.methodcaller("astype", np.int64, copy=False))

    @staticmethod
    def concrete_range(a):
        if a.size == 0:
            return None
        # (the ufuncs' own reductions: a.min() wraps them; the same values, NaN included)
        return float(_np_min(a, axis=None)), float(_np_max(a, axis=None))

    @staticmethod
    def gather_classes(v, idx):
        return v[idx]


_np_min, _np_max, _np_sum = np.minimum.reduce, np.maximum.reduce, np.add.reduce
#: Class axes up to this long take the largest logit over a transposed copy (_max_keep).
_SHORT_CLASS_AXIS = 64


#: Up to this many elements a short last axis is summed as a product with a vector of
#: ones (_sum_keep): below OpenBLAS's threshold for threads.
_SHORT_SUM_MAX = 8192


def _sum_keep(a):
    """a.sum(-1, keepdims=True) of a 2-D float array. Along a short last axis as a product
    with a vector of ones, as PaddleOps.sum does (one BLAS call, where NumPy's reduction
    runs an inner loop per row); a sum of the same numbers, in another order."""
    c, dtype = a.shape[1], a.dtype
    if 0 < c <= _SHORT_CLASS_AXIS and a.size <= _SHORT_SUM_MAX and dtype in _BLAS_FLOATS:
        key = (c, dtype)
        ones = _ONES.get(key)
        if ones is None:
            if len(_ONES) >= 256:
                _ONES.clear()
            ones = _ONES[key] = np.ones((c, 1), dtype=dtype)
            ones.flags.writeable = False
        return a.dot(ones)  # (the method: np.dot wraps it in a dispatch)
    return _np_sum(a, axis=-1, keepdims=True)


_BLAS_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
#: Read-only (c, 1) arrays of ones, per size and dtype (_sum_keep).
_ONES = {}


def _max_keep(a, axis):
    """a.max(axis, keepdims=True). Along a short last axis of a 2-D array NumPy's
    reduction runs one inner loop per row; over a transposed copy it runs one per class,
    several times faster at these sizes. The maximum is the same either way."""
    if a.ndim == 2 and axis in (-1, 1) and 0 < a.shape[1] <= _SHORT_CLASS_AXIS:
        return _np_max(np.ascontiguousarray(a.T), axis=0).reshape(a.shape[0], 1)
    return a.max(axis=axis, keepdims=True)


def _host_ok(fn, logits, arrays, grad_mode) -> bool:
    """Whether a call takes the host path (see above)."""
    limit = min(_HOST_MAX, (_SOFTMAX_BLOCK_MIN if fn is _SOFTMAX else _BLOCK_MIN) - 1)
    dt = logits.dtype
    # (dtypes by identity first: a paddle dtype's hash costs half a microsecond)
    if not (dt is _F32 or dt is _F64 or dt in _HOST_FLOATS) or \
            not 0 < math.prod(logits.shape) <= limit or not paddle.in_dynamic_mode() or \
            _in_sot() or not _on_host(logits):
        return False
    for v in arrays.values():
        dt = v.dtype
        if not (dt is _I64 or dt in _HOST_DTYPES) or not _on_host(v) or \
                (grad_mode and not v.stop_gradient and dt in _FLOATS):
            return False  # (a gradient w.r.t. it comes from the ordinary path)
    return True


_F32, _F64, _I64 = paddle.float32, paddle.float64, paddle.int64
_TENSOR = paddle.Tensor


def _host_run(fn, x, arrays, static, need_grad):
    """fn on NumPy copies: (loss, grad) as NumPy arrays of x's dtype (grad None
    without need_grad)."""
    held = {k: _Held(v) for k, v in arrays.items() if k != "targets"} if len(arrays) > 1 \
        else {}
    quiet = _QUIET.get(fn)
    if quiet is None:
        quiet = _QUIET[fn] = _fp_quiet(fn)
    return quiet(HostOps(need_grad), x.numpy(), arrays["targets"].numpy(),
                 need_grad=need_grad, **static, **held)


def _fp_quiet(fn):
    """fn with NumPy's floating-point warnings off (the spec handles inf and NaN itself):
    errstate as a decorator where its instance keeps no per-call state (NumPy 2; the
    with statement costs two more Python calls), else a with statement."""
    if "__call__" in vars(np.errstate):
        return np.errstate(all="ignore")(fn)

    def quiet(*args, **kwargs):  # (pragma: no cover) NumPy 1
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return quiet


#: The spec's run_* functions, each under _fp_quiet.
_QUIET = {}


def _full_kernel():
    """Paddle's full kernel (a 0-d tensor from a Python float without the Python API's
    checks), where it makes what paddle.full does; else None."""
    try:
        from paddle import _C_ops
        if not paddle.in_dynamic_mode():
            return None
        t = _C_ops.full([], 0.1, paddle.float32, paddle.CPUPlace())
        want = paddle.full([], 0.1, dtype=paddle.float32)
        if t.shape == [] and t.dtype == paddle.float32 and t.place.is_cpu_place() and \
                np.array_equal(t.numpy(), want.numpy()):
            return _C_ops.full
    except Exception:  # noqa: BLE001 - (pragma: no cover) another Paddle: paddle.to_tensor
        pass
    return None


_full = _full_kernel()
_CPU = paddle.CPUPlace()


def _tensor_kernel():
    """A CPU tensor (a copy) from a C-contiguous NumPy array without paddle.Tensor's
    constructor, which costs a few microseconds a call (its argument parsing): an
    uninitialised tensor from the empty kernel, filled by its DenseTensor's set (which
    copies the array, its shape and dtype). Else through the Tensor type's own
    constructor (paddle.Tensor's Python wrapper takes other argument forms too), else
    paddle.Tensor: whichever first makes what paddle.Tensor makes here."""
    def public(a):
        return paddle.Tensor(a, _CPU)

    def filled(a):
        t = _empty_kernel([], _F32, _CPU)
        t.get_tensor().set(a, _CPU)
        return t
    init = getattr(paddle, "original_init", None)
    tensor_type = paddle.Tensor

    def raw(a):
        t = tensor_type.__new__(tensor_type)
        init(t, a, _CPU)
        return t
    candidates = ([filled] if _empty_kernel is not None else []) + \
        ([raw] if init is not None and callable(init) else [])
    for make in candidates:
        try:
            for a in (np.array([[0.5, -1.0], [2.0, 3.0]], dtype=np.float32),
                      np.array([1.0, 2.0, 3.0], dtype=np.float64),
                      np.array(2.5, dtype=np.float64)):
                t, want = make(a), public(a)
                a[...] = 9.0  # (a copy, not a view of `a`)
                if not (type(t) is type(want) and t.shape == want.shape and
                        t.dtype == want.dtype and t.place.is_cpu_place() and
                        t.stop_gradient and np.array_equal(t.numpy(), want.numpy())):
                    break
            else:
                return make
        except Exception:  # noqa: BLE001 - (pragma: no cover) another Paddle
            pass
    return public


def _find_empty_kernel():
    try:
        from paddle import _C_ops
        return _C_ops.empty if paddle.in_dynamic_mode() else None
    except Exception:  # noqa: BLE001 - (pragma: no cover) another Paddle
        return None


_empty_kernel = _find_empty_kernel()
_new_tensor = _tensor_kernel()


def _host_tensor(a, dtype):
    """A NumPy result of the host path as a CPU tensor of the paddle dtype `dtype`."""
    # (dtypes by identity: see _host_ok)
    want = _NP32 if dtype is _F32 else _NP64 if dtype is _F64 else _NP_DTYPE[dtype]
    if type(a) is want.type and _full is not None:
        # (a NumPy scalar of the dtype, as a loss's sum is; exact: see below)
        return _full([], float(a), dtype, _CPU)
    if type(a) is not np.ndarray or (a.dtype is not want and a.dtype != want):
        a = np.asarray(a, dtype=want)
    if a.ndim == 0 and _full is not None:
        # (exact: a float32 or float64 value is a Python float)
        return _full([], float(a), dtype, _CPU)
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return _new_tensor(a)


_NP32, _NP64 = np.dtype(np.float32), np.dtype(np.float64)
_NP_DTYPE = {paddle.float32: _NP32, paddle.float64: _NP64}


class _HostLayer(PyLayer):
    """The host path's loss and gradient as one node: forward returns the loss and
    keeps the NumPy gradient, backward multiplies it by the incoming gradient."""

    @staticmethod
    def forward(ctx, x, loss, grad, class_axis):
        dtype = x.dtype
        ctx.grad, ctx.class_axis, ctx.dtype = grad, class_axis, dtype
        return _host_tensor(loss, dtype)

    @staticmethod
    def backward(ctx, grad_out):
        # (a backward() inside a to_static function: SOT would translate this frame, and
        # the tensor it makes (_new_tensor), whose DenseTensor calls it cannot translate)
        _sot_fallback(recursive=True)
        go = grad_out.numpy()
        grad = ctx.grad
        if go.ndim == 0 and float(go) == 1.0:  # (a loss's backward() seeds 1: 1 * grad is grad)
            return _host_tensor(grad, ctx.dtype)
        if go.ndim and ctx.class_axis is not None:  # per-sample softmax loss
            go = np.expand_dims(go, ctx.class_axis)
        return _host_tensor(go.astype(grad.dtype) * grad, ctx.dtype)


@_not_translated
def _host_apply(fn, logits, arrays, static, class_axis):
    """The loss on the host path (see above), or None where the call takes the ordinary
    path."""
    grad_mode = paddle.is_grad_enabled()
    if _HOST_MAX <= 0 or not _host_ok(fn, logits, arrays, grad_mode):
        return None
    need_grad = grad_mode and not logits.stop_gradient
    try:
        out, grad = _host_run(fn, logits, arrays, static, need_grad)
    except Exception:  # noqa: BLE001 - the ordinary path raises the spec's error
        return None
    if not need_grad:
        return _host_tensor(out, logits.dtype)
    shape = tuple(logits.shape)
    if grad.shape != shape:
        grad = np.broadcast_to(grad, shape)
    return _HostLayer.apply(logits, out, grad, class_axis)


@_not_translated
def _split(targets, params):
    """({"targets": targets, tensor-valued params}, the other params). `params` is the
    caller's own dict (it may be returned)."""
    if _PLAIN.issuperset(map(type, params.values())):  # (no tensor: the usual call, in C)
        return {"targets": targets}, params
    arrays, static = {"targets": targets}, {}
    for k, v in params.items():
        # (None and numbers first: this runs at every call)
        if v is not None and not isinstance(v, (bool, int, float, str)) and _is_tensor(v):
            arrays[k] = v
        else:
            static[k] = v
    return arrays, static


_PLAIN = frozenset((type(None), bool, int, float, str))


def _apply(fn, logits, targets, params, class_axis=None):
    """fn(x, targets, **params) through the PyLayer when the logits need a gradient.

    Tensor-valued params (alpha, weight, ... given as paddle tensors) travel as
    PyLayer inputs; the rest (numbers, NumPy arrays, flags) as Python values. Floating
    ones that need a gradient get it from _other_grads.
    """
    arrays, static = _split(targets, params)
    host = _host_apply(fn, logits, arrays, static, class_axis)
    if host is not None:
        return host
    grad_mode = paddle.is_grad_enabled()
    others = grad_mode and any(_wants_grad(v) for v in arrays.values())
    # (cast where used: the PyLayer casts its own input)
    if others:
        extra = _other_grads(fn, _in_compute_dtype(logits), arrays, static)
        arrays = {k: v.detach() if _wants_grad(v) else v for k, v in arrays.items()}
    if logits.stop_gradient or not grad_mode:
        out, _ = _run(fn, _in_compute_dtype(logits), arrays, static, False)
        out = _cast(out, logits.dtype)
    elif _empty(logits):
        # Empty logits, whose gradient is empty: not through the PyLayer (in a static
        # program its 0-size output is left uninitialized, and the gradient then fails),
        # but tied to them by a zero, so that autograd reaches them.
        x = _in_compute_dtype(logits)
        out, _ = _run(fn, x, arrays, static, False)
        out = _cast(out + paddle.sum(x) * 0.0, logits.dtype)  # (x: float16 has no CPU add)
    else:
        names = tuple(arrays)
        out = _FocalLayer.apply(logits, fn, static, class_axis, names,
                                *(arrays[k] for k in names))
    return _cast(out + extra.astype(out.dtype), out.dtype) if others else out


def _check_tensors(logits, targets):
    # (the exact type and dtype first: this runs at every call)
    if type(logits) is not _TENSOR and not _is_tensor(logits):
        raise TypeError(f"logits must be a paddle.Tensor, got "
                        f"{type(logits).__module__}.{type(logits).__name__}")
    if type(targets) is not _TENSOR and not _is_tensor(targets):
        raise TypeError(f"targets must be a paddle.Tensor (the framework of logits), got "
                        f"{type(targets).__module__}.{type(targets).__name__}")
    dt = logits.dtype
    if not (dt is _F32 or dt is _F64):
        _spec.check_logits_dtype(_kind(logits))
    if paddle.in_dynamic_mode() and not _same_place(targets.place, logits.place):
        raise ValueError(f"targets is on {targets.place} but logits is on {logits.place}")


def _same_place(a, b) -> bool:
    # (two CPU places first: str() of a place costs a microsecond)
    return (a.is_cpu_place() and b.is_cpu_place()) or str(a) == str(b)


# focalx:signature sigmoid_focal_loss
def sigmoid_focal_loss(logits: paddle.Tensor, targets: paddle.Tensor, *, gamma: float = 2.0,
                       alpha: float | Sequence[float] | paddle.Tensor | None = 0.25,
                       pos_weight: float | Sequence[float] | paddle.Tensor | None = None,
                       weight: float | Sequence[float] | paddle.Tensor | None = None,
                       ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                       reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | paddle.Tensor | None = None,
                       from_logits: bool = True) -> paddle.Tensor:
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

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    The default reduction is "mean", where ``paddle.nn.functional.sigmoid_focal_loss``'s
    is "sum"; its gradient is NaN at gamma < 1 for saturated logits, this one's is
    finite.

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
      (float16 / bfloat16 are computed in float32; NumPy input gives float64).

    Stability: log p and log(1-p) from softplus, 1-p_t without cancellation; the
    gradient is closed-form and finite for every finite logit and every gamma >= 0
    (no NaN at gamma < 1).

    References:
      Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    return _apply(_spec.run_sigmoid_focal_loss, logits, targets, dict(
        gamma=gamma, alpha=alpha, pos_weight=pos_weight, weight=weight,
        ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
        normalizer=normalizer, from_logits=from_logits))


# focalx:signature sigmoid_focal_loss_star
def sigmoid_focal_loss_star(logits: paddle.Tensor, targets: paddle.Tensor, *, gamma: float = 1.0,
                            beta: float = 0.0,
                            alpha: float | Sequence[float] | paddle.Tensor | None = None,
                            weight: float | Sequence[float] | paddle.Tensor | None = None,
                            ignore_index: int | float | None = None, label_smoothing: float = 0.0,
                            reduction: Literal["none", "mean", "sum"] = "mean",
                            normalizer: float | paddle.Tensor | None = None) -> paddle.Tensor:
    r"""FL*, the focal loss variant of Lin et al.'s appendix A, with a tunable ``beta``.

    .. math::

        x_t = x\,(2y - 1), \qquad
        \mathrm{FL}^*(x, y) = -\,w\,\alpha_t \log\sigma(\gamma x_t + \beta) / \gamma

    fvcore's ``sigmoid_focal_loss_star`` is the case ``beta=0``.

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

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
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    return _apply(_spec.run_sigmoid_focal_loss_star, logits, targets, dict(
        gamma=gamma, beta=beta, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer))


# focalx:signature softmax_focal_loss
def softmax_focal_loss(logits: paddle.Tensor, targets: paddle.Tensor, *, gamma: float = 2.0,
                       alpha: float | Sequence[float] | paddle.Tensor | None = None,
                       weight: float | Sequence[float] | paddle.Tensor | None = None,
                       ignore_index: int | None = -100, label_smoothing: float = 0.0,
                       reduction: Literal["none", "mean", "sum"] = "mean",
                       normalizer: float | paddle.Tensor | None = None, axis: int = -1,
                       from_logits: bool = True, soft_label: bool | None = None) -> paddle.Tensor:
    r"""Softmax (multi-class) focal loss.

    .. math::

        p = \mathrm{softmax}(x), \qquad
        \mathrm{FL}(x, q) = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c

    per sample, with ``q`` the one-hot target (class indices) or the given class
    probabilities, smoothed as ``(1 - e) * q + e / C``. With ``gamma=0, alpha=None``
    it equals ``torch.nn.functional.cross_entropy`` for every combination of
    ``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``, probability
    targets and N-d inputs (except that an all-ignored "mean" is 0, not NaN).

    On paddle.Tensor values (hyperparameter arrays may also be NumPy).

    Class-index targets may also carry a size-1 class axis (``(N, 1)`` for ``(N, C)``),
    as ``paddle.nn.functional.cross_entropy`` takes them; "none" then keeps that axis in
    the result (as with ``soft_label=True``), as ``cross_entropy`` returns it.

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
      axis: the class axis: -1 by default, as Paddle's ``cross_entropy``.
      from_logits: if False, ``logits`` holds probabilities used as given (not
        renormalised); ``p_c = 0`` for a target class costs ``+inf``.
      soft_label: Paddle's ``cross_entropy`` keyword: True says ``targets`` are class
        probabilities, False class indices; None tells them apart by dtype.

    Returns:
      The loss (per sample for ``"none"``, else 0-d).

    Stability: log-softmax, ``1 - p_c`` as ``-expm1(log p_c)``; closed-form gradient,
    finite for every finite logit and gamma >= 0.
    """
    # focalx:end
    _sot_fallback(recursive=True)
    _check_tensors(logits, targets)
    ndim = len(logits.shape)
    class_axis = _spec.check_axis(axis, ndim) if ndim else 0
    targets, keep = _label(logits, targets, class_axis, soft_label)
    out = _apply(_spec.run_softmax_focal_loss, logits, targets, dict(
        gamma=gamma, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer,
        axis=axis, from_logits=from_logits), class_axis)
    if keep and reduction == "none":
        # (in the compute dtype: a static program has no CPU float16 unsqueeze)
        out = _cast(paddle.unsqueeze(_in_compute_dtype(out), class_axis), out.dtype)
    return out


def _label(logits, label, axis, soft_label):
    """(label as the spec takes it, whether a "none" loss keeps a size-1 class axis) for
    Paddle's conventions: class indices with a size-1 class axis, soft_label."""
    if soft_label is not None and not isinstance(soft_label, bool):
        raise TypeError(f"soft_label must be a bool or None, got {type(soft_label).__name__}")
    shape, lshape = tuple(logits.shape), tuple(label.shape)
    if soft_label:
        if lshape != shape:
            raise ValueError(f"label of shape {lshape} must have the input's shape {shape} "
                             "with soft_label=True (class probabilities)")
        return label, True
    if soft_label is False and _kind(label) == "floating" and lshape == shape and \
            shape[axis] != 1:
        raise ValueError("label has the input's shape and a floating dtype (class "
                         "probabilities): pass soft_label=True")
    if len(lshape) == len(shape) and len(shape) > 1 and lshape[axis] == 1 and \
            _kind(label) != "floating" and \
            lshape[:axis] + lshape[axis + 1:] == shape[:axis] + shape[axis + 1:]:
        return paddle.squeeze(label, axis), True
    return label, False


# ---------------------------------------------------------------------------
# nn.Layer drop-ins
# ---------------------------------------------------------------------------

def _buffer(layer, name, value, *, class_vector=False, allow_scalar=True):
    """An optional tensor hyperparameter as a non-persistable buffer (it follows .to()),
    checked now as a call would check it (as Paddle's own losses check their arguments
    at construction)."""
    if value is None:
        setattr(layer, name, None)
        return
    if not _is_tensor(value):
        arr = _spec.check_param(name, value, class_vector=class_vector,
                                allow_scalar=allow_scalar)
        value = paddle.to_tensor(arr.astype(np.float64 if arr.dtype.kind == "f" else arr.dtype))
    elif paddle.in_dynamic_mode():
        host = value.astype("float64") if value.dtype in _FLOATS else value
        _spec.check_param(name, host.numpy(), class_vector=class_vector,
                          allow_scalar=allow_scalar)
    layer.register_buffer(name, value, persistable=False)


def _set_alpha(layer, alpha, *, class_vector=False):
    if alpha is None or isinstance(alpha, numbers.Real):  # (a bool: check_alpha_number refuses it)
        layer.alpha = _spec.check_alpha_number(alpha)
    else:
        _buffer(layer, "alpha", alpha, class_vector=class_vector)


def _check_flag(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


@_not_translated
def _in_layer_words(loss, input, label):
    """loss(input, label), its errors in the words of FocalLoss's signature (input, label,
    use_softmax) rather than the functions' (logits, targets, from_logits)."""
    try:
        return loss(input, label)
    except (TypeError, ValueError) as exc:
        text = str(exc).replace("from_logits=False", "use_softmax=False").replace(
            "logits", "input").replace("targets", "label")
        raise type(exc)(text) from None


class FocalLoss(paddle.nn.Layer):
    r"""Softmax focal loss with ``paddle.nn.CrossEntropyLoss``'s signature plus ``gamma``, ``alpha``.

    ``paddle.nn.CrossEntropyLoss(...)`` -> ``focalx.paddle.FocalLoss(...)`` is the whole
    change. With ``gamma=0`` (and ``alpha=None``, the default) it equals Paddle's
    cross-entropy, except where that departs from the spec (see the README: the mean
    with ``ignore_index`` and no ``weight``, soft labels with ``weight``).

    .. math:: \mathrm{FL} = -\sum_c w_c\,\alpha_c\,q_c\,(1-p_c)^\gamma \log p_c

    Parameters
    ----------
    weight : paddle.Tensor or sequence, shape ``(C,)``, optional
        Per-class weights; the mean over class-index targets divides by the sum
        of the targets' weights.
    ignore_index : int
        Class-index targets equal to it contribute nothing (default -100).
    reduction : {"mean", "sum", "none"}
    soft_label : bool
        False: ``label`` holds class indices, shape ``input.shape`` without the
        class axis, or with a size-1 class axis (``(N, 1)`` for ``(N, C)`` input).
        True: ``label`` holds class probabilities of ``input``'s shape.
    axis : int
        The class axis (default -1).
    use_softmax : bool
        True: ``input`` holds logits. False: ``input`` holds probabilities
        (the spec's ``from_logits=False``), used as given.
    label_smoothing : float in [0, 1)
    name : str, optional
        Unused, as in Paddle.
    gamma : float >= 0, keyword-only
        Focusing parameter (default 2).
    alpha : None, float in [0, 1] or sequence of C floats, keyword-only
        Class balance factor; None (default) switches it off.
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 soft_label: bool = False, axis: int = -1, use_softmax: bool = True,
                 label_smoothing: float = 0.0, name=None, *, gamma: float = 2.0,
                 alpha=None):
        super().__init__()
        self.reduction = _spec.check_reduction(reduction)
        self.ignore_index = _spec.check_ignore_index(ignore_index, allow_none=True,
                                                     binary=False)
        self.soft_label = _check_flag("soft_label", soft_label)
        self.use_softmax = _check_flag("use_softmax", use_softmax)
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise TypeError(f"axis must be an int, got {type(axis).__name__}")
        self.axis = int(axis)
        self.label_smoothing = _spec.check_label_smoothing(label_smoothing)
        self.gamma = _spec.check_gamma(gamma)
        self.name = name
        _buffer(self, "weight", weight, class_vector=True, allow_scalar=False)
        _set_alpha(self, alpha, class_vector=True)

    def forward(self, input, label):
        _sot_fallback(recursive=True)
        if paddle.in_dynamic_mode():  # (errors are raised in dygraph, where values are read)
            return _in_layer_words(self._loss, input, label)
        return self._loss(input, label)

    def _loss(self, input, label):
        return softmax_focal_loss(
            input, label, gamma=self.gamma, alpha=self.alpha,
            weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction, axis=self.axis,
            from_logits=self.use_softmax, soft_label=self.soft_label)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, alpha=self.alpha, weight=self.weight,
                              ignore_index=self.ignore_index, soft_label=self.soft_label,
                              axis=self.axis, use_softmax=self.use_softmax,
                              label_smoothing=self.label_smoothing, reduction=self.reduction)


class SigmoidFocalLoss(paddle.nn.Layer):
    r"""Sigmoid focal loss with ``paddle.nn.BCEWithLogitsLoss``'s signature plus ``gamma``, ``alpha``.

    ``SigmoidFocalLoss(gamma=0, alpha=None)`` equals ``paddle.nn.BCEWithLogitsLoss()``
    (with its ``weight`` and ``pos_weight``). See :func:`sigmoid_focal_loss`.

    Parameters
    ----------
    weight : paddle.Tensor, optional
        Elementwise weight, broadcastable to the input.
    reduction : {"mean", "sum", "none"}
    pos_weight : paddle.Tensor, optional
        Weight of the positive term, broadcastable to the input (e.g. ``(C,)``).
    name : str, optional
        Unused, as in Paddle.
    gamma : float >= 0, keyword-only (default 2)
    alpha : None, float in [0, 1] or array, keyword-only (default 0.25)
    """

    def __init__(self, weight=None, reduction: str = "mean", pos_weight=None, name=None, *,
                 gamma: float = 2.0, alpha=0.25):
        super().__init__()
        self.reduction = _spec.check_reduction(reduction)
        self.gamma = _spec.check_gamma(gamma)
        self.name = name
        _buffer(self, "weight", weight)
        _buffer(self, "pos_weight", pos_weight)
        _set_alpha(self, alpha)

    def forward(self, logit, label, normalizer=None):
        _sot_fallback(recursive=True)
        return sigmoid_focal_loss(
            logit, label, gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
            weight=self.weight, reduction=self.reduction, normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
                              weight=self.weight, reduction=self.reduction)


class SigmoidFocalLossStar(paddle.nn.Layer):
    """FL* as a layer. See :func:`sigmoid_focal_loss_star`."""

    def __init__(self, *, gamma: float = 1.0, beta: float = 0.0, alpha=None,
                 reduction: str = "mean"):
        super().__init__()
        self.gamma = _spec.check_gamma(gamma, strictly_positive=True)
        self.beta = _spec.check_beta(beta)
        self.alpha = _spec.check_alpha_number(alpha)
        self.reduction = _spec.check_reduction(reduction)

    def forward(self, logit, label, normalizer=None):
        _sot_fallback(recursive=True)
        return sigmoid_focal_loss_star(logit, label, gamma=self.gamma, beta=self.beta,
                                       alpha=self.alpha, reduction=self.reduction,
                                       normalizer=normalizer)

    def extra_repr(self):
        return _spec.describe(gamma=self.gamma, beta=self.beta, alpha=self.alpha,
                              reduction=self.reduction)


def global_normalizer(num_pos, *, group=None):
    """RetinaNet's normalizer under data parallelism (paddle.DataParallel): the number of
    positives over every rank, clamped to at least 1, divided by the number of ranks.

    DataParallel averages the ranks' gradients, so a loss normalised by this on every
    rank, ``sigmoid_focal_loss(x, t, reduction="sum",
    normalizer=global_normalizer(num_pos))``, has the gradient of the whole batch's loss
    normalised by all its positives (as one process would compute it). ``num_pos``: this
    rank's count, a number or a tensor; the all-reduce runs where the tensor is. Without
    an initialised parallel environment it is ``max(num_pos, 1)``. Returns a 0-d float32
    tensor.
    """
    if _is_tensor(num_pos):
        total = num_pos.detach().astype("float32").reshape([])
    elif isinstance(num_pos, numbers.Real) and not isinstance(num_pos, bool):
        total = paddle.to_tensor(float(num_pos), dtype="float32")
    else:
        raise TypeError(f"num_pos must be a number or a tensor, got {type(num_pos).__name__}")
    dist = paddle.distributed
    world = dist.get_world_size(group) if dist.is_initialized() else 1
    if world > 1:
        total = total.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return paddle.clip(total, min=1.0) / world
