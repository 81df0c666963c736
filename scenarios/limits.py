"""The numbers of the validation contract: bounds that keep every accepted scenario buildable
and runnable in seconds.

The schema, the road specs, the semantic checks and the sweep expansion all read their limits
here, so a bound is stated once. The per-step budget (`MAX_STEP_WORK`) comes from measurement:
a frame costs about a fixed 1 ms plus 3 us per vehicle on 2 cores, and the budget keeps 200
policy steps near 5 s, half the 10 s the fuzz tests allow.
"""

from __future__ import annotations

MAX_NUMBER = 1e9  # largest magnitude of any float in a scenario file
MAX_INT = 2**63 - 1  # integers must fit an int64

MAX_SPEED = 60.0  # [m/s] any speed, speed range or speed limit
MAX_DURATION = 3600.0  # [s] an episode, and anything timed inside one
MAX_WEIGHT = 1000.0  # largest magnitude of a reward weight

MIN_LENGTH = 1.0  # [m] any length or radius parameter of a road (shorter ones vanish in rounding)
MAX_LANE_LENGTH = 20_000.0  # [m] one lane, and any length parameter of a road
MAX_ROAD_LENGTH = 200_000.0  # [m] all lanes together
MAX_RADIUS = 1_000.0  # [m] any curve radius
MAX_LANE_WIDTH = 10.0  # [m] (the lower bound is the vehicle width, `geometry.VEHICLE_WIDTH`)
MAX_PRIORITY = 1_000  # |right-of-way level| of a lane

MAX_TRAFFIC = 1000  # background vehicles at the start asked for by count, and named vehicles
MAX_DENSITY = 150.0  # [vehicles/km/lane] asked for, or implied by a count in a spawn region
MAX_PLACED = 1.25 * MAX_TRAFFIC  # vehicles `World.populate` may place at the start
MAX_CONTROLLED = 64  # platoon members in all: each is an agent with its own observation every step
MAX_FRAMES_PER_STEP = 20  # simulation_frequency / policy_frequency
FRAME_OVERHEAD = 300  # [vehicles] the fixed cost of a frame, expressed in vehicles
MAX_STEP_WORK = 7500  # [vehicle-frames] frames per step x (vehicles + FRAME_OVERHEAD)
MAX_VARIANTS = 1000  # sweep grid points; each is validated on load, with its road built
