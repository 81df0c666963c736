"""`PlatoonParallelEnv`: a PettingZoo `ParallelEnv` over one scenario, one agent per platoon member.

Constructors in PettingZoo's style: `parallel_env(scenario="onramp_merge", **overrides)` and `env(...)`,
its AEC view through PettingZoo's `parallel_to_aec`. `scenario` is a catalogue name, a YAML path, a
mapping of fields or a `ScenarioSpec`; keywords other than `render_mode`, `episode_offset` and
`normalize_actions` (default true: actions in [-1, 1], as the Gymnasium and RLlib views default to)
override scenario fields, validated like YAML (`diffplatoon.envs.episodes`).

| | |
|---|---|
| agents | `Simulation.agent_names`, e.g. "p0.0" … "p0.3", "p1.0" … (platoon id, member index; 0 leads) |
| observation | `Box(-inf, inf, (obs_dim,), float32)`: one row of `Observation.flat()` (layout below) |
| action | `Box(2,)` float32 [acceleration m/s², steering rad], bounds = the platoon's `vehicle` limits [−max_deceleration, max_acceleration] × [−max_steering, max_steering]; with `spec.action.normalized`, [-1, 1]² scaled so that 0 stays 0 (negative acceleration × max_deceleration, positive × max_acceleration, steering × max_steering). Actions are clipped to the bounds. |
| reward | per agent, `diffplatoon.envs.rewards` (terms weighted by `spec.reward`) |
| termination | the member crashed (when `spec.safety.terminate_on_collision`) or left the road (end of road / destination) |
| truncation | every remaining agent when the scenario's duration has elapsed |
| info | `crashed`, `departed`, `offroad`, `merged` (bools, this step; `merged`: the member completed its merge task, the reward's `merge` event), `reward_terms` (weighted terms by name), `time` [s] |
| reset(seed) | episode index = `episode_offset + seed`; `seed=None` takes the episode after the last one |

Observation layout (`env.observation.layout`, a `diffplatoon.sim.observation.ObservationLayout`:
`layout.unflatten(obs)` gives the fields back), K = `observation.neighbours`,
P = `observation.lane_points`, Kc = inbox slots, D = message length:

| columns | field | features |
|---|---|---|
| 10 | ego | `EGO_FEATURES` |
| 4 | leader | `LEADER_FEATURES` |
| 16 | side | [left, right] × [front, rear] × `SIDE_FEATURES` |
| 2 | side_lane | left, right lane may be entered |
| 9·K | neighbours | K × `NEIGHBOUR_FEATURES` |
| K | neighbour_mask | |
| 2·P | lane_ahead | P × (x, y) ego frame |
| 5 | right_of_way | `RIGHT_OF_WAY_FEATURES` |
| 5 | route | `ROUTE_FEATURES` |
| Kc·D | inbox | Kc × (`comms.MESSAGE_FIELDS` + plan floats) |
| Kc | inbox_mask | |
| Kc | inbox_age | steps |

A member that crashed or left gets a zero observation before it is removed from `agents`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from diffplatoon.envs.episodes import ScenarioArg, resolve_scenario
from diffplatoon.envs.rewards import REWARD_TERMS, RewardFunction
from diffplatoon.scenarios.schema import ActionSpec, ScenarioSpec
from diffplatoon.sim.observation import Observation, Observer
from diffplatoon.sim.simulation import Simulation

__all__ = ["PlatoonParallelEnv", "env", "parallel_env"]


def action_limits(spec: ScenarioSpec) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) lower and upper [acceleration, steering] limits of every member, in agent order."""
    low, high = [], []
    for platoon in spec.platoons:
        v = platoon.vehicle
        low += [[-v.max_deceleration, -v.max_steering]] * platoon.size
        high += [[v.max_acceleration, v.max_steering]] * platoon.size
    # through float32 so the limits equal the action spaces' bounds exactly
    return (np.array(low, dtype=np.float32).astype(np.float64), np.array(high, dtype=np.float32).astype(np.float64))


def to_si(acts: np.ndarray, low: np.ndarray, high: np.ndarray, *, normalized: bool) -> np.ndarray:
    """Actions in SI units clipped to the limits; `normalized` ones in [-1, 1] map 0 → 0, ±1 → the limits."""
    # np.minimum/np.maximum: np.clip's Python wrapper costs more than the clipping here
    if normalized:
        acts = np.minimum(np.maximum(acts, -1.0), 1.0)
        acts = np.where(acts < 0, -acts * low, acts * high)
    return np.minimum(np.maximum(acts, low), high)


class PlatoonParallelEnv(ParallelEnv):
    """One scenario as a parallel multi-agent environment (see the module docstring)."""

    metadata = {"name": "diffplatoon_platoon_v0", "render_modes": ["rgb_array"], "is_parallelizable": True}

    def __init__(self, spec: ScenarioSpec, render_mode: str | None = None, episode_offset: int = 0):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.spec = spec
        self.render_mode = render_mode
        self.episode_offset = int(episode_offset)
        self.metadata = {**self.metadata, "render_fps": spec.policy_frequency}
        self._next_episode = 0
        self.episode = self.episode_offset
        self._start(self.episode_offset)
        self.possible_agents: list[str] = list(self.sim.agent_names)
        self.agents: list[str] = []
        self._last_obs.validate()  # the observation contract, checked once per env rather than every step
        obs_dim = self._last_obs.layout.size
        self._obs_space = spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self._obs_spaces = {a: self._obs_space for a in self.possible_agents}
        self._low, self._high = action_limits(spec)  # (M, 2) SI limits
        self._act_spaces: dict[str, spaces.Box] = {}
        for i, name in enumerate(self.possible_agents):
            if spec.action.normalized:
                self._act_spaces[name] = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
            else:
                self._act_spaces[name] = spaces.Box(self._low[i].astype(np.float32), self._high[i].astype(np.float32),
                                                    dtype=np.float32)
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._renderer = None

    # -- spaces ---------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        return self._act_spaces[agent]

    # -- episode --------------------------------------------------------------------------------
    def _start(self, episode: int) -> None:
        self.sim = Simulation(self.spec, episode)
        self.observer = Observer(self.sim)
        self.reward_fn = RewardFunction(self.sim, self.observer)
        self._last_obs: Observation = self.observer.observe()
        if getattr(self, "_renderer", None) is not None:
            self._renderer.attach(self.sim)

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Start an episode: `seed` picks the episode index (see the module docstring)."""
        index = self._next_episode if seed is None else int(seed)
        if options and "episode" in options:
            index = int(options["episode"])
        self._next_episode = index + 1
        self.episode = self.episode_offset + index
        self._start(self.episode)
        self.agents = list(self.possible_agents)
        flat = self._last_obs.flat()
        obs = {a: flat[i] for i, a in enumerate(self.agents)}
        t = self.sim.time
        infos = {a: {"crashed": False, "departed": False, "offroad": False, "merged": False, "time": t} for a in self.agents}
        return obs, infos

    def scale_actions(self, actions: dict[str, Any]) -> np.ndarray:
        """(M, 2) SI actions for every member from a dict of the agents' actions (missing ones: 0)."""
        acts = np.zeros((len(self.possible_agents), 2))
        for agent, action in actions.items():
            acts[self._index[agent]] = action
        return to_si(acts, self._low, self._high, normalized=self.spec.action.normalized)

    def step(self, actions: dict[str, Any]):
        """Advance one policy step; returns (obs, rewards, terminations, truncations, infos)."""
        if not self.agents:
            raise RuntimeError("step() called with no live agents; call reset()")
        sim = self.sim
        was_live = self.observer.live()
        sim.step(self.scale_actions(actions))
        obs_all = self.observer.observe()
        self._last_obs = obs_all
        reward, terms, events = self.reward_fn()
        live = self.observer.live()
        crashed = live & sim.world.crashed[sim.controlled]
        departed = was_live & ~live
        terminate = departed | (crashed if self.spec.safety.terminate_on_collision else False)
        truncate = sim.done
        flat = obs_all.flat()
        t = sim.time
        # Python lists: per-agent scalars from lists are cheaper than numpy scalar indexing
        reward_l, terminate_l, terms_l = reward.tolist(), terminate.tolist(), terms.tolist()
        crashed_l, departed_l, outside_l = crashed.tolist(), departed.tolist(), events["outside"].tolist()
        merged_l = events["merged"].tolist()
        truncate = bool(truncate)

        observations, rewards, terminations, truncations, infos = {}, {}, {}, {}, {}
        for agent in self.agents:
            i = self._index[agent]
            observations[agent] = flat[i]
            rewards[agent] = reward_l[i]
            terminations[agent] = terminate_l[i]
            truncations[agent] = truncate
            infos[agent] = {
                "crashed": crashed_l[i],
                "departed": departed_l[i],
                "offroad": outside_l[i],
                "merged": merged_l[i],
                "reward_terms": dict(zip(REWARD_TERMS, terms_l[i])),
                "time": t,
            }
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    @property
    def observation(self) -> Observation:
        """The structured observation of all members at the current step."""
        return self._last_obs

    # -- rendering ------------------------------------------------------------------------------
    def render(self) -> np.ndarray | None:
        """An (H, W, 3) uint8 top-down frame for render_mode="rgb_array"; None otherwise."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            from diffplatoon.sim.render import Renderer

            self._renderer = Renderer(self.sim)
        return self._renderer.frame()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def parallel_env(scenario: ScenarioArg = "highway_platoon", render_mode: str | None = None, *,
                 normalize_actions: bool = True, episode_offset: int = 0, **overrides: Any) -> PlatoonParallelEnv:
    """The `PlatoonParallelEnv` of `scenario` with keyword overrides (see the module docstring)."""
    spec = resolve_scenario(scenario, overrides, source="<scenario>")
    if normalize_actions:
        spec = spec.model_copy(update={"action": ActionSpec(normalized=True)})
    return PlatoonParallelEnv(spec, render_mode=render_mode, episode_offset=episode_offset)


def env(scenario: ScenarioArg = "highway_platoon", render_mode: str | None = None, **kwargs: Any) -> AECEnv:
    """The AEC view of `parallel_env(scenario, render_mode, **kwargs)` (PettingZoo's `parallel_to_aec`)."""
    return parallel_to_aec(parallel_env(scenario, render_mode, **kwargs))
