"""Top-down RGB frames of a running `Simulation`, drawn off-screen with highway-env's graphics, and GIFs of them.

Lanes and their markings come from highway-env's own `RoadGraphics` on a `WorldSurface` (a
plain pygame Surface: no window and no display driver is needed; setting
SDL_VIDEODRIVER=dummy would make highway-env draw black frames). Vehicles are drawn as
oriented boxes straight from the World's arrays: platoon members in one colour per platoon
(the leader with a dark outline), traffic grey, crashed vehicles red. Live V2V links of
`sim.comm_graph.graph` are lines between the two vehicles (yellow inside a platoon, thin
orange between platoons); the top-left corner shows the
simulation time.

Camera: on intersections and roundabouts the whole road is fitted in the frame; elsewhere it
follows the live platoon members (centre of their bounding box, zoomed so all of them fit,
between `_MIN_SCALE` and `_MAX_SCALE` pixels per metre).
"""

from __future__ import annotations

import io
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from diffplatoon.sim.simulation import Simulation

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402
from highway_env.road.graphics import RoadGraphics, WorldSurface  # noqa: E402
from highway_env.road.road import Road  # noqa: E402

from diffplatoon.sim.roads import drivable_area  # noqa: E402

PLATOON_COLOURS = [(50, 200, 0), (100, 200, 255), (200, 0, 150), (255, 160, 0), (0, 170, 170), (160, 110, 255)]
TRAFFIC_COLOUR = (185, 185, 185)
CRASHED_COLOUR = (230, 40, 40)
LINK_COLOUR = (255, 230, 60)  # inside a platoon
INTER_LINK_COLOUR = (255, 150, 60)  # between platoons (drawn thinner)
OUTLINE_COLOUR = (40, 40, 40)
TEXT_COLOUR = (255, 255, 255)

_FIT_ROAD_TYPES = ("intersection", "roundabout")
_FIT_SIZE, _FOLLOW_SIZE = (560, 560), (800, 260)  # [px] default frame sizes
_MIN_SCALE, _MAX_SCALE = 2.0, 6.0  # [px/m] zoom range of the following camera
_MARGIN = 40.0  # [m] kept around the followed members
_LOOKAHEAD = 20.0  # [m] the camera centre leads the platoon along x


class Renderer:
    """Draws frames of one simulation (re-`attach` it to a new episode's simulation)."""

    def __init__(self, sim: Simulation, size: tuple[int, int] | None = None):
        pygame.font.init()
        self._font = pygame.font.Font(None, 22)
        self._fixed_size = size
        self.attach(sim)

    def attach(self, sim: Simulation) -> None:
        """Draw `sim` from now on (the road may differ from the previous one)."""
        self.sim = sim
        self._road = Road(network=sim.network, vehicles=[])
        self._fit = sim.spec.road.type in _FIT_ROAD_TYPES
        size = self._fixed_size or (_FIT_SIZE if self._fit else _FOLLOW_SIZE)
        if getattr(self, "size", None) != size:
            self.size = size
            self.surface = WorldSurface(size, 0, pygame.Surface(size))
        minx, miny, maxx, maxy = drivable_area(sim.spec.road).bounds
        self._bounds = (minx, miny, maxx, maxy)

    def close(self) -> None:
        """Nothing to release (no window); kept for the environment's `close`."""

    # -- camera -----------------------------------------------------------------------------------
    def _camera(self) -> tuple[np.ndarray, float]:
        w, h = self.size
        if self._fit:
            minx, miny, maxx, maxy = self._bounds
            centre = np.array([(minx + maxx) / 2, (miny + maxy) / 2])
            scale = min(w / (maxx - minx + 10.0), h / (maxy - miny + 10.0))
            return centre, scale
        world, sim = self.sim.world, self.sim
        live = sim.live_members()
        rows = sim.controlled[live] if live.any() else world.active_rows()
        if len(rows) == 0:
            minx, miny, maxx, maxy = self._bounds
            return np.array([(minx + maxx) / 2, (miny + maxy) / 2]), _MIN_SCALE
        x, y = world.x[rows], world.y[rows]
        centre = np.array([(x.min() + x.max()) / 2 + _LOOKAHEAD, (y.min() + y.max()) / 2])
        span_x = x.max() - x.min() + 2 * _MARGIN + _LOOKAHEAD
        span_y = y.max() - y.min() + _MARGIN
        scale = float(np.clip(min(w / span_x, h / span_y), _MIN_SCALE, _MAX_SCALE))
        return centre, scale

    # -- drawing ----------------------------------------------------------------------------------
    def frame(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of the current state."""
        surf = self.surface
        centre, scale = self._camera()
        surf.scaling = scale
        surf.centering_position = [0.5, 0.5]
        surf.move_display_window_to(centre)
        RoadGraphics.display(self._road, surf)
        self._draw_links(surf)
        self._draw_vehicles(surf)
        label = self._font.render(f"t = {self.sim.time:5.1f} s", True, TEXT_COLOUR)
        surf.blit(label, (8, 6))
        return np.ascontiguousarray(pygame.surfarray.array3d(surf).transpose(1, 0, 2))

    def _draw_vehicles(self, surf: WorldSurface) -> None:
        world = self.sim.world
        rows = world.active_rows()
        if len(rows) == 0:
            return
        c, s = np.cos(world.heading[rows]), np.sin(world.heading[rows])
        hl, hw = world.length[rows] / 2, world.width[rows] / 2
        # corners (n, 4, 2): front-left, front-right, rear-right, rear-left
        lx = np.array([1, 1, -1, -1])[None, :] * hl[:, None]
        ly = np.array([-1, 1, 1, -1])[None, :] * hw[:, None]
        px = world.x[rows, None] + c[:, None] * lx - s[:, None] * ly
        py = world.y[rows, None] + s[:, None] * lx + c[:, None] * ly
        pix = np.stack([(px - surf.origin[0]) * surf.scaling, (py - surf.origin[1]) * surf.scaling], axis=-1)
        visible = np.all((pix > -50) & (pix < np.array(self.size) + 50), axis=(1, 2))
        platoon, member, crashed = world.platoon[rows], world.member[rows], world.crashed[rows]
        for k in np.flatnonzero(visible):
            if crashed[k]:
                colour = CRASHED_COLOUR
            elif platoon[k] >= 0:
                colour = PLATOON_COLOURS[platoon[k] % len(PLATOON_COLOURS)]
            else:
                colour = TRAFFIC_COLOUR
            points = pix[k].astype(int).tolist()
            pygame.draw.polygon(surf, colour, points)
            pygame.draw.polygon(surf, OUTLINE_COLOUR, points, 2 if member[k] == 0 else 1)

    def _draw_links(self, surf: WorldSurface) -> None:
        sim, world = self.sim, self.sim.world
        rows = sim.controlled
        live = sim.live_members()
        platoon = sim.comm_graph.platoon_of
        for sender, receiver in sim.comm_graph.graph.edges():
            if not (live[sender] and live[receiver]):
                continue
            a, b = rows[sender], rows[receiver]
            inside = platoon[sender] == platoon[receiver]
            pygame.draw.line(surf, LINK_COLOUR if inside else INTER_LINK_COLOUR,
                             surf.pos2pix(world.x[a], world.y[a]), surf.pos2pix(world.x[b], world.y[b]),
                             2 if inside else 1)


def encode_gif(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """GIF bytes of (H, W, 3) uint8 frames played at `fps`, looping forever."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to encode")
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    duration = int(round(1000.0 / fps))
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration,
                   loop=0, optimize=False, disposal=1)
    return buffer.getvalue()


def write_gif(frames: Sequence[np.ndarray], path: str | os.PathLike[str], fps: float) -> Path:
    """Write frames as a GIF atomically; returns the path."""
    from diffplatoon.io import atomic_write_bytes

    return atomic_write_bytes(path, encode_gif(frames, fps))


_RENDERERS: "weakref.WeakKeyDictionary[Simulation, Renderer]" = weakref.WeakKeyDictionary()


def render_frame(sim: Simulation) -> np.ndarray:
    """(H, W, 3) uint8 frame of `sim` now (one renderer is kept per simulation)."""
    renderer = _RENDERERS.get(sim)
    if renderer is None:
        renderer = _RENDERERS[sim] = Renderer(sim)
    return renderer.frame()
