"""Host values kept on an accelerator (framework plumbing shared by the adapters).

A copy from pageable host memory to a GPU waits for the device's queued work, in
PyTorch and in Paddle. A hyperparameter given as host data (a class vector as a list
or a NumPy array, a module's CPU buffer) is therefore copied once and reused,
keyed by its contents, which are read on the host without waiting.
"""

from __future__ import annotations

import threading

#: Largest number of elements of a value kept (larger ones are copied per call).
MAX_NUMEL = 1 << 16


class KeptCopies:
    """Device copies keyed by what they copy: at most `limit` of them, and none ever
    dropped (work queued on another stream, or a captured CUDA graph, may still read
    one), so beyond the limit `get` makes a copy per call."""

    def __init__(self, limit: int = 64):
        self.limit = limit
        self._copies: dict = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._copies)

    def get(self, key, make):
        """The copy kept for `key`, else `make()` (kept if there is room)."""
        with self._lock:
            hit = self._copies.get(key)
            room = len(self._copies) < self.limit
        if hit is not None:
            return hit
        out = make()
        if room:
            with self._lock:
                out = self._copies.setdefault(key, out)
        return out
