"""The scenario schema: pydantic v2 models for everything a scenario YAML may say.

One `ScenarioSpec` describes a road (`diffplatoon.scenarios.roads`), background
traffic, the platoons to spawn, individually placed traffic vehicles that scripted events
can name, the V2V channel, observation/action/reward settings, safety thresholds, scripted
events and an optional parameter sweep. Every model forbids unknown keys, so a typo is an
error rather than a silently ignored setting.

Vehicle names used by events:
    ``<platoon id>.<k>``  member k of a platoon (0 is the leader), e.g. ``p0.0``
    ``<platoon id>``      every member of a platoon (``comm_outage`` only)
    ``<vehicle id>``      an entry of ``vehicles:``
An event fires at a time (``at:``) or on a condition (``when:``, see `Condition`), never both.
Units are SI: metres, seconds, m/s, m/s², radians.

The event models live in `event_specs` and the `Strict` base in `strict`; both are re-exported here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, StrictInt, model_validator

from diffplatoon.scenarios.event_specs import (CONDITION_QUANTITIES, BrakeEvent, CommOutageEvent, Condition,
                                              CutInEvent, EventSpec, SpeedChangeEvent)
from diffplatoon.scenarios.limits import (
    MAX_CONTROLLED,
    MAX_DENSITY,
    MAX_DURATION,
    MAX_INT,
    MAX_SPEED,
    MAX_TRAFFIC,
    MAX_WEIGHT,
)
from diffplatoon.scenarios.roads import HighwayRoad, RoadSpec
from diffplatoon.scenarios.strict import Strict

__all__ = ["CONDITION_QUANTITIES", "ActionSpec", "BrakeEvent", "CommOutageEvent", "CommsSpec", "Condition",
           "CutInEvent", "EventSpec", "IDMParams", "LaneRef", "MobilParams", "NamedVehicleSpec", "ObservationSpec",
           "PlatoonSpec", "RewardSpec", "SafetySpec", "ScenarioSpec", "SpeedChangeEvent", "Strict", "Topology",
           "TrafficSpec", "VehicleSpec"]

LaneRef = Union[StrictInt, str, tuple[str, str, StrictInt]]
"""A lane: an int (lane id on the road's default spawn edge), a named lane, or [from, to, id]."""

Topology = Union[
    Literal["predecessor_follower", "leader_follower", "predecessor_leader", "bidirectional", "all_to_all"],
    list[tuple[StrictInt, StrictInt]],
]


class VehicleSpec(Strict):
    """Body size and actuation limits of a vehicle."""

    length: float = Field(5.0, gt=0, le=25, description="Body length [m].")
    width: float = Field(2.0, gt=0, le=4, description="Body width [m].")
    max_acceleration: float = Field(4.0, gt=0, le=15, description="Largest forward acceleration [m/s²].")
    max_deceleration: float = Field(8.0, gt=0, le=15, description="Largest braking deceleration, positive [m/s²].")
    max_steering: float = Field(0.6, gt=0, le=1.2, description="Largest front-wheel steering angle [rad].")


class IDMParams(Strict):
    """Intelligent Driver Model parameters; defaults are highway-env's `IDMVehicle` values."""

    a: float = Field(3.0, gt=0, le=10, description="Maximum comfortable acceleration a [m/s²].")
    b: float = Field(5.0, gt=0, le=15, description="Comfortable deceleration b, positive [m/s²].")
    T: float = Field(1.5, ge=0, le=5, description="Desired time headway T [s].")
    s0: float = Field(5.0, ge=0, le=30, description="Jam distance s0, bumper to bumper [m].")
    delta: float = Field(4.0, gt=0, le=10, description="Acceleration exponent δ.")
    delta_range: tuple[float, float] = Field(
        (3.5, 4.5), description="Per-vehicle δ is drawn uniformly from this range (highway-env's randomisation)."
    )
    acc_max: float = Field(6.0, gt=0, le=15, description="Hard clip on IDM acceleration [m/s²].")

    @model_validator(mode="after")
    def _delta_range(self) -> "IDMParams":
        lo, hi = self.delta_range
        if not 0 < lo <= hi <= 10:
            raise ValueError(f"delta_range must satisfy 0 < lo <= hi <= 10, got {list(self.delta_range)}")
        return self


class MobilParams(Strict):
    """MOBIL lane-change parameters; defaults are highway-env's."""

    enabled: bool = Field(True, description="Whether traffic changes lanes at all.")
    politeness: float = Field(0.0, ge=0, le=1, description="Weight p of the followers' disadvantage.")
    min_acc_gain: float = Field(0.2, ge=0, le=5, description="Acceleration gain threshold Δa_th [m/s²].")
    max_braking_imposed: float = Field(
        2.0, ge=0, le=15, description="Largest deceleration imposed on the new follower, b_safe [m/s²]."
    )
    lane_change_delay: float = Field(1.0, gt=0, le=10, description="Time between lane-change decisions [s].")


class TrafficSpec(Strict):
    """Background traffic: IDM/MOBIL vehicles spawned by count or by density."""

    count: StrictInt | None = Field(None, ge=0, le=MAX_TRAFFIC, description="Number of traffic vehicles at the start.")
    density: float | None = Field(
        None, ge=0, le=MAX_DENSITY, description="Traffic density [vehicles/km/lane]; used when `count` is not given."
    )
    speed_range: tuple[float, float] = Field((20.0, 28.0), description="Initial/desired speeds drawn from [lo, hi] [m/s].")
    spawn_region: tuple[float, float] | None = Field(
        None, description="Spawn only between these longitudinal positions on each lane [m]; default the whole lane."
    )
    keep_density: bool = Field(True, description="Spawn new vehicles at road entries to hold the initial density.")
    vehicle: VehicleSpec = Field(default_factory=VehicleSpec, description="Size and limits of traffic vehicles.")
    idm: IDMParams = Field(default_factory=IDMParams, description="Car-following parameters.")
    mobil: MobilParams = Field(default_factory=MobilParams, description="Lane-change parameters.")

    @model_validator(mode="after")
    def _count_or_density(self) -> "TrafficSpec":
        if self.count is not None and self.density is not None:
            raise ValueError("give either count or density, not both")
        lo, hi = self.speed_range
        if not 0 <= lo <= hi <= MAX_SPEED:
            raise ValueError(f"speed_range must satisfy 0 <= lo <= hi <= {MAX_SPEED:g}, got {list(self.speed_range)}")
        if self.spawn_region is not None:
            start, end = self.spawn_region
            room = self.vehicle.length + self.idm.s0  # one vehicle and its jam gap
            if not 0 <= start or end - start < room:
                raise ValueError(
                    f"spawn_region must satisfy 0 <= start and end - start >= {room:g} m (a vehicle plus "
                    f"its jam distance s0), got {list(self.spawn_region)}"
                )
        return self


class PlatoonSpec(Strict):
    """A platoon of connected vehicles controlled by one policy; member 0 leads."""

    id: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="Name used by events and reports.")
    size: StrictInt = Field(4, ge=1, le=16, description="Number of members.")
    lane: LaneRef = Field(0, description="Lane the platoon starts on (int id, lane name or [from, to, id]).")
    start: float = Field(100.0, ge=0, description="Leader's longitudinal position on its lane [m].")
    speed: float = Field(25.0, ge=0, le=MAX_SPEED, description="Initial speed of every member [m/s].")
    time_gap: float | None = Field(
        None, gt=0, le=5, description="Desired time gap h [s]; spawn gap = standstill_gap + h·speed."
    )
    spacing: float | None = Field(None, gt=0, le=200, description="Fixed bumper-to-bumper spawn gap [m].")
    standstill_gap: float = Field(2.0, ge=0, le=20, description="Gap r at standstill in the spacing policy [m].")
    route: list[LaneRef] | None = Field(None, description="Explicit lane sequence to follow.")
    destination: str | None = Field(None, description="Road node to reach; the route is planned on the lane graph.")
    topology: Topology | None = Field(None, description="V2V topology of this platoon; default `comms.topology`.")
    vehicle: VehicleSpec = Field(default_factory=VehicleSpec, description="Members' size and actuation limits.")

    @model_validator(mode="after")
    def _gap_policy(self) -> "PlatoonSpec":
        if self.time_gap is not None and self.spacing is not None:
            raise ValueError("give either time_gap or spacing, not both")
        if self.route is not None and self.destination is not None:
            raise ValueError("give either route or destination, not both")
        return self

    @property
    def desired_time_gap(self) -> float:
        """Time gap the platoon's controllers aim for [s] (1.0 s when only `spacing` is given)."""
        return self.time_gap if self.time_gap is not None else 1.0

    @property
    def spawn_gap(self) -> float:
        """Bumper-to-bumper gap between consecutive members at spawn [m]."""
        if self.spacing is not None:
            return self.spacing
        return self.standstill_gap + self.desired_time_gap * self.speed

    def member_names(self) -> list[str]:
        """Event names of the members, leader first."""
        return [f"{self.id}.{k}" for k in range(self.size)]


class NamedVehicleSpec(Strict):
    """A single traffic vehicle placed by hand, so events can refer to it by name."""

    id: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="Name used by events.")
    lane: LaneRef = Field(0, description="Lane (int id, lane name or [from, to, id]).")
    start: float = Field(..., ge=0, description="Longitudinal position on the lane [m].")
    speed: float = Field(25.0, ge=0, le=MAX_SPEED, description="Initial and desired speed [m/s].")
    lane_changes: bool = Field(False, description="Whether MOBIL may move it (scripted vehicles default to no).")
    vehicle: VehicleSpec = Field(default_factory=VehicleSpec, description="Size and limits.")


class CommsSpec(Strict):
    """The V2V channel shared by all platoons."""

    topology: Topology = Field("predecessor_leader", description="Who hears whom inside a platoon.")
    range: float = Field(300.0, gt=0, le=5000, description="Radio range [m]; links beyond it are down.")
    latency: StrictInt = Field(0, ge=0, le=50, description="Delivery delay in policy steps.")
    drop_probability: float = Field(0.0, ge=0, le=1, description="Independent drop probability per message.")
    inter_platoon: bool = Field(False, description="Members of different platoons within range also hear each other.")
    max_age: StrictInt = Field(10, ge=1, le=1000, description="Messages older than this many steps expire from inboxes.")
    plan_dim: StrictInt = Field(8, ge=0, le=64, description="Floats per message reserved for a planned-trajectory summary.")


class ObservationSpec(Strict):
    """What each controlled vehicle observes (see `diffplatoon.sim.observation` for the layout)."""

    neighbours: StrictInt = Field(8, ge=1, le=64, description="K nearest vehicles reported.")
    range: float = Field(100.0, gt=0, le=500, description="Perception radius [m].")
    lane_points: StrictInt = Field(5, ge=1, le=32, description="Centre-line points ahead on the current lane.")
    lane_point_spacing: float = Field(10.0, gt=0, le=100, description="Distance between those points [m].")


class ActionSpec(Strict):
    """Continuous [acceleration, steering] actions of platoon members, clipped to the vehicle limits."""

    normalized: bool = Field(
        False, description="If true, actions are in [-1, 1] and scaled to the limits; else in SI units."
    )


class RewardSpec(Strict):
    """Per-agent reward weights; each term (its magnitude, when it pays, why its default) is in the
    table of `diffplatoon.envs.rewards`. Rates are per second, so they do not depend on
    `policy_frequency`. Changed meanings: `progress` is in seconds at the speed limit (was metres / 10),
    `collision` scales the most a member can gain in the episode (was an absolute penalty),
    `gap_keeping` weighs the change of the time-gap error (was the error on every step), and
    `offroad` is per second off the road (was once)."""

    progress: float = Field(1.0, ge=-MAX_WEIGHT, le=MAX_WEIGHT,
                            description="Per second of driving at the speed limit: metres along the route / "
                                        "lane speed limit, at most dt a step, nothing off the road.")
    collision: float = Field(-1.0, ge=-MAX_WEIGHT, le=-1.0,
                             description="Once, when the member crashes, times 1 + the most the other terms can "
                                         "pay a member in the episode; at most -1, so a crash never pays.")
    gap_keeping: float = Field(-0.5, ge=-MAX_WEIGHT, le=0,
                               description="Times the increase of the time-gap error [s] (clipped at 5 s) over the "
                                           "step: closing up pays, splitting and regrouping nets nothing.")
    comfort: float = Field(-0.02, ge=-MAX_WEIGHT, le=0, description="Times squared jerk / 100 plus squared steering rate.")
    lane_keeping: float = Field(-0.1, ge=-MAX_WEIGHT, le=0, description="Times |lateral offset| / half lane width.")
    offroad: float = Field(-5.0, ge=-MAX_WEIGHT, le=0,
                           description="Per second the member's centre is off the drivable area; at most -|progress|.")
    lane_departure: float = Field(-2.0, ge=-MAX_WEIGHT, le=0,
                                  description="Per second times the fraction of the body's corners off the "
                                              "drivable area.")
    merge: float = Field(10.0, ge=0, le=MAX_WEIGHT,
                         description="Once, when a member with a merge task first reaches a target lane (the "
                                     "evaluation's merge-success rule) or its destination.")

    @model_validator(mode="after")
    def _leaving_the_road_never_pays(self) -> "RewardSpec":
        if self.offroad > -abs(self.progress):
            raise ValueError(f"expected offroad <= -|progress| = {-abs(self.progress):g} (a second off the road "
                             f"must cost at least what a second of progress earns), got {self.offroad:g}")
        return self


class SafetySpec(Strict):
    """Thresholds of the surrogate safety measures (SUMO SSM defaults unless stated)."""

    ttc_threshold: float = Field(3.0, gt=0, le=20, description="TTC below this counts as a conflict [s].")
    drac_threshold: float = Field(3.0, gt=0, le=20, description="DRAC above this counts as a conflict [m/s²].")
    pet_threshold: float = Field(2.0, gt=0, le=20, description="PET below this counts as a conflict [s].")
    hard_brake: float = Field(4.0, gt=0, le=15, description="Deceleration beyond this is a hard-braking event [m/s²].")
    min_gap: float = Field(2.0, ge=0, le=50, description="Gap below this is reported as a near miss [m].")
    crashed_stay: bool = Field(True, description="Crashed vehicles stop and stay on the road as obstacles.")
    terminate_on_collision: bool = Field(True, description="A crashed platoon member ends its agent's episode.")


class ScenarioSpec(Strict):
    """A complete scenario: road, traffic, platoons, channel, events and settings."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.=,-]+$", description="Scenario name (catalogue key).")
    description: str = Field("", description="What the scenario tests, in a sentence or two.")
    seed: StrictInt = Field(0, ge=0, le=MAX_INT, description="Base seed; an episode's draws are seeded by (seed, episode index).")
    duration: float = Field(40.0, gt=0, le=MAX_DURATION, description="Episode length [s].")
    simulation_frequency: StrictInt = Field(15, ge=1, le=200, description="Physics frames per second [Hz].")
    policy_frequency: StrictInt = Field(5, ge=1, le=200, description="Decisions per second [Hz]; divides the former.")
    road: RoadSpec = Field(default_factory=HighwayRoad, description="The road network.")
    traffic: TrafficSpec = Field(default_factory=TrafficSpec, description="Background traffic.")
    platoons: list[PlatoonSpec] = Field(..., min_length=1, max_length=MAX_CONTROLLED, description="Platoons of controlled vehicles.")
    vehicles: list[NamedVehicleSpec] = Field(default_factory=list, max_length=MAX_TRAFFIC, description="Hand-placed traffic vehicles.")
    comms: CommsSpec = Field(default_factory=CommsSpec, description="V2V channel.")
    observation: ObservationSpec = Field(default_factory=ObservationSpec, description="Observation settings.")
    action: ActionSpec = Field(default_factory=ActionSpec, description="Action settings.")
    reward: RewardSpec = Field(default_factory=RewardSpec, description="Reward weights.")
    safety: SafetySpec = Field(default_factory=SafetySpec, description="Safety thresholds.")
    events: list[EventSpec] = Field(default_factory=list, max_length=1000, description="Scripted events, at a time or on a condition.")
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Parameter grid: dotted field path -> values, e.g. {'traffic.density': [10, 20]}.",
    )

    @model_validator(mode="after")
    def _frequencies(self) -> "ScenarioSpec":
        if self.simulation_frequency % self.policy_frequency:
            raise ValueError(
                f"simulation_frequency ({self.simulation_frequency}) must be a multiple of "
                f"policy_frequency ({self.policy_frequency})"
            )
        return self

    @property
    def frames_per_step(self) -> int:
        """Simulation frames per policy step."""
        return self.simulation_frequency // self.policy_frequency

    @property
    def steps(self) -> int:
        """Policy steps in one episode."""
        return int(round(self.duration * self.policy_frequency))

    @property
    def num_controlled(self) -> int:
        """Total number of platoon members."""
        return sum(p.size for p in self.platoons)

    def vehicle_names(self) -> list[str]:
        """Every name an event may use."""
        names = [n for p in self.platoons for n in p.member_names()]
        return names + [p.id for p in self.platoons] + [v.id for v in self.vehicles]
