"""Timing and memory measurement of contenders (worker side; NumPy only here)."""

from __future__ import annotations

import gc
import math
import statistics
import time

from .config import CLASSES, LOGIT_STD, POSITIVES, SAMPLE_S, SEED

# ---------------------------------------------------------------------------
# workloads (worker side; numpy only here)
# ---------------------------------------------------------------------------


def softmax_shape(size: int) -> tuple[int, int]:
    classes = CLASSES if size >= 64 * CLASSES else max(2, min(16, size))
    return max(1, size // classes), classes


def sigmoid_shape(size: int) -> tuple[int, ...]:
    # 2-D like detection / multi-label logits; keras reduces the last axis first
    if size >= 1024 and size % 1024 == 0:
        return (size // 1024, 1024)
    return (1, size)


def host_inputs(workload: str, size: int):
    """float32 logits ~ N(0, 2) and targets (~10% positives, or class indices)."""
    import numpy as np
    rng = np.random.default_rng(SEED)
    if workload == "sigmoid":
        shape = sigmoid_shape(size)
        x = (rng.standard_normal(shape, dtype=np.float32) * LOGIT_STD).astype(np.float32)
        t = (rng.random(shape, dtype=np.float32) < POSITIVES).astype(np.float32)
        return x, t
    rows, classes = softmax_shape(size)
    x = (rng.standard_normal((rows, classes), dtype=np.float32) * LOGIT_STD).astype(np.float32)
    y = rng.integers(0, classes, size=rows, dtype=np.int64)
    return x, y


def linear_host_inputs():
    """The linear workload's float32 hidden (N, H) ~ N(0, 1), weight (V, H) ~ N(0, 1/H)
    (logits of unit scale) and class indices (N,), of config.LINEAR_SHAPE."""
    import numpy as np

    from . import config
    n, h_dim, v = config.LINEAR_SHAPE
    rng = np.random.default_rng(SEED)
    h = rng.standard_normal((n, h_dim), dtype=np.float32)
    w = rng.standard_normal((v, h_dim), dtype=np.float32) / np.float32(h_dim ** 0.5)
    y = rng.integers(0, v, size=n, dtype=np.int64)
    return h, w, y


class Contender:
    """One loss to time: `fwd()` and `fwdbwd()` run a call to completion."""

    def __init__(self, name, role, fwd=None, fwdbwd=None, saved=None, skip=None):
        self.name, self.role = name, role          # role: focalx | peer | floor
        self.fwd, self.fwdbwd, self.saved = fwd, fwdbwd, saved
        self.skip = skip                            # reason it is not measured
        self.error = None
        self.samples = {"fwd": [], "fwd+bwd": []}
        self.faults = {"fwd": [], "fwd+bwd": []}  # minor page faults per call, per sample
        self.number = {"fwd": 1, "fwd+bwd": 1}
        self.first_call_s = {}
        self.memory = {}
        self.settle = None  # called after the first call (a background compilation's end)

    def phases(self):
        return (("fwd", self.fwd), ("fwd+bwd", self.fwdbwd))


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    text = " ".join(text.split())
    # the message's end names the actual error (TensorFlow prepends a stack)
    return text if len(text) <= 500 else text[:150] + " ... " + text[-345:]


def warm_up(cont: Contender, warmup: int, sample_s: float = SAMPLE_S):
    for phase, fn in cont.phases():
        if cont.error:
            return
        try:
            t0 = time.perf_counter()
            fn()
            cont.first_call_s[phase] = time.perf_counter() - t0
            last = cont.first_call_s[phase]
            if cont.settle is not None:
                cont.settle()
            for _ in range(max(0, warmup - 1)):
                t0 = time.perf_counter()
                fn()
                last = time.perf_counter() - t0
            cont.number[phase] = max(1, min(1000, math.ceil(sample_s / max(last, 1e-9))))
        except Exception as exc:  # noqa: BLE001 - recorded as this contender's error
            cont.error = f"{phase}: {_error_text(exc)}"


def _minor_faults():
    """This process's minor page faults so far (None where getrusage is missing)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux/macOS
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_interleaved(contenders, repeats: int):
    live = [c for c in contenders if not c.skip]
    n = len(live)
    for r in range(repeats):
        order = live[r % n:] + live[:r % n] if n else []
        for cont in order:
            for phase, fn in cont.phases():
                if cont.error:
                    break
                k = cont.number[phase]
                try:
                    f0 = _minor_faults()
                    t0 = time.perf_counter()
                    for _ in range(k):
                        fn()
                    cont.samples[phase].append((time.perf_counter() - t0) / k)
                    if f0 is not None:
                        cont.faults[phase].append((_minor_faults() - f0) / k)
                except Exception as exc:  # noqa: BLE001
                    cont.error = f"{phase}: {_error_text(exc)}"


# ---------------------------------------------------------------------------
# memory (worker side)
# ---------------------------------------------------------------------------

def _proc_status() -> dict:
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class RssPeak:
    """Peak resident-set growth of a call (host memory; needs Linux's /proc)."""

    how = "host RSS high-water mark (VmHWM) minus RSS before the call"

    def __call__(self, fn):
        gc.collect()
        if not _reset_peak_rss():
            return None
        before = _proc_status().get("VmRSS")
        fn()
        after = _proc_status().get("VmHWM")
        if before is None or after is None:
            return None
        return max(0, after - before)


def measure_memory(cont: Contender, peak, tries: int = 2):
    if cont.skip or cont.error:
        return
    try:
        cont.fwdbwd()  # compiled / warm
        if cont.settle is not None:
            cont.settle()
        values = [peak(cont.fwdbwd) for _ in range(tries)]
        values = [v for v in values if v is not None]
        cont.memory["peak_extra_bytes"] = min(values) if values else None
    except Exception as exc:  # noqa: BLE001
        cont.memory["peak_error"] = _error_text(exc)
    if cont.saved is not None:
        try:
            cont.memory.update(cont.saved())
        except Exception as exc:  # noqa: BLE001
            cont.memory["saved_error"] = _error_text(exc)


class _Skip(Exception):
    """The backend cannot run this configuration (e.g. no such device)."""


def _group(workload, mode, size, dtype, shape, elements, contenders):
    return {"workload": workload, "mode": mode, "size": size, "dtype": dtype,
            "shape": list(shape), "elements": int(elements), "contenders": contenders}


def _median(values):
    return statistics.median(values) if values else None


def _contender_report(c: Contender) -> dict:
    out = {"name": c.name, "role": c.role}
    if c.skip:
        out["skipped"] = c.skip
        return out
    if c.error:
        out["error"] = c.error
    out["number"] = dict(c.number)
    out["first_call_s"] = dict(c.first_call_s)
    out["samples_s"] = {k: list(v) for k, v in c.samples.items()}
    out["median_s"] = {k: _median(v) for k, v in c.samples.items()}
    out["minor_faults_per_call"] = {k: list(v) for k, v in c.faults.items()}
    if c.memory:
        out["memory"] = dict(c.memory)
    return out
