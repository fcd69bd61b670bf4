"""Parity checks for anyone's focal loss: :func:`compare` runs focalx's golden cases
through a function in its own framework (torch, JAX, TensorFlow/Keras, Paddle or NumPy)
and classifies each disagreement with the spec (alpha's meaning, the mean's divisor, soft
targets, NaN gradients, a capped log, ...) by probing which convention the function
follows; :func:`assert_matches` is the same for a test suite; ``focalx compare
MODULE:FUNCTION`` the same from the command line. :mod:`focalx.testing.peers` holds the
mappings of the libraries the project documents.

Importing this package imports no framework.
"""

from __future__ import annotations

from ._compare import KINDS, QUICK, CaseResult, Report, assert_matches, compare
from ._signature import Signature, Unsupported

__all__ = ["KINDS", "QUICK", "CaseResult", "Report", "Signature", "Unsupported",
           "assert_matches", "compare"]
