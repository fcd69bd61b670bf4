r"""Gamma schedules: gamma as a function of the training step (or epoch), framework-free.

Some recipes raise gamma in stages during training (start near cross-entropy, focus
later). A schedule here is, as optax's schedules are, a callable ``step -> gamma``:

.. code-block:: python

    sched = focalx.gamma_schedule("step", boundaries=[1000, 5000], values=[0.0, 1.0, 2.0])
    sched = focalx.gamma_schedule("linear", start=0.0, end=2.0, steps=10_000)
    loss = fx.sigmoid_focal_loss(logits, targets, gamma=sched(step))

``sched(step)`` takes a Python (or NumPy) integer or float and returns a Python float, so
an eager call takes the scalar gamma's own path. Under a compiler, pass the value as a
0-d array of the framework (``jnp.asarray(sched(step))``, ``tf.constant(...)`` or a
``tf.Variable`` assigned every step, a torch or paddle 0-d tensor) rather than as a
Python float: a compiled function then takes gamma as a run-time input and compiles once
for every value (docs/usage.md, "Gamma schedules", has the call per framework and what
was measured).

Stepwise: ``values[i]`` for ``boundaries[i - 1] <= step < boundaries[i]`` (``values[0]``
before the first boundary, ``values[-1]`` from the last), as
``optax.piecewise_constant_schedule`` with the values given rather than scales.
Linear: ``start`` until step ``begin``, then linearly to ``end`` at ``begin + steps``, and
``end`` after it, as ``optax.linear_schedule(start, end, steps, begin)``.
"""

from __future__ import annotations

import bisect
import math
import numbers
from typing import Literal, Optional, Sequence

__all__ = ["GammaSchedule", "gamma_schedule"]

_KINDS = ("step", "linear")


def _gamma_value(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    f = float(v) if not (isinstance(v, numbers.Rational) and abs(v) > 1e308) else math.inf
    if not (0.0 <= f < math.inf):  # (also rejects NaN)
        raise ValueError(f"{name} must be a gamma: finite and >= 0, got {v!r}")
    return f


def _count(name: str, v, *, positive: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < (1 if positive else 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {v!r}")
    return int(v)


class GammaSchedule:
    """A gamma schedule: ``schedule(step) -> float``. Made by :func:`gamma_schedule`."""

    __slots__ = ("kind", "boundaries", "values", "start", "end", "steps", "begin")

    def __init__(self, kind, *, boundaries=(), values=(), start=0.0, end=0.0, steps=1,
                 begin=0):
        self.kind = kind
        self.boundaries, self.values = tuple(boundaries), tuple(values)
        self.start, self.end, self.steps, self.begin = start, end, steps, begin

    def __call__(self, step) -> float:
        """gamma at `step`: a Python (or NumPy) number >= 0, an int or a float (a fraction
        of an epoch, say). Returns a Python float."""
        if isinstance(step, bool) or not isinstance(step, numbers.Real):
            raise TypeError(
                f"step must be a Python or NumPy number, got {type(step).__name__}: a "
                "schedule runs on the host; pass its value to a compiled step as a 0-d array")
        s = float(step)
        if not (0.0 <= s < math.inf):
            raise ValueError(f"step must be finite and >= 0, got {step!r}")
        if self.kind == "step":
            return self.values[bisect.bisect_right(self.boundaries, s)]
        frac = min(max((s - self.begin) / self.steps, 0.0), 1.0)
        # (the ends exactly: start at frac 0, end at frac 1)
        return self.end if frac == 1.0 else self.start + (self.end - self.start) * frac

    def __repr__(self) -> str:
        if self.kind == "step":
            return (f"gamma_schedule('step', boundaries={list(self.boundaries)}, "
                    f"values={list(self.values)})")
        return (f"gamma_schedule('linear', start={self.start}, end={self.end}, "
                f"steps={self.steps}, begin={self.begin})")


def gamma_schedule(kind: Literal["step", "linear"] = "step", *,
                   boundaries: Optional[Sequence[int]] = None,
                   values: Optional[Sequence[float]] = None,
                   start: Optional[float] = None, end: Optional[float] = None,
                   steps: Optional[int] = None, begin: int = 0) -> GammaSchedule:
    r"""A gamma schedule, ``step -> gamma``, for any backend (it imports no framework).

    Args:
      kind: ``"step"`` (piecewise constant) or ``"linear"``.
      boundaries: ``"step"``: the steps where gamma changes, ints >= 0, strictly
        increasing.
      values: ``"step"``: gamma before the first boundary, then from each boundary on:
        ``len(boundaries) + 1`` numbers >= 0.
      start, end: ``"linear"``: gamma at step ``begin`` and at ``begin + steps`` (numbers
        >= 0).
      steps: ``"linear"``: the length of the ramp, an int > 0.
      begin: ``"linear"``: the step where the ramp starts (gamma is ``start`` before), an
        int >= 0.

    Returns:
      A :class:`GammaSchedule`: ``schedule(step)`` is the Python float

      .. math::

          \gamma(s) = v_i \ \text{for}\ b_{i-1} \le s < b_i \quad (\text{step}), \qquad
          \gamma(s) = \gamma_0 + (\gamma_1 - \gamma_0)\,
              \mathrm{clip}\!\left(\frac{s - s_0}{S}, 0, 1\right) \quad (\text{linear}).

    A Python float gamma is part of what a compiled function is specialised on; under
    ``jax.jit``, ``tf.function`` or XLA pass ``schedule(step)`` as a 0-d array so that
    a new value compiles nothing (see the module docstring and docs/usage.md).
    Raises TypeError / ValueError naming the argument for a bad value, and for an
    argument that the other kind takes.
    """
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _KINDS))}, got {kind!r}")
    given = {"boundaries": boundaries, "values": values, "start": start, "end": end,
             "steps": steps}
    own = ("boundaries", "values") if kind == "step" else ("start", "end", "steps")
    for name, v in given.items():
        if name not in own and v is not None:
            raise TypeError(f"{name} is not an argument of a {kind!r} schedule "
                            f"(it takes {', '.join(own)}{', begin' if kind == 'linear' else ''})")
    if kind == "step":
        if begin != 0:
            raise TypeError("begin is not an argument of a 'step' schedule (it takes "
                            "boundaries, values)")
        if values is None:
            raise TypeError("a 'step' schedule needs values (and boundaries, for more than one)")
        for name, v in (("values", values), ("boundaries", boundaries)):
            if v is not None and (isinstance(v, (str, bytes)) or
                                  not isinstance(v, Sequence)):
                raise TypeError(f"{name} must be a sequence, got {type(v).__name__}")
        vals = tuple(_gamma_value(f"values[{i}]", v) for i, v in enumerate(values))
        bounds = tuple(_count(f"boundaries[{i}]", b)
                       for i, b in enumerate(() if boundaries is None else boundaries))
        if any(b <= a for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {list(bounds)}")
        if len(vals) != len(bounds) + 1:
            raise ValueError(f"values must hold len(boundaries) + 1 = {len(bounds) + 1} "
                             f"numbers, got {len(vals)}")
        return GammaSchedule("step", boundaries=bounds, values=vals)
    for name in own:
        if given[name] is None:
            raise TypeError(f"a 'linear' schedule needs start, end and steps; {name} is missing")
    return GammaSchedule("linear", start=_gamma_value("start", start),
                         end=_gamma_value("end", end), steps=_count("steps", steps, positive=True),
                         begin=_count("begin", begin))
