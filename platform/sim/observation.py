"""`Observer`: the per-vehicle observations of the controlled vehicles, computed vectorized from
the World's arrays.

The fields, their shapes and the flat layout are the contract in `diffplatoon.sim.observation_layout`
(re-exported here: `Observation`, `ObservationLayout`, `flat_layout` and the feature names).

Feature details (`Observer`):
- gaps are bumper to bumper along the lane the two vehicles are compared on; closing speed is
  positive when the gap shrinks (ego − front speed ahead, rear − ego speed behind). A vehicle is
  searched on the lane itself and, across a lane boundary, on the lane it continues into (front)
  or comes from (rear). Absent or beyond `range`: [range, 0, 0, 0].
- the leader (`leader`) is the vehicle ahead on the member's current lane (any vehicle, not only
  platoon members); side lanes are the lanes left (id − 1) and right (id + 1) on the same road;
  a side lane that is `forbidden` to enter (an on-ramp's acceleration lane seen from the main
  road) counts as absent.
- `heading_error` is the heading minus the lane heading at the vehicle's s, wrapped to [−π, π);
  `lateral_offset` is r on the current lane (positive to the right); `distance_to_lane_end`
  follows the member's route (else the smooth continuation of the lane) to where the lane
  ends, capped at 1000 m; `speed_limit` is 40 m/s on lanes without one; `is_leader` is 1 for
  the first member of its platoon that is still alive.
- neighbours are sorted nearest first (centre distance); dvx, dvy are the other's velocity
  minus the ego's; `same_platoon` is 1 for members of the ego's platoon.
- lane points lie at `lane_point_spacing`·(1..P) metres ahead of the vehicle's s along the
  route (or the smooth continuation); past a lane with no continuation, the lane extended.
- right_of_way (`RIGHT_OF_WAY_FEATURES`): the traffic's yielding rule (`RightOfWay.assess`) applied
  to the member on its current lane: the next conflict zone on its path (own lane, or the lane its
  route takes next once within the rule's look-ahead, max(`yield_lookahead`, IDM desired gap), of
  the lane end), the distance from its centre to
  that zone's yield line, whether the lane yields there, the earliest time a priority vehicle
  reaches the conflict (0 while one is inside it; capped at 60 s), the member's time to clear
  its zone accelerating comfortably, and the rule's verdict (1: wait at the yield line). No
  conflict ahead: [1000, 0, 60, 0, 0].
- route: where the route changes lanes on a road (e.g. from an acceleration lane to the main
  road), `lane_changes_needed` is the signed number of lanes to move and `distance_to_do_it`
  the distance to the end of the road where it must be done; with no change pending, 0 and the
  distance to the route end (capped at 1000 m). Vehicles without a route get the cheapest way
  to any exit of the road (a lane that ends, as in `lane_drop`, asks for a change).
  `progress` is the route length driven / total route length. `path_lateral_offset` and
  `path_heading_error` are r and the heading error on the member's path lane, highway-env's
  target lane: its current lane, or once past that lane's `follow_at` (its last half vehicle
  length) the lane its route takes next, kept while the member is within a lane width of it
  and not yet on it (where a road forks, the lane band it crosses first may be the other
  branch's). The path lane is the Observer's only state: one Observer per episode.
- inbox messages are as sent (world frame, see `comms.MESSAGE_FIELDS`); `predecessor_message`
  is the message of comm id i − 1 when member k > 0 holds one from it (the channel keeps a
  sender's last message until `max_age`, also after the sender has left: read its age).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from diffplatoon.geometry import wrap_angle
from diffplatoon.sim.observation_layout import (
    EGO_FEATURES,
    LEADER_FEATURES,
    NEIGHBOUR_FEATURES,
    RIGHT_OF_WAY_FEATURES,
    ROUTE_FEATURES,
    SIDE_FEATURES,
    Field,
    Observation,
    ObservationLayout,
    flat_layout,
)
from diffplatoon.sim import right_of_way
from diffplatoon.sim.observation_routes import PathLanes, chain_length, continuations, default_table, route_table

if TYPE_CHECKING:
    from diffplatoon.sim.simulation import Simulation

__all__ = [
    "EGO_FEATURES",
    "LEADER_FEATURES",
    "NEIGHBOUR_FEATURES",
    "RIGHT_OF_WAY_FEATURES",
    "ROUTE_FEATURES",
    "SIDE_FEATURES",
    "Field",
    "Observation",
    "ObservationLayout",
    "Observer",
    "flat_layout",
]

_FAR = 1000.0  # [m] cap on route and lane-end distances (loops and very long roads)
_DEFAULT_SPEED_LIMIT = 40.0  # [m/s] reported for lanes without a limit (the World's max speed)
_MAX_HOPS = 8  # most lane boundaries one lane-ahead point may cross
_T_FAR = 60.0  # [s] cap on right-of-way times (no priority vehicle coming)
_NO_CONFLICT = (_FAR, 0.0, _T_FAR, 0.0, 0.0)  # right_of_way features with no conflict ahead


class Observer:
    """Builds the `Observation` of every platoon member of a `Simulation` from the World's arrays.

    Route tables (per member and lane) are built once here; `observe()` only indexes them.
    Neighbour search uses the World's sorted lane index (`World.neighbours`), asking for each
    member the lane it is on, the lane its lane continues into, and the left/right lanes with
    their continuations and predecessors, all in one call.
    """

    def __init__(self, sim: "Simulation"):
        self.sim = sim
        spec = sim.spec.observation
        self.k = spec.neighbours
        self.range = float(spec.range)
        self.n_points = spec.lane_points
        self.spacing = float(spec.lane_point_spacing)
        world, tab = sim.world, sim.world.table
        graph = sim.road.lane_graph()
        self._cont, self._prev = continuations(tab, graph)
        exits = list(sim.road.exit_lanes())
        base = default_table(tab, graph, exits, self._cont, self._prev)
        rows = sim.controlled
        m = len(rows)
        self._vids = world.vid[rows].copy()  # a row reused after a departure holds another vehicle
        tables = []
        for row in rows:
            n_route = int(world.route_len[row])
            route = [int(r) for r in world.route[row, :n_route]]
            tables.append(route_table(tab, route, base) if route else base)
        self._need = np.stack([t.need for t in tables]).astype(np.float64)  # (M, n_lanes)
        self._deadline = np.stack([t.deadline for t in tables])
        self._before = np.stack([t.before for t in tables])
        self._remaining = np.stack([t.remaining for t in tables])
        self._next = np.stack([t.next for t in tables])  # (M, n_lanes)
        self._lane_end = np.stack([chain_length(tab, t.next, True) for t in tables])  # (M, n_lanes)
        self._agent = np.arange(m)
        graph_c = sim.comm_graph
        self._platoon = graph_c.platoon_of.copy()  # (M,)
        self._member = graph_c.member_of.copy()  # (M,)
        self._pred = np.where(self._member > 0, self._agent - 1, -1)  # comm id of member k−1
        self._same_platoon = self._platoon[:, None] == self._platoon[None, :]  # (M, M)
        self._ahead_in_platoon = self._same_platoon & (self._member[None, :] < self._member[:, None])
        self._side_ok = np.stack([(tab.left >= 0) & ~tab.forbidden[np.maximum(tab.left, 0)],
                                  (tab.right >= 0) & ~tab.forbidden[np.maximum(tab.right, 0)]], axis=1)
        self._speed_limit = np.where(np.isfinite(tab.speed_limit), tab.speed_limit, _DEFAULT_SPEED_LIMIT)
        # Per (member, lane) tables flattened to member · n_lanes + lane, read with one `take` each.
        nl = tab.n
        self._n_lanes = nl
        self._next_flat = self._next.ravel()
        self._before_flat = self._before.ravel()
        self._agent_base = self._agent * nl
        self._lane_cols = np.stack([self._lane_end, self._deadline, self._need, self._before, self._remaining,
                                    np.broadcast_to(tab.width, (m, nl)),
                                    np.broadcast_to(self._speed_limit, (m, nl))], axis=-1).reshape(m * nl, 7)
        lanes = np.broadcast_to(np.arange(nl), (m, nl))
        left, right = np.broadcast_to(tab.left, (m, nl)), np.broadcast_to(tab.right, (m, nl))
        nxt = lambda ln: np.take_along_axis(self._next, np.maximum(ln, 0), axis=1)  # noqa: E731
        q = np.stack([lanes, nxt(lanes), left, np.where(left >= 0, nxt(left), -1),
                      np.where(left >= 0, self._prev[np.maximum(left, 0)], -1), right,
                      np.where(right >= 0, nxt(right), -1),
                      np.where(right >= 0, self._prev[np.maximum(right, 0)], -1)], axis=-1).reshape(m * nl, 8)
        self._q_lanes = np.where(q >= 0, q, np.repeat(np.arange(nl)[None, :], m, axis=0).reshape(-1, 1))
        self._q_invalid = np.concatenate([q < 0, q < 0], axis=1)  # (m · n_lanes, 16): [front, rear] results
        self._on_first = self._q_lanes[:, self._FIRST % 8]
        self._on_second = self._q_lanes[:, self._SECOND % 8]
        side_ok = self._side_ok
        self._slot_ok = np.stack([np.ones(nl, dtype=bool), side_ok[:, 0], side_ok[:, 0], side_ok[:, 1],
                                  side_ok[:, 1]], axis=1)  # (n_lanes, 5)
        self._point_offsets = self.spacing * np.arange(1, self.n_points + 1)
        self._path = PathLanes(tab, m, self._next_flat)
        self._no_conflict = np.tile(_NO_CONFLICT, (m, 1))  # right_of_way rows on roads without conflicts
        self._no_conflict.setflags(write=False)

    def live(self) -> np.ndarray:
        """(M,) bool: members still on the road (as `Simulation.live_members`, without its Python loop)."""
        world, rows = self.sim.world, self.sim.controlled
        return world.active[rows] & (world.vid[rows] == self._vids)

    def route_position(self, live: np.ndarray | None = None) -> np.ndarray:
        """(M,) distance driven along each member's route [m] (NaN for members off the road).

        `live`: `live()` if already at hand.
        """
        sim, world = self.sim, self.sim.world
        live = self.live() if live is None else live
        rows = sim.controlled
        lane = np.where(live, world.lane[rows], 0)
        pos = self._before_flat.take(self._agent_base + lane) + world.s[rows]
        return np.where(live, pos, np.nan)

    def alive(self) -> np.ndarray:
        """(M,) bool: members on the road and not crashed."""
        return self.live() & ~self.sim.world.crashed[self.sim.controlled]

    def observe(self) -> Observation:
        """The observation of every member now (zeros with masks false for crashed/departed ones)."""
        sim, world, tab = self.sim, self.sim.world, self.sim.world.table
        m = len(sim.controlled)
        alive = self.alive()
        idx = alive.nonzero()[0]
        rows = sim.controlled[idx]
        n = len(rows)
        inbox = sim.inbox
        kc, d = inbox.data.shape[1], inbox.data.shape[2]
        if n == 0:
            return Observation.zeros(flat_layout(self.k, self.n_points, kc, d), m, alive=alive)
        # numpy's per-call overhead dominates at these sizes (M ~ 4): fewer calls, `take` over 2-D fancy indexing
        veh = world.vehicles  # its arrays directly, not through the World's per-field properties
        lane, s = veh.lane[rows], veh.s[rows]
        x, y, h, v = veh.x[rows], veh.y[rows], veh.heading[rows], veh.speed[rows]
        cos_h, sin_h = np.cos(h), np.sin(h)
        at = idx * self._n_lanes + lane  # (member, lane) entry of the flattened tables
        cols = self._lane_cols.take(at, axis=0)
        need, before, remaining, width, limit = cols[:, 2:].T
        to_end, to_deadline = np.minimum(np.maximum(cols[:, :2] - s[:, None], 0.0), _FAR).T

        # 1. ego features
        ego = np.empty((n, len(EGO_FEATURES)))
        ego[:, 0] = v
        ego[:, 1] = veh.accel[rows]
        ego[:, 2] = veh.steering[rows]
        ego[:, 3] = wrap_angle(h - tab.heading_at(lane, s))
        ego[:, 4] = veh.r[rows]
        ego[:, 5] = width
        ego[:, 6] = to_end
        ego[:, 7] = limit
        ego[:, 8] = self._member[idx]
        ego[:, 9] = ~self._ahead_in_platoon.take(idx, axis=0).dot(alive)

        # 2. leader and side lanes: one query batch on the World's sorted lane index
        lane_feats = self._lane_neighbours(rows, lane, at, x, y)

        # 3. K nearest vehicles in the ego frame
        neighbours, neighbour_mask = self._nearest(rows, x, y, cos_h, sin_h, v)

        # 4. centre-line points ahead, following the member's route (else the smooth continuation)
        lane_ahead = self._lane_points(idx, lane, s, x, y, cos_h, sin_h)

        # 5. right of way at the next conflict on the path (the traffic's yielding rule)
        row_feats = self._right_of_way(rows)

        # 6. route and pose
        tail = np.empty((n, 8))
        tail[:, 0] = need
        tail[:, 1] = to_deadline
        total = np.maximum(before + remaining, 1e-6)
        tail[:, 2] = np.minimum(np.maximum((before + s) / total, 0.0), 1.0)
        tail[:, 3:5] = self._path.offsets(idx, lane, s, ego[:, 4], ego[:, 3], x, y, h)
        tail[:, 5] = x
        tail[:, 6] = y
        tail[:, 7] = h

        # 7. V2V inbox and the predecessor's newest message
        if n == m:
            data, mask, age, sender = inbox.data, inbox.mask, inbox.age, inbox.sender
        else:
            data, mask, age, sender = (a.take(idx, axis=0) for a in (inbox.data, inbox.mask, inbox.age, inbox.sender))
        pred = self._pred[idx]
        match = mask & (sender == pred[:, None])  # (n, Kc); a held slot's sender is ≥ 0, so pred −1 never matches
        has = match.any(axis=1)
        sel = np.arange(n) * kc + match.argmax(axis=1)
        # all members alive (the usual case): cast, else scatter into the all-absent observation
        f = np.float32
        return Observation.of(
            ego=_spread(ego, idx, m, f),
            leader=_spread(lane_feats[:, 0], idx, m, f),
            side=_spread(lane_feats[:, 1:].reshape(n, 2, 2, 4), idx, m, f),
            side_lane=_spread(self._side_ok.take(lane, axis=0), idx, m, f),
            neighbours=_spread(neighbours, idx, m, f),
            neighbour_mask=_spread(neighbour_mask, idx, m, bool),
            lane_ahead=_spread(lane_ahead, idx, m, f),
            right_of_way=_spread(row_feats, idx, m, f),
            route=_spread(tail[:, :5], idx, m, f),
            inbox=_spread(data, idx, m, f),
            inbox_mask=_spread(mask, idx, m, bool),
            inbox_age=_spread(age, idx, m, f),
            predecessor_message=_spread(np.where(has[:, None], data.reshape(n * kc, d)[sel], 0.0), idx, m, f),
            predecessor_mask=_spread(has, idx, m, bool),
            alive=alive,
            predecessor_age=_spread(np.where(has, age.reshape(-1)[sel], 0), idx, m, f),
            pose=_spread(tail[:, 5:], idx, m, f),
            inbox_sender=_spread(np.where(mask, sender, -1), idx, m, np.int64, -1),
        )

    # -- parts -----------------------------------------------------------------------------------
    # Which found vehicle fills each (leader / side) slot: the first choice and the fallback across
    # a lane boundary, as columns of [front rows of the 8 queries, rear rows of the 8 queries].
    # Query columns: 0 own lane, 1 own→next, 2 left, 3 left→next, 4 left←prev, 5 right,
    # 6 right→next, 7 right←prev. Slots: leader, left front, left rear, right front, right rear.
    _FIRST = np.array([0, 2, 8 + 2, 5, 8 + 5])
    _SECOND = np.array([1, 3, 8 + 4, 6, 8 + 7])
    _SIGN = np.array([1.0, 1.0, -1.0, 1.0, -1.0])  # +1 ahead, −1 behind

    def _lane_neighbours(self, rows: np.ndarray, lane: np.ndarray, at: np.ndarray, x: np.ndarray,
                         y: np.ndarray) -> np.ndarray:
        """(n, 5, 4): `SIDE_FEATURES` of the leader, left front, left rear, right front, right rear."""
        world, tab = self.sim.world, self.sim.world.table
        n = len(rows)
        q = self._q_lanes.take(at, axis=0)  # (n, 8), invalid queries on the own lane (their results are dropped)
        front, rear = world.neighbours(rows.repeat(8), q.reshape(-1))
        found_all = np.concatenate((front.reshape(n, 8), rear.reshape(n, 8)), axis=1)
        np.copyto(found_all, -1, where=self._q_invalid.take(at, axis=0))
        found1, found2 = found_all.take(self._FIRST, axis=1), found_all.take(self._SECOND, axis=1)  # (n, 5)
        use_first = found1 >= 0
        # the lane both are compared on
        on = np.where(use_first, self._on_first.take(at, axis=0), self._on_second.take(at, axis=0))
        has = np.maximum(found1, found2) >= 0
        # [other, ego] rows per slot (the ego stands in for an absent other), read in one go
        who = np.empty((2, n, 5), dtype=np.intp)
        who[:] = rows[:, None]
        np.copyto(who[0], np.where(use_first, found1, found2), where=has)
        if tab.all_linear:
            s_pair = tab.longitudinal(on, world.x[who], world.y[who])
        else:
            s_pair = tab.longitudinal(np.broadcast_to(on, who.shape), world.x[who], world.y[who])
        length, speed = world.length[who], world.speed[who]
        half = (length[1] + length[0]) / 2
        gap = self._SIGN * (s_pair[0] - s_pair[1]) - half
        v_other = speed[0]
        closing = self._SIGN * (speed[1] - v_other)
        present = has & self._slot_ok.take(lane, axis=0) & (gap <= self.range)
        feats = np.zeros((n, 5, 4))
        feats[:, :, 0] = self.range
        np.copyto(feats[:, :, 0], gap, where=present)
        np.copyto(feats[:, :, 1], v_other, where=present)
        np.copyto(feats[:, :, 2], closing, where=present)
        feats[:, :, 3] = present
        return feats

    def _nearest(self, rows, x, y, cos_h, sin_h, v) -> tuple[np.ndarray, np.ndarray]:
        """(n, K, 9) `NEIGHBOUR_FEATURES` and (n, K) mask of the K nearest vehicles."""
        veh = self.sim.world.vehicles  # its arrays directly, not through the World's per-field properties
        others = veh.active_rows()
        big = len(others)
        dx = veh.x[others] - x[:, None]  # (n, N)
        dy = veh.y[others] - y[:, None]
        dist = np.hypot(dx, dy)
        np.copyto(dist, np.inf, where=(others == rows[:, None]) | (dist > self.range))
        k = min(self.k, big)
        order = dist.argsort(axis=1, kind="stable")[:, :k]  # (n, k)
        flat = (order + (np.arange(len(rows)) * big)[:, None]).ravel()
        mask = np.isfinite(dist.take(flat)).reshape(order.shape)
        o = others[order]  # (n, k) rows
        ex, ey = dx.take(flat).reshape(order.shape), dy.take(flat).reshape(order.shape)
        c, s_, ns = cos_h[:, None], sin_h[:, None], -sin_h[:, None]
        ho = veh.heading[o]
        vo = veh.speed[o]
        rvx = vo * np.cos(ho) - (v * cos_h)[:, None]
        rvy = vo * np.sin(ho) - (v * sin_h)[:, None]
        dh = ho - np.arctan2(sin_h, cos_h)[:, None]
        out = np.empty((len(rows), self.k, len(NEIGHBOUR_FEATURES)))
        f = out[:, :k]
        f[..., 0] = c * ex + s_ * ey  # position, ego frame (x forward, y right)
        f[..., 1] = ns * ex + c * ey
        f[..., 2] = c * rvx + s_ * rvy  # velocity relative to the ego, ego frame
        f[..., 3] = ns * rvx + c * rvy
        f[..., 4] = np.cos(dh)
        f[..., 5] = np.sin(dh)
        f[..., 6] = veh.length[o]
        f[..., 7] = veh.width[o]
        po = veh.platoon[o]
        f[..., 8] = (po == veh.platoon[rows][:, None]) & (po >= 0)
        if np.count_nonzero(mask) != mask.size:
            np.copyto(f, 0.0, where=~mask[..., None])
        if k == self.k:
            return out, mask
        out[:, k:] = 0.0
        full = np.zeros((len(rows), self.k), dtype=bool)
        full[:, :k] = mask
        return out, full

    def _right_of_way(self, rows: np.ndarray) -> np.ndarray:
        """(n, 5) `RIGHT_OF_WAY_FEATURES`: `RightOfWay.assess` of the members on their current lanes."""
        world = self.sim.world
        rule = world.right_of_way
        if rule is None:  # no conflicts on this road, or yielding off (read-only: `_spread` copies it)
            return self._no_conflict[: len(rows)]
        out = np.empty((len(rows), len(RIGHT_OF_WAY_FEATURES)))
        out[:] = _NO_CONFLICT
        lane, s = right_of_way.current_path(world.vehicles)
        a = rule.assess(rows, lane, s, report=True)
        has = np.isfinite(a.dist)
        out[:, 0] = np.where(has, np.minimum(a.dist - world.params.yield_stop_gap, _FAR), _FAR)
        out[:, 1] = has & world.table.conflicts.lane_yields[np.maximum(a.check, 0)]
        out[:, 2] = np.minimum(a.priority_arrival, _T_FAR)
        out[:, 3] = np.where(np.isfinite(a.clear_time), np.minimum(a.clear_time, _T_FAR), 0.0)
        out[:, 4] = a.blocked
        return out

    def _lane_points(self, idx, lane, s, x, y, cos_h, sin_h) -> np.ndarray:
        """(n, P, 2) centre-line points ahead in the ego frame."""
        tab = self.sim.world.table
        n, p = len(idx), self.n_points
        ln = lane.repeat(p)
        sp = (s[:, None] + self._point_offsets).ravel()
        for _ in range(_MAX_HOPS):
            length = tab.length[ln]
            over = sp > length
            if not np.count_nonzero(over):  # every point on its lane (the usual case)
                break
            nxt = self._next_flat[(idx * self._n_lanes).repeat(p) + ln]
            over &= nxt >= 0
            if not np.count_nonzero(over):
                break
            sp = np.where(over, sp - length, sp)
            ln = np.where(over, nxt, ln)
        px, py = tab.position(ln, sp, np.zeros_like(sp))  # beyond a lane end: the lane extended
        ex = px.reshape(n, p) - x[:, None]
        ey = py.reshape(n, p) - y[:, None]
        c, s_, ns = cos_h[:, None], sin_h[:, None], -sin_h[:, None]
        pts = np.empty((n, p, 2))
        pts[..., 0] = c * ex + s_ * ey
        pts[..., 1] = ns * ex + c * ey
        return pts


def _spread(values: np.ndarray, idx: np.ndarray, m: int, dtype, fill=0) -> np.ndarray:
    """(m, ...) `dtype` array with `values` in rows `idx` (ascending) and `fill` elsewhere."""
    if len(idx) == m:  # idx is every row, in order
        return values.astype(dtype)
    out = np.empty((m,) + values.shape[1:], dtype=dtype)  # np.full's Python wrapper costs more
    out.fill(fill)
    out[idx] = values
    return out
