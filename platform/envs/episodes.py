"""What every env adapter plays: the scenario (with keyword overrides), its sweep variants, and episode indices.

Shared by `gym_env` (Gymnasium), `pettingzoo_env`'s constructors and `rllib_env` (RLlib), so that a
scenario argument, an override and a seed mean the same thing in each of them.

Scenario arguments: a catalogue name, a YAML path, a mapping of scenario fields or a `ScenarioSpec`.
Overrides are scenario fields by keyword (``traffic={"density": 30}``, ``duration=20``): a mapping
merges into the scenario's mapping of the same name (unless it names another ``type``, which replaces
it), any other value replaces the field; setting one of two alternative fields drops the other
(``traffic={"density": 30}`` on a scenario that gives ``traffic.count``). The merged document goes through the same validation as a
YAML file and fails with the same `ScenarioError` ("<file> (with keyword overrides): traffic.density:
expected …"); problems in fields that came from the file keep its line numbers.

Episode streams: ``reset(seed=s)`` starts stream ``s · 1000 + worker`` and later unseeded resets take
the stream's next episode; episode index = ``offset + stream · EPISODES_PER_STREAM + count``, so copies
seeded differently (RLlib's runners, a vector env's ``seed + i``) never play the same episode.
``options={"episode": k}`` plays episode k exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from diffplatoon.scenarios import ScenarioError, ScenarioSpec, expand_sweep, load_scenario, validate_data
from diffplatoon.scenarios.errors import Path
from diffplatoon.scenarios.loader import resolve_source, validate_with_sweep
from diffplatoon.scenarios.schema import ActionSpec
from diffplatoon.scenarios.yaml_source import parse_yaml

__all__ = ["ALTERNATIVES", "EPISODES_PER_STREAM", "MAX_WORKERS", "EpisodeStream", "ScenarioArg", "check_same_agents",
           "resolve_scenario", "scenario_variants"]

EPISODES_PER_STREAM = 1_000_000
MAX_WORKERS = 1000  # streams of different env runners interleave with this stride

# fields the schema accepts one of, not both (TrafficSpec, PlatoonSpec validators)
ALTERNATIVES = {"count": "density", "density": "count", "time_gap": "spacing", "spacing": "time_gap",
                "route": "destination", "destination": "route"}

ScenarioArg = str | os.PathLike[str] | Mapping[str, Any] | ScenarioSpec


def resolve_scenario(scenario: ScenarioArg, overrides: Mapping[str, Any] | None = None,
                     source: str = "<env_config.scenario>") -> ScenarioSpec:
    """A validated `ScenarioSpec` from a scenario argument and keyword overrides (module docstring);
    `source` names a mapping argument in error messages."""
    if not overrides:
        if isinstance(scenario, ScenarioSpec):
            return scenario
        if isinstance(scenario, Mapping):
            return validate_data(dict(scenario), source)
        return load_scenario(_name_or_path(scenario))
    lines: dict[Path, int] = {}
    if isinstance(scenario, ScenarioSpec):
        data, source = scenario.model_dump(mode="json", by_alias=True, exclude_unset=True), scenario.name
    elif isinstance(scenario, Mapping):
        data = copy.deepcopy(dict(scenario))
    else:
        source, text = resolve_source(_name_or_path(scenario))
        data, lines = parse_yaml(text, source)
    changed: list[Path] = []
    _merge(data, overrides, (), changed)
    source = f"{source} (with keyword overrides)"
    try:
        spec = validate_with_sweep(data, source, lines)
    except ScenarioError as exc:  # an overridden field has no line in the file: name it without one
        overridden = lambda path: any(path[:len(c)] == c for c in changed)  # noqa: E731
        raise ScenarioError(source, [dataclasses.replace(p, line=None) if overridden(p.path) else p
                                     for p in exc.problems]) from None
    return spec


def _name_or_path(scenario: Any) -> str | os.PathLike[str]:
    return scenario if isinstance(scenario, os.PathLike) else str(scenario)


def _merge(data: dict[str, Any], overrides: Mapping[str, Any], prefix: Path, changed: list[Path]) -> None:
    """Merge `overrides` into `data` in place, listing the paths of the fields it set."""
    for key, value in overrides.items():
        base = data.get(key)
        same_kind = isinstance(base, dict) and isinstance(value, Mapping) and value.get("type", base.get("type")) == base.get("type")
        if same_kind:
            _merge(base, value, prefix + (key,), changed)
        else:
            data[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
            changed.append(prefix + (key,))
            other = ALTERNATIVES.get(key)
            if value is not None and other in data and other not in overrides:
                del data[other]
                changed.append(prefix + (other,))


def scenario_variants(spec: ScenarioSpec, *, duration: float | None = None,
                      normalize_actions: bool = True) -> list[ScenarioSpec]:
    """The episodes' specs: the sweep's variants (the spec itself without a sweep), with an optional
    duration [s] and, with `normalize_actions`, actions in [-1, 1]."""
    variants, _ = expand_sweep(spec)
    update: dict[str, Any] = {}
    if duration is not None:
        update["duration"] = duration
    if normalize_actions:
        update["action"] = ActionSpec(normalized=True)
    return [v.model_copy(update=update) for v in variants] if update else variants


def check_same_agents(engines: Sequence[Any]) -> None:
    """Refuse sweep variants (`PlatoonParallelEnv`s) whose agents or observation width differ: a
    single-, multi-agent or RLlib env keeps the same agents and spaces in every episode."""
    first = engines[0]
    width = first.observation.layout.size
    for engine in engines[1:]:
        if engine.possible_agents != first.possible_agents or engine.observation.layout.size != width:
            raise ValueError(
                f"sweep variant {engine.spec.name!r} changes the agents or the observation width; "
                "an env needs the same agents and spaces in every episode"
            )


class EpisodeStream:
    """Episode indices of one env copy (module docstring); `worker` separates RLlib's env runners."""

    def __init__(self, offset: int = 0, worker: int = 0):
        self.offset, self.worker = int(offset), int(worker)
        self.stream, self.count = self.worker, 0

    def next(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> int:
        """The episode index of a reset with this `seed` and `options`."""
        if seed is not None:
            if seed < 0:
                raise ValueError(f"seed must be >= 0, got {seed}")
            self.stream, self.count = int(seed) * MAX_WORKERS + self.worker, 0
        if options and "episode" in options:
            return int(options["episode"])
        episode = self.offset + self.stream * EPISODES_PER_STREAM + self.count
        self.count += 1
        return episode
