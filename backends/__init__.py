"""focalx backends, installed as ``focalx.backends`` (see pyproject's package-dir).

This module imports no framework. :data:`REGISTRY` is the one list of backends:
dispatch, ``focalx check``, ``focalx bench``, the fuzz reproducers, the test suite's
backend discovery and CI's required-backend list all read it. Adding a framework is
a :class:`Backend` entry here, its adapter module, its conformance harness and bench
builder (named below by "module:attribute", imported only in that backend's worker),
and its extra in pyproject.toml.
"""

from __future__ import annotations

from typing import NamedTuple


class Backend(NamedTuple):
    """One framework's entry (every field is a name: nothing here imports it)."""

    #: the backend's name: ``--backend`` values, FOCALX_REQUIRE_BACKENDS, pyproject extra
    name: str
    #: the module whose presence in ``sys.modules`` makes the backend a dispatch candidate
    module: str
    #: (type module, attribute path) of each array type that selects the backend
    array_types: tuple[tuple[str, str], ...]
    #: the adapter module (functions, Modules/Layers)
    adapter: str
    #: the public module(s) users import; the first is the one checked and benchmarked
    public: tuple[str, ...]
    #: distributions that provide the framework (the first installed gives its version)
    distributions: tuple[str, ...]
    #: further distributions whose versions the bench header reports (peers it times)
    companions: tuple[str, ...]
    #: "module:class" of the conformance harness
    harness: str
    #: "module:function" building the backend's bench groups
    bench: str
    #: the module whose public functions' signatures are generated (focalx/_signatures.py),
    #: and the array type's annotation in them
    functions: str
    array_annotation: str
    #: the softmax loss's default class axis: the framework's cross-entropy's, and why
    class_axis: int
    class_axis_doc: str
    #: "module:class" of each Ops implementation the backend runs the spec with
    ops: tuple[str, ...]


#: name -> Backend, in the order reports list them
REGISTRY: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "torch", (("torch", "Tensor"),), "focalx.backends.torch",
            ("focalx.torch",), ("torch",), (),
            "focalx.conformance._harness:TorchHarness", "focalx.bench._torch:groups",
            "focalx.backends.torch.functional", "torch.Tensor", 1,
            "1 by default, as ``F.cross_entropy`` (1-D logits ``(C,)`` take a 0-d target)",
            ("focalx.backends.torch.ops:TorchOps", "focalx.backends.torch.eager:_EagerOps",
             "focalx.backends.torch.linear:_LinearEagerOps")),
    Backend("jax", "jax", (("jax", "Array"),), "focalx.backends.jax",
            ("focalx.jax",), ("jax",), ("jaxlib", "optax"),
            "focalx.conformance._harness:JaxHarness", "focalx.bench._jax:groups",
            "focalx.backends.jax.functional", "jax.Array", -1, "-1 by default, as optax",
            ("focalx.backends.jax.ops:JaxOps", "focalx.backends.jax.linear:_BlockOps")),
    # tf.Tensor covers eager and graph (tf.function) tensors; variables are not Tensors;
    # Keras 3's variables (keras.Variable on TensorFlow) subclass tf.Tensor's base class
    Backend("tensorflow", "tensorflow", (("tensorflow", "Tensor"), ("tensorflow", "Variable"),
                                         ("tensorflow.python.types.core", "Tensor")),
            "focalx.backends.tensorflow", ("focalx.tensorflow", "focalx.keras"),
            ("tensorflow-cpu", "tensorflow"), ("keras",),
            "focalx.conformance._harness:TensorflowHarness",
            "focalx.bench._tensorflow:groups",
            "focalx.backends.tensorflow.functional", "tf.Tensor", -1, "-1 by default, as Keras",
            ("focalx.backends.tensorflow.ops:TensorflowOps",
             "focalx.backends.tensorflow.linear:_LinearOps")),
    # pir.Value: a symbolic tensor under paddle.jit.to_static(full_graph=True)
    Backend("paddle", "paddle", (("paddle", "Tensor"), ("paddle", "pir.Value")),
            "focalx.backends.paddle", ("focalx.paddle",), ("paddlepaddle", "paddlepaddle-gpu"),
            (), "focalx.conformance._harness:PaddleHarness", "focalx.bench._paddle:groups",
            "focalx.backends.paddle.functional", "paddle.Tensor", -1,
            "-1 by default, as Paddle's ``cross_entropy``",
            ("focalx.backends.paddle.ops:PaddleOps", "focalx.backends.paddle.host:HostOps",
             "focalx.backends.paddle.linear:_BlockOps")),
)}


def load(path: str):
    """The object a "module:attribute" path names (importing its module)."""
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def installed_version(backend: Backend) -> str | None:
    """The framework's installed version, found without importing it; None if absent."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(backend.module) is None:
        return None
    for dist in backend.distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return "?"
