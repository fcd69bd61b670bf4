"""``focalx bench``: time focalx against every installed peer, per backend.

The parent process (this module's :func:`main`) imports no framework. For each
backend it starts two subprocesses, ``python -m focalx._bench --worker NAME``:

- a *timing* worker, run in the user's environment unchanged: it builds the
  inputs once, warms every contender up (compilation happens here), then runs
  the repeats interleaved (round-robin over the contenders of one workload,
  starting from a different contender each repeat) and keeps every sample;
- a *memory* worker, run with ``MALLOC_MMAP_THRESHOLD_`` fixed (glibc then gives
  every large block back to the OS when it is freed, so the resident set follows
  the live arrays) and, for TensorFlow, ``TF_ENABLE_ONEDNN_OPTS=0`` (oneDNN keeps
  freed blocks in a pool otherwise). It measures the peak extra memory of one
  warmed-up forward+backward call, and the bytes saved for backward where the
  framework can tell (torch: ``saved_tensors_hooks``; jax: the residuals of
  ``jax.vjp``). These settings change speed, which is why timing runs elsewhere.

A third kind of worker, ``--worker-first``, times one contender's first
forward+backward call in a fresh process (after its imports and inputs): what a user
meets first, hidden compilations included. Each contender gets its own process.

Frameworks that cannot share a process (TensorFlow imported before Paddle
crashes) never meet, and a crash or an error is that backend's row of the table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .backends import REGISTRY

BACKENDS = tuple(REGISTRY)
WORKLOADS = ("sigmoid", "softmax")
DTYPES = ("float32", "float64", "float16", "bfloat16")
DEVICES = ("cpu", "cuda")
#: the focalx module each backend's worker benchmarks
FOCALX_MODULES = {b.name: b.public[0] for b in REGISTRY.values()}
#: distributions whose versions the header reports (each installed one)
DISTRIBUTIONS = {b.name: b.distributions + b.companions for b in REGISTRY.values()}
DEFAULT_SIZES = (4 << 20, 16 << 20)
QUICK_SIZE = 4096
#: the logits of the first-call rows (sigmoid: 500x1024; softmax: 500x1000 rows x classes)
FIRST_CALL_SIZE = 500 * 1024
#: number of classes of the softmax workload (fewer when the size is small)
CLASSES = 1000
GAMMA, ALPHA = 2.0, 0.25
POSITIVES, LOGIT_STD, SEED = 0.1, 2.0, 0
#: a timing sample repeats a call until it lasts at least this long (--sample-ms). At
#: 4M elements a call takes 2-8 ms here, and whether its fresh 16 MiB output page-faults
#: depends on the allocator's history: single-call samples were bimodal (2.8 or 7-8 ms for
#: the same call, measured), so a sample averages over ~0.1 s of calls, as the research
#: baseline (perf.md) did.
SAMPLE_S = 0.1
QUICK_SAMPLE_S = 2e-3
MMAP_THRESHOLD = str(1 << 16)
_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}


# ---------------------------------------------------------------------------
# argument parsing (parent)
# ---------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """'4M' -> 4 * 2**20, '64K' -> 65536, '65536' -> 65536 (K, M, G are binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 4M, 16M, 64K, 65536)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    value = float(m.group(1)) * scale
    if value < 1 or value != int(value):
        raise ValueError(f"{text!r} is not a positive whole number of elements")
    return int(value)


def format_size(n: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def _list_type(choices=None, convert=str):
    def parse(text):
        out = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown value {item!r}; choose from {', '.join(choices)}")
            try:
                out.append(convert(item))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        if not out:
            raise argparse.ArgumentTypeError("empty list")
        return out
    return parse


def _count_type(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _positive_ms(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parser(prog="focalx bench"):
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Time focalx's forward and forward+backward against every installed "
                    "peer (torchvision's formula, optax, keras, Paddle's built-in) and the "
                    "framework's cross-entropy as a floor; print a markdown table.",
        epilog="Each backend runs in its own subprocesses; timings are medians of interleaved "
               "repeats, ratios are peer / focalx from the same process. Sizes use binary "
               "units: 4M = 4 * 2**20 elements.")
    ap.add_argument("--backend", action="append", type=_list_type(BACKENDS),
                    help="comma-separated backends (repeatable; default: every installed one)")
    ap.add_argument("--workload", action="append", type=_list_type(WORKLOADS),
                    help="sigmoid and/or softmax (default: both)")
    ap.add_argument("--size", action="append", type=_list_type(convert=parse_size),
                    help="elements per logits array, e.g. 4M,16M or 65536 (default: 4M,16M; "
                         f"--quick: {QUICK_SIZE})")
    ap.add_argument("--dtype", action="append", type=_list_type(DTYPES),
                    help="logits dtype(s) (default: float32)")
    ap.add_argument("--device", choices=DEVICES, default="cpu",
                    help="cpu (default) or cuda (the GPU of each framework)")
    ap.add_argument("--repeats", type=_count_type(1),
                    help="timed samples per contender (default 10; --quick: 3)")
    ap.add_argument("--sample-ms", type=_positive_ms, metavar="MS",
                    help="each timing sample repeats a call for at least this long, up to "
                         f"1000 calls (default {SAMPLE_S * 1e3:g}; --quick: "
                         f"{QUICK_SAMPLE_S * 1e3:g})")
    ap.add_argument("--warmup", type=_count_type(0),
                    help="untimed calls per contender first, at least 1 (default 2; --quick: 1)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time torch.compile'd contenders (default: on, off with --quick)")
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                    help="measure peak memory and saved bytes (default: on)")
    ap.add_argument("--first-call", action=argparse.BooleanOptionalAction, default=True,
                    help="time each contender's first fwd+bwd call in a fresh process "
                         f"({format_size(FIRST_CALL_SIZE)} float32 logits; default: on; "
                         "--quick: focalx and its peer on the sigmoid workload only)")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny sizes ({QUICK_SIZE} elements), few repeats: proves it runs")
    ap.add_argument("--json", type=Path, metavar="PATH", help="write every raw number here")
    ap.add_argument("--timeout", type=_count_type(1), default=3600,
                    help="seconds allowed per worker process (default 3600)")
    ap.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    ap.add_argument("--worker-config", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-first", help=argparse.SUPPRESS)
    return ap


def _flatten(lists):
    out = []
    for part in lists or ():
        for v in part:
            if v not in out:
                out.append(v)
    return out


def config_from_args(args) -> dict:
    quick = args.quick
    return {
        "backends": _flatten(args.backend) or None,
        "workloads": _flatten(args.workload) or list(WORKLOADS),
        "sizes": _flatten(args.size) or ([QUICK_SIZE] if quick else list(DEFAULT_SIZES)),
        "dtypes": _flatten(args.dtype) or ["float32"],
        "device": args.device,
        "repeats": args.repeats or (3 if quick else 10),
        "warmup": args.warmup if args.warmup is not None else (1 if quick else 2),
        "sample_s": (args.sample_ms / 1e3 if args.sample_ms is not None else
                     QUICK_SAMPLE_S if quick else SAMPLE_S),
        "compile": args.compile if args.compile is not None else not quick,
        "memory": args.memory,
        "first_call": args.first_call,
        "quick": quick,
        "timeout": args.timeout,
    }


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


# ---------------------------------------------------------------------------
# per-framework contenders (worker side: each imports its framework)
# ---------------------------------------------------------------------------

def _torch_groups(cfg, fx):
    import torch
    import torch.nn.functional as F

    device = "cuda" if cfg["device"] == "cuda" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise _Skip("torch sees no CUDA device")
    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def torchvision_formula(x, t, alpha=ALPHA, gamma=GAMMA):
        # torchvision.ops.sigmoid_focal_loss, written out (torchvision 0.2x), reduction mean
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * ((1 - p_t) ** gamma)
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
        return loss.mean()

    def softmax_formula(x, y, gamma=GAMMA):
        logp = F.log_softmax(x, dim=1)
        logpt = logp.gather(1, y[:, None]).squeeze(1)
        pt = logpt.exp()
        return (-((1 - pt) ** gamma) * logpt).mean()

    def make(name, role, fn, x, t, mode):
        call = fn
        if mode == "compiled":
            # static shapes: a second size must not turn on dynamic-shape kernels
            call = torch.compile(fn, dynamic=False)

        def fwd():
            with torch.no_grad():
                call(x, t)
            sync()

        def fwdbwd():
            out = call(x, t)
            torch.autograd.grad(out, x)
            sync()

        def saved():
            found = {}

            def pack(tensor):
                try:
                    st = tensor.untyped_storage()
                    found[(st.device.type, st.data_ptr())] = st.nbytes()
                except Exception:  # noqa: BLE001 - e.g. tensors without storage
                    pass
                return tensor

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                out = call(x, t)
            del out
            inputs = {(a.untyped_storage().device.type, a.untyped_storage().data_ptr())
                      for a in (x, t)}
            return {"saved_bytes": sum(found.values()),
                    "saved_new_bytes": sum(v for k, v in found.items() if k not in inputs),
                    "saved_how": "torch.autograd.graph.saved_tensors_hooks"}

        return Contender(name, role, fwd, fwdbwd, saved)

    # "op by op": focalx with its fused kernel off, as it runs below the kernel's size
    # threshold, before the kernel is compiled, or where torch.compile cannot compile
    modes = ["eager", "op by op"] + (["compiled"] if cfg["compile"] else [])
    if cfg.get("modes"):
        modes = [m for m in modes if m in cfg["modes"]]
    if cfg["compile"]:
        # one compiled graph per size, dtype and grad mode: keep them all compiled
        # (past the limit torch.compile silently falls back to eager)
        for limit in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, limit):
                setattr(torch._dynamo.config, limit,
                        max(64, getattr(torch._dynamo.config, limit)))
    groups = []
    for dtype_name in cfg["dtypes"]:
        dtype = getattr(torch, dtype_name)
        for workload in cfg["workloads"]:
            for size in cfg["sizes"]:
                xn, tn = host_inputs(workload, size)
                x = torch.from_numpy(xn).to(device=device, dtype=dtype).requires_grad_()
                if workload == "sigmoid":
                    t = torch.from_numpy(tn).to(device=device, dtype=dtype)
                    fns = [("focalx", "focalx",
                            lambda a, b: fx.sigmoid_focal_loss(a, b, gamma=GAMMA, alpha=ALPHA)),
                           ("torchvision formula", "peer", torchvision_formula),
                           ("BCE-with-logits", "floor",
                            lambda a, b: F.binary_cross_entropy_with_logits(a, b))]
                else:
                    t = torch.from_numpy(tn).to(device=device)
                    fns = [("focalx", "focalx",
                            lambda a, b: fx.softmax_focal_loss(a, b, gamma=GAMMA, axis=1)),
                           ("focal formula (log_softmax)", "peer", softmax_formula),
                           ("cross_entropy", "floor", lambda a, b: F.cross_entropy(a, b))]
                del xn, tn
                for mode in modes:
                    conts = [make(n, r, _kernel_off(f) if mode == "op by op" and r == "focalx"
                                  else f, x, t, mode) for n, r, f in fns]
                    if mode == "eager":
                        # time the compiled kernel, not the op-by-op calls that run while
                        # it compiles in the background
                        conts[0].settle = _torch_settle
                    groups.append(_group(workload, mode, size, dtype_name, tuple(x.shape),
                                         x.numel(), conts))
    info = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if cuda:
        info["gpu"] = torch.cuda.get_device_name()
    peak = RssPeak()
    if cuda:
        peak = _TorchCudaPeak(torch)
    return groups, info, peak


def _kernel_off(fn):
    """fn with focalx.torch's fused kernel off for the call."""
    from focalx.backends import torch as backend

    def call(*args):
        saved = backend._FUSED["enabled"]
        backend._FUSED["enabled"] = False
        try:
            return fn(*args)
        finally:
            backend._FUSED["enabled"] = saved
    return call


def _torch_settle():
    from focalx.backends import torch as backend
    wait = getattr(backend, "wait_for_kernels", None)
    if wait is not None:
        wait()


class _TorchCudaPeak:
    how = "torch.cuda.max_memory_allocated minus memory_allocated before the call"

    def __init__(self, torch):
        self.torch = torch

    def __call__(self, fn):
        cuda = self.torch.cuda
        gc.collect()
        cuda.synchronize()
        cuda.reset_peak_memory_stats()
        before = cuda.memory_allocated()
        fn()
        return max(0, cuda.max_memory_allocated() - before)


def _jax_groups(cfg, fx):
    import jax
    import jax.numpy as jnp

    platform_name = "gpu" if cfg["device"] == "cuda" else "cpu"
    try:
        device = jax.devices(platform_name)[0]
    except RuntimeError as exc:
        raise _Skip(f"jax has no {platform_name} device ({_error_text(exc)})") from None
    try:
        import optax
    except ImportError:
        optax = None
    no_optax = "optax is not installed"
    if cfg["dtypes"] and "float64" in cfg["dtypes"]:
        jax.config.update("jax_enable_x64", True)

    def bce(x, t):
        return jnp.mean(jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x))))

    def softmax_formula(x, y, gamma=GAMMA):
        logp = jax.nn.log_softmax(x, axis=-1)
        logpt = jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
        pt = jnp.exp(logpt)
        return jnp.mean(-((1 - pt) ** gamma) * logpt)

    def make(name, role, fn, x, t):
        if fn is None:
            return Contender(name, role, skip=no_optax)
        f = jax.jit(fn)
        vg = jax.jit(jax.value_and_grad(fn))

        def fwd():
            jax.block_until_ready(f(x, t))

        def fwdbwd():
            jax.block_until_ready(vg(x, t))

        def saved():
            _, vjp_fn = jax.vjp(lambda a: fn(a, t), x)
            ptrs = set()
            for a in (x, t):
                try:
                    ptrs.add(a.unsafe_buffer_pointer())
                except Exception:  # noqa: BLE001
                    pass
            total = new = 0
            for leaf in jax.tree_util.tree_leaves(vjp_fn):
                if not hasattr(leaf, "nbytes"):
                    continue
                total += leaf.nbytes
                try:
                    ptr = leaf.unsafe_buffer_pointer()
                except Exception:  # noqa: BLE001
                    ptr = None
                if ptr not in ptrs:
                    new += leaf.nbytes
            return {"saved_bytes": total, "saved_new_bytes": new,
                    "saved_how": "residuals of jax.vjp outside jit"}

        return Contender(name, role, fwd, fwdbwd, saved)

    groups = []
    for dtype_name in cfg["dtypes"]:
        dtype = getattr(jnp, dtype_name)
        for workload in cfg["workloads"]:
            for size in cfg["sizes"]:
                xn, tn = host_inputs(workload, size)
                x = jax.device_put(jnp.asarray(xn, dtype=dtype), device)
                if workload == "sigmoid":
                    t = jax.device_put(jnp.asarray(tn, dtype=dtype), device)
                    fns = [("focalx", "focalx",
                            lambda a, b: fx.sigmoid_focal_loss(a, b, gamma=GAMMA, alpha=ALPHA)),
                           ("optax sigmoid_focal_loss", "peer",
                            None if optax is None else
                            lambda a, b: jnp.mean(optax.losses.sigmoid_focal_loss(
                                a, b, alpha=ALPHA, gamma=GAMMA))),
                           ("BCE-with-logits (optax)" if optax else "BCE-with-logits (jnp)",
                            "floor", bce if optax is None else
                            lambda a, b: jnp.mean(optax.losses.sigmoid_binary_cross_entropy(
                                a, b)))]
                else:
                    t = jax.device_put(jnp.asarray(tn), device)
                    fns = [("focalx", "focalx",
                            lambda a, b: fx.softmax_focal_loss(a, b, gamma=GAMMA, axis=-1)),
                           ("focal formula (log_softmax)", "peer", softmax_formula),
                           ("optax softmax_cross_entropy_with_integer_labels", "floor",
                            None if optax is None else
                            lambda a, b: jnp.mean(
                                optax.losses.softmax_cross_entropy_with_integer_labels(a, b)))]
                del xn, tn
                conts = [make(n, r, f, x, t) for n, r, f in fns]
                groups.append(_group(workload, "jit", size, dtype_name, tuple(x.shape),
                                     int(x.size), conts))
    info = {"jax": jax.__version__, "jax_device": str(device)}
    if optax is not None:
        info["optax"] = optax.__version__
    peak = RssPeak() if platform_name == "cpu" else None
    return groups, info, peak


def _tensorflow_groups(cfg, fx):
    import tensorflow as tf
    try:
        import keras
    except ImportError:
        keras = None
    name = "/GPU:0" if cfg["device"] == "cuda" else "/CPU:0"
    if cfg["device"] == "cuda" and not tf.config.list_physical_devices("GPU"):
        raise _Skip("tensorflow sees no GPU")
    gpu = cfg["device"] == "cuda"

    def sync(out):
        if gpu:
            tf.test.experimental.sync_devices()
        out[0].numpy()

    def make(cname, role, fn, x, t, jit):
        if fn is None:
            return Contender(cname, role, skip="keras is not installed")

        @tf.function(jit_compile=jit)
        def f(a, b):
            return (fn(a, b),)

        @tf.function(jit_compile=jit)
        def vg(a, b):
            with tf.GradientTape() as tape:
                tape.watch(a)
                loss = fn(a, b)
            return loss, tape.gradient(loss, a)

        def fwd():
            with tf.device(name):
                sync(f(x, t))

        def fwdbwd():
            with tf.device(name):
                sync(vg(x, t))

        return Contender(cname, role, fwd, fwdbwd)

    groups = []
    for dtype_name in cfg["dtypes"]:
        dtype = getattr(tf, dtype_name)
        for workload in cfg["workloads"]:
            for size in cfg["sizes"]:
                xn, tn = host_inputs(workload, size)
                with tf.device(name):
                    x = tf.cast(tf.constant(xn), dtype)
                    if workload == "sigmoid":
                        t = tf.cast(tf.constant(tn), dtype)
                    else:
                        t = tf.constant(tn)
                        t_onehot = tf.one_hot(t, xn.shape[1], dtype=dtype)
                del xn, tn
                if workload == "sigmoid":
                    kl = None if keras is None else keras.losses.BinaryFocalCrossentropy(
                        apply_class_balancing=True, alpha=ALPHA, gamma=GAMMA, from_logits=True)
                    fns = [("focalx", "focalx",
                            lambda a, b: fx.sigmoid_focal_loss(a, b, gamma=GAMMA, alpha=ALPHA)),
                           ("keras BinaryFocalCrossentropy", "peer",
                            None if kl is None else (lambda a, b, kl=kl: kl(b, a))),
                           ("sigmoid_cross_entropy_with_logits", "floor",
                            lambda a, b: tf.reduce_mean(
                                tf.nn.sigmoid_cross_entropy_with_logits(labels=b, logits=a)))]
                else:
                    kl = None if keras is None else keras.losses.CategoricalFocalCrossentropy(
                        alpha=1.0, gamma=GAMMA, from_logits=True)
                    fns = [("focalx", "focalx",
                            lambda a, b: fx.softmax_focal_loss(a, b, gamma=GAMMA, axis=-1)),
                           ("keras CategoricalFocalCrossentropy (one-hot)", "peer",
                            None if kl is None else
                            (lambda a, b, kl=kl, oh=t_onehot: kl(oh, a))),
                           ("sparse_softmax_cross_entropy_with_logits", "floor",
                            lambda a, b: tf.reduce_mean(
                                tf.nn.sparse_softmax_cross_entropy_with_logits(
                                    labels=b, logits=a)))]
                for mode, jit in (("tf.function", False), ("tf.function(jit_compile)", True)):
                    conts = [make(n, r, f, x, t, jit) for n, r, f in fns]
                    groups.append(_group(workload, mode, size, dtype_name, tuple(x.shape),
                                         int(tf.size(x)), conts))
    info = {"tensorflow": tf.__version__}
    if keras is not None:
        info["keras"] = keras.__version__
    peak = RssPeak()
    if gpu:
        peak = _TfGpuPeak(tf)
    return groups, info, peak


class _TfGpuPeak:
    how = "tf.config.experimental.get_memory_info('GPU:0') peak minus current before the call"

    def __init__(self, tf):
        self.tf = tf

    def __call__(self, fn):
        exp = self.tf.config.experimental
        gc.collect()
        exp.reset_memory_stats("GPU:0")
        before = exp.get_memory_info("GPU:0")["current"]
        fn()
        return max(0, exp.get_memory_info("GPU:0")["peak"] - before)


def _paddle_groups(cfg, fx):
    import paddle
    import paddle.nn.functional as F

    gpu = cfg["device"] == "cuda"
    if gpu and not paddle.device.is_compiled_with_cuda():
        raise _Skip("paddle is not built with CUDA")
    paddle.set_device("gpu" if gpu else "cpu")

    def sync(out):
        if gpu:
            paddle.device.synchronize()
        float(out)

    def softmax_formula(x, y, gamma=GAMMA):
        logp = F.log_softmax(x, axis=-1)
        logpt = paddle.take_along_axis(logp, y.unsqueeze(-1), axis=-1).squeeze(-1)
        pt = paddle.exp(logpt)
        return paddle.mean(-((1 - pt) ** gamma) * logpt)

    def make(name, role, fn, x, t):
        def fwd():
            with paddle.no_grad():
                sync(fn(x, t))

        def fwdbwd():
            out = fn(x, t)
            paddle.grad([out], [x])
            sync(out)

        return Contender(name, role, fwd, fwdbwd)

    groups = []
    for dtype_name in cfg["dtypes"]:
        for workload in cfg["workloads"]:
            for size in cfg["sizes"]:
                xn, tn = host_inputs(workload, size)
                x = paddle.to_tensor(xn).astype(dtype_name)
                x.stop_gradient = False
                if workload == "sigmoid":
                    t = paddle.to_tensor(tn).astype(dtype_name)
                    fns = [("focalx", "focalx",
                            lambda a, b: fx.sigmoid_focal_loss(a, b, gamma=GAMMA, alpha=ALPHA)),
                           ("paddle sigmoid_focal_loss", "peer",
                            lambda a, b: F.sigmoid_focal_loss(a, b, alpha=ALPHA, gamma=GAMMA,
                                                              reduction="mean")),
                           ("binary_cross_entropy_with_logits", "floor",
                            lambda a, b: F.binary_cross_entropy_with_logits(a, b))]
                else:
                    t = paddle.to_tensor(tn)
                    fns = [("focalx", "focalx",
                            lambda a, b: fx.softmax_focal_loss(a, b, gamma=GAMMA, axis=-1)),
                           ("focal formula (log_softmax)", "peer", softmax_formula),
                           ("cross_entropy", "floor", lambda a, b: F.cross_entropy(a, b))]
                del xn, tn
                conts = [make(n, r, f, x, t) for n, r, f in fns]
                groups.append(_group(workload, "eager", size, dtype_name, tuple(x.shape),
                                     int(x.numel()), conts))
    info = {"paddle": paddle.__version__}
    peak = RssPeak()
    if gpu:
        peak = _PaddleGpuPeak(paddle)
    return groups, info, peak


class _PaddleGpuPeak:
    how = "paddle.device.cuda.max_memory_allocated minus memory_allocated before the call"

    def __init__(self, paddle):
        self.paddle = paddle

    def __call__(self, fn):
        cuda = self.paddle.device.cuda
        gc.collect()
        self.paddle.device.synchronize()
        cuda.reset_max_memory_allocated()
        before = cuda.memory_allocated()
        fn()
        return max(0, cuda.max_memory_allocated() - before)


GROUP_BUILDERS = {"torch": _torch_groups, "jax": _jax_groups,
                  "tensorflow": _tensorflow_groups, "paddle": _paddle_groups}


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


def _set_up(name: str, cfg: dict, report: dict):
    """(groups, info, peak) of backend `name`, or None with the reason in `report`."""
    t0 = time.perf_counter()
    try:
        fx = importlib.import_module(FOCALX_MODULES[name])
        for fn in ("sigmoid_focal_loss", "softmax_focal_loss"):
            if not callable(getattr(fx, fn, None)):
                raise AttributeError(f"{FOCALX_MODULES[name]} has no {fn}")
    except Exception as exc:  # noqa: BLE001 - a missing/broken backend is this row's error
        report["error"] = f"cannot import {FOCALX_MODULES[name]}: {_error_text(exc)}"
        return None
    report["import_s"] = time.perf_counter() - t0
    try:
        return GROUP_BUILDERS[name](cfg, fx)
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


# ---------------------------------------------------------------------------
# orchestration (parent)
# ---------------------------------------------------------------------------

def available(name: str) -> tuple[bool, str]:
    if importlib.util.find_spec(name) is None:
        return False, f"{name} is not installed"
    return True, ""


def _worker_command(name: str, cfg: dict, out: Path, memory: bool,
                    first: str | None = None) -> list[str]:
    # -P: a focalx/ folder in the current directory is not imported
    cmd = [sys.executable, "-P", "-m", "focalx._bench", "--worker", name,
           "--worker-config", json.dumps(cfg), "--worker-out", str(out)]
    if memory:
        cmd.append("--worker-memory")
    if first:
        cmd += ["--worker-first", first]
    return cmd


def _worker_env(memory: bool) -> dict:
    env = dict(os.environ)
    if memory:
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _run_one(name, cfg, memory, timeout, first=None):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = _worker_command(name, cfg, out, memory, first)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=_worker_env(memory))
        except subprocess.TimeoutExpired:
            return {"backend": name, "crashed": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            return {"backend": name, "crashed": f"worker exited with code {proc.returncode}"
                                                + (": " + " | ".join(tail) if tail else "")}
        return json.loads(out.read_text())


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


def run_all(cfg: dict, progress=None) -> dict:
    names = cfg["backends"] or list(BACKENDS)
    result = {"config": cfg, "backends": [], "skipped": {}, "missing": {}}
    for name in names:
        ok, why = available(name)
        if not ok:
            (result["missing"] if cfg["backends"] else result["skipped"])[name] = why
            continue
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
        result["backends"].append(rep)
    return result


def run_first_calls(name: str, cfg: dict) -> list[dict]:
    """Each contender's first fwd+bwd call, a fresh process each (--quick: the sigmoid
    workload's focalx and peer only)."""
    out = []
    workloads = ["sigmoid"] if cfg["quick"] else cfg["workloads"]
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


# ---------------------------------------------------------------------------
# report (parent)
# ---------------------------------------------------------------------------

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


def _ms(v):
    return "-" if v is None else f"{v * 1e3:.3g}" if v * 1e3 < 100 else f"{v * 1e3:.0f}"


def _ratio(peer, base):
    if peer is None or not base:
        return "-"
    r = peer / base
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"  # (a first call 300x slower: 0.0033)


def _arrays(nbytes, full):
    if nbytes is None or not full:
        return "n/a"
    return f"{nbytes / full:.2f}"


def format_table(result: dict) -> str:
    cfg = result["config"]
    names = [r["backend"] for r in result["backends"]]
    mach = result.get("machine") or machine_info()
    vers = result.get("versions") or versions(names)
    extra = []
    for rep in result["backends"]:
        info = rep.get("info", {})
        for key, label in (("threads", "torch threads"), ("gpu", "GPU"),
                           ("jax_device", "jax device")):
            if key in info:
                extra.append(f"{label}: {info[key]}")
    head = [f"focalx bench, {result.get('date', '')}: {mach['cpu']} ({mach['cores']} cores), "
            f"{mach['os']}, Python {mach['python']}; "
            + ", ".join(f"{k} {v}" for k, v in vers.items())
            + (f"; {', '.join(extra)}" if extra else ""),
            f"device {cfg['device']}, {cfg['repeats']} interleaved repeats after "
            f"{cfg['warmup']} warm-up call(s), each repeat calling for at least "
            f"{cfg.get('sample_s', SAMPLE_S) * 1e3:g} ms; times are medians"
            + (" (quick mode: tiny sizes, not a measurement)" if cfg["quick"] else ""),
            ""]
    lines = ["| backend | mode | workload | dtype | elements | contender | fwd ms | "
             "fwd+bwd ms | fwd x focalx | fwd+bwd x focalx | ns/elem fwd+bwd | "
             "saved (arrays) | peak extra (arrays) |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for rep in result["backends"]:
        name = rep["backend"]
        if "crashed" in rep or "error" in rep:
            why = rep.get("crashed") or rep.get("error")
            lines.append(f"| {name} | - | - | - | - | ERROR | - | - | - | - | - | - | - |")
            notes.append(f"ERROR {name}: {why}")
            continue
        if "skipped" in rep:
            notes.append(f"skipped {name}: {rep['skipped']}")
            continue
        if rep.get("memory_error"):
            notes.append(f"ERROR {name} memory worker: {rep['memory_error']}")
        for g in rep["groups"]:
            base = next((c for c in g["contenders"] if c["role"] == "focalx"), None)
            bmed = (base or {}).get("median_s", {})
            full = g["elements"] * _BYTES.get(g["dtype"], 4)
            shape = "x".join(str(s) for s in g["shape"])
            for c in g["contenders"]:
                label = c["name"] + ("" if c["role"] != "floor" else " (floor)")
                cells = [name, g["mode"], g["workload"], g["dtype"],
                         f"{format_size(g['elements'])} ({shape})", label]
                if "skipped" in c:
                    lines.append("| " + " | ".join(cells + ["skipped"] + ["-"] * 6) + " |")
                    notes.append(f"skipped {name} {g['mode']} {g['workload']} {c['name']}: "
                                 f"{c['skipped']}")
                    continue
                med = c.get("median_s", {})
                mem = c.get("memory", {})
                saved = mem.get("saved_new_bytes")
                ns = med.get("fwd+bwd")
                cells += [_ms(med.get("fwd")), _ms(med.get("fwd+bwd")),
                          _ratio(med.get("fwd"), bmed.get("fwd")),
                          _ratio(med.get("fwd+bwd"), bmed.get("fwd+bwd")),
                          "-" if ns is None else f"{ns * 1e9 / g['elements']:.2f}",
                          _arrays(saved, full), _arrays(mem.get("peak_extra_bytes"), full)]
                if "error" in c:
                    cells[5] += " (ERROR)"
                    notes.append(f"{'ERROR' if c['role'] == 'focalx' else 'error'} {name} "
                                 f"{g['mode']} {g['workload']} {format_size(g['size'])} "
                                 f"{c['name']}: {c['error']}")
                lines.append("| " + " | ".join(cells) + " |")
                for key in ("peak_error", "saved_error"):
                    if key in mem:
                        notes.append(f"{'ERROR' if c['role'] == 'focalx' else 'error'} "
                                     f"{name} {g['mode']} {g['workload']} "
                                     f"{format_size(g['size'])} {c['name']} "
                                     f"({key.split('_')[0]} memory): {mem[key]}")
                note = f"{name}: peak memory n/a: {mem['peak_note']}" \
                    if "peak_note" in mem else None
                if note and note not in notes:
                    notes.append(note)
    for name, why in result.get("missing", {}).items():
        notes.append(f"ERROR {name}: asked for, but {why}")
    for name, why in result.get("skipped", {}).items():
        notes.append(f"skipped {name}: {why}")
    first = format_first_calls(result)
    hows = sorted({r.get("peak_how") for r in result["backends"] if r.get("peak_how")})
    foot = [
        "fwd: the loss value only (torch.no_grad / jit(loss) / no tape); fwd+bwd: the loss "
        "and its gradient w.r.t. the logits (autograd.grad, jit(value_and_grad), "
        "GradientTape, paddle.grad). Mean reduction, gamma 2, alpha 0.25 (sigmoid: targets "
        "{0,1} with ~10% positives; softmax: integer labels), logits ~ N(0, 2).",
        "x focalx: the contender's median time / focalx's median time in the same process "
        "(> 1: focalx is faster). (floor): the framework's plain cross-entropy, for context.",
        "saved: bytes kept for backward, excluding the logits and targets themselves, in "
        "full-size logits arrays (torch: saved_tensors_hooks, for torch.compile what the "
        "compiled graph saves; jax: residuals of jax.vjp outside jit; n/a elsewhere).",
        "peak extra: highest memory during one warmed-up fwd+bwd call above the memory "
        "before it, in full-size logits arrays (the gradient itself counts as 1), measured "
        "in a separate process"
        + (f": {'; '.join(hows)}" if hows else "")
        + (", with MALLOC_MMAP_THRESHOLD_ fixed so freed arrays leave the RSS and "
           "TF_ENABLE_ONEDNN_OPTS=0 for TensorFlow" if cfg["device"] == "cpu" else "") + ".",
    ]
    return "\n".join(head + lines + [""] + foot + first + ([""] + notes if notes else []))


def _first_call_rows(rep):
    """[(report, focalx's report of the same workload)] of a backend's first calls."""
    focal = {fc.get("workload"): fc for fc in rep.get("first_calls", ())
             if fc.get("role") == "focalx"}
    return [(fc, focal.get(fc.get("workload"))) for fc in rep.get("first_calls", ())]


def format_first_calls(result: dict) -> list[str]:
    rows = [(rep["backend"], fc, base) for rep in result["backends"]
            for fc, base in _first_call_rows(rep)]
    if not rows:
        return []
    lines = ["", "First call, each contender in a fresh process (float32, "
             f"{format_size(FIRST_CALL_SIZE)} elements; import: the framework and focalx's "
             "module; first and second: a fwd+bwd call, compilation included):", "",
             "| backend | mode | workload | contender | import s | first fwd+bwd s | "
             "second fwd+bwd ms | first x focalx |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    notes = []
    for name, fc, base in rows:
        label = fc.get("name", "?") + (" (floor)" if fc.get("role") == "floor" else "")
        why = fc.get("crashed") or fc.get("error") or fc.get("skipped")
        if why:
            lines.append(f"| {name} | {fc.get('mode', '-')} | {fc.get('workload', '-')} | "
                         f"{label} | - | {'skipped' if 'skipped' in fc else 'ERROR'} | - | - |")
            notes.append(f"{name} first call {fc.get('workload', '')} {label}: {why}")
            continue
        first = fc.get("first_s")
        lines.append(
            f"| {name} | {fc['mode']} | {fc['workload']} | {label} | "
            f"{fc['import_s']:.2f} | {first:.3f} | {_ms(fc.get('second_s'))} | "
            f"{_ratio(first, (base or {}).get('first_s'))} |")
    return lines + ([""] + notes if notes else [])


def headline(result: dict) -> list[str]:
    """The comparisons issue 7 asks about, one line per peer and floor: fwd+bwd time
    ratio (> 1: focalx is faster) and peak extra memory, both from one run."""
    out = []
    for rep in result["backends"]:
        for fc, base in _first_call_rows(rep):
            if fc.get("role") != "focalx" and fc.get("first_s") and (base or {}).get("first_s"):
                out.append(f"{rep['backend']} first call {fc['workload']} "
                           f"{format_size(fc['elements'])}: {fc['name']} / focalx = "
                           f"{_ratio(fc['first_s'], base['first_s'])}")
        groups = rep.get("groups", ())
        eager = {(g["workload"], g["dtype"], g["size"]): g for g in groups
                 if g["mode"] == "eager"}
        for g in groups:
            cs = {c["name"]: c for c in g["contenders"]}
            fx = next((c for c in g["contenders"] if c["role"] == "focalx"), None)
            b = ((fx or {}).get("median_s") or {}).get("fwd+bwd")
            if not b:
                continue
            full = g["elements"] * _BYTES.get(g["dtype"], 4)
            fx_peak = (fx.get("memory") or {}).get("peak_extra_bytes")
            where = (f"{rep['backend']} {g['mode']} {g['workload']} {g['dtype']} "
                     f"{format_size(g['size'])}")
            for c in g["contenders"]:
                if c["role"] == "focalx":
                    continue
                a = (c.get("median_s") or {}).get("fwd+bwd")
                if not a:
                    continue
                line = f"{where}: {c['name']} / focalx = {a / b:.2f}"
                peak = (c.get("memory") or {}).get("peak_extra_bytes")
                if peak is not None and fx_peak is not None:
                    line += (f"; peak extra {peak / full:.2f} vs focalx {fx_peak / full:.2f} "
                             "arrays")
                out.append(line)
            if g["mode"] == "compiled":
                ref = eager.get((g["workload"], g["dtype"], g["size"]))
                for c in (ref or {}).get("contenders", ()):
                    a = (c.get("median_s") or {}).get("fwd+bwd")
                    if c["role"] == "peer" and a and c["name"] in cs:
                        out.append(f"{where}: eager {c['name']} / compiled focalx = "
                                   f"{a / b:.2f}")
    return out


def main(argv=None, prog="focalx bench") -> int:
    args = parser(prog).parse_args(argv)
    if args.worker:
        if not args.worker_config or not args.worker_out:
            print("focalx bench: --worker needs --worker-config and --worker-out",
                  file=sys.stderr)
            return 2
        return worker_main(args)
    if args.json and not args.json.parent.is_dir():
        parser(prog).error(f"argument --json: directory {str(args.json.parent)!r} does not exist")
    cfg = config_from_args(args)
    t0 = time.perf_counter()
    result = run_all(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    names = [r["backend"] for r in result["backends"]]
    result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["machine"] = machine_info()
    result["versions"] = versions(names)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["headline"] = headline(result)
    print(format_table(result))
    if result["headline"]:
        print("\nfwd+bwd time ratios (> 1: focalx is faster) and peak extra memory:")
        for line in result["headline"]:
            print(f"  {line}")
    bad = failed(result)
    print(f"\n{len(names)} backend(s) in {result['seconds']} s; "
          f"{'FAILED' if bad else 'ok'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"raw numbers written to {args.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
