r"""The focalx specification: every formula, parameter rule and check, in one place.

Nothing here imports a framework (NumPy only). Formulas are written once against a small
*ops* namespace (see :class:`Ops`); the float64 NumPy reference
(:mod:`focalx._numpy`) and every backend (:mod:`focalx.backends`) bind it to
their own array library. A backend adds plumbing (dtypes, devices, autograd),
never its own math.

Definitions
-----------
Sigmoid focal loss (binary / multi-label), per element, with logit :math:`x`,
target :math:`y \in [0, 1]` (after label smoothing :math:`y \leftarrow
y(1-\varepsilon) + \varepsilon/2`), :math:`p = \sigma(x)`:

.. math::

    p_t &= y p + (1-y)(1-p), \qquad \alpha_t = y\alpha + (1-y)(1-\alpha) \\
    \mathrm{BCE} &= -\left[w_+ \, y \log p + (1-y) \log(1-p)\right] \\
    \mathrm{FL} &= w \, \alpha_t \, (1-p_t)^\gamma \, \mathrm{BCE}

with ``alpha=None`` meaning :math:`\alpha_t = 1`, :math:`w_+` the ``pos_weight``
and :math:`w` the elementwise ``weight``.

Softmax focal loss (multi-class), per sample, with :math:`p = \mathrm{softmax}(x)`
on the class axis and target distribution :math:`q` (one-hot for class indices,
then smoothed as :math:`(1-\varepsilon) q + \varepsilon / C`):

.. math::

    \mathrm{FL} = -\sum_c w_c \, \alpha_c \, q_c \, (1-p_c)^\gamma \log p_c

FL* (Lin et al., appendix A), per element, with :math:`x_t = x(2y-1)`:

.. math::

    \mathrm{FL}^* = -\log\sigma(\gamma x_t + \beta) / \gamma

Poly-1 (Leng et al., ``epsilon`` of the sigmoid and softmax losses) adds
:math:`\epsilon\,(1-p_t)^{\gamma+1}` per element (sigmoid) or
:math:`\epsilon \sum_c w_c \alpha_c q_c (1-p_c)^{\gamma+1}` per sample (softmax), weighted
as the focal term (see _poly_sigmoid). Asymmetric Loss (Ridnik et al.), per element, with
:math:`p_m = \max(p - m, 0)` for the margin :math:`m` (``clip``):

.. math::

    \mathrm{ASL} = -w \left[ y (1-p)^{\gamma_+} \log p
        + (1-y)\, p_m^{\gamma_-} \log(1-p_m) \right]

Numerics
--------
:math:`\log p` and :math:`\log(1-p)` come from softplus / log-softmax, and
:math:`1-p_t` is never formed as the difference ``1 - p_t``: for the sigmoid it
is :math:`y(1-p) + (1-y)p` with both terms accurate (exactly :math:`1-p` or
:math:`p` for hard targets): exps of log-sigmoids, or in the lean evaluation
(:func:`_sigmoid_parts`, for backends whose compilers run it faster)
:math:`1/(1+e)` and :math:`e/(1+e)` with :math:`e = \exp(-|x|)`; for the softmax
:math:`-\mathrm{expm1}(\log p_c)`. The focal factor is
:math:`(1-p_t)^\gamma`, by repeated multiplication for integer
:math:`\gamma \le 4`. The gradient with respect to the logits is closed-form
and written so that no :math:`(1-p_t)^{\gamma-1}` ever appears on its own:
the ratios that multiply it are bounded by 1, so it is finite for every finite
logit and every :math:`\gamma \ge 0`, and at saturation it is its true limit.

Per-class gamma: ``gamma`` may be an array (:func:`_gamma`): broadcast to the logits for
the sigmoid loss (:math:`\gamma_{ic}` per element, e.g. per class), a vector on the
class axis for the softmax loss (class c's term takes :math:`(1-p_c)^{\gamma_c}`; with
class indices each sample takes its target's). The formulas and gradients are the same
with :math:`\gamma` elementwise (the gradient's focal term is
:math:`\gamma\,(1-2y)\,r\,\mathrm{FL}`, with r <= 1, so a class at
:math:`\gamma_c = 0` or < 1 stays finite at saturation); the focal factor of an array
gamma is one power whatever its values (:func:`_focal_factor_array`), where a Python
number picks its form (repeated products for integers up to 4). A 0-d array gamma takes
the same path: a compiler may trace it (a gamma schedule), where it specialises on a
number.

References
----------
Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection",
ICCV 2017, https://arxiv.org/abs/1708.02002.
Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective Number
of Samples", CVPR 2019, https://arxiv.org/abs/1901.05555.
Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
Functions", ICLR 2022, https://arxiv.org/abs/2204.12511.
Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021,
https://arxiv.org/abs/2009.14119.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Literal, Optional, Protocol, Sequence

import numpy as np

from . import _signatures

__all__ = [
    "REDUCTIONS",
    "DEFAULTS",
    "Ops",
    "OptionalOps",
]

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")

#: The defaults of every public function, identical in every backend (only ``axis`` of
#: the softmax loss follows the framework's convention): see focalx/_signatures.py.
DEFAULTS: dict[str, dict[str, Any]] = _signatures.DEFAULTS

# Integer gammas up to this are applied by repeated multiplication.
_MAX_INT_GAMMA = 4


class Ops(Protocol):
    """What a backend provides to the spec: math on its arrays, and plumbing.

    Math functions take and return arrays of one floating dtype (scalars are
    Python floats). ``where`` must not propagate NaN from the branch it does
    not select. Reductions keep dims when ``keepdims`` is true.
    """

    # math used by the formulas
    def exp(self, a): ...
    def expm1(self, a): ...
    def log(self, a): ...
    def log1p(self, a): ...
    def maximum0(self, a): ...            # max(a, 0)
    def minimum0(self, a): ...            # min(a, 0)
    def abs(self, a): ...
    def where(self, cond, a, b): ...
    def full_like(self, a, value): ...
    def sum(self, a, axis=None, keepdims=False): ...
    def log_softmax(self, a, axis): ...
    def take(self, a, index, axis): ...   # take_along_axis, index has a size-1 axis
    def scatter(self, a, index, values, axis): ...  # a with values put at index (may reuse a)
    def one_hot(self, index, num_classes, axis, like): ...  # float one-hot, class axis at `axis`
    def matmul(self, a, b, transpose_a, transpose_b): ...  # 2-D a @ b, either transposed
    #                                       first (the linear loss's logits and gradients)
    def concat(self, arrays, axis): ...   # arrays joined along `axis` (a non-empty list)

    # plumbing used by the run_* functions
    def shape(self, a) -> tuple: ...      # static shape; None for a size unknown until run
    #                                       time (a graph traced with an unknown batch size)
    def count(self, a): ...               # a's number of elements, a 0-d array of a's dtype
    #                                       (used only where shape(a) has a None)
    def kind(self, a) -> str: ...         # "floating" | "integer" | "bool" | other
    def asarray(self, v, name, like): ...  # numbers, sequences, own arrays -> like's dtype/device;
    #                                       TypeError naming `name` for anything else
    def as_float(self, a, like): ...      # cast to like's dtype
    def as_index(self, a): ...            # cast to int64
    def as_mask(self, keep, like): ...    # bool -> like's dtype
    def tracing(self) -> bool: ...        # inside a compiler's trace (values are symbolic)
    def assert_values(self, a, cond, message): ...  # all(cond(a)) else fail: a device-side
    #                                       or traced assert where values cannot be read;
    #                                       cond is an interval test (true on [lo, hi],
    #                                       false on NaN), so a backend may test a's min/max
    def concrete_range(self, a): ...      # (lo, hi), or None where values cannot be read
    #                                       without a host sync (traced, accelerator) or a is empty
    def broadcast_like(self, a, like): ...  # a broadcast to like's (run-time) shape
    def expand_dims(self, a, axis): ...
    def squeeze(self, a, axis): ...
    def class_view(self, v, ndim, axis): ...  # v reshaped to broadcast along `axis`
    def gather_classes(self, v, idx): ...  # v[idx] for a class vector v and an index array


class OptionalOps(Protocol):
    """What a backend may add to :class:`Ops`: the spec reads each with ``getattr`` /
    ``hasattr`` and, where it is absent, does what its docstring calls the default."""

    #: False (default): log-sigmoids from one exp and one log1p, and p, 1-p as their exps.
    #: True: the lean evaluation (one exp, one log1p, one division; see _sigmoid_parts),
    #: for compilers where it is faster.
    lean_sigmoid: bool

    def fork(self, values):
        """The same values, which a compiler must not merge with the originals (an
        optimization barrier). The lean sigmoid loss then computes its gradient from
        forked copies, sharing only the exp with the loss (for compilers that write out
        every shared intermediate). None or absent: no fork."""

    def checked_sum(self, loss):
        """The sum of the per-element loss, as ``sum(loss)``; a backend may fold value
        checks it still holds into it (NaN where one fails) instead of reducing each
        check on its own. Absent: ``sum``."""

    def pow(self, a, gamma):
        """``a ** gamma`` for a Python float gamma (the focal factor). Absent: the
        array's own ``**``."""

    def ratio(self, a, b):
        """``a / b`` (see _ratio): for a backend that differentiates the closed-form
        gradient again, a division whose derivative stays finite where ``b**2``
        underflows. Absent: ``a / b``."""

    def softmax_parts(self, lp):
        """(e, total) or None: for ``lp`` an output of this Ops' log_softmax, the
        ``exp(x - max)`` and its sum along the class axis that it computed on the way;
        the softmax is then ``e / total`` (see _softmax). None, or absent: the softmax
        is ``exp(lp)``."""

    def log_softmax_at(self, x, index, axis):
        """(lp_y, p) or None: the log-softmax of x at ``index`` (class indices with a
        size-1 class axis, as ``take``) and the softmax p, from one fused evaluation (a
        framework's softmax cross-entropy kernel), where the backend has one as accurate
        as log_softmax for these logits. None, or absent: ``take(log_softmax(x))`` and
        the softmax from its log."""

    def mul_owned(self, a, b):
        """``a * b`` for ``a`` the softmax that this Ops' log_softmax_at returned, which
        the spec reads no more after this product: the backend may write the product
        into a's memory. Absent: ``a * b``."""

    def add_result(self, a, b):
        """``a + b``, the last sum of the sigmoid loss's gradient; the backend may write
        it into memory of its own (its rows of a whole gradient). Absent: ``a + b``."""

    def add_matmul(self, c, a, b, transpose_a, transpose_b):
        """``c + matmul(a, b, transpose_a, transpose_b)`` for c an accumulator of the
        spec's own (the linear loss's weight gradient, summed over blocks of rows): None
        for the first term (then the product alone), else what add_matmul returned
        before. The backend may write the sum into c's memory (an allocation of V x H
        fewer per block) and may keep it in a form of its own (a layout, parts), which
        ``matmul_sum`` turns into the array; not where it has scan_blocks, whose loop
        carries the accumulator as an array. Absent: ``c + matmul(...)``."""

    def matmul_sum(self, c):
        """The array that add_matmul's accumulator c stands for. Absent: c itself."""

    def kept_rows(self, keep):
        """The positions of the true values of the bool vector `keep` (an index array),
        where reading them costs no host sync (a CPU array outside a trace); None
        elsewhere. With take_rows and put_rows: the linear loss then runs its blocks on
        the rows not ignored only. Absent: every row is computed (ignored ones add 0)."""

    def take_rows(self, a, index):
        """``a[index]`` for an index array from kept_rows."""

    def put_rows(self, a, index, num_rows):
        """An array of num_rows rows (a's other axes), zero but for rows ``index``, which
        hold a's rows."""

    def one_at_zero(self, m):
        """``where(m <= 0, m + 1, m)`` for m >= 0 or NaN, with the same bits (for such
        m, m + 0 is m except at -0, which the select takes: a backend may add the
        comparison as 0/1 to m). Absent: the select."""

    def scan_blocks(self, step, carry, xs, rows, ys_like):
        """``step(carry, *blocks) -> (carry, ys)`` run on the consecutive blocks of
        ``rows`` rows of the arrays ``xs`` (each None, or with a leading axis a multiple
        of rows), in order: the last carry, and each of ys's blocks joined along axis 0
        (None stays None). carry (arrays or None) keeps its shapes and dtypes; ys_like
        is a block's ys (their shapes and dtypes). For a compiler, its loop (lax.scan,
        tf.while_loop): the program then holds one block at a time, where the blocks of
        a Python loop are one graph whose blocks' temporaries may all be live at once.
        None (declined) or absent: a Python loop."""

    def pad_rows(self, arrays, rows):
        """For arrays whose number of rows is unknown until run time (a graph's None
        batch): (padded, unpad), each array (None stays None) with zero rows added up to a
        multiple of ``rows``, and ``unpad(a)`` a's first rows, as many as the arrays had.
        The linear loss then runs its blocks (scan_blocks) on the padded rows, the padding
        weighted 0. None, or absent: all rows are one block."""

    def loss_block(self, fn, logits, targets, scale, params):
        """``fn(ops, logits, targets, scale) -> (out, g)``: the linear loss's softmax focal
        loss of one block of logits and its logit gradient (elementwise work over the
        block, between its matmuls), which is ``run_softmax_focal_loss(ops, logits,
        targets, scale=scale, **params)``. A backend may run it compiled on its own (one
        fused program between the framework's matmuls), with an Ops of its own whose
        unchecked value checks it adds to its own. Absent: ``fn(self, ...)``."""

    def split_rows(self, fn, arrays, summed, classes):
        """``fn(ops, *arrays) -> (out, *rest)`` (the linear loss's block: its loss, then
        its logit gradient G, G's rows of the gradient w.r.t. hidden and G's column
        sums, each None where not wanted), whose rows are independent: each array is
        None, a number or 0-d (whole to every part), or has the block's rows on its
        leading axis; ``classes``: the number of columns of the block's logits. A
        backend whose CPU kernels use one core may run fn on parts of the rows at once,
        each part with an Ops of its own: out summed (0-d) where ``summed``, else joined
        along axis 0; G and the rows of d hidden joined along axis 0, the column sums
        summed, or each of these three a list of the parts' in row order (the spec then
        applies the chain rule part by part, which saves a copy of the block's G, and
        sums the column sums). Absent: ``fn(self, *arrays)``."""


#: The names of :class:`OptionalOps`.
OPTIONAL_OPS: tuple[str, ...] = tuple(OptionalOps.__annotations__) + tuple(
    n for n in vars(OptionalOps) if not n.startswith("_"))


# ---------------------------------------------------------------------------
# Validation of hyperparameters (framework-neutral: numbers, shapes, dtypes
# described as strings "floating" / "integer" / "bool").
# ---------------------------------------------------------------------------

def _is_real(v) -> bool:
    # (the exact types first: an ABC's isinstance is several times slower, and this runs
    # several times a call)
    t = type(v)
    return t is float or t is int or (isinstance(v, numbers.Real) and not isinstance(v, bool))


def _finite(v) -> bool:
    """math.isfinite, written with comparisons so that a compiler's symbolic float
    (a hyperparameter traced as dynamic) can be guarded on."""
    return v == v and v != math.inf and v != -math.inf


_FLOAT_MAX = 1.7976931348623157e308


def _short(v, limit: int = 60) -> str:
    """repr(v), cut to `limit` characters, for error messages."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _to_float(name: str, v) -> float:
    """float(v) for a real number v, with a ValueError naming `name` where an integer or
    fraction is too large for a float (float() would raise a bare OverflowError)."""
    if type(v) is float:
        return v
    if isinstance(v, numbers.Rational) and abs(v) > _FLOAT_MAX:
        raise ValueError(f"{name} must be finite, got a number too large for a float: "
                         f"{_short(v)}")
    return float(v)


def check_gamma(gamma, *, strictly_positive: bool = False) -> float:
    # (a valid Python float first, in plain comparisons: this runs at every call)
    if type(gamma) is float and 0.0 <= gamma < math.inf and not (strictly_positive and
                                                                 gamma == 0.0):
        return gamma
    if not _is_real(gamma):
        raise TypeError(f"gamma must be a real number, got {type(gamma).__name__}")
    g = _to_float("gamma", gamma)
    if not _finite(g) or g < 0 or (strictly_positive and g == 0):
        bound = "> 0" if strictly_positive else ">= 0"
        raise ValueError(f"gamma must be finite and {bound}, got {gamma!r}")
    return g


def _gamma(ops, gamma, like):
    """gamma of the sigmoid and softmax losses: a Python float (check_gamma: the scalar
    path, whose Python branches pick the focal factor's form), or, for a sequence or an
    array (per class; or a 0-d array, which a compiler may trace: a gamma schedule under
    jit), an array of like's dtype with values finite and >= 0. A 0-d NumPy array is a
    number. The caller checks the array's shape."""
    if type(gamma) is float or _is_real(gamma) or not (
            isinstance(gamma, (list, tuple)) or hasattr(gamma, "shape")):
        return check_gamma(gamma)
    if isinstance(gamma, np.ndarray) and gamma.ndim == 0 and gamma.dtype.kind in "iuf":
        return check_gamma(gamma.item())
    if "bool" in str(getattr(gamma, "dtype", "")):  # (every framework's bool dtype)
        raise TypeError("gamma must be a number or an array of numbers >= 0, got bool dtype")
    rng = _host_range(ops, gamma, "gamma")
    arr = ops.asarray(gamma, "gamma", like)
    _check_values(ops, arr, lambda lo, hi: check_nonnegative_values("gamma", lo, hi),
                  lambda a: (a >= 0) & (a < math.inf), "gamma must be finite and >= 0", rng)
    return arr


def check_beta(beta) -> float:
    if not _is_real(beta):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}")
    b = _to_float("beta", beta)
    if not _finite(b):
        raise ValueError(f"beta must be finite, got {beta!r}")
    return b


def check_epsilon(epsilon) -> float:
    """Poly-1's epsilon: any finite real number (the paper uses epsilon >= -1; 0 is no
    poly term)."""
    if type(epsilon) is float and -math.inf < epsilon < math.inf:  # (see check_gamma)
        return epsilon
    if not _is_real(epsilon):
        raise TypeError(f"epsilon must be a real number, got {type(epsilon).__name__}")
    e = _to_float("epsilon", epsilon)
    if not _finite(e):
        raise ValueError(f"epsilon must be finite, got {epsilon!r}")
    return e


def check_exponent(name: str, value) -> float:
    """A focusing exponent given as a number (ASL's gamma_pos and gamma_neg, QFL's beta,
    VFL's gamma): finite and >= 0."""
    if type(value) is float and 0.0 <= value < math.inf:  # (see check_gamma)
        return value
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    g = _to_float(name, value)
    if not _finite(g) or g < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return g


def check_clip(clip) -> float:
    """ASL's probability margin on negatives: in [0, 1)."""
    if type(clip) is float and 0.0 <= clip < 1.0:  # (see check_gamma)
        return clip
    if not _is_real(clip):
        raise TypeError(f"clip must be a real number, got {type(clip).__name__}")
    c = _to_float("clip", clip)
    if not (0.0 <= c < 1.0):
        raise ValueError(f"clip must be in [0, 1), got {clip!r}")
    return c


def check_label_smoothing(label_smoothing) -> float:
    if type(label_smoothing) is float and 0.0 <= label_smoothing < 1.0:  # (see check_gamma)
        return label_smoothing
    if not _is_real(label_smoothing):
        raise TypeError(
            f"label_smoothing must be a real number, got {type(label_smoothing).__name__}")
    e = _to_float("label_smoothing", label_smoothing)
    if not (0.0 <= e < 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return e


def check_reduction(reduction) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")
    return reduction


def check_from_logits(from_logits) -> bool:
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be a bool, got {type(from_logits).__name__}")
    return from_logits


def check_ignore_index(ignore_index, *, allow_none: bool, binary: bool):
    if ignore_index is None:
        if allow_none:
            return None
        raise TypeError("ignore_index must be an int")
    if type(ignore_index) is not int and (not isinstance(ignore_index, numbers.Integral) or
                                          isinstance(ignore_index, bool)):
        raise TypeError(
            f"ignore_index must be an int{' or None' if allow_none else ''}, "
            f"got {type(ignore_index).__name__}")
    if not _INT64_MIN <= ignore_index <= _INT64_MAX:
        # class indices are int64 (a larger value could never match one, and would
        # overflow the comparison in some frameworks)
        raise ValueError(f"ignore_index must fit in int64 (class indices are int64), got "
                         f"{_short(ignore_index)}")
    if binary and ignore_index in (0, 1):
        raise ValueError(
            f"ignore_index must not be a valid binary target (0 or 1), got {ignore_index!r}")
    return int(ignore_index)


_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
#: Integers up to this magnitude are exact as floats (a range read as floats compares
#: exactly with an int there).
_EXACT_INT = 2 ** 53


def check_normalizer_number(normalizer) -> Optional[float]:
    """A number normalizer must be finite and > 0; arrays are checked by the backend."""
    if normalizer is None:
        return None
    if isinstance(normalizer, bool) or not _is_real(normalizer):
        raise TypeError(
            f"normalizer must be a number or a 0-d array, got {type(normalizer).__name__}")
    n = _to_float("normalizer", normalizer)
    if not _finite(n) or n <= 0:
        raise ValueError(f"normalizer must be finite and > 0, got {normalizer!r}")
    return n


def check_axis(axis, ndim: int) -> int:
    if type(axis) is int and -ndim <= axis < ndim:  # (the usual call: see check_gamma)
        return axis % ndim
    if type(axis) is not int and (not isinstance(axis, numbers.Integral) or
                                  isinstance(axis, bool)):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for logits with {ndim} dimensions")
    return int(axis) % ndim


def check_logits_dtype(kind: str, name: str = "logits") -> None:
    if kind != "floating":
        raise TypeError(f"{name} must have a floating dtype, got {kind} dtype")


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _same_dim(s, t) -> bool:
    """Equal sizes; a None (a size unknown until run time) matches any size, and the
    framework checks it when the graph runs."""
    return s is None or t is None or s == t


def _same_shape(a: tuple, b: tuple) -> bool:
    # (equal tuples first: no generator)
    return a == b or (len(a) == len(b) and all(_same_dim(s, t) for s, t in zip(a, b)))


def check_broadcasts_to(name: str, shape: Sequence[int], target: Sequence[int],
                        target_name: str = "logits") -> None:
    """`shape` must broadcast to `target` without enlarging it."""
    shape, target = tuple(shape), tuple(target)
    ok = len(shape) <= len(target) and all(
        _same_dim(s, t) or s == 1 for s, t in zip(shape[::-1], target[::-1]))
    if not ok:
        raise ValueError(
            f"{name} of shape {_fmt(shape)} does not broadcast to {target_name} of shape "
            f"{_fmt(target)}")


def check_class_vector(name: str, shape: Sequence[int], num_classes: int, *,
                       allow_scalar: bool) -> None:
    shape = tuple(shape)
    if shape == () and allow_scalar:
        return
    if not _same_shape(shape, (num_classes,)):
        expect = "a scalar or " if allow_scalar else ""
        raise ValueError(
            f"{name} must be {expect}a 1-D array of length C={num_classes} (the class axis), "
            f"got shape {_fmt(shape)}")


def check_unit_interval_values(name: str, lo: float, hi: float) -> None:
    if not (lo >= 0.0 and hi <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo}, {hi}]")


def check_nonnegative_values(name: str, lo: float, hi: float) -> None:
    if not (lo >= 0.0 and hi < math.inf):  # also rejects NaN
        raise ValueError(f"{name} must be finite and >= 0, got values in [{lo}, {hi}]")


def check_alpha_number(alpha) -> Optional[float]:
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not _is_real(alpha):
        raise TypeError(f"alpha must be None, a number or an array, got {type(alpha).__name__}")
    a = _to_float("alpha", alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be None or in [0, 1], got {alpha!r}")
    return a


def softmax_target_kind(logits_shape, targets_shape, targets_kind: str, axis: int) -> str:
    """Tell class indices from class probabilities by shape (the usual cross-entropy rule).

    Same shape as the logits: probabilities (must be floating). Otherwise the
    logits' shape without the class axis: indices (must be integer).
    """
    logits_shape, targets_shape = tuple(logits_shape), tuple(targets_shape)
    if _same_shape(targets_shape, logits_shape):
        if targets_kind != "floating":
            raise TypeError(
                "targets with the logits' shape are class probabilities and must have a "
                f"floating dtype, got {targets_kind} dtype")
        return "probs"
    expected = logits_shape[:axis] + logits_shape[axis + 1:]
    if not _same_shape(targets_shape, expected):
        other = [a for a in range(len(logits_shape)) if a != axis and _same_shape(
            targets_shape, logits_shape[:a] + logits_shape[a + 1:])]
        hint = ""
        if other:  # the classes are on another axis: say which argument moves them
            a = other[-1]
            hint = (f"; for classes on axis {a}, pass axis="
                    f"{a - len(logits_shape) if a == len(logits_shape) - 1 else a}")
        raise ValueError(
            f"targets of shape {_fmt(targets_shape)} match neither class indices "
            f"{_fmt(expected)} nor class probabilities {_fmt(logits_shape)} for logits of "
            f"shape {_fmt(logits_shape)} with class axis {axis}{hint}")
    if targets_kind != "integer":
        raise TypeError(
            f"class-index targets (shape {_fmt(targets_shape)}) must have an integer dtype, "
            f"got {targets_kind} dtype")
    return "index"


def check_class_index_range(lo: int, hi: int, num_classes: int) -> None:
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"targets must be class indices in [0, {num_classes - 1}] (or ignore_index), "
            f"got values in [{lo}, {hi}]")


# ---------------------------------------------------------------------------
# Formulas. `ops` is a backend's Ops; arrays are already cast to one floating
# compute dtype and broadcast where noted. Each returns (loss, grad) where grad
# is d(loss)/d(logits) elementwise (sigmoid, FL*) or per sample (softmax), or
# None when need_grad is False.
# ---------------------------------------------------------------------------

def _is0(a):
    """a == 0 for an array known to be >= 0, as ``a <= 0``: exact in every framework
    (a backend's float ``==`` may compare within a tolerance)."""
    return a <= 0


def _one_at_zero(ops, m):
    """where(m <= 0, m + 1, m) for m >= 0 (or NaN): m, with 1 where it is 0 (see
    Ops.one_at_zero)."""
    # (called as a method, not read into a variable: see _softmax)
    if hasattr(ops, "one_at_zero"):
        return ops.one_at_zero(m)
    return ops.where(_is0(m), m + 1.0, m)


def _focal_factor(ops, m, gamma):
    """(1 - p_t) ** gamma from an accurately computed m = 1 - p_t; None stands for 1.
    gamma: a Python float, or an array broadcastable to m (see _gamma)."""
    if not isinstance(gamma, float):
        return _focal_factor_array(ops, m, gamma)
    if gamma == 0:
        return None
    if gamma == int(gamma) and gamma <= _MAX_INT_GAMMA:
        out = m
        for _ in range(int(gamma) - 1):
            out = out * m
        return out
    # m ** gamma, with 0 at m == 0 through a where whose other branch never sees 0:
    # an autodiff of this closed form (a second derivative) stays finite at saturation.
    zero = _is0(m)
    base = ops.where(zero, m + 1.0, m)
    # (called as a method, not read into a variable: see _softmax)
    return ops.where(zero, m * 0.0, ops.pow(base, gamma) if hasattr(ops, "pow") else
                     base ** gamma)


def _focal_factor_array(ops, m, gamma):
    """(1 - p_t) ** gamma for an array gamma >= 0 (per class, or a 0-d array a compiler
    traces): a power whatever its values (no Python branch on them), 0 where m == 0 and
    gamma > 0, 1 where gamma == 0 (0 ** 0 = 1, as the scalar path's missing factor). The
    power's base is 1 where m == 0, as in _focal_factor: no 0 ** gamma, whose derivative
    is infinite for gamma < 1, ever reaches an autodiff of this closed form."""
    zero = _is0(m)
    base = ops.where(zero, m + 1.0, m)
    # (an array exponent of the base's dtype: exact in every backend, where a backend may
    # round a Python float exponent to float32: see Ops.pow)
    power = base ** gamma
    return ops.where(zero & (gamma > 0), power * 0.0, power)


def _no_focus(gamma) -> bool:
    """gamma is the Python number 0 (the formulas skip the focal terms); an array gamma
    never is, whatever its values (they may be traced)."""
    return isinstance(gamma, float) and gamma == 0


def _mul(a, b):
    """a * b where None stands for 1."""
    if a is None:
        return b
    if b is None:
        return a
    return a * b


def _xmul(ops, a, b, signed=False):
    """a * b, with 0 wherever a == 0 (even where b is infinite); a >= 0 unless `signed`.
    `a` may be a Python number."""
    if isinstance(a, (int, float)):
        return ops.full_like(b, 0.0) if a == 0 else a * b
    zero = ((a <= 0) & (a >= 0)) if signed else _is0(a)
    return ops.where(zero, ops.full_like(b, 0.0), a * b)


def _coef(ops, a, v):
    """a * v where None stands for 1, with 0 wherever a == 0 (even where v is infinite)."""
    return v if a is None else _xmul(ops, a, v)


def _xdiv(ops, a, b):
    """a / b for a >= 0, with 0 wherever a == 0 (even where b == 0)."""
    zero = _is0(a)
    safe = ops.where(zero, ops.full_like(b, 1.0), b)
    return ops.where(zero, ops.full_like(b, 0.0), a / safe)


def _cdiv(ops, c, v, p):
    """c * v / p for c, v >= 0 (c None stands for 1; 0 wherever c * v is): as c * (v / p),
    whose product stays accurate where c * v would be subnormal (a tiny soft target
    under a small focal factor over a subnormal probability), and as (c * v) / p where
    v / p alone overflows."""
    vp = _xdiv(ops, v, p)
    if c is None:
        return vp
    return ops.where(vp < math.inf, _coef(ops, c, vp), _xdiv(ops, _xmul(ops, c, v), p))


def _ratio(ops, a, b):
    """a / b for b > 0. A backend that differentiates the closed-form gradient again
    (second derivatives) binds ``Ops.ratio`` to a division whose derivative is
    (a' - (a/b) b') / b: autodiff's a'/b - a b'/b**2 is 0/0 where b**2 underflows."""
    # (called as a method, not read into a variable: see _softmax)
    return ops.ratio(a, b) if hasattr(ops, "ratio") else a / b


def smooth_binary(y, label_smoothing: float):
    """(y, 1 - y) after label smoothing, y -> y(1-e) + e/2: each side computed from its
    own (1 - y of a smoothed y close to 1 would keep only the digits y has left)."""
    ny = 1.0 - y  # (exact for y in [1/2, 1]; for smaller y, accurate relative to 1 - y)
    if label_smoothing == 0:
        return y, ny
    keep, half = 1.0 - label_smoothing, 0.5 * label_smoothing
    return y * keep + half, ny * keep + half


def alpha_t(y, ny, alpha, scale=None):
    """alpha_t = y*alpha + (1-y)*(1-alpha), times `scale`; None stands for 1. ny is 1-y.

    A sum of two non-negative products: y*(2*alpha - 1) + (1 - alpha) would cancel where
    alpha_t is small (2% of error in float32 for alpha 6e-8 and y = 1 - 5e-6). The scale
    (see reduction_scale) joins alpha's own factors."""
    if alpha is None:
        return scale
    return y * _mul(alpha, scale) + ny * _mul(1.0 - alpha, scale)


def _log1p_lean(ops, e):
    """(log1p(e), 1/(1 + e)) for e in [0, 1]: one log1p and one division.

    (Not log(u) + (e - (u - 1))/u with u = 1 + e, which spends a log instead of a log1p:
    a graph optimizer may reassociate (1 + e) - 1 to e and rewrite log(1 + e) to
    log1p(e), turning the loss of a confident element into 0 or twice its value.)"""
    return ops.log1p(e), 1.0 / (1.0 + e)


def _sigmoid_terms(ops, x, e, lean, xp, xn):
    """(l, p, 1-p) for p = sigmoid(x), with l = log1p(exp(-|x|)), from e = exp(-|x|)
    and xp, xn = max(x, 0), min(x, 0). Then log p = xn - l, log(1-p) = -xp - l.

    Lean (see :class:`Ops`): p and 1-p are 1/(1+e) and e/(1+e), which one depending on
    the sign of x. Otherwise: exps of the log-sigmoids (whose absolute error exp turns
    into relative error: less accurate, but faster where the compiler shares them)."""
    if lean:
        l, inv = _log1p_lean(ops, e)
        small = e * inv
        pos = x >= 0
        return l, ops.where(pos, inv, small), ops.where(pos, small, inv)
    l = ops.log1p(e)
    return l, ops.exp(xn - l), ops.exp(-(xp + l))


def sigmoid_focal(ops, x, y, ny, *, coef, alpha, pos_weight, scale, gamma: float,
                  from_logits: bool, need_grad: bool, epsilon: float = 0.0):
    """Elementwise sigmoid focal loss and its derivative w.r.t. `x`.

    x: logits (or probabilities when from_logits is False); y, ny: smoothed targets
    in [0, 1] and 1 - y (see smooth_binary), broadcast to x's shape; coef: elementwise weight times the
    ignore mask (or None); alpha, pos_weight: arrays broadcastable to x, or None;
    scale: the reduction's scale (see reduction_scale), or None.

    1 - p_t = y(1-p) + (1-y)p is a sum of two non-negative terms, each accurate
    (exactly 1-p or p for hard targets), so it carries no cancellation; it
    underflows to 0 only where the loss and gradient underflow too.

    Every coefficient (weight, mask, alpha_t, the reduction's scale, the focal factor)
    enters before the terms that can be large (log p, 1/p), so an intermediate
    overflows only where the result does: with c their product, the loss is
    -(c w_+ y log p + c (1-y) log(1-p)). (At an infinite logit a certain right
    prediction is 0 * inf: NaN, where a certain wrong one is +inf. The loss has no
    select on the way to its sum: a fusing compiler writes out every term a select
    shares, which costs memory traffic.)
    """
    lean = from_logits and getattr(ops, "lean_sigmoid", False)
    e = ops.exp(-ops.abs(x)) if from_logits else None

    def terms(x, y, ny, e, coef, alpha, pos_weight, scale):
        a = _mul(coef, alpha_t(y, ny, alpha, scale))
        py = _mul(pos_weight, y)
        if from_logits:
            # (once each: the loss reads them too)
            xp, xn = ops.maximum0(x), ops.minimum0(x)
            l, p, q = _sigmoid_terms(ops, x, e, lean, xp, xn)
        else:
            # Probabilities. log 0 = -inf is used as such: a certain wrong prediction
            # costs +inf, a certain right one 0; nothing is clipped.
            p, q = x, 1.0 - x
        m = y * q + ny * p                            # 1 - p_t
        c = _mul(a, _focal_factor(ops, m, gamma))
        cp, cn = _mul(c, py), _mul(c, ny)
        if from_logits:
            # log p = min(x, 0) - l, log(1-p) = -max(x, 0) - l
            loss = (cn * xp - cp * xn) + (cp + cn) * l
        else:
            # A zero coefficient gives exactly 0, even where log p or log(1-p) is -inf;
            # the factors one at a time, so that a product of tiny ones (a subnormal
            # target) underflowing to 0 does not turn an infinite term into 0.
            loss = -(_coef(ops, pos_weight, _coef(ops, c, _xmul(ops, y, ops.log(p)))) +
                     _coef(ops, c, _xmul(ops, ny, ops.log1p(-p))))
        return y, ny, py, p, q, m, c, cp, cn, loss

    args = (x, y, ny, e, coef, alpha, pos_weight, scale)
    y, ny, py, p, q, m, c, cp, cn, loss = terms(*args)
    # Poly-1 (see _poly_sigmoid): `out` is the result, `loss` stays the focal term,
    # which the focal factor's gradient below reads.
    out = loss if epsilon == 0 else loss + _poly_sigmoid(c, m, epsilon)
    if not need_grad:
        return out, None
    fork = getattr(ops, "fork", None)
    if lean and fork is not None:
        # The gradient from its own copy of the terms: only e, the one exp, is shared.
        y, ny, py, p, q, m, c, cp, cn, loss = terms(*fork(args))
    if from_logits:
        grad = cn * p - cp * q                        # c * dBCE/dx
        if epsilon != 0:
            grad = grad + _poly_sigmoid_grad(c, (ny - y) * (p * q), epsilon, gamma)
        if _no_focus(gamma):
            return out, grad
        # d(1-p_t)/dx = (1-2y) p(1-p), so the focal factor adds gamma (1-2y) r loss with
        # r = p(1-p)/(1-p_t) <= 1: (1-p_t)^(gamma-1) never appears alone. r = 0 where
        # 1-p_t == 0 (p(1-p) is 0 there). (Where the loss is infinite, the gradient may
        # be NaN: no select guards r * loss, since a fusing compiler writes out what a
        # select shares, four full-size arrays here.)
        r = _ratio(ops, p * q, _one_at_zero(ops, m))
        focal = (gamma * (ny - y)) * r * loss
        # (called as a method, not read into a variable: see _softmax)
        return out, ops.add_result(focal, grad) if hasattr(ops, "add_result") else \
            focal + grad
    zero = _is0(m)
    grad = _xdiv(ops, cn, q) - _cdiv(ops, c, py, p)   # (1/p alone may overflow: see _cdiv)
    if epsilon != 0:
        grad = grad + _poly_sigmoid_grad(c, ny - y, epsilon, gamma)  # d(1-p_t)/dp = 1-2y
    if _no_focus(gamma):
        return out, grad
    # loss / (1-p_t), 0 where 1-p_t == 0 (the focal factor, and with it the loss, is 0)
    ratio = ops.where(zero, m * 0.0, loss / ops.where(zero, m + 1.0, m))
    return out, gamma * _xmul(ops, ny - y, ratio, signed=True) + grad


# ---------------------------------------------------------------------------
# Poly-1 (Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification
# Loss Functions", ICLR 2022, https://arxiv.org/abs/2204.12511): the focal loss plus
# epsilon times the first polynomial term of its expansion in (1 - p_t),
#
#     Poly-1 = FL + epsilon * (1 - p_t)^(gamma + 1),
#
# weighted by the focal term's coefficients (weight, alpha_t, the ignore mask, the
# reduction's scale; not pos_weight, which weights the positive log-likelihood only).
# For the softmax loss, per sample, sum_c w_c alpha_c q_c (1 - p_c)^(gamma + 1) times
# epsilon: for a one-hot q, epsilon (1 - p_t)^(gamma + 1); at gamma = 0 and any
# distribution q, epsilon (1 - sum_c q_c p_c), optax's poly_loss_cross_entropy.
#
# Gradients: (1 - p_t)^(gamma+1) = (1-p_t) f with f = (1-p_t)^gamma the focal factor,
# so the term is c (1-p_t) with c the focal term's coefficient times f, and its
# derivative is (gamma+1) c d(1-p_t)/dx: for the sigmoid d(1-p_t)/dx = (1-2y) p(1-p)
# (bounded by 1/4: finite everywhere, 0 at saturation); for the softmax
# d(1-p_c)/dx_j = -p_c (delta_cj - p_j), which joins the focal term's per-class
# coefficient g_c (whose gradient is p_j sum_c g_c - g_j) as
# g_c += epsilon (gamma+1) k_c q_c f_c p_c. No power below gamma appears: every
# gradient is finite for every finite logit and gamma >= 0. epsilon = 0 skips all of
# this in Python (no extra operation). At epsilon = -1 the term cancels the first-order
# term of -log p_t = (1-p_t) + (1-p_t)^2/2 + ...: where p_t -> 1 the sum is a
# second-order difference of first-order terms, accurate to their rounding (absolutely).
# ---------------------------------------------------------------------------

def _poly_sigmoid(c, m, epsilon):
    """The sigmoid loss's Poly-1 term epsilon * c * (1-p_t), c = a * (1-p_t)^gamma (the
    focal term's coefficient; None stands for 1) and m = 1 - p_t."""
    return epsilon * _mul(c, m)


def _poly_sigmoid_grad(c, dm, epsilon, gamma):
    """d/dx of _poly_sigmoid: epsilon (gamma+1) c dm, for dm = d(1-p_t)/dx."""
    return (epsilon * (gamma + 1.0)) * _mul(c, dm)


def sigmoid_focal_star(ops, x, y, ny, *, coef, alpha, scale, gamma: float, beta: float,
                       need_grad: bool):
    """Elementwise FL* = softplus(-(gamma*x*(2y-1) + beta)) / gamma and its derivative.

    Written with w = z/gamma = x(2y-1) + beta/gamma: FL* = max(-w, 0) +
    log1p(exp(-|z|))/gamma, where z = gamma*w itself may overflow but the loss does not."""
    a = _mul(coef, alpha_t(y, ny, alpha, scale))
    s = y - ny  # 2y - 1
    w = x * s + beta / gamma
    z = gamma * w
    e = ops.exp(-ops.abs(z))
    if getattr(ops, "lean_sigmoid", False):
        l, inv = _log1p_lean(ops, e)
        small = e * inv
    else:
        l = ops.log1p(e)
        small = inv = None
    loss = _mul(a, ops.maximum0(-w) + l * (1.0 / gamma))
    if not need_grad:
        return loss, None
    if inv is None:
        inv = 1.0 / (1.0 + e)
        small = e * inv
    smz = ops.where(z >= 0, small, inv)  # sigmoid(-z)
    return loss, _mul(a, -s * smz)


def asymmetric(ops, x, y, ny, *, coef, scale, gamma_pos: float, gamma_neg: float,
               clip: float, need_grad: bool):
    r"""Elementwise Asymmetric Loss (ASL) and its derivative w.r.t. the logits `x`.

    Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021,
    https://arxiv.org/abs/2009.14119, with p = sigmoid(x), the shifted probability
    p_m = max(p - clip, 0) of a negative, and y, ny = y, 1 - y (see smooth_binary):

    .. math::

        \mathrm{ASL} = -\,w \left[ y\,(1-p)^{\gamma_+} \log p
            + (1-y)\,p_m^{\gamma_-} \log(1 - p_m) \right]

    (the paper's L+ and L-, weighted by the target: for soft targets the reference code
    instead interpolates p_t and the exponent by y; the two agree on hard targets).
    coef: elementwise weight times the ignore mask (or None); scale: the reduction's.

    -log p = softplus(-x) and, without a margin, -log(1-p) = softplus(x); with one,
    -log(1 - p_m) = -log(min(sigmoid(-x) + clip, 1)): from log1p(-p_m) where p_m < 1/2
    (p - clip is exact near the margin, where p and clip are within a factor 2), from
    log(sigmoid(-x) + clip) above (sigmoid(-x)'s own digits, where 1 - p_m would lose
    them). No probability is clamped (the reference clamps at eps = 1e-8).

    Gradient, with q = 1 - p and u = -log(1 - p_m):
    d/dx [(1-p)^g+ (-log p)] = -(1-p)^g+ (g+ p (-log p) + q), where p (-log p) <= q;
    d/dx [p_m^g- u] = p q p_m^g- (g- u / p_m + 1/(q + clip)) for p > clip, where
    u / p_m -> 1 as p_m -> 0 (and for clip = 0 it is p_m^g- (g- q u + p)); 0 for
    p <= clip, where p_m = 0 and the negative term is constant. At p = clip exactly
    (the kink) the gradient is that one-sided value from below: 0. With gamma_neg > 0
    both sides agree there (p_m^g- = 0); with gamma_neg = 0 and clip > 0 the derivative
    jumps from 0 to clip (1 - clip). Every term is bounded: finite for every finite logit
    and every exponent >= 0.
    """
    a = _mul(coef, scale)
    e = ops.exp(-ops.abs(x))
    xp, xn = ops.maximum0(x), ops.minimum0(x)
    l, p, q = _sigmoid_terms(ops, x, e, False, xp, xn)
    s = l - xn                                      # -log p
    fp = _focal_factor(ops, q, gamma_pos)           # (1-p)^gamma_pos
    if clip == 0:
        pm = p
        u = xp + l                                  # -log(1-p)
    else:
        pm = ops.maximum0(p - clip)
        u = ops.where(pm < 0.5, 0.0 - ops.log1p(-pm), 0.0 - ops.log(q + clip))
    fn = _focal_factor(ops, pm, gamma_neg)          # p_m^gamma_neg
    cy, cn = _mul(a, y), _mul(a, ny)
    loss = cy * _mul(fp, s) + cn * _mul(fn, u)
    if not need_grad:
        return loss, None
    dpos = 0.0 - (q if gamma_pos == 0 else fp * (gamma_pos * (p * s) + q))
    if clip == 0:
        dneg = p if gamma_neg == 0 else fn * (gamma_neg * (q * u) + p)
    else:
        pq = p * q
        zero = _is0(pm)
        below = ops.where(zero, pm * 0.0, pq / (q + clip))  # (q + clip >= clip > 0)
        if gamma_neg == 0:
            dneg = below
        else:
            dneg = fn * (gamma_neg * (pq * _u_over_pm(ops, u, pm)) + below)
    return loss, cy * dpos + cn * dneg


def _u_over_pm(ops, u, pm):
    """u / p_m for u = -log(1 - p_m): 1 where p_m == 0 (its limit), >= 1 elsewhere."""
    zero = _is0(pm)
    return ops.where(zero, pm * 0.0 + 1.0, u / ops.where(zero, pm + 1.0, pm))


def _u_over_omp(ops, u, omp):
    """u / (1-p) for u = -log p and omp = 1 - p: 1 where p == 1, ~u for small p."""
    zero = _is0(omp)
    one = omp + 1.0  # (1 where it is used)
    return ops.where(zero, one, u / ops.where(zero, one, omp))


#: Logits beyond this magnitude (a mask of the dtype's lowest value) may overflow a
#: gradient's intermediate (gamma * -log p) where a select makes the term's limit 0.
_EXTREME_LOGIT = 2.0 ** 100


def _extreme_logits(ops, x) -> bool:
    """Whether logits x may hold an infinite value (-inf: a masked class) or one large
    enough to overflow (see _EXTREME_LOGIT), whose 0 * inf terms, and the NaN rows of a
    sample with every class masked, the softmax losses then select away where their
    coefficient is 0: False where the backend reads x's values without a host sync and
    all are moderate (the selects cost several passes over x op by op; a compiler fuses
    them). A NaN among x reads as extreme: the other samples keep their selects."""
    rng = ops.concrete_range(x)
    return rng is None or not -_EXTREME_LOGIT <= rng[0] <= rng[1] <= _EXTREME_LOGIT


def _zero_rows(ops, grad, coef):
    """grad with 0 in the samples whose coefficient (with a size-1 class axis; may be
    negative) is 0: where every logit of such a sample is -inf (or one is +inf), its
    softmax is NaN, and the sample's gradient 0 * NaN."""
    if coef is None or isinstance(coef, (int, float)):
        return grad
    return ops.where((coef <= 0) & (coef >= 0), ops.full_like(grad, 0.0), grad)


def _softmax(ops, lp):
    """The softmax p from its log lp = ops.log_softmax(x): exp(x - max) / sum from the
    log-softmax's own parts where the backend keeps them (Ops.softmax_parts), else
    exp(lp). The parts cost a product instead of a second exp per element, and keep p's
    relative precision (exp of lp turns lp's absolute error into relative error: 8 ulps
    of float32 at p = 1e-35, measured)."""
    # (called as a method, not read into a variable: a bytecode-translating compiler
    # may turn a bound method held in a variable into a guard it cannot compile)
    parts = ops.softmax_parts(lp) if hasattr(ops, "softmax_parts") else None
    if parts is None:
        return ops.exp(lp)
    e, total = parts
    return e * (1.0 / total)


def softmax_focal_dense(ops, x, q, *, k, sample_coef, gamma: float, axis: int,
                        from_logits: bool, need_grad: bool, epsilon: float = 0.0):
    """Per-sample softmax focal loss against a target distribution `q` (x's shape).

    k: per-class coefficient weight_c*alpha_c times the reduction's scale, broadcast
    along `axis` (or None); sample_coef: per-sample mask/weight with a size-1 class
    axis (or None). Returns the per-sample loss with a size-1 class axis, and the
    gradient. 1 - p_c is -expm1(log p_c): accurate however close p_c is to 1.
    epsilon: Poly-1's (see _poly_sigmoid): -log p_c becomes -log p_c + epsilon (1-p_c).
    """
    kq = _mul(_mul(k, sample_coef), q)
    if from_logits:
        lp = ops.log_softmax(x, axis)
        u = 0.0 - lp  # (+0.0, not -0.0, where p == 1)
        omp = -ops.expm1(lp)
        f = _focal_factor(ops, omp, gamma)
        # A class of zero target mass adds exactly 0, even where its logit is -inf (a
        # masked class: p = 0, -log p = inf), as in the probabilities branch below; kq may
        # be negative (a backward pass's incoming gradient in its scale). And p u / (1-p)
        # -> 0 as p -> 0. (Selects only where an extreme logit may be: see _extreme_logits.)
        masked = _extreme_logits(ops, x)
        fu = _mul(f, u if epsilon == 0 else u + epsilon * omp)
        loss = ops.sum(_xmul(ops, kq, fu, signed=True) if masked else _mul(kq, fu),
                       axis=axis, keepdims=True)
        if not need_grad:
            return loss, None
        p = _softmax(ops, lp)
        if _no_focus(gamma):
            g = kq if epsilon == 0 else _mul(kq, 1.0 + epsilon * p)
        elif epsilon == 0:
            uo = _u_over_omp(ops, u, omp)
            g = kq * f * (1.0 + (_xmul(ops, p, gamma * uo) if masked else gamma * p * uo))
        else:  # (Poly-1: g_c += epsilon (gamma+1) kq_c f_c p_c)
            v = gamma * _u_over_omp(ops, u, omp) + epsilon * (gamma + 1.0)
            g = _mul(kq, f * (1.0 + (_xmul(ops, p, v) if masked else p * v)))
        # p*G - g written as p*(G - g) - (1-p)*g: exact where one class holds all of q.
        grad = p * (ops.sum(g, axis=axis, keepdims=True) - g) - omp * g
        return loss, _zero_rows(ops, grad, sample_coef) if masked else grad

    # Probabilities, used as given (not renormalised).
    p = x
    u = -ops.log(p)
    omp = 1.0 - p
    f = _focal_factor(ops, omp, gamma)
    # (the factors one at a time: see sigmoid_focal)
    loss = ops.sum(_xmul(ops, q, _coef(ops, _mul(k, sample_coef), _mul(f, u))), axis=axis,
                   keepdims=True)
    if epsilon != 0:  # (Poly-1: (1-p)^(gamma+1) is finite, no guard needed)
        loss = loss + epsilon * ops.sum(_mul(kq, _mul(f, omp)), axis=axis, keepdims=True)
    if not need_grad:
        return loss, None
    # d/dp of (1-p)^g * (-log p) = -(1-p)^g * (g * u/(1-p) + 1/p); 1/p alone may
    # overflow where the result does not (see _cdiv)
    kf = _mul(kq, f)
    grad = -_cdiv(ops, _mul(_mul(k, sample_coef), f), q, p)
    if epsilon != 0:  # d/dp of epsilon (1-p)^(gamma+1)
        grad = grad - (epsilon * (gamma + 1.0)) * (kq if kf is None else kf)
    if _no_focus(gamma):
        return loss, grad
    return loss, grad - _xmul(ops, kf, gamma * _u_over_omp(ops, u, omp))


def softmax_focal_index(ops, x, index, *, k_y, sample_coef, gamma: float, axis: int,
                        need_grad: bool, epsilon: float = 0.0):
    """Per-sample softmax focal loss (logits) for hard class indices, no smoothing.

    index: class indices with a size-1 class axis (ignored samples already
    replaced by a valid class and masked through sample_coef); k_y: the per-class
    coefficient gathered at the target times the reduction's scale (size-1 class
    axis, or a number) or None. epsilon: Poly-1's (see softmax_focal_dense).
    """
    # (called as a method, not read into a variable: see _softmax)
    fused = ops.log_softmax_at(x, index, axis) if hasattr(ops, "log_softmax_at") else None
    if fused is None:
        lp = ops.log_softmax(x, axis)
        lp_y = ops.take(lp, index, axis)
    else:
        lp_y, p = fused
    u = 0.0 - lp_y
    pm1 = ops.expm1(lp_y)  # p - 1
    omp = -pm1
    f = _focal_factor(ops, omp, gamma)
    c = _mul(k_y, sample_coef)
    # 0 where a sample's coefficient is 0 (an ignored or padded sample, a class of weight
    # 0), even where its stand-in target's log-probability is -inf; the coefficient may
    # be negative (a backward pass's incoming gradient). Per sample: one mask for both.
    zero = None if c is None or isinstance(c, (int, float)) else (c <= 0) & (c >= 0)

    def times_c(v):
        if zero is None:
            return _xmul(ops, c, v) if isinstance(c, (int, float)) else _mul(c, v)
        return ops.where(zero, ops.full_like(v, 0.0), c * v)
    loss = times_c(_mul(f, u if epsilon == 0 else u + epsilon * omp))
    if not need_grad:
        return loss, None
    if epsilon != 0:
        # Poly-1: g += epsilon (gamma+1) c f p_y (see softmax_focal_dense; the one-hot q
        # puts the whole term at the target, where the scatter below writes (p_y - 1) g)
        g = times_c(_mul(f, 1.0 + ops.exp(lp_y) * (
            epsilon * (gamma + 1.0) if _no_focus(gamma) else
            gamma * _u_over_omp(ops, u, omp) + epsilon * (gamma + 1.0))))
    elif _no_focus(gamma):
        g = ops.full_like(u, 1.0) if c is None else c
    else:
        g = times_c(f * (1.0 + gamma * ops.exp(lp_y) * _u_over_omp(ops, u, omp)))
    # d/dx_j = p_j*g for j != y and -(1-p_y)*g at the target (as (p_y-1)*g: the same
    # number, one negation fewer).
    if fused is None:
        pg = _softmax(ops, lp) * g
    else:
        # (called as a method, not read into a variable: see _softmax)
        pg = ops.mul_owned(p, g) if hasattr(ops, "mul_owned") else p * g
    grad = ops.scatter(pg, index, pm1 * g, axis)
    if zero is not None:
        # A sample whose softmax is NaN (every logit -inf, or one +inf) has a NaN
        # log-probability at its target: the N values read instead of x's N x C.
        rng = ops.concrete_range(lp_y)
        if rng is None or not (math.isfinite(rng[0]) and math.isfinite(rng[1])):
            grad = _zero_rows(ops, grad, c)
    return loss, grad


def softmax_asymmetric(ops, x, t, q, *, coef, gamma_pos: float, gamma_neg: float, axis: int,
                       need_grad: bool):
    r"""Per-sample single-label Asymmetric Loss (the ASL repository's ``ASLSingleLabel``)
    and its gradient: with p = softmax(x), t the one-hot target and q its smoothed
    distribution,

    .. math::

        \mathrm{ASL}_1 = -\sum_c q_c\, w_c \log p_c, \qquad
        w_c = (1-p_c)^{\gamma_+} \text{ for the target}, \quad
        w_c = p_c^{\gamma_-} \text{ for the others}.

    coef: the per-sample mask times the reduction's scale (size-1 class axis, a number,
    or None). Gradient, as for the dense softmax loss, p_j H - h_j with H = sum_c h_c:
    at the target h = q f (1 + gamma_pos p u / (1-p)) (the focal loss's), elsewhere
    d/dx_j [p_c^g- (-log p_c)] = -(delta_cj - p_j) p_c^g- (1 - g- (-log p_c)), so
    h_c = q_c p_c^g- (1 - g- (-log p_c)): bounded (p^g log p -> 0 as p -> 0 for g > 0),
    finite for every finite logit.
    """
    lp = ops.log_softmax(x, axis)
    u = 0.0 - lp
    omp = -ops.expm1(lp)
    nt = 1.0 - t
    fpos = _focal_factor(ops, omp, gamma_pos)
    # p^g- as exp(g- log p): p itself underflows where p^g- (times -log p, large there)
    # does not (p = e^-200 is 0 in float32, p^0.25 = e^-50 is not)
    fneg = None if gamma_neg == 0 else ops.exp(gamma_neg * lp)
    wpos, wneg = _mul(t, fpos), _mul(nt, fneg)
    kq = _mul(coef, q)
    # 0 for a class whose weight or target mass is 0, even at a -inf logit (u = inf):
    # p^g- (-log p) -> 0 as p -> 0 (see softmax_focal_dense; kq may be negative)
    masked = _extreme_logits(ops, x)
    if masked:
        loss = _xmul(ops, kq, _xmul(ops, wpos + wneg, u), signed=True)
    else:
        loss = kq * ((wpos + wneg) * u)
    loss = ops.sum(loss, axis=axis, keepdims=True)
    if not need_grad:
        return loss, None
    p = _softmax(ops, lp)
    if gamma_pos == 0:
        hpos = wpos
    else:
        uo = _u_over_omp(ops, u, omp)
        hpos = wpos * (1.0 + (_xmul(ops, p, gamma_pos * uo) if masked else gamma_pos * p * uo))
    if gamma_neg == 0:
        hneg = wneg
    else:
        hneg = _xmul(ops, wneg, 1.0 - gamma_neg * u) if masked else \
            wneg * (1.0 - gamma_neg * u)
    hp, hn = kq * hpos, kq * hneg
    # p_j (H - h_j) - (1 - p_j) h_j, with H - h_j as (Hp - hp_j) + (Hn - hn_j): hp is the
    # target's alone, so at the target H - h_j is the others' sum exactly (a dominant
    # target's h would swamp their tiny h in H); elsewhere Hp dominates.
    rest = (ops.sum(hp, axis=axis, keepdims=True) - hp) + \
        (ops.sum(hn, axis=axis, keepdims=True) - hn)
    grad = p * rest - omp * (hp + hn)
    return loss, _zero_rows(ops, grad, coef) if masked else grad


def smoothed_distribution(ops, q, label_smoothing: float, num_classes: int):
    if label_smoothing == 0:
        return q
    return q * (1.0 - label_smoothing) + label_smoothing / num_classes


def mean_scale(ops, denom):
    """1/denom, or 0 where denom == 0 (nothing to average: the mean is 0, not NaN).

    denom is an array, or a tuple (count,) holding a Python (or symbolic) int.
    """
    if isinstance(denom, tuple):
        (count,) = denom
        return 0.0 if count == 0 else 1.0 / count
    zero = _is0(denom)
    safe = ops.where(zero, denom + 1.0, denom)
    return ops.where(zero, denom * 0.0, 1.0 / safe)


class Divide:
    """A reduction scale that divides by `div`, then multiplies by `mult`: the
    softmax loss's mean over class-index targets, whose denominator is a sum of class
    weights. Every sample's coefficient w[target]/denominator is at most 1, where
    1/denominator alone overflows for tiny weights."""

    __slots__ = ("div", "mult")

    def __init__(self, div, mult):
        self.div, self.mult = div, mult


def reduction_scale(ops, *, reduction: str, denom, normalizer, divide: bool = False):
    """The factor that the reduction applies to every element's loss and gradient:
    1/denom for a mean, times 1/normalizer; None where it is 1. With `divide` (the
    softmax loss's class-index targets) a mean over a run-time denominator is a
    :class:`Divide`.

    The formulas take it with their coefficients (before any large intermediate, so a
    mean or a normalized loss overflows only where its result does; see _fold); a
    backend that runs a loss on blocks of a whole passes the whole's as ``scale`` to the
    run_* functions."""
    inv_norm = None if normalizer is None else 1.0 / normalizer
    if reduction == "mean" and divide and not isinstance(denom, tuple):
        # a zero denominator: nothing to average, the mean is 0 (mult is 0 there)
        zero = _is0(denom)
        mult = ops.where(zero, denom * 0.0, denom * 0.0 + 1.0)
        return Divide(ops.where(zero, denom + 1.0, denom), _mul(mult, inv_norm))
    scale = mean_scale(ops, denom) if reduction == "mean" else None
    if inv_norm is not None:
        scale = inv_norm if scale is None else scale * inv_norm
    return scale


def _fold(v, scale):
    """A coefficient `v` (None stands for 1) times the reduction's scale."""
    if isinstance(scale, Divide):
        # (v None: a mean over a row count known only when run, the linear loss's)
        return _mul((1.0 if v is None else v) / scale.div, scale.mult)
    return _mul(v, scale)


def reduce(ops, loss, *, reduction: str):
    """The reduction of a loss whose elements already carry its scale (see
    reduction_scale): "none" keeps `loss`; "sum" and "mean" add it up."""
    if reduction == "none":
        return loss
    return getattr(ops, "checked_sum", ops.sum)(loss)


# ---------------------------------------------------------------------------
# The whole computation of each public function, against a backend's Ops.
# ---------------------------------------------------------------------------

def host_array(v, name: str) -> np.ndarray:
    """Host data (a number, a nested sequence of numbers, a NumPy array) as a NumPy array
    of real numbers (sequences and numbers as float64). Anything else raises a TypeError
    or ValueError naming `name`: strings, ragged sequences, numbers too large for a
    float. Each backend's ``Ops.asarray`` converts host data through this."""
    if isinstance(v, (list, tuple)) or (_is_real(v) and not isinstance(v, np.generic)):
        # (Python values are checked in Python: a compiler tracing this treats them as
        # constants, and may not trace a NumPy array's dtype)
        if not _flat_numbers(v, [], name):
            raise TypeError(f"{name} must hold real numbers, got {_short(v)}")
        try:
            return np.asarray(v, dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"{name} must be a number or a rectangular (nested) sequence "
                             f"of numbers, got {_short(v)}") from None
    arr = np.asarray(v)
    if arr.dtype == object:  # objects that are not numbers
        raise TypeError(f"{name} must hold real numbers, got {_short(v)}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got {arr.dtype} values: {_short(v)}")
    return arr


def _flat_numbers(v, out, name):
    if isinstance(v, (list, tuple)):
        return all(_flat_numbers(a, out, name) for a in v)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        out.append(_to_float(name, v))
        return True
    return False


def _host_range(ops, v, name):
    """(min, max) of a number, sequence or NumPy array: host data, checkable anywhere.
    Both are NaN where a value is NaN (Python's min and max would skip it).

    Plain Python values are read in plain Python (a compiler traces them as
    constants); NumPy arrays only outside tracing.
    """
    if isinstance(v, (np.ndarray, np.generic)):
        if ops.tracing() or v.size == 0:
            return None
        v = host_array(v, name)
        if v.dtype.kind not in "iuf":
            return None
        return float(v.min()), float(v.max())
    vals = []
    if not _flat_numbers(v, vals, name) or not vals:
        return None  # ops.asarray names the argument if it is not usable
    if any(a != a for a in vals):
        return math.nan, math.nan
    return min(vals), max(vals)


def _check_values(ops, arr, check, cond, message, rng=None):
    """A value check: precise, with ``check(lo, hi)``, where the values can be read
    without a host sync; otherwise ``ops.assert_values(arr, cond, message)``, which a
    backend turns into an asynchronous device-side assert (or a traced one). Every
    ``cond`` is an interval test: true exactly on a range, false on NaN."""
    if rng is None:
        rng = ops.concrete_range(arr)
    if rng is not None:
        check(*rng)
    else:
        ops.assert_values(arr, cond, message)


def _check_unit(ops, arr, name, rng=None):
    _check_values(ops, arr, lambda lo, hi: check_unit_interval_values(name, lo, hi),
                  lambda a: (a >= 0) & (a <= 1), f"{name} must lie in [0, 1]", rng)


#: The hyperparameters that may be arrays, and the values they take (see _param_array):
#: "unit" in [0, 1], "nonneg" finite and >= 0.
ARRAY_PARAMS = {"alpha": "unit", "pos_weight": "nonneg", "weight": "nonneg"}


def _param_array(ops, v, name, like):
    """A hyperparameter array (alpha, pos_weight, weight) in like's dtype, value-checked
    (alpha in [0, 1], the others >= 0: ARRAY_PARAMS).

    Values given as host data (numbers, sequences, NumPy arrays) are checked
    before they move to the logits' device, so even on an accelerator; values
    already in a framework's array are checked where that needs no host sync.
    """
    rng = _host_range(ops, v, name)
    arr = ops.asarray(v, name, like)
    if ARRAY_PARAMS[name] == "unit":
        _check_unit(ops, arr, name, rng)
    else:
        _check_values(ops, arr, lambda lo, hi: check_nonnegative_values(name, lo, hi),
                      lambda a: (a >= 0) & (a < math.inf), f"{name} must be finite and >= 0",
                      rng)
    return arr


def check_param(name: str, value, *, class_vector: bool = False, allow_scalar: bool = True):
    """A hyperparameter array (alpha, pos_weight, weight) given ahead of any call, to a
    module's, layer's or loss class's constructor, checked as a call would check its
    values: alpha in [0, 1], the others finite and >= 0 (ARRAY_PARAMS); a class vector
    (the softmax loss's alpha and weight) 1-D, or a number where `allow_scalar`. `value`
    is host data, or a framework array the caller has read into NumPy. Returns it as a
    NumPy array."""
    arr = host_array(value, name)
    if class_vector and (arr.ndim > 1 or (arr.ndim == 0 and not allow_scalar)):
        expect = "a number or " if allow_scalar else ""
        raise ValueError(f"{name} must be {expect}a 1-D array of per-class values, got "
                         f"shape {_fmt(arr.shape)}")
    if arr.size and arr.dtype.kind in "iuf":
        lo, hi = float(np.min(arr)), float(np.max(arr))  # (NaN if any value is NaN)
        if ARRAY_PARAMS.get(name, "nonneg") == "unit":  # (gamma: >= 0)
            check_unit_interval_values(name, lo, hi)
        else:
            check_nonnegative_values(name, lo, hi)
    return arr


def check_gamma_param(gamma, *, class_vector: bool = False):
    """gamma given to a loss class's constructor: a number (a Python float: see
    check_gamma) or an array of values >= 0 (as a NumPy array: see check_param; a
    per-class vector for the softmax loss, where `class_vector`)."""
    if _is_real(gamma) or not (isinstance(gamma, (list, tuple)) or hasattr(gamma, "shape")):
        return check_gamma(gamma)
    if isinstance(gamma, np.ndarray) and gamma.ndim == 0 and gamma.dtype.kind in "iuf":
        return check_gamma(gamma.item())
    if "bool" in str(getattr(gamma, "dtype", "")):
        raise TypeError("gamma must be a number or an array of numbers >= 0, got bool dtype")
    return check_param("gamma", gamma, class_vector=class_vector)


def describe(**params) -> str:
    """The hyperparameters of a loss class, for its repr: numbers as they are, arrays as
    their values (up to 8) or their shape."""
    parts = []
    for name, v in params.items():
        if hasattr(v, "shape") and hasattr(v, "tolist"):
            shape = tuple(int(s) for s in v.shape)
            size = math.prod(shape)
            v = v.tolist() if size <= 8 else f"<array of shape {_fmt(shape)}>"
        parts.append(f"{name}={v!r}" if not isinstance(v, str) or not v.startswith("<")
                     else f"{name}={v}")
    return ", ".join(parts)


def _alpha(ops, alpha, like):
    if alpha is None:
        return None
    if _is_real(alpha) or isinstance(alpha, bool):
        return check_alpha_number(alpha)
    return _param_array(ops, alpha, "alpha", like)


def _normalizer(ops, normalizer, like):
    if normalizer is None:
        return None
    if _is_real(normalizer) or isinstance(normalizer, bool):
        return check_normalizer_number(normalizer)
    # (a NumPy array's dtype is not read while a compiler traces: some cannot)
    if not (isinstance(normalizer, np.ndarray) and ops.tracing()) and \
            "bool" in str(getattr(normalizer, "dtype", "")):  # every framework's bool dtype
        raise TypeError("normalizer must be a number or a 0-d real array, got bool dtype")
    arr = ops.asarray(normalizer, "normalizer", like)
    if ops.shape(arr) == (1,):  # (a shape-[1] tensor as a single number, a common convention)
        arr = ops.squeeze(arr, 0)
    if ops.shape(arr) != ():
        raise ValueError(f"normalizer must be a number, a 0-d array or one of shape (1,), got shape "
                         f"{_fmt(ops.shape(arr))}")

    def check(lo, hi):
        if not (lo > 0 and _finite(lo)):
            raise ValueError(f"normalizer must be finite and > 0, got {lo}")
    _check_values(ops, arr, check, lambda a: (a > 0) & (a < math.inf),
                  "normalizer must be finite and > 0")
    return arr


def _binary_targets(ops, x, targets, ignore_index, label_smoothing, name="targets"):
    """(Targets as floats broadcast to x, and 1 minus them: see smooth_binary), the
    ignore mask (or None) and the mean's denominator."""
    shape = ops.shape(x)
    if ops.kind(targets) not in ("floating", "integer", "bool"):
        raise TypeError(f"{name} must be a real or bool array, got {ops.kind(targets)} dtype")
    check_broadcasts_to(name, ops.shape(targets), shape)
    y = ops.broadcast_like(ops.as_float(targets, x), x)
    mask = None
    if ignore_index is not None:
        keep = y != float(ignore_index)
        mask = ops.as_mask(keep, x)
        y = ops.where(keep, y, ops.full_like(y, 0.0))
    _check_unit(ops, y, name + (" (other than ignore_index)" if ignore_index is not None else ""))
    denom = _count(ops, x) if mask is None else ops.sum(mask)
    return smooth_binary(y, label_smoothing), mask, denom


def _count(ops, x, per: int = 1):
    """The number of elements of x (divided by `per`) as the mean's denominator: a
    tuple (n,) when the shape is static, else a 0-d array computed when run."""
    shape = ops.shape(x)
    if None in shape:
        return ops.count(x) / float(per)
    return (math.prod(shape) // per,)


def _elementwise_weight(ops, weight, x):
    if weight is None:
        return None
    w = _param_array(ops, weight, "weight", x)
    check_broadcasts_to("weight", ops.shape(w), ops.shape(x))
    return w


def _check_probabilities(ops, x):
    _check_unit(ops, x, "logits (probabilities, from_logits=False)")


def _binary_setup(ops, x, targets, *, alpha, weight, ignore_index, label_smoothing,
                  normalizer):
    """What the sigmoid loss and FL* share: alpha, weights, targets, mask, normalizer."""
    label_smoothing = check_label_smoothing(label_smoothing)
    ignore_index = check_ignore_index(ignore_index, allow_none=True, binary=True)
    alpha = _alpha(ops, alpha, x)
    if alpha is not None and not isinstance(alpha, float):
        check_broadcasts_to("alpha", ops.shape(alpha), ops.shape(x))
    coef = _elementwise_weight(ops, weight, x)
    normalizer = _normalizer(ops, normalizer, x)
    (y, ny), mask, denom = _binary_targets(ops, x, targets, ignore_index, label_smoothing)
    return alpha, _mul(coef, mask), y, ny, denom, normalizer


def _scale(ops, scale, *, reduction, denom, normalizer, divide=False):
    """The reduction's scale (see reduction_scale), unless a backend running blocks of a
    whole gave the whole's."""
    if scale is not None:
        return scale
    return reduction_scale(ops, reduction=reduction, denom=denom, normalizer=normalizer,
                           divide=divide)


def _left_out_at_zero(ops, x, coef, loss, grad):
    """(loss, grad) with 0 where an element's coefficient (its weight, times the ignore
    mask where there is one) is 0 and its logit is infinite or NaN (a masked or padded
    position), where the logits x may hold such values (see _extreme_logits): it adds
    exactly 0 and gets a zero gradient there, as at a finite logit (0 * inf was NaN, and
    so the whole mean). Finite logits keep their results, so a weight's own gradient (the
    autodiff of this formula) stays the element's loss where the weight is 0.
    (Selects on the results: one on x itself, which every term then reads, made a jitted
    JAX value_and_grad 1.5 times slower.)"""
    if coef is None or isinstance(coef, (int, float)) or not _extreme_logits(ops, x):
        return loss, grad
    finite = ops.abs(x) < math.inf  # (False for NaN too)
    zero = (coef <= 0) & (coef >= 0)

    def sel(v):
        return ops.where(finite, v, ops.where(zero, ops.full_like(v, 0.0), v))
    return sel(loss), None if grad is None else sel(grad)


def run_sigmoid_focal_loss(ops, logits, targets, *, gamma, alpha, pos_weight, weight,
                           ignore_index, label_smoothing, reduction, normalizer,
                           from_logits, need_grad, scale=None, epsilon=0.0):
    """`sigmoid_focal_loss` on a backend: see :func:`focalx.sigmoid_focal_loss`.

    Each run_* function returns (out, grad): out in the compute dtype, grad the
    derivative of out (summed over its elements for "none") w.r.t. the logits, or None.
    ``scale`` is for a backend that runs the loss on blocks of a whole (reduction "none"
    or "sum" on each): the whole's reduction scale, used instead of the block's own."""
    x = logits
    gamma = _gamma(ops, gamma, x)
    if not isinstance(gamma, float):  # an array: elementwise, broadcast as alpha
        check_broadcasts_to("gamma", ops.shape(gamma), ops.shape(x))
    epsilon = check_epsilon(epsilon)
    reduction = check_reduction(reduction)
    from_logits = check_from_logits(from_logits)
    if pos_weight is not None:
        pos_weight = _param_array(ops, pos_weight, "pos_weight", x)
        check_broadcasts_to("pos_weight", ops.shape(pos_weight), ops.shape(x))
    alpha, coef, y, ny, denom, normalizer = _binary_setup(
        ops, x, targets, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, normalizer=normalizer)
    if not from_logits:
        _check_probabilities(ops, x)
    scale = _scale(ops, scale, reduction=reduction, denom=denom, normalizer=normalizer)
    loss, grad = sigmoid_focal(ops, x, y, ny, coef=coef, alpha=alpha, pos_weight=pos_weight,
                               scale=scale, gamma=gamma, from_logits=from_logits,
                               need_grad=need_grad, epsilon=epsilon)
    if from_logits:
        loss, grad = _left_out_at_zero(ops, x, coef, loss, grad)
    return reduce(ops, loss, reduction=reduction), grad


def run_sigmoid_focal_loss_star(ops, logits, targets, *, gamma, beta, alpha, weight,
                                ignore_index, label_smoothing, reduction, normalizer,
                                need_grad, scale=None):
    """`sigmoid_focal_loss_star` on a backend: see :func:`focalx.sigmoid_focal_loss_star`
    (and :func:`run_sigmoid_focal_loss` for `scale`)."""
    gamma = check_gamma(gamma, strictly_positive=True)
    beta = check_beta(beta)
    reduction = check_reduction(reduction)
    alpha, coef, y, ny, denom, normalizer = _binary_setup(
        ops, logits, targets, alpha=alpha, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, normalizer=normalizer)
    scale = _scale(ops, scale, reduction=reduction, denom=denom, normalizer=normalizer)
    loss, grad = sigmoid_focal_star(ops, logits, y, ny, coef=coef, alpha=alpha, scale=scale,
                                    gamma=gamma, beta=beta, need_grad=need_grad)
    loss, grad = _left_out_at_zero(ops, logits, coef, loss, grad)
    return reduce(ops, loss, reduction=reduction), grad


def run_asymmetric_loss(ops, logits, targets, *, gamma_pos, gamma_neg, clip, weight,
                        ignore_index, label_smoothing, reduction, normalizer, need_grad,
                        scale=None):
    """`asymmetric_loss` on a backend: see :func:`focalx.asymmetric_loss` (and
    :func:`run_sigmoid_focal_loss` for `scale`)."""
    gamma_pos = check_exponent("gamma_pos", gamma_pos)
    gamma_neg = check_exponent("gamma_neg", gamma_neg)
    clip = check_clip(clip)
    reduction = check_reduction(reduction)
    _, coef, y, ny, denom, normalizer = _binary_setup(
        ops, logits, targets, alpha=None, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, normalizer=normalizer)
    scale = _scale(ops, scale, reduction=reduction, denom=denom, normalizer=normalizer)
    loss, grad = asymmetric(ops, logits, y, ny, coef=coef, scale=scale, gamma_pos=gamma_pos,
                            gamma_neg=gamma_neg, clip=clip, need_grad=need_grad)
    loss, grad = _left_out_at_zero(ops, logits, coef, loss, grad)
    return reduce(ops, loss, reduction=reduction), grad


def _class_indices(ops, x, targets, ignore_index, axis):
    """Class-index targets as the backend's index type, ignored samples replaced by class
    0, and the mask of the samples kept (None without ignore_index)."""
    idx = ops.as_index(targets)
    sample_coef = None
    if ignore_index is not None:
        keep = idx != ignore_index
        sample_coef = ops.as_mask(keep, x)
        idx = ops.where(keep, idx, ops.full_like(idx, 0))
    return idx, sample_coef


def _index_denominator(ops, x, C, w_y, sample_coef):
    """The mean's denominator for class-index targets: the sum of weight[target] over
    the samples kept, their number without weights, the number of samples without
    ignore_index either."""
    if w_y is not None:
        return ops.sum(_mul(w_y, sample_coef))
    if sample_coef is not None:
        return ops.sum(sample_coef)
    return _count(ops, x, C)


def softmax_mean_denominator(ops, logits, targets, *, weight, ignore_index, axis):
    """The denominator of :func:`run_softmax_focal_loss`'s mean for these arguments.

    For a backend that runs the loss on blocks of samples ("none" on each) and divides
    the sum of their losses by the whole's denominator. It checks what it uses (the
    class indices are checked before they index the weights), and raises the same
    errors as run_softmax_focal_loss, though perhaps not the one that would come first.
    """
    ignore_index = check_ignore_index(ignore_index, allow_none=True, binary=False)
    x = logits
    shape = ops.shape(x)
    axis = check_axis(axis, len(shape))
    C = shape[axis]
    if softmax_target_kind(shape, ops.shape(targets), ops.kind(targets), axis) == "probs":
        return _count(ops, x, C)
    idx, sample_coef = _class_indices(ops, x, targets, ignore_index, axis)
    w_y = None
    if weight is not None:
        _check_class_indices(ops, idx, C)
        w = _param_array(ops, weight, "weight", x)
        check_class_vector("weight", ops.shape(w), C, allow_scalar=False)
        w_y = ops.gather_classes(w, ops.expand_dims(idx, axis))
    if sample_coef is not None:
        sample_coef = ops.expand_dims(sample_coef, axis)
    return _index_denominator(ops, x, C, w_y, sample_coef)


def _check_class_indices(ops, idx, C):
    _check_values(ops, idx, lambda lo, hi: check_class_index_range(int(lo), int(hi), C),
                  lambda a: (a >= 0) & (a < C),
                  f"targets must be class indices in [0, {C - 1}] (or ignore_index)")


def run_softmax_focal_loss(ops, logits, targets, *, gamma, alpha, weight, ignore_index,
                           label_smoothing, reduction, normalizer, axis, from_logits,
                           need_grad, scale=None, epsilon=0.0):
    """`softmax_focal_loss` on a backend: see :func:`focalx.softmax_focal_loss` (and
    :func:`run_sigmoid_focal_loss` for `scale`)."""
    gamma = _gamma(ops, gamma, logits)
    epsilon = check_epsilon(epsilon)
    label_smoothing = check_label_smoothing(label_smoothing)
    reduction = check_reduction(reduction)
    from_logits = check_from_logits(from_logits)
    ignore_index = check_ignore_index(ignore_index, allow_none=True, binary=False)
    x = logits
    shape = ops.shape(x)
    if len(shape) == 0:
        raise ValueError("logits must have a class axis (at least 1 dimension), got a 0-d array")
    axis = check_axis(axis, len(shape))
    C = shape[axis]
    if C is None:
        raise ValueError(f"logits must have a static size on the class axis {axis}, got "
                         f"shape {_fmt(shape)}")
    if C == 0:
        raise ValueError(f"logits must have at least one class on axis {axis}, got shape "
                         f"{_fmt(shape)}")
    kind = softmax_target_kind(shape, ops.shape(targets), ops.kind(targets), axis)
    gamma_c = None  # a per-class gamma vector (length C)
    if not isinstance(gamma, float):
        check_class_vector("gamma", ops.shape(gamma), C, allow_scalar=True)
        if ops.shape(gamma) != ():
            gamma_c = gamma

    if alpha is not None:  # (a call fewer without: this runs at every call)
        alpha = _alpha(ops, alpha, x)
    k = None
    if alpha is not None and not isinstance(alpha, float):
        check_class_vector("alpha", ops.shape(alpha), C, allow_scalar=True)
        if ops.shape(alpha) != ():  # a per-class vector joins the class coefficient
            k, alpha = alpha, None
    w = None
    if weight is not None:
        w = _param_array(ops, weight, "weight", x)
        check_class_vector("weight", ops.shape(w), C, allow_scalar=False)
        k = _mul(k, w)
    if normalizer is not None:  # (see alpha)
        normalizer = _normalizer(ops, normalizer, x)
    if not from_logits:
        _check_probabilities(ops, x)

    if kind == "probs":
        q = ops.as_float(targets, x)
        _check_unit(ops, q, "targets (class probabilities)")
        q = smoothed_distribution(ops, q, label_smoothing, C)
        sample_coef = None
        denom = _count(ops, x, C)
    else:
        rng = None
        if ignore_index is not None and scale is None:
            # Where the class check reads the targets' values and none is ignore_index,
            # nothing is masked: the loss without the mask, over a denominator that is
            # the sample count (a number): the same loss (to the rounding of 1/count)
            # with a dozen fewer array operations. (Not in a block of a whole, whose
            # scale is the whole's.)
            rng = ops.concrete_range(ops.as_index(targets))
            if rng is not None and not rng[0] <= ignore_index <= rng[1] and \
                    -_EXACT_INT <= rng[0] and rng[1] <= _EXACT_INT:
                ignore_index = None
            else:
                rng = None  # (the check reads the indices with ignored ones replaced)
        idx, sample_coef = _class_indices(ops, x, targets, ignore_index, axis)
        # (inline, not _check_class_indices: under a bytecode-translating compiler the
        # check's host read breaks the graph, and where it breaks decides how much of
        # the loss becomes a static program, whose float constants may be float32)
        _check_values(ops, idx, lambda lo, hi: check_class_index_range(int(lo), int(hi), C),
                      lambda a: (a >= 0) & (a < C),
                      # (the message of an assert: none where the range is known)
                      f"targets must be class indices in [0, {C - 1}] (or ignore_index)"
                      if rng is None else None, rng)
        idx = ops.expand_dims(idx, axis)
        if sample_coef is not None:
            sample_coef = ops.expand_dims(sample_coef, axis)
        w_y = None if w is None else ops.gather_classes(w, idx)
        denom = _index_denominator(ops, x, C, w_y, sample_coef)
    # the reduction's scale joins a per-sample or per-class coefficient
    if scale is None:  # (_scale, inline: this runs at every call)
        scale = reduction_scale(ops, reduction=reduction, denom=denom, normalizer=normalizer,
                                divide=kind == "index")
    if kind == "index" and label_smoothing == 0 and from_logits:
        k_y = None if k is None else ops.gather_classes(k, idx)
        c = _fold(_mul(_mul(k_y, alpha), sample_coef), scale)
        if gamma_c is not None:  # each sample's focusing is its target class's
            gamma = ops.gather_classes(gamma_c, idx)
        loss, grad = softmax_focal_index(ops, x, idx, k_y=c, sample_coef=None,
                                         gamma=gamma, axis=axis, need_grad=need_grad,
                                         epsilon=epsilon)
    else:
        kv = None if k is None else ops.class_view(k, len(shape), axis)
        kv = _mul(kv, alpha)
        if sample_coef is not None:
            sample_coef = _fold(sample_coef, scale)
        else:
            kv = _fold(kv, scale)
        if kind == "index":
            q = smoothed_distribution(ops, ops.one_hot(idx, C, axis, x), label_smoothing, C)
        if gamma_c is not None:
            gamma = ops.class_view(gamma_c, len(shape), axis)
        loss, grad = softmax_focal_dense(ops, x, q, k=kv, sample_coef=sample_coef, gamma=gamma,
                                         axis=axis, from_logits=from_logits,
                                         need_grad=need_grad, epsilon=epsilon)
    loss = ops.squeeze(loss, axis)
    return reduce(ops, loss, reduction=reduction), grad


def run_asymmetric_softmax_loss(ops, logits, targets, *, gamma_pos, gamma_neg, ignore_index,
                                label_smoothing, reduction, normalizer, axis, need_grad,
                                scale=None):
    """`asymmetric_softmax_loss` on a backend: see :func:`focalx.asymmetric_softmax_loss`
    (and :func:`run_sigmoid_focal_loss` for `scale`). Class-index targets only: the
    asymmetric weights follow the hard target."""
    gamma_pos = check_exponent("gamma_pos", gamma_pos)
    gamma_neg = check_exponent("gamma_neg", gamma_neg)
    label_smoothing = check_label_smoothing(label_smoothing)
    reduction = check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index, allow_none=True, binary=False)
    x = logits
    shape = ops.shape(x)
    if len(shape) == 0:
        raise ValueError("logits must have a class axis (at least 1 dimension), got a 0-d array")
    axis = check_axis(axis, len(shape))
    C = shape[axis]
    if C is None or C == 0:
        raise ValueError(f"logits must have a static, non-zero size on the class axis {axis}, "
                         f"got shape {_fmt(shape)}")
    expected = shape[:axis] + shape[axis + 1:]
    if not _same_shape(tuple(ops.shape(targets)), expected):
        raise ValueError(f"targets of shape {_fmt(ops.shape(targets))} must be class indices of "
                         f"shape {_fmt(expected)} for logits of shape {_fmt(shape)} with class "
                         f"axis {axis}")
    if ops.kind(targets) != "integer":
        raise TypeError(f"targets must be class indices of an integer dtype, got "
                        f"{ops.kind(targets)} dtype")
    if normalizer is not None:
        normalizer = _normalizer(ops, normalizer, x)
    idx, sample_coef = _class_indices(ops, x, targets, ignore_index, axis)
    _check_class_indices(ops, idx, C)
    idx = ops.expand_dims(idx, axis)
    if sample_coef is not None:
        sample_coef = ops.expand_dims(sample_coef, axis)
    denom = _index_denominator(ops, x, C, None, sample_coef)
    scale = _scale(ops, scale, reduction=reduction, denom=denom, normalizer=normalizer)
    t = ops.one_hot(idx, C, axis, x)
    q = smoothed_distribution(ops, t, label_smoothing, C)
    loss, grad = softmax_asymmetric(ops, x, t, q, coef=_fold(sample_coef, scale),
                                    gamma_pos=gamma_pos, gamma_neg=gamma_neg, axis=axis,
                                    need_grad=need_grad)
    loss = ops.squeeze(loss, axis)
    return reduce(ops, loss, reduction=reduction), grad


# ---------------------------------------------------------------------------
# Generalized Focal Loss (Quality Focal Loss, Distribution Focal Loss; Li et al.,
# arXiv 2006.04388) and Varifocal Loss (Zhang et al., arXiv 2008.13367).
# ---------------------------------------------------------------------------

#: The run_* functions of these losses, which the backends' speed paths (torch's fused
#: kernel and row blocks, Paddle's host path and row blocks, TensorFlow's XLA cache) do
#: not take: they run op by op (and under each framework's own compilers).
PLAIN_RUNS = ("run_quality_focal_loss", "run_varifocal_loss", "run_distribution_focal_loss")


def check_vfl_alpha(alpha) -> float:
    """Varifocal Loss's alpha (the negatives' weight): a finite real number >= 0."""
    if isinstance(alpha, bool) or not _is_real(alpha):
        raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}")
    a = _to_float("alpha", alpha)
    if not _finite(a) or a < 0:
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    return a


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def split_quality_targets(targets):
    """(labels, scores) for Quality Focal Loss's detection layout (a tuple), else
    (None, targets) for the dense layout. Only a tuple is the pair (a list is array data
    for the NumPy reference)."""
    if isinstance(targets, tuple):
        if len(targets) != 2:
            raise ValueError("targets as a tuple must be the pair (labels, scores), got "
                             f"{len(targets)} items")
        return targets[0], targets[1]
    return None, targets


def check_label_range(lo: int, hi: int, num_classes: int) -> None:
    if hi > num_classes:
        raise ValueError(
            f"labels (targets[0]) must be class indices in [0, {num_classes - 1}], or "
            f"{num_classes} or negative for background, got values in [{lo}, {hi}]")


def _quality_targets(ops, x, targets, labels):
    """The dense quality target y (x's shape, values in [0, 1]) of either layout.

    Detection layout: labels (x's shape without the last axis, the class axis) and
    scores (the same shape): y is the score at the label's class and 0 elsewhere; a
    label equal to C (the number of classes) or negative is background (all 0), as in
    mmdet, where labels == num_classes is background."""
    shape = ops.shape(x)
    if labels is None:
        if ops.kind(targets) not in ("floating", "integer", "bool"):
            raise TypeError(f"targets must be a real array, got {ops.kind(targets)} dtype")
        check_broadcasts_to("targets", ops.shape(targets), shape)
        y = ops.broadcast_like(ops.as_float(targets, x), x)
        _check_unit(ops, y, "targets")
        return y
    if len(shape) == 0:
        raise ValueError("logits must have a class axis (the last) for (labels, scores) "
                         "targets, got a 0-d array")
    C = shape[-1]
    if C is None:
        raise ValueError(f"logits must have a static number of classes (last axis), got "
                         f"shape {_fmt(shape)}")
    lead = shape[:-1]
    if ops.kind(labels) != "integer":
        raise TypeError(f"labels (targets[0]) must have an integer dtype, got "
                        f"{ops.kind(labels)} dtype")
    if not _same_shape(ops.shape(labels), lead):
        raise ValueError(f"labels (targets[0]) of shape {_fmt(ops.shape(labels))} must have "
                         f"the logits' shape without the class axis, {_fmt(lead)}")
    if ops.kind(targets) != "floating":
        raise TypeError(f"scores (targets[1]) must have a floating dtype, got "
                        f"{ops.kind(targets)} dtype")
    if not _same_shape(ops.shape(targets), lead):
        raise ValueError(f"scores (targets[1]) of shape {_fmt(ops.shape(targets))} must have "
                         f"the logits' shape without the class axis, {_fmt(lead)}")
    idx = ops.as_index(labels)
    _check_values(ops, idx, lambda lo, hi: check_label_range(int(lo), int(hi), C),
                  lambda a: a <= C,
                  f"labels (targets[0]) must be class indices in [0, {C - 1}], or {C} or "
                  "negative for background")
    s = ops.as_float(targets, x)
    _check_unit(ops, s, "scores (targets[1])")
    fg = (idx >= 0) & (idx < C)
    safe = ops.where(fg, idx, ops.full_like(idx, 0))
    s = ops.where(fg, s, ops.full_like(s, 0.0))
    axis = len(shape) - 1
    return ops.one_hot(ops.expand_dims(safe, axis), C, axis, x) * ops.expand_dims(s, axis)


def _signed_ratio(ops, a, s):
    """a / s, 0 where s == 0 (s of either sign)."""
    zero = (s <= 0) & (s >= 0)
    safe = ops.where(zero, ops.full_like(s, 1.0), s)
    return ops.where(zero, ops.full_like(s, 0.0), _ratio(ops, a, safe))


def quality_focal(ops, x, y, *, coef, scale, beta: float, need_grad: bool):
    """Elementwise Quality Focal Loss |y - p|^beta BCE(x, y) and its derivative.

    With s = p - y written as (1-y)p - y(1-p) (exactly p or -(1-p) for hard targets),
    d|s|/dx = sign(s) p(1-p) and dBCE/dx = s, so

        dQFL/dx = c s + beta |s|^beta BCE p(1-p) / s = c s + beta QFL p(1-p) / s,

    with c = w |s|^beta: |s|^(beta-1) never appears alone, and the second term is
    bounded (p(1-p)/|s| is finite for every s != 0 of the compute dtype). At s == 0
    exactly it is defined as 0 (the subgradient of |s| at 0, which also makes
    beta < 1, where the one-sided derivatives are infinite, finite)."""
    ny = 1.0 - y
    lean = getattr(ops, "lean_sigmoid", False)
    e = ops.exp(-ops.abs(x))
    xp, xn = ops.maximum0(x), ops.minimum0(x)
    _l, p, q = _sigmoid_terms(ops, x, e, lean, xp, xn)
    s = ny * p - y * q  # p - y
    c = _mul(_mul(coef, scale), _focal_factor(ops, ops.abs(s), beta))
    cy, cn = _mul(c, y), _mul(c, ny)
    loss = (cn * xp - cy * xn) + (cy + cn) * _l
    if not need_grad:
        return loss, None
    grad = cn * p - cy * q  # c * (p - y)
    if beta == 0:
        return loss, grad
    return loss, grad + beta * _signed_ratio(ops, p * q, s) * loss


def varifocal(ops, x, y, *, coef, scale, alpha: float, gamma: float, iou_weighted: bool,
              need_grad: bool):
    """Elementwise Varifocal Loss and its derivative.

    Positives (y > 0): k BCE(x, y) with k = y (iou_weighted) or 1; negatives (y == 0):
    alpha p^gamma BCE(x, 0) = alpha p^gamma softplus(x). The weight is differentiated
    with the rest (as autograd does through mmdet's and ultralytics' formulas, which do
    not detach it): for a negative, d/dx [p^gamma softplus(x)] = p^gamma (p + gamma
    (1-p) softplus(x)), with no p^(gamma-1) alone."""
    ny = 1.0 - y
    lean = getattr(ops, "lean_sigmoid", False)
    e = ops.exp(-ops.abs(x))
    xp, xn = ops.maximum0(x), ops.minimum0(x)
    _l, p, q = _sigmoid_terms(ops, x, e, lean, xp, xn)
    pos = y > 0
    f = _focal_factor(ops, p, gamma)
    neg_w = alpha if f is None else alpha * f
    if isinstance(neg_w, float):
        neg_w = ops.full_like(x, neg_w)
    pos_w = y if iou_weighted else ops.full_like(x, 1.0)
    c = _mul(_mul(coef, scale), ops.where(pos, pos_w, neg_w))
    cy, cn = c * y, c * ny
    loss = (cn * xp - cy * xn) + (cy + cn) * _l
    if not need_grad:
        return loss, None
    grad = cn * p - cy * q  # c * (p - y)
    if gamma == 0:
        return loss, grad
    return loss, grad + ops.where(pos, ops.full_like(x, 0.0), (gamma * q) * loss)


def _sigmoid_reduction(ops, x, weight, reduction, normalizer):
    """(coef, scale) of QFL / VFL: the elementwise weight and the reduction's scale
    (a mean over every element of the logits)."""
    coef = _elementwise_weight(ops, weight, x)
    normalizer = _normalizer(ops, normalizer, x)
    return coef, reduction_scale(ops, reduction=reduction, denom=_count(ops, x),
                                 normalizer=normalizer)


def run_quality_focal_loss(ops, logits, targets, *, labels=None, beta, weight, reduction,
                           normalizer, need_grad, scale=None):
    """`quality_focal_loss` on a backend: see :func:`focalx.quality_focal_loss`. The
    backend splits the detection layout's pair (split_quality_targets): `targets` is
    then the scores and `labels` the class indices."""
    beta = check_exponent("beta", beta)
    reduction = check_reduction(reduction)
    x = logits
    y = _quality_targets(ops, x, targets, labels)
    coef, own = _sigmoid_reduction(ops, x, weight, reduction, normalizer)
    loss, grad = quality_focal(ops, x, y, coef=coef, scale=own if scale is None else scale,
                               beta=beta, need_grad=need_grad)
    loss, grad = _left_out_at_zero(ops, x, coef, loss, grad)
    return reduce(ops, loss, reduction=reduction), grad


def run_varifocal_loss(ops, logits, targets, *, alpha, gamma, iou_weighted, weight, reduction,
                       normalizer, need_grad, scale=None):
    """`varifocal_loss` on a backend: see :func:`focalx.varifocal_loss`."""
    alpha = check_vfl_alpha(alpha)
    gamma = check_exponent("gamma", gamma)
    iou_weighted = check_bool(iou_weighted, "iou_weighted")
    reduction = check_reduction(reduction)
    x = logits
    y = _quality_targets(ops, x, targets, None)
    coef, own = _sigmoid_reduction(ops, x, weight, reduction, normalizer)
    loss, grad = varifocal(ops, x, y, coef=coef, scale=own if scale is None else scale,
                           alpha=alpha, gamma=gamma, iou_weighted=iou_weighted,
                           need_grad=need_grad)
    loss, grad = _left_out_at_zero(ops, x, coef, loss, grad)
    return reduce(ops, loss, reduction=reduction), grad


def check_dfl_ignore_index(ignore_index):
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not _is_real(ignore_index):
        raise TypeError(f"ignore_index must be a number or None, got "
                        f"{type(ignore_index).__name__}")
    v = _to_float("ignore_index", ignore_index)
    if not _finite(v) or v >= 0:
        raise ValueError(f"ignore_index must be a finite negative number (targets are in "
                         f"[0, n_bins]), got {ignore_index!r}")
    return v


def check_dfl_target_range(lo, hi, n_bins: int) -> None:
    if not (lo >= 0.0 and hi <= n_bins):  # also rejects NaN
        raise ValueError(f"targets must lie in [0, {n_bins}] (n_bins, the logits' class "
                         f"size minus 1) or equal ignore_index, got values in [{lo}, {hi}]")


def run_distribution_focal_loss(ops, logits, targets, *, weight, ignore_index, reduction,
                                normalizer, axis, need_grad, scale=None):
    """`distribution_focal_loss` on a backend: see :func:`focalx.distribution_focal_loss`.

    The two-hot distribution q (q_l = y_r - y at y_l = min(floor(y), n - 1), q_r = y -
    y_l at y_r = y_l + 1; at y == n that is q_n = 1) through the softmax loss's
    machinery at gamma = 0: loss -sum_c q_c log p_c, gradient p - q."""
    reduction = check_reduction(reduction)
    ignore_index = check_dfl_ignore_index(ignore_index)
    x = logits
    shape = ops.shape(x)
    if len(shape) == 0:
        raise ValueError("logits must have a class (bin) axis, got a 0-d array")
    axis = check_axis(axis, len(shape))
    C = shape[axis]
    if C is None or C < 2:
        raise ValueError(f"logits must have a static size >= 2 (n_bins + 1) on the class "
                         f"axis {axis}, got shape {_fmt(shape)}")
    n_bins = C - 1
    expected = shape[:axis] + shape[axis + 1:]
    if not _same_shape(ops.shape(targets), expected):
        raise ValueError(f"targets of shape {_fmt(ops.shape(targets))} must have the logits' "
                         f"shape without the class axis {axis}, {_fmt(expected)}")
    if ops.kind(targets) not in ("floating", "integer"):
        raise TypeError(f"targets must be a real array, got {ops.kind(targets)} dtype")
    y = ops.as_float(targets, x)
    mask = None
    if ignore_index is not None:
        keep = y != ignore_index
        mask = ops.as_mask(keep, x)
        y = ops.where(keep, y, ops.full_like(y, 0.0))
    _check_values(ops, y, lambda lo, hi: check_dfl_target_range(lo, hi, n_bins),
                  lambda a: (a >= 0) & (a <= n_bins),
                  f"targets must lie in [0, {n_bins}] (or equal ignore_index)")
    coef = None
    if weight is not None:
        coef = _param_array(ops, weight, "weight", x)
        check_broadcasts_to("weight", ops.shape(coef), expected, "targets")
        coef = ops.broadcast_like(coef, y)
    normalizer = _normalizer(ops, normalizer, x)
    denom = (_count(ops, x, C) if mask is None else ops.sum(mask))
    if scale is None:
        scale = reduction_scale(ops, reduction=reduction, denom=denom, normalizer=normalizer)
    base = _mul(coef, mask)
    # the left bin: floor(y) (a cast truncates, and y >= 0), at most n - 1; clamped to
    # [0, n - 1] also where a failed value check could not raise (traced, on a device),
    # so that no index leaves the bins
    left = ops.as_index(y)
    left = ops.where(left < n_bins - 1, left, ops.full_like(left, n_bins - 1))
    left = ops.where(left > 0, left, ops.full_like(left, 0))
    w_right = y - ops.as_float(left, x)
    w_left = 1.0 - w_right
    left = ops.expand_dims(left, axis)
    q = (ops.one_hot(left, C, axis, x) * ops.expand_dims(w_left, axis) +
         ops.one_hot(left + 1, C, axis, x) * ops.expand_dims(w_right, axis))
    if base is None:  # the reduction's scale alone (a number, or a 0-d array)
        k, sample = _fold(None, scale), None
    else:  # per sample, with a size-1 class axis
        k, sample = None, ops.expand_dims(_fold(base, scale), axis)
    loss, grad = softmax_focal_dense(ops, x, q, k=k, sample_coef=sample, gamma=0.0, axis=axis,
                                     from_logits=True, need_grad=need_grad)
    loss = ops.squeeze(loss, axis)
    return reduce(ops, loss, reduction=reduction), grad


# ---------------------------------------------------------------------------
# The fused linear + softmax focal loss (issue 19): the softmax focal loss of
# hidden @ W.T + b, on blocks of rows, never holding the N x V logits.
# ---------------------------------------------------------------------------

#: Logits per block when chunk_size is None: 2**22 (16 MiB of float32, 128 rows of a 32K
#: vocabulary). Every block reads the V x H weight twice and reads and writes the V x H
#: weight-gradient accumulator once, so blocks of fewer rows than about H spend more on
#: that traffic than on their logits (slow on a CPU); more rows hold more memory (a
#: block's logits, softmax and gradient are the peak, beside the gradients).
LINEAR_CHUNK_ELEMENTS = 2 ** 22


def check_linear_module(in_features, num_classes, **class_vectors) -> None:
    """A fused linear loss module's constructor arguments: positive integer sizes, and
    each per-class hyperparameter given as a vector (name=its shape, None if a scalar or
    absent) of length num_classes."""
    for name, v in (("in_features", in_features), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    for name, shape in class_vectors.items():
        if shape is not None:
            check_class_vector(name, shape, int(num_classes), allow_scalar=name != "weight")


def check_linear_module_inputs(input_shape, target_shape, in_features: int, *,
                               target_name: str = "target",
                               trailing_one: bool = False) -> None:
    """A fused linear loss module's forward arguments: input (..., in_features) and
    class indices of the input's leading shape (or that with a trailing 1, as Paddle's
    labels may be), each row paired with its own target. Sizes unknown until run time
    (None) match any."""
    ins, ts = tuple(input_shape), tuple(target_shape)
    if not ins or not _same_dim(ins[-1], in_features):
        raise ValueError(f"input must have shape (..., {in_features}) (in_features last), "
                         f"got shape {_fmt(ins)}")
    lead = ins[:-1]
    if not (_same_shape(ts, lead) or (trailing_one and _same_shape(ts, lead + (1,)))):
        also = f" or {_fmt(lead + (1,))}" if trailing_one else ""
        raise ValueError(f"{target_name} must have shape {_fmt(lead)}{also}, the leading "
                         f"dimensions of input of shape {_fmt(ins)}, got shape {_fmt(ts)}")


def check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if type(chunk_size) is not int and (not isinstance(chunk_size, numbers.Integral) or
                                        isinstance(chunk_size, bool)):
        raise TypeError(f"chunk_size must be an int >= 1 or None, got "
                        f"{type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (rows per block), got {chunk_size!r}")
    return int(chunk_size)


def linear_chunk_rows(n: int, num_classes: int, chunk_size=None,
                      elements: int = LINEAR_CHUNK_ELEMENTS) -> int:
    """Rows per block: chunk_size, or blocks of about `elements` logits."""
    rows = chunk_size or max(1, elements // max(num_classes, 1))
    return max(1, rows if n is None else min(rows, n))


def check_linear_inputs(ops, hidden, linear_weight, targets, linear_bias):
    """(N, H, V) after checking the three (or four) arrays' kinds and shapes, each error
    naming its argument."""
    for name, a in (("hidden", hidden), ("linear_weight", linear_weight)) + (
            () if linear_bias is None else (("linear_bias", linear_bias),)):
        if ops.kind(a) != "floating":
            raise TypeError(f"{name} must be a floating array, got {ops.kind(a)} dtype")
    hs, ws = tuple(ops.shape(hidden)), tuple(ops.shape(linear_weight))
    if len(hs) != 2:
        raise ValueError(f"hidden must be a 2-D array (N, H), got shape {_fmt(hs)}")
    if len(ws) != 2:
        raise ValueError(f"linear_weight must be a 2-D array (V, H), got shape {_fmt(ws)}")
    N, H = hs
    V = ws[0]
    if not _same_dim(ws[1], H):
        raise ValueError(f"linear_weight of shape {_fmt(ws)} must be (V, H) with H = {H}, "
                         f"the features of hidden of shape {_fmt(hs)}")
    if not V:
        raise ValueError(f"linear_weight must have at least one class (V >= 1), got shape "
                         f"{_fmt(ws)}")
    if linear_bias is not None and not _same_shape(tuple(ops.shape(linear_bias)), (V,)):
        raise ValueError(f"linear_bias must have shape ({V},), one value per class of "
                         f"linear_weight, got shape {_fmt(ops.shape(linear_bias))}")
    if ops.kind(targets) != "integer":
        raise TypeError(f"targets must be class indices of an integer dtype, got "
                        f"{ops.kind(targets)} dtype")
    if not _same_shape(tuple(ops.shape(targets)), (N,)):
        raise ValueError(f"targets must have shape ({N},), one class index per row of hidden, "
                         f"got shape {_fmt(ops.shape(targets))}")
    return N, (ws[1] if H is None else H), V


def run_linear_softmax_focal_loss(ops, hidden, linear_weight, targets, *, linear_bias, gamma,
                                  alpha, weight, ignore_index, label_smoothing, reduction,
                                  normalizer, chunk_size, need_grad, cotangent=None):
    """`linear_softmax_focal_loss` on a backend: see
    :func:`focalx.linear_softmax_focal_loss`.

    The softmax focal loss (:func:`run_softmax_focal_loss`, its formulas and closed-form
    logit gradient G, unchanged) of each block of rows' logits ``h W^T + b``, with the
    whole's reduction scale; then, by the chain rule, ``G W`` (the block's rows of the
    gradient w.r.t. hidden), ``G^T h`` and the column sums of G (the block's share of
    the gradients w.r.t. the weight and the bias). No block's logits outlive it.

    Returns (out, grads): grads = (d hidden, d linear_weight, d linear_bias or None) of
    out (summed over its elements for "none"), or None. ``cotangent`` (shape (N,), for
    "none"): the gradients of ``sum(cotangent * out)`` instead (a backward pass that
    recomputes the blocks): it joins each row's coefficient, as the reduction's scale.
    """
    N, H, V = check_linear_inputs(ops, hidden, linear_weight, targets, linear_bias)
    chunk_size = check_chunk_size(chunk_size)
    # the hyperparameters, checked and converted once (each block takes them as arrays)
    gamma = _gamma(ops, gamma, hidden)
    if not isinstance(gamma, float):
        check_class_vector("gamma", ops.shape(gamma), V, allow_scalar=True)
    check_label_smoothing(label_smoothing)
    reduction = check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index, allow_none=True, binary=False)
    alpha = _alpha(ops, alpha, hidden)
    if alpha is not None and not isinstance(alpha, float):
        check_class_vector("alpha", ops.shape(alpha), V, allow_scalar=True)
    w = None
    if weight is not None:
        w = _param_array(ops, weight, "weight", hidden)
        check_class_vector("weight", ops.shape(w), V, allow_scalar=False)
    normalizer = _normalizer(ops, normalizer, hidden)
    # the whole's mean denominator (as run_softmax_focal_loss's for class indices)
    idx, keep = _class_indices(ops, hidden, targets, ignore_index, 0)
    _check_class_indices(ops, idx, V)
    w_y = None if w is None else ops.gather_classes(w, idx)
    if w_y is not None or keep is not None:
        denom = _index_denominator(ops, hidden, V, w_y, keep)
    elif N is not None:
        denom = (N,)
    else:  # (the number of rows, counted when the graph runs)
        denom = _count(ops, hidden, H)
    scale = reduction_scale(ops, reduction=reduction, denom=denom, normalizer=normalizer,
                            divide=True)
    kept = padded = None
    if N is None and hasattr(ops, "scan_blocks"):
        # A number of rows known only when the graph runs (a Keras batch of size None,
        # an InputSpec's None): blocks of padded rows, each row weighted by its
        # coefficient (1, the padding 0; or the cotangent, padded with zeros), which
        # joins the block's scale as a cotangent does.
        # (each padded row is H values of hidden as well as V logits: a small V with a
        # large H would pad far more hidden rows than the batch has)
        rows = linear_chunk_rows(None, max(V, H), chunk_size)
        coef = cotangent if cotangent is not None else ops.full_like(hidden[:, 0], 1.0)
        padded = getattr(ops, "pad_rows", lambda *_: None)((hidden, targets, coef), rows)
    if N is None and padded is None:
        # ... or, where the backend cannot, all rows as one block
        warnings.warn(
            "focalx: linear_softmax_focal_loss got hidden with a number of rows unknown "
            "until run time: it runs as one block, holding the N x V logits at once (the "
            "same numbers, not the memory saving); give the batch a static size (Keras: "
            "drop_remainder=True; Paddle: an InputSpec with the batch size) for blocks",
            RuntimeWarning, stacklevel=2)
    elif keep is not None and hasattr(ops, "kept_rows"):
        # Ignored rows add 0 and get a zero gradient: where their positions can be read
        # without a host sync, the blocks run on the other rows only (their loss and
        # gradient rows are put back among zeros). The denominator is the whole's, above.
        kept = ops.kept_rows(ops.as_index(targets) != ignore_index)
        if kept is not None and ops.shape(kept)[0] == N:
            kept = None
    if kept is not None:
        full_n = N
        hidden, targets = ops.take_rows(hidden, kept), ops.take_rows(targets, kept)
        if cotangent is not None:
            cotangent = ops.take_rows(cotangent, kept)
        N = ops.shape(kept)[0]
    if N is not None:
        rows = linear_chunk_rows(N, V, chunk_size)
    block_reduction = "none" if reduction == "none" else "sum"

    block_params = dict(gamma=gamma, alpha=alpha, weight=w, ignore_index=ignore_index,
                        label_smoothing=label_smoothing, reduction=block_reduction,
                        normalizer=None, axis=1, from_logits=True, need_grad=need_grad)

    def block_loss(ops, logits, t, block_scale):
        return run_softmax_focal_loss(ops, logits, t, scale=block_scale, **block_params)

    def part(ops, h, t, block_scale):
        # a block's rows (or a part of them, split_rows): their logits, loss and logit
        # gradient G, then by the chain rule G W (their rows of d hidden) and G's column
        # sums (their share of d bias)
        logits = ops.matmul(h, linear_weight, False, True)
        if linear_bias is not None:
            logits = logits + linear_bias
        if hasattr(ops, "loss_block"):
            out, g = ops.loss_block(block_loss, logits, t, block_scale, block_params)
        else:
            out, g = block_loss(ops, logits, t, block_scale)
        del logits
        if not need_grad:
            return out, None, None, None
        d_b = None if linear_bias is None else ops.sum(g, axis=0)
        return out, g, ops.matmul(g, linear_weight, False, False), d_b

    def joined(parts, axis_0=True):
        if not isinstance(parts, list):
            return parts
        if axis_0:
            return parts[0] if len(parts) == 1 else ops.concat(parts, 0)
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total

    def left_out_rows_at_zero(hp, tp):
        # A row left out (ignored, or its target class of weight 0) has a zero row of G,
        # and adds 0 * h to G^T h: 0 even where its hidden state is not finite (a padded
        # position's NaN gave a NaN weight gradient). Its R x H rows, not its R x V logits.
        if ignore_index is None and w is None:
            return hp
        idx_p, keep_p = _class_indices(ops, hp, tp, ignore_index, 0)
        coef = _mul(None if w is None else ops.gather_classes(w, idx_p), keep_p)
        zero = ops.expand_dims((coef <= 0) & (coef >= 0), 1)
        return ops.where(zero, ops.full_like(hp, 0.0), hp)

    def step(carry, h, t, cot):
        # one block, then its share of d weight (G^T h) added to the carry's (None for
        # the first block), and of d bias
        block_scale = scale
        if cot is not None:
            cot = ops.expand_dims(cot, 1)
            block_scale = Divide(scale.div, _mul(scale.mult, cot)) if isinstance(
                scale, Divide) else _mul(scale, cot)
        if hasattr(ops, "split_rows"):
            out, g, d_h, d_b = ops.split_rows(part, (h, t, block_scale),
                                              block_reduction != "none", V)
        else:
            out, g, d_h, d_b = part(ops, h, t, block_scale)
        total, d_weight, d_bias = (None, None, None) if carry is None else carry
        if reduction != "none":
            total, out = (out if total is None else total + out), None
        if need_grad:
            # G may come in consecutive parts of its rows (split_rows): G^T h part by
            # part, with the part's rows of h
            parts, lo = [(g, h, t)], 0
            if isinstance(g, list):
                parts = []
                for gp in g:
                    hi = lo + ops.shape(gp)[0]
                    parts.append((gp, h[lo:hi], t[lo:hi]))
                    lo = hi
            for gp, hp, tp in parts:
                hp = left_out_rows_at_zero(hp, tp)
                if hasattr(ops, "add_matmul"):
                    d_weight = ops.add_matmul(d_weight, gp, hp, True, False)
                elif d_weight is None:
                    d_weight = ops.matmul(gp, hp, True, False)
                else:
                    d_weight = d_weight + ops.matmul(gp, hp, True, False)
            d_h = joined(d_h)
            if linear_bias is not None:
                d_b = joined(d_b, axis_0=False)
                d_bias = d_b if d_bias is None else d_bias + d_b
        return (total, d_weight, d_bias), (out, d_h)

    def rows_of(a, start, stop):
        return None if a is None else a[start:stop]

    outs, d_hidden, carry, start = [], [], None, 0
    if padded is not None:
        # the first block makes the carry (empty where N is 0), the backend's loop the rest
        (hp, tp, cp), unpad = padded
        carry, (out, d_h) = step(None, hp[:rows], tp[:rows], cp[:rows])
        carry, (out_r, d_h_r) = ops.scan_blocks(step, carry, [hp[rows:], tp[rows:], cp[rows:]],
                                                rows, (out, d_h))
        outs += [out, out_r]
        d_hidden += [d_h, d_h_r]
    elif N is None:  # (one block of all rows)
        carry, (out, d_h) = step(None, hidden, targets, cotangent)
        outs.append(out)
        d_hidden.append(d_h)
    while N is not None:  # (once where N is 0: the empty block's loss and gradients)
        stop = min(start + rows, N)
        carry, (out, d_h) = step(carry, *(rows_of(a, start, stop)
                                          for a in (hidden, targets, cotangent)))
        outs.append(out)
        d_hidden.append(d_h)
        start = stop
        scanned = (N - start) // rows * rows
        scan = None
        if hasattr(ops, "scan_blocks") and scanned > rows:
            # the full blocks after the first in the backend's loop (the first made
            # the carry and the ys of a full block)
            scan = ops.scan_blocks(step, carry, [rows_of(a, start, start + scanned)
                                                 for a in (hidden, targets, cotangent)],
                                   rows, (out, d_h))
        if scan is not None:
            carry, (out, d_h) = scan
            outs.append(out)
            d_hidden.append(d_h)
            start += scanned
        if start >= N:
            break
    out, d_weight, d_bias = carry
    if d_weight is not None and hasattr(ops, "matmul_sum"):
        d_weight = ops.matmul_sum(d_weight)
    if reduction == "none":
        out = outs[0] if len(outs) == 1 else ops.concat(outs, 0)
        if padded is not None:
            out = unpad(out)
    if kept is not None and reduction == "none":
        out = ops.put_rows(out, kept, full_n)
    if not need_grad:
        return out, None
    dh = d_hidden[0] if len(d_hidden) == 1 else ops.concat(d_hidden, 0)
    if padded is not None:
        dh = unpad(dh)
    if kept is not None:
        dh = ops.put_rows(dh, kept, full_n)
    return out, (dh, d_weight, d_bias)
