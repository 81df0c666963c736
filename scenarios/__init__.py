"""Scenarios: the YAML schema, its loader and sweeps, and the catalogue shipped as package data.

Pure specs: nothing here builds simulator objects. A road describes its lanes as plain shapes
and a lane graph; `diffplatoon.sim.roads` builds the highway-env network from them.

    from diffplatoon.scenarios import load_scenario, ScenarioError
    spec = load_scenario("onramp_merge")   # a catalogue name or a path to a YAML file
    shapes = spec.road.lane_shapes()       # {(from, to, id): lane shape}, plain data
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
