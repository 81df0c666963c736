"""A seeded generator of mutated catalogue documents, for the scenario fuzz tests.

`mutated_documents(seed, count)` yields (label, YAML text) pairs: a catalogue scenario with one to
three mutations. Structured mutations edit the parsed document and dump it again: type swaps,
extremes, NaN and infinities, missing and extra keys, references to the wrong kind of vehicle,
and small perturbations of numbers (so that many documents stay valid and reach the simulator).
Text mutations damage the YAML itself: control characters, random bytes, truncation, duplicated
or dropped lines, stray brackets. The same seed always gives the same documents.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from importlib import resources
from typing import Any

import yaml

from diffplatoon.scenarios import catalogue_names

EXTREMES: list[Any] = [0, -1, 1, 0.0, -0.0, 1e-9, -1e9, 1e9, 1.0e308, -1.0e308, 2**63, 2**64, -(2**63) - 1,
                       float("nan"), float("inf"), float("-inf"), 10**50, 1e-300]
SWAPS: list[Any] = [True, False, None, "", "x", "p0", "p0.0", [], [1, 2], [1, 2, 3], {}, {"a": 1}, 3, 2.5, "1e3",
                    ".nan", [float("nan"), 1.0], [500, 500], [500, 500.0001], [20, float("inf")]]
JUNK = ["\x00", "\x07", "\x1b", "\ufffd", "{", "}", "[", "]", ":", "- ", "&a ", "*a", "!!python/name:os.system ",
        "\t", "'", '"', "#", "? ", "%YAML 1.1\n", "---\n", "...\n", "<<: *x\n"]


def catalogue_texts() -> dict[str, str]:
    """Catalogue name -> YAML text."""
    root = resources.files("diffplatoon.scenarios")
    return {name: (root / f"{name}.yaml").read_text(encoding="utf-8") for name in catalogue_names()}


def mutated_documents(seed: int, count: int) -> Iterator[tuple[str, str]]:
    """`count` mutated catalogue documents as (label, text); deterministic in `seed`."""
    rng = random.Random(seed)
    texts = catalogue_texts()
    names = sorted(texts)
    for k in range(count):
        name = rng.choice(names)
        if rng.random() < 0.2:
            text, what = _text_mutation(texts[name], rng)
        else:
            data = yaml.safe_load(texts[name])
            whats = [_structured_mutation(data, rng) for _ in range(rng.randint(1, 3))]
            text, what = yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "; ".join(whats)
        yield f"fuzz{seed}-{k}-{name}: {what}", text


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path into the document (containers and leaves), the root excluded."""
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, path + (i,))
    return found


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _structured_mutation(data: dict, rng: random.Random) -> str:
    paths = _paths(data)
    if not paths:
        data["name"] = "emptied"
        return "refill an emptied document"
    path = rng.choice(paths)
    parent, key = _get(data, path[:-1]), path[-1]
    value = parent[key]
    kind = rng.choices(["perturb", "extreme", "swap", "delete", "extra", "reference", "grow"],
                       weights=[6, 3, 3, 2, 1, 2, 1])[0]
    if kind == "perturb":
        numeric = [p for p in paths if _is_number(_get(data, p))]
        if not numeric:
            return "perturb: nothing numeric"
        path = rng.choice(numeric)
        parent, key = _get(data, path[:-1]), path[-1]
        old = parent[key]
        factor = rng.choice([0.0, 0.1, 0.5, 0.9, 1.1, 2.0, 5.0, -1.0])
        parent[key] = type(old)(old * factor) if isinstance(old, float) else int(round(old * factor))
        return f"perturb {_fmt(path)} x{factor}"
    if kind == "extreme":
        parent[key] = rng.choice(EXTREMES)
    elif kind == "swap":
        parent[key] = rng.choice(SWAPS)
    elif kind == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
        return f"delete {_fmt(path)}"
    elif kind == "extra":
        target = value if isinstance(value, dict) else parent if isinstance(parent, dict) else data
        target[rng.choice(["extra", "lanes", "platoons", "speed", "at", "type"])] = rng.choice(SWAPS + EXTREMES)
        return f"extra key near {_fmt(path)}"
    elif kind == "reference":
        platoons = data.get("platoons")
        ids = [str(p["id"]) for p in platoons if isinstance(p, dict) and "id" in p] if isinstance(platoons, list) else []
        refs = ids + [f"{i}.{k}" for i in ids for k in (0, 1, 7)] + ["ghost", "lead", "cutter", ""]
        events = data.setdefault("events", [])
        if not isinstance(events, list):
            data["events"] = events = []
        kind_ = rng.choice(["brake", "speed_change", "cut_in", "comm_outage"])
        event: dict[str, Any] = {"type": kind_, "at": rng.choice([0, 1, 5, 1e6, float("inf")])}
        if kind_ == "comm_outage":
            event["vehicles"] = rng.sample(refs, 2)
            event["duration"] = rng.choice([1, 5, float("inf"), 1e9])
        else:
            event["vehicle"] = rng.choice(refs)
        if kind_ == "cut_in":
            event["ahead_of"] = rng.choice(refs)
        if kind_ == "speed_change":
            event["speed"] = rng.choice([0, 10, 60, 1e9])
        if rng.random() < 0.3:  # a condition instead of (or, invalidly, besides) a time
            quantity = rng.choice(["distance", "gap", "time_gap", "speed"])
            ref: Any = rng.choice(refs) if quantity == "speed" else rng.sample(refs, 2)
            event["when"] = {quantity: ref, rng.choice(["below", "above"]): rng.choice([0, 15, 1e6, float("nan")])}
            if rng.random() < 0.8:
                del event["at"]
        events.append(event)
        return f"event {event}"
    else:  # grow: a larger copy of a list or a bigger count
        if isinstance(value, list) and value:
            parent[key] = value * rng.choice([2, 5, 20])
        elif _is_number(value):
            parent[key] = value * rng.choice([10, 100, 10_000])
        return f"grow {_fmt(path)}"
    return f"{kind} {_fmt(path)} = {parent[key]!r:.60}"


def _text_mutation(text: str, rng: random.Random) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    kind = rng.choice(["junk", "bytes", "truncate", "duplicate", "drop", "indent"])
    if kind == "junk":
        line = lines[i]
        at = rng.randrange(len(line) + 1)
        lines[i] = line[:at] + rng.choice(JUNK) + line[at:]
    elif kind == "bytes":
        lines[i] = "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randint(1, 40))) + "\n"
    elif kind == "truncate":
        return text[: rng.randrange(len(text))], "truncate"
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "drop":
        lines.pop(i)
    else:
        lines[i] = " " * rng.choice([1, 3, 8]) + lines[i]
    return "".join(lines), f"text {kind} at line {i + 1}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(path: tuple) -> str:
    return ".".join(str(p) for p in path)
