"""Independent oracles for the tests: the definitions written straight out.

Nothing here calls focalx. ``naive_*`` are float64 NumPy in probability space
(accurate for moderate logits only); ``mp_*`` are mpmath at 50 digits, valid
for any logit. Gradients are taken by central differences (NumPy) or by
mpmath's numerical differentiation.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

mp.mp.dps = 50


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


# ---- mpmath, one element / one sample at a time -------------------------------------

def mp_sigmoid_focal(x, y, *, gamma, alpha=None, pos_weight=1):
    x, y = mp.mpf(x), mp.mpf(y)
    logp = -mp.log1p(mp.exp(-x))
    log1mp = -mp.log1p(mp.exp(x))
    p, q = mp.exp(logp), mp.exp(log1mp)
    bce = -(pos_weight * y * logp + (1 - y) * log1mp)
    m = y * q + (1 - y) * p  # 1 - p_t
    a = 1 if alpha is None else y * alpha + (1 - y) * (1 - alpha)
    return a * (m ** gamma if gamma else 1) * bce


def mp_sigmoid_focal_grad(x, y, **kw):
    return mp.diff(lambda v: mp_sigmoid_focal(v, y, **kw), mp.mpf(x))


def mp_softmax_focal(xs, target, *, gamma):
    xs = [mp.mpf(v) for v in xs]
    top = max(range(len(xs)), key=lambda j: xs[j])
    # log p_t = (x_t - x_max) - log1p(sum of exp(x_j - x_max) over j != argmax): no
    # rounding of log(1 + tiny) at any precision.
    rest = mp.fsum(mp.exp(xs[j] - xs[top]) for j in range(len(xs)) if j != top)
    lp = (xs[target] - xs[top]) - mp.log1p(rest)
    one_minus_p = -mp.expm1(lp)
    return (one_minus_p ** gamma if gamma else 1) * -lp


def mp_softmax_focal_grad(xs, target, *, gamma):
    out = []
    for j in range(len(xs)):
        def f(v, j=j):
            ys = list(xs)
            ys[j] = v
            return mp_softmax_focal(ys, target, gamma=gamma)
        out.append(mp.diff(f, mp.mpf(xs[j])))
    return out
