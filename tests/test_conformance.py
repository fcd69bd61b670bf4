"""The conformance suite: golden file, runner, `focalx check`, and that it catches bugs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pytest

import focalx
from focalx import _spec
from focalx.conformance import Unsupported, check, generate, runner, tolerances
from focalx.conformance import _harness

from .conftest import import_backend, torch_devices

REQUIRED_OR_INSTALLED = [name for name in runner.BACKENDS if _harness.available(name)[0]]


def _backend_devices():
    """(backend, device) parameters; a GPU device is skipped when none is present."""
    out = []
    for name in REQUIRED_OR_INSTALLED:
        for dev in (torch_devices() if name == "torch" else ["cpu"]):
            if isinstance(dev, str):
                out.append(pytest.param(name, dev, id=f"{name}-{dev}"))
            else:
                out.append(pytest.param(name, dev.values[0], id=f"{name}-{dev.values[0]}",
                                        marks=dev.marks))
    return out


def test_golden_file_regenerates_byte_for_byte():
    pytest.importorskip("mpmath")
    assert generate.dumps(generate.build()) == generate.GOLDEN.read_text()


def test_golden_file_covers_the_spec():
    cases = runner.load_golden()["cases"]
    ids = {c["id"] for c in cases}
    assert {c["fn"] for c in cases} == {"sigmoid_focal_loss", "softmax_focal_loss",
                                        "sigmoid_focal_loss_star", "quality_focal_loss",
                                        "varifocal_loss", "distribution_focal_loss", "asymmetric_loss",
                                        "asymmetric_softmax_loss", "linear_softmax_focal_loss"}
    used = {(c["fn"], k) for c in cases for k in c["kwargs"]}
    # (the linear loss's bias travels packed with its other arrays: see cases.py)
    used |= {(c["fn"], "linear_bias") for c in cases if c.get("linear", {}).get("bias")}
    for fn, defaults in _spec.DEFAULTS.items():
        for k in defaults:
            if k in ("gamma", "reduction"):
                continue
            assert (fn, k) in used, f"no golden case sets {fn}'s {k}"
    gammas = {c["kwargs"].get("gamma") for c in cases
              if not isinstance(c["kwargs"].get("gamma"), list)}
    assert {0.0, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0} <= gammas
    # gamma as a vector (per class), zeros and fractions among its values, in both losses
    vectors = [c for c in cases if isinstance(c["kwargs"].get("gamma"), list)]
    assert {c["fn"] for c in vectors} == {"sigmoid_focal_loss", "softmax_focal_loss"}
    assert any("gamma" in c["array_kwargs"] for c in vectors)
    assert {0.0, 0.25} <= {g for c in vectors for g in np.ravel(c["kwargs"]["gamma"])}
    logits = {v for c in cases for v in c["logits"]}
    assert {0.0, 1e-8, -1e-8, 15.0, -17.0, 30.0, 88.0, -89.0, 100.0, 1e4, -1e4} <= logits
    assert any("empty" in i for i in ids) and any(i.endswith("ignore_index/all") for i in ids)
    assert all(r in {c["kwargs"].get("reduction") for c in cases}
               for r in ("none", "sum", "mean"))


def test_oracle_is_independent_of_focalx():
    tree = ast.parse((generate.GOLDEN.parent / "oracle.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {("." * node.level) + (node.module or "") for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported == {"math", "mpmath", "__future__"}, imported


@pytest.mark.parametrize("backend, device", _backend_devices())
def test_backend_passes_every_case_in_every_dtype(backend, device):
    harness = _harness.create(backend)
    failures = []
    cases = runner.load_golden()["cases"]
    for dtype in harness.dtypes(device):
        for r in runner.run_cases(harness, cases, device, dtype):
            if r["status"] != "passed":
                failures.append(f"{device}/{dtype} {r['id']}: {r.get('detail')}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("backend", REQUIRED_OR_INSTALLED)
def test_backend_rejects_every_bad_input_alike(backend):
    harness = _harness.create(backend)
    results = runner.run_bad_inputs(harness)
    # module cases are not applicable only where the backend has no loss classes
    skipped = "not applicable" if not hasattr(harness, "construct") else None
    bad = [f"{r['id']}: {r['detail']}" for r in results if r["status"] not in ("passed", skipped)]
    assert not bad, "\n".join(bad)
    assert any(r["status"] == "passed" for r in results)


def test_bad_inputs_cover_every_parameter():
    from focalx.conformance.bad_inputs import bad_inputs
    import inspect
    named = {(case[1], case[-1]) for case in bad_inputs()}
    for fn in (focalx.sigmoid_focal_loss, focalx.softmax_focal_loss,
               focalx.sigmoid_focal_loss_star, focalx.quality_focal_loss,
               focalx.varifocal_loss, focalx.distribution_focal_loss,
               focalx.asymmetric_loss, focalx.asymmetric_softmax_loss,
               focalx.linear_softmax_focal_loss):
        for p in inspect.signature(fn).parameters:
            assert (fn.__name__, p) in named, f"no bad-input case names {fn.__name__}'s {p}"


@pytest.mark.parametrize("device", torch_devices())
def test_focalx_check_command_runs_torch_in_its_own_process(device, tmp_path):
    import_backend("torch")
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "focalx.conformance", "--backend", "torch",
                           "--backend", "numpy", "--device", device, "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| torch" in proc.stdout and "all passed" in proc.stdout
    report = json.loads(out.read_text())
    runs = {(r["backend"], run["device"], run["dtype"]): run["failed"]
            for r in report["backends"] for run in r["runs"]}
    assert {("torch", device, dt) for dt in ("float64", "float32", "bfloat16", "float16")} \
        <= set(runs)
    assert not any(runs.values())


def test_filters_select_cases_dtypes_and_backends(tmp_path):
    import_backend("torch")
    matrix = runner.run_matrix(backends=["torch"], dtypes=["float32"], pattern="softmax/extreme")
    (rep,) = matrix["backends"]
    (run,) = rep["runs"]
    assert run["dtype"] == "float32" and run["cases"] == 15
    assert all(r["id"].startswith("softmax/extreme") for r in run["results"])


def test_a_crashing_backend_is_reported_as_its_failure(monkeypatch):
    monkeypatch.setattr(runner, "_worker_command",
                        lambda name, args: [sys.executable, "-c", "import os; os.abort()"])
    matrix = runner.run_matrix(backends=["numpy"])
    (rep,) = matrix["backends"]
    assert "crashed" in rep and runner.failed(matrix)
    assert "CRASHED" in runner.format_matrix(matrix)


def test_check_exits_nonzero_on_a_failure(monkeypatch, capsys):
    from focalx.conformance import cli
    real = runner.run_matrix

    def broken_matrix(**kw):
        m = real(**kw)
        m["backends"][0]["runs"][0]["failed"] = 1
        return m
    monkeypatch.setattr(runner, "run_matrix", broken_matrix)
    assert cli.main(["--backend", "numpy", "--case", "sigmoid/gamma=2.0"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_focalx_command_routes_check(capsys):
    from focalx import _cli
    assert _cli.main(["check", "--backend", "numpy", "--case", "sigmoid/gamma=2.0/*"]) == 0
    assert "| numpy" in capsys.readouterr().out
    assert _cli.main(["frobnicate"]) == 2


def test_a_requested_backend_that_is_missing_fails(monkeypatch):
    monkeypatch.setattr(_harness, "available",
                        lambda name: (False, "not installed") if name == "torch" else (True, ""))
    matrix = runner.run_matrix(backends=["numpy", "torch"], pattern="sigmoid/gamma=2.0/*")
    assert matrix["missing"] == {"torch": "not installed"} and runner.failed(matrix)
    everything = runner.run_matrix(pattern="sigmoid/gamma=2.0/*")
    assert "torch" in everything["skipped"] and not runner.failed(everything)


def test_checking_nothing_fails():
    matrix = runner.run_matrix(backends=["numpy"], pattern="no-such-case")
    assert runner.checked_cases(matrix) == 0 and runner.failed(matrix)
    assert "no golden case was checked" in runner.format_matrix(matrix)


def test_wrong_shape_or_dtype_is_a_failure():
    import_backend("torch")
    import focalx.torch as ft
    reshaped = check(lambda x, y, **kw: ft.sigmoid_focal_loss(x, y, **kw).reshape(-1),
                     case="sigmoid/gamma=2.0/alpha=none")
    assert not reshaped.ok and "shape" in reshaped.failed[0]["detail"]
    upcast = check(lambda x, y, **kw: ft.sigmoid_focal_loss(x.float(), y.float(), **kw),
                   case="sigmoid/gamma=2.0/alpha=none", dtype="float16")
    assert not upcast.ok and "dtype" in upcast.failed[0]["detail"]


def test_unknown_backend_and_empty_selection():
    with pytest.raises(ValueError, match="backend"):
        runner.run_matrix(backends=["mxnet"])
    with pytest.raises(ValueError, match="variant"):
        check(lambda x, y: x, variant="focal")


class TestCatchesBrokenImplementations:
    """A conformance suite must fail for a wrong focal loss: proven for typical mistakes."""

    def _ft(self):
        import_backend("torch")
        import focalx.torch as ft
        return ft

    def test_correct_function_passes_through_check(self):
        ft = self._ft()
        report = check(ft.softmax_focal_loss, variant="softmax_focal_loss", dtype="float32")
        assert report.ok and len(report.passed) == len(report.results)

    def test_swapped_alpha(self):
        ft = self._ft()

        def swapped(x, y, **kw):
            a = kw.get("alpha", 0.25)
            kw["alpha"] = None if a is None else (
                1.0 - a if isinstance(a, float) else [1.0 - v for v in a])
            return ft.sigmoid_focal_loss(x, y, **kw)
        report = check(swapped)
        assert not report.ok
        assert any("alpha=0.25" in r["id"] for r in report.failed)

    def test_gamma_off_by_a_little(self):
        ft = self._ft()
        report = check(lambda x, y, **kw: ft.sigmoid_focal_loss_star(
            x, y, **dict(kw, gamma=kw.get("gamma", 1.0) * 1.001)),
            variant="sigmoid_focal_loss_star")
        assert len(report.failed) >= len(report.results) // 2

    def test_spec_mutation_is_caught_in_the_backend(self, monkeypatch):
        self._ft()
        monkeypatch.setattr(_spec, "alpha_t", lambda y, alpha: None if alpha is None else
                            y * (1.0 - alpha) + (1.0 - y) * alpha)
        results = runner.run_cases(_harness.create("torch"),
                                   runner.load_golden()["cases"], "cpu", "float64")
        assert sum(r["status"] == "failed" for r in results) > 20

    def test_keras_style_clipping_is_caught(self):
        ft = self._ft()
        import torch

        def clipped(x, y, **kw):
            p = torch.sigmoid(x).clamp(1e-7, 1 - 1e-7)
            return ft.sigmoid_focal_loss(p, y, from_logits=False, **kw)
        report = check(clipped, case="extreme")
        assert any("y=1.0" in r["id"] or "y=0.0" in r["id"] for r in report.failed)

    def test_nan_gradient_of_the_textbook_formula_is_caught(self):
        self._ft()
        import torch
        import torch.nn.functional as F

        def textbook(x, y, alpha=0.25, gamma=2.0, reduction="mean"):
            p = torch.sigmoid(x)
            ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            p_t = p * y + (1 - p) * (1 - y)
            loss = ce * (1 - p_t) ** gamma
            if alpha is not None:
                loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
            return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]

        def adapter(variant, kw):
            if set(kw) - {"gamma", "alpha", "reduction"} or isinstance(kw.get("alpha"), list):
                raise Unsupported("not expressible")
            return kw
        report = check(textbook, adapter=adapter, case="extreme", dtype="float32")
        assert any("grad" in r["detail"] and "nan" in r["detail"] for r in report.failed)
        assert report.unsupported == []


def test_tolerance_table_is_per_dtype_only():
    assert set(tolerances.TABLE) == {"float64", "float32", "float16", "bfloat16"}
    rtol64, atol64, _ = tolerances.tolerance("float64")
    rtol32, atol32, _ = tolerances.tolerance("float32")
    assert rtol64 < rtol32 and atol64 < atol32


def test_numpy_check_compares_values():
    report = check(lambda x, y, **kw: focalx.sigmoid_focal_loss(x, y, **kw), backend="numpy")
    assert report.ok
    wrong = check(lambda x, y, **kw: 1.01 * np.asarray(focalx.sigmoid_focal_loss(x, y, **kw)),
                  backend="numpy")
    assert not wrong.ok


@pytest.mark.parametrize("backend", [b for b in ("jax", "tensorflow") if b in REQUIRED_OR_INSTALLED])
def test_a_runtime_that_flushes_subnormals_is_said_so_not_silently_passed(backend):
    """JAX and TensorFlow read subnormal inputs as 0: the values that depend on one are
    left out of the comparison and counted, the rest compared (a probability of 1e-310 in
    float64 costs 713.8 on NumPy, torch and Paddle, and inf there)."""
    import_backend(backend)
    harness = _harness.create(backend)
    assert harness.flushes_subnormals
    cases = runner.select(runner.load_golden()["cases"], pattern="sigmoid/probabilities/subnormal")
    results = runner.run_cases(harness, cases, "cpu", "float64")
    assert [r["status"] for r in results] == ["passed", "passed"]
    assert results[0]["flushed"] > 0
    raw = harness.call_public("sigmoid_focal_loss",
                              harness.to_array([1e-310], (1,)), harness.to_array([1.0], (1,)),
                              dict(from_logits=False, reduction="none"))
    assert np.isinf(harness.values(raw)[0])  # pinned: 713.8 the day this runtime stops flushing
