"""Choose a backend from the array type, without importing any framework.

A framework is considered only when the user has already imported it (it is in
``sys.modules``), as einops and array-api-compat do. Results are cached by type.

Traceable by torch.compile(fullgraph=True) (dynamo): an adapter is loaded by an
``import`` statement, which dynamo runs while it traces (it refuses
``importlib.import_module``), so the first call may come inside a compiled function.
"""

from __future__ import annotations

import importlib
import numbers
import sys

import numpy as np

from .backends import REGISTRY

_NUMPY = "numpy"


_CACHE: dict = {}
_ADAPTERS: dict = {}  # backend name -> its adapter module, once loaded


def _framework_of_instance(x):
    for name, backend in REGISTRY.items():
        if backend.module not in sys.modules:
            continue
        for type_module, type_attr in backend.array_types:
            if type_module not in sys.modules:
                continue
            obj = sys.modules[type_module]
            for part in type_attr.split("."):
                obj = getattr(obj, part, None)
            # isinstance, not issubclass: jax's tracers are jax.Arrays by __instancecheck__
            if isinstance(obj, type) and isinstance(x, obj):
                return name
    if isinstance(x, (np.ndarray, np.generic, numbers.Number, list, tuple)):
        return _NUMPY
    return None


def framework_of(x) -> str | None:
    """The backend name for an array (``"numpy"`` for NumPy and Python values), or None.

    Cached by type; a type is looked up once its framework has been imported.
    """
    cls = type(x)
    name = _CACHE.get(cls)  # (no try/except: Paddle's to_static rewrites this code)
    if name is None:
        name = _framework_of_instance(x)
        if name is not None:
            _CACHE[cls] = name
    return name


def backend_for(logits, targets, **arrays):
    """The adapter module for a call; TypeError for unknown types or mixed frameworks.

    NumPy arrays and Python numbers / sequences are accepted for the
    hyperparameter arrays (alpha, weight, ...) of any backend; logits and
    targets must come from one framework.
    """
    fw = framework_of(logits)
    if fw is None:
        known = ", ".join(["numpy.ndarray"] + [f"{m}.{a}" for b in REGISTRY.values()
                                               for m, a in b.array_types])
        raise TypeError(f"logits of type {type(logits).__module__}.{type(logits).__name__} is "
                        f"not a supported array ({known})")
    named = {"targets": targets, **{k: v for k, v in arrays.items() if v is not None}}
    for name, value in named.items():
        other = framework_of(value)
        if other != fw and not (other == _NUMPY and name != "targets"):
            got = other or f"{type(value).__module__}.{type(value).__name__}"
            raise TypeError(f"{name} is a {got} array but logits is a {fw} array: "
                            "pass arrays of one framework")
    if fw == _NUMPY:
        from . import _numpy
        return _numpy
    adapter = _ADAPTERS.get(fw)
    if adapter is None:
        adapter = _load_adapter(fw)
        _ADAPTERS[fw] = adapter
    return adapter


def _load_adapter(fw):
    # import statements, not importlib.import_module (see the module docstring)
    if fw == "torch":
        from .backends import torch as adapter
    elif fw == "jax":
        from .backends import jax as adapter
    elif fw == "tensorflow":
        from .backends import tensorflow as adapter
    elif fw == "paddle":
        from .backends import paddle as adapter
    else:  # a backend added to REGISTRY without a line here
        adapter = importlib.import_module(REGISTRY[fw].adapter)
    return adapter
