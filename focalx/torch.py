"""``focalx.torch``: the PyTorch backend (functions and nn.Module drop-ins).

Importing this module imports torch. The implementation lives in
``focalx.backends.torch``; this is its public name.
"""

from .backends.torch import *  # noqa: F401,F403
from .backends.torch import __all__  # noqa: F401
