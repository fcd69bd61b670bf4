"""The independent oracle: focalx's definitions evaluated in mpmath at 50 digits.

Written straight from the formulas in docs/definitions.md and ``focalx/_spec.py``'s
docstring, element by element, with no call into focalx. Gradients are
mpmath's numerical derivatives (``mp.diff``) of the reduced loss, so they are
independent of focalx's closed forms too. Only the golden-file generator
(``conformance/generate.py``) imports this module, and it needs mpmath.

Identities used for accuracy at any logit (each exact, none an approximation):
log sigmoid(x) = -log1p(exp(-x)); 1 - sigmoid(x) = sigmoid(-x);
log softmax(x)_c = (x_c - x_max) - log1p(sum_{j != argmax} exp(x_j - x_max));
1 - p = -expm1(log p).
"""

from __future__ import annotations

import math
import mpmath as mp

DPS = 50


def _prod(shape):
    return math.prod(shape) if shape else 1


def _index(shape, flat):
    out = []
    for n in reversed(shape):
        out.append(flat % n)
        flat //= n
    return tuple(reversed(out))


def _flat(shape, idx):
    f = 0
    for n, i in zip(shape, idx):
        f = f * n + i
    return f


def _bcast(values, shape, target_shape):
    """Element of a (flattened, row-major) array `values` of `shape` at each target index."""
    if values is None:
        return None
    if not isinstance(values, list):
        return lambda idx: values
    shape = tuple(shape)
    off = len(target_shape) - len(shape)

    def get(idx):
        sub = tuple(0 if n == 1 else i for n, i in zip(shape, idx[off:]))
        return values[_flat(shape, sub)]
    return get


def _flatten(v):
    """A number or nested list -> (flat list of mpf, shape); None -> (None, ())."""
    if v is None:
        return None, ()
    if not isinstance(v, list):
        return mp.mpf(v), ()
    shape, level = [], v
    while isinstance(level, list):
        shape.append(len(level))
        level = level[0] if level else None
    flat = []

    def walk(a):
        if isinstance(a, list):
            for b in a:
                walk(b)
        else:
            flat.append(mp.mpf(a))
    walk(v)
    return flat, tuple(shape)


def _param(kw, name, target_shape):
    flat, shape = _flatten(kw.get(name))
    return None if flat is None else _bcast(flat, shape, target_shape)


def _mpf_list(v):
    return _flatten(v)[0]


# ---- elementwise definitions ---------------------------------------------------------

def _sigmoid_elem(x, y, gamma, alpha, pw, from_logits, epsilon=0):
    """-alpha_t (1-p_t)^gamma [pw y log p + (1-y) log(1-p)] + alpha_t eps (1-p_t)^(gamma+1)
    (the second term: Poly-1, Leng et al. 2022, eq. for Poly-1 focal loss,
    arXiv 2204.12511)."""
    if from_logits:
        logp, logq = -mp.log1p(mp.exp(-x)), -mp.log1p(mp.exp(x))
        p, q = mp.exp(logp), mp.exp(logq)
    else:
        p, q = x, 1 - x
        logp = mp.log(p) if p > 0 else mp.ninf
        logq = mp.log1p(-p) if q > 0 else mp.ninf  # (1 - p rounds at 50 digits)
    # 0 * log 0 = 0 (the limit), as in any cross-entropy; a zero pos_weight too.
    pos = 0 if y == 0 or pw == 0 else pw * y * logp
    neg = 0 if y == 1 else (1 - y) * logq
    bce = -(pos + neg)
    m = y * q + (1 - y) * p  # 1 - p_t
    a = 1 if alpha is None else y * alpha + (1 - y) * (1 - alpha)
    return a * (m ** gamma if gamma != 0 else 1) * bce + a * epsilon * m ** (gamma + 1)


def _star_elem(x, y, gamma, beta, alpha):
    z = gamma * x * (2 * y - 1) + beta
    a = 1 if alpha is None else y * alpha + (1 - y) * (1 - alpha)
    return a * mp.log1p(mp.exp(-z)) / gamma


def _asl_elem(x, y, gamma_pos, gamma_neg, clip):
    """Asymmetric Loss (Ridnik et al., ICCV 2021, arXiv 2009.14119, eqs. for L+ and L-):
    -[y (1-p)^gamma+ log p + (1-y) p_m^gamma- log(1 - p_m)], p_m = max(p - clip, 0).
    1 - p is sigmoid(-x) (exact identity), so 1 - p_m = min(sigmoid(-x) + clip, 1)."""
    p, q = 1 / (1 + mp.exp(-x)), 1 / (1 + mp.exp(x))
    pm = max(p - clip, mp.mpf(0))
    one_minus_pm = min(q + clip, mp.mpf(1))
    pos = 0 if y == 0 else y * (q ** gamma_pos if gamma_pos != 0 else 1) * mp.log(p)
    neg = 0 if y == 1 or pm == 0 else \
        (1 - y) * (pm ** gamma_neg if gamma_neg != 0 else 1) * mp.log(one_minus_pm)
    return -(pos + neg)


def _asl_single_sample(xs, y, q, gamma_pos, gamma_neg):
    """The ASL repository's single-label form, from its definition: -sum_c q_c w_c log p_c
    with w_y = (1-p_y)^gamma_pos for the target y and w_c = p_c^gamma_neg elsewhere."""
    lps = _log_softmax(xs)
    total = mp.mpf(0)
    for c, (lp, qc) in enumerate(zip(lps, q)):
        if qc == 0:
            continue
        if c == y:
            omp = -mp.expm1(lp)
            w = omp ** gamma_pos if gamma_pos != 0 else 1
        else:
            w = mp.exp(gamma_neg * lp)
        total += qc * w * -lp
    return total


def _sample_grads(xs, samples, scale):
    """Each logit's derivative of its sample's loss (times the reduction's scale), by
    numerical differentiation; samples: (cells, f) with f(values of cells) the sample's
    loss, or f None (an ignored sample: 0)."""
    grads = [mp.mpf(0)] * len(xs)
    for cells, f in samples:
        if f is None:
            continue
        for j, cell in enumerate(cells):
            def g(v, j=j, cells=cells, f=f):
                vals = [xs[i] for i in cells]
                vals[j] = v
                return f(vals)
            grads[cell] = scale * _diff(g, xs[cell])
    return grads


def asymmetric_softmax(logits, shape, targets, tshape, kw):
    """Loss (flattened output) and gradient of the summed output w.r.t. each logit."""
    with mp.workdps(DPS):
        shape = tuple(shape)
        axis = kw["axis"] % len(shape)
        C = shape[axis]
        other = shape[:axis] + shape[axis + 1:]
        xs = [mp.mpf(v) for v in logits]
        e = mp.mpf(kw.get("label_smoothing", 0.1))
        gp, gn = mp.mpf(kw["gamma_pos"]), mp.mpf(kw["gamma_neg"])
        ignore = kw.get("ignore_index", -100)
        samples, denom = [], 0
        for s in range(_prod(other)):
            s_idx = _index(other, s)
            cells = [_flat(shape, s_idx[:axis] + (c,) + s_idx[axis:]) for c in range(C)]
            y = int(targets[s])
            if ignore is not None and y == ignore:
                samples.append((cells, None))
                continue
            denom += 1
            q = [(1 - e) * (1 if c == y else 0) + e / C for c in range(C)]
            samples.append((cells, lambda vals, y=y, q=q: _asl_single_sample(vals, y, q, gp, gn)))
        values = [mp.mpf(0) if f is None else f([xs[i] for i in cells]) for cells, f in samples]
        out, scale = _reduce(values, kw.get("reduction", "mean"), denom, kw.get("normalizer"))
        return out, _sample_grads(xs, samples, scale), scale


def _log_softmax(xs):
    top = max(range(len(xs)), key=lambda j: xs[j])
    rest = mp.fsum(mp.exp(xs[j] - xs[top]) for j in range(len(xs)) if j != top)
    return [(v - xs[top]) - mp.log1p(rest) for v in xs]


def _softmax_sample(xs, q, k, gamma, from_logits, only=None, epsilon=0):
    """-sum_c k_c q_c (1-p_c)^gamma_c log p_c over one sample's classes (or class `only`'s
    term), plus Poly-1's sum_c k_c q_c epsilon (1-p_c)^(gamma_c+1); gamma is a list of
    gamma_c (one per class)."""
    if from_logits:
        lps = _log_softmax(xs)
        omps = [-mp.expm1(lp) for lp in lps]
    else:
        lps = [mp.log(p) if p > 0 else mp.ninf for p in xs]
        omps = [1 - p for p in xs]
    total = mp.mpf(0)
    for c, (lp, omp, qc, kc, gc) in enumerate(zip(lps, omps, q, k, gamma)):
        if qc == 0 or kc == 0 or (only is not None and c != only):
            continue
        total += kc * qc * (omp ** gc if gc != 0 else 1) * -lp
        if epsilon != 0:
            total += kc * qc * epsilon * omp ** (gc + 1)
    return total


# ---- whole functions ---------------------------------------------------------------

def _reduce(values, reduction, denom, normalizer):
    """(output list, scale applied to the summed element losses)."""
    scale = mp.mpf(1)
    if reduction == "mean":
        scale = mp.mpf(0) if denom == 0 else 1 / mp.mpf(denom)
    if normalizer is not None:
        scale = scale / mp.mpf(normalizer)
    if reduction == "none":
        return [v * scale for v in values], scale
    return [mp.fsum(values) * scale], scale


def _diff(f, x, lo=None, hi=None):
    """d f / d x; one-sided at the ends of a closed domain [lo, hi]. The step is relative
    to x for an x within 1e-30 of lo (a fixed step would cross it) and for |x| > 1e30
    (a fixed step would be lost in x's 50 digits)."""
    if (lo is not None and x == lo) or (hi is not None and x == hi):
        # One-sided, where a focal factor (1-p)^gamma makes the function as rough as
        # h^gamma: steps of 1e-300 at 400 digits keep that error below 1e-70.
        with mp.workdps(400):
            return +mp.diff(f, x, direction=1 if x == lo else -1, h=mp.mpf(10) ** -300)
    if lo is not None and x - lo < mp.mpf("1e-30"):
        return mp.diff(f, x, h=(x - lo) * mp.mpf("1e-15"))
    if abs(x) > mp.mpf("1e30"):
        return mp.diff(f, x, h=abs(x) * mp.mpf("1e-15"))
    return mp.diff(f, x)


def sigmoid(logits, shape, targets, tshape, kw, *, star=False, asl=False):
    """Loss (flattened output) and gradient of the summed output w.r.t. each logit."""
    with mp.workdps(DPS):
        shape = tuple(shape)
        n = _prod(shape)
        xs = [mp.mpf(v) for v in logits]
        ty = _bcast([mp.mpf(v) for v in targets], tshape, shape)
        alpha_at = _param(kw, "alpha", shape)
        pw_at = _param(kw, "pos_weight", shape)
        w_at = _param(kw, "weight", shape)
        ignore = kw.get("ignore_index")
        e = mp.mpf(kw.get("label_smoothing", 0))
        gamma = mp.mpf(kw["gamma"]) if star else None
        # (a per-element gamma broadcasts to the logits as alpha does)
        gamma_at = None if star or asl else _param(kw, "gamma", shape)
        from_logits = kw.get("from_logits", True)
        eps = mp.mpf(kw.get("epsilon", 0))

        elem_fns, count = [], 0
        for i in range(n):
            idx = _index(shape, i)
            y = ty(idx)
            if ignore is not None and y == ignore:
                elem_fns.append(None)
                continue
            count += 1
            y = y * (1 - e) + e / 2
            a = None if alpha_at is None else alpha_at(idx)
            w = 1 if w_at is None else w_at(idx)
            if w == 0 or (a is not None and (y * a + (1 - y) * (1 - a)) == 0):
                # a zero coefficient contributes exactly 0, even where the
                # cross-entropy of a probability input is infinite
                elem_fns.append(lambda v: mp.mpf(0))
                continue
            if asl:
                gp, gn, clip = (mp.mpf(kw[k]) for k in ("gamma_pos", "gamma_neg", "clip"))
                elem_fns.append(lambda v, y=y, w=w, gp=gp, gn=gn, clip=clip:
                                w * _asl_elem(v, y, gp, gn, clip))
            elif star:
                beta = mp.mpf(kw["beta"])
                elem_fns.append(lambda v, y=y, a=a, w=w: w * _star_elem(v, y, gamma, beta, a))
            else:
                pw = 1 if pw_at is None else pw_at(idx)
                g = gamma_at(idx)
                elem_fns.append(lambda v, y=y, a=a, w=w, pw=pw, g=g:
                                w * _sigmoid_elem(v, y, g, a, pw, from_logits, eps))
        values = [mp.mpf(0) if f is None else f(x) for f, x in zip(elem_fns, xs)]
        out, scale = _reduce(values, kw["reduction"], count, kw.get("normalizer"))
        grads = []
        for f, x in zip(elem_fns, xs):
            if f is None:
                grads.append(mp.mpf(0))
            elif not mp.isfinite(f(x)):
                grads.append(None)  # an infinite loss has no gradient to compare
            elif from_logits:
                grads.append(scale * _diff(f, x))
            else:
                grads.append(scale * _diff(f, x, 0, 1))
        return out, grads, scale


def softmax(logits, shape, targets, tshape, kw):
    """Loss (flattened output) and gradient of the summed output w.r.t. each logit."""
    with mp.workdps(DPS):
        shape = tuple(shape)
        axis = kw["axis"] % len(shape)
        C = shape[axis]
        other = shape[:axis] + shape[axis + 1:]
        xs = [mp.mpf(v) for v in logits]
        probs = tuple(tshape) == shape
        e = mp.mpf(kw.get("label_smoothing", 0))
        gamma = _mpf_list(kw["gamma"])  # a number, or one per class
        weight = _mpf_list(kw.get("weight"))
        alpha = _mpf_list(kw.get("alpha"))
        ignore = kw["ignore_index"]
        from_logits = kw.get("from_logits", True)
        eps = mp.mpf(kw.get("epsilon", 0))
        k = [mp.mpf(1)] * C
        if weight is not None:
            k = [a * b for a, b in zip(k, weight)]
        if alpha is not None:
            k = [a * (alpha[c] if isinstance(alpha, list) else alpha) for c, a in enumerate(k)]
        gamma = gamma if isinstance(gamma, list) else [gamma] * C

        def flat_at(s_idx, c):
            return _flat(shape, s_idx[:axis] + (c,) + s_idx[axis:])

        samples, denom = [], mp.mpf(0)
        for s in range(_prod(other)):
            s_idx = _index(other, s)
            cells = [flat_at(s_idx, c) for c in range(C)]
            if probs:
                q = [mp.mpf(targets[i]) for i in cells]
                denom += 1
            else:
                y = int(targets[s])
                if ignore is not None and y == ignore:
                    samples.append((cells, None))
                    continue
                q = [mp.mpf(1 if c == y else 0) for c in range(C)]
                denom += 1 if weight is None else weight[y]
            q = [v * (1 - e) + e / C for v in q]
            samples.append((cells, lambda vals, only=None, q=q: _softmax_sample(
                vals, q, k, gamma, from_logits, only, eps)))
        values = [mp.mpf(0) if f is None else f([xs[i] for i in cells]) for cells, f in samples]
        out, scale = _reduce(values, kw.get("reduction", "mean"), denom, kw.get("normalizer"))
        grads = [mp.mpf(0)] * len(xs)
        for (cells, f), value in zip(samples, values):
            if f is None:
                continue
            for j, cell in enumerate(cells):
                if not mp.isfinite(value):
                    grads[cell] = None
                    continue

                def g(v, j=j, cells=cells, f=f):
                    vals = [xs[i] for i in cells]
                    vals[j] = v
                    # probabilities: only class j's own term moves (and the others' sum
                    # could swamp its change at 50 digits)
                    return f(vals, None if from_logits else j)
                lo_hi = (None, None) if from_logits else (0, 1)
                grads[cell] = scale * _diff(g, xs[cell], *lo_hi)
        return out, grads, scale


# ---- Generalized Focal Loss (Li et al., arXiv 2006.04388) and Varifocal Loss (Zhang et
# al., arXiv 2008.13367), from the papers' formulas --------------------------------------

def _bce_logit(x, y):
    """-[y log sigma(x) + (1-y) log(1 - sigma(x))], 0 log 0 = 0."""
    logp, logq = -mp.log1p(mp.exp(-x)), -mp.log1p(mp.exp(x))
    pos = 0 if y == 0 else y * logp
    neg = 0 if y == 1 else (1 - y) * logq
    return -(pos + neg)


def _qfl_elem(x, y, beta):
    """QFL (paper eq. 5 in its BCE form): -|y - sigma|^beta ((1-y) log(1-sigma) + y log sigma)."""
    p, q = 1 / (1 + mp.exp(-x)), 1 / (1 + mp.exp(x))  # sigma(x), 1 - sigma(x)
    d = abs(y * q - (1 - y) * p)  # |y - sigma(x)|, without 1 - sigma cancelling
    return (d ** beta if beta != 0 else 1) * _bce_logit(x, y)


def _vfl_elem(x, q, alpha, gamma, iou_weighted):
    """VFL (paper eq. 2): -q (q log p + (1-q) log(1-p)) for q > 0; -alpha p^gamma log(1-p)
    for q = 0 (with the weight 1 for positives when not iou_weighted)."""
    if q > 0:
        return (q if iou_weighted else 1) * _bce_logit(x, q)
    p = 1 / (1 + mp.exp(-x))
    return alpha * (p ** gamma if gamma != 0 else 1) * _bce_logit(x, 0)


def quality(fn, logits, shape, targets, tshape, kw, labels=None):
    """QFL or VFL: loss (flattened output) and the gradient of the summed output."""
    with mp.workdps(DPS):
        shape = tuple(shape)
        n = _prod(shape)
        xs = [mp.mpf(v) for v in logits]
        if labels is not None:  # the detection pair: the score at the label's class
            C = shape[-1]

            def ty(idx):
                lab = labels[_flat(tuple(tshape), idx[:-1])]
                return mp.mpf(targets[_flat(tuple(tshape), idx[:-1])]) \
                    if 0 <= lab < C and lab == idx[-1] else mp.mpf(0)
        else:
            ty = _bcast([mp.mpf(v) for v in targets], tshape, shape)
        w_at = _param(kw, "weight", shape)
        fns = []
        for i in range(n):
            idx = _index(shape, i)
            y = ty(idx)
            w = 1 if w_at is None else w_at(idx)
            if fn == "quality_focal_loss":
                fns.append(lambda v, y=y, w=w: w * _qfl_elem(v, y, mp.mpf(kw["beta"])))
            else:
                fns.append(lambda v, y=y, w=w: w * _vfl_elem(
                    v, y, mp.mpf(kw["alpha"]), mp.mpf(kw["gamma"]), kw["iou_weighted"]))
        values = [f(x) for f, x in zip(fns, xs)]
        out, scale = _reduce(values, kw["reduction"], n, kw.get("normalizer"))
        return out, [scale * _diff(f, x) for f, x in zip(fns, xs)], scale


def distribution(logits, shape, targets, tshape, kw):
    """DFL (paper eq. 6): -((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1}) per sample, with
    y_i = floor(y), y_{i+1} = y_i + 1, the softmax S over the n + 1 bins; at y == n (no
    bin above) -log S_n."""
    with mp.workdps(DPS):
        shape = tuple(shape)
        axis = kw["axis"] % len(shape)
        C = shape[axis]
        n_bins = C - 1
        other = shape[:axis] + shape[axis + 1:]
        xs = [mp.mpf(v) for v in logits]
        w_at = _param(kw, "weight", other)
        ignore = kw.get("ignore_index")
        samples, count = [], 0
        for s in range(_prod(other)):
            s_idx = _index(other, s)
            cells = [_flat(shape, s_idx[:axis] + (c,) + s_idx[axis:]) for c in range(C)]
            y = mp.mpf(targets[s])
            if ignore is not None and y == ignore:
                samples.append((cells, None))
                continue
            count += 1
            w = 1 if w_at is None else w_at(s_idx)

            def f(vals, y=y, w=w):
                lps = _log_softmax(vals)
                lo = int(mp.floor(y))
                if lo == n_bins:
                    return -w * lps[n_bins]
                return -w * ((lo + 1 - y) * lps[lo] + (y - lo) * lps[lo + 1])
            samples.append((cells, f))
        values = [mp.mpf(0) if f is None else f([xs[i] for i in cells]) for cells, f in samples]
        out, scale = _reduce(values, kw["reduction"], count, kw.get("normalizer"))
        return out, _sample_grads(xs, samples, scale), scale


# ---- the softmax focal loss of a linear layer's output (issue 19) ----------------------

def linear(packed, layout, targets, kw):
    """The softmax focal loss of x = h W^T + b (the logits formed at 50 digits from the
    packed hidden (N, H), weight (V, H), bias (V,)); gradients w.r.t. h, W and b by the
    chain rule from the numerical derivative of each row's loss w.r.t. its logits:
    dh_ik = sum_c dL/dx_ic W_ck, dW_ck = sum_i dL/dx_ic h_ik, db_c = sum_i dL/dx_ic.
    Returned packed as the inputs are."""
    with mp.workdps(DPS):
        N, H = layout["hidden_shape"]
        V = layout["weight_shape"][0]
        vals = [mp.mpf(v) for v in packed]
        h = [vals[i * H:(i + 1) * H] for i in range(N)]
        W = [vals[N * H + c * H:N * H + (c + 1) * H] for c in range(V)]
        b = vals[N * H + V * H:] if layout["bias"] else [mp.mpf(0)] * V
        logits = [[mp.fsum(h[i][k] * W[c][k] for k in range(H)) + b[c] for c in range(V)]
                  for i in range(N)]
        # the softmax focal loss of these logits, as softmax() computes it (class axis 1)
        flat = [v for row in logits for v in row]
        kw = dict(kw, axis=1)
        out, g, scale = softmax(flat, (N, V), targets, (N,), kw)
        g = [[g[i * V + c] for c in range(V)] for i in range(N)]
        dh = [mp.fsum(g[i][c] * W[c][k] for c in range(V)) for i in range(N) for k in range(H)]
        dW = [mp.fsum(g[i][c] * h[i][k] for i in range(N)) for c in range(V) for k in range(H)]
        db = [mp.fsum(g[i][c] for i in range(N)) for c in range(V)] if layout["bias"] else []
        return out, dh + dW + db, scale


# The documented defaults (docs/definitions.md, the parameter table), applied to what a case leaves out.
DEFAULTS = {
    "sigmoid_focal_loss": {"gamma": 2.0, "alpha": 0.25, "reduction": "mean"},
    "sigmoid_focal_loss_star": {"gamma": 1.0, "beta": 0.0, "alpha": None, "reduction": "mean"},
    "softmax_focal_loss": {"gamma": 2.0, "alpha": None, "ignore_index": -100,
                           "reduction": "mean"},
    "quality_focal_loss": {"beta": 2.0, "reduction": "mean"},
    "varifocal_loss": {"alpha": 0.75, "gamma": 2.0, "iou_weighted": True, "reduction": "mean"},
    "distribution_focal_loss": {"ignore_index": None, "reduction": "mean"},
    "asymmetric_loss": {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, "reduction": "mean"},
    "asymmetric_softmax_loss": {"gamma_pos": 0.0, "gamma_neg": 4.0, "ignore_index": -100,
                                "label_smoothing": 0.1, "reduction": "mean"},
    "linear_softmax_focal_loss": {"gamma": 2.0, "alpha": None, "ignore_index": -100,
                                  "reduction": "mean"},
}


def evaluate(case):
    """(loss list, grad list with None for unchecked entries, scale) for one case."""
    fn = case["fn"]
    kwargs = {**DEFAULTS[fn], **case["kwargs"]}
    args = (case["logits"], case["shape"], case["targets"], case["targets_shape"], kwargs)
    if fn == "sigmoid_focal_loss":
        return sigmoid(*args)
    if fn == "sigmoid_focal_loss_star":
        return sigmoid(*args, star=True)
    if fn == "softmax_focal_loss":
        return softmax(*args)
    if fn in ("quality_focal_loss", "varifocal_loss"):
        return quality(fn, *args, labels=case.get("labels"))
    if fn == "distribution_focal_loss":
        return distribution(*args)
    if fn == "asymmetric_loss":
        return sigmoid(*args, asl=True)
    if fn == "asymmetric_softmax_loss":
        return asymmetric_softmax(*args)
    if fn == "linear_softmax_focal_loss":
        return linear(case["logits"], case["linear"], case["targets"], kwargs)
    raise ValueError(f"unknown fn {fn!r}")


__all__ = ["evaluate", "DPS"]
