"""The `diffplatoon` command and the built wheel: the catalogue works after a non-editable install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from diffplatoon.scenarios import catalogue_names

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("diffplatoon")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(env or os.environ, COLUMNS="200")  # rich folds tables to the terminal width
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)


def test_version_and_help() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("diffplatoon 0.")
    out = run_cli("scenario", "--help")
    assert out.returncode == 0
    for command in ("list", "validate", "show", "schema"):
        assert command in out.stdout


def test_validate_ok_and_broken(tmp_path: Path) -> None:
    out = run_cli("scenario", "validate", "scenarios/onramp_merge.yaml")
    assert out.returncode == 0, out.stderr
    assert "OK scenarios/onramp_merge.yaml" in out.stdout
    broken = tmp_path / "broken.yaml"
    text = (ROOT / "scenarios" / "highway_platoon.yaml").read_text()
    text = text.replace("size: 4", "size: -2", 1)
    broken.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "size: -2" in row)
    out = run_cli("scenario", "validate", str(broken))
    assert out.returncode == 1
    assert out.stderr.strip() == f"{broken}:{line}: platoons[0].size: expected an integer between 1 and 16, got -2"


def test_show_resolves_defaults_and_sweep() -> None:
    out = run_cli("scenario", "show", "onramp_merge")
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load(out.stdout)
    assert data["name"] == "onramp_merge"
    assert data["traffic"]["idm"]["T"] == 1.5  # a default the file does not state
    out = run_cli("scenario", "show", "dense_highway_sweep", "--sweep")
    assert out.returncode == 0, out.stderr
    assert "dense_highway_sweep--density=10--drop_probability=0" in out.stdout
    assert "6 variants" in out.stdout


def test_schema_export(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    out = run_cli("scenario", "schema", "--out", str(target))
    assert out.returncode == 0, out.stderr
    import json

    schema = json.loads(target.read_text())
    assert "platoons" in schema["properties"] and schema["additionalProperties"] is False


def test_list_shows_whole_catalogue() -> None:
    out = run_cli("scenario", "list")
    assert out.returncode == 0, out.stderr
    for name in catalogue_names():
        assert name in out.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_ships_catalogue_and_works_without_the_source_tree(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheel_dir), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = wheel_dir.glob("diffplatoon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for scenario in catalogue_names():
        assert f"diffplatoon/scenarios/{scenario}.yaml" in names
    assert not any(n.startswith("diffplatoon/__init__") for n in names)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=600,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    code = (
        "import diffplatoon.scenarios as s, sys; "
        f"assert s.__file__.startswith({str(target)!r}), s.__file__; "
        "from diffplatoon.cli import app; sys.argv=['diffplatoon','scenario','validate','onramp_merge']; app()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "OK onramp_merge" in out.stdout


def test_evaluate_takes_several_scenarios_after_one_flag(tmp_path: Path) -> None:
    out = run_cli("evaluate", "--policy", "cacc", "--scenarios", "hard_brake", "cut_in", "--episodes", "1",
                  "--out", str(tmp_path / "eval"), "--worst-k", "0")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in (tmp_path / "eval" / "records.jsonl").read_text().splitlines()]
    assert sorted(r["scenario"] for r in records) == ["cut_in", "hard_brake"]
    assert (tmp_path / "eval" / "report.html").exists()


def test_unknown_policy_is_a_one_line_error(tmp_path: Path) -> None:
    out = run_cli("evaluate", "--policy", "nope", "--scenarios", "hard_brake", "--out", str(tmp_path / "e"))
    assert out.returncode == 1
    line = out.stderr.strip()
    assert line.startswith("--policy") and "unknown policy 'nope'; valid policies:" in line and "\n" not in line
