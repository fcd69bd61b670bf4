"""focalx bench's configuration: the workloads' constants and the command line (parent)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ..backends import REGISTRY

BACKENDS = tuple(REGISTRY)
WORKLOADS = ("sigmoid", "softmax")
#: workloads run only when asked for by name (--workload linear): not in the default run
#: nor in --quick (a linear workload call takes seconds on a CPU)
EXTRA_WORKLOADS = ("linear",)
#: the linear workload (issue 19): rows N, features H, classes V (a language-model head);
#: fwd+bwd w.r.t. hidden and weight, the logits N x V never held whole by focalx
LINEAR_SHAPE = (2048, 256, 32768)
#: the fused loss also with these rows per block (its chunk_size): its time against its
#: memory, beside the default block's
LINEAR_CHUNK_ROWS = (64, 128, 256)
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
#: a timing sample repeats a call until it lasts at least this long (--sample-ms): whether
#: a call's fresh full-size output page-faults depends on the allocator's history, so
#: single-call samples are bimodal; a sample averages over many calls, as the research
#: baseline (perf.md) did.
SAMPLE_S = 0.1
QUICK_SAMPLE_S = 2e-3
MMAP_THRESHOLD = str(1 << 16)
#: the backends whose workers take longest (importing the framework, compiling) first,
#: when several run at once: the run then ends with the short ones sharing the cores
#: rather than with one long one alone
LONGEST_FIRST = ("tensorflow", "jax", "torch", "paddle")
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
    ap.add_argument("--workload", action="append",
                    type=_list_type(WORKLOADS + EXTRA_WORKLOADS),
                    help="sigmoid and/or softmax (default: both); linear: the fused linear + "
                         "softmax focal loss of a %dx%d hidden and %d classes, only when "
                         "named" % LINEAR_SHAPE)
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
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                    help="measure peak memory and saved bytes in a process of its own per "
                         "backend (default: on; off with --quick, whose tiny arrays show no "
                         "memory)")
    ap.add_argument("--first-call", action=argparse.BooleanOptionalAction, default=True,
                    help="time each contender's first fwd+bwd call in a fresh process "
                         f"({format_size(FIRST_CALL_SIZE)} float32 logits; default: on; "
                         "--quick: focalx and its peer on the sigmoid workload only)")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny sizes ({QUICK_SIZE} elements), few repeats: proves it runs")
    ap.add_argument("--jobs", type=_count_type(1),
                    help="backends measured at once, each in its own processes (default 1; "
                         "--quick: the number of cores, up to 4): above 1 they share the "
                         "cores, so their timings are not measurements")
    ap.add_argument("--json", type=Path, metavar="PATH", help="write every raw number here")
    ap.add_argument("--timeout", type=_count_type(1), default=3600,
                    help="seconds allowed per worker process (default 3600)")
    ap.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    ap.add_argument("--worker-config", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-first", help=argparse.SUPPRESS)
    return ap


def _cores() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


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
        "workloads": ([w for w in _flatten(args.workload) if w in WORKLOADS or not quick]
                      or list(WORKLOADS)),
        "sizes": _flatten(args.size) or ([QUICK_SIZE] if quick else list(DEFAULT_SIZES)),
        "dtypes": _flatten(args.dtype) or ["float32"],
        "device": args.device,
        "repeats": args.repeats or (3 if quick else 10),
        "warmup": args.warmup if args.warmup is not None else (1 if quick else 2),
        "sample_s": (args.sample_ms / 1e3 if args.sample_ms is not None else
                     QUICK_SAMPLE_S if quick else SAMPLE_S),
        "compile": args.compile if args.compile is not None else not quick,
        "memory": args.memory if args.memory is not None else not quick,
        "first_call": args.first_call,
        "quick": quick,
        "jobs": args.jobs or (_cores() if quick else 1),
        "timeout": args.timeout,
    }
