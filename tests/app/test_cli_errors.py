"""Every subcommand refuses bad arguments with one line on stderr, a non-zero exit and no traceback.

The console script runs as a user runs it, at 80 columns (a scenario problem must stay one
line there). Bad arguments are refused before Ray starts, so every case takes about a second.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("diffplatoon")


def refuse(*args: str, cwd: Path) -> str:
    """Run the command; assert it failed with one stderr line and no traceback; return that line."""
    env = dict(os.environ, COLUMNS="80", OMP_NUM_THREADS="1")
    out = subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture()
def blocked(tmp_path: Path) -> Path:
    """A path under a regular file: no user (root included) can write there."""
    (tmp_path / "file.txt").write_text("not a folder\n")
    return tmp_path / "file.txt" / "out"


def test_scenario_commands_name_the_file_and_what_was_expected(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    for command in ("validate", "show", "run", "render"):
        line = refuse("scenario", command, str(missing), cwd=tmp_path)
        assert line == f"{missing}: <document>: expected an existing scenario file, found none"
    broken = tmp_path / "broken.yaml"
    text = (ROOT / "scenarios" / "highway_platoon.yaml").read_text()
    broken.write_text(text.replace("size: 4", "size: -2", 1))
    line = refuse("scenario", "validate", str(broken), cwd=tmp_path)  # longer than 80 columns, not wrapped
    assert re.fullmatch(rf"{re.escape(str(broken))}:\d+: platoons\[0\]\.size: expected an integer between 1 "
                        r"and 16, got -2", line)
    assert refuse("scenario", "list", "extra", cwd=tmp_path).startswith("diffplatoon scenario list: ")


def test_unwritable_out_is_one_line_naming_the_option(tmp_path: Path, blocked: Path) -> None:
    expected = f": expected a folder in the path, found a file ({blocked.parent})"
    assert refuse("scenario", "schema", "--out", str(blocked), cwd=tmp_path) == f"--out {blocked}{expected}"
    gif = blocked / "x.gif"
    line = refuse("scenario", "render", "hard_brake", "--seconds", "1", "--out", str(gif), cwd=tmp_path)
    assert line == f"--out {gif}: expected a folder in the path, found a file ({blocked.parent})"
    assert refuse("demo", "--out", str(blocked), cwd=tmp_path) == f"--out {blocked}{expected}"
    line = refuse("demos", "collect", "--scenarios", "hard_brake", "--out", str(blocked), cwd=tmp_path)
    assert line == f"--out {blocked}{expected}"
    line = refuse("evaluate", "--policy", "cacc", "--scenarios", "hard_brake", "--out", str(blocked), cwd=tmp_path)
    assert str(blocked.parent) in line and "found a file" in line


def test_unknown_controller_expert_and_bad_flag_values(tmp_path: Path) -> None:
    for command in ("run", "render"):
        line = refuse("scenario", command, "hard_brake", "--controller", "nosuch", cwd=tmp_path)
        assert line.startswith("--controller nosuch: unknown policy 'nosuch'; valid policies: ")
    line = refuse("scenario", "run", "hard_brake", "--seconds", "-5", cwd=tmp_path)
    assert line == "--seconds -5: expected a positive, finite simulated time in seconds"
    line = refuse("scenario", "run", "hard_brake", "--seconds", "abc", cwd=tmp_path)
    assert line.startswith("diffplatoon scenario run: Invalid value for '--seconds': ")
    line = refuse("demos", "collect", "--scenarios", "hard_brake", "--expert", "nosuch", "--out",
                  str(tmp_path / "demos"), cwd=tmp_path)
    assert line.startswith("--expert nosuch: unknown policy 'nosuch'")
    assert not (tmp_path / "demos").exists()  # refused before anything ran
    line = refuse("evaluate", "--policy", "cacc", "--scenarios", "hard_brake", "--episodes", "0", cwd=tmp_path)
    assert line.startswith("diffplatoon evaluate: Invalid value for '--episodes': ")
    assert refuse("report", str(tmp_path), "--worst-k", "-1", cwd=tmp_path).startswith("diffplatoon report: ")
    assert refuse("bogus", cwd=tmp_path) == "diffplatoon: No such command 'bogus'. (see --help)"


def test_corrupt_and_missing_checkpoints(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage, not a checkpoint\n")
    line = refuse("scenario", "run", "hard_brake", "--controller", f"diffusion:{corrupt}", cwd=tmp_path)
    assert line.startswith(f"--controller diffusion:{corrupt}: ") and "checkpoint" in line
    line = refuse("scenario", "run", "hard_brake", "--controller", f"diffusion:{tmp_path / 'none.pt'}",
                  cwd=tmp_path)
    assert line.startswith(f"--controller diffusion:{tmp_path / 'none.pt'}: ")
    assert "not found" in line or "no such file" in line


def test_missing_inputs_of_report_pretrain_and_train(tmp_path: Path) -> None:
    assert refuse("report", str(tmp_path), cwd=tmp_path) == (
        f"{tmp_path}: expected an evaluation folder containing records.jsonl "
        "(or a search folder containing search.json), found none")
    missing = tmp_path / "missing.yaml"
    assert refuse("pretrain", str(missing), cwd=tmp_path) == (
        f"{missing}: <document>: expected an existing config file, found none")
    assert refuse("train", str(missing), cwd=tmp_path) == (
        f"{missing}: <document>: expected an existing training config file, found none")


def test_tables_keep_headers_and_names_whole_at_80_columns() -> None:
    import io

    from rich.console import Console

    from diffplatoon.evaluation.formatting import print_table
    from diffplatoon.evaluation.runner import summary_table

    long_name = "dense_highway_sweep--density=10--drop_probability=0.2"
    rows = [{"scenario": name, "policy": pol, "collision": 0.11488043402947258, "collision_k": 3, "collision_n": 20,
             "collision_lo": 0.05, "collision_hi": 0.3, "mean_speed_mean": 27.345, "min_ttc_mean": None}
            for name in ("hard_brake", long_name) for pol in ("idm", "diffusion:runs/demo/pretrain/best.pt", "cacc")]
    console = Console(width=80, file=io.StringIO())
    print_table(console, summary_table(rows, scenarios=["hard_brake", long_name],
                                       policies=["cacc", "diffusion:runs/demo/pretrain/best.pt", "idm"]))
    text = console.file.getvalue()
    for header in ("scenario", "policy", "collisions", "rate [95% CI]", "speed", "min TTC"):
        assert header in text
    assert long_name in text and "0.115 [0.050, 0.300]" in text and "27.3" in text
    assert "[m/s]" in text and "[s]" in text  # units in the caption are text, not markup
    order = [line.split("│")[2].strip() for line in text.splitlines() if line.startswith("│ hard_brake")]
    assert order == ["cacc", "diffusion:runs/demo/pretrain/best.pt", "idm"]  # the command line's order


def test_scenario_list_is_whole_when_piped_at_80_columns() -> None:
    from diffplatoon.scenarios import catalogue_names

    env = dict(os.environ, COLUMNS="80")
    out = subprocess.run([str(EXE), "scenario", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    names = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    assert set(catalogue_names()) <= names
    words = out.stdout.split()
    for header in ("name", "road", "platoons", "(veh.)", "traffic", "description"):
        assert header in words
    assert max(len(line.rstrip()) for line in out.stdout.splitlines()) <= 80


def test_numbers_are_printed_to_their_meaning() -> None:
    from diffplatoon.evaluation.formatting import fmt_num, fmt_pm

    assert fmt_num(0.11488043402947258) == "0.115"
    assert fmt_num(27.345) == "27.3" and fmt_num(float("nan")) == "-" and fmt_num(None) == "-"
    assert fmt_pm(27.345, 5.33e-17) == "27.3 ± 0.0"
    assert fmt_pm(0.1149, 0.0123) == "0.115 ± 0.012"
