"""The Ray context every driver (corpus build, training, flows, benchmarks) runs inside."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def ray_session(ray_address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to the cluster at ``ray_address`` (or ``RAY_ADDRESS``), else start a local Ray with
    ``num_cpus``; shut it down on exit if this call started it. Inside a Ray job, Ray is already set up."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:  # resources can only be set for a Ray this process starts
        # "local": never attach to a cluster some `ray start` on this machine left behind (ray_current_cluster)
        address = "local"
        kwargs.update(
            num_cpus=num_cpus or os.cpu_count(),
            object_store_memory=256 * 1024 * 1024,
            include_dashboard=False,
        )
    # Local Ray workers inherit this: a fault point in a worker can then take the whole build down (faults.py).
    os.environ["MEDPCLIP_DRIVER_PID"] = str(os.getpid())
    ray.init(address=address, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()
