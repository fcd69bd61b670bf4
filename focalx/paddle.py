"""``focalx.paddle``: the Paddle backend.

Importing this module imports paddle. The implementation lives in
``focalx.backends.paddle``; this is its public name.
"""

from .backends.paddle import *  # noqa: F401,F403
from .backends.paddle import __all__  # noqa: F401
