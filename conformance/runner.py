"""Run the golden cases and the bad-input cases on backends, devices and dtypes.

``run_matrix`` starts one subprocess per backend (``python -m focalx.conformance
--worker NAME``): some frameworks cannot share a process (TensorFlow imported
before Paddle crashes), and a crash is then that backend's failure, reported as
such. ``run_backend`` is what a worker does, and what ``check`` reuses for a
user's own function.
"""

from __future__ import annotations

import fnmatch
import json
import math
import time
from pathlib import Path

import numpy as np

from focalx import _workers
from focalx._workers import progress

from . import _harness, tolerances
from .bad_inputs import MODULES, bad_inputs

#: losses with a second positional array (the bad-input cases pass it as this kwarg)
LINEAR_INPUTS = {"linear_softmax_focal_loss": "linear_weight"}

GOLDEN = Path(__file__).with_name("golden.json")
BACKENDS = tuple(_harness.HARNESSES)
#: frameworks the project targets whose backends have not landed yet
PLANNED: tuple[str, ...] = ()


def load_golden(path: Path = GOLDEN) -> dict:
    with open(path) as fh:
        return json.load(fh)


def _floats(values, dtype="float64"):
    """Expected values as float64, NaN for unchecked ones, +-inf past the dtype's range."""
    out = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    big = np.abs(out) > tolerances.MAX[dtype]
    out[big] = np.copysign(np.inf, out[big])
    return out


def _errors(got, want, rtol, atol):
    """Elementwise error in units of the tolerance (pass: <= 1). NaN in `want` = unchecked."""
    checked = ~np.isnan(want)
    got, want = got[checked], want[checked]
    out = np.zeros(got.shape)
    inf = np.isinf(want)
    out[inf] = np.where(got[inf] == want[inf], 0.0, np.inf)
    fin = ~inf
    diff = np.abs(got[fin] - want[fin])
    bound = rtol * np.abs(want[fin]) + atol
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)
    out[fin] = np.where(np.isnan(ratio), np.inf, ratio)  # NaN from the backend never passes
    return out


def flushed_values(fn, shape, logits, targets, targets_shape, kwargs, dtype):
    """(loss mask, gradient mask): the values of a call that depend on an input below the
    smallest normal number of dtype's compute dtype (see tolerances.MIN_NORMAL), which a
    runtime that flushes subnormals reads as 0. Inputs: the logits and floating targets
    as the backend holds them, and NumPy array kwargs."""
    shape = tuple(shape)
    low = tolerances.MIN_NORMAL[dtype]

    def sub(v, shp=None):
        a = np.asarray(v, dtype=np.float64)
        a = a.reshape(shp) if shp is not None else a
        return (a != 0) & (np.abs(a) < low)
    x = sub(logits, shape)
    t = sub(targets, tuple(targets_shape)) if targets is not None else None
    arrays = [sub(v) for v in kwargs.values() if isinstance(v, (list, np.ndarray))]
    none = kwargs.get("reduction", "mean") == "none"
    if fn in PER_SAMPLE:
        axis = kwargs["axis"] % len(shape)
        if t is not None and t.shape == shape:
            x = x | t
        samples = x.any(axis=axis)
        if any(a.any() for a in arrays):  # class vectors: every sample
            samples[...] = True
        grad = np.broadcast_to(np.expand_dims(samples, axis), shape)
        loss = samples if none else np.array(samples.any())
    else:
        if t is not None:
            x = x | np.broadcast_to(t, shape)
        for a in arrays:
            if a.ndim <= len(shape):
                x = x | np.broadcast_to(a, shape)
        grad = x
        loss = x if none else np.array(x.any())
    return loss.ravel(), grad.ravel()


def compare(loss, grad, expected, dtype, unchecked=None):
    """(worst error as a multiple of the tolerance, worst relative error, what failed).
    `unchecked`: (loss mask, gradient mask) of values not to compare, or None."""
    rtol, atol, tiny = tolerances.tolerance(dtype)
    atol = atol * abs(float(expected["scale"])) + tiny
    want_loss = _floats(expected["loss"], dtype)
    if unchecked is not None:
        want_loss[unchecked[0]] = math.nan
    problems = []
    if loss.shape != want_loss.shape:
        return math.inf, math.inf, [f"loss has {loss.size} values, expected {want_loss.size}"]
    parts = [("loss", _errors(loss, want_loss, rtol, atol))]
    if grad is not None:
        want_grad = _floats(expected["grad"], dtype)
        if unchecked is not None and want_grad.shape == unchecked[1].shape:
            want_grad[unchecked[1]] = math.nan
        if grad.shape != want_grad.shape:
            return math.inf, math.inf, [f"gradient has {grad.size} values, expected "
                                        f"{want_grad.size}"]
        parts.append(("grad", _errors(grad, want_grad, rtol, atol)))
    worst = 0.0
    wants = {"loss": want_loss, "grad": want_grad if grad is not None else None}
    for what, err in parts:
        if err.size and err.max() > worst:
            worst = float(err.max())
        if err.size and err.max() > 1.0:
            i = int(np.argmax(err))
            want_all = wants[what]
            checked = ~np.isnan(want_all)
            got = float((loss if what == "loss" else grad)[checked][i])
            want = float(want_all[checked][i])
            problems.append(f"{what}[{i}] = {got!r}, expected {want!r} "
                            f"({err.max():.3g} x tolerance)")
    return worst, worst * rtol, problems


#: the functions whose loss is per sample (the class axis reduced)
PER_SAMPLE = ("softmax_focal_loss", "asymmetric_softmax_loss", "distribution_focal_loss")


def expected_shape(case):
    """The loss's shape: the logits' for "none" (without the class axis for softmax), else ()."""
    if case["kwargs"].get("reduction", "mean") != "none":
        return ()
    if "linear" in case:  # per row of hidden
        return (case["linear"]["hidden_shape"][0],)
    shape = tuple(case["shape"])
    if case["fn"] in PER_SAMPLE:
        axis = case["kwargs"]["axis"] % len(shape)
        shape = shape[:axis] + shape[axis + 1:]
    return shape


def select(cases, *, variant=None, pattern=None):
    out = []
    for c in cases:
        if variant is not None and c["fn"] != variant:
            continue
        if pattern and not (fnmatch.fnmatch(c["id"], pattern) or pattern in c["id"]):
            continue
        out.append(c)
    return out


def run_cases(harness, cases, device, dtype, *, fn=None, adapter=None):
    """Evaluate cases on one device and dtype; `fn`/`adapter` for a user's function."""
    results = []
    flushes = getattr(harness, "flushes_subnormals", False)
    for case in cases:
        if dtype not in case.get("dtypes", (dtype,)):
            continue  # (a logit this dtype cannot hold)
        expected = case["expected"].get(dtype, case["expected"]["float64"])
        kwargs = dict(case["kwargs"])
        for name in case["array_kwargs"]:
            v = np.asarray(kwargs[name], dtype=np.float64)
            kwargs[name] = harness.to_array(v.ravel().tolist(), v.shape, device=device,
                                            dtype="float64")
        own = fn is None
        call = harness.default_fn(case["fn"]) if own else fn
        if "linear" in case:  # (its arrays travel packed in "logits": see cases.py)
            call = _harness.packed_linear(harness, call, case["linear"])
        entry = {"id": case["id"]}
        try:
            if adapter is not None:
                kwargs = adapter(case["fn"], kwargs)
            x = harness.to_array(case["logits"], case["shape"], device=device, dtype=dtype)
            y = harness.to_array(case["targets"], case["targets_shape"],
                                 index=case["targets_dtype"] == "int", device=device,
                                 dtype=dtype)
            if "labels" in case:  # quality_focal_loss's detection pair (labels, scores)
                y = (harness.to_array(case["labels"], case["targets_shape"], index=True,
                                      device=device, dtype=dtype), y)
            loss, grad, shape, out_dtype = harness.evaluate(call, x, y, kwargs, own=own)
        except _harness.UnsupportedCase as exc:
            entry.update(status="unsupported", detail=str(exc))
            results.append(entry)
            continue
        except Exception as exc:  # noqa: BLE001 - any error is this case's failure
            entry.update(status="failed", error=math.inf,
                         detail=f"raised {type(exc).__name__}: {exc}")
            results.append(entry)
            continue
        unchecked = None
        if flushes and "linear" not in case:  # (the linear cases' inputs: multiples of 1/8)
            unchecked = flushed_values(
                case["fn"], case["shape"], expected.get("logits", case["logits"]),
                expected.get("targets", case["targets"])
                if case["targets_dtype"] == "float" and "labels" not in case
                else None, case["targets_shape"], case["kwargs"], dtype)
            if not (unchecked[0].any() or unchecked[1].any()):
                unchecked = None
        ratio, rel, problems = compare(loss, grad, expected, dtype, unchecked)
        want_shape, want_dtype = expected_shape(case), harness.result_dtype(dtype)
        if tuple(shape) != want_shape:
            problems.insert(0, f"loss has shape {tuple(shape)}, expected {want_shape}")
            ratio = math.inf
        if out_dtype != want_dtype:
            problems.insert(0, f"loss has dtype {out_dtype}, expected {want_dtype}")
            ratio = math.inf
        entry.update(status="passed" if not problems else "failed", error=ratio, rel=rel)
        if unchecked is not None:  # values not compared: they depend on a subnormal input
            entry["flushed"] = int(unchecked[0].sum() + unchecked[1].sum())
        if problems:
            entry["detail"] = "; ".join(problems)
        results.append(entry)
    return results


def run_bad_inputs(harness, device="cpu"):
    results = []

    def conv(a):  # keep the kind: float64, int64 or bool
        dt = {"f": "float64", "b": "bool"}.get(a.dtype.kind, "int64")
        return harness.to_array(a.ravel().tolist(), a.shape, device=device, dtype=dt)

    for cid, variant, x, t, kw, exc_type, name in bad_inputs():
        entry = {"id": cid}
        module = variant in MODULES
        if module and not hasattr(harness, "construct"):
            entry.update(status="not applicable", detail="no loss classes in this backend")
            results.append(entry)
            continue
        try:  # (converting a target beyond the framework's integers may raise too)
            xs, ts = conv(x), conv(t)
            kwargs = {k: conv(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
            if module:
                harness.construct(variant, kwargs)
            elif variant in LINEAR_INPUTS:  # (its second array is positional)
                harness.default_fn(variant)(xs, kwargs.pop(LINEAR_INPUTS[variant]), ts,
                                            **kwargs)
            else:
                harness.call_public(variant, xs, ts, kwargs)
        except exc_type as exc:
            ok = name in str(exc)
            entry.update(status="passed" if ok else "failed",
                         detail="" if ok else f"{type(exc).__name__} does not name {name!r}: {exc}")
        except Exception as exc:  # noqa: BLE001
            entry.update(status="failed",
                         detail=f"raised {type(exc).__name__} (expected "
                                f"{exc_type.__name__}): {exc}")
        else:
            entry.update(status="failed", detail=f"no error (expected {exc_type.__name__})")
        results.append(entry)
    return results


def _summary(results):
    done = [r for r in results if r["status"] != "unsupported"]
    failed = [r for r in done if r["status"] == "failed"]
    worst = max(done, key=lambda r: r.get("error", 0.0), default=None)
    return {
        "cases": len(results), "passed": len(done) - len(failed), "failed": len(failed),
        "unsupported": len(results) - len(done),
        "flushed": sum(r.get("flushed", 0) for r in results),
        "worst": None if worst is None else {"id": worst["id"], "error": worst.get("error"),
                                             "rel": worst.get("rel")},
    }


def run_backend(name, *, devices=None, dtypes=None, pattern=None):
    """Everything for one backend, in this process: the worker's job."""
    import focalx
    t0 = time.perf_counter()
    harness = _harness.create(name)
    cases = select(load_golden()["cases"], pattern=pattern)
    available = harness.devices()
    report = {"backend": name, "version": harness.version, "focalx": focalx.__version__,
              "flushes_subnormals": getattr(harness, "flushes_subnormals", False),
              "devices": available, "runs": [], "bad_inputs": None}
    plan = [(device, dtype) for device in available if not devices or device in devices
            for dtype in harness.dtypes(device) if not dtypes or dtype in dtypes]
    for i, (device, dtype) in enumerate(plan):
        progress(i, len(plan) + 1, f"{device}/{dtype}")
        results = run_cases(harness, cases, device, dtype)
        report["runs"].append({"device": device, "dtype": dtype, **_summary(results),
                               "results": results})
    progress(len(plan), len(plan) + 1, "bad inputs")
    bad = run_bad_inputs(harness)
    applicable = [r for r in bad if r["status"] != "not applicable"]
    report["bad_inputs"] = {"total": len(applicable),
                            "passed": sum(r["status"] == "passed" for r in applicable),
                            "not_applicable": len(bad) - len(applicable), "results": bad}
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _worker_command(name, args):
    cmd = _workers.command("focalx.conformance", name, args.get("extra") or ())
    for flag, values in (("--device", args.get("devices")), ("--dtype", args.get("dtypes"))):
        for v in values or ():
            cmd += [flag, v]
    if args.get("pattern"):
        cmd += ["--case", args["pattern"]]
    return cmd


def run_matrix(*, backends=None, devices=None, dtypes=None, pattern=None, timeout=900,
               extra=(), on_progress=None, on_done=None):
    """One subprocess per backend; returns {"backends": [...], "skipped": {...}}.
    `extra`: more command-line arguments for each worker (``--fuzz``); `on_progress(name,
    done, total, what)` is called as a worker reports its progress, and `on_done(entry)`
    with each backend's report (or crash) as it finishes."""
    names = list(backends or BACKENDS)
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; known: {list(BACKENDS)}")
    out = {"backends": _Reported(on_done), "skipped": {}, "missing": {},
           "devices": list(devices or ())}
    if backends is None:
        for name in PLANNED:
            out["skipped"][name] = "focalx has no backend for it yet"
    for name in names:
        ok, why = _harness.available(name)
        if not ok:
            # asked for by name: a failure; found missing while checking all: a skip
            (out["missing"] if backends else out["skipped"])[name] = why
            continue
        cmd = _worker_command(name, dict(devices=devices, dtypes=dtypes, pattern=pattern,
                                         extra=extra))
        out["backends"].append(_workers.run(
            name, lambda path, cmd=cmd: cmd + ["--worker-out", str(path)], timeout=timeout,
            on_progress=lambda *a, n=name: on_progress and on_progress(n, *a)))
    return out


class _Reported(list):
    """A list that tells `on_done` of each entry appended."""

    def __init__(self, on_done):
        super().__init__()
        self.on_done = on_done

    def append(self, entry):
        super().append(entry)
        if self.on_done:
            self.on_done(entry)


def checked_cases(matrix) -> int:
    return sum(run["cases"] - run["unsupported"] for rep in matrix["backends"]
               for run in rep.get("runs", ()))


def absent_devices(matrix) -> dict:
    """{device asked for: [(backend, its devices)]} for each device no backend run has."""
    out = {}
    for dev in matrix.get("devices", ()):
        reps = [r for r in matrix["backends"] if "devices" in r]
        if reps and not any(dev in r["devices"] for r in reps):
            out[dev] = [(r["backend"], r["devices"]) for r in reps]
    return out


def failed(matrix) -> bool:
    """Any failure, crash or requested-but-missing backend or device, or nothing checked
    at all."""
    if matrix.get("missing") or checked_cases(matrix) == 0 or absent_devices(matrix):
        return True
    for rep in matrix["backends"]:
        if "crashed" in rep:
            return True
        if any(run["failed"] for run in rep["runs"]):
            return True
        bad = rep["bad_inputs"]
        if bad["passed"] != bad["total"]:
            return True
    return False


def format_matrix(matrix, *, verbose=False) -> str:
    lines = ["| backend | device | dtype | cases | passed | failed | worst error (x tolerance) | "
             "same, as relative error | worst case |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for rep in matrix["backends"]:
        name = rep["backend"]
        if "crashed" in rep:
            lines.append(f"| {name} | - | - | - | - | CRASHED | - | - | {rep['crashed']} |")
            continue
        for run in rep["runs"]:
            w = run["worst"] or {}
            err = w.get("error")
            lines.append(
                f"| {name} {rep['version']} | {run['device']} | {run['dtype']} | {run['cases']} "
                f"| {run['passed']} | {run['failed']} | "
                f"{'-' if err is None else format(err, '.3g')} | "
                f"{'-' if w.get('rel') is None else format(w['rel'], '.2e')} | "
                f"{w.get('id', '-')} |")
            for r in run["results"]:
                if r["status"] == "failed" or verbose:
                    err = r.get("error")
                    notes.append(f"  {name}/{run['device']}/{run['dtype']} {r['id']}: "
                                 f"{r['status']}"
                                 + ("" if err is None else f" ({err:.3g} x tolerance)")
                                 + (f": {r['detail']}" if r.get("detail") else ""))
        flushed = sum(run.get("flushed", 0) for run in rep["runs"])
        if flushed:
            notes.append(f"  {name}: its CPU runtime flushes subnormal inputs to 0 (or takes "
                         f"their log inaccurately): {flushed} values that depend on an input "
                         "below the smallest normal number were not compared")
        bad = rep["bad_inputs"]
        na = bad.get("not_applicable", 0)
        lines.append(f"| {name} | bad inputs | | {bad['total']} | {bad['passed']} | "
                     f"{bad['total'] - bad['passed']} | | | same error type, naming the argument"
                     + (f" ({na} for loss classes: none in this backend)" if na else "") + " |")
        for r in bad["results"]:
            if r["status"] not in ("passed", "not applicable"):
                notes.append(f"  {name} bad input {r['id']}: {r['detail']}")
    for name, why in matrix.get("missing", {}).items():
        notes.append(f"FAILED {name}: asked for, but {why}")
    for name, why in matrix["skipped"].items():
        notes.append(f"skipped {name}: {why}")
    absent = absent_devices(matrix)
    for dev, seen in absent.items():
        notes.append(f"FAILED: --device {dev}: no backend here has it (" + "; ".join(
            f"{name} sees {', '.join(devs)}" for name, devs in seen) + ")" +
            (": no CUDA device (or no CUDA build of the framework)" if dev in ("cuda", "gpu")
             else ""))
    if checked_cases(matrix) == 0 and not absent:
        notes.append("FAILED: no golden case was checked (check --backend, --device, --dtype "
                     "and --case)")
    notes.append("tolerance: |got - want| <= rtol*|want| + atol*scale + tiny; " + ", ".join(
        f"{dt}: rtol {r:.2e}, atol {a:.1e}, tiny {t:.1e}"
        for dt, (r, a, t) in tolerances.TABLE.items()))
    return "\n".join(lines + [""] + notes)
