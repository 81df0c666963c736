"""Snapshots of a running episode: immutable copies of every piece of mutable state, restored bit for bit.

`take(obj)` returns a `Snapshot` of a simulator object and `restore(obj, snapshot)` puts the object back
into that state, so that the same actions from there give the same trajectory, bit for bit
(`Simulation.snapshot()` / `restore()` and `World.snapshot()` / `restore()` are these two calls). The
snapshot of a `Simulation` holds its World (vehicle arrays, time and counters, random generator,
frame cache, collision onsets, traffic-entry draws, the step's collision and departure records), its
V2V channel (queues, held messages, outages, counters, random generator) and comm graph, the events'
state, the plan slots, the step count and the last inbox. An `Observer` (its path lanes) is taken
the same way: ``snapshot.take(observer)``. Policies are not simulator objects and are not covered.

Every registered class has one `Rule` in `rules()`, which names the attributes a restore keeps as they
are (`Rule.kept`: fixed after construction, such as the road and the scenario, or owned by the
caller, such as `Simulation.frame_listeners`). Every other attribute in the object's ``__dict__`` is
state and is copied:

| value | in the snapshot | on restore |
|---|---|---|
| None, bool, int, float, str, numpy scalar | itself (immutable) | itself |
| numpy array | a read-only copy | a fresh copy |
| `numpy.random.Generator` | its bit generator's state | set on the object's own generator |
| list, tuple (named too), dict, dataclass instance | the same container of copied items | rebuilt |
| object of a registered class | a nested `Snapshot` | restored in place (its identity is kept: other objects hold it) |
| object of a `Rule.replaced` class (`FrameCache`) | a shallow copy (never patched, only replaced) | a shallow copy |
| anything else | `TypeError` naming the attribute | |

So a new attribute is covered as soon as it is added, and one whose type has no rule fails loudly
(tests/sim/test_snapshot.py also checks that the kept attributes never change while an episode
runs). `Rule.derived` attributes are rebuilt from the restored state by `Rule.rebuild` instead of
copied (the comm graph's networkx view of its adjacency matrix). An attribute the object gained after
the snapshot was taken is removed on restore.

A snapshot restores into the object it was taken from, as often as needed. Restoring into another
object of the same class built the same way (same scenario and episode) works too, since its kept
attributes are the same.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["Rule", "Snapshot", "restore", "rules", "state_names", "take"]


@dataclass(frozen=True)
class Rule:
    """How the state of one class is captured (module docstring).

    Attributes:
        kept: attributes a restore leaves as they are.
        derived: attributes rebuilt by ``rebuild(obj)`` after a restore instead of copied.
        rebuild: called on the restored object when ``derived`` is not empty.
        replaced: instances are never patched, only replaced: a snapshot holds a shallow copy.
    """

    kept: frozenset[str] = frozenset()
    derived: frozenset[str] = frozenset()
    rebuild: Callable[[Any], None] | None = None
    replaced: bool = False


@dataclass(frozen=True)
class Snapshot:
    """The state of one object: its class and each state attribute's frozen copy, by name."""

    kind: type
    state: Mapping[str, Any]


@dataclass(frozen=True)
class _Rng:
    state: Mapping[str, Any]


@dataclass(frozen=True)
class _Items:
    """A frozen container: its class and its frozen items (the subclass says what the items are)."""

    kind: type
    items: tuple


class _Seq(_Items):
    """A list or tuple (named too): the items in order."""


class _Map(_Items):
    """A dict: (key, value) pairs in order."""


class _Fields(_Items):
    """A dataclass instance: (field name, value) pairs."""


@dataclass(frozen=True)
class _Shallow:
    value: Any


_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, np.generic)


def _kept(*names: str) -> frozenset[str]:
    return frozenset(names)


@lru_cache(maxsize=1)
def rules() -> Mapping[type, Rule]:
    """The rule of every registered class (imported here: the Simulation imports this module)."""
    from diffplatoon.sim.comms import Channel, CommGraph
    from diffplatoon.sim.contacts import Contacts
    from diffplatoon.sim.entry import TrafficEntry
    from diffplatoon.sim.frame_cache import FrameCache
    from diffplatoon.sim.observation import Observer
    from diffplatoon.sim.observation_routes import PathLanes
    from diffplatoon.sim.right_of_way import RightOfWay
    from diffplatoon.sim.simulation import Simulation
    from diffplatoon.sim.vehicles import Vehicles
    from diffplatoon.sim.world import World

    def graph_from_adjacency(graph: CommGraph) -> None:
        graph._set_adjacency(graph._adjacency)

    return MappingProxyType({
        # frame_listeners belong to the caller (an evaluator keeps its own state)
        Simulation: Rule(kept=_kept("spec", "episode", "road", "network", "names", "controlled", "_vids",
                                    "_member_vids", "density", "traffic_rows", "frame_listeners")),
        # the road's tables: fixed (the look-ups they compute on first use depend on the road alone)
        World: Rule(kept=_kept("network", "params", "table", "idm", "lane_key_base", "connected")),
        Vehicles: Rule(kept=_kept("table")),
        RightOfWay: Rule(kept=_kept("veh", "p", "c")),
        Contacts: Rule(kept=_kept("veh", "_sweep_x")),
        TrafficEntry: Rule(),
        FrameCache: Rule(replaced=True),
        CommGraph: Rule(kept=_kept("range_m", "inter_platoon", "num_vehicles", "platoon_members", "platoon_of",
                                   "member_of", "_topology", "_foreign", "_candidates", "_off_diagonal",
                                   "_topology_graph"),
                        derived=_kept("_graph"), rebuild=graph_from_adjacency),
        Channel: Rule(kept=_kept("num_vehicles", "latency", "drop_probability", "max_age", "plan_dim",
                                 "message_dim", "inbox_size", "_off_diagonal")),
        Observer: Rule(kept=_kept(
            "sim", "k", "range", "n_points", "spacing", "_cont", "_prev", "_vids", "_need", "_deadline", "_before",
            "_remaining", "_next", "_lane_end", "_agent", "_platoon", "_member", "_pred", "_same_platoon",
            "_ahead_in_platoon", "_side_ok", "_speed_limit", "_n_lanes", "_next_flat", "_before_flat",
            "_agent_base", "_lane_cols", "_q_lanes", "_q_invalid", "_on_first", "_on_second", "_slot_ok",
            "_point_offsets", "_no_conflict")),
        PathLanes: Rule(kept=_kept("table", "_next_flat")),
    })


def state_names(obj: Any) -> list[str]:
    """The attributes of ``obj`` a snapshot copies (every one not kept and not derived)."""
    rule = rules()[type(obj)]
    return [name for name in vars(obj) if name not in rule.kept and name not in rule.derived]


# ------------------------------------------------------------------------------------------------ take


def take(obj: Any) -> Snapshot:
    """An immutable snapshot of ``obj``, an object of a registered class (module docstring)."""
    kind = type(obj)
    if kind not in rules():
        raise TypeError(f"no snapshot rule for {kind.__name__}")
    attrs = vars(obj)
    return Snapshot(kind, MappingProxyType({name: _freeze(attrs[name], f"{kind.__name__}.{name}")
                                            for name in state_names(obj)}))


def _freeze(value: Any, where: str) -> Any:
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, np.ndarray):
        out = value.copy()
        out.flags.writeable = False
        return out
    if isinstance(value, np.random.Generator):
        return _Rng(MappingProxyType(copy.deepcopy(value.bit_generator.state)))
    kind = type(value)
    rule = rules().get(kind)
    if rule is not None:
        return _Shallow(copy.copy(value)) if rule.replaced else take(value)
    if isinstance(value, (list, tuple)):
        return _Seq(kind, tuple(_freeze(item, f"{where}[{i}]") for i, item in enumerate(value)))
    if isinstance(value, dict):
        return _Map(kind, tuple((_freeze(k, f"{where} key"), _freeze(v, f"{where}[{k!r}]")) for k, v in value.items()))
    if dataclasses.is_dataclass(value):
        return _Fields(kind, tuple((f.name, _freeze(getattr(value, f.name), f"{where}.{f.name}"))
                                   for f in dataclasses.fields(value)))
    raise TypeError(f"{where}: no snapshot rule for a {kind.__name__}; register its class in "
                    f"diffplatoon.sim.snapshot.rules() or mark the attribute kept")


# ------------------------------------------------------------------------------------------------ restore


def restore(obj: Any, snapshot: Snapshot) -> None:
    """Put ``obj`` back into the state of ``snapshot`` (taken from it, or from an object built the same way)."""
    if type(obj) is not snapshot.kind:
        raise TypeError(f"a snapshot of a {snapshot.kind.__name__} cannot restore a {type(obj).__name__}")
    rule = rules()[snapshot.kind]
    attrs = vars(obj)
    for name in [n for n in attrs if n not in rule.kept and n not in rule.derived and n not in snapshot.state]:
        del attrs[name]  # gained after the snapshot
    for name, frozen in snapshot.state.items():
        live = attrs.get(name)
        if isinstance(frozen, Snapshot) and type(live) is frozen.kind:
            restore(live, frozen)  # in place: other objects hold this one
        elif isinstance(frozen, _Rng) and isinstance(live, np.random.Generator):
            live.bit_generator.state = copy.deepcopy(dict(frozen.state))
        else:
            attrs[name] = _thaw(frozen)
    if rule.derived and rule.rebuild is not None:
        rule.rebuild(obj)


def _thaw(frozen: Any) -> Any:
    if isinstance(frozen, _IMMUTABLE):
        return frozen
    if isinstance(frozen, np.ndarray):
        return frozen.copy()
    if isinstance(frozen, _Seq):
        items = [_thaw(item) for item in frozen.items]
        if frozen.kind is list:
            return items
        if frozen.kind is tuple:
            return tuple(items)
        return frozen.kind(*items)  # a NamedTuple
    if isinstance(frozen, _Map):
        return frozen.kind((_thaw(k), _thaw(v)) for k, v in frozen.items)
    if isinstance(frozen, _Fields):
        return frozen.kind(**{name: _thaw(v) for name, v in frozen.items})
    if isinstance(frozen, _Shallow):
        return copy.copy(frozen.value)
    if isinstance(frozen, _Rng):
        state = copy.deepcopy(dict(frozen.state))
        generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
        generator.bit_generator.state = state
        return generator
    if isinstance(frozen, Snapshot):  # the object holds another kind of object there: not built the same way
        raise TypeError(f"cannot restore a {frozen.kind.__name__} into an object that holds none")
    raise TypeError(f"not a frozen value: {type(frozen).__name__}")
