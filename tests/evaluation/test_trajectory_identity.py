"""Catalogue episodes drive as they did when `tests/data/trajectory_digests.json` was written.

Refactors of the simulator, the experts and the evaluator must not change behaviour: every
catalogue scenario's first sweep variant, episode 0 under CACC and IDM, gives the same
evaluation record (floats to 1e-9 relative, so another CPU's rounding does not fail it).
`experiments/trajectory_identity.py --check` compares the full set bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((ROOT / "tests" / "data" / "trajectory_digests.json").read_text())
_spec = importlib.util.spec_from_file_location("trajectory_identity", ROOT / "experiments" / "trajectory_identity.py")
identity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(identity)

CASES = sorted({k.rsplit("|", 1)[0] for k in GOLDEN if k.endswith("|0")})


@pytest.mark.parametrize("case", CASES[::3] + ["intersection|cacc", "roundabout|idm"])
def test_catalogue_records_unchanged(case: str) -> None:
    name, policy = case.split("|")
    spec = next(s for s in identity._specs([name.split("--")[0]]) if s.name == name)
    record = identity.episode_record(spec, policy, 0)
    golden = GOLDEN[f"{case}|0"]["record"]
    assert identity.same_value(golden, record, rel=1e-9), f"{case}: record differs from the golden one"
