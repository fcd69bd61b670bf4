"""focalx bench's TensorFlow and Keras contenders (imported only in the tensorflow worker)."""

from __future__ import annotations

import gc

from .config import ALPHA, GAMMA
from .measure import Contender, RssPeak, _group, _Skip, host_inputs, linear_host_inputs


def groups(cfg, fx):
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
        return _contender(tf, cname, role, fn, (x, t), 1, jit, name, sync)

    groups = []
    for dtype_name in cfg["dtypes"]:
        dtype = getattr(tf, dtype_name)
        for workload in cfg["workloads"]:
            if workload == "linear":
                groups += _linear_groups(cfg, fx, tf, name, sync, dtype_name)
                continue
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


def _linear_groups(cfg, fx, tf, device_name, sync, dtype_name):
    """The linear workload (issue 19), as torch's: the softmax focal loss of hidden @ W.T,
    fwd+bwd w.r.t. hidden and weight, in a tf.function with and without XLA: focalx's
    fused blocks against the logits materialised (the matmul, then focalx's softmax focal
    loss), and sparse_softmax_cross_entropy_with_logits of the materialised logits at
    gamma 0 as the floor."""
    from . import config

    hn, wn, yn = linear_host_inputs()
    n, _, v = config.LINEAR_SHAPE
    dtype = getattr(tf, dtype_name)
    with tf.device(device_name):
        h = tf.cast(tf.constant(hn), dtype)
        w = tf.cast(tf.constant(wn), dtype)
        y = tf.constant(yn)
    del hn, wn, yn
    fns = [("focalx fused", "focalx",
            lambda a, b: fx.linear_softmax_focal_loss(a, b, y, gamma=GAMMA)),
           ("matmul + focalx softmax", "peer",
            lambda a, b: fx.softmax_focal_loss(tf.matmul(a, b, transpose_b=True), y,
                                               gamma=GAMMA, axis=-1)),
           ("focalx fused, gamma 0", "peer",
            lambda a, b: fx.linear_softmax_focal_loss(a, b, y, gamma=0.0)),
           ("matmul + focalx softmax, gamma 0", "peer",
            lambda a, b: fx.softmax_focal_loss(tf.matmul(a, b, transpose_b=True), y,
                                               gamma=0.0, axis=-1)),
           ("matmul + sparse_softmax_cross_entropy_with_logits (gamma 0)", "floor",
            lambda a, b: tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=tf.matmul(a, b, transpose_b=True))))]
    fns[1:1] = [(f"focalx fused, chunk_size={r}", "peer",
                 lambda a, b, r=r: fx.linear_softmax_focal_loss(
                     a, b, y, gamma=GAMMA, chunk_size=r))
                for r in config.LINEAR_CHUNK_ROWS]

    return [_group("linear", mode, n * v, dtype_name, (n, v), n * v,
                   [_contender(tf, cname, role, fn, (h, w), 2, jit, device_name, sync)
                    for cname, role, fn in fns])
            for mode, jit in (("tf.function", False), ("tf.function(jit_compile)", True))]


def _contender(tf, cname, role, fn, args, wrt, jit, device, sync):
    """A contender timing fn(*args) as a tf.function (XLA with `jit`), and with its
    gradient w.r.t. the first `wrt` args."""
    @tf.function(jit_compile=jit)
    def f(*a):
        return (fn(*a),)

    @tf.function(jit_compile=jit)
    def vg(*a):
        with tf.GradientTape() as tape:
            tape.watch(a[:wrt])
            loss = fn(*a)
        return (loss,) + tuple(tape.gradient(loss, list(a[:wrt])))

    def fwd():
        with tf.device(device):
            sync(f(*args))

    def fwdbwd():
        with tf.device(device):
            sync(vg(*args))
    return Contender(cname, role, fwd, fwdbwd)
