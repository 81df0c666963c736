"""Differentiable safety and comfort costs on rolled-out joint plans, and the guidance configuration.

All geometry is in the platoon frame (x along the leader's heading, y to its left, origin at the leader).
Plans are actions (B, N, H, 2) = [acceleration, steering] and states (B, N, H, 4) = [x, y, heading, speed];
every cost returns one value per scene (B,) so sample-and-select can rank joint samples at platoon level.
Lower is better; all terms are 0 for a plan with no violation except comfort.

Terms:
- ``separation``: members as ``n_discs`` discs along their length, centred as discs of radius width/2 would fit
  inside the box but of radius width/√2, which reaches the box's corners (`disc_radius`); for each pair of present
  members and each step, relu(r_i + r_j + buffer − min disc distance) [m], summed over pairs, averaged over time.
- ``neighbours``: the same between members and predicted non-platoon vehicles (B, M, H, 3) = [x, y, heading].
- ``road``: distance by which a vehicle's side leaves its lane corridor, measured from the member's centre line
  (`lane_costs`, when the context has ``lane_points``), else from axis-aligned lateral bounds (B, N, 2) =
  [y_right_edge, y_left_edge], or any callable states → (B, N, H) penalty.
- ``lane``: over the plan's last ``lane_tail`` share of steps (default: the second half), the squared offset from the
  nearest lane centre the corridor admits plus the squared heading error (`lane_costs.lane_alignment_cost`;
  needs ``lane_points``).
- ``headway``: for each member and the vehicle ahead of it in its lane — its predecessor in the platoon, and
  every predicted non-platoon vehicle — relu(d0 + T·v − gap) + relu(ttc_min·closing − gap), i.e. a time-gap
  barrier and a TTC barrier written without a division (TTC < ttc_min ⇔ gap < ttc_min·closing). The overlap
  terms alone only cost once a collision is predicted, too late to brake for; the barrier costs the approach.
- ``lane_end``: distance [m] by which a member's front would pass the end of its lane, braking at ``lane_end_decel``
  from a planned state in which some of its body is still in that lane (its travelled distance, Σ v·dt, plus
  v²/(2·lane_end_decel), against ``lane_end``: the observation's ``distance_to_lane_end``, plus half its length and
  ``lane_end_margin``), mean over time, summed over members. Without it a member waiting to merge at the end of an
  acceleration lane creeps past the end (the centre line continues there); without the braking distance a plan
  that keeps promising to leave the lane a second later, replanned every step, drives off its end.
- ``route``: for a member whose route asks it to change lanes (the observation's ``route``: the lane to move to
  and the distance left to do it), |offset − target| [m] from the target lane's centre, mean over time, times an
  urgency that grows linearly from 0 at ``route_horizon`` metres before the place where the change must be done
  to 1 there; summed over members. Without it sample-and-select prefers the plan that waits at the end of an
  acceleration lane (it costs nothing) to one that merges into a gap (headway costs), and the planner, whose
  samples rarely change lanes, stops there: the term makes waiting cost and pulls guided plans towards the gap.
- ``comfort``: mean squared acceleration, jerk, steering and steering rate.
- ``speed``: speed above each member's speed limit [m/s], summed over members, averaged over time (0 without limits).

`CostGuidance` is the guidance step itself (x̂0 moved against the cost gradient of its rollout), shared by the
planner's sampler and the DPPO module's chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable

import math
import torch

from diffplatoon.agents.diffusion import lane_costs
from diffplatoon.geometry import VEHICLE_LENGTH, VEHICLE_WIDTH

_EPS = 1e-6


@dataclass(frozen=True)
class CostWeights:
    """Weight of each cost term in the total."""

    separation: float = 10.0
    neighbours: float = 10.0
    road: float = 2.0
    lane: float = 1.0
    lane_end: float = 2.0
    route: float = 3.0
    headway: float = 1.0
    comfort: float = 0.01
    speed: float = 1.0


@dataclass(frozen=True)
class GuidanceConfig:
    """How guided sampling and sample selection score plans.

    Attributes:
        scale: step size of x̂0 ← x̂0 − scale · ∇cost, in normalised action units per unit cost gradient.
        start_fraction: fraction of the denoising steps, counted from the end, that are guided (0.3 = last 30%).
        inner_steps: gradient steps per guided denoising step.
        max_grad_norm: per-scene clip on the gradient norm (None = no clip), keeps one bad pair from exploding.
        line_search: fractions of the step tried per scene (one batched cost evaluation); each scene keeps the
            candidate of lowest cost, its unguided x̂0 included, so a guidance step never raises a plan's cost.
            Empty: the full step, always taken (a fixed step overshoots where the cost is steep in steering:
            measured on the DAgger planner's highway plans, it raised the cost of 97 % of them, 18-fold on mean).
        weights: cost term weights.
        vehicle_width: width of every vehicle [m] (highway-env Vehicle.WIDTH).
        n_discs: discs per vehicle along its length.
        buffer: extra clearance between discs [m].
        neighbour_length: length assumed for non-platoon vehicles when none is given [m].
        standstill_gap: d0 of the headway barrier [m].
        min_time_gap: T of the headway barrier [s].
        ttc_min: time-to-collision barrier [s].
        same_lane_tol: lateral offset [m] under which a predecessor counts as in the same lane.
        headway_range: neighbours further ahead than this [m] are outside the headway barrier.
        lane_heading_weight: weight of the squared heading error [rad²] against the squared offset [m²] in ``lane``.
        lane_tail: share of the plan's last steps the ``lane`` term measures. Half: a plan may spend its first
            half changing lanes without paying for the offsets on the way (README, planner rows: with every step
            measured the planner merged less often on lane_drop).
        lane_end_margin: room [m] the ``lane_end`` term keeps between a member's front and its lane's end.
        lane_end_decel: deceleration [m/s²] at which a member still in its ending lane must be able to stop before
            the end from every planned state (``lane_end``; 0: only the planned positions count).
        route_horizon: distance [m] before the place where a route's lane change must be done from which the
            ``route`` term pulls (its urgency 0 there, 1 at the place).
        jerk_weight, steer_weight, steer_rate_weight: relative weights inside the comfort term.
    """

    scale: float = 0.5
    start_fraction: float = 0.3
    inner_steps: int = 1
    max_grad_norm: float | None = 5.0
    line_search: tuple[float, ...] = (1.0, 0.25, 0.0625)
    weights: CostWeights = field(default_factory=CostWeights)
    vehicle_width: float = VEHICLE_WIDTH
    n_discs: int = 3
    buffer: float = 0.3
    neighbour_length: float = VEHICLE_LENGTH
    standstill_gap: float = 2.0
    min_time_gap: float = 0.5
    ttc_min: float = 2.0
    same_lane_tol: float = 2.0
    headway_range: float = 80.0
    lane_heading_weight: float = 100.0
    lane_tail: float = 0.5
    lane_end_margin: float = 1.0
    lane_end_decel: float = 4.0
    route_horizon: float = 150.0
    jerk_weight: float = 0.1
    steer_weight: float = 100.0
    steer_rate_weight: float = 10.0

    def __post_init__(self) -> None:
        fractions = tuple(float(f) for f in self.line_search)
        if any(not 0.0 < f <= 1.0 for f in fractions):
            raise ValueError(f"line_search fractions must be in (0, 1], got {list(fractions)}")
        object.__setattr__(self, "line_search", fractions)  # a YAML list becomes the (hashable) tuple

    def guided_steps(self, steps: int) -> int:
        """How many of the last denoising steps are guided."""
        if self.start_fraction <= 0 or self.scale == 0:
            return 0
        return min(steps, max(1, round(self.start_fraction * steps)))

    def with_weights(self, **weights: float) -> GuidanceConfig:
        """Copy with some cost weights replaced."""
        return replace(self, weights=replace(self.weights, **weights))


def repeat_rows(x: torch.Tensor, repeats: int) -> torch.Tensor:
    """``x.repeat_interleave(repeats, dim=0)`` (row b → rows b·repeats … b·repeats + repeats − 1), without a copy
    when x has one row (the usual single scene): a broadcast view."""
    return x[:, None].expand(x.shape[0], repeats, *x.shape[1:]).reshape(x.shape[0] * repeats, *x.shape[1:])


@dataclass
class SceneContext:
    """Per-scene inputs of the costs beyond the plan itself (all optional).

    Attributes:
        neighbours: predicted non-platoon vehicles (B, M, H, 3) = [x, y, heading] in the platoon frame.
        neighbour_mask: (B, M) bool, True = real neighbour.
        neighbour_length: (B, M) lengths [m]; defaults to GuidanceConfig.neighbour_length.
        lateral_bounds: (B, N, 2) = [right edge y, left edge y] of the drivable area per member [m].
        boundary_fn: alternative road cost, states (B, N, H, 4) → penalty (B, N, H).
        predecessor: (B, N) long index of each member's predecessor, −1 = none; None = member i − 1 (member 0 leads).
        speed_limit: (B, N) speed limit of each member's lane [m/s].
        neighbour_speed: (B, M, H) predicted speeds of the neighbours [m/s] (None: from their predicted positions).
        lane_points: (B, N, P, 2) each member's lane centre line in the platoon frame (`lane_costs`).
        lane_bounds: (B, N, 2) [low, high] lateral offsets of each member's corridor from its centre line [m].
        lane_width: (B, N) width of each member's lane [m].
        lane_end: (B, N) distance [m] from each member along its lane (or route) to where the lane ends.
        route_target: (B, N) lateral offset [m] from each member's lane centre of the lane centre its route asks it
            to move to (0: no change asked, or none the corridor admits).
        route_distance: (B, N) distance [m] left to make that change.
    """

    neighbours: torch.Tensor | None = None
    neighbour_mask: torch.Tensor | None = None
    neighbour_length: torch.Tensor | None = None
    lateral_bounds: torch.Tensor | None = None
    boundary_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    predecessor: torch.Tensor | None = None
    speed_limit: torch.Tensor | None = None
    neighbour_speed: torch.Tensor | None = None
    lane_points: torch.Tensor | None = None
    lane_bounds: torch.Tensor | None = None
    lane_width: torch.Tensor | None = None
    lane_end: torch.Tensor | None = None
    route_target: torch.Tensor | None = None
    route_distance: torch.Tensor | None = None

    def _map(self, f: Callable[[torch.Tensor], torch.Tensor]) -> SceneContext:
        tensors = {k.name: getattr(self, k.name) for k in fields(self) if k.name != "boundary_fn"}
        return SceneContext(boundary_fn=self.boundary_fn, **{k: None if v is None else f(v) for k, v in tensors.items()})

    def repeat_interleave(self, repeats: int) -> SceneContext:
        """Repeat every per-scene tensor along the batch dim (to match samples folded into the batch; `repeat_rows`)."""
        return self._map(lambda x: repeat_rows(x, repeats))

    def to(self, device: torch.device | str) -> SceneContext:
        """Move tensors to a device."""
        return self._map(lambda x: x.to(device))


@dataclass(frozen=True)
class CostGuidance:
    """x̂0 ← x̂0 − f · scale · ∇cost(rollout(x̂0)), the per-scene gradient norm clipped, ``inner_steps`` times; f per
    scene the ``line_search`` fraction of lowest cost, or 0 when no fraction lowers it (`GuidanceConfig`).

    Attributes:
        config: the guidance settings (costs, step size, clipping).
        decode: normalised actions → physical actions clipped to the action limits.
        encode: physical actions → clipped normalised actions.
        rollout: (ego_state (B,N,4), actions (B,N,H,2), length (B,N)) → states (B,N,H,4).
        dt: plan step [s] (comfort cost).
    """

    config: GuidanceConfig
    decode: Callable[[torch.Tensor], torch.Tensor]
    encode: Callable[[torch.Tensor], torch.Tensor]
    rollout: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    dt: float

    def guided_steps(self, steps: int) -> int:
        """How many of the last denoising steps are guided."""
        return self.config.guided_steps(steps)

    def __call__(self, x0: torch.Tensor, ego_state: torch.Tensor, length: torch.Tensor,
                 member_mask: torch.Tensor, ctx: SceneContext, record: dict | None = None) -> torch.Tensor:
        """The guided clean estimate (normalised, clipped) of x0 (B, N, H, 2).

        ``record``: when given and the last inner step ran the line search, it is filled with what that search
        already computed for the returned x0: ``x0``, its ``states`` (B, N, H, 4) and ``terms`` (`plan_costs`
        under this config, detached), so that a caller ranking with the same costs need not roll out again."""
        cfg = self.config
        for _ in range(cfg.inner_steps):
            with torch.enable_grad():
                x_var = x0.detach().requires_grad_(True)
                actions = self.decode(x_var)
                states = self.rollout(ego_state, actions, length)
                terms = plan_costs(actions, states, length, member_mask, self.dt, cfg, ctx)
                (grad,) = torch.autograd.grad(terms["total"].sum(), x_var)
            if cfg.max_grad_norm is not None:
                norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
                grad = grad * (cfg.max_grad_norm / norm).clamp(max=1.0).view(-1, 1, 1, 1)
            if record is not None:
                record.clear()
            if not cfg.line_search:
                x0 = self.encode(self.decode(x0 - cfg.scale * grad))
                continue
            x0 = self._line_search(x0, cfg.scale * grad, terms, states.detach(), ego_state, length, member_mask, ctx,
                                   record)
        return x0

    def _line_search(self, x0: torch.Tensor, step: torch.Tensor, terms: dict[str, torch.Tensor], states: torch.Tensor,
                     ego_state: torch.Tensor, length: torch.Tensor, member_mask: torch.Tensor, ctx: SceneContext,
                     record: dict | None = None) -> torch.Tensor:
        """Per scene, the lowest-cost of x0 (its cost ``terms`` and ``states``) and x0 − f·step over the fractions f
        (scene b, fraction k → row b·K + k); ``record``: see ``__call__``."""
        b, k = x0.shape[0], len(self.config.line_search)
        fractions = torch.tensor(self.config.line_search, device=x0.device, dtype=x0.dtype)
        cand = self.encode(self.decode((x0[:, None] - fractions.view(1, k, 1, 1, 1) * step[:, None]).flatten(0, 1)))
        with torch.no_grad():
            ego_k, len_k, mask_k = (repeat_rows(v, k) for v in (ego_state, length, member_mask))
            actions = self.decode(cand)
            cand_states = self.rollout(ego_k, actions, len_k)
            cand_terms = plan_costs(actions, cand_states, len_k, mask_k, self.dt, self.config, ctx.repeat_interleave(k))
        rows = torch.arange(b, device=x0.device)
        options = torch.cat((x0[:, None], cand.view(b, k, *x0.shape[1:])), dim=1)  # (B, 1 + K, N, H, 2)
        best = torch.cat((terms["total"].detach()[:, None], cand_terms["total"].view(b, k)), dim=1).argmin(dim=1)
        x0 = options[rows, best]
        if record is not None:
            names = list(terms)
            # one stacked gather for every term instead of one per term
            first = torch.stack([terms[n].detach() for n in names], dim=-1)  # (B, T)
            rest = torch.stack([cand_terms[n] for n in names], dim=-1).view(b, k, len(names))
            picked = torch.cat((first[:, None], rest), dim=1)[rows, best]  # (B, T)
            all_states = torch.cat((states[:, None], cand_states.view(b, k, *states.shape[1:])), dim=1)
            record.update(x0=x0, states=all_states[rows, best], terms=dict(zip(names, picked.unbind(-1))))
        return x0


def disc_centres(pose: torch.Tensor, length: torch.Tensor, width: float, n_discs: int) -> torch.Tensor:
    """Disc centres (..., n_discs, 2) along each vehicle's axis; pose (..., ≥3) = [x, y, heading], length (...)."""
    r = width / 2
    frac = torch.linspace(-1.0, 1.0, n_discs, device=pose.device, dtype=pose.dtype) if n_discs > 1 else pose.new_zeros(1)
    half_span = (length / 2 - r).clamp(min=0.0)  # (...)
    offs = half_span[..., None] * frac  # (..., n_discs)
    c, s = torch.cos(pose[..., 2]), torch.sin(pose[..., 2])
    return torch.stack((pose[..., 0, None] + offs * c[..., None], pose[..., 1, None] + offs * s[..., None]), dim=-1)


def disc_radius(cfg: GuidanceConfig) -> float:
    """Radius [m] of the discs of `disc_centres`: width/√2, the distance from an end disc's centre to the box's
    corners, so the discs cover the whole box (with 3 discs, of a car up to 3 widths long). Discs of radius width/2
    left each corner 0.41 m out of reach for a 2 m wide car: two cars could clip corners at a low closing speed
    while the term read 0."""
    return cfg.vehicle_width / math.sqrt(2.0)


def _min_disc_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (..., Da, 2), b (..., Db, 2) → min centre distance over disc pairs (...).

    The square root is monotone, so it is taken once, of the smallest squared distance."""
    diff = a[..., :, None, :] - b[..., None, :, :]
    return (diff.pow(2).sum(-1).flatten(-2).amin(-1) + _EPS).sqrt()


# Extra room [m] on the prefilter's bound: skipped pairs clear the overlap distance by far more than rounding.
_REACH_MARGIN = 0.5


def _near_pairs(pos_a: torch.Tensor, span_a: torch.Tensor, pos_b: torch.Tensor, span_b: torch.Tensor,
                pair: torch.Tensor, cfg: GuidanceConfig) -> tuple[torch.Tensor, ...]:
    """Indices (b, i, j) of the allowed pairs (``pair`` (B,I,J)) whose discs may come within overlap distance.

    pos_a (B,I,H,2), pos_b (B,J,H,2) vehicle centres, span_* the largest disc offset from the centre (B,I), (B,J).
    Every disc-pair distance is at least the centre distance minus both spans, so a pair whose bound stays
    above two disc radii + buffer over the whole horizon has zero overlap and zero gradient at every step."""
    with torch.no_grad():
        gap = (pos_a[:, :, None] - pos_b[:, None]).pow(2).sum(-1).amin(-1).sqrt()  # (B,I,J)
        bound = gap - span_a[:, :, None] - span_b[:, None, :]
        near = pair & (bound < 2.0 * disc_radius(cfg) + cfg.buffer + _REACH_MARGIN)
    return near.nonzero(as_tuple=True)


def _pair_overlap(pose_a: torch.Tensor, len_a: torch.Tensor, pose_b: torch.Tensor, len_b: torch.Tensor,
                  index: tuple[torch.Tensor, ...], batch: int, cfg: GuidanceConfig) -> torch.Tensor:
    """Disc overlap of the pairs ``index`` = (b, i, j) of pose_a (B,I,H,≥3) and pose_b (B,J,H,≥3), summed per scene
    at each step, mean over time → (B,)."""
    bi, ai, bj = index
    horizon = pose_a.shape[-2]
    if bi.numel() == 0:
        return pose_a.new_zeros(batch)
    mine = disc_centres(pose_a[bi, ai], len_a[bi, ai, None].expand(-1, horizon), cfg.vehicle_width, cfg.n_discs)
    theirs = disc_centres(pose_b[bi, bj], len_b[bi, bj, None].expand(-1, horizon), cfg.vehicle_width, cfg.n_discs)
    viol = torch.relu(2.0 * disc_radius(cfg) + cfg.buffer - _min_disc_distance(mine, theirs))  # (P,H)
    return pose_a.new_zeros(batch, horizon).index_add(0, bi, viol).mean(-1)


def _span(length: torch.Tensor, cfg: GuidanceConfig) -> torch.Tensor:
    """Largest offset of a disc centre from the vehicle's centre [m] (see ``disc_centres``)."""
    return (length / 2 - cfg.vehicle_width / 2).clamp(min=0.0)


def separation_cost(
    states: torch.Tensor, length: torch.Tensor, member_mask: torch.Tensor, cfg: GuidanceConfig
) -> torch.Tensor:
    """Pairwise disc overlap between present members [m], summed over pairs, mean over time → (B,).

    Only pairs that may come within overlap distance are evaluated (``_near_pairs``); the others add exactly 0."""
    n = states.shape[1]
    pair = member_mask[:, :, None] & member_mask[:, None, :] & torch.ones(n, n, dtype=torch.bool, device=states.device).triu(1)
    span = _span(length, cfg)
    index = _near_pairs(states[..., :2], span, states[..., :2], span, pair, cfg)
    return _pair_overlap(states, length, states, length, index, states.shape[0], cfg)


def neighbour_cost(
    states: torch.Tensor, length: torch.Tensor, member_mask: torch.Tensor, ctx: SceneContext, cfg: GuidanceConfig
) -> torch.Tensor:
    """Disc overlap between members and predicted non-platoon vehicles → (B,); 0 without neighbours.

    Only (member, neighbour) pairs that may come within overlap distance are evaluated (``_near_pairs``)."""
    if ctx.neighbours is None or ctx.neighbours.shape[1] == 0:
        return states.new_zeros(states.shape[0])
    horizon = states.shape[-2]
    nb = ctx.neighbours[:, :, :horizon]
    nb_len = ctx.neighbour_length
    if nb_len is None:
        nb_len = torch.full(nb.shape[:2], cfg.neighbour_length, device=states.device, dtype=states.dtype)
    nb_mask = ctx.neighbour_mask if ctx.neighbour_mask is not None else torch.ones(nb.shape[:2], dtype=torch.bool, device=states.device)
    pair = member_mask[:, :, None] & nb_mask[:, None, :]
    index = _near_pairs(states[..., :2], _span(length, cfg), nb[..., :2], _span(nb_len, cfg), pair, cfg)
    return _pair_overlap(states, length, nb, nb_len, index, states.shape[0], cfg)


Located = tuple[torch.Tensor, torch.Tensor]


def _locate(states: torch.Tensor, ctx: SceneContext, located: Located | None) -> Located | None:
    """(offset, heading error) of states on their lanes' centre lines, when the context has them."""
    if located is None and ctx.lane_points is not None and ctx.lane_bounds is not None:
        located = lane_costs.lane_offsets(states, ctx.lane_points)
    return located


def road_cost(states: torch.Tensor, member_mask: torch.Tensor, ctx: SceneContext, cfg: GuidanceConfig,
              located: Located | None = None) -> torch.Tensor:
    """Distance outside the lane corridor, the lateral road bounds or a custom boundary penalty → (B,).

    ``located``: `lane_costs.lane_offsets` of ``states`` when the caller has it already."""
    if ctx.boundary_fn is not None:
        pen = ctx.boundary_fn(states)
    elif (located := _locate(states, ctx, located)) is not None:
        return lane_costs.corridor_road_cost(located[0], ctx.lane_bounds, member_mask, cfg.vehicle_width / 2)
    elif ctx.lateral_bounds is not None:
        y = states[..., 1]
        half = cfg.vehicle_width / 2
        lo, hi = ctx.lateral_bounds[..., 0:1], ctx.lateral_bounds[..., 1:2]
        pen = torch.relu(lo + half - y) + torch.relu(y + half - hi)
    else:
        return states.new_zeros(states.shape[0])
    return torch.where(member_mask[..., None], pen, 0.0).sum(1).mean(-1)


def _lane_width(ctx: SceneContext, like: torch.Tensor) -> torch.Tensor:
    """(B, N) each member's lane width: the context's, else highway-env's 4 m."""
    return ctx.lane_width if ctx.lane_width is not None else torch.full_like(like, 4.0)


def lane_cost(states: torch.Tensor, member_mask: torch.Tensor, ctx: SceneContext, cfg: GuidanceConfig,
              located: Located | None = None) -> torch.Tensor:
    """Misalignment of the plan's end with the lanes its corridor admits (`lane_costs.lane_alignment_cost`) → (B,);
    0 without lane centre lines in the context."""
    located = _locate(states, ctx, located)
    if located is None:
        return states.new_zeros(states.shape[0])
    width = _lane_width(ctx, ctx.lane_bounds[..., 0])
    return lane_costs.lane_alignment_cost(located[0], located[1], ctx.lane_bounds, width, member_mask,
                                          cfg.lane_heading_weight, cfg.lane_tail)


def lane_end_cost(states: torch.Tensor, length: torch.Tensor, member_mask: torch.Tensor, ctx: SceneContext,
                  cfg: GuidanceConfig, dt: float | None, located: Located | None = None) -> torch.Tensor:
    """How far [m] each member's front passes its lane's end, braking at ``lane_end_decel`` from each planned state,
    while the plan keeps it in that lane → (B,); 0 without
    ``lane_end`` in the context or a plan step ``dt``. In the lane: its centre within half a lane plus half a car's
    width of the lane's centre line, so some of its body is in the lane (when the context has the lines); the
    choice is discrete, the distance is differentiable in the speeds."""
    if ctx.lane_end is None or dt is None:
        return states.new_zeros(states.shape[0])
    speed = states[..., 3].clamp(min=0.0)
    travelled = (speed * dt).cumsum(-1)  # (B, N, H) along the lane from now
    if cfg.lane_end_decel > 0:  # a plan that keeps promising to leave the lane later must still be able to stop
        travelled = travelled + speed.pow(2) / (2.0 * cfg.lane_end_decel)
    over = torch.relu(travelled + length[..., None] / 2 + cfg.lane_end_margin - ctx.lane_end[..., None])
    located = _locate(states, ctx, located)
    if located is not None:
        width = _lane_width(ctx, ctx.lane_end)
        # in the lane while any part of the body is: past a lane's end a car straddling the line is off the road
        over = torch.where(located[0].abs() < (width[..., None] + cfg.vehicle_width) / 2, over, 0.0)
    return torch.where(member_mask[..., None], over, 0.0).sum(1).mean(-1)


# (m²) under the square root of the route term's |e|: its gradient is defined where the plan is on target.
_SMOOTH_L1 = 1e-2


def route_cost(member_mask: torch.Tensor, ctx: SceneContext, cfg: GuidanceConfig, located: Located) -> torch.Tensor:
    """Urgency-weighted distance [m] of each member asked to change lanes from its target lane's centre, mean over
    time, summed over members → (B,) (module docstring, ``route``); 0 without a route target in the context.

    ``located``: `lane_costs.lane_offsets` of the plan's states."""
    if ctx.route_target is None or ctx.route_distance is None:
        return located[0].new_zeros(located[0].shape[0])
    urgency = (1.0 - ctx.route_distance / cfg.route_horizon).clamp(0.0, 1.0)
    urgency = torch.where(member_mask & (ctx.route_target != 0), urgency, 0.0)
    error = (located[0] - ctx.route_target[..., None]).pow(2).add(_SMOOTH_L1).sqrt()  # |e|, smooth at 0
    return (urgency * error.mean(-1)).sum(1)


def _barrier(gap: torch.Tensor, speed: torch.Tensor, closing: torch.Tensor, cfg: GuidanceConfig) -> torch.Tensor:
    """Time-gap and TTC barriers [m] on a gap to a vehicle ahead (module docstring, ``headway``)."""
    return torch.relu(cfg.standstill_gap + cfg.min_time_gap * speed - gap) + torch.relu(cfg.ttc_min * closing - gap)


def neighbour_speeds(ctx: SceneContext, dt: float) -> torch.Tensor:
    """(B, M, H) the neighbours' predicted speeds: given, or from their predicted positions' differences."""
    if ctx.neighbour_speed is not None:
        return ctx.neighbour_speed
    pos = ctx.neighbours[..., :2]
    step = (pos[:, :, 1:] - pos[:, :, :-1]).norm(dim=-1) / dt  # (B, M, H-1)
    return torch.cat((step[:, :, :1], step), dim=-1) if step.shape[-1] else pos.new_zeros(pos.shape[:-1])


def neighbour_headway_cost(states: torch.Tensor, length: torch.Tensor, member_mask: torch.Tensor, ctx: SceneContext,
                           cfg: GuidanceConfig, dt: float) -> torch.Tensor:
    """Headway barriers of each member to every predicted non-platoon vehicle ahead of it in its lane → (B,).

    "Ahead in its lane" is measured in the neighbour's predicted heading frame at each step (ahead within
    ``headway_range``, lateral offset under ``same_lane_tol``): a rotated platoon frame does not mislead it, and
    the gap does not depend on the member's own heading, so the barrier brakes the member rather than steering it
    (in the member's frame turning away lengthens the projected gap, a gradient that swerved plans off the road)."""
    if ctx.neighbours is None or ctx.neighbours.shape[1] == 0:
        return states.new_zeros(states.shape[0])
    horizon = states.shape[-2]
    nb = ctx.neighbours[:, :, :horizon]  # (B, M, H, 3)
    nb_len = ctx.neighbour_length
    if nb_len is None:
        nb_len = torch.full(nb.shape[:2], cfg.neighbour_length, device=states.device, dtype=states.dtype)
    nb_mask = ctx.neighbour_mask if ctx.neighbour_mask is not None else torch.ones(nb.shape[:2], dtype=torch.bool,
                                                                                   device=states.device)
    speed = neighbour_speeds(ctx, dt)[:, :, :horizon]
    d = nb[:, None, ..., :2] - states[:, :, None, :, :2]  # (B, N, M, H, 2)
    c, s = torch.cos(nb[..., 2])[:, None], torch.sin(nb[..., 2])[:, None]  # (B, 1, M, H)
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    gap = along - (length[:, :, None, None] + nb_len[:, None, :, None]) / 2
    ahead = (along > 0) & (along < cfg.headway_range) & (across.abs() < cfg.same_lane_tol)
    ahead = ahead & member_mask[:, :, None, None] & nb_mask[:, None, :, None]
    closing = states[..., 3][:, :, None] - speed[:, None]
    pen = torch.where(ahead, _barrier(gap, states[..., 3][:, :, None], closing, cfg), 0.0)
    return pen.sum((1, 2)).mean(-1)


def headway_cost(
    states: torch.Tensor, length: torch.Tensor, member_mask: torch.Tensor, ctx: SceneContext, cfg: GuidanceConfig,
    dt: float | None = None,
) -> torch.Tensor:
    """Time-gap and TTC barriers on each member's gap to its in-lane predecessor and, given the plan step ``dt``,
    to the predicted non-platoon vehicles ahead of it in its lane [m] → (B,)."""
    b, n, horizon, _ = states.shape
    out = neighbour_headway_cost(states, length, member_mask, ctx, cfg, dt) if dt is not None else states.new_zeros(b)
    if n < 2 and ctx.predecessor is None:
        return out
    pred = ctx.predecessor
    if pred is None:
        pred = (torch.arange(n, device=states.device) - 1).expand(b, n)
    has = (pred >= 0) & member_mask
    idx = pred.clamp(min=0)
    has = has & torch.gather(member_mask, 1, idx)
    lead = torch.gather(states, 1, idx[:, :, None, None].expand(-1, -1, horizon, 4))  # (B,N,H,4)
    lead_len = torch.gather(length, 1, idx)
    gap = lead[..., 0] - states[..., 0] - (lead_len + length)[..., None] / 2
    closing = states[..., 3] - lead[..., 3]
    same_lane = (lead[..., 1] - states[..., 1]).abs() < cfg.same_lane_tol
    pen = torch.where(same_lane & has[..., None], _barrier(gap, states[..., 3], closing, cfg), 0.0)
    return out + pen.sum(1).mean(-1)


def comfort_cost(actions: torch.Tensor, member_mask: torch.Tensor, dt: float, cfg: GuidanceConfig) -> torch.Tensor:
    """Mean squared acceleration, jerk, steering and steering rate, summed over members → (B,)."""
    acc, steer = actions[..., 0], actions[..., 1]
    pen = acc.pow(2).mean(-1) + cfg.steer_weight * steer.pow(2).mean(-1)
    if actions.shape[-2] > 1:
        pen = pen + cfg.jerk_weight * (acc.diff(dim=-1) / dt).pow(2).mean(-1)
        pen = pen + cfg.steer_rate_weight * (steer.diff(dim=-1) / dt).pow(2).mean(-1)
    return torch.where(member_mask, pen, 0.0).sum(1)


def speed_cost(states: torch.Tensor, member_mask: torch.Tensor, ctx: SceneContext) -> torch.Tensor:
    """Speed above the lane's limit [m/s], summed over present members, mean over time → (B,)."""
    if ctx.speed_limit is None:
        return states.new_zeros(states.shape[0])
    over = torch.relu(states[..., 3] - ctx.speed_limit[..., None])
    return torch.where(member_mask[..., None], over, 0.0).sum(1).mean(-1)


def plan_costs(
    actions: torch.Tensor,
    states: torch.Tensor,
    length: torch.Tensor,
    member_mask: torch.Tensor,
    dt: float,
    cfg: GuidanceConfig,
    ctx: SceneContext | None = None,
) -> dict[str, torch.Tensor]:
    """Every weighted cost term (B,) plus their sum under key ``total``."""
    ctx = ctx or SceneContext()
    member_mask = member_mask.bool()
    w = cfg.weights
    located = _locate(states, ctx, None) if (w.road or w.lane or w.lane_end or w.route) and ctx.boundary_fn is None \
        else None
    fns = {
        "separation": lambda: separation_cost(states, length, member_mask, cfg),
        "neighbours": lambda: neighbour_cost(states, length, member_mask, ctx, cfg),
        "road": lambda: road_cost(states, member_mask, ctx, cfg, located),
        "lane": lambda: lane_cost(states, member_mask, ctx, cfg, located),
        "lane_end": lambda: lane_end_cost(states, length, member_mask, ctx, cfg, dt, located),
        "route": lambda: route_cost(member_mask, ctx, cfg, located) if located is not None else zero,
        "headway": lambda: headway_cost(states, length, member_mask, ctx, cfg, dt),
        "comfort": lambda: comfort_cost(actions, member_mask, dt, cfg),
        "speed": lambda: speed_cost(states, member_mask, ctx),
    }
    zero = states.new_zeros(states.shape[0])
    terms = {k: getattr(w, k) * f() if getattr(w, k) != 0 else zero for k, f in fns.items()}
    terms["total"] = sum(terms.values())
    return terms
