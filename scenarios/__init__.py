"""Scenarios: the YAML schema, its loader and sweeps, and the catalogue shipped as package data.

    from diffplatoon.scenarios import load_scenario, ScenarioError
    spec = load_scenario("onramp_merge")   # a catalogue name or a path to a YAML file
    network = spec.road.build()            # a highway-env RoadNetwork
"""

from diffplatoon.scenarios.errors import Problem, ScenarioError
from diffplatoon.scenarios.loader import catalogue_names, load_scenario, parse_scenario, validate_data
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.scenarios.sweep import expand_sweep

__all__ = [
    "ScenarioError",
    "ScenarioSpec",
    "Problem",
    "catalogue_names",
    "expand_sweep",
    "load_scenario",
    "parse_scenario",
    "validate_data",
]
