"""One tolerance table for every backend: it depends on the dtype only.

A value passes when

    |got - want| <= rtol * |want| + atol * scale + tiny

``want`` is the oracle's value at the inputs the backend received (see
generate.py) and ``scale`` the case's reduction factor (1 for "none"/"sum",
1/denominator for "mean", divided by any normalizer).

- ``rtol`` is a number of machine epsilons of the output dtype.
- ``atol`` is 2 epsilons of the compute dtype (float16/bfloat16 compute in
  float32), in nats: a floating log-softmax rounds a log-probability near 0 with
  about one epsilon of absolute error, so a loss or gradient below about
  ``atol * scale`` can only be matched absolutely. The price: such tiny values
  are checked only to that absolute level (in float32, a gradient of 1e-7 with
  the wrong sign passes; float64 catches it).
- ``tiny`` is the output dtype's smallest subnormal: what can be represented
  near 0 at all (it matters for float16, whose subnormals start at 6e-8).

Infinities must match exactly (an expected value beyond the output dtype's largest
finite value is expected as an infinity); NaN never passes.

On a backend whose runtime flushes subnormal numbers (JAX and TensorFlow on the CPU), the
values that depend on an input below the smallest normal number are not compared
(MIN_NORMAL); the report counts them.
"""

from __future__ import annotations

EPS = {"float64": 2.0 ** -52, "float32": 2.0 ** -23, "float16": 2.0 ** -10,
       "bfloat16": 2.0 ** -7}
TINY = {"float64": 2.0 ** -1074, "float32": 2.0 ** -149, "float16": 2.0 ** -24,
        "bfloat16": 2.0 ** -133}
#: the largest finite value; beyond it the output dtype can only hold +-inf
MAX = {"float64": 1.7976931348623157e308, "float32": 3.4028234663852886e38,
       "float16": 65504.0, "bfloat16": 3.3895313892515355e38}
COMPUTE = {"float64": "float64", "float32": "float32", "float16": "float32",
           "bfloat16": "float32"}
#: the smallest normal number of each dtype's compute dtype. JAX's and TensorFlow's CPU
#: runtimes read a smaller (subnormal) input as 0, or take its log inaccurately (float32
#: log(1e-40) = -103.97): on those backends, values that depend on such an input are not
#: compared (see runner.flushed_values), and the report says how many.
MIN_NORMAL = {"float64": 2.2250738585072014e-308, "float32": 1.1754943508222875e-38,
              "float16": 1.1754943508222875e-38, "bfloat16": 1.1754943508222875e-38}

#: output-dtype epsilons allowed relative to the value
RTOL_EPS = {"float64": 64, "float32": 64, "float16": 2, "bfloat16": 2}
#: compute-dtype epsilons allowed absolutely (times the case's scale)
ATOL_EPS = 2


def tolerance(dtype: str) -> tuple[float, float, float]:
    """(rtol, atol, tiny) for results in `dtype`."""
    return RTOL_EPS[dtype] * EPS[dtype], ATOL_EPS * EPS[COMPUTE[dtype]], TINY[dtype]


TABLE = {dt: tolerance(dt) for dt in EPS}
