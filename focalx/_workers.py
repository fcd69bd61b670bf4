"""Worker processes for ``focalx check`` and ``focalx bench``: one framework per process.

Frameworks cannot always share a process (TensorFlow imported before Paddle crashes) and
a crash must be one backend's failure, not the run's; so the parent imports no framework
and runs each backend in ``python -P -m <module> --worker NAME ...``, which writes a JSON
report to the path given by ``--worker-out`` and may print progress lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

#: the prefix of a worker's progress lines on its standard output
PROGRESS = "focalx-progress"


def progress(done: int, total: int, what: str = "") -> None:
    """A worker's progress, as a line its parent reads (see :func:`run`)."""
    print(f"{PROGRESS} {done} {total} {what}", flush=True)


def command(module: str, name: str, args=()) -> list[str]:
    # -P: not the current directory first on sys.path, where a folder named focalx (the
    # parent of a clone) would be imported instead of the installed package
    return [sys.executable, "-P", "-m", module, "--worker", name, *args]


def run(backend: str, make_command, *, timeout=None, env=None, on_progress=None) -> dict:
    """Run the worker ``make_command(report_path)``: its JSON report, or
    ``{"backend": backend, "crashed": why}`` if it timed out, exited non-zero or wrote no
    report. ``on_progress(done, total, what)`` gets its progress lines as they come."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        try:
            proc = _run(make_command(out), timeout, env, on_progress)
        except subprocess.TimeoutExpired:
            return {"backend": backend, "crashed": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            return {"backend": backend, "crashed": f"worker exited with code {proc.returncode}"
                                                   + (": " + " | ".join(tail) if tail else "")}
        return json.loads(out.read_text())


def _run(cmd, timeout, env, on_progress):
    """The finished process, its output other than progress lines in .stdout / .stderr."""
    # a session of its own: on a timeout the whole group goes (processes the worker
    # started, such as a compiler's workers, hold its pipes open otherwise)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ) if env is None else env,
                            start_new_session=True)
    err = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    lines, killed = [], []
    timer = threading.Timer(timeout, lambda: (killed.append(True), _kill_group(proc))) \
        if timeout else None
    if timer:
        timer.start()
    try:
        for line in proc.stdout:
            if line.startswith(PROGRESS):
                _, done, total, *what = line.split(" ", 3)
                if on_progress:
                    on_progress(int(done), int(total), what[0].strip() if what else "")
            else:
                lines.append(line)
        proc.wait()
    finally:
        if timer:
            timer.cancel()
    reader.join(timeout=10 if killed else None)
    if killed:
        raise subprocess.TimeoutExpired(cmd, timeout)
    proc.stdout, proc.stderr = "".join(lines), "".join(err)
    return proc


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
