"""Shared pytest fixtures: one Ray session for the whole test run, tiny planner checkpoints, torch threads.

`ray.init` costs about 3 s and 700 MB (ARCHITECTURE §7), so every test that needs Ray asks
for the session-scoped ``ray_session`` fixture instead of starting its own. Ray is started
lazily: a test run that never asks for it never pays for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

# Local test clusters: no token file in the home folder, no usage reporting.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread in the test process: Ray workers share the 2 cores, and torch's default
    thread count on a loaded 2-core machine is tens of times slower (ARCHITECTURE §7)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def restore_torch_threads():
    """For modules whose policies set torch's thread count for the process: give the next module its
    count back (``pytestmark = pytest.mark.usefixtures("restore_torch_threads")``)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def tiny_planner(tmp_path_factory) -> Callable[..., Path]:
    """Factory: ``tiny_planner(spec)`` is the checkpoint file of a tiny untrained planner sized for the scenario's
    observation and message widths (one file per width pair). Its weights are jittered (AdaLN-Zero would output
    constant plans) and its actions scaled to gentle steering so that it stays on the road."""
    import torch

    from diffplatoon.agents.diffusion import JointDiffusionPlanner, PlannerConfig, features
    from diffplatoon.agents.diffusion.model import DenoiserConfig

    made: dict[tuple[int, int], Path] = {}

    def make(spec) -> Path:
        dims = (features.obs_dim(spec), features.msg_dim(spec))
        if dims not in made:
            cfg = PlannerConfig(DenoiserConfig(obs_dim=dims[0], msg_dim=dims[1], chunk=5, d_model=32, n_layers=1,
                                               n_heads=2, max_horizon=20), horizon=10, num_train_steps=20)
            torch.manual_seed(0)
            planner = JointDiffusionPlanner(cfg)
            with torch.no_grad():
                for p in planner.model.parameters():
                    p.add_(0.1 * torch.randn_like(p))
                planner.ema.load_state_dict(planner.model.state_dict())
                planner.normalizer.action_std.copy_(torch.tensor([1.0, 0.005]))
                planner.normalizer.fitted.fill_(True)
            made[dims] = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
            planner.save(made[dims])
        return made[dims]

    return make
