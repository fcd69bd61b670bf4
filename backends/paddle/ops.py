"""PaddleOps: the spec's Ops on paddle tensors, with Paddle's numerical quirks worked around;
places, dtypes, kernels and the to_static (SOT / AST) hooks the other files use."""

from __future__ import annotations

import math
import numbers

import numpy as np
import paddle

from ... import _spec
from .. import _kept as kept
from .._kept import KeptCopies


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
    # (a dict first: a paddle dtype's == is slow, and this runs several times a call)
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


def _refuse_create_graph() -> None:
    """Called first in each PyLayer's backward: grad mode is on there only under
    paddle.grad(create_graph=True), whose second derivative would silently miss the
    loss's curvature (the closed-form gradient is saved, not differentiated): refused."""
    if paddle.in_dynamic_mode() and paddle.is_grad_enabled():
        raise RuntimeError(
            "focalx losses are differentiable once: their backward cannot be "
            "differentiated twice (paddle.grad(create_graph=True) is not supported)")


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
    def mul_owned(a, b):
        # `a`: log_softmax_at's softmax, which the spec reads no more: the product in its
        # memory, one logits-sized array fewer at the gradient's peak (dygraph only; a
        # program keeps its own buffers)
        if _static() or _in_sot() or not isinstance(b, paddle.Tensor) or \
                b.dtype != a.dtype or len(b.shape) > len(a.shape) or \
                any(s not in (1, t) for s, t in zip(b.shape[::-1], a.shape[::-1])):
            return a * b
        return a.multiply_(b)

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
            # pass of the BLAS, much faster than paddle.sum's CPU kernel, and more
            # accurately (largest relative error over 4194 rows of 1000 positive numbers:
            # 4e-7 against paddle.sum's 1.1e-6; measured). Not on a GPU, whose float32
            # products may round inputs to TF32, nor in a program, which may run on one.
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
        # product instead of a second exp, the cheaper of the two.
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
        # in place: `a` is a fresh temporary of the spec's (a copy costs far more than
        # the in-place write); the kernel itself where there is one: the Python API
        # broadcasts and range-checks the indices again (more kernels and a host read),
        # which the spec has done
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

    @staticmethod
    def matmul(a, b, transpose_a, transpose_b):
        return paddle.matmul(a, b, transpose_x=transpose_a, transpose_y=transpose_b)

    @staticmethod
    def concat(arrays, axis):
        return paddle.concat(arrays, axis=axis)
