"""Small helpers for choosing focal-loss hyperparameters. NumPy / Python only."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["prior_bias", "pos_weight_from_counts", "alpha_from_counts"]


def _real(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    return float(v)


def prior_bias(pi: float = 0.01) -> float:
    r"""Initial bias of the final classification layer so that sigmoid(bias) = ``pi``.

    .. math:: b = -\log\frac{1 - \pi}{\pi}

    RetinaNet (Lin et al., 2017, section 4.1) initialises every anchor's
    foreground probability to :math:`\pi = 0.01` this way, which keeps the
    many easy negatives from swamping the loss at the start of training.
    ``prior_bias(0.01)`` is about -4.595.
    """
    pi = _real("pi", pi)
    if not 0.0 < pi < 1.0:
        raise ValueError(f"pi must be in (0, 1), got {pi!r}")
    return -math.log((1.0 - pi) / pi)


def _counts(name, v, *, positive):
    if isinstance(v, bool):
        raise TypeError(f"{name} must be a number or an array of counts, got bool")
    arr = np.asarray(v)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be numeric, got {arr.dtype} dtype")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or (positive and np.any(arr == 0)):
        cond = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {cond}, got {v!r}")
    return arr


def pos_weight_from_counts(num_pos, num_neg):
    """``pos_weight = num_neg / num_pos``, per class when given arrays.

    With this ``pos_weight`` the positives of each class weigh as much in total
    as its negatives (torch's BCEWithLogitsLoss recipe): 100 positives and 300
    negatives give 3.0. Returns a float for scalars, a float64 array otherwise.
    """
    pos = _counts("num_pos", num_pos, positive=True)
    neg = _counts("num_neg", num_neg, positive=False)
    if pos.shape != neg.shape and pos.ndim and neg.ndim:
        raise ValueError(f"num_pos of shape {pos.shape} and num_neg of shape {neg.shape} "
                         "must have the same shape (or one be a scalar)")
    out = neg / pos
    return float(out) if out.ndim == 0 else out


def alpha_from_counts(counts, method: str = "inverse", beta: float = 0.999):
    r"""Per-class ``alpha`` from class counts, scaled so that the rarest class gets 1.

    - ``"inverse"``: :math:`\alpha_c \propto 1 / n_c`.
    - ``"effective_number"`` (Cui et al., 2019): :math:`\alpha_c \propto (1-\beta) / (1-\beta^{n_c})`,
      the inverse of the effective number of samples; ``beta`` in [0, 1).
      ``beta=0`` weighs every class equally; ``beta -> 1`` approaches ``"inverse"``.

    focalx's ``alpha`` lies in [0, 1], so the weights are divided by their
    maximum. Cui et al. instead scale them to sum to C; multiply by
    ``C / result.sum()`` and pass them as ``weight`` to get that scale.
    Returns a float64 array of the counts' length.
    """
    n = _counts("counts", counts, positive=True)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array of class counts, got shape "
                         f"{n.shape}")
    if not isinstance(method, str) or method not in ("inverse", "effective_number"):
        raise ValueError(f"method must be 'inverse' or 'effective_number', got {method!r}")
    if method == "inverse":
        w = 1.0 / n
    else:
        beta = _real("beta", beta)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        # (1 - beta) / (1 - beta**n), computed without cancellation.
        if beta == 0:
            w = np.ones_like(n)
        else:
            w = (1.0 - beta) / -np.expm1(n * math.log(beta))
    return w / w.max()
