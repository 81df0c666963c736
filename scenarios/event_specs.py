"""Scripted events of a scenario: what happens to which named vehicle, at a time or on a `Condition`.

Vehicle names (`ScenarioSpec.vehicle_names`): ``<platoon id>.<k>`` (member k, 0 the leader),
``<platoon id>`` (every member, ``comm_outage`` only) or a ``vehicles:`` entry. The simulator
applies them (`diffplatoon.sim.events`); `semantics` checks the names they use.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from diffplatoon.scenarios.limits import MAX_DURATION, MAX_NUMBER, MAX_SPEED
from diffplatoon.scenarios.strict import Strict


CONDITION_QUANTITIES = ("distance", "gap", "time_gap", "speed")


class Condition(Strict):
    """A trigger condition on named vehicles: exactly one quantity and exactly one bound.

    Quantities (each names platoon members ``p0.1`` or vehicles from ``vehicles:``):
        ``distance: [a, b]``  centre-to-centre distance [m]
        ``gap: [a, b]``       bumper-to-bumper gap along a's heading [m] (negative when level)
        ``time_gap: [a, b]``  that gap divided by the speed of the rear one [s] (0 at overlap,
                              infinite when the rear one stands)
        ``speed: a``          speed [m/s]
    The condition holds while the quantity is ``below`` (strictly) or ``above`` (strictly) the bound,
    e.g. ``when: {gap: [cutter, p0.1], below: 15}``.
    """

    distance: tuple[str, str] | None = Field(None, description="Centre-to-centre distance of two vehicles [m].")
    gap: tuple[str, str] | None = Field(None, description="Bumper-to-bumper gap along the first one's heading [m].")
    time_gap: tuple[str, str] | None = Field(None, description="Gap over the rear vehicle's speed [s].")
    speed: str | None = Field(None, description="Speed of one vehicle [m/s].")
    below: float | None = Field(None, ge=-MAX_NUMBER, le=MAX_NUMBER,
                                description="Holds while the quantity is below this.")
    above: float | None = Field(None, ge=-MAX_NUMBER, le=MAX_NUMBER,
                                description="Holds while the quantity is above this.")

    @model_validator(mode="after")
    def _one_quantity_one_bound(self) -> "Condition":
        given = [k for k in CONDITION_QUANTITIES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(CONDITION_QUANTITIES)}, got "
                             f"{', '.join(given) if given else 'none'}")
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below, above")
        return self

    @property
    def quantity(self) -> str:
        """Which quantity the condition reads."""
        return next(k for k in CONDITION_QUANTITIES if getattr(self, k) is not None)

    @property
    def vehicles(self) -> list[str]:
        """The vehicle names the condition reads."""
        ref = getattr(self, self.quantity)
        return [ref] if isinstance(ref, str) else list(ref)


class _Event(Strict):
    at: float | None = Field(None, ge=0, le=MAX_DURATION, description="Simulation time the event fires [s].")
    when: Condition | None = Field(None, description="Fire the first frame this condition holds (instead of `at`).")

    @model_validator(mode="after")
    def _at_or_when(self) -> "_Event":
        if (self.at is None) == (self.when is None):
            raise ValueError("give exactly one of at (a time) or when (a condition)")
        return self


class BrakeEvent(_Event):
    """A vehicle brakes at a fixed deceleration for a duration, then resumes normal driving."""

    type: Literal["brake"]
    vehicle: str = Field(..., description="Name of the braking vehicle (a platoon member or a `vehicles:` entry).")
    deceleration: float = Field(6.0, gt=0, le=15, description="Deceleration, positive [m/s²].")
    duration: float = Field(3.0, gt=0, le=MAX_DURATION, description="How long it brakes [s].")


class CutInEvent(_Event):
    """A scripted vehicle cuts into the gap in front of a named vehicle on a neighbouring lane.

    From its trigger the cutter adjusts its speed towards the middle of that gap; it changes lane
    in the first frame where, now and one second ahead at constant speeds, the bumper-to-bumper
    gaps to the vehicle it cuts in front of and to that vehicle's leader are both at least
    `min_gap`. Without such a frame within `within` seconds it gives up and resumes its own
    speed; the step's and the episode's event lists say which happened
    (``cut_in@12.33s`` / ``cut_in: no gap by t=14s``).
    """

    type: Literal["cut_in"]
    vehicle: str = Field(..., description="Name of the vehicle that cuts in (a `vehicles:` entry).")
    ahead_of: str = Field(..., description="Name of the vehicle whose gap it cuts into.")
    min_gap: float = Field(
        5.0, ge=0, le=100,
        description="Smallest bumper-to-bumper gap behind and ahead of the cutter that it cuts into [m]; "
                    "lower it for an aggressive cut-in.",
    )
    within: float = Field(10.0, gt=0, le=MAX_DURATION, description="How long it may look for the gap [s].")


class CommOutageEvent(_Event):
    """The named vehicles neither send nor receive V2V messages for a duration."""

    type: Literal["comm_outage"]
    vehicles: list[str] = Field(..., min_length=1, description="Member names or platoon ids that go silent.")
    duration: float = Field(5.0, gt=0, le=MAX_DURATION, description="Outage length [s].")


class SpeedChangeEvent(_Event):
    """A vehicle's desired speed changes (it then accelerates or brakes under IDM)."""

    type: Literal["speed_change"]
    vehicle: str = Field(..., description="Name of the vehicle.")
    speed: float = Field(..., ge=0, le=MAX_SPEED, description="New desired speed [m/s].")


EventSpec = Annotated[
    Union[BrakeEvent, CutInEvent, CommOutageEvent, SpeedChangeEvent], Field(discriminator="type")
]
