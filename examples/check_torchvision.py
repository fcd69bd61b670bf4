"""Check torchvision's sigmoid_focal_loss against focalx's golden cases.

Run: `python examples/check_torchvision.py`. Uses torchvision.ops.sigmoid_focal_loss when
torchvision is installed; otherwise the same formula written out (probability space,
`ce * (1 - p_t) ** gamma`, alpha_t: fvcore's, which torchvision copied), from
focalx.testing.peers.
"""

from focalx.conformance import Unsupported, check

try:
    from torchvision.ops import sigmoid_focal_loss as fn
    SOURCE = "torchvision.ops.sigmoid_focal_loss"
except ImportError:  # torchvision not installed: its formula, as focalx.testing.peers writes it
    from focalx.testing.peers import fvcore_sigmoid_focal_loss as fn
    SOURCE = "torchvision's formula (torchvision not installed)"


def adapter(variant, kw):
    """focalx keyword arguments -> torchvision's (alpha=-1 is its 'off')."""
    extra = set(kw) - {"gamma", "alpha", "reduction"}
    if extra:
        raise Unsupported(f"torchvision has no {sorted(extra)}")
    alpha = kw.get("alpha", 0.25)
    if alpha is not None and not isinstance(alpha, float):
        raise Unsupported("torchvision takes a scalar alpha only")
    if not isinstance(kw["gamma"], float):
        raise Unsupported("torchvision takes a scalar gamma only")
    return {"alpha": -1.0 if alpha is None else alpha, "gamma": kw["gamma"],
            "reduction": kw.get("reduction", "mean")}


if __name__ == "__main__":
    for dtype in ("float64", "float32"):
        report = check(fn, variant="sigmoid_focal_loss", backend="torch", dtype=dtype,
                       adapter=adapter)
        print(f"{SOURCE}, {dtype}:")
        print(report)
        print()
