"""Running the workers (parent): one process per backend and kind of measurement."""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import os
import platform
from pathlib import Path

from .. import _workers
from ..backends import REGISTRY, installed_version
from .config import BACKENDS, DISTRIBUTIONS, LONGEST_FIRST, MMAP_THRESHOLD

# ---------------------------------------------------------------------------
# orchestration (parent)
# ---------------------------------------------------------------------------


def available(name: str) -> tuple[bool, str]:
    if installed_version(REGISTRY[name]) is None:
        return False, f"{REGISTRY[name].module} is not installed"
    return True, ""


def _worker_command(name: str, cfg: dict, out: Path, memory: bool,
                    first: str | None = None) -> list[str]:
    args = ["--worker-config", json.dumps(cfg), "--worker-out", str(out)]
    if memory:
        args.append("--worker-memory")
    if first:
        args += ["--worker-first", first]
    return _workers.command("focalx.bench", name, args)


def _worker_env(memory: bool) -> dict:
    env = dict(os.environ)
    if memory:
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _run_one(name, cfg, memory, timeout, first=None):
    return _workers.run(name, lambda out: _worker_command(name, cfg, out, memory, first),
                        timeout=timeout, env=_worker_env(memory))


def _merge_memory(timing: dict, memory: dict):
    """Copy the memory worker's numbers into the timing report's contenders."""
    if "crashed" in memory or "error" in memory:
        timing["memory_error"] = memory.get("crashed") or memory.get("error")
        return
    timing["peak_how"] = memory.get("peak_how")
    index = {(g["workload"], g["mode"], g["size"], g["dtype"], c["name"]): c.get("memory")
             for g in memory.get("groups", ()) for c in g["contenders"]}
    for g in timing.get("groups", ()):
        for c in g["contenders"]:
            mem = index.get((g["workload"], g["mode"], g["size"], g["dtype"], c["name"]))
            if mem:
                c["memory"] = mem


def _run_backend(name: str, cfg: dict, progress=None) -> dict:
    """One backend's workers, one after another: timing, memory, first calls."""
    if progress:
        progress(f"{name}: timing ...")
    rep = _run_one(name, cfg, False, cfg["timeout"])
    if cfg["memory"] and "groups" in rep:
        if progress:
            progress(f"{name}: memory ...")
        _merge_memory(rep, _run_one(name, cfg, True, cfg["timeout"]))
    if cfg.get("first_call", True) and "groups" in rep:
        if progress:
            progress(f"{name}: first calls ...")
        rep["first_calls"] = run_first_calls(name, cfg)
    return rep


def run_all(cfg: dict, progress=None) -> dict:
    """Every backend's workers. With cfg["jobs"] > 1 (--quick's default) that many
    backends run at once: their timings then share the cores, which --quick, a check that
    everything runs rather than a measurement, can afford; a backend's own workers still
    run one at a time."""
    names = cfg["backends"] or list(BACKENDS)
    result = {"config": cfg, "backends": [], "skipped": {}, "missing": {}}
    todo = []
    for name in names:
        ok, why = available(name)
        if not ok:
            (result["missing"] if cfg["backends"] else result["skipped"])[name] = why
            continue
        todo.append(name)
    jobs = min(cfg.get("jobs") or 1, len(todo) or 1)
    if jobs == 1:
        result["backends"] = [_run_backend(name, cfg, progress) for name in todo]
    else:
        order = sorted(todo, key=lambda n: LONGEST_FIRST.index(n) if n in LONGEST_FIRST
                       else -1)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            # (the workers are processes: these threads only wait on them)
            futures = {n: pool.submit(_run_backend, n, cfg, progress) for n in order}
            result["backends"] = [futures[n].result() for n in todo]
    return result


def run_first_calls(name: str, cfg: dict) -> list[dict]:
    """Each contender's first fwd+bwd call, a fresh process each (--quick: the sigmoid
    workload's focalx and peer only)."""
    out = []
    # (not the linear workload: its contenders take seconds a call at its one size)
    workloads = ["sigmoid"] if cfg["quick"] else [w for w in cfg["workloads"]
                                                  if w != "linear"]
    for workload in workloads:
        rep = _run_one(name, cfg, False, cfg["timeout"], first=f"{workload}:0")
        out.append(rep)
        for i, (_n, role, skip) in enumerate(rep.get("contenders", ())[1:], start=1):
            if skip or (cfg["quick"] and role == "floor"):
                continue
            out.append(_run_one(name, cfg, False, cfg["timeout"], first=f"{workload}:{i}"))
    return out


def failed(result: dict) -> bool:
    """A crash, an error (of a backend or of a focalx contender), a backend asked for
    by name but missing, or nothing measured at all."""
    if result.get("missing"):
        return True
    measured = False
    for rep in result["backends"]:
        if "crashed" in rep or "error" in rep or rep.get("memory_error"):
            return True
        for fc in rep.get("first_calls", ()):
            if "crashed" in fc or (fc.get("role", "focalx") == "focalx" and "error" in fc):
                return True
        for g in rep.get("groups", ()):
            for c in g["contenders"]:
                if c["role"] == "focalx" and ("error" in c or any(
                        k.endswith("_error") for k in c.get("memory", {}))):
                    return True
                if c.get("median_s", {}).get("fwd+bwd"):
                    measured = True
    return not measured


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": cpu, "cores": cores, "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def versions(names) -> dict:
    out = {}
    try:
        out["focalx"] = importlib.metadata.version("focalx")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        out["numpy"] = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        pass
    for name in names:
        for dist in DISTRIBUTIONS[name]:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
    return out
