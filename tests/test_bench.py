"""``focalx bench``: it runs, its output has the promised shape, and it fails loudly.

No timing is asserted (CI machines are shared): only that every sample is a
positive finite number. The one real run uses ``--quick`` (tiny sizes) on the
installed torch / jax backends.
"""

from __future__ import annotations

import json
import math
import time
import subprocess
import sys

import pytest

from focalx import _cli
from focalx.bench import cli, config, measure, report, run, worker

from .conftest import FRAMEWORK_MODULES, import_backend

FRAMEWORKS = FRAMEWORK_MODULES


def _quick_backends():
    names = []
    for name in ("torch", "jax"):
        try:
            import_backend(name)  # fails the test if required, skips it otherwise
        except pytest.skip.Exception:
            continue
        names.append(name)
    return names


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    names = _quick_backends()
    if not names:
        pytest.skip("neither torch nor jax is installed")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "focalx._cli", "bench", "--quick", "--repeats", "2",
         "--memory", "--backend", ",".join(names), "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    return names, proc, json.loads(out.read_text()) if out.exists() else None


def test_import_bench_imports_no_framework():
    code = ("import sys, focalx, focalx._cli, focalx.bench.run, focalx.bench.report, focalx.bench.worker; "
            f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_quick_run_exit_code_and_json(quick_run):
    names, proc, result = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result is not None
    assert [r["backend"] for r in result["backends"]] == names
    cfg = result["config"]
    assert cfg["quick"] and cfg["sizes"] == [config.QUICK_SIZE] and cfg["repeats"] == 2
    assert {"cpu", "cores", "python"} <= set(result["machine"])
    for rep in result["backends"]:
        assert "error" not in rep and "crashed" not in rep, rep
        assert rep["info"]
        groups = rep["groups"]
        assert {g["workload"] for g in groups} == {"sigmoid", "softmax"}
        for g in groups:
            assert g["elements"] == math.prod(g["shape"])
            roles = [c["role"] for c in g["contenders"]]
            assert roles.count("focalx") == 1 and "floor" in roles
            for c in g["contenders"]:
                if "skipped" in c:
                    assert c["role"] != "focalx"
                    continue
                assert "error" not in c, c
                for phase in ("fwd", "fwd+bwd"):
                    samples = c["samples_s"][phase]
                    assert len(samples) == cfg["repeats"]
                    assert all(math.isfinite(s) and s > 0 for s in samples)
                    assert min(samples) <= c["median_s"][phase] <= max(samples)
                    faults = c["minor_faults_per_call"][phase]
                    assert len(faults) == cfg["repeats"] and min(faults) >= 0
                mem = c["memory"]
                peak = mem.get("peak_extra_bytes")
                assert peak is None or (isinstance(peak, int) and peak >= 0), mem
                if rep["backend"] == "torch":
                    assert mem["saved_new_bytes"] >= 0 and mem["saved_bytes"] >= \
                        mem["saved_new_bytes"]
            if rep["backend"] == "torch":
                focal = next(c for c in g["contenders"] if c["role"] == "focalx")
                # focalx saves exactly its closed-form gradient: one full-size array
                assert focal["memory"]["saved_new_bytes"] == g["elements"] * 4
        if rep["backend"] == "torch":  # the kernel-off rows
            assert {(g["workload"], g["mode"]) for g in groups} >= {
                ("sigmoid", "op by op"), ("softmax", "op by op")}


def test_quick_run_times_first_calls_in_fresh_processes(quick_run):
    names, proc, result = quick_run
    for rep in result["backends"]:
        firsts = rep["first_calls"]
        # --quick: the sigmoid workload's focalx and its peer, a process each
        assert [(f["workload"], f["role"]) for f in firsts] == [
            ("sigmoid", "focalx"), ("sigmoid", "peer")], firsts
        assert len({f["name"] for f in firsts}) == 2
        for f in firsts:
            assert "error" not in f and "crashed" not in f, f
            assert f["elements"] == config.FIRST_CALL_SIZE == math.prod(f["shape"])
            for key in ("import_s", "first_s", "second_s"):
                assert math.isfinite(f[key]) and f[key] > 0
    first_table = proc.stdout.split("First call, each contender in a fresh process")[1]
    rows = [ln for ln in first_table.splitlines() if ln.startswith("| ")][1:]
    assert len(rows) == sum(len(r["first_calls"]) for r in result["backends"])
    assert any(" first call sigmoid 500K: " in ln for ln in proc.stdout.splitlines())


def test_a_failing_first_call_of_focalx_fails_the_run():
    group = {"contenders": [{"role": "focalx", "median_s": {"fwd+bwd": 1e-3}}]}
    ok = {"backend": "torch", "workload": "sigmoid", "role": "focalx", "first_s": 0.1}
    result = {"missing": {}, "backends": [{"backend": "torch", "groups": [group],
                                           "first_calls": [ok]}]}
    assert not run.failed(result)
    result["backends"][0]["first_calls"][0] = dict(ok, error="boom")
    assert run.failed(result)
    result["backends"][0]["first_calls"][0] = dict(ok, role="peer", error="boom")
    assert not run.failed(result)  # (a peer's error is a note, as in the timing table)
    result["backends"][0]["first_calls"][0] = {"backend": "torch", "crashed": "exit 1"}
    assert run.failed(result)


def test_quick_run_markdown(quick_run):
    names, proc, result = quick_run
    lines = proc.stdout.split("First call, each contender")[0].splitlines()
    assert lines[0].startswith("focalx bench, ")
    table = [ln for ln in lines if ln.startswith("|")]
    header = table[0]
    assert "fwd+bwd ms" in header and "x focalx" in header and "peak extra" in header
    assert set(table[1]) <= set("|-: ")
    width = header.count("|")
    assert all(row.count("|") == width for row in table)
    rows = [[cell.strip() for cell in row.strip("|").split("|")] for row in table[2:]]
    n = sum(len(g["contenders"]) for r in result["backends"] for g in r["groups"])
    assert len(rows) == n
    for row in rows:
        assert row[0] in names
        if row[5] == "focalx":
            assert row[8] == row[9] == "1.00"
    assert "peak extra:" in proc.stdout and "raw numbers written to" in proc.stdout


@pytest.mark.parametrize("argv, flag", [
    (["--size", "abc"], "--size"),
    (["--size", "0"], "--size"),
    (["--backend", "nosuch"], "--backend"),
    (["--repeats", "0"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
    (["--sample-ms", "0"], "--sample-ms"),
    (["--sample-ms", "nan"], "--sample-ms"),
    (["--sample-ms", "fast"], "--sample-ms"),
    (["--dtype", "int8"], "--dtype"),
    (["--device", "tpu"], "--device"),
    (["--frobnicate"], "--frobnicate"),
    (["--json", "/nonexistent-dir/bench.json"], "--json"),
])
def test_bad_arguments_exit_2(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        _cli.main(["bench", *argv])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_a_sample_lasts_100_ms_by_default_and_2_ms_in_quick_mode():
    def cfg(*argv):
        return config.config_from_args(config.parser().parse_args(list(argv)))
    assert cfg()["sample_s"] == 0.1
    assert cfg("--quick")["sample_s"] == 2e-3
    assert cfg("--sample-ms", "25")["sample_s"] == 0.025
    assert cfg("--quick", "--sample-ms", "25")["sample_s"] == 0.025


def test_a_sample_repeats_calls_to_last_the_sample_time():
    calls = []
    c = measure.Contender("x", "focalx", fwd=lambda: (calls.append(1), time.sleep(0.002)),
                         fwdbwd=lambda: time.sleep(0.002))
    measure.warm_up(c, 1, 0.2)
    # ~100 calls of >= 2 ms fill 0.2 s (>= 3 even if a busy machine slows calls 30x)
    assert 3 <= c.number["fwd"] <= 100 and 3 <= c.number["fwd+bwd"] <= 100
    calls.clear()
    measure.time_interleaved([c], 2)
    assert len(calls) == 2 * c.number["fwd"]
    assert all(s >= 0.002 for s in c.samples["fwd"])


def test_unknown_command_still_exits_2(capsys):
    assert _cli.main(["nosuch"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("text, n", [("4M", 4 << 20), ("16m", 16 << 20), ("64K", 65536),
                                     ("65536", 65536), ("0.5K", 512), ("1G", 1 << 30)])
def test_parse_size(text, n):
    assert config.parse_size(text) == n


def _fake_worker(monkeypatch, code):
    """Make every worker subprocess run `code` (with `out` the report path) instead."""
    def command(name, cfg, out, memory, first=None):
        return [sys.executable, "-c", f"out = {str(out)!r}\n{code}"]
    monkeypatch.setattr(run, "_worker_command", command)
    monkeypatch.setattr(run, "available", lambda name: (True, ""))


def test_crashing_worker_exits_1(monkeypatch, capsys):
    _fake_worker(monkeypatch, "import os; os._exit(3)")
    assert cli.main(["--quick", "--backend", "torch"]) == 1
    out = capsys.readouterr().out
    assert "| torch | - |" in out and "ERROR torch: worker exited with code 3" in out


def test_backend_error_exits_1_and_others_still_run(monkeypatch, capsys):
    # torch's worker reports a broken focalx module; jax's reports one measured group
    ok = {"backend": "jax", "info": {}, "groups": [{
        "workload": "sigmoid", "mode": "jit", "size": 4096, "dtype": "float32",
        "shape": [4, 1024], "elements": 4096, "contenders": [
            {"name": "focalx", "role": "focalx", "median_s": {"fwd": 1e-4, "fwd+bwd": 2e-4},
             "samples_s": {"fwd": [1e-4], "fwd+bwd": [2e-4]}},
            {"name": "optax sigmoid_focal_loss", "role": "peer", "skipped": "not installed"},
            {"name": "bce", "role": "floor", "median_s": {"fwd": 5e-5, "fwd+bwd": 1e-4},
             "samples_s": {"fwd": [5e-5], "fwd+bwd": [1e-4]}}]}]}
    bad = {"backend": "torch", "error": "cannot import focalx.torch: ImportError: boom"}
    code = ("import json\n"
            f"rep = {bad!r} if 'torch' in out_name else {ok!r}\n"
            "open(out, 'w').write(json.dumps(rep))")

    def command(name, cfg, out, memory, first=None):
        return [sys.executable, "-c",
                f"out = {str(out)!r}; out_name = {name!r}\n{code}"]
    monkeypatch.setattr(run, "_worker_command", command)
    monkeypatch.setattr(run, "available", lambda name: (True, ""))
    assert cli.main(["--quick", "--backend", "torch,jax", "--no-memory",
                        "--no-first-call"]) == 1
    out = capsys.readouterr().out
    assert "ERROR torch: cannot import focalx.torch" in out
    assert "| jax | jit | sigmoid | float32 | 4K (4x1024) | focalx | 0.1 | 0.2 | 1.00 | 1.00 |" \
        in out
    assert "| optax sigmoid_focal_loss | skipped |" in out
    assert "skipped jax jit sigmoid optax sigmoid_focal_loss: not installed" in out


def test_missing_focalx_module_is_the_backends_error(monkeypatch):
    monkeypatch.setitem(config.FOCALX_MODULES, "torch", "focalx._no_such_backend")
    rep = worker.run_worker("torch", {})
    assert rep["error"].startswith("cannot import focalx._no_such_backend")
    assert "groups" not in rep


def test_backend_asked_for_but_not_installed_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(run, "available", lambda name: (False, f"{name} is not installed"))
    assert cli.main(["--quick", "--backend", "paddle"]) == 1
    assert "ERROR paddle: asked for, but paddle is not installed" in capsys.readouterr().out


def test_a_device_without_a_peak_counter_is_n_a_not_a_failure(monkeypatch):
    # JAX on a GPU has no resettable peak counter: the memory worker reports n/a for it,
    # and that alone must not fail the run (it did: every focalx row was an error).
    names = _quick_backends()
    if not names:
        pytest.skip("neither torch nor jax is installed")
    name = names[0]
    build = worker.group_builder(name)

    def no_peak(cfg, fx):
        groups, info, _ = build(cfg, fx)
        return groups, info, None
    monkeypatch.setattr(worker, "group_builder", lambda n: no_peak if n == name else build)
    cfg = config.config_from_args(config.parser().parse_args(
        ["--quick", "--backend", name, "--workload", "sigmoid", "--no-compile",
         "--repeats", "1"]))
    memory = worker.run_worker(name, cfg, memory=True)
    focal = [c for g in memory["groups"] for c in g["contenders"] if c["role"] == "focalx"]
    assert focal and all(c["memory"].get("peak_extra_bytes") is None and
                         "peak_note" in c["memory"] for c in focal)
    timing = worker.run_worker(name, cfg)
    run._merge_memory(timing, memory)
    result = {"config": cfg, "backends": [timing], "skipped": {}, "missing": {}}
    assert not run.failed(result)
    table = report.format_table(result)
    assert "| n/a |" in table and table.count("peak memory n/a: no peak-memory") == 1


def test_a_worker_past_its_time_limit_is_stopped_with_the_processes_it_started():
    """A worker's own children (a compiler's worker processes) inherit its pipes: the time
    limit stops them too, instead of waiting for them to close the pipes."""
    from focalx import _workers
    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
            "time.sleep(30)")
    t0 = time.perf_counter()
    rep = _workers.run("x", lambda out: [sys.executable, "-c", code], timeout=1)
    assert rep == {"backend": "x", "crashed": "timed out after 1 s"}
    assert time.perf_counter() - t0 < 15


def test_quick_mode_runs_backends_at_once_and_keeps_their_order(monkeypatch):
    """--quick (a check that everything runs) measures that many backends at once, one per
    core, up to 4; the full bench one at a time unless --jobs says otherwise. The report
    keeps the backends' order whichever finishes first."""
    def cfg(*argv):
        return config.config_from_args(config.parser().parse_args(list(argv)))
    assert cfg()["jobs"] == 1
    assert cfg("--quick")["jobs"] == config._cores() >= 1
    assert cfg("--quick", "--jobs", "1")["jobs"] == 1
    assert cfg("--jobs", "3")["jobs"] == 3

    # each fake worker reports when it ran; torch's (listed first) lasts longest
    code = ("import json, time\n"
            "t0 = time.time(); time.sleep(1.5 if 'torch' in out_name else 0.5)\n"
            "open(out, 'w').write(json.dumps({'backend': out_name, 'span': [t0, time.time()]}))")

    def command(name, cfg, out, memory, first=None):
        return [sys.executable, "-c", f"out = {str(out)!r}; out_name = {name!r}\n{code}"]
    monkeypatch.setattr(run, "_worker_command", command)
    monkeypatch.setattr(run, "available", lambda name: (True, ""))
    for jobs, overlap in ((2, True), (1, False)):
        c = cfg("--quick", "--backend", "torch,jax", "--jobs", str(jobs))
        reps = run.run_all(c)["backends"]
        assert [r["backend"] for r in reps] == ["torch", "jax"]
        # jax's worker started before torch's ended: they ran at once
        assert (reps[1]["span"][0] < reps[0]["span"][1]) is overlap, (jobs, reps)


def test_backends_at_once_start_with_the_longest_and_report_in_registry_order(monkeypatch):
    """With several backends at once, the ones that take longest start first (so that
    the run does not end with one long backend alone on the cores)."""
    started = []

    def fake(name, cfg, progress=None):
        started.append(name)
        time.sleep(0.05)
        return {"backend": name}
    monkeypatch.setattr(run, "_run_backend", fake)
    monkeypatch.setattr(run, "available", lambda name: (True, ""))
    c = config.config_from_args(config.parser().parse_args(
        ["--quick", "--jobs", "2", "--backend", "paddle,torch,jax,tensorflow"]))
    reps = run.run_all(c)["backends"]
    assert [r["backend"] for r in reps] == ["paddle", "torch", "jax", "tensorflow"]
    assert started[:2] == ["tensorflow", "jax"], started


def test_quick_mode_measures_no_memory_unless_asked():
    """--quick's tiny arrays show no memory: its memory processes are left out unless
    --memory asks for them (the full bench measures memory unless --no-memory)."""
    def cfg(*argv):
        return config.config_from_args(config.parser().parse_args(list(argv)))
    assert cfg()["memory"] is True and cfg("--no-memory")["memory"] is False
    assert cfg("--quick")["memory"] is False and cfg("--quick", "--memory")["memory"] is True

def test_the_linear_workload_runs_only_when_named_and_never_in_quick_mode():
    """The linear workload (issue 19) takes seconds a call: not in the default run, and
    --quick (which must stay fast) drops it even when named."""
    from focalx.bench import config

    def workloads(*argv):
        return config.config_from_args(config.parser().parse_args(list(argv)))["workloads"]
    assert "linear" not in workloads() and "linear" not in workloads("--quick")
    assert workloads("--workload", "linear") == ["linear"]
    assert "linear" not in workloads("--quick", "--workload", "linear,sigmoid")


@pytest.mark.parametrize("name", config.BACKENDS)
def test_the_linear_workload_pits_the_fused_loss_against_the_materialised_logits(
        name, monkeypatch):
    """Every backend's linear workload (issue 19) has focalx's fused loss, the naive path
    (the matmul, then focalx's softmax focal loss) at gamma 2 and 0, and a floor; each
    one's fwd+bwd runs (in a second mode, focalx's), and the memory worker's peak of the fused loss is a number (a
    tiny shape here: the workload's own takes seconds a call)."""
    from focalx.backends import REGISTRY
    import_backend(REGISTRY[name].module)
    monkeypatch.setattr(config, "LINEAR_SHAPE", (48, 8, 40))
    cfg = config.config_from_args(config.parser().parse_args(
        ["--backend", name, "--workload", "linear", "--no-compile"]))
    fx = __import__(config.FOCALX_MODULES[name], fromlist=["_"])
    groups, _, peak = worker.group_builder(name)(cfg, fx)
    assert groups and {g["workload"] for g in groups} == {"linear"}
    for i, g in enumerate(groups):
        assert tuple(g["shape"]) == (48, 40)
        conts = g["contenders"]
        roles = [c.role for c in conts]
        assert roles[0] == "focalx" and roles.count("focalx") == 1 and "floor" in roles
        names = [c.name for c in conts]
        assert {"matmul + focalx softmax", "focalx fused, gamma 0",
                "matmul + focalx softmax, gamma 0"} <= set(names), names
        for c in conts:
            if c.skip:
                assert c.role == "floor", (c.name, c.skip)
            elif i == 0 or c.role == "focalx":  # (a second mode, e.g. XLA: focalx's only)
                c.fwdbwd()
    measure.measure_memory(groups[0]["contenders"][0], peak, tries=1)
    mem = groups[0]["contenders"][0].memory
    assert "peak_error" not in mem and mem["peak_extra_bytes"] >= 0, mem
