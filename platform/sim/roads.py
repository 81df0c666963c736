"""Road builders: a road spec's lane shapes as a highway-env `RoadNetwork`, and its drivable area.

`diffplatoon.scenarios` describes every lane as plain data (`StraightShape`, `SineShape`,
`ArcShape`); `build_network(road)` maps each shape one to one onto highway-env's
`StraightLane`, `SineLane` or `CircularLane` with the same arguments, adding them in the
spec's lane order so the lane ids are the spec's. `drivable_area(road)` is the union of
the lane surfaces (shapely), for off-road checks and the renderer's camera. Both are computed
once per distinct spec (`diffplatoon.scenarios.memo`) and shared: treat them as read-only.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from highway_env.road.lane import AbstractLane, CircularLane, LineType, SineLane, StraightLane
from highway_env.road.road import RoadNetwork

from diffplatoon.scenarios.lane_shapes import ArcShape, LaneShape, SineShape, StraightShape
from diffplatoon.scenarios.memo import cached_on_spec
from diffplatoon.scenarios.road_base import RoadBase

_SAMPLE_STEP = 1.0  # [m] centre-line sampling of curved lanes for the drivable area
_SEAM = 0.05  # [m] each lane surface is extended this much at both ends to close seams

_LINE_TYPES = {"none": LineType.NONE, "striped": LineType.STRIPED, "continuous": LineType.CONTINUOUS,
               "continuous_line": LineType.CONTINUOUS_LINE}


def make_lane(shape: LaneShape) -> AbstractLane:
    """The highway-env lane a shape describes."""
    style = dict(width=shape.width, line_types=[_LINE_TYPES[k] for k in shape.line_types], forbidden=shape.forbidden,
                 speed_limit=shape.speed_limit, priority=shape.priority)
    if isinstance(shape, SineShape):
        return SineLane(shape.start, shape.end, shape.amplitude, shape.pulsation, shape.phase, **style)
    if isinstance(shape, StraightShape):
        return StraightLane(shape.start, shape.end, **style)
    if isinstance(shape, ArcShape):
        return CircularLane(shape.center, shape.radius, shape.start_phase, shape.end_phase, shape.clockwise, **style)
    raise TypeError(f"expected a straight, sine or arc lane shape, got {type(shape).__name__}")


@cached_on_spec
def build_network(road: RoadBase) -> RoadNetwork:
    """The highway-env lane network of `road` (lane indices as `road.lane_shapes()`)."""
    network = RoadNetwork()
    for (frm, to, _), shape in road.lane_shapes().items():
        network.add_lane(frm, to, make_lane(shape))
    return network


@cached_on_spec
def drivable_area(road: RoadBase) -> shapely.Geometry:
    """Union of all lane surfaces of `road` (shapely)."""
    surfaces = []
    for lane in build_network(road).lanes_dict().values():
        curved = isinstance(lane, (SineLane, CircularLane))
        n = max(2, int(math.ceil(lane.length / _SAMPLE_STEP)) + 1) if curved else 2
        s = np.linspace(-_SEAM, lane.length + _SEAM, n)
        points = np.array([lane.position(float(si), 0.0) for si in s])
        surfaces.append(shapely.buffer(shapely.LineString(points), lane.width_at(0.0) / 2, cap_style="flat", join_style="round"))
    return shapely.union_all(surfaces)


__all__ = ["build_network", "drivable_area", "make_lane"]
