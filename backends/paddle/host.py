"""Speed path for small dygraph calls on the CPU: the spec on NumPy copies."""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np
import paddle
from paddle.autograd import PyLayer

from ... import _spec
from ..._numpy import ArrayModuleOps, NumpyOps
from . import blocks as _rows
from . import ops as _ops
from .blocks import _SOFTMAX
from .ops import PaddleOps, _FLOATS, _in_sot, _kind, _not_translated, _sot_fallback


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
#: where row blocks start (blocks._BLOCK_MIN, blocks._SOFTMAX_BLOCK_MIN). On the host the softmax
#: loss's fwd+bwd is faster than on Paddle's operations below this size, with a margin;
#: at large sizes it is slower, and row blocks take over.
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
    # (the host can read every value: NumPy's checks)
    assert_values = staticmethod(NumpyOps.assert_values)
    tracing = staticmethod(NumpyOps.tracing)
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
    if fn.__name__ in _spec.PLAIN_RUNS:  # (op by op: see _spec.PLAIN_RUNS)
        return False
    limit = min(_HOST_MAX, (_rows._SOFTMAX_BLOCK_MIN if fn is _SOFTMAX else _rows._BLOCK_MIN) - 1)
    dt = logits.dtype
    # (dtypes by identity first: a paddle dtype's hash is slow)
    if not (dt is _F32 or dt is _F64 or dt in _HOST_FLOATS) or \
            not 0 < math.prod(logits.shape) <= limit or not paddle.in_dynamic_mode() or \
            _in_sot() or not _ops._on_host(logits):
        return False
    for v in arrays.values():
        dt = v.dtype
        if not (dt is _I64 or dt in _HOST_DTYPES) or not _ops._on_host(v) or \
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
    constructor, which is slow for a per-call step (its argument parsing): an
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
        _ops._refuse_create_graph()
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
