"""focalx bench's Paddle contenders (imported only in the paddle worker)."""

from __future__ import annotations

import gc

from .config import ALPHA, GAMMA
from .measure import Contender, RssPeak, _group, _Skip, host_inputs, linear_host_inputs


def groups(cfg, fx):
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
            if workload == "linear":
                groups += _linear_groups(cfg, fx, sync, dtype_name)
                continue
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


def _linear_groups(cfg, fx, sync, dtype_name):
    """The linear workload (issue 19), as torch's: the softmax focal loss of hidden @ W.T,
    fwd+bwd w.r.t. hidden and weight (dygraph): focalx's fused blocks against the logits
    materialised (the matmul, then focalx's softmax focal loss), and Paddle's
    cross_entropy of the materialised logits at gamma 0 as the floor."""
    import paddle
    import paddle.nn.functional as F

    from . import config

    hn, wn, yn = linear_host_inputs()
    n, _, v = config.LINEAR_SHAPE
    h = paddle.to_tensor(hn).astype(dtype_name)
    w = paddle.to_tensor(wn).astype(dtype_name)
    y = paddle.to_tensor(yn)
    h.stop_gradient = w.stop_gradient = False
    del hn, wn, yn
    fns = [("focalx fused", "focalx",
            lambda: fx.linear_softmax_focal_loss(h, w, y, gamma=GAMMA)),
           ("matmul + focalx softmax", "peer",
            lambda: fx.softmax_focal_loss(paddle.matmul(h, w, transpose_y=True), y,
                                          gamma=GAMMA, axis=-1)),
           ("focalx fused, gamma 0", "peer",
            lambda: fx.linear_softmax_focal_loss(h, w, y, gamma=0.0)),
           ("matmul + focalx softmax, gamma 0", "peer",
            lambda: fx.softmax_focal_loss(paddle.matmul(h, w, transpose_y=True), y,
                                          gamma=0.0, axis=-1)),
           ("matmul + F.cross_entropy (gamma 0)", "floor",
            lambda: F.cross_entropy(paddle.matmul(h, w, transpose_y=True), y))]
    fns[1:1] = [(f"focalx fused, chunk_size={r}", "peer",
                 lambda r=r: fx.linear_softmax_focal_loss(
                     h, w, y, gamma=GAMMA, chunk_size=r))
                for r in config.LINEAR_CHUNK_ROWS]

    def make(name, role, fn):
        def fwd():
            with paddle.no_grad():
                sync(fn())

        def fwdbwd():
            out = fn()
            paddle.grad([out], [h, w])
            sync(out)
        return Contender(name, role, fwd, fwdbwd)
    return [_group("linear", "eager", n * v, dtype_name, (n, v), n * v,
                   [make(*f) for f in fns])]
