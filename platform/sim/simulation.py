"""One episode of a scenario: the World, the V2V channel and the scripted events, stepped together.

`Simulation(spec, episode)` is what environments, experts and the evaluator drive. It
spawns the scenario's platoons, hand-placed vehicles and background traffic into a `World`
on the spec's highway-env road, wires the platoon members into a `CommGraph` + `Channel`,
and applies the spec's events (events.py) before every simulation frame. Every random draw comes from
generators seeded by (scenario seed, episode index), so an episode is reproducible bit for
bit.

Per policy step (`step(actions)`):
1. before every frame, events whose time or condition is reached are applied (brakes, speed
   changes, cut-ins hook into the World; outages silence the channel) and reported in the
   step's `events`; `event_report()` lists every event's outcome, fired or not;
2. the World advances `simulation_frequency // policy_frequency` frames;
   (objects in `frame_listeners` are called before and after every frame — the collision
   evaluator sub-steps between frames this way);
3. the comm graph is updated from the new positions, every member broadcasts its state (and
   the plan summary a planner left in `plan_slots`), and inboxes are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim import events
from diffplatoon.sim import snapshot as snapshots
from diffplatoon.sim.comms import Channel, CommGraph, Inbox, PlatoonLinks, pack_messages
from diffplatoon.sim.roads import build_network
from diffplatoon.sim.world import World, WorldParams


def episode_seed_sequence(seed: int, episode: int) -> np.random.SeedSequence:
    """The root of every random stream of (scenario seed, episode index)."""
    return np.random.SeedSequence([int(seed), int(episode)])


def world_params(spec: ScenarioSpec) -> WorldParams:
    """Map the scenario's traffic and safety settings onto the World's parameters."""
    idm, mobil = spec.traffic.idm, spec.traffic.mobil
    return WorldParams(
        simulation_frequency=spec.simulation_frequency,
        policy_frequency=spec.policy_frequency,
        a_max=idm.acc_max,
        comfort_acc_max=idm.a,
        comfort_acc_min=-idm.b,
        distance_wanted=idm.s0 + spec.traffic.vehicle.length,
        time_wanted=idm.T,
        delta=idm.delta,
        delta_range=tuple(idm.delta_range),
        politeness=mobil.politeness,
        min_acc_gain=mobil.min_acc_gain,
        max_braking_imposed=mobil.max_braking_imposed,
        lane_change_delay=mobil.lane_change_delay,
        lane_changes_enabled=mobil.enabled,
        crashed_stay=spec.safety.crashed_stay,
    )


@dataclass
class StepResult:
    """What happened during one policy step."""

    time: float
    collisions: list[tuple[str, str]] = field(default_factory=list)
    departed: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


class Simulation:
    """A running episode of `spec` (see the module docstring)."""

    def __init__(self, spec: ScenarioSpec, episode: int = 0):
        self.spec = spec
        self.episode = episode
        world_seq, channel_seq = episode_seed_sequence(spec.seed, episode).spawn(2)
        self.road = spec.road
        self.network = build_network(spec.road)
        self.world = World(self.network, world_params(spec), np.random.default_rng(world_seq))
        self.names: dict[str, int] = {}
        self._spawn_platoons()
        self._spawn_named_vehicles()
        self._spawn_traffic()

        self.controlled = np.array([self.names[n] for n in self.agent_names], dtype=np.int64)
        self._vids = {name: int(self.world.vid[row]) for name, row in self.names.items()}
        self._member_vids = self.world.vid[self.controlled].copy()
        links, offset = [], 0
        for i, platoon in enumerate(spec.platoons):
            links.append(PlatoonLinks(list(range(offset, offset + platoon.size)), platoon.topology or spec.comms.topology))
            offset += platoon.size
        self.comm_graph = CommGraph(links, range_m=spec.comms.range, inter_platoon=spec.comms.inter_platoon)
        self.channel = Channel.from_graph(
            self.comm_graph,
            latency=spec.comms.latency,
            drop_probability=spec.comms.drop_probability,
            max_age=max(spec.comms.max_age, spec.comms.latency),
            plan_dim=spec.comms.plan_dim,
            rng=np.random.default_rng(channel_seq),
        )
        self.plan_slots = np.zeros((len(self.controlled), spec.comms.plan_dim), dtype=np.float64)
        self.step_count = 0
        self.frame_listeners: list = []  # objects with before_frame(sim) / after_frame(sim), e.g. evaluators
        self.event_state = events.EventState.initial(spec)  # pending events, as plain data
        self.inbox = self._communicate()

    # -- spawning --------------------------------------------------------------------------------
    @property
    def agent_names(self) -> list[str]:
        """Platoon members in (platoon, member) order; index = comm id = action row."""
        return [n for p in self.spec.platoons for n in p.member_names()]

    def _spawn_platoons(self) -> None:
        for i, platoon in enumerate(self.spec.platoons):
            lane = self.road.resolve_lane(platoon.lane)
            route = None
            if platoon.destination is not None:
                route = self.road.route(lane, platoon.destination)
            elif platoon.route is not None:
                route = [self.road.resolve_lane(r) for r in platoon.route]
            veh = platoon.vehicle
            for k in range(platoon.size):
                s = platoon.start - k * (veh.length + platoon.spawn_gap)
                self.names[f"{platoon.id}.{k}"] = self.world.spawn(
                    lane, s, platoon.speed, controlled=True, platoon=i, member=k,
                    length=veh.length, width=veh.width, target_speed=platoon.speed, route=route,
                )

    def _spawn_named_vehicles(self) -> None:
        for vehicle in self.spec.vehicles:
            lane = self.road.resolve_lane(vehicle.lane)
            self.names[vehicle.id] = self.world.spawn(
                lane, vehicle.start, vehicle.speed, length=vehicle.vehicle.length, width=vehicle.vehicle.width,
                target_speed=vehicle.speed,
                # a timer that never expires keeps MOBIL off for this vehicle; scripted cut-ins still work
                lane_change_timer=None if vehicle.lane_changes else -np.inf,
            )

    def _spawn_traffic(self) -> None:
        """Place background traffic by density (or a count turned into one), clear of scripted vehicles."""
        traffic, world = self.spec.traffic, self.world
        lane_km = float(world.table.length.sum()) / 1000.0
        density = traffic.density
        if density is None:
            count = traffic.count or 0
            region = traffic.spawn_region
            if region is not None:  # the count is meant for the region only
                lane_km *= min(1.0, (region[1] - region[0]) / max(float(world.table.length.max()), 1.0))
            density = 1.25 * count / lane_km if count else 0.0
        self.density = density
        rows = world.populate(density, traffic.speed_range) if density > 0 else []
        keep = self._clear_of_scripted(rows)
        retries = 3 if traffic.density is None and world.table.road_graph.has_junctions else 0
        for _ in range(retries):
            # Junction roads refuse many places (conflict zones, near the platoons): a count that
            # falls short is placed again, denser, so every episode gets its count.
            if len(keep) >= (traffic.count or 0):
                break
            for row in keep:
                world.despawn(row)
            density *= 2.0
            keep = self._clear_of_scripted(world.populate(density, traffic.speed_range))
        if traffic.density is None:
            surplus = len(keep) - (traffic.count or 0)
            if surplus > 0:
                drop = world.rng.choice(len(keep), size=surplus, replace=False)
                for k in sorted(drop, reverse=True):
                    world.despawn(keep.pop(int(k)))
        self.traffic_rows = keep

    def _clear_of_scripted(self, rows: list[int]) -> list[int]:
        """Despawn traffic placed outside the spawn region or too close to platoon/named vehicles."""
        world, region = self.world, self.spec.traffic.spawn_region
        scripted = np.array(list(self.names.values()), dtype=np.int64)
        keep: list[int] = []
        for row in rows:
            near = np.hypot(world.x[scripted] - world.x[row], world.y[scripted] - world.y[row])
            clearance = np.maximum(20.0, world.speed[scripted])  # about one second of travel
            outside = region is not None and not (region[0] <= world.s[row] <= region[1])
            if outside or np.any(near < clearance):
                world.despawn(row)
            else:
                keep.append(row)
        return keep

    # -- stepping --------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self.world.time)

    @property
    def done(self) -> bool:
        """True once the scenario's duration has elapsed."""
        return self.step_count >= self.spec.steps

    def step(self, actions: np.ndarray | None) -> StepResult:
        """Advance one policy step with (n_controlled, 2) [acceleration, steering] actions."""
        result = StepResult(time=0.0)
        world = self.world
        world.collisions, world.departed = [], []
        if actions is not None:
            actions = np.asarray(actions, dtype=np.float64)
            if actions.shape != (len(self.controlled), 2):
                raise ValueError(f"actions must have shape ({len(self.controlled)}, 2), got {actions.shape}")
        live, n_departed = self.live_members(), 0
        acts = None if actions is None else actions[live]
        for _ in range(world.params.frames_per_step):
            events.apply(self, self.event_state, result.events)
            for listener in self.frame_listeners:
                listener.before_frame(self)
            # members may leave the road mid-step: the World takes actions of live members only
            if len(world.departed) != n_departed:
                live, n_departed = self.live_members(), len(world.departed)
                acts = None if actions is None else actions[live]
            world.frame(acts)
            for listener in self.frame_listeners:
                listener.after_frame(self)
        world.step_count += 1
        result.collisions = [(self.name_of(c.i), self.name_of(c.j)) for c in world.collisions]
        result.departed = [self.name_of(d.row) for d in world.departed]
        if self.spec.traffic.keep_density and self.density > 0:
            world.fill_to_density(self.density, self.spec.traffic.speed_range)
        self.step_count += 1
        self.inbox = self._communicate()
        result.time = self.time
        return result

    def snapshot(self) -> snapshots.Snapshot:
        """An immutable copy of the episode's state: World, channel and comm graph (their random generators
        too), events, plan slots, step count and inbox (snapshot.py). `restore` returns to it bit for bit."""
        return snapshots.take(self)

    def restore(self, state: snapshots.Snapshot) -> None:
        """Return to the state of `snapshot()`: the same actions from here give the same trajectory."""
        snapshots.restore(self, state)

    def live_members(self) -> np.ndarray:
        """(M,) bool: which platoon members are still on the road (not departed or removed)."""
        w, rows = self.world, self.controlled
        return w.active[rows] & (w.vid[rows] == self._member_vids)

    def is_live(self, name: str) -> bool:
        """Whether the named vehicle is still the one in its row (rows are reused after departures)."""
        row = self.names[name]
        return bool(self.world.active[row] and self.world.vid[row] == self._vids[name])

    def name_of(self, row: int) -> str:
        """Event name of a World row ('p0.1', 'lead', or 'traffic#<vehicle id>')."""
        vid = int(self.world.vid[row])
        for name, r in self.names.items():
            if r == row and self._vids[name] == vid:
                return name
        return f"traffic#{vid}"

    def event_report(self) -> list[str]:
        """Every event's outcome so far: fired (``cut_in@12.33s``) or why not (events.py), in order."""
        return self.event_state.log + events.unfired(self, self.event_state)

    def comm_ids(self, names: list[str]) -> list[int]:
        """Comm ids of member names and of every member of named platoons."""
        agent_names = self.agent_names
        ids: list[int] = []
        for name in names:
            if name in agent_names:
                ids.append(agent_names.index(name))
            else:  # a platoon id: all its members
                ids.extend(i for i, n in enumerate(agent_names) if n.split(".")[0] == name)
        return ids

    def _communicate(self) -> Inbox:
        rows = self.controlled
        w = self.world
        step = self.step_count
        silenced = self.channel.silenced(step)
        x, y = w.x[rows], w.y[rows]
        positions = np.empty((len(rows), 2))
        positions[:, 0] = x
        positions[:, 1] = y
        self.comm_graph.update(positions, self.live_members(), silenced)
        payload = pack_messages(
            x, y, w.heading[rows], w.speed[rows], w.accel[rows], w.length[rows],
            plan=self.plan_slots, plan_dim=self.spec.comms.plan_dim,
        )
        self.channel.send(step, payload, self.comm_graph.adjacency())
        return self.channel.receive(step)
