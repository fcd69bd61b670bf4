"""Backend selection for the test suite.

``FOCALX_REQUIRE_BACKENDS=torch,...`` (comma-separated, or ``all``: every backend of
focalx.backends.REGISTRY) turns a backend that cannot be imported into a failure of
the whole run instead of skipped tests; CI sets it to ``all``. Backends not required are tested when
importable and reported as skipped otherwise. The header of every run lists
which backends ran.

JAX, TensorFlow and Paddle tests run on the CPU even where a GPU is present: the
tests of value checks expect the CPU's behaviour (a ValueError); what those checks
do off the CPU (NaN, no value read) is tested by simulation in each backend's
tests. PyTorch tests that take a device run on CUDA too when it is present.
"""

from __future__ import annotations

import importlib
import os

import pytest

from focalx.backends import REGISTRY, installed_version

#: every backend of the registry (FOCALX_REQUIRE_BACKENDS=all requires them all)
KNOWN_BACKENDS = tuple(REGISTRY)
#: the frameworks' modules and their companions': what focalx must not import unasked
FRAMEWORK_MODULES = tuple(sorted({b.module for b in REGISTRY.values()}
                                 | {c for b in REGISTRY.values() for c in b.companions}
                                 | {"flax"}))

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # (see the module docstring)


def _required() -> list[str]:
    raw = os.environ.get("FOCALX_REQUIRE_BACKENDS", "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if names == ["all"]:
        return list(KNOWN_BACKENDS)
    unknown = sorted(set(names) - set(KNOWN_BACKENDS))
    if unknown:
        raise pytest.UsageError(
            f"FOCALX_REQUIRE_BACKENDS names unknown backends {unknown}; known: {KNOWN_BACKENDS}")
    return names


def _available() -> dict[str, str]:
    """backend -> installed version, or why it is unavailable.

    Found without importing the framework (frameworks are imported by the test
    modules that use them; some cannot share a process in every order).
    """
    return {name: installed_version(b) or "unavailable (not installed)"
            for name, b in REGISTRY.items()}


def pytest_configure(config):
    required = _required()
    avail = _available()
    missing = [n for n in required if avail[n].startswith("unavailable")]
    if missing:
        raise pytest.UsageError(
            "required backends cannot be imported: "
            + "; ".join(f"{n}: {avail[n]}" for n in missing))
    config._focalx_backends = avail
    config._focalx_required = required
    if not avail["paddle"].startswith("unavailable") and \
            not avail["tensorflow"].startswith("unavailable"):
        # Both test modules run in this one process, and importing tensorflow before
        # paddle crashes the process (paddle 3.3 / tf 2.21); paddle first is safe.
        import paddle  # noqa: F401


def pytest_report_header(config):
    avail = config._focalx_backends
    lines = [f"focalx backends: {', '.join(f'{k} {v}' for k, v in avail.items())}",
             f"FOCALX_REQUIRE_BACKENDS={os.environ.get('FOCALX_REQUIRE_BACKENDS', '')!r}"]
    return lines


def import_backend(name: str):
    """Import a framework for a test module: fail if required, skip the module otherwise."""
    required = _required()
    if name in required:
        return importlib.import_module(name)
    return pytest.importorskip(name)


def import_companion(name: str, backend: str):
    """A test dependency that comes with a backend (optax, flax for jax): required with it."""
    if backend in _required():
        return importlib.import_module(name)
    return pytest.importorskip(name)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def torch_devices():
    """cpu, and cuda as a parameter that is skipped when no GPU is present."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
        not cuda_available(), reason="no CUDA device"))]


@pytest.fixture
def linear_block_rows(monkeypatch):
    """The rows of each block of logits the fused linear loss hands the softmax loss (a
    list, filled as the loss runs)."""
    from focalx import _spec
    rows = []
    run = _spec.run_softmax_focal_loss

    def counting(ops, logits, *args, **kw):
        rows.append(logits.shape[0])
        return run(ops, logits, *args, **kw)
    monkeypatch.setattr(_spec, "run_softmax_focal_loss", counting)
    return rows
