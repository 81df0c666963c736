"""Traffic's decision each frame: highway-env's `IDMVehicle.act` for all traffic rows at once.

Steps (as highway-env: every vehicle decides, then all move):
1. follow_road: past the last half length of its target lane a vehicle takes the next lane;
2. MOBIL candidates (left before right) of the vehicles whose lane-change timer expired;
3. leaders and followers on own lanes, target lanes (vehicles changing lanes) and candidate
   lanes (with the yielding rule on, MOBIL also sees across lane joints, where highway-env's
   lane-band search is blind);
4. every IDM acceleration of the frame in one batch of named roles (idm_mobil.py), then the
   yielding rule (right_of_way.py), which can only lower them;
5. lane-change decisions: aborts of ongoing changes (another vehicle changing into the same
   lane within the desired gap, as highway-env; and, so that MOBIL's safety criterion holds
   for the whole change, the new follower on the target lane having to brake harder than the
   comfortable deceleration), MOBIL acceptances (the right lane overrides the left; the braking
   a change may impose relaxes with the time a vehicle has been waiting, `accepted_braking`,
   so queues at lane ends clear by zipper merging);
6. the lower of the current-lane and target-lane accelerations while changing, the exit-lane
   fallback of routed traffic, the a_max clip;
7. lane-keeping steering towards the target lane.

Zipper courtesy for platoon members (`member_courtesy`, each frame after the decision): a member
standing or creeping (below 5 m/s) on a lane that ends beside a continuing one (an acceleration or
dropped lane), within 120 m of its end, is listed on the continuing lane as a
zipper-merging traffic vehicle is (`is_merging`) once the traffic follower there can stop behind
it at the comfortable deceleration (1 m short of it) and nobody is alongside it or less than 1 m
ahead (a car just ahead does not block it: the member follows it in once the followers have made
room, as in a real zipper); the followers then make room, as they do for merging traffic. The listing lasts until the member has left the ending lane.

On roads with junctions no traffic lane change ends inside a conflict zone or within
`zone_change_guard` before it (a vehicle merging or crossing there has judged the gap already).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from diffplatoon.sim import idm_mobil, right_of_way, routes, traffic
from diffplatoon.sim.traffic import NeighbourIndex

if TYPE_CHECKING:
    from diffplatoon.sim.world import World

_EMPTY_INT = np.empty(0, dtype=np.intp)


def decide(world: World, rows: np.ndarray, index: NeighbourIndex) -> None:
    """Set accel, steering and target lanes of traffic `rows` (live, not crashed)."""
    p, veh, tab = world.params, world.vehicles, world.table
    cos, sin = world.frame_cache().trig()
    yield_on = world.right_of_way is not None
    n = len(rows)
    x, y = veh.x[rows], veh.y[rows]
    v = veh.speed[rows]  # decide changes no speed: read once for waiting and lane keeping
    slow = v < p.wait_speed
    if np.count_nonzero(slow):
        veh.wait_time[rows] = np.where(slow, veh.wait_time[rows] + 1.0 / p.simulation_frequency, 0.0)
    else:  # nobody waiting (the usual case)
        veh.wait_time[rows] = 0.0
    lane, s = veh.lane[rows], veh.s[rows]
    # 1. follow_road
    tgt = veh.target_lane[rows]
    changing = lane != tgt
    c0 = changing.nonzero()[0]
    st, rt = _on_target(veh, rows, s, tgt, x, y, c0)
    ending = st > tab.follow_at[tgt] if tab.has_successors else None  # a lane without successor never ends here
    if ending is not None and np.count_nonzero(ending):
        for row in rows[ending]:
            routes.follow_road(veh, world.network, int(row))
        tgt = veh.target_lane[rows]
        changing = lane != tgt
        c0 = changing.nonzero()[0]
        st, rt = _on_target(veh, rows, s, tgt, x, y, c0)
    if yield_on:
        path = right_of_way.path_state(veh, world.lane_key_base, rows, tgt, st)
    # 2. MOBIL candidates
    who = _EMPTY_INT
    if p.lane_changes_enabled:
        fire = ~changing & (veh.lane_change_timer[rows] > p.lane_change_delay)
        if np.count_nonzero(fire):
            f_idx = fire.nonzero()[0]
            veh.lane_change_timer[rows[f_idx]] = 0.0
            who, cand, cand_s, cand_r, n_left = _mobil_candidates(world, rows, lane, f_idx, x, y, v)
    m = len(who)
    # 3. Leaders (front) and followers (rear) on own, target and candidate lanes.
    if len(c0) or m:
        q_rows = np.concatenate((rows, rows[c0], rows[who]))
        q_lanes = np.concatenate((lane, tgt[c0], cand)) if m else np.concatenate((lane, tgt[c0]))
        q_s = np.concatenate((s, st[c0], cand_s)) if m else np.concatenate((s, st[c0]))
        qf, qr = index.query(q_rows, q_lanes, q_s)
        front, rear, qf, qr = qf[:n], qr[:n], qf[n:], qr[n:]
    else:
        front, rear = index.query(rows, lane, s)
    if yield_on and m:
        # Neighbours across lane joints: a lane change just after a joint must see who is
        # about to cross it (the band search of highway-env does not).
        pf, pr = path.approach.query(rows[who], cand, cand_s)
        nxt = tab.follow_next[cand]
        far = ((pf < 0) & (nxt >= 0)).nonzero()[0]
        if len(far):  # the new leader may already be past the candidate lane's end
            pf[far] = path.on_lane.query(rows[who][far], nxt[far], cand_s[far] - tab.length[cand[far]])[0]
        k0 = len(c0)
        qf[k0:] = np.where(qf[k0:] < 0, pf, qf[k0:])
        qr[k0:] = np.where(qr[k0:] < 0, pr, qr[k0:])
    # 4. Every IDM acceleration of this frame in one batch.
    roles = {"own_lane": (rows, front, rows)}
    if len(c0):
        roles["target_lane"] = (rows[c0], qf[: len(c0)], rows[c0])
        roles["target_follower"] = (qr[: len(c0)], rows[c0], rows[c0])
    if m:
        me = rows[who]
        new_leader, new_follower = qf[len(c0):], qr[len(c0):]
        old_leader, old_follower = front[who], rear[who]
        # (ego, front, whose δ): MOBIL evaluates every role with the decider's own δ.
        roles.update(new_follower_before=(new_follower, new_leader, me),
                     new_follower_after=(new_follower, me, me),
                     me_after=(me, new_leader, me),
                     old_follower_before=(old_follower, me, me),
                     old_follower_after=(old_follower, old_leader, me))
    a = idm_mobil.idm_roles(veh, world.idm, cos, sin, roles)
    acc = a["own_lane"]  # a slice of its own: writing into it changes no other role
    if yield_on:
        # Before MOBIL: a vehicle held at a yield line sees the gain of changing lanes.
        acc_mobil = world.right_of_way.apply(rows, path, acc, cos, sin)
    # 5. Lane-change decisions.
    keep = None
    new_tgt = tgt
    new_idx = _EMPTY_INT
    if m:
        mob = idm_mobil.MobilAccelerations(
            me_before=acc_mobil[who] if yield_on else acc[who], me_after=a["me_after"],
            new_follower_before=a["new_follower_before"], new_follower_after=a["new_follower_after"],
            old_follower_before=a["old_follower_before"], old_follower_after=a["old_follower_after"])
        bound = idm_mobil.accepted_braking(veh, me, p.max_braking_imposed, p.comfort_acc_min, p.patience)
        safe, worth = idm_mobil.mobil(mob, p.politeness, p.min_acc_gain, bound)
        if veh.n_routes:
            lane_route, by_route = routes.route_rule(veh, p.exit_lane_lookahead, p.max_braking_imposed,
                                                     me, cand, mob.me_after)
            accept = safe & np.where(lane_route, by_route, worth)
        else:
            accept = safe & worth
        if np.count_nonzero(accept):  # else (most frames) the targets stay as they are
            chosen = np.empty(n, dtype=np.intp)
            chosen.fill(-1)
            left_acc = accept[:n_left].nonzero()[0]
            chosen[who[left_acc]] = left_acc
            right_acc = n_left + accept[n_left:].nonzero()[0]
            chosen[who[right_acc]] = right_acc  # the right lane overrides, as in highway-env
            new_idx = (chosen >= 0).nonzero()[0]
            k = chosen[new_idx]
            new_tgt = tgt.copy()
            new_tgt[new_idx] = cand[k]
    if len(c0) and p.lane_changes_enabled:
        aborted = _abort_lane_changes(world, rows, lane, tgt, c0, new_tgt)
        aborted |= (a["target_follower"] < p.comfort_acc_min) & ~veh.lane_change_forced[rows[c0]]
        keep = ~aborted
        if np.count_nonzero(aborted):
            ab = c0[aborted]
            new_tgt = new_tgt.copy() if new_tgt is tgt else new_tgt
            new_tgt[ab] = lane[ab]
            st, rt = st.copy(), rt.copy()
            st[ab], rt[ab] = s[ab], veh.r[rows[ab]]
    if len(new_idx):
        st, rt = st.copy(), rt.copy()
        st[new_idx], rt[new_idx] = cand_s[k], cand_r[k]
    if new_tgt is not tgt:
        veh.target_lane[rows] = new_tgt
    if len(new_idx):
        veh.is_merging[rows[new_idx]] = veh.wait_time[rows[new_idx]] > 0
    merging = veh.is_merging[rows]
    if np.count_nonzero(merging):
        veh.is_merging[rows] = merging & (new_tgt != lane)
    # 6. IDM: the lower of the current-lane and target-lane accelerations while changing.
    if len(c0):
        acc_tgt = a["target_lane"]
        kc = c0 if keep is None else c0[keep]
        acc[kc] = np.minimum(acc[kc], acc_tgt if keep is None else acc_tgt[keep])
    if len(new_idx):
        acc[new_idx] = np.minimum(acc[new_idx], a["me_after"][k])
    if veh.n_routes and tab.road_graph.has_junctions:
        routes.let_pass_for_exit(veh, world.idm, p.exit_lane_lookahead, cos, sin, rows, lane,
                                 new_tgt, acc, index)
    acc = np.minimum(np.maximum(acc, -p.a_max), p.a_max)
    if yield_on:
        # Queues stop and go at yield lines: traffic stands still instead of reversing.
        acc = np.maximum(acc, -np.maximum(v, 0.0) * p.simulation_frequency)
    veh.accel[rows] = acc
    # 7. Lane keeping towards the target lane.
    future = tab.heading0[new_tgt] if tab.all_linear else tab.heading_at(new_tgt, st + v * traffic.TAU_PURSUIT)
    veh.steering[rows] = traffic.lane_keeping_steering(rt, future, veh.heading[rows], v, veh.length[rows])
    member_courtesy(world)


_COURTESY_RANGE = 120.0  # [m] a member this close to the end of its ending lane is let in
_COURTESY_SPEED = 5.0  # [m/s] a member slower than this (standing or creeping to the lane end) is let in
_COURTESY_MARGIN = 1.0  # [m] left between the follower stopped at the comfortable deceleration and the member


def member_courtesy(world: World) -> None:
    """List standing or creeping members on the lane their lane merges into (module docstring)."""
    p, veh, tab = world.params, world.vehicles, world.table
    if not tab.has_merges:  # no ending lane: nothing to list, and no member was ever listed
        return
    hi = veh.hi
    members = (veh.is_controlled[:hi] & veh.active[:hi] & ~veh.crashed[:hi]).nonzero()[0]
    if not len(members):
        return
    into = tab.merges_into
    lane = veh.lane[members]
    tgt = into[lane]
    listed = veh.is_merging[members]
    # listed ones stay listed while on the ending lane
    veh.is_merging[members] = listed & (tgt >= 0) & (veh.target_lane[members] == tgt)
    ask = members[(tgt >= 0) & ~listed & (veh.speed[members] < _COURTESY_SPEED)
                  & (tab.length[lane] - veh.s[members] < _COURTESY_RANGE)]
    if not len(ask):
        return
    b = -p.comfort_acc_min
    others = veh.active[:hi] & ~veh.crashed[:hi]
    for row in ask:
        k = into[veh.lane[row]]
        s_me = float(tab.longitudinal(np.array([k]), veh.x[row:row + 1], veh.y[row:row + 1])[0])
        on = (others & (veh.lane[:hi] == k)).nonzero()[0]
        ds = veh.s[on] - s_me
        half = 0.5 * (veh.length[on] + veh.length[row])
        if np.any((ds >= 0.0) & (ds < half + _COURTESY_MARGIN)):
            continue  # somebody beside it or right ahead of it
        behind = ds < 0
        if np.any(behind):
            f = on[behind][np.argmax(ds[behind])]
            gap = s_me - veh.s[f] - 0.5 * (veh.length[f] + veh.length[row])
            v = max(float(veh.speed[f]), 0.0)
            if gap < _COURTESY_MARGIN + v * v / (2.0 * b):
                continue
        veh.is_merging[row] = True
        veh.target_lane[row] = k


def _on_target(veh, rows: np.ndarray, s: np.ndarray, tgt: np.ndarray, x: np.ndarray, y: np.ndarray,
               moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s, r) of `rows` on their target lanes `tgt`. On their own lane these are the (s, r) lane
    re-assignment stored with the current poses (the same values); only the rows changing lanes
    (positions `moving`) are projected."""
    st, rt = s.copy(), veh.r[rows]
    if len(moving):
        st[moving], rt[moving] = veh.table.local_coordinates(tgt[moving], x[moving], y[moving])
    return st, rt


def _mobil_candidates(world: World, rows: np.ndarray, lane: np.ndarray, f_idx: np.ndarray, x: np.ndarray,
                      y: np.ndarray, v: np.ndarray):
    """(who, lane, s, r, n_left): reachable side lanes of deciders (positions `f_idx` in `rows`,
    at `x`, `y` with speed `v` per row), left-side pairs first."""
    veh, tab = world.vehicles, world.table
    sides = tab.sides[lane[f_idx]].T.ravel()  # the left lanes of all deciders, then their right lanes
    has = sides >= 0
    who = np.concatenate((f_idx, f_idx))[has]
    cand = sides[has]
    cs, cr = tab.local_coordinates(cand, x[who], y[who])
    # highway-env changes lanes only when moving; a vehicle that has waited a lane-change delay
    # may start from a standstill (zipper merge at a lane end).
    moving = np.abs(v[who]) >= 1
    if np.count_nonzero(moving) != len(moving):
        moving |= veh.wait_time[rows[who]] >= world.params.lane_change_delay
    ok = tab.is_reachable(cand, cs, cr) & moving
    if world.right_of_way is not None and tab.road_graph.has_junctions:
        # No lane change into a lane's conflict zone or the stretch just before it.
        cf = tab.conflicts
        ok &= ~((cs >= cf.zone_start[cand] - world.params.zone_change_guard) & (cs <= cf.zone_end[cand]))
    n_left = int(np.count_nonzero(ok[: int(np.count_nonzero(has[: len(f_idx)]))]))
    return who[ok], cand[ok], cs[ok], cr[ok], n_left


def _abort_lane_changes(world: World, rows, lane, tgt, c0, new_tgt) -> np.ndarray:
    """Which ongoing lane changes (positions `c0` in `rows`) abort this frame.

    highway-env aborts when another vehicle, not on the target lane, targets it too and is
    ahead within the desired gap. It decides vehicle by vehicle, so a vehicle sees the
    decisions taken this frame by the vehicles before it (lower rows) and the old targets of
    the others. A vectorized pre-check finds candidate conflicts (rare); those are then
    resolved in row order.
    """
    veh, tab = world.vehicles, world.table
    aborted = np.zeros(len(c0), dtype=bool)
    chk = (tab.road[lane[c0]] == tab.road[tgt[c0]]) & ~veh.lane_change_forced[rows[c0]]
    movers = ((tgt != lane) | (new_tgt != lane)).nonzero()[0]
    if not np.count_nonzero(chk) or len(movers) < 2:
        return aborted
    ci = chk.nonzero()[0]
    v_i = c0[ci][:, None]  # (C, 1) positions in `rows`
    u_i = movers[None, :]  # (1, M)
    t_v = tgt[v_i]
    match = ((tgt[u_i] == t_v) | (new_tgt[u_i] == t_v)) & (lane[u_i] != t_v) & (v_i != u_i)
    if not np.count_nonzero(match):
        return aborted
    a_i, b_i = match.nonzero()
    va, ub = c0[ci[a_i]], movers[b_i]
    d, dstar = idm_mobil.gap_and_desired(veh, world.idm, rows[va], rows[ub])
    close = (d > 0) & (d < dstar)
    if not np.count_nonzero(close):
        return aborted
    conflicts: dict[int, list[int]] = {}
    for a, b in zip(va[close], ub[close]):
        conflicts.setdefault(int(a), []).append(int(b))
    pos_in_c0 = {int(c): k for k, c in enumerate(c0)}
    current = new_tgt.copy()
    for a in sorted(conflicts):
        for b in conflicts[a]:
            seen = current[b] if b < a else tgt[b]
            if seen == tgt[a] and lane[b] != tgt[a]:
                current[a] = lane[a]
                aborted[pos_in_c0[a]] = True
                break
    return aborted
