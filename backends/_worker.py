"""A backend's background compile thread (torch's fused kernels, TensorFlow's eager XLA
functions): started when the first job is queued, stopped by the backend at interpreter
exit."""

from __future__ import annotations

import atexit
import queue
import threading


def start(state: dict, target, name: str, stop) -> None:
    """Start a daemon thread running ``target(jobs)`` on a fresh queue and record both in
    ``state`` ("thread", "queue"); register ``stop`` for interpreter exit the first time
    ("hooked"). The caller holds the lock that guards ``state``. If the thread cannot
    start (interpreter shutdown), this raises and ``state`` is left as it was."""
    if not state["hooked"]:
        # (threading's exit hook runs before atexit's, some of which stop what a
        # compilation uses)
        getattr(threading, "_register_atexit", atexit.register)(stop)
        state["hooked"] = True
    jobs = queue.SimpleQueue()
    thread = threading.Thread(target=target, args=(jobs,), daemon=True, name=name)
    thread.start()
    state.update(queue=jobs, thread=thread)
