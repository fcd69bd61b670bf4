"""``focalx.jax``: the JAX backend (functions for jax arrays; jit/grad/vmap-ready).

Importing this module imports jax. The implementation lives in
``focalx.backends.jax``; this is its public name.
"""

from .backends.jax import *  # noqa: F401,F403
from .backends.jax import __all__  # noqa: F401
