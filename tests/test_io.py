"""Run-folder output (`diffplatoon.io`): atomic writes, torn-line-tolerant reads, no writes through links."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffplatoon import io


def test_append_refuses_a_symlink_and_leaves_its_target_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "records.jsonl").symlink_to(outside)
    with pytest.raises(OSError, match="symbolic link"):
        io.append_jsonl(out / "records.jsonl", {"a": 1})
    assert outside.read_text() == "keep\n"


def test_atomic_write_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("{}\n")
    link = tmp_path / "metrics.json"
    link.symlink_to(outside)
    io.atomic_write_json(link, {"x": 1})
    assert not link.is_symlink() and json.loads(link.read_text()) == {"x": 1}
    assert outside.read_text() == "{}\n"


def test_read_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    io.append_jsonl(path, {"k": 1})
    io.append_jsonl(path, {"k": 2})
    with path.open("ab") as handle:
        handle.write(b'{"k": 3')
    assert [r["k"] for r in io.read_jsonl(path)] == [1, 2]


def test_json_safe_makes_strict_json() -> None:
    import numpy as np

    value = {"a": float("nan"), 1: (np.float32(1.5), np.int64(3), np.bool_(True)), "b": [float("inf"), -0.0]}
    assert io.json_safe(value) == {"a": None, "1": [1.5, 3, True], "b": [None, -0.0]}
    json.dumps(io.json_safe(value), allow_nan=False)
