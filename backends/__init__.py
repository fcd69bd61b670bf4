"""focalx backends, installed as ``focalx.backends`` (see pyproject's package-dir).

This module imports no framework. :data:`REGISTRY` names, for each backend, the
module whose presence in ``sys.modules`` makes it a candidate, the array type
(module, attribute path) that selects it, and the adapter module to load.
"""

#: name -> (framework module, (type module, type attribute), adapter module)
REGISTRY = {
    "torch": ("torch", ("torch", "Tensor"), "focalx.backends.torch"),
    "jax": ("jax", ("jax", "Array"), "focalx.backends.jax"),
}
