"""Search spaces: which scenario fields a failure search varies, and their nominal distributions.

A space file (YAML) names scenario fields by the dotted paths sweeps use (`diffplatoon.
scenarios.sweep`: ``events.0.deceleration``, ``comms.latency``, ``vehicles.0.start``) and gives
each a nominal distribution (`distributions`), plus what counts as a failure, the continuous
criticality that guides the search, and the cross-entropy settings:

    failure: collision            # or at_fault_collision
    criticality: min_ttc          # min_ttc, min_gap or max_drac
    parameters:
      events.0.deceleration: {type: truncnormal, mean: 6, std: 1.5, low: 2, high: 12}
      comms.latency: {type: categorical, values: [0, 1, 2, 5], probs: [0.6, 0.3, 0.09, 0.01]}
    search: {round_size: 100, elite_fraction: 0.1}

`load_space(path, spec)` validates it the way scenarios are validated: every problem at once,
each as ``file:line: field: message`` (`ScenarioError`). Beyond the schema, a path must name an
existing field of the scenario, and every value at the ends of each parameter's range (the
others at their medians) must give a valid scenario. An integer field (``comms.latency``) takes
a continuous parameter rounded to the nearest integer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Literal

import numpy as np
from pydantic import Field, StrictInt, ValidationError

from diffplatoon.evaluation.search.distributions import Categorical, Distribution
from diffplatoon.scenarios import ScenarioError, ScenarioSpec, validate_data
from diffplatoon.scenarios.errors import Path, Problem, format_path
from diffplatoon.scenarios.limits import MAX_INT
from diffplatoon.scenarios.loader import schema_problems
from diffplatoon.scenarios.schema import Strict
from diffplatoon.scenarios.sweep import get_path, set_path
from diffplatoon.scenarios.yaml_source import line_of, parse_yaml, read_yaml_text

MAX_PARAMETERS = 32
# Fields a search may not vary: they name things or hold the sample's own identity.
_RESERVED = ("name", "seed", "description", "sweep")


class SearchSettings(Strict):
    """How the cross-entropy search spends its budget."""

    method: Literal["cem", "monte_carlo"] = Field(
        "cem", description="cem: adapt a proposal towards failures; monte_carlo: sample the nominal only.")
    round_size: StrictInt = Field(100, ge=2, le=100_000, description="Episodes per round.")
    elite_fraction: float = Field(0.1, gt=0, lt=1, description="Fraction of a round, most critical first, "
                                  "that the next proposal is fitted to (rho).")
    smoothing: float = Field(0.9, gt=0, le=1, description="Weight of the new fit against the previous proposal.")
    defensive: float = Field(0.1, ge=0, lt=1, description="Weight of the nominal in every adapted proposal "
                             "(bounds each importance weight by 1/defensive).")
    max_adapt_rounds: StrictInt = Field(5, ge=1, le=100, description="Rounds that adapt the proposal at most; "
                                        "later rounds sample the frozen proposal for the estimate.")
    seed: StrictInt = Field(0, ge=0, le=MAX_INT, description="Seeds every draw of the search.")


class SpaceSpec(Strict):
    """A space file."""

    description: str = Field("", description="What the search asks, in a sentence.")
    failure: Literal["collision", "at_fault_collision"] = Field(
        "collision", description="collision: any collision involving a platoon member; at_fault_collision: one "
                                 "a member caused.")
    criticality: Literal["min_ttc", "min_gap", "max_drac"] = Field(
        "min_ttc", description="Continuous score ranking episodes towards failure (a failure ranks above all).")
    parameters: dict[str, Distribution] = Field(..., min_length=1, max_length=MAX_PARAMETERS,
                                                description="Dotted scenario field path -> nominal distribution.")
    search: SearchSettings = Field(default_factory=SearchSettings, description="Cross-entropy settings.")


@dataclass(frozen=True)
class SearchSpace:
    """A validated space bound to its scenario: draws parameters and turns them into scenario specs."""

    spec: SpaceSpec
    scenario: ScenarioSpec
    source: str
    integer: tuple[bool, ...]  # per parameter: the field is an integer (continuous draws are rounded)

    @property
    def paths(self) -> list[str]:
        """The varied fields, in file order."""
        return list(self.spec.parameters)

    @property
    def distributions(self) -> list[Any]:
        """Their nominal distributions, in the same order."""
        return list(self.spec.parameters.values())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n nominal draws, (n, parameters) latent values."""
        return np.stack([d.sample(rng, n) for d in self.distributions], axis=1).reshape(n, len(self.paths))

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        """Nominal log-density of (n, parameters) latent values (independent parameters)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return np.sum([d.log_pdf(x[:, j]) for j, d in enumerate(self.distributions)], axis=0)

    def values(self, latent: np.ndarray) -> dict[str, Any]:
        """Field path -> the value one latent row gives that field."""
        out: dict[str, Any] = {}
        for path, dist, is_int, v in zip(self.paths, self.distributions, self.integer, latent):
            value = dist.value(float(v))
            out[path] = int(round(value)) if is_int and not isinstance(dist, Categorical) else value
        return out

    def medians(self) -> np.ndarray:
        """A central latent row: each parameter's median (a categorical's most likely value)."""
        row = []
        for d in self.distributions:
            if isinstance(d, Categorical):
                row.append(float(np.argmax(d.p)))
            else:
                row.append(float(np.median(d.sample(np.random.default_rng(0), 2001))))
        return np.asarray(row)

    def draw_names(self, index: int, n: int) -> list[str]:
        """Scenario names of round `index`'s draws: ``<scenario>--rNN-IIII``."""
        return [f"{self.scenario.name}--r{index:02d}-{i:04d}" for i in range(n)]

    def draw_seeds(self, index: int, n: int) -> list[int]:
        """Scenario seeds (the traffic's draws, nominal in every round) of round `index`'s draws."""
        state = np.random.SeedSequence([self.spec.search.seed, int(index), 1]).generate_state(n, dtype=np.uint32)
        return [int(s) for s in state]

    def scenario_data(self, latent: np.ndarray, *, name: str, seed: int) -> dict[str, Any]:
        """The scenario's resolved data with one latent row applied, renamed and reseeded."""
        data = self.scenario.model_dump(mode="json", by_alias=True)
        for path, value in self.values(latent).items():
            set_path(data, path, value)
        data["name"], data["seed"] = name, int(seed)
        return data

    def make_spec(self, latent: np.ndarray, *, name: str, seed: int) -> ScenarioSpec:
        """The validated scenario of one latent row; `ScenarioError` if it is not a valid scenario."""
        return validate_data(self.scenario_data(latent, name=name, seed=seed), f"{self.source} ({name})")


def load_space(path: str | os.PathLike[str], scenario: ScenarioSpec) -> SearchSpace:
    """Read and validate a space file against `scenario`; raise `ScenarioError` listing every problem."""
    source = str(path)
    return parse_space(read_yaml_text(FsPath(path)), scenario, source)


def parse_space(text: str, scenario: ScenarioSpec, source: str = "<space>") -> SearchSpace:
    """Validate space YAML text against `scenario` (schema, field paths, the ends of every range)."""
    data, lines = parse_yaml(text, source)
    try:
        spec = SpaceSpec.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, schema_problems(exc, lines, root=SpaceSpec)) from None
    base = scenario.model_dump(mode="json", by_alias=True)
    problems: list[Problem] = []
    integer: list[bool] = []
    for key, dist in spec.parameters.items():
        where: Path = ("parameters", key)
        try:
            if key.split(".")[0] in _RESERVED:
                raise KeyError(key)
            current = get_path(base, key)
        except (KeyError, IndexError, ValueError, TypeError):
            problems.append(Problem(where, f"expected a dotted path to an existing field of scenario "
                                           f"{scenario.name}, got '{key}'", line_of(lines, where)))
            integer.append(False)
            continue
        numeric = isinstance(current, (int, float)) and not isinstance(current, bool)
        if not isinstance(dist, Categorical) and not (numeric or current is None):
            problems.append(Problem(where, f"expected a numeric field for a {dist.type} distribution, "
                                           f"got {current!r} (use a categorical)", line_of(lines, where)))
        integer.append(isinstance(current, int) and not isinstance(current, bool))
    if problems:
        raise ScenarioError(source, problems)
    space = SearchSpace(spec, scenario, source, tuple(integer))
    problems = _range_problems(space, lines)
    if problems:
        raise ScenarioError(source, problems)
    return space


def _range_problems(space: SearchSpace, lines: dict[Path, int]) -> list[Problem]:
    """Each parameter at each end of its range (others at their medians) must give a valid scenario."""
    problems: list[Problem] = []
    centre = space.medians()
    for j, (key, dist) in enumerate(space.spec.parameters.items()):
        lo, hi = dist.support()
        ends = [float(k) for k in range(len(dist.values))] if isinstance(dist, Categorical) else [lo, hi]
        for end in ends:
            row = centre.copy()
            row[j] = end
            try:
                space.make_spec(row, name=space.scenario.name, seed=space.scenario.seed)
            except ScenarioError as exc:
                value = space.values(row)[key]
                where: Path = ("parameters", key)
                problems.append(Problem(where, f"the value {value!r} in this parameter's range gives an invalid "
                                               f"scenario: {format_path(exc.problems[0].path)}: {exc.problems[0].message}", line_of(lines, where)))
                break
    return problems


__all__ = ["SearchSettings", "SearchSpace", "SpaceSpec", "load_space", "parse_space"]
