"""focalx.gamma_schedule: framework-free (no framework imported); the values of each
kind, optax's schedules where optax is installed, and the bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import focalx


def test_stepwise_values_change_at_the_boundaries():
    s = focalx.gamma_schedule("step", boundaries=[10, 20], values=[0, 1, 2.5])
    got = [s(i) for i in (0, 9, 9.99, 10, 19, 20, 10 ** 9)]
    assert got == [0.0, 0.0, 0.0, 1.0, 1.0, 2.5, 2.5]
    assert all(type(v) is float for v in got)
    assert focalx.gamma_schedule("step", values=[2.0])(123) == 2.0  # a constant
    assert s(np.int64(15)) == 1.0 and s(np.float32(25.0)) == 2.5


def test_linear_ramp_from_begin_over_steps():
    s = focalx.gamma_schedule("linear", start=0.5, end=2.0, steps=6, begin=4)
    assert [s(i) for i in (0, 4, 5, 7, 10, 11, 10 ** 6)] == [0.5, 0.5, 0.75, 1.25, 2.0, 2.0, 2.0]
    down = focalx.gamma_schedule("linear", start=2.0, end=0.0, steps=4)
    assert [down(i) for i in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]


def test_the_schedules_equal_optaxs():
    optax = pytest.importorskip("optax")
    lin = focalx.gamma_schedule("linear", start=0.25, end=3.0, steps=37, begin=5)
    ref = optax.linear_schedule(0.25, 3.0, transition_steps=37, transition_begin=5)
    for i in range(60):
        assert math.isclose(lin(i), float(ref(i)), rel_tol=1e-6), i
    # optax's piecewise constant schedule multiplies by a scale at each boundary
    st = focalx.gamma_schedule("step", boundaries=[3, 8], values=[0.5, 1.0, 2.0])
    ref = optax.piecewise_constant_schedule(0.5, {3: 2.0, 8: 2.0})
    for i in range(12):
        assert st(i) == float(ref(i)), i


@pytest.mark.parametrize("kw, exc, name", [
    (dict(kind="cosine", values=[1.0]), ValueError, "kind"),
    (dict(values=[1.0, -1.0], boundaries=[3]), ValueError, "values[1]"),
    (dict(values=[1.0, math.nan], boundaries=[3]), ValueError, "values[1]"),
    (dict(values=[1.0, "2"], boundaries=[3]), TypeError, "values[1]"),
    (dict(values=[1.0, 2.0], boundaries=[3.5]), TypeError, "boundaries[0]"),
    (dict(values=[1.0, 2.0, 3.0], boundaries=[5, 5]), ValueError, "boundaries"),
    (dict(values=[1.0, 2.0], boundaries=[-1]), ValueError, "boundaries[0]"),
    (dict(values=[1.0], boundaries=[3]), ValueError, "values"),
    (dict(values=2.0), TypeError, "values"),
    (dict(boundaries=[3]), TypeError, "values"),
    (dict(values=[1.0], start=0.0), TypeError, "start"),
    (dict(kind="linear", start=0.0, end=2.0), TypeError, "steps"),
    (dict(kind="linear", start=0.0, end=2.0, steps=0), ValueError, "steps"),
    (dict(kind="linear", start=0.0, end=2.0, steps=2.5), TypeError, "steps"),
    (dict(kind="linear", start=-0.5, end=2.0, steps=3), ValueError, "start"),
    (dict(kind="linear", start=0.0, end=math.inf, steps=3), ValueError, "end"),
    (dict(kind="linear", start=0.0, end=1.0, steps=3, begin=-2), ValueError, "begin"),
    (dict(kind="linear", start=0.0, end=1.0, steps=3, values=[1.0]), TypeError, "values"),
])
def test_bad_arguments_name_themselves(kw, exc, name):
    with pytest.raises(exc, match=name.replace("[", r"\[").replace("]", r"\]")):
        focalx.gamma_schedule(**kw)


@pytest.mark.parametrize("step, exc", [(-1, ValueError), (math.nan, ValueError),
                                       ("3", TypeError), (True, TypeError),
                                       (np.zeros(2), TypeError)])
def test_a_bad_step_names_it(step, exc):
    s = focalx.gamma_schedule("linear", start=0.0, end=1.0, steps=3)
    with pytest.raises(exc, match="step"):
        s(step)


def test_repr_rebuilds_the_schedule():
    for s in (focalx.gamma_schedule("step", boundaries=[2], values=[0.0, 2.0]),
              focalx.gamma_schedule("linear", start=0.0, end=2.0, steps=5, begin=1)):
        again = eval(repr(s), {"gamma_schedule": focalx.gamma_schedule})
        assert [again(i) for i in range(9)] == [s(i) for i in range(9)]
