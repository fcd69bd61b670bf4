"""Row blocks of a large op-by-op loss on the CPU (framework plumbing shared by the
PyTorch and Paddle adapters; the rules are described in backends/paddle/blocks.py)."""

from __future__ import annotations

import math


def row_blocks(shape, *, softmax: bool, align: int, elems: int, threads: int = 1):
    """[(start, stop), ...] rows of logits of this shape in blocks of about `elems`
    elements, or None where one block would hold them all. Blocks start at multiples of
    `align` elements (of `align` samples for the softmax loss, whose per-sample arrays
    have one element a row), so that every element takes the same vector or scalar path
    through a kernel as in the whole array; with `threads` > 1, at least one block per
    thread where the rows allow it."""
    n = math.prod(shape)
    row = n // shape[0]
    step = align if softmax else align // math.gcd(row, align)  # rows per aligned unit
    rows = max(step, (elems // row) // step * step)
    per_thread = -(-shape[0] // max(threads, 1))
    rows = max(step, min(rows, -(-per_thread // step) * step))
    if rows >= shape[0]:
        return None
    return [(i, min(i + rows, shape[0])) for i in range(0, shape[0], rows)]
