"""Speed path for large eager calls: the spec compiled by torch.compile into one fused
kernel, compiled in a background thread while calls run op by op. The switch is the
environment variable FOCALX_TORCH_COMPILE (0: off; sync: compile in the calling
thread); its invariants are written below."""

from __future__ import annotations

import contextlib
import ctypes
import math
import numbers
import os
import sys
import threading
import time
import types
import warnings

import numpy as np
import torch

from ... import _spec
from .. import _worker
from .eager import _eager
from .ops import OPS, TorchOps, _symbolic, _unwrapped


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
        # (counted in the logits' dtype, exact below 2**24 ties: an integer count makes
        # the kernel widen every mask lane to int64, a slower kernel)
        ties = top.to(a.dtype).sum(dim=axis, keepdim=True) - 1.0
        out = shifted - torch.log1p(rest + ties)
        self.softmaxes.append((out, e, (rest + ties) + 1.0))
        return out

    def softmax_parts(self, lp):
        # The spec's softmax from the log-softmax's own exp and sum (_spec._softmax): the
        # kernel keeps exp(a - max) from its row reductions and turns it into the
        # gradient in place: one exp per element, not a second pass of exp over the
        # log-softmax.
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
    static = dict(static)
    # the floats that the kernel's branch class fixes, as constants (see _pin)
    static.update((name, float(text)) for name, text in static.pop(_PINNED, ()))
    out, grad = getattr(_spec, spec_name)(ops, x, targets, need_grad=need_grad, **tensors,
                                          **static)
    ok = torch.stack(ops.unchecked).all() if ops.unchecked else None
    return out, grad, ok


#: FOCALX_TORCH_COMPILE=0 turns the fused path off, =sync compiles in the calling thread
#: (each new kernel blocks its first call); by default kernels compile in a background
#: thread while calls run op by op. FOCALX_TORCH_COMPILE_MIN_NUMEL sets the smallest
#: logits (in elements) that take the fused path. "compile" is torch.compile (tests
#: replace it).
#: Once compiled, the kernel's fwd+bwd is faster than op by op (where every op's fresh
#: result page-faults); but small calls are quick either way, and the first call's
#: compilation (seconds) would dominate a small job, so those run op by op.
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
_RUNTIME_FLOATS = ("gamma", "alpha", "label_smoothing", "beta", "epsilon", "gamma_pos",
                   "gamma_neg", "clip")


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
    label_smoothing and epsilon: 0 or not. Never raises (a bad value fails in the op-by-op run)."""
    if name not in _RUNTIME_FLOATS or type(v) is not float or not math.isfinite(v):
        return repr(v)
    if name == "gamma" and spec_name != "run_sigmoid_focal_loss_star":  # (FL*: a divisor)
        if v == 0 or (v == int(v) and v <= _spec._MAX_INT_GAMMA):
            return f"gamma={int(v)}"
        return "gamma=int" if v == int(v) else "gamma=frac"
    if name == "label_smoothing":
        return "0" if v == 0 else "smoothed"
    if name == "epsilon":  # (Poly-1: the spec skips its term at 0)
        return "0" if v == 0 else "poly"
    if name in ("gamma_pos", "gamma_neg"):  # (ASL's exponents: as gamma)
        if v == 0 or (v == int(v) and v <= _spec._MAX_INT_GAMMA):
            return f"{name}={int(v)}"
        return f"{name}=int" if v == int(v) else f"{name}=frac"
    if name == "clip":  # (ASL's margin: the spec branches on 0)
        return "0" if v == 0 else "clip"
    return "float"


#: the key in a kernel's static arguments of the floats that _pin made constants
_PINNED = "_focalx_pinned"


def _pin(spec_name, static):
    """The kernel's static arguments with the floats whose branch class holds one value
    (gamma=2, label_smoothing=0, ...: see _branch) passed as their repr, under _PINNED:
    the kernel turns them back into the same floats while dynamo traces it, so they are
    constants of the graph from the start. Passed as floats, dynamo makes them symbolic;
    the spec's equality branch on the value then specializes them, and dynamo restarts
    its analysis of the whole kernel (torch 2.13): every such kernel was traced twice.
    The kernel serves only that value anyway, as its key holds the class; the graph is
    the one the restart made."""
    pinned = []
    for name, v in static.items():
        if name in _RUNTIME_FLOATS and type(v) is float:
            cls = _branch(spec_name, name, v)
            if cls == "0" or (cls.startswith(name + "=") and cls[len(name) + 1:].isdigit()):
                pinned.append((name, repr(v)))
    if not pinned:
        return static
    out = {k: v for k, v in static.items() if k not in dict(pinned)}
    out[_PINNED] = tuple(pinned)
    return out


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
            and not torch.jit.is_scripting() and _unwrapped(x) is x)


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
    gamma = out.get("gamma")
    # (a loss without gamma, as the Asymmetric Loss with its own exponents, has none)
    if not (gamma is None or _spec._is_real(gamma) or (isinstance(gamma, torch.Tensor) and
                                      gamma.device == x.device)):
        # a per-class gamma given as host data: a tensor input of the kernel, as alpha
        # (a number stays a symbolic float: see _RUNTIME_FLOATS)
        out["gamma"] = _spec._gamma(OPS, gamma, x)
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
                # of the caller then waits for a woken thread.
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
            # (the thread waits for this lock before it reads the queue)
            _worker.start(_WORKER, _compile_worker, "focalx-torch-compile", _stop_worker)
            _WORKER["stopping"] = False
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
    if spec_name in _spec.PLAIN_RUNS:  # (op by op: see _spec.PLAIN_RUNS)
        return getattr(_spec, spec_name)(OPS, x, targets, need_grad=need_grad, **params)
    if _fusable(x):
        prepared = _kernel_args(x, params)
        if prepared is not None:
            tensors, static = prepared
            kernel = _kernel_for(spec_name, static, tensors)
            args = (spec_name, x.detach(), targets.detach(), tensors,
                    _pin(spec_name, static), need_grad)
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
