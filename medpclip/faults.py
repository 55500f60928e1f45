"""Fault points: named places where a test can SIGKILL a build, to prove that a crash at that moment leaves no
partial file under a final name and that a resumed build ends byte-identical to an uninterrupted one.

Armed only by the environment, so production code paths are the tested ones:

- ``MEDPCLIP_FAULT="<point>[:<n>]"`` kills the process the n-th time (default: the first) it reaches
  ``fault_point("<point>")``;
- ``MEDPCLIP_FAULT_TARGET=driver`` first kills the build's driver (``MEDPCLIP_DRIVER_PID``, set by
  ``ray_session``), so a point inside a Ray worker takes the whole build down, as a power cut would;
- ``MEDPCLIP_FAULT_ONCE=<path>`` fires at most once across processes (the path is created first): a Ray
  worker killed mid-unit is retried in a fresh process, which must then run through.

Unarmed, a fault point costs one environment look-up.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    armed = os.environ.get("MEDPCLIP_FAULT")
    if not armed:
        return
    point, _, nth = armed.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] != int(nth or 1):
        return
    once = os.environ.get("MEDPCLIP_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if os.environ.get("MEDPCLIP_FAULT_TARGET") == "driver":
        driver = int(os.environ.get("MEDPCLIP_DRIVER_PID") or 0)
        if driver and driver != os.getpid():
            os.kill(driver, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
