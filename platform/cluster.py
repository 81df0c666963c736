"""Connecting to Ray: the one place every command that fans work out (evaluation, demo
collection, training) starts or joins a Ray session, and the counts such a run reports.

Locally it starts a new Ray instance on this machine's CPUs without the dashboard (never
joining a cluster it happens to find in Ray's session files); with an address
(``--ray-address auto`` or ``ray://host:port``) it joins that cluster, so the same command
scales from a laptop to a lab cluster. A session that is already running in this process (a
test fixture, a notebook) is reused as is.

Clusters with token authentication (on by default for clusters started by Ray 2.60) need
the token in the environment of every command that joins them: ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN=<token>`` (or ``RAY_AUTH_TOKEN_PATH=<file>``); without it the connection fails
with the one-line `RayConnectError` below. A ``host:port`` address where nothing accepts a
connection fails the same way within seconds (Ray itself would retry for minutes).

`run_bounded` is the one fan-out loop: jobs as Ray tasks, at most ``workers`` in flight, each
with a wall-clock limit. A task past its limit is cancelled with ``force=True``, which kills its
worker process, so a hang inside native code or a single simulator step is stopped too (a
cooperative check between steps would not see it); the job comes back as `Overdue` and the
loop goes on with the rest.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

J = TypeVar("J")

# Per-job wall-clock limit [s] of the commands that fan out episodes (evaluate, demos collect).
DEFAULT_JOB_TIMEOUT = 600.0


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
        _check_reachable(ray_address)
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


def _check_reachable(ray_address: str, seconds: float = 5.0) -> None:
    """Raise `RayConnectError` when nothing accepts a TCP connection at a ``[ray://]host:port`` address."""
    host, sep, port = ray_address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return  # "auto" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as err:
        raise RayConnectError(f"could not join the Ray cluster at {ray_address!r}: nothing accepts connections "
                              f"there ({err.strerror or type(err).__name__}); check the address and that the "
                              f"cluster is running") from err


_REMOTE: dict = {}


def remote(function, num_cpus: float = 1):
    """The Ray remote version of a plain function, made once per process (one CPU per task by default)."""
    key = (function, num_cpus)
    if key not in _REMOTE:
        import ray

        _REMOTE[key] = ray.remote(num_cpus=num_cpus)(function)
    return _REMOTE[key]


@dataclass(frozen=True)
class Overdue:
    """A job whose task ran past its limit and was cancelled (its worker killed)."""

    seconds: float

    @property
    def reason(self) -> str:
        """The failure text a record stores."""
        return f"timed out after {self.seconds:g} s"


def check_timeout(timeout: float | None) -> float | None:
    """A job limit must be a positive finite number of seconds (None: no limit)."""
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"the per-job timeout must be a positive number of seconds, got {timeout}")
    return timeout


def run_bounded(jobs: Sequence[J], submit: Callable[[J], Any], *, workers: int,
                timeout: float | None = DEFAULT_JOB_TIMEOUT) -> Iterator[tuple[J, Any]]:
    """Run ``submit(job)`` (which returns a Ray ObjectRef) for every job, at most ``workers`` in flight.

    Yields ``(job, ref)`` as each task finishes (the caller calls ``ray.get(ref)`` and handles its
    errors) and ``(job, Overdue)`` for each task cancelled after ``timeout`` seconds. A job's time
    counts from its submission; since at most ``workers`` tasks are in flight, that is its start
    as long as ``workers`` does not exceed the cluster's CPUs. Freed slots are refilled before a
    result is handed back, so the workers stay busy while the caller stores it.
    """
    import ray

    check_timeout(timeout)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    queue = list(reversed(jobs))
    pending: dict[Any, tuple[J, float]] = {}

    def refill() -> None:
        while queue and len(pending) < workers:
            job = queue.pop()
            pending[submit(job)] = (job, time.monotonic())

    while queue or pending:
        refill()
        wait = None
        if timeout is not None:
            first_deadline = min(t0 for _, t0 in pending.values()) + timeout
            wait = max(0.0, first_deadline - time.monotonic())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
        finished = [(pending.pop(ref)[0], ref) for ref in ready]
        now = time.monotonic()
        late = [ref for ref, (_, t0) in pending.items() if timeout is not None and now - t0 >= timeout]
        for ref in late:
            ray.cancel(ref, force=True)  # kills the worker: stops a hang inside native code too
        overdue = [(pending.pop(ref)[0], Overdue(timeout)) for ref in late]
        refill()
        yield from finished
        yield from overdue
