"""The one source of measure thresholds: the `Thresholds` dataclass and how a scenario sets them.

`Thresholds.for_spec(spec)` is the only place a scenario's safety settings and platoon spacing
policy become measure thresholds; the episode measures with it, the runner stores it per
scenario in ``run.json`` and the report prints it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from diffplatoon.scenarios.schema import BrakeEvent, ScenarioSpec, SpeedChangeEvent


@dataclass(frozen=True)
class Thresholds:
    """Thresholds and platoon parameters used by ``measures.episode_summary``; the report prints them.

    Attributes:
        ttc: TTC threshold [s] for TET/TIT; SUMO SSM conflict threshold TTC < 3.0 s.
        ttc_horizon: 2-D TTC look-ahead [s]; summary TTCs are capped here so they stay finite
            (WOSAC clips TTC at 5 s; nuPlan's config uses 3 s, its docs 5 s).
        drac: DRAC conflict threshold [m/s^2] (SUMO: DRAC > 3.0); counted as exposure time.
        mdrac_prt: perception-reaction time [s] for MDRAC (SUMO default 1.0 s).
        min_gap: near-miss threshold [m], the scenario's ``safety.min_gap``: an episode in which
            a member's bumper-to-bumper gap fell below it without a collision is a near miss.
            (Gaps and time gaps are the plain bumper-to-bumper clearance, as SUMO's SGAP/TGAP.)
        hard_brake: deceleration [m/s^2] beyond which braking is "hard"; nuPlan's comfort bound
            on longitudinal acceleration is -4.05 m/s^2.
        time_gap: desired platoon time gap h [s] (Plexe Ploeg CACC default 0.5 s).
        standstill: platoon standstill distance r [m] (Plexe default 2 m).
        split_gap: gap to the predecessor [m] above which a platoon counts as split (project
            convention, no standard value).
        string_tol: string stable iff every norm ratio <= 1 + string_tol.
        disturbance_step: first step of the string-stability window (the leader disturbance).
        goal_radius: distance [m] to the goal that counts as arrived.
    """

    ttc: float = 3.0
    ttc_horizon: float = 5.0
    drac: float = 3.0
    mdrac_prt: float = 1.0
    min_gap: float = 2.0
    hard_brake: float = 4.05
    time_gap: float = 0.5
    standstill: float = 2.0
    split_gap: float = 60.0
    string_tol: float = 0.01
    disturbance_step: int = 0
    goal_radius: float = 5.0

    @classmethod
    def for_spec(cls, spec: ScenarioSpec) -> Thresholds:
        """Thresholds of a `ScenarioSpec`: its safety settings and its first platoon's spacing policy.

        The string-stability window starts at the first timed (`at:`) brake or speed-change event.
        """
        platoon = spec.platoons[0]
        disturbance = [e.at for e in spec.events if isinstance(e, (BrakeEvent, SpeedChangeEvent)) and e.at is not None]
        return cls(
            ttc=spec.safety.ttc_threshold, drac=spec.safety.drac_threshold, hard_brake=spec.safety.hard_brake,
            min_gap=spec.safety.min_gap,
            time_gap=platoon.desired_time_gap, standstill=platoon.standstill_gap,
            disturbance_step=int(round(min(disturbance) * spec.policy_frequency)) if disturbance else 0,
        )

    def as_dict(self) -> dict[str, float]:
        """Plain dict of the thresholds (for the report and the records)."""
        return dataclasses.asdict(self)
