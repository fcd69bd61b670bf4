"""A bench worker: one backend's measurements in this process (``python -m focalx.bench --worker``)."""

from __future__ import annotations

import importlib
import json
import time
import traceback

from ..backends import REGISTRY, load
from . import config
from .config import FIRST_CALL_SIZE, SAMPLE_S
from .measure import (_contender_report, _error_text, _Skip, measure_memory, time_interleaved,
                      warm_up)


def group_builder(name: str):
    """The function that builds backend `name`'s contender groups (the registry's ``bench``)."""
    return load(REGISTRY[name].bench)


def _set_up(name: str, cfg: dict, report: dict):
    """(groups, info, peak) of backend `name`, or None with the reason in `report`."""
    t0 = time.perf_counter()
    try:
        fx = importlib.import_module(config.FOCALX_MODULES[name])
        for fn in ("sigmoid_focal_loss", "softmax_focal_loss"):
            if not callable(getattr(fx, fn, None)):
                raise AttributeError(f"{config.FOCALX_MODULES[name]} has no {fn}")
    except Exception as exc:  # noqa: BLE001 - a missing/broken backend is this row's error
        report["error"] = f"cannot import {config.FOCALX_MODULES[name]}: {_error_text(exc)}"
        return None
    report["import_s"] = time.perf_counter() - t0
    try:
        return group_builder(name)(cfg, fx)
    except _Skip as exc:
        report["skipped"] = str(exc)
    except Exception as exc:  # noqa: BLE001
        report["error"] = f"setting up: {_error_text(exc)}"
        report["traceback"] = traceback.format_exc()[-2000:]
    return None


def run_worker(name: str, cfg: dict, memory: bool = False) -> dict:
    """Everything one backend does, in this process: the worker's job."""
    t0 = time.perf_counter()
    report = {"backend": name, "kind": "memory" if memory else "timing"}
    built = _set_up(name, cfg, report)
    if built is None:
        return report
    groups, info, peak = built
    report["info"] = info
    for group in groups:
        conts = group["contenders"]
        if memory:
            for c in conts:
                if peak is None:  # (JAX on a GPU: its peak counter cannot be reset)
                    c.memory["peak_note"] = "no peak-memory measurement for this device"
                measure_memory(c, peak or (lambda fn: None))
        else:
            for c in conts:
                if not c.skip:
                    warm_up(c, max(1, cfg["warmup"]), cfg.get("sample_s", SAMPLE_S))
            time_interleaved(conts, cfg["repeats"])
        group["contenders"] = [_contender_report(c) for c in conts]
    report["groups"] = groups
    report["peak_how"] = getattr(peak, "how", None)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def run_first_call(name: str, cfg: dict, which: str) -> dict:
    """One contender's first forward+backward call, in this fresh process: `which` is
    "WORKLOAD:INDEX" (the contender's place in the workload's first group). Also reports
    the seconds of the imports and of the second call, and every contender's name and
    role (so that the parent knows which others to run)."""
    workload, index = which.split(":")
    report = {"backend": name, "kind": "first call", "workload": workload}
    sub = dict(cfg, workloads=[workload], sizes=[FIRST_CALL_SIZE], dtypes=["float32"],
               compile=False, modes=["eager"])
    built = _set_up(name, sub, report)
    if built is None:
        return report
    group = built[0][0]
    conts = group["contenders"]
    report.update(mode=group["mode"], shape=group["shape"], elements=group["elements"],
                  contenders=[[c.name, c.role, c.skip] for c in conts])
    cont = conts[int(index)]
    report.update(name=cont.name, role=cont.role)
    if cont.skip:
        report["skipped"] = cont.skip
        return report
    try:
        t0 = time.perf_counter()
        cont.fwdbwd()
        report["first_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cont.fwdbwd()
        report["second_s"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001
        report["error"] = _error_text(exc)
    return report


def worker_main(args) -> int:
    cfg = json.loads(args.worker_config)
    if args.worker_first:
        report = run_first_call(args.worker, cfg, args.worker_first)
        args.worker_out.write_text(json.dumps(report))
        return 0
    report = run_worker(args.worker, cfg, memory=args.worker_memory)
    args.worker_out.write_text(json.dumps(report))
    return 0
