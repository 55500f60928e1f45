"""Start real servers for tests and stop them by PID: the process and every descendant it spawned."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil


def http_ok(url: str) -> bool:
    """An HTTP 200 from ``url`` right now (a readiness probe for wait_until)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None
) -> None:
    """Poll a readiness condition (a health endpoint, a registered deployment) until it holds, with a deadline.
    Fails early if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode} before it was ready")
        time.sleep(0.25)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def stop(proc: subprocess.Popen, first: int = signal.SIGINT, grace: float = 20.0) -> None:
    """Ask politely (SIGINT: `ray start --block` and Prefect shut down their children on it), then SIGKILL the
    process and every descendant that is left, each by PID. Processes were started in a session of their own,
    so descendants whose parent already died (re-parented to init) are found by their session id."""
    try:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        tree = [proc.pid]
    tree += [p.pid for p in psutil.process_iter() if _session(p.pid) == proc.pid and p.pid not in tree]
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, first)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


@contextlib.contextmanager
def running(cmd: list[str], log: Path, **kwargs) -> Iterator[subprocess.Popen]:
    """A server process for the duration of a ``with`` block, its output in ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        try:
            yield proc
        finally:
            stop(proc)
