"""`PlatoonGymEnv`: one scenario as a single-agent Gymnasium env that drives every platoon member at once.

    import gymnasium, diffplatoon.envs   # importing diffplatoon.envs registers the ids
    env = gymnasium.make("diffplatoon/highway_platoon-v0", traffic={"density": 30})

| | |
|---|---|
| ids | `diffplatoon/<catalogue name>-v0` for every catalogue scenario; `diffplatoon/scenario-v0` with `scenario=` a YAML path, a catalogue name, a mapping of fields or a `ScenarioSpec` (`diffplatoon.envs.registration`) |
| keywords | `render_mode` ("rgb_array"), `normalize_actions` (default true), `episode_offset`; every other keyword is a scenario field override, validated like YAML (`diffplatoon.envs.episodes`) |
| observation | `Box(-inf, inf, (M·D + M,), float32)` (`joint_observation`): the M members' flat observation rows in agent order (`PlatoonParallelEnv`'s rows; each holds the member's own features, inbox, inbox mask and message ages, `env.unwrapped.layout` names the columns), then the M member masks (1: on the road, 0: crashed or gone, whose row is zeros) |
| action | `Box(2M,)` float32: the members' [acceleration, steering] in agent order; with `normalize_actions` in [-1, 1] (0 stays 0, ±1 the vehicle limits), else the scenario's own setting and bounds. Actions of absent members are ignored. |
| reward | the mean of the rewards of the members that acted this step (`diffplatoon.envs.rewards`) |
| terminated | no member is left (each crashed, with `safety.terminate_on_collision`, or left the road) |
| truncated | the scenario's duration has elapsed: `env.spec.max_episode_steps` = its policy steps (the longest sweep variant's) |
| info | `episode_index`, `time` [s], `crashed`, `departed` (members, this step), `member_rewards` ("episode" is left to episode statistics wrappers: SB3's Monitor, `RecordEpisodeStatistics`) |
| reset | `seed` s starts episode stream s, later unseeded resets play its next episodes; `options={"episode": k}` plays episode k (`diffplatoon.envs.episodes`) |

A scenario with a `sweep` plays its variants in turn, episode k the variant k mod their count.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from diffplatoon.envs.episodes import EpisodeStream, ScenarioArg, check_same_agents, resolve_scenario, scenario_variants
from diffplatoon.envs.pettingzoo_env import PlatoonParallelEnv
from diffplatoon.sim.observation import Observation, ObservationLayout

__all__ = ["PlatoonGymEnv", "joint_observation"]


def joint_observation(observation: Observation) -> np.ndarray:
    """(M·D + M,) float32: every member's flat observation row, then the member masks (module table)."""
    alive = observation.alive if observation.alive is not None else np.ones(len(observation), dtype=bool)
    return np.concatenate([observation.flat().ravel(), alive.astype(np.float32)])


class PlatoonGymEnv(gym.Env[np.ndarray, np.ndarray]):
    """All platoons of one scenario as one Gymnasium agent (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, scenario: ScenarioArg | None = None, render_mode: str | None = None, *,
                 normalize_actions: bool = True, episode_offset: int = 0, **overrides: Any):
        if scenario is None:
            raise ValueError("expected scenario=<catalogue name, YAML path, mapping of fields or ScenarioSpec>, got none")
        spec = resolve_scenario(scenario, overrides, source="<scenario>")
        self._engines = [PlatoonParallelEnv(v, render_mode=render_mode)
                         for v in scenario_variants(spec, normalize_actions=normalize_actions)]
        check_same_agents(self._engines)
        self.engine = self._engines[0]
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.engine.spec.policy_frequency}
        self.agent_names: list[str] = list(self.engine.possible_agents)
        self._row = {a: i for i, a in enumerate(self.agent_names)}
        self.layout: ObservationLayout = self.engine.observation.layout
        self.max_episode_steps = max(e.spec.steps for e in self._engines)
        m = len(self.agent_names)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(m * self.layout.size + m,), dtype=np.float32)
        member_spaces = [self.engine.action_space(a) for a in self.agent_names]
        self.action_space = spaces.Box(np.concatenate([s.low for s in member_spaces]),
                                       np.concatenate([s.high for s in member_spaces]), dtype=np.float32)
        self._episodes = EpisodeStream(episode_offset)
        self.episode = -1
        self._spec: EnvSpec | None = None

    # gymnasium.make stores its EnvSpec here with max_episode_steps=None (it applies no TimeLimit: the
    # scenario's duration truncates); report the duration's step count instead, whatever overrides set it.
    @property
    def spec(self) -> EnvSpec | None:  # type: ignore[override]
        return self._spec

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        self._spec = None if value is None else dataclasses.replace(value, max_episode_steps=self.max_episode_steps)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start the next episode of the seed's stream (see the module docstring)."""
        super().reset(seed=seed)
        self.episode = self._episodes.next(seed, options)
        self.engine = self._engines[self.episode % len(self._engines)]
        self.engine.reset(options={"episode": self.episode})
        return joint_observation(self.engine.observation), {"episode_index": self.episode, "time": self.engine.sim.time}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One policy step of every member still on the road."""
        engine = self.engine
        joint = np.asarray(action, dtype=np.float64).reshape(len(self.agent_names), 2)
        _, rewards, _, _, infos = engine.step({a: joint[self._row[a]] for a in engine.agents})
        truncated = bool(engine.sim.done)
        terminated = not engine.agents and not truncated
        reward = float(np.mean(list(rewards.values()))) if rewards else 0.0
        info = {
            "episode_index": self.episode, "time": engine.sim.time, "member_rewards": rewards,
            "crashed": [a for a, i in infos.items() if i["crashed"]],
            "departed": [a for a, i in infos.items() if i["departed"]],
        }
        return joint_observation(engine.observation), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """An (H, W, 3) uint8 top-down frame for render_mode="rgb_array"; None otherwise."""
        return self.engine.render()

    def close(self) -> None:
        for engine in self._engines:
            engine.close()
