"""`benchmarks/train_throughput.py`: both columns are timed in one process, in rounds that alternate their order,
and the figures it reports are consistent with the iterations it ran (real Ray, real envs, real modules)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


def _benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("train_throughput_under_test", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Recorded:
    """A built PPO algorithm whose `train` calls are recorded (column name, in call order)."""

    def __init__(self, name: str, algo: Any, calls: list[str]) -> None:
        self.name, self.algo, self.calls = name, algo, calls

    def train(self) -> dict[str, Any]:
        self.calls.append(self.name)
        return self.algo.train()

    def stop(self) -> None:
        self.algo.stop()


@pytest.mark.slow
def test_columns_are_timed_in_alternating_rounds(ray_session) -> None:
    bench = _benchmark()
    bench.ENVS_PER_RUNNER = 2
    batch, rounds = 40, 3
    configs = {"mlp": bench.mlp_column("highway_platoon", batch, 4.0),
               "diffusion": bench.diffusion_column("highway_platoon", batch, 4.0)}
    calls: list[str] = []
    names = {id(cfg): name for name, cfg in configs.items()}

    def builder(cfg: Any) -> _Recorded:
        return _Recorded(names[id(cfg)], bench.build(cfg), calls)

    summary, per_round = bench.measure_interleaved(configs, rounds, builder)

    # (build() runs each column's warm-up iteration itself, unrecorded) the timed rounds alternate the order
    assert calls == ["mlp", "diffusion", "diffusion", "mlp", "mlp", "diffusion"]
    assert len(per_round) == rounds and all(set(r) == {"mlp", "diffusion"} for r in per_round)
    act_steps = configs["diffusion"].act_steps
    for name, figures in summary.items():
        assert figures["env_steps"] >= rounds * batch - act_steps  # policy steps, the chunks counted as act_steps
        wall = figures["iteration_s"] * rounds
        assert figures["env_steps_per_s"] == pytest.approx(figures["env_steps"] / wall)
        assert figures["env_steps_per_cpu_s"] > 0
        # the column's steps/s is the steps-weighted mean of its rounds' (same steps each round, up to RLlib's
        # rounding of a batch into whole env steps)
        assert min(r[name] for r in per_round) <= figures["env_steps_per_s"] * 1.001
        assert max(r[name] for r in per_round) >= figures["env_steps_per_s"] * 0.999
    assert summary["mlp"]["shield_rate"] is None and 0.0 <= summary["diffusion"]["shield_rate"] <= 1.0
