"""Top-down replay GIFs of a recorded episode, drawn from its stored boxes (no simulation).

The road comes from the scenario's lane network (`diffplatoon.sim.roads`) and is drawn with
highway-env's `RoadGraphics`; the vehicles are the boxes of an `episode_data.Replay`, coloured as the live
renderer (`diffplatoon.sim.render`) colours them: one colour per platoon with the leader
outlined darker, traffic grey, crashed vehicles red. The camera fits the whole road on
intersections and roundabouts and otherwise follows the platoon members present at each step.
"""

from __future__ import annotations

import os
import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402
from highway_env.road.graphics import RoadGraphics, WorldSurface  # noqa: E402
from highway_env.road.road import Road  # noqa: E402

from diffplatoon.evaluation.episode_data import EpisodeData, Replay  # noqa: E402
from diffplatoon.scenarios import ScenarioSpec  # noqa: E402
from diffplatoon import geometry  # noqa: E402
from diffplatoon.sim import render, roads  # noqa: E402

_FIT_ROAD_TYPES = ("intersection", "roundabout")
_FIT_SIZE, _FOLLOW_SIZE = (560, 560), (800, 260)  # [px] frame sizes
_FOLLOW_SCALE = 3.0  # [px/m] zoom of the following camera
_LOOKAHEAD = 20.0  # [m] the camera centre leads the members along x


def _road(spec: ScenarioSpec) -> tuple[Road, tuple[float, float, float, float]]:
    """highway-env road of the scenario's lane network (no vehicles) and the drivable area's bounds."""
    return Road(network=roads.build_network(spec.road), vehicles=[]), roads.drivable_area(spec.road).bounds


def frames(spec: ScenarioSpec, replay: Replay, dt: float) -> list[np.ndarray]:
    """(H, W, 3) uint8 frames, one per stored step."""
    pygame.font.init()
    font = pygame.font.Font(None, 22)
    fit = spec.road.type in _FIT_ROAD_TYPES
    size = _FIT_SIZE if fit else _FOLLOW_SIZE
    surf = WorldSurface(size, 0, pygame.Surface(size))
    surf.centering_position = [0.5, 0.5]
    road, (minx, miny, maxx, maxy) = _road(spec)
    road_centre = np.array([(minx + maxx) / 2, (miny + maxy) / 2])
    fit_scale = min(size[0] / (maxx - minx + 10.0), size[1] / (maxy - miny + 10.0))
    corners = geometry.box_corners(replay.x, replay.y, replay.heading, replay.length, replay.width)  # (T, N, 4, 2)
    is_member = replay.platoon >= 0
    out = []
    for k in range(replay.x.shape[0]):
        present = np.isfinite(replay.x[k])
        if fit:
            centre, surf.scaling = road_centre, fit_scale
        else:
            follow = present & is_member if (present & is_member).any() else present
            x, y = replay.x[k, follow].astype(np.float64), replay.y[k, follow].astype(np.float64)
            centre = (np.array([(x.min() + x.max()) / 2 + _LOOKAHEAD, (y.min() + y.max()) / 2])
                      if x.size else road_centre)
            surf.scaling = _FOLLOW_SCALE
        surf.move_display_window_to(centre)
        RoadGraphics.display(road, surf)
        for n in np.flatnonzero(present):
            _draw_box(surf, corners[k, n], replay, n, bool(replay.crashed[k, n]))
        surf.blit(font.render(f"t = {k * dt:5.1f} s", True, render.TEXT_COLOUR), (8, 6))
        out.append(np.ascontiguousarray(pygame.surfarray.array3d(surf).transpose(1, 0, 2)))
    return out


def _draw_box(surf: WorldSurface, corners: np.ndarray, replay: Replay, n: int, crashed: bool) -> None:
    if crashed:
        colour = render.CRASHED_COLOUR
    elif replay.platoon[n] >= 0:
        colour = render.PLATOON_COLOURS[int(replay.platoon[n]) % len(render.PLATOON_COLOURS)]
    else:
        colour = render.TRAFFIC_COLOUR
    points = [surf.pos2pix(float(cx), float(cy)) for cx, cy in corners]
    pygame.draw.polygon(surf, colour, points)
    pygame.draw.polygon(surf, render.OUTLINE_COLOUR, points, 2 if replay.member[n] == 0 else 1)


def gif(spec: ScenarioSpec, data: EpisodeData, fps: float | None = None) -> bytes | None:
    """GIF bytes of an episode's replay at `fps` (default: real time), or None when none was stored."""
    if data.replay is None or data.replay.x.shape[0] == 0:
        return None
    return render.encode_gif(frames(spec, data.replay, data.dt), fps or 1.0 / data.dt)

