"""`diffusion:<checkpoint>` policy: registry, episodes with shield counters, receding horizon, plan broadcast, seeds,
corrupt or hostile checkpoint files refused with one clean error."""

import io
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffplatoon.agents.diffusion.controller import MemberLimits, PlannerController, clip_actions
from diffplatoon.agents.diffusion.guidance import GuidanceConfig
from diffplatoon.agents.diffusion.policy import DiffusionPolicy, file_hash
from diffplatoon.agents.diffusion.shield import LEVELS
from diffplatoon.agents.policy import CheckpointError, SimInfo, make_policy
from diffplatoon.cli import app
from diffplatoon.evaluation.episode import run_episode
from diffplatoon.scenarios import load_scenario
from diffplatoon.sim.comms import MESSAGE_FIELDS
from diffplatoon.sim.observation import EGO_FEATURES, Observer
from diffplatoon.sim.simulation import Simulation

pytestmark = pytest.mark.usefixtures("restore_torch_threads")  # its policies set torch's thread count


@pytest.fixture(scope="module")
def spec():
    return load_scenario("hard_brake").model_copy(update={"duration": 3.0})


@pytest.fixture(scope="module")
def checkpoint(spec, tiny_planner):
    return tiny_planner(spec)


class Recording(DiffusionPolicy):
    """The real policy, keeping what it saw and did."""

    def reset(self, info: SimInfo) -> None:
        super().reset(info)
        self.seen, self.actions, self.summaries = [], [], []

    def act(self, obs):
        out = super().act(obs)
        self.seen.append(obs)
        self.actions.append(out)
        self.summaries.append(self.plan_summary())
        return out


def drive(spec, policy, steps, episode=0):
    """Run `steps` policy steps of `spec` by hand; returns the list of (M, 2) actions."""
    sim = Simulation(spec, episode)
    observer = Observer(sim)
    policy.reset(SimInfo(spec, episode, tuple(sim.agent_names),
                         np.array([int(sim.world.platoon[r]) for r in sim.controlled]),
                         np.array([int(sim.world.member[r]) for r in sim.controlled]), 1.0 / spec.policy_frequency))
    out = []
    for _ in range(steps):
        out.append(policy.act(observer.observe()))
        sim.step(out[-1])
    return out


def test_make_policy_runs_an_episode_with_shield_counts(spec, checkpoint):
    policy = make_policy(f"diffusion:{checkpoint},samples=4,steps=3,replan_every=5", spec)
    assert isinstance(policy, DiffusionPolicy)
    assert (policy.params.samples, policy.params.steps, policy.params.replan_every) == (4, 3, 5)
    record = run_episode(spec, f"diffusion:{checkpoint},samples=4,steps=3", 0).record
    assert record["steps"] == 15 and not record.get("failed")
    assert set(record["shield"]) == set(LEVELS)
    assert sum(record["shield"].values()) == record["policy_stats"]["plan_calls"] >= 3
    assert record["policy_version"] == file_hash(checkpoint)


def test_parameters_parse_and_shield_off_reports_no_counts(spec, checkpoint):
    policy = make_policy(f"diffusion:{checkpoint},guidance=off,shield=off,samples=2", spec)
    assert (policy.params.guidance, policy.params.shield, policy.params.samples) == (False, False, 2)
    assert policy.guidance is None and "shield" not in policy.stats()
    record = run_episode(spec, policy, 0).record
    assert record["shield"] == {}
    with pytest.raises(ValueError, match="unknown diffusion policy parameter"):
        make_policy(f"diffusion:{checkpoint},sampels=2", spec)
    with pytest.raises(CheckpointError, match="ckpt.pt: not a diffplatoon planner checkpoint \\(no such file\\)"):
        make_policy("diffusion:/nonexistent/ckpt.pt", spec)


class _Payload:
    """Unpickling this creates `marker` (what a hostile checkpoint could do with a shell command)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _with_config(ckpt: dict, **changes) -> dict:
    return {**ckpt, "config": {**ckpt["config"], **changes}}


# Seeded noise bytes: about 1 in 12 random draws fails to unpickle with another error (IndexError,
# UnicodeDecodeError, KeyError), which is "unreadable: ..." instead; seed 0 is an UnpicklingError.
@pytest.mark.parametrize("corrupt, reason", [
    (lambda data, ckpt, marker: np.random.default_rng(0).bytes(4096), "corrupt, or holding pickled objects"),
    (lambda data, ckpt, marker: data[: len(data) // 2], "unreadable: PytorchStreamReader failed"),
    (lambda data, ckpt, marker: b"", "unreadable: EOFError"),
    (lambda data, ckpt, marker: pickle.dumps({**ckpt, "x": _Payload(marker)}), "corrupt, or holding pickled objects"),
    (lambda data, ckpt, marker: _saved({**ckpt, "x": _Payload(marker)}), "corrupt, or holding pickled objects"),
    (lambda data, ckpt, marker: _saved(_with_config(ckpt, horizon="ten")), "config horizon: unexpected value 'ten'"),
    (lambda data, ckpt, marker: _saved(_with_config(ckpt, nosuch=1)), "unexpected keyword argument 'nosuch'"),
    (lambda data, ckpt, marker: _saved({k: v for k, v in ckpt.items() if k != "ema"}), "(missing 'ema')"),
    (lambda data, ckpt, marker: _saved({**ckpt, "format": 99}), "format 99"),
    (lambda data, ckpt, marker: _saved([1, 2]), "expected a dict, found list"),
])
def test_corrupt_checkpoint_is_one_clean_error(spec, checkpoint, tmp_path, corrupt, reason):
    """Random bytes, a truncated file, pickled code, a wrong config: one `CheckpointError` (a ValueError)
    naming the file, nothing executed, and one line from the CLI."""
    data = checkpoint.read_bytes()
    ckpt = torch.load(checkpoint, weights_only=True)
    marker = tmp_path / "marker"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(corrupt(data, ckpt, marker))
    with pytest.raises(CheckpointError) as info:
        make_policy(f"diffusion:{bad}", spec)
    message = str(info.value)
    assert message.startswith(f"{bad}: not a diffplatoon planner checkpoint (") and reason in message, message
    assert "\n" not in message and not marker.exists()

    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--policy", f"diffusion:{bad}", "--scenarios", "hard_brake",
                                      "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "not a diffplatoon planner checkpoint" in result.output
    assert not marker.exists() and not out.exists()


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_receding_horizon_replans_every_r_steps_and_executes_the_plan_in_order(spec, checkpoint):
    policy = DiffusionPolicy(spec, checkpoint, shield=False, samples=2, steps=2, replan_every=3)
    plans, actions = [], []
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    policy.reset(SimInfo.from_spec(spec, 0))
    for _ in range(10):
        actions.append(policy.act(observer.observe()))
        plans.append(policy.plans[0].actions.copy())
        sim.step(actions[-1])
    assert policy.replan_steps == [0, 3, 6, 9]
    for k, a in enumerate(actions):
        planned = plans[k][:, k % 3]  # step k executes step k mod R of the plan made at R·(k // R)
        np.testing.assert_allclose(a[:, 1], np.clip(planned[:, 1], -0.6, 0.6))
        np.testing.assert_allclose(a[:, 0], np.clip(planned[:, 0], -8.0, 4.0))
    assert not np.array_equal(plans[0], plans[3])


def test_plan_summary_reaches_the_followers_inbox(spec, checkpoint):
    policy = Recording(spec, checkpoint, samples=2, steps=2)
    run_episode(spec, policy, 0)
    plan_dim = spec.comms.plan_dim
    first = policy.summaries[0]
    assert first.shape == (4, plan_dim)
    assert np.abs(first[:, -2]).min() > 10.0  # displacement after the 2 s horizon at ~25 m/s
    obs = policy.seen[1]  # the step after the first plan: messages sent at the end of step 0
    slot = np.flatnonzero(obs.inbox_mask[1] & (obs.inbox_sender[1] == 0))
    assert len(slot) == 1
    received = obs.inbox[1, slot[0], len(MESSAGE_FIELDS):len(MESSAGE_FIELDS) + plan_dim]
    np.testing.assert_allclose(received, first[0], rtol=1e-5, atol=1e-4)


def test_same_seed_same_actions(spec, checkpoint):
    make = lambda: DiffusionPolicy(spec, checkpoint, samples=3, steps=3, replan_every=2)  # noqa: E731
    a = np.stack(drive(spec, make(), 8, episode=1))
    b = np.stack(drive(spec, make(), 8, episode=1))
    np.testing.assert_array_equal(a, b)
    c = np.stack(drive(spec, make(), 8, episode=2))
    assert not np.array_equal(a, c)


def test_controller_sees_a_braking_neighbour_brake_and_reads_speed_limits(spec):
    """The controller's neighbour predictions use the acceleration estimated between two calls: the vehicle that
    brakes ahead of the platoon (6 m/s² in hard_brake) is predicted braking in the guidance context, and every
    member's lane speed limit reaches the speed cost."""
    spec = spec.model_copy(update={"duration": 8.0})
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    rows = np.arange(len(sim.agent_names))
    limits = MemberLimits.of(len(rows), 5.0, 2.0, 4.0, 8.0, 0.6)
    controller = PlannerController(dt=0.2, substeps=1, speed_range=(-40.0, 40.0), horizon=10, n_max=len(rows),
                                   m_max=16, guidance=GuidanceConfig(), shield=True, interval=0.2)
    brake_at = int(round(spec.events[0].at * spec.policy_frequency))
    for _ in range(brake_at + 2):  # the members hold their speed; the lead has braked for over a step
        sim.step(np.zeros((len(rows), 2)))
    first = controller.observe("p", observer.observe(), rows, limits)
    sim.step(np.zeros((len(rows), 2)))
    obs = observer.observe()
    scene = controller.observe("p", obs, rows, limits)
    assert not first.accel.any()  # nothing seen before the first call
    nb = scene.inputs.neighbours
    ahead = np.flatnonzero(scene.inputs.neighbour_mask & (nb[:, 0] > 0) & (np.abs(nb[:, 1]) < 2.0))
    lead = ahead[np.argmin(nb[ahead, 0])]
    assert scene.accel[lead] == pytest.approx(-6.0, abs=0.05)
    context = controller.guidance_context([scene])
    t = 0.2 * np.arange(1, 11)
    v = float(nb[lead, 3])
    braking = np.where(t < v / 6.0, v * t - 3.0 * t**2, v**2 / 12.0)
    np.testing.assert_allclose(context.neighbours[0, lead, :, 0].numpy() - nb[lead, 0], braking, atol=1e-3)
    assert context.neighbours.shape[1] == int(np.flatnonzero(scene.inputs.neighbour_mask)[-1]) + 1
    np.testing.assert_allclose(context.speed_limit[0].numpy(), obs.ego[rows, EGO_FEATURES.index("speed_limit")])
    assert (context.speed_limit > 0).all()
    # the inbox's plan fields are zeroed at the sampler's input, the named message fields are kept
    inputs = controller.inputs([scene])
    plan = slice(len(MESSAGE_FIELDS), -1)
    assert not inputs["inbox"][..., plan].any()
    torch.testing.assert_close(inputs["inbox"][..., :len(MESSAGE_FIELDS)],
                               torch.as_tensor(scene.inputs.inbox[None, ..., :len(MESSAGE_FIELDS)]))


def test_clip_actions_never_brakes_into_reverse_along_the_chunk():
    limits = MemberLimits.of(2, 5.0, 2.0, 3.0, 8.0, 0.5)
    actions = np.array([[[-8.0, 0.9], [2.0, -0.1]], [[-8.0, 0.0], [9.0, 0.0]], [[-8.0, 0.0], [np.nan, 0.0]]])
    out = clip_actions(actions, np.array([2.0, 10.0]), limits, dt=0.2)  # (T=3, n=2, 2)
    np.testing.assert_allclose(out[:, 0, 0], [-8.0, -2.0, 0.0])  # 2 m/s: one full step of −8 would reverse
    np.testing.assert_allclose(out[:, 1, 0], [2.0, 3.0, 0.0])
    np.testing.assert_allclose(out[:, :, 1], [[0.5, -0.1], [0.0, 0.0], [0.0, 0.0]])
