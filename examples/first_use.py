"""What a new user meets first: each measurement in fresh processes, printed as a report.

    python examples/first_use.py                 # every section whose framework is installed
    python examples/first_use.py torch paddle    # some sections: torch, paddle, cli

Each number is measured here, in this run; ratios compare two contenders timed in one
process (interleaved, medians), first calls compare fresh processes. Sections:

- torch: the first fwd+bwd call at 64x80x100 (focalx against torchvision's formula, each
  in a fresh process); the longest call over a run that changes gamma, alpha,
  label_smoothing, the reduction and the batch shape every step, with the number of
  compilations and the resident memory; op by op (fused kernel off, 1 thread): sigmoid at
  4M against torchvision's formula, softmax at 4096x1000 against the formula on
  F.log_softmax + gather.
- paddle: a training step under paddle.jit.to_static (SOT) holding FocalLoss against the same
  step with CrossEntropyLoss, over its first 60 steps; dygraph fwd+bwd against
  CrossEntropyLoss at 64x5 and 256x1000.
- tensorflow: the first fwd+bwd call at 500x1024, eagerly and in a tf.function (focalx
  against Keras' BinaryFocalCrossentropy, each in a fresh process), and the longest of the
  first 100 eager calls (XLA compiles in the background).
- cli: focalx --version, comma lists, --device cuda without CUDA, a focalx/ folder in the
  current directory, focalx bench --quick's wall time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

PY = sys.executable


def _run(code: str, env=None, cwd=None, timeout=900) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object on its last line."""
    full = dict(os.environ, **(env or {}))
    proc = subprocess.run([PY, "-c", textwrap.dedent(code)], check=False, capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------

_TORCH_COMMON = """
import json, time, statistics, os
import torch
import torch.nn.functional as F

def torchvision_formula(x, t, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    return ((alpha * t + (1 - alpha) * (1 - t)) * loss).mean()

def softmax_formula(x, y, gamma=2.0):
    lp = F.log_softmax(x, 1).gather(1, y[:, None])
    return (-((1 - lp.exp()) ** gamma) * lp).mean()

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

def inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2).requires_grad_()
    t = (torch.rand(shape, generator=g) < 0.1).float()
    return x, t
"""


def torch_first_call(which: str) -> dict:
    return _run(_TORCH_COMMON + f"""
import focalx.torch as ft
x, t = inputs((64, 80, 100))
fn = ft.sigmoid_focal_loss if {which!r} == "focalx" else torchvision_formula
t0 = time.perf_counter()
torch.autograd.grad(fn(x, t), x)
first = time.perf_counter() - t0
t0 = time.perf_counter()
torch.autograd.grad(fn(x, t), x)
print(json.dumps({{"first_s": first, "second_s": time.perf_counter() - t0}}))
""")


def torch_schedule() -> dict:
    """Every step changes gamma, alpha, label_smoothing, the reduction or the batch shape.
    Phase 1 (180 steps) meets every branch class: its kernels compile in the background
    meanwhile. After waiting for them, phase 2 (180 more steps, all new values) must compile
    nothing, run on the kernels and keep the RSS flat. The longest call of each phase."""
    return _run(_TORCH_COMMON + """
import focalx.torch as ft
from focalx.backends import torch as bt
from torch._dynamo.utils import counters
x1, t1 = inputs((64, 80, 100))
x2, t2 = inputs((48, 80, 100), seed=1)

def phase(start):
    times = []
    for i in range(start, start + 180):
        x, t = (x1, t1) if i % 7 else (x2, t2)
        kw = dict(gamma=1.0 + 0.0137 * i, alpha=[0.2 + 0.001 * i, None][i % 2],
                  label_smoothing=[0.0, 0.01 + 0.0001 * i][(i // 2) % 2],
                  reduction=["mean", "sum"][(i // 4) % 2])
        t0 = time.perf_counter()
        torch.autograd.grad(ft.sigmoid_focal_loss(x, t, **kw), x)
        times.append(time.perf_counter() - t0)
    return times

rss0 = rss_mb()
one = phase(0)
bt.wait_for_kernels()
graphs1, calls1, rss1 = counters["stats"]["unique_graphs"], bt.fused._FUSED["calls"], rss_mb()
two = phase(180)
bt.wait_for_kernels()
print(json.dumps({"max_call_s": [max(one), max(two)],
                  "max_call_step": [one.index(max(one)), 180 + two.index(max(two))],
                  "median_call_ms": [statistics.median(one) * 1e3, statistics.median(two) * 1e3],
                  "rss_mb": [rss0, rss1, rss_mb()],
                  "graphs": [graphs1, counters["stats"]["unique_graphs"] - graphs1],
                  "kernel_calls": [calls1, bt.fused._FUSED["calls"] - calls1]}))
""")


def torch_op_by_op() -> dict:
    return _run(_TORCH_COMMON + """
torch.set_num_threads(1)
import focalx.torch as ft
def med(fn, x, t, n=15):
    torch.autograd.grad(fn(x, t), x)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        torch.autograd.grad(fn(x, t), x)
        out.append(time.perf_counter() - t0)
    return out
res = {}
x, t = inputs((4096, 1024))
a, b = [], []
for _ in range(6):  # interleaved
    a += med(lambda x, t: ft.sigmoid_focal_loss(x, t, gamma=2.0, alpha=0.25), x, t, 5)
    b += med(torchvision_formula, x, t, 5)
res["sigmoid_4M_ms"] = [statistics.median(a) * 1e3, statistics.median(b) * 1e3]
g = torch.Generator().manual_seed(2)
x = (torch.randn(4096, 1000, generator=g) * 2).requires_grad_()
y = torch.randint(0, 1000, (4096,), generator=g)
a, b = [], []
for _ in range(6):
    a += med(lambda x, y: ft.softmax_focal_loss(x, y, gamma=2.0, axis=1), x, y, 5)
    b += med(softmax_formula, x, y, 5)
res["softmax_4096x1000_ms"] = [statistics.median(a) * 1e3, statistics.median(b) * 1e3]
print(json.dumps(res))
""", env={"FOCALX_TORCH_COMPILE": "0"})


def section_torch():
    print("## PyTorch")
    # (a first call is one sample per process: three fresh processes each, alternating,
    # and their medians)
    runs = {"focalx": [], "torchvision": []}
    for _ in range(3):
        for which in runs:
            runs[which].append(torch_first_call(which))
    f, v = ({k: statistics.median(r[k] for r in runs[w]) for k in ("first_s", "second_s")}
            for w in ("focalx", "torchvision"))
    print(f"first fwd+bwd at 64x80x100, 3 fresh processes each (medians): focalx "
          f"{f['first_s']:.3f} s, torchvision formula {v['first_s']:.3f} s: focalx / torchvision = "
          f"{f['first_s'] / v['first_s']:.2f} (target <= 2); second calls "
          f"{f['second_s'] * 1e3:.1f} / {v['second_s'] * 1e3:.1f} ms; each first call: focalx "
          + ", ".join(f"{r['first_s']:.3f}" for r in runs["focalx"]) + ", torchvision "
          + ", ".join(f"{r['first_s']:.3f}" for r in runs["torchvision"]))
    s = torch_schedule()
    print("every step a new gamma (1.0, 1.0137, ...), alpha (0.2 + 0.001 i or None), "
          "label_smoothing, reduction or batch shape (64 or 48 x 80 x 100):")
    print(f"  phase 1, 180 steps, kernels compiling in the background: longest call "
          f"{s['max_call_s'][0]:.3f} s at step {s['max_call_step'][0]} (target <= 0.5), median {s['median_call_ms'][0]:.1f} ms; "
          f"graphs compiled {s['graphs'][0]}, calls on a kernel {s['kernel_calls'][0]}")
    print(f"  phase 2, 180 more steps, all new values: longest call {s['max_call_s'][1]:.3f} s, "
          f"median {s['median_call_ms'][1]:.1f} ms; graphs compiled {s['graphs'][1]} (target 0), "
          f"calls on a kernel {s['kernel_calls'][1]} of 180; RSS {s['rss_mb'][0]:.0f} -> "
          f"{s['rss_mb'][1]:.0f} -> {s['rss_mb'][2]:.0f} MB (start, after 1, after 2)")
    o = torch_op_by_op()
    fx, tv = o["sigmoid_4M_ms"]
    print(f"op by op (FOCALX_TORCH_COMPILE=0, 1 thread), sigmoid fwd+bwd 4M: focalx "
          f"{fx:.1f} ms, torchvision formula {tv:.1f} ms: torchvision / focalx = "
          f"{tv / fx:.2f} (target >= 1.5)")
    fx, lf = o["softmax_4096x1000_ms"]
    print(f"op by op, softmax fwd+bwd 4096x1000: focalx {fx:.1f} ms, log_softmax + gather "
          f"formula {lf:.1f} ms: formula / focalx = {lf / fx:.2f} (target >= 1)")


# ---------------------------------------------------------------------------
# paddle
# ---------------------------------------------------------------------------

def paddle_sot(loss: str) -> dict:
    return _run(f"""
import json, time
import numpy as np
import paddle
import focalx.paddle as fpd
paddle.seed(0)
model = paddle.nn.Sequential(paddle.nn.Linear(32, 64), paddle.nn.ReLU(), paddle.nn.Linear(64, 10))
loss_fn = fpd.FocalLoss() if {loss!r} == "focal" else paddle.nn.CrossEntropyLoss()
opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters())

@paddle.jit.to_static
def step(x, y):
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    opt.clear_grad()
    return loss

rng = np.random.default_rng(0)
times = []
for i in range(60):
    x = paddle.to_tensor(rng.standard_normal((128, 32)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, 128))
    t0 = time.perf_counter()
    float(step(x, y))
    times.append(time.perf_counter() - t0)
print(json.dumps({{"total_s": sum(times), "first_s": times[0]}}))
""")


def paddle_dygraph() -> dict:
    return _run("""
import json, time, statistics
import numpy as np
import paddle
import focalx.paddle as fpd
out = {}
for n, c in ((64, 5), (256, 1000)):
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((n, c)).astype("float32") * 2,
                         stop_gradient=False)
    y = paddle.to_tensor(rng.integers(0, c, n))
    fns = {"focal": fpd.FocalLoss(), "ce": paddle.nn.CrossEntropyLoss()}
    samples = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(20):
            paddle.grad(fn(x, y), x)
    for _ in range(30):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(20):
                loss = fn(x, y)
                paddle.grad(loss, x)
                float(loss)
            samples[k].append((time.perf_counter() - t0) / 20)
    out[f"{n}x{c}"] = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
print(json.dumps(out))
""")


def section_paddle():
    print("## Paddle")
    f, c = paddle_sot("focal"), paddle_sot("ce")
    print(f"to_static (SOT) training step, 60 steps: FocalLoss {f['total_s']:.2f} s (first "
          f"{f['first_s']:.2f} s), CrossEntropyLoss {c['total_s']:.2f} s (first "
          f"{c['first_s']:.2f} s): focal / CE = {f['total_s'] / c['total_s']:.2f} (target <= 2)")
    for shape, d in paddle_dygraph().items():
        print(f"dygraph fwd+bwd {shape}: FocalLoss {d['focal']:.3f} ms, CrossEntropyLoss "
              f"{d['ce']:.3f} ms: focal / CE = {d['focal'] / d['ce']:.2f} (target <= 2)")


# ---------------------------------------------------------------------------
# tensorflow
# ---------------------------------------------------------------------------

def tf_first_call(which: str, graph: bool) -> dict:
    return _run(f"""
import json, time
import tensorflow as tf
import keras
import focalx.tensorflow as ftf
x = tf.Variable(tf.random.stateless_normal((500, 1024), (0, 0)) * 2)
t = tf.cast(tf.random.stateless_uniform((500, 1024), (0, 1)) < 0.1, tf.float32)
if {which!r} == "focalx":
    loss_fn = lambda: ftf.sigmoid_focal_loss(x, t, gamma=2.0, alpha=0.25)
else:
    keras_loss = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25,
                                                      gamma=2.0, from_logits=True)
    loss_fn = lambda: keras_loss(t, x)
def step():
    with tf.GradientTape() as tape:
        loss = loss_fn()
    return loss, tape.gradient(loss, x)
if {graph!r}:
    step = tf.function(step)
times = []
for _ in range(100):
    t0 = time.perf_counter()
    float(step()[0])
    times.append(time.perf_counter() - t0)
print(json.dumps({{"first_s": times[0], "max_later_s": max(times[1:]),
                  "last_ms": 1e3 * sorted(times[-20:])[10]}}))
""", env={"TF_CPP_MIN_LOG_LEVEL": "2"})


def section_tensorflow():
    print("## TensorFlow")
    for graph in (False, True):
        runs = {"focalx": [], "keras": []}
        for _ in range(3):
            for which in runs:
                runs[which].append(tf_first_call(which, graph))
        f, k = ({key: statistics.median(r[key] for r in runs[w])
                 for key in ("first_s", "max_later_s", "last_ms")} for w in runs)
        where = "in a tf.function" if graph else "eagerly"
        print(f"first fwd+bwd at 500x1024 {where}, 3 fresh processes each (medians): focalx "
              f"{f['first_s']:.3f} s, keras BinaryFocalCrossentropy {k['first_s']:.3f} s: "
              f"focalx / keras = {f['first_s'] / k['first_s']:.2f}; longest of calls 2-100 "
              f"{f['max_later_s']:.3f} / {k['max_later_s']:.3f} s; calls 81-100 (median) "
              f"{f['last_ms']:.1f} / {k['last_ms']:.1f} ms")


# ---------------------------------------------------------------------------
# cli
# ---------------------------------------------------------------------------

def _cli(args, cwd=None, timeout=900):
    t0 = time.perf_counter()
    proc = subprocess.run([PY, "-m", "focalx._cli", *args], check=False, capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)
    return proc, time.perf_counter() - t0


def section_cli():
    print("## CLI")
    proc, _ = _cli(["--version"])
    print(f"focalx --version: exit {proc.returncode}: {proc.stdout.strip()}")
    proc, _ = _cli(["check", "--device", "cuda", "--backend", "torch"])
    said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "--device cuda" in ln]
    print(f"focalx check --device cuda --backend torch (no GPU here): exit {proc.returncode}: "
          f"{said[0] if said else '(no message)'}")
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "focalx"))  # the parent of a clone holds one
        proc, secs = _cli(["check", "--backend", "numpy,torch", "--dtype", "float64"], cwd=tmp)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        print(f"focalx check --backend numpy,torch --dtype float64 from a directory holding a "
              f"focalx/ folder: exit {proc.returncode} in {secs:.0f} s; progress lines:")
        for ln in lines:
            if ln.startswith(("numpy ", "torch ")):
                print(f"    {ln}")
    proc, secs = _cli(["bench", "--quick"])
    print(f"focalx bench --quick (every installed backend): exit {proc.returncode} in "
          f"{secs:.1f} s (target < 60)")


SECTIONS = {"torch": section_torch, "paddle": section_paddle, "tensorflow": section_tensorflow,
            "cli": section_cli}


def main(argv):
    import importlib.util
    names = argv or list(SECTIONS)
    for name in names:
        if name not in SECTIONS:
            sys.exit(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        if name != "cli" and importlib.util.find_spec(name) is None:
            print(f"## {name}: not installed, skipped")
            continue
        SECTIONS[name]()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
