"""The batched `Policy` interface and the name → factory registry that resolves policy strings.

A policy drives every controlled vehicle of a simulation at once: `act(obs)` takes the
`Observation` of all M platoon members (in `Simulation.agent_names` order) and returns an
(M, 2) float array of [acceleration m/s², front-wheel steering rad]. `reset(info)` starts an
episode; `info` is a `SimInfo` (who the agents are, their platoon and member index, the
scenario, the episode index), so a policy needs no access to the simulator itself.

Policy strings: ``"<kind>"`` or ``"<kind>:<argument>"``. The registry dispatches on the part
before the first ``:`` and hands the rest to the kind's factory. Built-in experts read the
argument as ``key=value`` pairs separated by ``,`` (``"cacc:time_gap=0.6,kp=0.3"``); learned
policies (later) read it as a checkpoint path (``"diffusion:runs/x/ckpt"``). Keyword
``params`` of `make_policy` are merged over the string's pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.observation import Observation

PolicyFactory = Callable[..., "Policy"]


class CheckpointError(ValueError):
    """A learned policy's checkpoint that is missing, corrupt or not written by diffplatoon (one line, naming
    the path and what was expected); raised before any of the file's content is executed or used."""


def load_tensors(path: str | Path, what: str, map_location: Any = "cpu") -> dict[str, Any]:
    """The dict a diffplatoon checkpoint file holds (tensors and plain values), read with torch's
    weights-only loader, which refuses pickled objects instead of running them.

    Any unreadable, truncated or foreign file is a `CheckpointError` "<path>: not a <what> (<why>)"."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused the stream: random bytes, or objects it would run
        why = "corrupt, or holding pickled objects, which are never loaded"
    except Exception as exc:  # noqa: BLE001 - corrupt files fail inside torch with many exception types
        text = str(exc).strip()
        why = f"unreadable: {text.splitlines()[0].split('. ')[0] if text else type(exc).__name__}"
    else:
        if isinstance(data, dict):
            return data
        why = f"expected a dict, found {type(data).__name__}"
    raise CheckpointError(f"{path}: not a {what} ({why})")


@dataclass(frozen=True)
class SimInfo:
    """What a policy is told at the start of an episode.

    Attributes:
        spec: the scenario.
        episode: episode index (with ``spec.seed`` it seeds any randomness of the policy).
        agent_names: (M,) member names, the row order of observations and actions.
        platoon: (M,) platoon index of each agent in ``spec.platoons``.
        member: (M,) index inside its platoon (0 = leader).
        dt: policy step [s].
    """

    spec: ScenarioSpec
    episode: int
    agent_names: tuple[str, ...]
    platoon: np.ndarray
    member: np.ndarray
    dt: float

    @classmethod
    def from_spec(cls, spec: ScenarioSpec, episode: int = 0) -> "SimInfo":
        """The info of episode `episode` of `spec` (agents in platoon, member order)."""
        names, platoon, member = [], [], []
        for i, p in enumerate(spec.platoons):
            for k, name in enumerate(p.member_names()):
                names.append(name)
                platoon.append(i)
                member.append(k)
        return cls(spec, int(episode), tuple(names), np.array(platoon, dtype=np.intp),
                   np.array(member, dtype=np.intp), 1.0 / spec.policy_frequency)


class Policy(ABC):
    """Maps the observation of all controlled vehicles to their actions (see module docstring)."""

    name: str = "policy"
    version: str = "0"

    @abstractmethod
    def reset(self, info: SimInfo) -> None:
        """Start an episode: clear internal state, seed randomness from (spec.seed, episode)."""

    @abstractmethod
    def act(self, obs: Observation) -> np.ndarray:
        """(M, 2) float64 [acceleration, steering] for the M controlled vehicles."""

    def stats(self) -> dict[str, Any]:
        """Per-episode counters of the policy (e.g. how often a safety shield fired); {} if none."""
        return {}


def parse_params(text: str | None) -> dict[str, Any]:
    """``"a=1,b=0.5,c=true"`` → ``{"a": 1, "b": 0.5, "c": True}`` (values parsed as YAML scalars)."""
    params: dict[str, Any] = {}
    if not text:
        return params
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value in policy parameters, got {item!r}")
        params[key.strip()] = yaml.safe_load(value.strip())
    return params


def _expert(cls_name: str) -> PolicyFactory:
    """Factory for a built-in expert: the argument is ``key=value`` pairs merged under `params`."""

    def factory(spec: ScenarioSpec, argument: str | None, **params: Any) -> Policy:
        from diffplatoon.agents import experts  # experts subclass Policy, so import on use

        return getattr(experts, cls_name)(spec, **{**parse_params(argument), **params})

    return factory


def _learned(module: str, function: str) -> PolicyFactory:
    """Factory of a learned policy ``kind:<checkpoint>[,k=v...]``: its module (torch, RLlib) is
    imported only when such a policy is asked for."""

    def factory(spec: ScenarioSpec, argument: str | None, **params: Any) -> Policy:
        import importlib

        return getattr(importlib.import_module(module), function)(spec, argument, **params)

    return factory


# kind → factory(spec, argument after ':', **params). Learned policies add their entries here.
FACTORIES: dict[str, PolicyFactory] = {
    "idm": _expert("IDMPolicy"),
    "cacc": _expert("CACCPolicy"),
    "random": _expert("RandomPolicy"),
    "diffusion": _learned("diffplatoon.agents.diffusion.policy", "make_diffusion_policy"),
    "rllib": _learned("diffplatoon.agents.rllib.policy", "make_rllib_policy"),
    "sb3": _learned("diffplatoon.agents.sb3_policy", "make_sb3_policy"),
}


def policy_names() -> list[str]:
    """The policy kinds `make_policy` resolves."""
    return sorted(FACTORIES)


def make_policy(name: str, spec: ScenarioSpec, **params: Any) -> Policy:
    """Resolve a policy string (``kind`` or ``kind:argument``) for `spec`; see the module docstring."""
    kind, _, argument = name.partition(":")
    kind = kind.strip()
    if kind not in FACTORIES:
        raise ValueError(f"unknown policy {kind!r}; valid policies: {', '.join(policy_names())}")
    return FACTORIES[kind](spec, argument or None, **params)
