"""The fuzz suite's fixed-seed slice: random calls in every backend's every execution mode
against the float64 reference (and the reference against the mpmath oracle); see
focalx.conformance.fuzz. FOCALX_FUZZ_EXAMPLES (default 120) sets the examples per
backend, spread over its modes; ``focalx check --fuzz N`` runs more, in processes of
their own."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from focalx.conformance import _harness, fuzz, runner

from .conftest import import_backend

EXAMPLES = int(os.environ.get("FOCALX_FUZZ_EXAMPLES", "120"))
INSTALLED = [name for name in runner.BACKENDS if _harness.available(name)[0]]


def _modes():
    out = []
    for name in INSTALLED:
        modes = _harness.harness_class(name).modes
        for mode, n in fuzz.split(EXAMPLES, modes).items():
            out.append(pytest.param(name, mode, n, id=f"{name}-{mode}"))
    return out


@pytest.fixture(scope="module")
def harnesses():
    return {}


@pytest.mark.parametrize("backend, mode, examples", _modes())
def test_random_calls_match_the_reference(harnesses, backend, mode, examples):
    if backend != "numpy":
        import_backend(backend)
    if backend not in harnesses:
        harnesses[backend] = _harness.create(backend)
    run = fuzz.run_mode(harnesses[backend], mode, examples)
    assert run["failure"] is None, run["failure"]
    # every mode takes its own path for most of its calls (a mode that never did would
    # test nothing)
    assert run["examples"] + run["not_run"] >= examples and run["not_run"] <= run["examples"], run


class TestTheFuzzerItself:
    """The comparisons catch what they are for (each a deliberately wrong backend)."""

    CALL = {"fn": "sigmoid_focal_loss", "dtype": "float32", "shape": [2, 3],
            "logits": [0.5, -1.0, 2.0, 30.0, -30.0, 0.0], "targets": [1.0, 0.0, 1.0, 0.0, 1.0, 0.25],
            "targets_shape": [2, 3], "targets_dtype": "float32",
            "kwargs": {"gamma": 2.0, "reduction": "none"}, "arrays": {}, "cotangent": -2.0}

    class _Skewed(_harness.NumpyHarness):
        """The reference, in float32, with the loss or the gradient made a little wrong."""
        name = "numpy"

        def __init__(self, loss=1.0, grad=1.0, nan_at=None):
            super().__init__()
            self.factors, self.nan_at = (loss, grad), nan_at

        def call(self, mode, variant, x, y, kwargs, cotangent):
            loss, grad, shape, _ = super().call(mode, variant, x, y, kwargs, cotangent)
            loss, grad = loss * self.factors[0], grad * self.factors[1]
            if self.nan_at is not None:
                grad[self.nan_at] = np.nan
            return loss, grad, shape, "float32"

        def to_array(self, values, shape, *, index=False, device="cpu", dtype="float64"):
            out = super().to_array(values, shape, index=index, dtype=dtype)
            return out.astype(np.float32) if dtype == "float32" else out

    @pytest.mark.parametrize("wrong", [dict(loss=1 + 1e-5), dict(grad=1 - 1e-5), dict(nan_at=4)])
    def test_a_small_error_fails_with_a_reproducer(self, wrong):
        with pytest.raises(fuzz.Mismatch) as info:
            fuzz.check_call(self._Skewed(**wrong), "eager", self.CALL)
        text = str(info.value)
        assert "reproducer" in text and "fuzz.replay('numpy', 'eager'" in text
        # the reproducer's replay line holds the call itself
        recorded = json.loads(text.split("json.loads(")[1].split(")))")[0][1:-1])
        assert recorded == self.CALL

    @pytest.mark.parametrize("backend", INSTALLED)
    def test_the_reproducer_runs_as_written(self, backend):
        """Each backend's reproducer (its harness's repro_* templates) is a script that
        makes the call with the public API and replays it: run it in a fresh process."""
        import subprocess
        import sys

        if backend != "numpy":
            import_backend(backend)
        call = {**self.CALL, "arrays": {"alpha": {"values": [0.25], "shape": [], "form": "array"},
                                        "weight": {"values": [1.0, 2.0, 0.5], "shape": [3],
                                                   "form": "list"}},
                "targets_dtype": "int64" if backend == "jax" else "float32"}
        call["targets"] = [1, 0, 1, 0, 1, 0]
        code = fuzz.reproducer(backend, _harness.harness_class(backend).modes[0], call)
        run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:] + "\n" + code
        lines = run.stdout.strip().splitlines()
        assert len(lines) >= 2 and lines[-1] == "ok", run.stdout

    def test_the_reference_rounded_to_float32_passes(self):
        fuzz.check_call(self._Skewed(), "eager", self.CALL)

    def test_flushed_values_are_the_ones_that_depend_on_a_subnormal_input(self):
        loss, grad = runner.flushed_values(
            "softmax_focal_loss", (3, 2), [0.0, 1e-40, 1.0, 2.0, 3.0, 4.0], None, (3,),
            {"axis": 1, "reduction": "none"}, "float32")
        assert loss.tolist() == [True, False, False]
        assert grad.tolist() == [True, True, False, False, False, False]
        loss, grad = runner.flushed_values(
            "sigmoid_focal_loss", (2, 2), [0.0, 1.0, 2.0, 3.0], [1e-310, 0.5], (2,),
            {"reduction": "sum"}, "float64")
        assert loss.tolist() == [True] and grad.tolist() == [True, False, True, False]
