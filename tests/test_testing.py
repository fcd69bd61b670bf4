"""focalx.testing: compare / assert_matches / ``focalx compare``, the classification of
disagreements, and the ready-made peers against the libraries themselves."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from focalx.testing import KINDS, Signature, _compare, assert_matches, compare, peers
from focalx.testing._frameworks import Runner

from .conftest import FRAMEWORK_MODULES, import_backend, import_companion

ROOT = Path(__file__).resolve().parents[1]


def textbook(logits, targets, gamma=2.0, alpha=0.25, reduction="none", *, alpha_means="paper",
             divisor=None, clip=None):
    """The paper's sigmoid focal loss in NumPy (a "user's" function), with one convention
    switched at a time: alpha ignored or reversed, another mean divisor, clipped p."""
    x, t = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
    with np.errstate(over="ignore", divide="ignore"):
        if clip is None:
            logp, log1mp = -np.logaddexp(0, -x), -np.logaddexp(0, x)
            p = np.exp(logp)
        else:
            p = np.clip(1 / (1 + np.exp(-x)), clip, 1 - clip)
            logp, log1mp = np.log(p), np.log(1 - p)
    loss = -(t * logp + (1 - t) * log1mp) * (1 - (t * p + (1 - t) * (1 - p))) ** gamma
    if alpha is not None and alpha_means != "ignored":
        a = np.asarray(alpha) if alpha_means == "paper" else 1 - np.asarray(alpha)
        loss = (a * t + (1 - a) * (1 - t)) * loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / (divisor(x) if divisor else max(loss.size, 1))
    return loss


def textbook_2(logits, targets, reduction="none"):
    """A function with gamma 2 and alpha 0.25 built in."""
    return textbook(logits, targets, 2.0, 0.25, reduction)


def _quick(fn, **kw):
    return compare(fn, loss="sigmoid", cases="quick", framework="numpy", **kw)


class TestCompare:
    def test_the_textbook_formula_agrees_on_every_expressible_case(self):
        report = assert_matches(textbook, loss="sigmoid", cases="quick", framework="numpy")
        assert len(report.agreed) >= 6 and not report.disagreed
        # what it cannot take (ignore_index, normalizer) is reported, not run
        assert {r.id for r in report.unsupported} == {"sigmoid/ignore_index/mean",
                                                      "sigmoid/normalizer/number"}

    @pytest.mark.parametrize("switch, kind, mapping, also", [
        ({"alpha_means": "ignored"}, "alpha-ignored", {"alpha": None}, set()),
        ({"alpha_means": "reversed"}, "alpha-reversed", None, set()),
        ({"divisor": lambda x: max(x.shape[0], 1)}, "mean-divisor", {"reduction": "sum"},
         set()),
        # (log(1 - p) from a rounded p loses digits below the cap as well)
        ({"clip": 1e-7}, "cap", None, {"precision"}),
    ])
    def test_each_convention_is_found_by_its_probe(self, switch, kind, mapping, also):
        report = _quick(functools.partial(textbook, **switch))
        assert kind in report.kinds, report.table()
        # every disagreement is that convention, nothing unexplained
        assert set(report.kinds) <= {kind} | also, report.table()
        hit = next(r for r in report.disagreed if kind in r.kinds)
        if mapping is not None:
            assert mapping.items() <= hit.mapping.items()
            assert "focalx.sigmoid_focal_loss" in hit.agrees_with

    def test_reversed_alpha_maps_to_one_minus_alpha(self):
        report = _quick(functools.partial(textbook, alpha_means="reversed"))
        hit = report.disagreed[0]
        kw = _compare._golden("sigmoid_focal_loss", "float64", {hit.id})[0].kwargs
        assert np.allclose(hit.mapping["alpha"], 1 - np.asarray(kw["alpha"]))

    def test_crash_time_out_and_wrong_shape_are_report_lines(self):
        def bad(logits, targets, gamma=2.0, alpha=0.25, reduction="none"):
            if gamma == 0.5:
                raise RuntimeError("boom")
            if reduction == "mean" and logits.ndim == 4:
                time.sleep(1.5)
            return np.zeros((7, 7))
        t0 = time.perf_counter()
        report = _quick(bad, time_limit=0.3)
        assert time.perf_counter() - t0 < 1.5 * 2  # the hung cases were abandoned
        kinds = {r.id: r.kinds for r in report.disagreed}
        assert kinds["sigmoid/gamma=0.5/alpha=vector"] == ("crash",)
        assert "boom" in next(r.detail for r in report.disagreed
                              if r.id == "sigmoid/gamma=0.5/alpha=vector")
        assert kinds["sigmoid/nd/alpha-last-axis"] == ("time-out",)
        assert kinds["sigmoid/gamma=2.0/alpha=none"] == ("shape",)
        assert len(report.disagreed) == len(report.results) - len(report.unsupported)

    def test_crashes_on_a_vector_or_alpha_none_hint_at_the_signature_fix(self):
        def scalars(logits, targets, gamma=2.0, alpha=0.25, reduction="none"):
            return textbook(logits, targets, float(gamma), 1.0 * alpha, reduction)
        report = _quick(scalars)
        assert set(report.kinds) == {"crash"}, report.table()
        hints = "\n".join(report.hints)
        assert "scalar_only=('alpha',)" in hints and "alpha_off=-1" in hints
        assert "hints:" in report.table()
        fixed = _quick(scalars, signature=Signature(scalar_only=("alpha", "gamma"),
                                                    alpha_off="not expressible"))
        assert fixed.ok and not fixed.hints, fixed.table()
        assert not _quick(textbook).hints

    def test_assert_matches_names_the_smallest_failing_case(self):
        fn = functools.partial(textbook, alpha_means="ignored")
        report = _quick(fn)
        smallest = min(report.disagreed, key=lambda r: (r.size, r.id))
        with pytest.raises(AssertionError, match="smallest: " + re.escape(smallest.id)) as info:
            assert_matches(fn, loss="sigmoid", cases="quick", framework="numpy")
        assert "alpha-ignored" in str(info.value) and "alpha=None" in str(info.value)

    def test_torch_autograd_gradient_is_compared_and_focalx_agrees_with_itself(self):
        import_backend("torch")
        import focalx.torch as ft
        report = assert_matches(ft.softmax_focal_loss, loss="softmax", cases="quick")
        assert report.framework == "torch" and not report.unsupported
        nan = compare(peers.fvcore_sigmoid_focal_loss, loss="sigmoid", cases="quick",
                      signature=peers.BY_KEY["fvcore"].signature)
        assert nan.kinds["nan-gradient"] == ["sigmoid/extreme/gamma=0.5/y=1.0"]

    def test_fuzz_cases_agree_with_the_paper_and_catch_a_convention(self):
        # (the fuzz cases' values are the NumPy reference's: checked here against the
        # paper's formula written in this file, not against focalx itself)
        one = ["sigmoid/gamma=2.0/alpha=none"]
        report = compare(textbook, cases=one, fuzz=12, framework="numpy")
        assert len(report.results) == 13 and report.ok, report.table()
        reversed_alpha = compare(functools.partial(textbook, alpha_means="reversed"),
                                 cases=one, fuzz=12, framework="numpy")
        assert set(reversed_alpha.kinds) == {"alpha-reversed"}, reversed_alpha.table()
        assert all(r.id.startswith("fuzz/") for r in reversed_alpha.disagreed)

    def test_bad_arguments_raise_naming_the_argument(self):
        with pytest.raises(ValueError, match="loss"):
            compare(textbook, loss="hinge")
        with pytest.raises(TypeError, match="fn"):
            compare(3)
        with pytest.raises(ValueError, match="fuzz"):
            compare(textbook, fuzz=-1)
        with pytest.raises(ValueError, match="time_limit"):
            compare(textbook, time_limit=0)
        with pytest.raises(TypeError, match="signature"):
            compare(textbook, signature={"alpha_off": -1})
        with pytest.raises(ValueError, match="cases"):
            compare(textbook, cases="some")
        with pytest.raises(ValueError, match="framework"):
            compare(textbook, framework="mxnet")
        with pytest.raises(ValueError, match="target_format"):
            Signature(target_format="dense")
        with pytest.raises(ValueError, match="names"):
            Signature(names={"alpah": "a"})
        with pytest.raises(ValueError, match="logits and targets"):
            Signature(logits=0, targets=0)
        with pytest.raises(ValueError, match="unknown case ids"):
            compare(textbook, cases=["sigmoid/no-such-case"])
        with pytest.raises(ValueError, match="scalar_only"):
            Signature(scalar_only=("alpah",))
        with pytest.raises(ValueError, match="min_ndim"):
            Signature(min_ndim=-1)
        with pytest.raises(ValueError, match="key=value"):
            Signature.parse(["alpha_off"])
        with pytest.raises(TypeError, match="loss"):
            compare(textbook, loss=["sigmoid"])
        with pytest.raises(TypeError, match="cases"):
            compare(textbook, cases=5)
        with pytest.raises(ValueError, match="cases"):
            compare(textbook, cases=[1, 2])
        with pytest.raises(ValueError, match="cases"):
            compare(textbook, cases=[])
        with pytest.raises(ValueError, match="time_limit"):
            compare(textbook, time_limit=True)
        with pytest.raises(ValueError, match="framework"):
            Signature(framework="tourch")
        with pytest.raises(TypeError, match="class_axis"):
            Signature(class_axis=True)
        with pytest.raises(TypeError, match="names"):
            Signature(names={"alpha": 3})
        with pytest.raises(TypeError, match="items"):
            Signature.parse("alpha_off=-1")

    def test_an_infinite_time_limit_is_no_limit(self):
        # (a thread cannot wait that long: the error was reported as the function's crash)
        report = compare(textbook, cases=["sigmoid/gamma=2.0/alpha=0.25"],
                         time_limit=float("inf"), framework="numpy")
        assert report.ok and report.agreed, report.table()

    def test_signature_parse_reads_the_command_line_form(self):
        sig = Signature.parse(["alpha_off=-1", "class_axis=1", "alpha=weight_pos",
                               "reduction=none", "fixed.mode=multiclass", "scalar_only=alpha"])
        assert sig.alpha_off == -1 and sig.class_axis == 1 and sig.scalar_only == ("alpha",)
        assert sig.names["alpha"] == "weight_pos" and sig.assumes["reduction"] == "none"
        assert sig.fixed == {"mode": "multiclass"}
        # Keras' argument order, field by field (each step alone has logits == targets)
        sig = Signature.parse(["logits=1", "targets=0"])
        assert (sig.logits, sig.targets) == (1, 0)
        sig = Signature.parse(["assumes.gamma=2.0", "reductions.none=elementwise"])
        assert sig.assumes == {"gamma": 2.0} and sig.reductions == {"none": "elementwise"}
        with pytest.raises(ValueError, match="assumes.KEYWORD"):
            Signature.parse(["assumes.gama=2.0"])

    def test_importing_focalx_testing_imports_no_framework(self):
        code = ("import sys, focalx.testing, focalx.testing.peers, focalx.testing.cli\n"
                f"print(sorted(m for m in {FRAMEWORK_MODULES!r} if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"


class TestCommand:
    def test_table_and_exit_status(self, capsys):
        from focalx._cli import main
        rc = main(["compare", "tests.test_testing:textbook", "--cases", "quick",
                   "--framework", "numpy", "--map", "fixed.alpha_means=ignored"])
        out = capsys.readouterr().out
        assert rc == 1
        assert "alpha-ignored" in out and "sigmoid/gamma=2.0/alpha=0.25" in out
        assert main(["compare", "tests.test_testing:textbook", "--cases", "quick",
                     "--framework", "numpy"]) == 0

    def test_json(self, capsys):
        from focalx._cli import main
        main(["compare", "tests.test_testing:textbook", "--cases", "quick", "--framework",
              "numpy", "--map", "fixed.clip=1e-7", "--json"])
        report = json.loads(capsys.readouterr().out)
        assert "cap" in report["kinds"] and report["framework"] == "numpy"

    def test_usage_errors_exit_2(self, capsys):
        from focalx._cli import main
        assert main(["compare"]) == 2
        assert main(["compare", "no_such_module_x:f"]) == 2
        assert main(["compare", "tests.test_testing:textbook", "--map", "bogus=1"]) == 2

    def test_nothing_expressible_is_not_a_pass(self, capsys):
        from focalx._cli import main
        # textbook_2 has no gamma or alpha: no golden case is expressible without assumes
        args = ["compare", "tests.test_testing:textbook_2", "--cases", "quick", "--framework",
                "numpy"]
        assert main(args) == 1
        assert "no case was expressible" in capsys.readouterr().err
        assert main(args + ["--map", "assumes.gamma=2.0", "--map", "assumes.alpha=0.25"]) == 0
        assert "0 agree" not in capsys.readouterr().out

    def test_a_peer_whose_library_is_missing_is_named(self, capsys, monkeypatch):
        from focalx._cli import main
        missing = peers.Peer("nolib", "", "no_such_module_x:focal", "sigmoid", Signature(), "",
                             requires="no_such_module_x")
        monkeypatch.setitem(peers.BY_KEY, "nolib", missing)
        assert main(["compare", "--peer", "nolib"]) == 2
        assert "--peer nolib: no_such_module_x is not installed" in capsys.readouterr().err

    def test_peer_names_need_no_shell_quoting(self):
        assert all(re.fullmatch(r"[a-z0-9-]+", key) for key in peers.BY_KEY)


# ---- the peers: each library's report is what the table says -------------------------

def _load_peer(peer):
    """The peer's function; the test extra's libraries are required where their framework
    is (FOCALX_REQUIRE_BACKENDS)."""
    needs = {"optax": ("optax", "jax"), "keras": ("keras", "tensorflow"),
             "kornia": ("kornia", "torch"), "monai": ("monai", "torch")}
    if peer.requires == "paddle":
        import_backend("paddle")
    elif peer.requires in needs:
        import_companion(*needs[peer.requires])
    elif peer.requires is None:
        import_backend("torch")
    if peer.requires == "torchvision" and not peer.installed():
        # torchvision pulls another torch: its entry is checked on fvcore's formula, the same
        return peers.fvcore_sigmoid_focal_loss
    return peer.load()


#: the peers whose full golden run takes long (each case traced anew): a fixed sample (optax
#: shows no kind at all, so the subset check below is exact for it)
QUICK_ONLY = {"optax"}
SAMPLE = ["sigmoid/gamma=2.0/alpha=0.25", "sigmoid/gamma=0.5/alpha=vector",
          "sigmoid/soft/gamma=2.0", "sigmoid/nd/alpha-last-axis",
          "sigmoid/extreme/gamma=0.5/y=1.0", "sigmoid/empty"]


@pytest.mark.parametrize("peer", peers.PEERS, ids=lambda p: p.key)
def test_peer_report_shows_exactly_the_documented_kinds(peer):
    fn = _load_peer(peer)
    quick = peer.key in QUICK_ONLY
    report = compare(fn, loss=peer.loss, signature=peer.signature,
                     cases=SAMPLE if quick else None)
    assert report.agreed, report.table()
    if quick:
        assert set(report.kinds) <= set(peer.kinds), report.table()
    else:
        assert set(report.kinds) == set(peer.kinds), report.table()


def _replay(fn, sig, variant, case_id, mapping):
    """(the peer's loss on one case, focalx's with the mapping, focalx's gradient), in the
    peer's framework."""
    case = _compare._golden(variant, sig.dtype, {case_id})[0]
    run = Runner(_compare.detect(fn))
    call_kw, x, y, _ = _compare._prepare(case, sig, fn, run, 1)
    theirs, _ = run.evaluate(_compare._invoke(fn, sig, call_kw), x, y, sig.dtype)
    module = __import__(f"focalx.{run.name}", fromlist=[variant])
    kw = {**case.kwargs, **{k: run.array(v, sig.dtype) if isinstance(v, np.ndarray) else v
                            for k, v in mapping.items()}}
    ours, grad = run.evaluate(lambda a, b: getattr(module, variant)(a, b, **kw), case.x,
                              case.y, sig.dtype)
    return theirs, ours, grad


@pytest.mark.parametrize("key", ["kornia", "monai", "fvcore"])
def test_the_focalx_call_a_report_suggests_gives_the_peers_numbers(key):
    """Each disagreement's mapping, run through focalx's own function in the framework,
    reproduces the peer's values (per-class values summed over the classes); a NaN
    gradient's mapping is focalx as it is, whose gradient is finite."""
    peer = peers.BY_KEY[key]
    fn = _load_peer(peer)
    report = compare(fn, loss=peer.loss, signature=peer.signature)
    checked = 0
    loose = {"float32": (1e-4, 1e-5), "float64": (1e-7, 1e-10)}[peer.signature.dtype]
    for r in report.disagreed:
        case = _compare._golden(report.loss, peer.signature.dtype, {r.id})[0]
        if r.mapping is None or case.x.ndim < peer.signature.min_ndim:
            continue
        theirs, ours, grad = _replay(fn, peer.signature, report.loss, r.id, r.mapping)
        if "class-axis" in r.kinds:
            theirs = theirs.sum(axis=1)
        if {"nan-gradient", "nan-loss"} & set(r.kinds):
            assert np.isfinite(grad).all() and np.isfinite(ours).all()
        else:
            np.testing.assert_allclose(theirs, ours, rtol=loose[0], atol=loose[1])
        checked += 1
    assert checked >= 2


def test_keras_alpha_has_no_effect_without_class_balancing():
    """tensorflow/tensorflow#61519: Keras' binary focal loss ignores alpha unless
    apply_class_balancing=True; called that way the report says so, and alpha=None agrees."""
    peer = peers.BY_KEY["keras"]
    fn = _load_peer(peer)
    naive = Signature(scalar_only=("alpha", "gamma"), dtype="float32")
    report = compare(fn, loss="sigmoid", signature=naive,
                     cases=["sigmoid/gamma=2.0/alpha=0.25", "sigmoid/gamma=1.0/alpha=0.25"])
    assert set(report.kinds) == {"alpha-ignored"}, report.table()
    assert all(r.mapping == {"alpha": None} for r in report.disagreed)


def test_index_targets_with_class_0_as_background_are_found():
    """mmdet 1.x read label 0 as the background (2.x and 3.x: label C)."""
    torch = import_backend("torch")
    peer = peers.BY_KEY["mmdet"]

    def mmdet_v1(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction="mean"):
        c = pred.shape[1]
        return peers.mmdet_py_sigmoid_focal_loss(
            pred, torch.where(target == 0, c, target - 1), weight, gamma, alpha, reduction)
    report = compare(mmdet_v1, loss="sigmoid", signature=peer.signature)
    assert set(report.kinds) - {"precision"} == {"background"}, report.table()
    assert not compare(peer.load(), loss="sigmoid", signature=peer.signature).kinds.get(
        "background")


def test_keras_binary_loss_caps_on_jax_but_not_on_tensorflow():
    """The survey's B1: Keras' binary focal loss clips probabilities at 1e-7 on its JAX
    backend (the log stops at 16.118), not on TensorFlow (which recovers the logits)."""
    import_backend("jax")
    fn = _load_peer(peers.BY_KEY["keras"])
    cases = "sigmoid/extreme/gamma=2.0/y=1.0,sigmoid/extreme/gamma=2.0/y=0.0"
    tf = compare(fn, loss="sigmoid", signature=peers.BY_KEY["keras"].signature,
                 cases=cases.split(","))
    assert tf.ok, tf.table()
    out = subprocess.run([sys.executable, "-m", "focalx._cli", "compare", "--peer", "keras",
                          "--cases", cases, "--json"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=False, env={**os.environ, "KERAS_BACKEND": "jax"})
    assert out.returncode == 1, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["framework"] == "jax" and set(report["kinds"]) == {"cap"}, report


def test_paddle_takes_an_alpha_off_value_as_a_number():
    """Paddle cannot turn alpha off: alpha=-1 (torchvision's "off") is used as alpha."""
    peer = peers.BY_KEY["paddle"]
    fn = _load_peer(peer)
    sig = Signature.parse(["alpha_off=-1"], base=peer.signature)
    report = compare(fn, loss="sigmoid", signature=sig,
                     cases=["sigmoid/gamma=2.0/alpha=none", "sigmoid/gamma=1.0/alpha=none"])
    assert set(report.kinds) == {"alpha-off"}, report.table()
    assert all(r.agrees_with is None for r in report.disagreed)


def test_migration_table_is_generated_from_the_peers():
    doc = (ROOT / "docs" / "migration.md").read_text()
    assert peers.markdown() in doc, "run: python -m focalx.testing.peers --write docs/migration.md"
    for peer in peers.PEERS:
        assert all(k in KINDS for k in peer.kinds)
