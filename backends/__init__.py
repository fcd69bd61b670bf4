"""focalx backends, installed as ``focalx.backends`` (see pyproject's package-dir).

This module imports no framework. :data:`REGISTRY` names, for each backend, the
module whose presence in ``sys.modules`` makes it a candidate, the array types
(module, attribute path) that select it, and the adapter module to load.
"""

#: name -> (framework module, ((type module, type attribute), ...), adapter module)
REGISTRY = {
    "torch": ("torch", (("torch", "Tensor"),), "focalx.backends.torch"),
    "jax": ("jax", (("jax", "Array"),), "focalx.backends.jax"),
    # tf.Tensor covers eager and graph (tf.function) tensors; variables are not Tensors
    "tensorflow": ("tensorflow", (("tensorflow", "Tensor"), ("tensorflow", "Variable")),
                   "focalx.backends.tensorflow"),
    # pir.Value: a symbolic tensor under paddle.jit.to_static(full_graph=True)
    "paddle": ("paddle", (("paddle", "Tensor"), ("paddle", "pir.Value")),
               "focalx.backends.paddle"),
}
