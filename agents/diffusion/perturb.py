"""State perturbation for data augmentation: platoon members moved off the expert's path, bounded and seeded.

`perturb_members(sim, rng, bounds)` offsets every live platoon member of a running `Simulation` by
independent uniform draws: sideways across its lane (``lateral`` [m]), in heading (``heading`` [rad]) and
in speed (``speed`` [m/s], never below 0), through `World.set_pose` (each moved member's lane is picked
again, highway-env's rule). A draw that makes a member's body overlap another vehicle is refused (returns
False): the caller restores its snapshot. The V2V inbox is left as it was received, so the members' own
messages still carry their pose before the offset (as a message one step old would).

Used by dagger.py: from a snapshot of a visited state, the members are perturbed, the expert drives H steps
and its future (which returns to its own path) labels the perturbed state; then the snapshot is restored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffplatoon import geometry
from diffplatoon.sim.simulation import Simulation


@dataclass(frozen=True)
class PerturbBounds:
    """Largest offset of each kind (uniform in [−bound, bound]); 0 turns a kind off."""

    lateral: float = 0.5  # [m] across the member's lane
    heading: float = 0.05  # [rad]
    speed: float = 2.0  # [m/s]

    def __post_init__(self) -> None:
        if min(self.lateral, self.heading, self.speed) < 0:
            raise ValueError(f"perturbation bounds must be >= 0, got {self}")


def perturb_members(sim: Simulation, rng: np.random.Generator, bounds: PerturbBounds) -> bool:
    """Offset every live, uncrashed member of ``sim`` (module docstring); False when one then overlaps a vehicle.

    Draws three (M,) uniform arrays from ``rng`` whatever happens, so a stream of perturbations is
    reproducible."""
    w = sim.world
    rows = sim.controlled
    m = len(rows)
    offsets = rng.uniform(-1.0, 1.0, size=(3, m)) * np.array([bounds.lateral, bounds.heading, bounds.speed])[:, None]
    moved = sim.live_members() & ~w.crashed[rows]
    for k in np.flatnonzero(moved):
        row = int(rows[k])
        lane = np.array([w.lane[row]])
        x, y = w.table.position(lane, np.array([w.s[row]]), np.array([w.r[row] + offsets[0, k]]))
        w.set_pose(row, float(x[0]), float(y[0]), float(w.heading[row] + offsets[1, k]),
                   max(0.0, float(w.speed[row] + offsets[2, k])))
    live = w.active_rows()
    pairs = geometry.overlapping_pairs(w.x[live], w.y[live], w.heading[live], w.length[live], w.width[live])
    touched = live[pairs.ravel()] if len(pairs) else np.empty(0, dtype=np.intp)
    return not np.isin(rows[moved], touched).any()
