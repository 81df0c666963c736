"""Connecting to Ray: the one place every command that fans work out (evaluation, demo
collection, training) starts or joins a Ray session, and the counts such a run reports.

Locally it starts a new Ray instance on this machine's CPUs without the dashboard (never
joining a cluster it happens to find in Ray's session files); with an address
(``--ray-address auto`` or ``ray://host:port``) it joins that cluster, so the same command
scales from a laptop to a lab cluster. A session that is already running in this process (a
test fixture, a notebook) is reused as is.

Clusters with token authentication (the default of Ray's own local clusters since 2.52) need
the token in the environment of every command that joins them: ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN=<token>`` (or ``RAY_AUTH_TOKEN_PATH=<file>``); without it the connection fails
with the one-line `RayConnectError` below.
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


TOKEN_HINT = ("if the cluster uses token authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> "
              "(or RAY_AUTH_TOKEN_PATH=<file>) in this shell")


class RayConnectError(RuntimeError):
    """Joining the Ray cluster at an address failed; the message says what to check."""


def connect_ray(ray_address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start or join Ray; return True if this call started the session (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if ray_address:
        try:
            ray.init(address=ray_address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RayConnectError(f"could not join the Ray cluster at {ray_address!r}: {first}; "
                                  f"check that it is running and reachable; {TOKEN_HINT}") from err
    else:
        # address="local": a new instance even when Ray's session file names another cluster.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
    return True


_REMOTE: dict = {}


def remote(function, num_cpus: float = 1):
    """The Ray remote version of a plain function, made once per process (one CPU per task by default)."""
    key = (function, num_cpus)
    if key not in _REMOTE:
        import ray

        _REMOTE[key] = ray.remote(num_cpus=num_cpus)(function)
    return _REMOTE[key]
