"""focalx bench's JAX contenders (imported only in the jax worker)."""

from __future__ import annotations

from .config import ALPHA, GAMMA
from .measure import (Contender, RssPeak, _group, _Skip, _error_text, host_inputs,
                      linear_host_inputs)


def groups(cfg, fx):
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
            if workload == "linear":
                groups += _linear_groups(cfg, fx, device, dtype_name, optax)
                continue
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


def _linear_groups(cfg, fx, device, dtype_name, optax):
    """The linear workload (issue 19), as torch's: the softmax focal loss of hidden @ W.T,
    fwd+bwd w.r.t. hidden and weight, jit-compiled: focalx's fused blocks against the
    logits materialised (the matmul, then focalx's softmax focal loss), and optax's
    cross-entropy of the materialised logits at gamma 0 as the floor."""
    import jax
    import jax.numpy as jnp

    from . import config

    hn, wn, yn = linear_host_inputs()
    n, _, v = config.LINEAR_SHAPE
    dtype = getattr(jnp, dtype_name)
    h = jax.device_put(jnp.asarray(hn, dtype=dtype), device)
    w = jax.device_put(jnp.asarray(wn, dtype=dtype), device)
    y = jax.device_put(jnp.asarray(yn), device)
    del hn, wn, yn
    fns = [("focalx fused", "focalx",
            lambda a, b: fx.linear_softmax_focal_loss(a, b, y, gamma=GAMMA)),
           ("matmul + focalx softmax", "peer",
            lambda a, b: fx.softmax_focal_loss(a @ b.T, y, gamma=GAMMA, axis=-1)),
           ("focalx fused, gamma 0", "peer",
            lambda a, b: fx.linear_softmax_focal_loss(a, b, y, gamma=0.0)),
           ("matmul + focalx softmax, gamma 0", "peer",
            lambda a, b: fx.softmax_focal_loss(a @ b.T, y, gamma=0.0, axis=-1)),
           ("matmul + optax softmax_cross_entropy (gamma 0)", "floor",
            None if optax is None else
            lambda a, b: jnp.mean(
                optax.losses.softmax_cross_entropy_with_integer_labels(a @ b.T, y)))]
    fns[1:1] = [(f"focalx fused, chunk_size={r}", "peer",
                 lambda a, b, r=r: fx.linear_softmax_focal_loss(
                     a, b, y, gamma=GAMMA, chunk_size=r))
                for r in config.LINEAR_CHUNK_ROWS]

    def make(name, role, fn):
        if fn is None:
            return Contender(name, role, skip="optax is not installed")
        f = jax.jit(fn)
        vg = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))

        def fwd():
            jax.block_until_ready(f(h, w))

        def fwdbwd():
            jax.block_until_ready(vg(h, w))
        return Contender(name, role, fwd, fwdbwd)
    return [_group("linear", "jit", n * v, dtype_name, (n, v), n * v,
                   [make(*f) for f in fns])]
