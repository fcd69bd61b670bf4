"""focalx conformance: golden cases from an independent oracle, and the runner.

- ``focalx check`` (or ``python -m focalx.conformance``) runs every installed
  backend x device x dtype against ``golden.json`` and prints the matrix.
- :func:`check` runs the golden cases against *any* function, for example
  another library's focal loss, and reports where it disagrees with focalx's
  definition and by how much.
- ``python -m focalx.conformance.generate`` rebuilds ``golden.json`` from the
  mpmath oracle (needs mpmath), byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._harness import UnsupportedCase as Unsupported
from .runner import load_golden, run_cases, select
from . import _harness, tolerances

__all__ = ["check", "CheckReport", "Unsupported", "tolerances"]

VARIANTS = ("sigmoid_focal_loss", "softmax_focal_loss", "sigmoid_focal_loss_star",
            "quality_focal_loss", "varifocal_loss", "distribution_focal_loss",
            "asymmetric_loss", "asymmetric_softmax_loss")


@dataclass
class CheckReport:
    """The outcome of :func:`check`: one entry per golden case of the variant."""

    variant: str
    backend: str
    device: str
    dtype: str
    results: list = field(default_factory=list)

    @property
    def failed(self):
        return [r for r in self.results if r["status"] == "failed"]

    @property
    def passed(self):
        return [r for r in self.results if r["status"] == "passed"]

    @property
    def unsupported(self):
        return [r for r in self.results if r["status"] == "unsupported"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self):
        head = (f"{self.variant} on {self.backend}/{self.device}/{self.dtype}: "
                f"{len(self.passed)} passed, {len(self.failed)} failed, "
                f"{len(self.unsupported)} not expressible")
        lines = [head] + [f"  FAIL {r['id']}: {r.get('detail', '')}" for r in self.failed]
        return "\n".join(lines)


def check(fn, *, variant: str = "sigmoid_focal_loss", backend: str = "torch",
          device: str = "cpu", dtype: str = "float64", adapter=None, case=None) -> CheckReport:
    """Run the golden cases of `variant` against ``fn(logits, targets, **kwargs)``.

    Args:
      fn: the function to check. It receives `backend` arrays (logits with
        requires-grad where the framework has autograd, so the gradient is checked
        too) and returns the loss.
      variant: which focalx function's cases to run.
      backend: "torch" or "numpy" (NumPy functions are checked on values only).
      device, dtype: where and in what precision to run.
      adapter: ``adapter(variant, kwargs) -> kwargs`` translating focalx's keyword
        arguments (see the parameter table in docs/definitions.md) to `fn`'s; raise
        :class:`Unsupported` for a case `fn` cannot express. Without one, the
        focalx names are passed through.
      case: only cases whose id contains this text (or matches this glob).

    Returns:
      A :class:`CheckReport`; ``print(report)`` lists the disagreeing cases with the
      worst value in each, ``report.ok`` is False if any case disagrees.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if backend not in _harness.HARNESSES:
        raise ValueError(f"backend must be one of {tuple(_harness.HARNESSES)}, got {backend!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if adapter is not None and not callable(adapter):
        raise TypeError(f"adapter must be callable or None, got {type(adapter).__name__}")
    harness = _harness.create(backend)
    if device not in harness.devices():
        raise ValueError(f"device {device!r} is not available to {backend}; "
                         f"available: {harness.devices()}")
    if dtype not in harness.dtypes(device):
        raise ValueError(f"dtype must be one of {harness.dtypes(device)}, got {dtype!r}")
    cases = select(load_golden()["cases"], variant=variant, pattern=case)
    results = run_cases(harness, cases, device, dtype, fn=fn, adapter=adapter)
    return CheckReport(variant, backend, device, dtype, results)
