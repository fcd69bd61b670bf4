"""Independent oracles for the tests: the definitions written straight out.

Nothing here calls focalx. ``naive_*`` are float64 NumPy in probability space
(accurate for moderate logits only), gradients by central differences. The mpmath
oracle, valid for any logit, is the conformance suite's (focalx/conformance/oracle.py).
"""

from __future__ import annotations

import numpy as np


def naive_sigmoid_focal(x, y, *, gamma=2.0, alpha=0.25, pos_weight=None, weight=None):
    """Elementwise sigmoid focal loss from the definition (torchvision's formula + pos_weight)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, np.float64)
    bce = -(pw * y * np.log(p) + (1 - y) * np.log(1 - p))
    p_t = y * p + (1 - y) * (1 - p)
    loss = bce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = loss * (y * alpha + (1 - y) * (1 - np.asarray(alpha)))
    if weight is not None:
        loss = loss * weight
    return loss


def naive_softmax_focal(x, q, *, gamma=2.0, classweight=None, axis=-1):
    """Per-sample softmax focal loss against a target distribution q (x's shape)."""
    x, q = np.asarray(x, np.float64), np.asarray(q, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    p = e / e.sum(axis=axis, keepdims=True)
    k = 1.0
    if classweight is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        k = np.reshape(classweight, shape)
    return -(k * q * (1 - p) ** gamma * np.log(p)).sum(axis=axis)


def naive_focal_star(x, y, *, gamma=1.0, beta=0.0):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    z = gamma * x * (2 * y - 1) + beta
    return np.log1p(np.exp(-z)) / gamma


def central_diff(f, x, eps=1e-6):
    """d sum(f(x)) / dx by central differences, elementwise."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (np.sum(f(x + d)) - np.sum(f(x - d))) / (2 * eps)
    return g
