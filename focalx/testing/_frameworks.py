"""The user's framework: found from the function (through focalx.backends.REGISTRY), its
arrays made from NumPy and read back, its autograd for the gradient w.r.t. the logits.

A framework is imported only when the function needs it; the conversion and autograd are
the conformance harnesses' (one per registry entry), so there is one such plumbing."""

from __future__ import annotations

import importlib
import sys
import threading

import numpy as np

from focalx.backends import REGISTRY

#: packages built on one framework, for functions that do not live in the framework itself
BUILT_ON = {"torchvision": "torch", "kornia": "torch", "monai": "torch",
            "segmentation_models_pytorch": "torch", "mmdet": "torch", "fvcore": "torch",
            "detectron2": "torch", "timm": "torch", "ultralytics": "torch", "optax": "jax",
            "flax": "jax", "paddledet": "paddle", "ppdet": "paddle"}
FRAMEWORKS = ("numpy",) + tuple(REGISTRY)


def _root(name) -> str:
    return (name or "").split(".")[0]


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def keras_framework() -> str:
    """The framework Keras runs on (its KERAS_BACKEND), as a registry name."""
    import keras
    return {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(
        keras.config.backend(), "numpy")


def detect(fn) -> str:
    """The framework whose arrays `fn` takes: the registry backend its module is (or is
    built on, or imports), else the one registry framework already imported, else NumPy."""
    target = getattr(fn, "__wrapped__", fn)
    module = getattr(target, "__module__", None) or type(target).__module__
    root = _root(module)
    if root == "keras" or root == "tf_keras":
        return keras_framework()
    modules = {b.module: b.name for b in REGISTRY.values()}
    if root in modules:
        return modules[root]
    if root in BUILT_ON:
        return BUILT_ON[root]
    mod = sys.modules.get(module or "")
    if mod is not None:  # what the function's module imported
        seen = {modules[_root(getattr(v, "__name__", ""))] for v in vars(mod).values()
                if type(v).__name__ == "module" and _root(getattr(v, "__name__", "")) in modules}
        if len(seen) == 1:
            return seen.pop()
        if "keras" in {_root(getattr(v, "__name__", "")) for v in vars(mod).values()
                       if type(v).__name__ == "module"}:
            return keras_framework()
    code = getattr(target, "__code__", None)  # a wrapper importing its framework inside
    names = {_root(n) for n in getattr(code, "co_names", ())}
    # modules it reaches through its globals and closure (``import torch as T``; a closure)
    glb = getattr(target, "__globals__", {})
    cells = [c.cell_contents for c in (getattr(target, "__closure__", None) or ())
             if _filled(c)]
    for v in [glb.get(n) for n in getattr(code, "co_names", ())] + cells:
        if type(v).__name__ == "module":
            names.add(_root(v.__name__))
    named = {modules[n] for n in names if n in modules} | {BUILT_ON[n] for n in names
                                                           if n in BUILT_ON}
    if len(named) == 1:
        return named.pop()
    if "keras" in names:
        return keras_framework()
    loaded = [b.name for b in REGISTRY.values() if b.module in sys.modules]
    return loaded[0] if len(loaded) == 1 else "numpy"


class Runner:
    """One framework's plumbing: arrays from NumPy, one call with its gradient."""

    def __init__(self, framework: str):
        if framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
        from focalx.conformance import _harness
        if importlib.util.find_spec(_harness.HARNESSES[framework][0]) is None:
            raise ValueError(f"framework {framework!r} is not installed")
        self.name = framework
        self.harness = _harness.create(framework)

    def array(self, a: np.ndarray, dtype: str):
        a = np.asarray(a)
        index = a.dtype.kind in "iub"
        return self.harness.to_array(a.ravel().tolist(), a.shape, index=index,
                                     dtype="int64" if index else dtype)

    def evaluate(self, call, x: np.ndarray, y: np.ndarray, dtype: str):
        """(loss as float64 NumPy with its shape, gradient w.r.t. x as float64 NumPy of
        x's shape, or None without autograd)."""
        xs, ys = self.array(x, dtype), self.array(y, dtype)
        loss, grad, shape, _ = self.harness.evaluate(lambda a, b: call(a, b), xs, ys, {})
        loss = np.asarray(loss, np.float64).reshape(shape)
        if grad is not None:
            grad = np.asarray(grad, np.float64).reshape(x.shape)
        return loss, grad


class TimedOut(Exception):
    pass


def run_with_limit(thunk, seconds: float | None):
    """thunk()'s value, or TimedOut after `seconds` (the call goes on in a daemon thread,
    abandoned: Python cannot stop a thread)."""
    if seconds is None:
        return thunk()
    box = {}

    def target():
        try:
            box["value"] = thunk()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
    t = threading.Thread(target=target, daemon=True, name="focalx-compare-case")
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TimedOut(f"no result within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
