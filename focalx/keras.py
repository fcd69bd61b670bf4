"""``focalx.keras``: Keras 3 loss classes (and the fused head layer) built on focalx.

Importing this module imports keras (and so its backend framework). The
implementation lives in ``focalx.backends.keras``; this is its public name.
"""

from .backends.keras import *  # noqa: F401,F403
from .backends.keras import __all__  # noqa: F401
