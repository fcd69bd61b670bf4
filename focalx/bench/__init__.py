"""``focalx bench``: time focalx against every installed peer, per backend.

The parent process (this module's :func:`main`) imports no framework. For each
backend it starts two subprocesses, ``python -m focalx.bench --worker NAME``:

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

from .cli import main

__all__ = ["main"]
