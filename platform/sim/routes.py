"""Traffic routes: following the road at lane ends, exit lanes, and routes to exits at junctions.

On a road where some lane leads to more than one road (an intersection, a roundabout;
`RoadGraph.has_junctions`), every traffic vehicle that `populate` or `fill_to_density` spawns
gets a route to an exit road drawn uniformly among those reachable from its road
(`random_exit_route`, one draw from the generator they use), along the shortest way there,
with any lane on every road (highway-env's `plan_route_to`). Straight roads, merges and lane
drops keep route-less traffic. Where the next road has another lane count (a roundabout exit
leaves from the outer ring lane), a routed vehicle within `exit_lane_lookahead` of it moves to
the lane that road continues from (`exit_lane_wish`): MOBIL then accepts only moves towards
that lane, when safe (`route_rule`); a vehicle held alongside by traffic on that lane falls back
behind it (`let_pass_for_exit`); and one that still reaches the end of its road on another lane
drives on along the ring and takes the shortest way back to its exit instead of cutting across
(`go_round_if_exit_missed`).
"""

from __future__ import annotations

import numpy as np
from highway_env.road.road import RoadNetwork

from diffplatoon.sim import idm_mobil, traffic
from diffplatoon.sim.traffic import NeighbourIndex
from diffplatoon.sim.vehicles import ROUTE_LEN, Vehicles


def follow_road(veh: Vehicles, network: RoadNetwork, row: int) -> None:
    """highway-env's `follow_road` for one row: switch the target to the next lane (rare)."""
    tab = veh.table
    if veh.route_len[row] > veh.route_pos[row] and veh.route_free[row, veh.route_pos[row]]:
        go_round_if_exit_missed(veh, row)
    route = None
    n_left = 0
    if veh.route_len[row] > veh.route_pos[row]:
        route = [
            (*tab.indices[veh.route[row, k]][:2],
             None if veh.route_free[row, k] else tab.indices[veh.route[row, k]][2])
            for k in range(veh.route_pos[row], veh.route_len[row])
        ]
        n_left = len(route)
    current = tab.indices[veh.target_lane[row]]
    nxt = network.next_lane(current, route=route, position=np.array([veh.x[row], veh.y[row]]))
    if route is not None:
        veh.route_pos[row] += n_left - len(route)
    veh.target_lane[row] = tab.lane_id(nxt)


def exit_lane_wish(veh: Vehicles, exit_lane_lookahead: float, row: int, lane: int) -> int:
    """Lane position a vehicle on a free route should drive on now (−1: any): where its route
    reaches a road with another lane count within `exit_lane_lookahead`, the lane that road
    continues from (highway-env keeps the lane number between roads with equal lane counts)."""
    tab = veh.table
    k, n = int(veh.route_pos[row]), int(veh.route_len[row])
    if tab.road[veh.route[row, k]] != tab.road[lane]:
        return -1
    dist = float(tab.length[lane] - veh.s[row])
    while k + 1 < n and dist <= exit_lane_lookahead:
        r, m = tab.road[veh.route[row, k]], tab.road[veh.route[row, k + 1]]
        if tab.road_graph.exit_lane[r, m] >= 0:
            return int(tab.road_graph.exit_lane[r, m])
        dist += float(tab.road_graph.length[m])
        k += 1
    return -1


def go_round_if_exit_missed(veh: Vehicles, row: int) -> None:
    """A vehicle on a free route that reaches the end of its road on another lane than the one
    its next road continues from goes on along its lane and takes the shortest way back."""
    tab = veh.table
    head, n = int(veh.route_pos[row]), int(veh.route_len[row])
    tgt = int(veh.target_lane[row])
    road = int(tab.road[tgt])
    if head + 1 >= n or tab.road[veh.route[row, head]] != road:
        return
    want = tab.road_graph.exit_lane[road, tab.road[veh.route[row, head + 1]]]
    cont = int(tab.follow_next[tgt])
    if want < 0 or tab.lane_pos[tgt] == want or cont < 0:
        return
    dest = int(tab.road[veh.route[row, n - 1]])
    for path in tab.road_graph.exit_paths(int(tab.road[cont])):
        if path[-1] == dest and len(path) < ROUTE_LEN:
            veh.set_road_route(row, [road, *path])
            return


def random_exit_route(veh: Vehicles, row: int, rng: np.random.Generator) -> None:
    """Route `row` to an exit drawn uniformly among those reachable from the road of its target
    lane (shortest way there; one draw from `rng` when several)."""
    tab = veh.table
    paths = [p for p in tab.road_graph.exit_paths(int(tab.road[veh.target_lane[row]])) if len(p) <= ROUTE_LEN]
    if not paths:
        return
    path = paths[int(rng.integers(len(paths)))] if len(paths) > 1 else paths[0]
    veh.set_road_route(row, path)


def route_rule(veh: Vehicles, exit_lane_lookahead: float, max_braking_imposed: float,
               me: np.ndarray, cand: np.ndarray, me_after: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(routed to a lane, moving towards it safely) per MOBIL pair: a route head naming a lane
    (or an exit-lane wish) admits only moves towards it, and only if safe for the mover."""
    tab = veh.table
    head = np.minimum(veh.route_pos[me], ROUTE_LEN - 1)
    routed = veh.route_len[me] > veh.route_pos[me]
    lane_route = routed & ~veh.route_free[me, head]
    route_pos_id = tab.lane_pos[np.maximum(veh.route[me, head], 0)]
    cur_lane = veh.target_lane[me]
    cur = tab.lane_pos[cur_lane]
    for k in (routed & ~lane_route).nonzero()[0]:  # any lane, but maybe not for long
        want = exit_lane_wish(veh, exit_lane_lookahead, int(me[k]), int(cur_lane[k]))
        if want >= 0:
            lane_route[k], route_pos_id[k] = True, want
    wrong = np.sign(tab.lane_pos[cand] - cur) != np.sign(route_pos_id - cur)
    return lane_route, ~wrong & ~(me_after < -max_braking_imposed)


def let_pass_for_exit(veh: Vehicles, c: traffic.IDMConstants, exit_lane_lookahead: float,
                      cos: np.ndarray, sin: np.ndarray, rows: np.ndarray, lane: np.ndarray,
                      tgt: np.ndarray, acc: np.ndarray, index: NeighbourIndex) -> None:
    """A vehicle that must move to another lane for its exit but has a vehicle on that lane
    beside it, within the desired gap behind or ahead (so MOBIL refuses), falls back to slot in
    behind it instead of driving alongside up to the exit: it slows towards 3 m/s below a
    vehicle behind, or follows a vehicle ahead by IDM, braking at most at the comfortable rate."""
    tab = veh.table
    for k in ((veh.route_len[rows] > veh.route_pos[rows]) & (tgt == lane)).nonzero()[0]:
        row = int(rows[k])
        if not veh.route_free[row, veh.route_pos[row]]:
            continue
        want = exit_lane_wish(veh, exit_lane_lookahead, row, int(lane[k]))
        if want < 0 or want == tab.lane_pos[lane[k]]:
            continue
        wish = np.array([tab.road_first[tab.road[lane[k]]] + want])
        me = np.array([row])
        s_w = tab.longitudinal(wish, veh.x[me], veh.y[me])
        front, rear = index.query(me, wish, s_w)
        v = max(float(veh.speed[row]), 0.0)
        if rear[0] >= 0:
            gap, desired = idm_mobil.gap_and_desired(veh, c, rear, me)
            if gap[0] < desired[0]:
                v_cap = max(float(veh.speed[rear[0]]) - 3.0, 0.5)
                acc[k] = min(acc[k], c.comfort_acc_max * (1 - (v / v_cap) ** veh.delta[row]))
        if front[0] >= 0:
            gap = tab.longitudinal(wish, veh.x[front], veh.y[front]) - s_w
            dv = traffic.projected_closing_speed(veh.speed[me], cos[me], sin[me],
                                                 veh.speed[front], cos[front], sin[front])
            if gap[0] < traffic.desired_gap(c, veh.speed[me], dv)[0]:
                behind = traffic.idm_acceleration_f64(c, veh.speed[me], veh.target_speed[me],
                                                      veh.delta[me], np.ones(1, dtype=bool), gap, dv)
                acc[k] = min(acc[k], max(float(behind[0]), -c.comfort_acc_max))
