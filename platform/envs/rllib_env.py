"""`PlatoonMultiAgentEnv`: an RLlib `MultiAgentEnv` over one scenario, grouped per platoon or per vehicle.

The episode engine is `PlatoonParallelEnv` (the simulation, the per-member rewards of
`diffplatoon.envs.rewards`, its termination/truncation rules and action scaling), used as is;
this module only regroups its per-member results into the agents RLlib trains and keeps
RLlib's multi-agent rules: `possible_agents` never changes, every agent that acted gets a
reward, every agent still on the road gets a final observation at truncation, a done agent
never receives data again, and `__all__` is set in both `terminateds` and `truncateds`.

Registered names: after `register_rllib_envs()` (idempotent, before the algorithm is built; Ray's
registry carries the names to the env runners), ``PPOConfig().environment("diffplatoon-platoon",
env_config={"scenario": "onramp_merge"})`` builds this env with the platoon grouping and
``"diffplatoon-vehicle"`` with the vehicle grouping (a `grouping` key naming the other one is refused).

env_config keys (all optional except `scenario`):

| key | meaning |
|---|---|
| scenario | catalogue name, YAML path, mapping of scenario fields, or a `ScenarioSpec`; a sweep cycles its variants per episode |
| grouping | "vehicle" (one agent per member, default) or "platoon" (one agent per platoon) |
| duration | episode length override [s] |
| normalize_actions | true (default): actions in [-1, 1], scaled so that 0 stays 0; false: the scenario's own setting |
| platoon_reward | "mean" (default) or "sum" of the rewards of the members that acted this step (platoon grouping) |
| act_steps | platoon grouping: policy steps per env step (default 1); the action holds that many joint actions, executed one per policy step (an action chunk, as DPPO executes them) |
| episode_offset | added to every episode index |
| torch_threads | not used by the env; the training driver's env-runner callback reads it |

Agents and spaces (N = largest platoon size, D = flat observation width, Kc × Dm = inbox):

| grouping | agent ids | observation | action |
|---|---|---|---|
| vehicle | member names "p0.0", … | Dict(obs=(D,) own flat observation, state=(N·D + 2N,) platoon joint state: members' flat observations padded to N, member mask, one-hot of the agent's member index) | Box(2,) |
| platoon | platoon ids "p0", … | Dict(obs=(N, D), inbox=(N, Kc, Dm), inbox_mask=(N, Kc), inbox_sender=(N, Kc) member index of each slot's sender in this platoon (−1: empty or not a member), comm_mask=(N, N) i hears j (diagonal set), both present, member_mask=(N,), pose=(N, 4) world [x, y, heading, speed], length=(N,)) | Box(T·2N,) T = act_steps joint actions, each the members' [acc, steer] in member order |

Masks are float32 0/1. Absent members (crashed, departed or padding) have zero rows and a zero
mask; their actions are ignored. Platoon rewards aggregate member rewards (`platoon_reward`).

Action chunks (`act_steps` T > 1): one env step runs up to T policy steps open-loop, the k-th with the
k-th joint action; a platoon's reward is the sum of its per-policy-step rewards, its infos collect the
members that crashed or departed during the chunk. The chunk stops early when the episode is truncated or
every platoon is gone (the observation is then the one after the last step run). RLlib counts env
steps, so one of them is T policy steps of simulated driving (`policy_steps` in the episode statistics).

Episode seeding: RLlib resets its k-th vectorized copy on runner w with seed = config.seed + w + k on the
first reset and without a seed afterwards. `reset(seed=s)` starts stream s · 1000 + w (w = the env
context's worker_index, so no two (runner, copy) pairs share a stream); later unseeded resets take the
stream's next episode. Episode index = episode_offset + stream · 1_000_000 + count (an env never seeded
uses s = 0). (RLlib 2.60's multi-agent runners leave the context's vector_index at 0; the copy is in the
seed.) `reset(options={"episode": k})` plays episode k exactly.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from diffplatoon.envs.episodes import (EPISODES_PER_STREAM, EpisodeStream, check_same_agents, resolve_scenario,
                                       scenario_variants)
from diffplatoon.envs.pettingzoo_env import PlatoonParallelEnv

__all__ = ["EnvSettings", "PlatoonMultiAgentEnv", "RLLIB_ENV_NAMES", "register_rllib_envs", "resolve_scenario",
           "EPISODES_PER_STREAM"]

# name registered with Ray's env registry -> the grouping its env uses
RLLIB_ENV_NAMES = {"diffplatoon-platoon": "platoon", "diffplatoon-vehicle": "vehicle"}


class EnvSettings(BaseModel):
    """The env_config of `PlatoonMultiAgentEnv` (see the module table)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    scenario: Any
    grouping: Literal["vehicle", "platoon"] = "vehicle"
    duration: float | None = Field(None, gt=0)
    normalize_actions: bool = True
    platoon_reward: Literal["mean", "sum"] = "mean"
    episode_offset: int = Field(0, ge=0)
    act_steps: int = Field(1, ge=1)
    torch_threads: int = Field(1, ge=1)  # not used by the env: read by the training driver's env-runner callback

    @model_validator(mode="after")
    def _chunks_need_platoons(self) -> "EnvSettings":
        if self.act_steps > 1 and self.grouping != "platoon":
            raise ValueError(f"act_steps {self.act_steps} needs grouping 'platoon' (an action chunk is a platoon's "
                             "joint plan); the vehicle grouping acts every policy step")
        return self


class PlatoonMultiAgentEnv(MultiAgentEnv):
    """One scenario as an RLlib multi-agent environment (see the module docstring)."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        config = {} if config is None else config  # an EnvContext may be empty yet carry worker_index
        self.settings = EnvSettings.model_validate(dict(config))
        self.grouping = self.settings.grouping
        self.act_steps = self.settings.act_steps
        variants = scenario_variants(resolve_scenario(self.settings.scenario), duration=self.settings.duration,
                                     normalize_actions=self.settings.normalize_actions)
        self._engines = [PlatoonParallelEnv(spec) for spec in variants]
        check_same_agents(self._engines)
        self.engine = self._engines[0]
        self.spec = self.engine.spec
        self.members = list(self.engine.possible_agents)
        self.platoon_ids = [p.id for p in self.spec.platoons]
        self.platoon_members = [p.member_names() for p in self.spec.platoons]
        self.n_max = max(len(m) for m in self.platoon_members)
        obs = self.engine.observation
        self.obs_dim = obs.layout.size
        self.kc, self.msg_dim = int(obs.inbox.shape[1]), int(obs.inbox.shape[2])
        self._slot = {}  # member name -> (platoon index, member index)
        for p, names in enumerate(self.platoon_members):
            for k, name in enumerate(names):
                self._slot[name] = (p, k)
        self._row = {a: i for i, a in enumerate(self.members)}

        box = lambda *shape: gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)  # noqa: E731
        unit = lambda *shape: gym.spaces.Box(0.0, 1.0, shape=shape, dtype=np.float32)  # noqa: E731
        n, d = self.n_max, self.obs_dim
        if self.grouping == "vehicle":
            self.possible_agents = list(self.members)
            space = gym.spaces.Dict({"obs": box(d), "state": box(n * d + 2 * n)})
            self.observation_spaces = {a: space for a in self.possible_agents}
            self.action_spaces = {a: self.engine.action_space(a) for a in self.possible_agents}
        else:
            self.possible_agents = list(self.platoon_ids)
            space = gym.spaces.Dict({
                "obs": box(n, d), "inbox": box(n, self.kc, self.msg_dim), "inbox_mask": unit(n, self.kc),
                "inbox_sender": gym.spaces.Box(-1.0, float(n - 1), shape=(n, self.kc), dtype=np.float32),
                "comm_mask": unit(n, n), "member_mask": unit(n), "pose": box(n, 4), "length": box(n),
            })
            self.observation_spaces = {a: space for a in self.possible_agents}
            self.action_spaces = {}
            for pid, names in zip(self.platoon_ids, self.platoon_members):
                act = self.engine.action_space(names[0])  # one vehicle type per platoon
                low, high = np.tile(act.low, n * self.act_steps), np.tile(act.high, n * self.act_steps)
                self.action_spaces[pid] = gym.spaces.Box(low, high, dtype=np.float32)
        self.agents = []
        self._episodes = EpisodeStream(self.settings.episode_offset, int(getattr(config, "worker_index", 0) or 0))
        self.episode = -1
        self.episode_stats: dict[str, float] = {}
        self.last_episode_stats: dict[str, float] | None = None

    # -- episode ---------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start the next episode of the seed stream (see the module docstring)."""
        episode = self._episodes.next(seed, options)
        self.episode = episode
        self.engine = self._engines[episode % len(self._engines)]
        self.spec = self.engine.spec
        member_obs, member_infos = self.engine.reset(options={"episode": episode})
        self.episode_stats = {"collisions": 0.0, "offroad_steps": 0.0, "departed": 0.0, "steps": 0.0,
                              "speed_sum": 0.0, "speed_count": 0.0, "merged": 0.0}
        self._track_speed()
        if self.grouping == "vehicle":
            self.agents = list(self.members)
            flat = self.engine.observation.flat()
            obs = {a: self._vehicle_obs(a, flat) for a in self.agents}
            infos = {a: member_infos[a] for a in self.agents}
        else:
            self.agents = list(self.platoon_ids)
            obs = {pid: self._platoon_obs(p) for p, pid in enumerate(self.platoon_ids)}
            infos = {pid: {"episode": episode} for pid in self.agents}
        return obs, infos

    def step(self, action_dict: dict[str, Any]):
        """One env step (one policy step, or an action chunk of `act_steps`) of every agent in `action_dict`;
        returns RLlib's five dicts."""
        if not self.agents:
            raise RuntimeError("step() called after the episode ended; call reset()")
        engine = self.engine
        if self.grouping == "vehicle":
            member_actions = {a: action_dict[a] for a in action_dict if a in engine.agents}
            m_obs, m_rew, m_term, m_trunc, m_info = engine.step(member_actions)
            self._record(m_info)
            truncated_all = bool(engine.sim.done)
            out = self._vehicle_step(m_rew, m_term, m_trunc, m_info)
        else:
            truncated_all, out = self._platoon_chunk(action_dict)
        obs, rewards, terms, truncs, infos = out
        terms["__all__"] = not self.agents and not truncated_all
        truncs["__all__"] = truncated_all
        if truncated_all or not self.agents:
            self.agents = []
            self.last_episode_stats = self.summary()
        return obs, rewards, terms, truncs, infos

    def _vehicle_step(self, m_rew, m_term, m_trunc, m_info):
        flat = self.engine.observation.flat()
        obs, rewards, terms, truncs, infos = {}, {}, {}, {}, {}
        for a in m_rew:
            obs[a] = self._vehicle_obs(a, flat)
            rewards[a] = float(m_rew[a])
            terms[a] = bool(m_term[a])
            truncs[a] = bool(m_trunc[a]) and not terms[a]
            infos[a] = m_info[a]
        self.agents = [a for a in self.agents if a in m_rew and not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos

    def _platoon_chunk(self, action_dict):
        """Run the platoons' action chunks; (episode truncated, RLlib's five dicts of the platoon agents)."""
        engine, t_count = self.engine, self.act_steps
        index = {pid: self.platoon_ids.index(pid) for pid in action_dict}
        chunks = {pid: np.asarray(a, dtype=np.float64).reshape(t_count, self.n_max, 2)
                  for pid, a in action_dict.items()}
        rewards = {pid: 0.0 for pid in self.agents}
        infos = {pid: {"member_rewards": {}, "crashed": [], "departed": []} for pid in self.agents}
        truncated_all = False
        for k in range(t_count):
            member_actions = {}
            for pid, chunk in chunks.items():
                for j, name in enumerate(self.platoon_members[index[pid]]):
                    if name in engine.agents:
                        member_actions[name] = chunk[k, j]
            _, m_rew, _, _, m_info = engine.step(member_actions)
            self._record(m_info)
            truncated_all = bool(engine.sim.done)
            for p, pid in enumerate(self.platoon_ids):
                if pid not in rewards:
                    continue
                acted = [n for n in self.platoon_members[p] if n in m_rew]
                total = float(np.sum([m_rew[n] for n in acted])) if acted else 0.0
                rewards[pid] += total if self.settings.platoon_reward == "sum" or not acted else total / len(acted)
                info = infos[pid]
                for n in acted:
                    info["member_rewards"][n] = info["member_rewards"].get(n, 0.0) + float(m_rew[n])
                info["crashed"] += [n for n in acted if m_info[n]["crashed"]]
                info["departed"] += [n for n in acted if m_info[n]["departed"]]
            if truncated_all or not engine.agents:
                break
        live = set(engine.agents)
        obs, terms, truncs = {}, {}, {}
        for p, pid in enumerate(self.platoon_ids):
            if pid not in rewards:
                continue
            gone = not any(n in live for n in self.platoon_members[p])
            terms[pid] = gone and not truncated_all
            truncs[pid] = truncated_all and not terms[pid]
            obs[pid] = self._platoon_obs(p)
        self.agents = [pid for pid in self.agents if not (terms[pid] or truncs[pid])]
        return truncated_all, (obs, rewards, terms, truncs, infos)

    # -- observations ----------------------------------------------------------------------------
    def _vehicle_obs(self, agent: str, flat: np.ndarray) -> dict[str, np.ndarray]:
        p, k = self._slot[agent]
        n, d = self.n_max, self.obs_dim
        state = np.zeros(n * d + 2 * n, dtype=np.float32)
        alive = self.engine.observation.alive
        for j, name in enumerate(self.platoon_members[p]):
            row = self._row[name]
            state[j * d:(j + 1) * d] = flat[row]
            state[n * d + j] = float(alive[row])
        state[n * d + n + k] = 1.0
        return {"obs": flat[self._row[agent]].copy(), "state": state}

    def _platoon_obs(self, p: int) -> dict[str, np.ndarray]:
        """The Dict observation of platoon `p` (members padded to N)."""
        engine, n = self.engine, self.n_max
        o = engine.observation
        rows = np.array([self._row[name] for name in self.platoon_members[p]])
        size = len(rows)
        active = set(engine.agents)
        present = np.array([bool(o.alive[r]) and name in active
                            for r, name in zip(rows, self.platoon_members[p])])
        sim, world = engine.sim, engine.sim.world
        wr = sim.controlled[rows]
        out = {
            "obs": np.zeros((n, self.obs_dim), np.float32),
            "inbox": np.zeros((n, self.kc, self.msg_dim), np.float32),
            "inbox_mask": np.zeros((n, self.kc), np.float32),
            "inbox_sender": np.full((n, self.kc), -1.0, np.float32),
            "comm_mask": np.zeros((n, n), np.float32),
            "member_mask": np.zeros(n, np.float32),
            "pose": np.zeros((n, 4), np.float32),
            "length": np.zeros(n, np.float32),
        }
        out["obs"][:size] = o.flat()[rows]
        out["inbox"][:size] = o.inbox[rows]
        out["inbox_mask"][:size] = o.inbox_mask[rows]
        sender = o.inbox_sender[rows]  # comm ids (= agent rows), −1 for empty slots
        member_of = np.full(max(len(self.members), int(sender.max(initial=-1)) + 1), -1.0, np.float32)
        member_of[rows] = np.arange(size)
        out["inbox_sender"][:size] = np.where(o.inbox_mask[rows] & (sender >= 0), member_of[np.maximum(sender, 0)], -1.0)
        out["comm_mask"][:size, :size] = sim.comm_graph.platoon_mask(p)
        out["member_mask"][:size] = present
        pose = np.stack([world.x[wr], world.y[wr], world.heading[wr], world.speed[wr]], axis=1)
        out["pose"][:size] = np.where(present[:, None], pose, 0.0)
        out["length"][:size] = np.where(present, world.length[wr], 0.0)
        keep = np.zeros(n, np.float32)
        keep[:size] = present
        out["comm_mask"] *= keep[:, None] * keep[None, :]
        return out

    # -- episode statistics ----------------------------------------------------------------------
    def _track_speed(self) -> None:
        o = self.engine.observation
        alive = o.alive.astype(bool)
        self.episode_stats["speed_sum"] += float(o.ego[alive, 0].sum())
        self.episode_stats["speed_count"] += float(alive.sum())

    def _record(self, m_info: dict[str, dict]) -> None:
        stats = self.episode_stats
        stats["steps"] += 1
        for info in m_info.values():
            stats["collisions"] += info["crashed"]
            stats["offroad_steps"] += info["offroad"]
            stats["departed"] += info["departed"]
            stats["merged"] += info["merged"]
        self._track_speed()

    def summary(self) -> dict[str, float]:
        """Counts of the current episode: member collisions, member-steps off the road, departures, steps, mean speed
        [m/s], and where members have a merge task (`diffplatoon.sim.merge_targets`) the share of them that completed
        it (the reward's `merge` event: on a target lane and on the road; the evaluation's merge success also asks
        them to end the episode there)."""
        s = self.episode_stats
        out = {
            "collisions": s["collisions"], "offroad_steps": s["offroad_steps"], "departed": s["departed"], "steps": s["steps"],
            "mean_speed": s["speed_sum"] / max(s["speed_count"], 1.0),
        }
        mergers = int(self.engine.reward_fn.targets.mergers.sum())
        if mergers:
            out["merge_success"] = s["merged"] / mergers
        return out


# -- registered names ------------------------------------------------------------------------------
def register_rllib_envs() -> tuple[str, ...]:
    """Register `RLLIB_ENV_NAMES` with Ray's env registry (see the module docstring); returns the names."""
    from ray.tune.registry import register_env

    for name, grouping in RLLIB_ENV_NAMES.items():
        register_env(name, functools.partial(_grouped_env, grouping))
    return tuple(RLLIB_ENV_NAMES)


def _grouped_env(grouping: str, config: dict | None) -> PlatoonMultiAgentEnv:
    """The env of one registered name; an `EnvContext` stays one (its worker index seeds the episode streams)."""
    from ray.rllib.env.env_context import EnvContext

    config = {} if config is None else config
    if config.get("grouping", grouping) != grouping:
        name = next(n for n, g in RLLIB_ENV_NAMES.items() if g == grouping)
        raise ValueError(f"env {name!r} uses grouping {grouping!r}, got env_config grouping {config['grouping']!r}")
    env_config = {**config, "grouping": grouping}
    if isinstance(config, EnvContext):
        return PlatoonMultiAgentEnv(config.copy_with_overrides(env_config=env_config))
    return PlatoonMultiAgentEnv(env_config)
