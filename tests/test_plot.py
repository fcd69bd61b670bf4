"""``focalx plot``: its curves are the definitions' values, bad input is named, figures are written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from focalx import plot

from .conftest import FRAMEWORK_MODULES


class TestCurves:
    def test_gamma_zero_is_cross_entropy_and_its_derivative(self):
        data = plot.curve_data("sigmoid_focal_loss", [0.0], alpha=None)
        (_, loss, grad), = data["curves"]
        pt = data["x"]
        np.testing.assert_allclose(loss, -np.log(pt), rtol=1e-12)
        np.testing.assert_allclose(grad, pt - 1.0, rtol=1e-12, atol=1e-15)

    def test_focal_term_follows_the_paper_for_either_target(self):
        for target in (1.0, 0.0):
            data = plot.curve_data("sigmoid", [2.0], alpha=None, target=target)
            pt, loss = data["x"], data["curves"][0][1]
            np.testing.assert_allclose(loss, -(1 - pt) ** 2 * np.log(pt), rtol=1e-12)

    def test_softmax_curve_is_the_target_class_probability(self):
        data = plot.curve_data("softmax", [2.0], classes=10)
        pt, loss, grad = data["x"], data["curves"][0][1], data["curves"][0][2]
        np.testing.assert_allclose(loss, -(1 - pt) ** 2 * np.log(pt), rtol=1e-10)
        assert np.all(grad <= 0)  # raising the target's logit lowers the loss

    def test_logit_axis_spans_both_signs(self):
        data = plot.curve_data("star", [1.0, 2.0], x="logit")
        assert data["x"][0] < 0 < data["x"][-1]
        assert len(data["curves"]) == 2

    def test_vary_another_parameter(self):
        data = plot.curve_data("softmax", [0.0, 1.0], vary="epsilon", gamma=0.0)
        pt = data["x"]
        diff = data["curves"][1][1] - data["curves"][0][1]
        np.testing.assert_allclose(diff, 1 - pt, rtol=1e-10)  # Poly-1's term at gamma 0

    @pytest.mark.parametrize("kwargs, name", [
        ({"loss": "nope"}, "loss"),
        ({"loss": "distribution_focal_loss"}, "loss"),
        ({"x": "p"}, "x"),
        ({"gammas": []}, "gammas"),
        ({"gammas": [float("nan")]}, "gammas"),
        ({"target": 2.0}, "target"),
        ({"target": "one"}, "target"),
        ({"gammas": "0,1"}, "gammas"),
        ({"points": 1}, "points"),
        ({"reduction": "sum"}, "reduction"),
        ({"loss": "softmax", "target": 0.0}, "target"),
        ({"gamma": 1.0}, "gamma"),
        ({"foo": 1.0}, "params: sigmoid_focal_loss has no parameter 'foo'"),
        ({"vary": "nope"}, "vary: sigmoid_focal_loss has no parameter 'nope'"),
        ({"loss": "qfl", "alpha": 0.25}, "params: quality_focal_loss has no parameter 'alpha'"),
    ])
    def test_bad_input_names_the_argument(self, kwargs, name):
        kw = {"loss": "sigmoid", "gammas": [1.0], **kwargs}
        with pytest.raises(ValueError, match=name):
            plot.curve_data(kw.pop("loss"), kw.pop("gammas"), **kw)


class TestBench:
    def test_rows_from_focalx_bench_json(self):
        report = {"backends": [{"backend": "torch", "groups": [{
            "mode": "eager", "workload": "sigmoid", "size": "4M", "elements": 4,
            "contenders": [
                {"name": "focalx", "role": "focalx", "median_s": {"fwd+bwd": 0.002}},
                {"name": "formula", "role": "peer", "median_s": {"fwd+bwd": 0.006}},
                {"name": "bce", "role": "floor", "median_s": {"fwd+bwd": 0.001}}]}]}]}
        rows = plot.bench_rows(report)
        assert rows == [{"label": "torch eager, sigmoid 4M", "contender": "formula",
                         "focalx_ms": 2.0, "contender_ms": 6.0}]

    def test_bad_report_is_named(self):
        with pytest.raises(ValueError, match="report"):
            plot.bench_rows({"nothing": 1})
        with pytest.raises(TypeError, match="report"):
            plot.bench_rows([1, 2])
        with pytest.raises(ValueError, match="report: 'rows'"):
            plot.bench_rows({"rows": 5})
        with pytest.raises(ValueError, match="report: not focalx bench --json's layout"):
            plot.bench_rows({"backends": [{"backend": "torch", "groups": [{"contenders": [
                {"role": "focalx", "median_s": {"fwd+bwd": 1.0}},
                {"role": "peer", "name": "x", "median_s": {"fwd+bwd": 2.0}}]}]}]})

    def test_a_file_that_is_not_json_is_named(self, tmp_path):
        bad = tmp_path / "notes.txt"
        bad.write_text("fwd+bwd 1.2 ms")
        with pytest.raises(ValueError, match="notes.txt is not JSON"):
            plot.plot_bench(bad, tmp_path / "b.svg")


class TestCommand:
    def test_writes_svg_and_png(self, tmp_path, capsys):
        from focalx._cli import main
        assert main(["plot", "curves", "--loss", "qfl", "--gamma", "0,2", "--target", "0.5",
                     "--out", str(tmp_path / "q.svg")]) == 0
        assert (tmp_path / "q.svg").read_text().lstrip().startswith("<?xml")
        bench = tmp_path / "b.json"
        bench.write_text(json.dumps({"rows": [{"label": "torch eager, sigmoid 4M",
                                               "contender": "formula", "focalx_ms": 1.0,
                                               "contender_ms": 3.0}]}))
        assert main(["plot", "bench", str(bench), "--out", str(tmp_path / "b.png")]) == 0
        assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"

    def test_bad_output_suffix_is_an_error(self, tmp_path, capsys):
        assert plot.main(["curves", "--out", str(tmp_path / "x.pdf")]) == 2
        assert "out must end in .svg or .png" in capsys.readouterr().err

    def test_out_is_checked_before_drawing(self, tmp_path):
        with pytest.raises(TypeError, match="out"):
            plot.plot_curves("sigmoid", [1.0], None)
        with pytest.raises(ValueError, match="out must end in .svg or .png"):
            plot.plot_bench({"rows": []}, tmp_path / "b.pdf")

    def test_missing_matplotlib_says_how_to_install(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        with pytest.raises(ImportError, match=r"focalx\[plot\]"):
            plot._matplotlib()


def test_importing_focalx_plot_imports_neither_matplotlib_nor_a_framework():
    code = ("import sys, focalx.plot\n"
            f"print(sorted(m for m in {FRAMEWORK_MODULES + ('matplotlib',)!r} "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
