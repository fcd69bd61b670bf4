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

import numbers
import os
import threading
import types
import warnings

import numpy as np
import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake as _is_fake

from .. import _spec
from . import _kept as kept
from ._kept import KeptCopies

__all__ = [
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "sigmoid_focal_loss_star",
    "FocalLoss",
    "SigmoidFocalLoss",
    "SigmoidFocalLossStar",
    "global_normalizer",
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

    #: The spec's lean sigmoid evaluation (one exp, one log, one division per element):
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
    def sum(a, axis=None, keepdims=False):
        if axis is None and a.dtype == torch.float32:
            # A fused float32 reduction accumulates in a few long sequential chains (3e-6
            # relative error on a 1M-element mean, measured, where torch.sum gives 3e-8);
            # accumulating in float64 inside the kernel costs nothing measurable.
            return torch.sum(a, dtype=torch.float64).to(a.dtype)
        return TorchOps.sum(a, axis=axis, keepdims=keepdims)


def _fused_kernel(spec_name, x, targets, tensors, static, need_grad):
    ops = _RecordingOps()
    out, grad = getattr(_spec, spec_name)(ops, x, targets, need_grad=need_grad, **tensors,
                                          **static)
    ok = torch.stack(ops.unchecked).all() if ops.unchecked else None
    return out, grad, ok


#: FOCALX_TORCH_COMPILE=0 turns the fused path off; FOCALX_TORCH_COMPILE_MIN_NUMEL sets the
#: smallest logits (in elements) that take it. "compile" is torch.compile (tests replace it).
#: Once compiled, the kernel's fwd+bwd was faster at every size measured, 1K to 256K
#: elements (sigmoid loss at 16K: 188 against 420 us op by op; at 64K: 264 against 2216 us,
#: where every op's fresh 256 KiB result page-faults). Below 16K elements a call takes
#: 0.1-0.4 ms either way, and the first call's compilation (seconds) would dominate a
#: small job, so those run op by op.
_FUSED = {"enabled": os.environ.get("FOCALX_TORCH_COMPILE", "1") != "0",
          "min_numel": int(os.environ.get("FOCALX_TORCH_COMPILE_MIN_NUMEL", 2 ** 14)),
          "compile": None, "calls": 0}
_KERNELS: dict = {}  # (function, static arguments) -> compiled kernel, or _EAGER
_MAX_KERNELS = 64
_EAGER = "eager"  # a configuration the compiler cannot take: it runs op by op
_KERNELS_LOCK = threading.Lock()


def _kernel_for(spec_name, static):
    """The compiled kernel for one function and one set of static arguments.

    Each gets a copy of _fused_kernel's code object, so that each has its own compile
    cache (torch.compile caches per code object, up to a small recompile limit): the
    kernels of different losses and hyperparameters do not crowd each other out.
    """
    key = (spec_name, repr(sorted(static.items())))
    with _KERNELS_LOCK:
        kernel = _KERNELS.get(key)
        if kernel is None:
            fn = types.FunctionType(_fused_kernel.__code__.replace(),
                                    _fused_kernel.__globals__, "_fused_kernel")
            # fx_graph_cache off: with it, torch 2.13 handed the gamma=0.25 kernel's code
            # to a gamma=0.5 call for some elements (a wrong loss, reproduced in the tests)
            kernel = (_FUSED["compile"] or torch.compile)(
                fn, fullgraph=True, options={"fx_graph_cache": False})
            if len(_KERNELS) >= _MAX_KERNELS:
                _KERNELS.pop(next(iter(_KERNELS)))
            _KERNELS[key] = kernel
    return key, kernel


def _fusable(x) -> bool:
    return (_FUSED["enabled"] and x.numel() >= _FUSED["min_numel"]
            and x.device.type in ("cpu", "cuda") and not _symbolic(x)
            and not torch.jit.is_scripting())


def _compiler_failed(exc) -> bool:
    """The compiler itself failed (no C++ compiler, a broken toolchain), as opposed to
    a configuration it cannot trace or one recompiled too often."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"BackendCompilerFailed", "InductorError", "CppCompileError"})


def _disable_fused(exc):
    _FUSED["enabled"] = False
    warnings.warn(f"focalx: torch.compile cannot compile here ({type(exc).__name__}: {exc}); "
                  "focalx.torch falls back to eager kernels (set FOCALX_TORCH_COMPILE=0 to "
                  "silence this)", RuntimeWarning, stacklevel=5)


def _host_value(v):
    """NumPy scalars and 0-d arrays as Python numbers (the compiler traces those)."""
    if isinstance(v, np.generic) or (isinstance(v, np.ndarray) and v.ndim == 0):
        return v.item()
    return v


def _device_params(args, x):
    """For a kernel off the CPU: hyperparameters given as host data (sequences, NumPy
    arrays, CPU tensors; numbers for pos_weight and weight) checked here, as the spec
    does, and moved to x's device without a per-call copy (_to_device), to be passed to
    the kernel as tensors: the kernel then neither bakes them in nor copies them per
    call. A CPU tensor normalizer likewise. Raises the spec's TypeError / ValueError."""
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


def _call(spec_name, x, targets, need_grad, params):
    """The spec's `spec_name` on x: through one compiled (fused) kernel for large eager
    calls, else op by op. Both compute the same formulas; the eager run also raises
    the precise ValueError when the kernel reports a failed value check."""
    spec_fn = getattr(_spec, spec_name)
    if _fusable(x):
        args = {k: _host_value(v) for k, v in params.items()}
        if _off_host(x):
            try:
                args = _device_params(args, x)
            except (TypeError, ValueError):
                # a bad argument: the spec raises its own first error
                return spec_fn(OPS, x, targets, need_grad=need_grad, **params)
        norm = args.get("normalizer")
        if isinstance(norm, numbers.Real) and not isinstance(norm, bool) and norm > 0:
            # a run-time input, not a compile-time constant: a normalizer that changes
            # every step (the number of positives) must not compile a kernel every step.
            # (torch.full: a fill on the device; torch.tensor would copy from the host,
            # which off the CPU waits for the device.)
            args["normalizer"] = torch.full((), float(norm), dtype=x.dtype, device=x.device)
        tensors = {k: v for k, v in args.items() if isinstance(v, torch.Tensor)}
        static = {k: v for k, v in args.items() if k not in tensors}
        key, kernel = _kernel_for(spec_name, static)
        if kernel is not _EAGER:
            try:
                out, grad, ok = kernel(spec_name, x, targets, tensors, static, need_grad)
            except Exception as exc:  # noqa: BLE001
                # Bad arguments: the eager run raises the spec's own error. Otherwise the
                # compiler failed: for good (no C++ compiler, ...), or for this
                # configuration only (one it cannot trace, or recompiled too often).
                result = spec_fn(OPS, x, targets, need_grad=need_grad, **params)
                if _compiler_failed(exc):
                    _disable_fused(exc)
                elif type(exc).__name__ != "FailOnRecompileLimitHit":
                    with _KERNELS_LOCK:
                        _KERNELS[key] = _EAGER
                return result
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
    return spec_fn(OPS, x, targets, need_grad=need_grad, **params)


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


def sigmoid_focal_loss(logits, targets, *, gamma=2.0, alpha=0.25, pos_weight=None,
                       weight=None, ignore_index=None, label_smoothing=0.0, reduction="mean",
                       normalizer=None, from_logits=True):
    """Sigmoid focal loss on torch tensors. See :func:`focalx.sigmoid_focal_loss`."""
    _check_tensors(logits, targets)
    return _apply(logits, "run_sigmoid_focal_loss", targets, dict(
        gamma=gamma, alpha=alpha, pos_weight=pos_weight, weight=weight,
        ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
        normalizer=normalizer, from_logits=from_logits), None)


def sigmoid_focal_loss_star(logits, targets, *, gamma=1.0, beta=0.0, alpha=None, weight=None,
                            ignore_index=None, label_smoothing=0.0, reduction="mean",
                            normalizer=None):
    """FL* on torch tensors. See :func:`focalx.sigmoid_focal_loss_star`."""
    _check_tensors(logits, targets)
    return _apply(logits, "run_sigmoid_focal_loss_star", targets, dict(
        gamma=gamma, beta=beta, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, normalizer=normalizer), None)


def softmax_focal_loss(logits, targets, *, gamma=2.0, alpha=None, weight=None,
                       ignore_index=-100, label_smoothing=0.0, reduction="mean",
                       normalizer=None, axis=1, from_logits=True):
    """Softmax focal loss on torch tensors, class axis 1 by default (as F.cross_entropy).

    See :func:`focalx.softmax_focal_loss`. 1-D logits ``(C,)`` take a 0-d target.
    """
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
