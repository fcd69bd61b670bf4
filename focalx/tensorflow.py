"""``focalx.tensorflow``: the Tensorflow backend.

Importing this module imports tensorflow. The implementation lives in
``focalx.backends.tensorflow``; this is its public name.
"""

from .backends.tensorflow import *  # noqa: F401,F403
from .backends.tensorflow import __all__  # noqa: F401
