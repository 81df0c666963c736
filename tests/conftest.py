"""Shared pytest fixtures: one Ray session for the whole test run.

`ray.init` costs about 3 s and 700 MB (ARCHITECTURE §7), so every test that needs Ray asks
for the session-scoped ``ray_session`` fixture instead of starting its own. Ray is started
lazily: a test run that never asks for it never pays for it.
"""

from __future__ import annotations

import os

import pytest

# Local test clusters: no token file in the home folder, no usage reporting.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread in the test process: Ray workers share the 2 cores, and torch's default
    thread count on a loaded 2-core machine is tens of times slower (ARCHITECTURE §7)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray session with 2 CPUs, shared by every test that requests it."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024**2, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()
