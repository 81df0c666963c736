"""Connecting to Ray: the one place every command that fans work out (evaluation, demo
collection, training) starts or joins a Ray session, and the counts such a run reports.

Locally it starts Ray on this machine's CPUs without the dashboard; with an address
(``--ray-address auto`` or ``ray://host:port``) it joins a cluster, so the same command
scales from a laptop to a lab cluster. A session that is already running (a test fixture,
a notebook) is reused as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class JobSummary:
    """What one fan-out run did: its output folder, jobs in it, completed now, skipped (already done),
    failed, and its wall time [s]."""

    out: Path
    jobs: int
    completed: int
    skipped: int
    failed: int
    wall_time: float


def connect_ray(ray_address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start or join Ray; return True if this call started the session (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if ray_address:
        ray.init(address=ray_address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    return True


_REMOTE: dict = {}


def remote(function, num_cpus: float = 1):
    """The Ray remote version of a plain function, made once per process (one CPU per task by default)."""
    key = (function, num_cpus)
    if key not in _REMOTE:
        import ray

        _REMOTE[key] = ray.remote(num_cpus=num_cpus)(function)
    return _REMOTE[key]
