"""Per-backend plumbing for the conformance runner: arrays in, (loss, grad) out.

A harness imports its framework when created, so the runner creates only the
one it was asked for (each backend runs in its own process).
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np

#: backend name -> (module that must be importable, harness class name)
HARNESSES = {
    "numpy": ("numpy", "NumpyHarness"),
    "torch": ("torch", "TorchHarness"),
    "jax": ("jax", "JaxHarness"),
    "tensorflow": ("tensorflow", "TensorflowHarness"),
    "paddle": ("paddle", "PaddleHarness"),
}


def available(name: str) -> tuple[bool, str]:
    """(installed?, why not) without importing the framework."""
    module = HARNESSES[name][0]
    if importlib.util.find_spec(module) is None:
        return False, f"{module} is not installed"
    return True, ""


def create(name: str):
    return globals()[HARNESSES[name][1]]()


class UnsupportedCase(Exception):
    """Raised by an argument adapter for a case the checked function cannot express."""


class NumpyHarness:
    """The float64 NumPy reference (it computes in float64 whatever it is given)."""

    name = "numpy"

    def __init__(self):
        from focalx import _numpy
        self.ref = _numpy
        self.version = np.__version__

    def devices(self):
        return ["cpu"]

    def dtypes(self, device):
        return ["float64"]

    def default_fn(self, variant):
        return getattr(self.ref, variant + "_and_grad")

    def result_dtype(self, dtype):
        return "float64"  # the reference computes and returns float64

    def to_array(self, values, shape, *, index=False, device="cpu", dtype="float64"):
        if index:
            dtype = "int64"
        return np.asarray(values, dtype=np.float64 if dtype not in ("int64", "bool")
                          else dtype).reshape(shape)

    def evaluate(self, fn, x, y, kwargs, *, own=False):
        """(loss values, gradient values or None, loss shape, loss dtype name)."""
        if own:
            loss, grad = fn(x, y, **kwargs)
            grad = np.asarray(grad, np.float64).ravel()
        else:  # a user's NumPy function: no autograd, so the gradient is not checked
            loss, grad = fn(x, y, **kwargs), None
        loss = np.asarray(loss)
        return loss.astype(np.float64).ravel(), grad, loss.shape, loss.dtype.name

    def call_public(self, variant, x, y, kwargs):
        import focalx
        return getattr(focalx, variant)(x, y, **kwargs)


class TorchHarness:
    name = "torch"

    def __init__(self):
        import torch
        import focalx.torch as ft
        self.torch, self.ft = torch, ft
        self.version = torch.__version__

    def devices(self):
        return ["cpu"] + (["cuda"] if self.torch.cuda.is_available() else [])

    def dtypes(self, device):
        return ["float64", "float32", "bfloat16", "float16"]

    def default_fn(self, variant):
        return getattr(self.ft, variant)

    def result_dtype(self, dtype):
        return dtype  # the spec: results in the logits' dtype

    def to_array(self, values, shape, *, index=False, device="cpu", dtype="float64"):
        torch = self.torch
        if index:
            dtype = "int64"
        t = torch.as_tensor(np.asarray(values, dtype=np.float64 if dtype not in ("int64", "bool")
                                       else dtype))
        return t.reshape(tuple(shape)).to(device=device, dtype=getattr(torch, dtype))

    def evaluate(self, fn, x, y, kwargs, *, own=False):
        torch = self.torch
        x = x.detach().requires_grad_(True)
        loss = fn(x, y, **kwargs)
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), x)
        else:
            grad = torch.zeros_like(x)
        return (loss.detach().double().cpu().numpy().ravel(),
                grad.double().cpu().numpy().ravel(), tuple(loss.shape),
                str(loss.dtype).replace("torch.", ""))

    def call_public(self, variant, x, y, kwargs):
        return getattr(self.ft, variant)(x, y, **kwargs)


class JaxHarness:
    """jax with float64 enabled (``jax_enable_x64``; the worker is its own process)."""

    name = "jax"

    def __init__(self):
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        import focalx.jax as fj
        self.jax, self.jnp, self.fj = jax, jnp, fj
        self.version = jax.__version__

    def devices(self):
        out = ["cpu"]
        try:
            if self.jax.devices("gpu"):
                out.append("gpu")
        except RuntimeError:  # no GPU backend
            pass
        return out

    def dtypes(self, device):
        return ["float64", "float32", "bfloat16", "float16"]

    def default_fn(self, variant):
        return getattr(self.fj, variant)

    def result_dtype(self, dtype):
        return dtype

    def to_array(self, values, shape, *, index=False, device="cpu", dtype="float64"):
        if index:
            dtype = "int64"
        a = np.asarray(values, dtype=np.float64 if dtype not in ("int64", "bool") else dtype)
        a = self.jnp.asarray(a.reshape(shape), dtype=getattr(self.jnp, dtype))
        return self.jax.device_put(a, self.jax.devices(device)[0])

    def evaluate(self, fn, x, y, kwargs, *, own=False):
        jax = self.jax
        loss, vjp = jax.vjp(lambda v: fn(v, y, **kwargs), x)
        (grad,) = vjp(self.jnp.ones_like(loss))
        return (np.asarray(loss, dtype=np.float64).ravel(),
                np.asarray(grad, dtype=np.float64).ravel(), tuple(loss.shape), loss.dtype.name)

    def call_public(self, variant, x, y, kwargs):
        return getattr(self.fj, variant)(x, y, **kwargs)


# ---- tensorflow ----------------------------------------------------------


class TensorflowHarness:
    name = "tensorflow"

    def __init__(self):
        import tensorflow as tf
        import focalx.tensorflow as ftf
        self.tf, self.ftf = tf, ftf
        self.version = tf.__version__

    def devices(self):
        return ["cpu"] + (["gpu"] if self.tf.config.list_logical_devices("GPU") else [])

    def dtypes(self, device):
        return ["float64", "float32", "bfloat16", "float16"]

    def default_fn(self, variant):
        return getattr(self.ftf, variant)

    def result_dtype(self, dtype):
        return dtype

    def to_array(self, values, shape, *, index=False, device="cpu", dtype="float64"):
        tf = self.tf
        if index:
            dtype = "int64"
        a = np.asarray(values, dtype=np.float64 if dtype not in ("int64", "bool") else dtype)
        with tf.device(device.upper() + ":0"):
            return tf.cast(tf.constant(a.reshape(shape)), getattr(tf, dtype))

    def evaluate(self, fn, x, y, kwargs, *, own=False):
        tf = self.tf
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = fn(x, y, **kwargs)
        grad = tape.gradient(loss, x)
        if grad is None:
            grad = tf.zeros_like(x)
        return (np.asarray(tf.cast(loss, tf.float64)).ravel(),
                np.asarray(tf.cast(grad, tf.float64)).ravel(), tuple(loss.shape),
                loss.dtype.name)

    def call_public(self, variant, x, y, kwargs):
        return getattr(self.ftf, variant)(x, y, **kwargs)


# ---- paddle --------------------------------------------------------------

class PaddleHarness:
    """Paddle in dygraph mode; float16/bfloat16 compute in float32 (no CPU kernels)."""

    name = "paddle"

    def __init__(self):
        import paddle
        import focalx.paddle as fpd
        self.paddle, self.fpd = paddle, fpd
        self.version = paddle.__version__

    def devices(self):
        paddle = self.paddle
        gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
        return ["cpu"] + (["gpu"] if gpu else [])

    def dtypes(self, device):
        return ["float64", "float32", "bfloat16", "float16"]

    def default_fn(self, variant):
        return getattr(self.fpd, variant)

    def result_dtype(self, dtype):
        return dtype

    def to_array(self, values, shape, *, index=False, device="cpu", dtype="float64"):
        paddle = self.paddle
        if index:
            dtype = "int64"
        a = np.asarray(values, dtype=np.float64 if dtype not in ("int64", "bool") else dtype)
        place = paddle.CPUPlace() if device == "cpu" else paddle.CUDAPlace(0)
        if dtype in ("float32", "float16"):  # NumPy rounds (Paddle's float16 cast does not
            a = a.astype(dtype)               # round values far below float16's range)
        t = paddle.to_tensor(a.reshape(tuple(shape)), place=place)
        # bfloat16 has no NumPy dtype: cast from float64 in paddle
        return t.astype("bfloat16") if dtype == "bfloat16" else t

    def evaluate(self, fn, x, y, kwargs, *, own=False):
        paddle = self.paddle
        x = x.detach()
        x.stop_gradient = False
        loss = fn(x, y, **kwargs)
        if loss.stop_gradient:
            grad = paddle.zeros_like(x)
        else:
            (grad,) = paddle.grad(loss, x, grad_outputs=paddle.ones_like(loss))
        return (loss.detach().astype("float64").cpu().numpy().ravel(),
                grad.astype("float64").cpu().numpy().ravel(), tuple(loss.shape),
                str(loss.dtype).replace("paddle.", ""))

    def call_public(self, variant, x, y, kwargs):
        return getattr(self.fpd, variant)(x, y, **kwargs)
