"""focalx bench's PyTorch contenders (imported only in the torch worker)."""

from __future__ import annotations

import gc

from .config import ALPHA, GAMMA
from .measure import Contender, RssPeak, _group, _Skip, host_inputs

# ---------------------------------------------------------------------------
# per-framework contenders (worker side: each imports its framework)
# ---------------------------------------------------------------------------


def groups(cfg, fx):
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
            if workload == "linear":
                groups += _linear_groups(cfg, fx, device, dtype, sync)
                continue
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
        saved = backend.fused._FUSED["enabled"]
        backend.fused._FUSED["enabled"] = False
        try:
            return fn(*args)
        finally:
            backend.fused._FUSED["enabled"] = saved
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


def _linear_groups(cfg, fx, device, dtype, sync):
    """The linear workload (issue 19): the softmax focal loss of hidden @ W.T, fwd+bwd
    w.r.t. hidden and weight: focalx's fused blocks against the logits materialised
    (the matmul, then focalx's softmax focal loss) and torch's chunked
    F.linear_cross_entropy (gamma 0, so against focalx at gamma 0 too)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from .config import LINEAR_CHUNK_ROWS, LINEAR_SHAPE, SEED

    n, h_dim, v = LINEAR_SHAPE
    rng = np.random.default_rng(SEED)
    h = torch.from_numpy(rng.standard_normal((n, h_dim), dtype=np.float32)).to(
        device=device, dtype=dtype).requires_grad_()
    w = torch.from_numpy(rng.standard_normal((v, h_dim), dtype=np.float32) /
                         np.float32(h_dim ** 0.5)).to(device=device, dtype=dtype)
    w.requires_grad_()
    y = torch.from_numpy(rng.integers(0, v, size=n, dtype=np.int64)).to(device)
    fns = [("focalx fused", "focalx",
            lambda: fx.linear_softmax_focal_loss(h, w, y, gamma=GAMMA)),
           ("matmul + focalx softmax", "peer",
            lambda: fx.softmax_focal_loss(h @ w.T, y, gamma=GAMMA, axis=1)),
           ("focalx fused, gamma 0", "peer",
            lambda: fx.linear_softmax_focal_loss(h, w, y, gamma=0.0)),
           ("matmul + focalx softmax, gamma 0", "peer",
            lambda: fx.softmax_focal_loss(h @ w.T, y, gamma=0.0, axis=1))]
    fns[1:1] = [(f"focalx fused, chunk_size={r}", "peer",
                 lambda r=r: fx.linear_softmax_focal_loss(
                     h, w, y, gamma=GAMMA, chunk_size=r))
                for r in LINEAR_CHUNK_ROWS]
    options = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if options is not None:
        opts = options(allow_retain_graph=True)
        fns.append(("F.linear_cross_entropy chunked (gamma 0)", "floor",
                    lambda: F.linear_cross_entropy(h, w, y, options=opts)))

    def make(name, role, fn):
        def fwd():
            with torch.no_grad():
                fn()
            sync()

        def fwdbwd():
            torch.autograd.grad(fn(), (h, w))
            sync()
        return Contender(name, role, fwd, fwdbwd)
    conts = [make(*f) for f in fns]
    if options is None:
        conts.append(Contender("F.linear_cross_entropy chunked (gamma 0)", "floor",
                               skip=f"torch {torch.__version__} has no "
                                    "LinearCrossEntropyOptions"))
    return [_group("linear", "eager", n * v, str(dtype).replace("torch.", ""), (n, v),
                   n * v, conts)]
