"""Gymnasium ids of diffplatoon, registered when `diffplatoon.envs` is imported.

| id | env |
|---|---|
| `diffplatoon/<catalogue name>-v0` | `PlatoonGymEnv` on that catalogue scenario (`diffplatoon scenario list`) |
| `diffplatoon/scenario-v0` | `PlatoonGymEnv` on the `scenario=` keyword: a YAML path, a catalogue name, a mapping or a spec |

Gymnasium 1.x reads no plugin entry points, so an id resolves once this module has run: either
`import diffplatoon.envs` before `gymnasium.make`, or the id prefixed with the module to import,
`gymnasium.make("diffplatoon.envs:diffplatoon/highway_platoon-v0")`, which needs no import line.
The entry point is a string, so subprocess vector envs import (and register) it on their own.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from diffplatoon.scenarios import catalogue_names

__all__ = ["ANY_SCENARIO_ID", "NAMESPACE", "gym_id", "register_gymnasium_envs"]

NAMESPACE = "diffplatoon"
ANY_SCENARIO_ID = f"{NAMESPACE}/scenario-v0"
_ENTRY_POINT = "diffplatoon.envs.gym_env:PlatoonGymEnv"


def gym_id(name: str) -> str:
    """The Gymnasium id of catalogue scenario `name`."""
    return f"{NAMESPACE}/{name}-v0"


def register_gymnasium_envs() -> list[str]:
    """Register every diffplatoon id not registered yet (idempotent); returns all of them."""
    ids = {gym_id(name): {"scenario": name} for name in catalogue_names()}
    ids[ANY_SCENARIO_ID] = {}
    for env_id, kwargs in ids.items():
        if env_id not in registry:
            # no max_episode_steps here: the env truncates at its scenario's duration and reports it in env.spec
            register(id=env_id, entry_point=_ENTRY_POINT, kwargs=kwargs)
    return list(ids)
