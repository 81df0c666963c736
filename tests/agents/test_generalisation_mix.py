"""The generalisation mix (configs/train_mix) and its held-out scenarios (configs/held_out), and the
invariances of the planner's inputs: the platoon-frame features do not depend on where the world is
(translation and rotation of a real road) nor on how far a platoon is padded (member count)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.demos import platoon_rows, resolve_scenarios
from diffplatoon.agents.diffusion.model import DenoiserConfig, JointDenoiser
from diffplatoon.agents.expert_base import members_of
from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.scenarios import ScenarioSpec, expand_sweep, load_scenario
from diffplatoon.scenarios.schema import ObservationSpec
from diffplatoon.sim.comm_graph import TOPOLOGIES
from diffplatoon.sim.observation import Observer, flat_layout
from diffplatoon.sim.simulation import Simulation

ROOT = Path(__file__).resolve().parents[2]
TRAIN_MIX = sorted((ROOT / "configs" / "train_mix").glob("*.yaml"))
HELD_OUT = sorted((ROOT / "configs" / "held_out").glob("*.yaml"))
FAST_ROADS = ("highway", "onramp_merge", "lane_drop")  # roads where the 15–33 m/s range applies
HELD_OUT_SIZE, HELD_OUT_SPEED, HELD_OUT_COMMS = 5, 27.0, (3, 0.3)  # (latency [steps], drop probability)
K, P = ObservationSpec().neighbours, ObservationSpec().lane_points  # the scenarios' observation (defaults)
MAX_MIX_VARIANTS = 80  # every variant gets --episodes demo episodes: keep the mix collectable in one run


def _variants(paths: list[Path]) -> list[ScenarioSpec]:
    return [v for p in paths for v in expand_sweep(load_scenario(p))[0]]


@pytest.fixture(scope="module")
def mix() -> list[ScenarioSpec]:
    return _variants(TRAIN_MIX)


@pytest.fixture(scope="module")
def held_out() -> list[ScenarioSpec]:
    return _variants(HELD_OUT)


def _lanes(spec: ScenarioSpec) -> int:
    road = spec.road
    return road.main_lanes if road.type == "onramp_merge" else road.lanes


def _cruise(spec: ScenarioSpec) -> list[float]:
    """Each platoon's cruise speed as the experts drive it: its own speed, or the traffic's mean desired
    speed where that is faster (a platoon entering from a ramp speeds up to the stream)."""
    info = SimInfo.from_spec(spec)
    cruise = members_of(info, None).cruise
    return [float(cruise[np.flatnonzero(info.platoon == k)[0]]) for k in range(len(spec.platoons))]


def _comms(spec: ScenarioSpec) -> tuple[int, float]:
    return spec.comms.latency, spec.comms.drop_probability


def _signature(spec: ScenarioSpec) -> tuple:
    """What a held-out scenario varies: road type, each platoon's (size, speed), the V2V latency and drops."""
    return (spec.road.type, tuple(zip((p.size for p in spec.platoons), _cruise(spec))), _comms(spec))


# ------------------------------------------------------------------------------------------------ the mix


def test_the_mix_files_load_and_stay_collectable(mix):
    assert len(TRAIN_MIX) >= 5 and len(HELD_OUT) >= 4
    names = [s.name for s in mix]
    assert len(set(names)) == len(names)
    assert 30 <= len(mix) <= MAX_MIX_VARIANTS
    # one demo folder takes them all: `demos collect` expands the sweeps and checks the stored dimensions
    assert [s.name for s in resolve_scenarios([str(p) for p in TRAIN_MIX])] == names
    assert len({(features.obs_dim(s), features.msg_dim(s), s.policy_frequency) for s in mix}) == 1


def test_the_mix_spans_sizes_speeds_lanes_roads_and_comms(mix):
    fast = [s for s in mix if s.road.type in FAST_ROADS]
    sizes = {p.size for s in fast for p in s.platoons}
    speeds = {v for s in fast for v in _cruise(s)}
    assert sizes == {2, 3, 4, 6, 7, 8}
    assert min(speeds) == 15 and max(speeds) == 33 and len(speeds) >= 5
    assert all(abs(v - HELD_OUT_SPEED) >= 4 for v in speeds)
    assert {_lanes(s) for s in fast} == {2, 3, 4}
    for road in FAST_ROADS:  # sizes and speeds vary on every fast road type, not on the highway only
        on_road = [s for s in fast if s.road.type == road]
        assert len({p.size for s in on_road for p in s.platoons}) >= 2, road
        assert len({v for s in on_road for v in _cruise(s)}) >= 2, road
    assert {s.road.type for s in mix} == {"highway", "onramp_merge", "lane_drop", "roundabout", "intersection"}
    topologies = [p.topology if p.topology is not None else s.comms.topology for s in mix for p in s.platoons]
    assert {t for t in topologies if isinstance(t, str)} == set(TOPOLOGIES)
    assert any(not isinstance(t, str) for t in topologies)  # an explicit edge list too
    assert len({s.comms.latency for s in mix}) >= 3 and len({s.comms.drop_probability for s in mix}) >= 3
    assert max(s.comms.latency for s in mix) >= 5 and max(s.comms.drop_probability for s in mix) >= 0.5


def test_no_mix_variant_matches_a_held_out_scenario(mix, held_out):
    assert {s.name for s in held_out} == {"held_out_platoon5_fast", "held_out_platoon8_lossy",
                                          "held_out_onramp_platoon5", "held_out_roundabout_two_platoons"}
    seen = {_signature(s) for s in mix}
    for spec in held_out:
        assert _signature(spec) not in seen, spec.name
    # and what is held out is out of the mix altogether, not only in that combination
    assert HELD_OUT_SIZE not in {p.size for s in mix for p in s.platoons}
    assert HELD_OUT_SPEED not in {v for s in mix for v in _cruise(s)} | {p.speed for s in mix for p in s.platoons}
    assert HELD_OUT_COMMS[0] not in {s.comms.latency for s in mix}
    assert HELD_OUT_COMMS[1] not in {s.comms.drop_probability for s in mix}
    assert not any(s.road.type == "roundabout" and len(s.platoons) > 1 for s in mix)
    by_name = {s.name: s for s in held_out}
    assert [p.size for p in by_name["held_out_platoon5_fast"].platoons] == [HELD_OUT_SIZE]
    for name in ("held_out_platoon5_fast", "held_out_platoon8_lossy", "held_out_onramp_platoon5"):
        assert _cruise(by_name[name]) == [HELD_OUT_SPEED], name
    assert _comms(by_name["held_out_platoon8_lossy"]) == HELD_OUT_COMMS
    assert by_name["held_out_platoon8_lossy"].platoons[0].size == 8
    assert by_name["held_out_onramp_platoon5"].platoons[0].size == HELD_OUT_SIZE
    assert by_name["held_out_roundabout_two_platoons"].road.type == "roundabout"
    assert len(by_name["held_out_roundabout_two_platoons"].platoons) == 2


def test_held_out_scenarios_start_with_their_platoons_on_the_road(held_out):
    for spec in held_out:
        sim = Simulation(spec, 0)
        obs = Observer(sim).observe()
        assert obs.alive.all() and len(obs.alive) == spec.num_controlled, spec.name


# ------------------------------------------------------------------------------------------------ invariance


def _straight_road_scenario(origin: tuple[float, float], angle: float) -> ScenarioSpec:
    """A 3-lane straight lane-graph road of 1500 m starting at `origin`, pointing at `angle`, with traffic and
    a 5-member platoon whose inbox is lossy (so the comm mask is not the full topology)."""
    end = (origin[0] + 1500 * math.cos(angle), origin[1] + 1500 * math.sin(angle))
    return ScenarioSpec.model_validate({
        "name": "straight", "seed": 7, "duration": 10,
        "road": {"type": "lane_graph", "nodes": {"a": origin, "b": end},
                 "lanes": [{"from": "a", "to": "b", "count": 3, "speed_limit": 30}]},
        "traffic": {"density": 15, "speed_range": [20, 26]},
        "platoons": [{"id": "p0", "size": 5, "lane": ["a", "b", 1], "start": 300, "speed": 24, "time_gap": 0.8}],
        "comms": {"topology": "predecessor_leader", "drop_probability": 0.3, "latency": 1},
    })


def _inputs_along(spec: ScenarioSpec, steps: int, n_max: int) -> list[features.PlatoonInputs]:
    """The platoon's inputs at every step of a CACC rollout."""
    sim = Simulation(spec, 3)
    observer = Observer(sim)
    policy = make_policy("cacc", spec)
    policy.reset(SimInfo.from_spec(spec, 3))
    rows = platoon_rows(spec)[0]
    lengths = features.member_lengths(spec)[rows]
    out = []
    for _ in range(steps):
        obs = observer.observe()
        out.append(features.platoon_inputs(obs, rows, n_max, length=lengths))
        sim.step(policy.act(obs))
    return out


@pytest.mark.parametrize("origin, angle", [((500.0, 0.0), 0.0), ((-800.0, 350.0), 0.6)],
                         ids=["shifted_500m", "shifted_and_rotated"])
def test_platoon_features_do_not_depend_on_where_the_world_is(origin, angle):
    here = _inputs_along(_straight_road_scenario((0.0, 0.0), 0.0), 15, 6)
    there = _inputs_along(_straight_road_scenario(origin, angle), 15, 6)
    assert any(p.neighbour_mask.any() for p in here) and any(p.inbox_mask.any() for p in here)
    for t, (p, q) in enumerate(zip(here, there)):
        for key in ("member_mask", "inbox_mask", "comm_mask", "neighbour_mask"):
            np.testing.assert_array_equal(getattr(p, key), getattr(q, key), err_msg=f"{key} at step {t}")
        # the world coordinates are float32 (1e-4 m resolution at 2 km), the features relative to the platoon
        for key in ("obs", "inbox", "ego_state", "length", "neighbours"):
            a, b = getattr(p, key), getattr(q, key)
            if key == "obs":
                a, b = _nearest_first(a), _nearest_first(b)
            if key in ("ego_state", "neighbours"):  # headings: compare on the circle
                a, b = _unwrap_heading(a, 2), _unwrap_heading(b, 2)
            if key == "inbox":
                a, b = _unwrap_heading(a, features._H), _unwrap_heading(b, features._H)
            np.testing.assert_allclose(a, b, atol=2e-3, err_msg=f"{key} at step {t}")
        np.testing.assert_allclose(q.frame[:2], features.to_world(p.frame, [*origin, angle])[:2], atol=1e-2)


def _nearest_first(obs: np.ndarray) -> np.ndarray:
    """`PlatoonInputs.obs` with each member's neighbour slots sorted by (distance to 1 cm, dx, dy).

    The observer sorts neighbours nearest first; two vehicles at the same distance (a platoon spawned at
    equal gaps: the members ahead and behind) come in an order set by the rounding of the world
    coordinates, so the order of exact ties is not compared."""
    layout = flat_layout(K, P, 0, 0).slices
    out = obs.astype(np.float64).copy()
    nb = out[:, layout["neighbours"]].reshape(len(obs), K, -1)
    mask = out[:, layout["neighbour_mask"]]
    for i in range(len(obs)):
        order = np.lexsort((nb[i, :, 1], nb[i, :, 0], np.round(np.hypot(nb[i, :, 0], nb[i, :, 1]), 2), 1 - mask[i]))
        nb[i], mask[i] = nb[i, order], mask[i, order]
    out[:, layout["neighbours"]] = nb.reshape(len(obs), -1)
    out[:, layout["neighbour_mask"]] = mask
    return out


def _unwrap_heading(a: np.ndarray, col: int) -> np.ndarray:
    a = a.astype(np.float64).copy()
    h = a[..., col]
    a[..., col] = np.sin(h)
    return np.concatenate([a, np.cos(h)[..., None]], axis=-1)


def test_a_platoon_padded_further_keeps_its_members_features():
    spec = load_scenario(ROOT / "configs" / "held_out" / "platoon5_fast.yaml").model_copy(update={"duration": 4.0})
    tight = _inputs_along(spec, 6, 5)
    wide = _inputs_along(spec, 6, 16)
    n = 5
    for p, q in zip(tight, wide):
        for key in ("obs", "inbox", "inbox_mask", "member_mask", "ego_state", "length"):
            np.testing.assert_array_equal(getattr(p, key), getattr(q, key)[:n], err_msg=key)
        np.testing.assert_array_equal(p.comm_mask, q.comm_mask[:n, :n])
        for key in ("frame", "neighbours", "neighbour_mask"):
            np.testing.assert_array_equal(getattr(p, key), getattr(q, key), err_msg=key)
        # padding rows are masked and empty
        assert not q.member_mask[n:].any() and not q.inbox_mask[n:].any()
        assert not q.comm_mask[n:].any() and not q.comm_mask[:, n:].any()
        assert not q.obs[n:].any() and not q.ego_state[n:].any() and not q.inbox[n:].any()


def test_the_denoiser_ignores_padding_members():
    """The model reading the padded inputs: the members' predictions are the same at n_max 5 and 8."""
    spec = load_scenario(ROOT / "configs" / "held_out" / "platoon5_fast.yaml").model_copy(update={"duration": 2.0})
    p, q = _inputs_along(spec, 3, 5)[-1], _inputs_along(spec, 3, 8)[-1]
    torch.manual_seed(0)
    model = JointDenoiser(DenoiserConfig(obs_dim=features.obs_dim(spec), msg_dim=features.msg_dim(spec), d_model=32,
                                         n_layers=2, n_heads=4, chunk=5)).eval()
    x5 = torch.randn(1, 5, 10, 2)
    x8 = torch.cat([x5, 3 * torch.randn(1, 3, 10, 2)], dim=1)  # whatever sits in the padding rows
    t = torch.tensor([37])

    def run(scene: features.PlatoonInputs, x: torch.Tensor) -> torch.Tensor:
        b = features.stack([scene])
        ego = torch.cat([b["ego_state"], b["length"][..., None]], dim=-1) / 10.0
        with torch.no_grad():
            return model(x, t, b["obs"] / 100.0, ego, b["inbox"] / 100.0, b["inbox_mask"], b["comm_mask"],
                         b["member_mask"])

    out5, out8 = run(p, x5), run(q, x8)
    torch.testing.assert_close(out8[:, :5], out5, atol=1e-5, rtol=1e-5)
    assert not out8[:, 5:].any()


def test_the_readme_commands_collect_into_the_folder_pretrain_reads():
    from diffplatoon.agents.diffusion.pretrain_config import load_config

    cfg = load_config(ROOT / "configs" / "train_mix" / "pretrain" / "pretrain_mix.yaml")
    readme = (ROOT / "configs" / "train_mix" / "README.md").read_text()
    assert (f"diffplatoon demos collect --scenarios configs/train_mix/*.yaml --expert cacc --episodes 10 "
            f"--out {cfg.demos}") in readme
    assert "diffplatoon pretrain configs/train_mix/pretrain/pretrain_mix.yaml" in readme
    assert f"{len(_variants(TRAIN_MIX))} variants" in readme
