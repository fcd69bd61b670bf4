"""TorchOps: the spec's Ops on torch tensors (CPU and CUDA, eager and traced)."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch._subclasses.fake_tensor import is_fake as _is_fake

from ... import _spec
from .. import _kept as kept
from .._kept import KeptCopies


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


def _unwrapped(a: torch.Tensor) -> torch.Tensor:
    """The plain tensor inside torch.func's wrappers (vmap's batched tensors, grad's)."""
    if torch.compiler.is_dynamo_compiling():  # (dynamo cannot trace the functorch query)
        return a
    try:
        ft = torch._C._functorch
        while ft.is_functorch_wrapped_tensor(a):
            a = ft.get_unwrapped(a)
    except (AttributeError, RuntimeError, TypeError):
        pass
    return a


def _checkable(a: torch.Tensor) -> bool:
    return a.device.type == "cpu" and not _symbolic(a) and a.numel() > 0


class TorchOps:
    """:class:`focalx._spec.Ops` for torch."""

    #: The spec's lean sigmoid evaluation (one exp, one log1p, one division per element):
    #: the faster form for the fused kernel and under a user's torch.compile, which fuse
    #: its extra passes.
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
        if _unwrapped(a) is not a:  # (vmap batches the out-of-place scatter, not scatter_)
            return torch.scatter(a, axis, index, values)
        return a.scatter_(axis, index, values)  # `a` is a fresh temporary of the spec's

    @staticmethod
    def one_hot(index, num_classes, axis, like):
        shape = list(index.shape)
        shape[axis] = num_classes
        out = torch.zeros(shape, dtype=like.dtype, device=like.device)
        if _unwrapped(index) is not index:  # (see scatter)
            return out.scatter(axis, index, 1.0)
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
        # Under torch.func's vmap (or grad) a tensor wraps its values: the whole batch's
        # are read, as the check of an unbatched call would read them (.item() of a
        # batched tensor fails).
        a = _unwrapped(a)
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

    @staticmethod
    def matmul(a, b, transpose_a, transpose_b):
        return torch.matmul(a.mT if transpose_a else a, b.mT if transpose_b else b)

    @staticmethod
    def concat(arrays, axis):
        return torch.cat(arrays, dim=axis)

    @staticmethod
    def add_matmul(c, a, b, transpose_a, transpose_b):
        if c is None:
            return TorchOps.matmul(a, b, transpose_a, transpose_b)
        return c.addmm_(a.mT if transpose_a else a, b.mT if transpose_b else b)

    @staticmethod
    def kept_rows(keep):
        # (on the CPU only: elsewhere the count of rows is a host sync)
        if keep.device.type != "cpu" or _symbolic(keep):
            return None
        return torch.nonzero(keep).squeeze(1)

    @staticmethod
    def take_rows(a, index):
        return a.index_select(0, index)

    @staticmethod
    def put_rows(a, index, num_rows):
        out = a.new_zeros((num_rows,) + tuple(a.shape[1:]))
        return out.index_copy_(0, index, a)


OPS = TorchOps()
