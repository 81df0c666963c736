"""The observation contract: the fields of an `Observation`, their layout in the flat vector, and
the frozen `Observation` itself. `diffplatoon.sim.observation.Observer` fills it.

Frames: "ego frame" = x forward along the vehicle's heading, y to its right (highway-env's screen
convention, y down). M = number of controlled vehicles, in `Simulation.agent_names` order; K
neighbour slots, P lane points, Kc inbox slots of D floats (`diffplatoon.sim.comms.message_dim`).

| field | shape | dtype | features |
|---|---|---|---|
| ego | (M, 10) | float32 | `EGO_FEATURES`: speed, acceleration, steering, heading error to lane, lateral offset r, lane width, distance to lane end, speed limit, platoon member index, is platoon leader |
| leader | (M, 4) | float32 | `LEADER_FEATURES` of the vehicle ahead in the lane: gap (bumper to bumper; `range` if none), its speed, closing speed, present flag |
| side | (M, 2, 2, 4) | float32 | [left, right] × [front, rear] × `SIDE_FEATURES` (present=0 also when the side lane does not exist) |
| side_lane | (M, 2) | float32 | 1 if a left / right lane exists and may be entered |
| neighbours | (M, K, 9) | float32 | K nearest vehicles within `range`, ego frame: `NEIGHBOUR_FEATURES` |
| neighbour_mask | (M, K) | bool | valid neighbour slots |
| lane_ahead | (M, P, 2) | float32 | centre-line points ahead on the current lane/route, ego frame |
| right_of_way | (M, 5) | float32 | `RIGHT_OF_WAY_FEATURES` at the next conflict zone on the member's path (merges, intersections, roundabouts; the yielding rule's view, `diffplatoon.sim.right_of_way`): distance to its yield line (m; 1000 if none), 1 if its lane yields there, earliest arrival of a priority vehicle at that conflict (s; 0 while one is inside it, 60 if none), time to clear its zone accelerating comfortably (s), 1 if the rule says wait |
| route | (M, 5) | float32 | `ROUTE_FEATURES`: lanes to move (−left/+right), distance left to do it (m), route progress 0..1, lateral offset and heading error to the lane the route steers to (the current lane, or past its last half vehicle length the route's next lane, kept until the member is on it: highway-env's target lane) |
| inbox | (M, Kc, D) | float32 | V2V messages received (see `diffplatoon.sim.comms`) |
| inbox_mask | (M, Kc) | bool | held inbox slots |
| inbox_age | (M, Kc) | float32 | steps since each message was sent |
| predecessor_message | (M, D) | float32 | the newest message from the member just ahead in the platoon, if received |
| predecessor_mask | (M,) | bool | that message exists |
| alive | (M,) | bool | the member is on the road and not crashed (all its other fields are zero when false) |
| predecessor_age | (M,) | float32 | steps since the predecessor's message was sent (0 when none) |
| pose | (M, 3) | float32 | [x, y, heading] in the world frame (for planners that work in a platoon frame) |
| inbox_sender | (M, Kc) | int64 | comm id of the sender of each inbox slot, −1 for an empty slot |

The flat vector (`Observation.flat()`, the envs' per-agent observation) is ego … inbox_age
concatenated per vehicle, masks as 0/1 floats; `ObservationLayout` is the one description of its
columns, read by `flat()` and by its inverse (`ObservationLayout.unflatten`, `Observation.from_flat`).
The fields after inbox_age are for controllers that read fields and are not part of it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

EGO_FEATURES = (
    "speed",
    "acceleration",
    "steering",
    "heading_error",
    "lateral_offset",
    "lane_width",
    "distance_to_lane_end",
    "speed_limit",
    "member_index",
    "is_leader",
)
LEADER_FEATURES = ("gap", "speed", "closing_speed", "present")
SIDE_FEATURES = ("gap", "speed", "closing_speed", "present")
NEIGHBOUR_FEATURES = ("dx", "dy", "dvx", "dvy", "cos_dheading", "sin_dheading", "length", "width", "same_platoon")
RIGHT_OF_WAY_FEATURES = ("yield_line_distance", "lane_yields", "priority_arrival", "clear_time", "must_yield")
ROUTE_FEATURES = ("lane_changes_needed", "distance_to_do_it", "progress", "path_lateral_offset",
                  "path_heading_error")

Array = Any  # a numpy array or a torch tensor


@dataclass(frozen=True)
class Field:
    """One field of an `Observation`: its per-vehicle shape and the dtype the `Observation` holds it in."""

    name: str
    shape: tuple[int, ...]
    dtype: type
    size: int = dataclasses.field(init=False, repr=False, compare=False)
    """Number of flat columns of one vehicle's value."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", math.prod(self.shape))


@dataclass(frozen=True)
class ObservationLayout:
    """The flat observation's columns: `fields` in order, each `Field.size` columns wide.

    `slices[name]` are a field's columns (a plain dict, so a layout pickles; do not modify it: layouts
    from `flat_layout` are shared) and `size` the width of the flat vector; `extras` are the
    `Observation` fields that stay outside it. `flatten` and `unflatten` are each other's inverse
    (masks travel as 0/1 floats) and take numpy arrays or torch tensors with any leading dimensions.
    Build one with `flat_layout` (or `Observation.layout`).
    """

    fields: tuple[Field, ...]
    extras: tuple[Field, ...] = ()
    slices: Mapping[str, slice] = dataclasses.field(init=False, repr=False, compare=False)
    size: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        slices, start = {}, 0
        for f in self.fields:
            slices[f.name] = slice(start, start + f.size)
            start += f.size
        object.__setattr__(self, "slices", slices)
        object.__setattr__(self, "size", start)

    def unflatten(self, array: Array) -> dict[str, Array]:
        """{field: (..., *shape) view} of a (..., size) flat array or tensor (slicing and reshape, no copy)."""
        if array.shape[-1] != self.size:
            raise ValueError(f"flat observation has {array.shape[-1]} columns; the layout has {self.size}")
        lead = tuple(array.shape[:-1])
        return {f.name: array[..., self.slices[f.name]].reshape(lead + f.shape) for f in self.fields}

    def flatten(self, values: Mapping[str, Array]) -> Array:
        """(..., size) float32: `values[name]` of every field, (..., *shape) each, concatenated in order."""
        first = values[self.fields[0].name]
        lead = tuple(first.shape[:first.ndim - len(self.fields[0].shape)])
        # fields of one axis are flat already (a reshape per field costs as much as the copy here)
        parts = [values[f.name] if len(f.shape) == 1 else values[f.name].reshape(lead + (f.size,))
                 for f in self.fields]
        if isinstance(first, np.ndarray):
            return np.concatenate(parts, axis=-1, dtype=np.float32)
        import torch

        return torch.cat([p.to(torch.float32) for p in parts], dim=-1)


@functools.lru_cache(maxsize=64)
def flat_layout(k: int, p: int, kc: int, d: int) -> ObservationLayout:
    """The layout of `Observation.flat()` for K neighbours, P lane points, Kc inbox slots of D floats."""
    f32 = np.float32
    return ObservationLayout(
        fields=(
            Field("ego", (len(EGO_FEATURES),), f32),
            Field("leader", (len(LEADER_FEATURES),), f32),
            Field("side", (2, 2, len(SIDE_FEATURES)), f32),
            Field("side_lane", (2,), f32),
            Field("neighbours", (k, len(NEIGHBOUR_FEATURES)), f32),
            Field("neighbour_mask", (k,), np.bool_),
            Field("lane_ahead", (p, 2), f32),
            Field("right_of_way", (len(RIGHT_OF_WAY_FEATURES),), f32),
            Field("route", (len(ROUTE_FEATURES),), f32),
            Field("inbox", (kc, d), f32),
            Field("inbox_mask", (kc,), np.bool_),
            Field("inbox_age", (kc,), f32),
        ),
        extras=(
            Field("predecessor_message", (d,), f32),
            Field("predecessor_mask", (), np.bool_),
            Field("alive", (), np.bool_),
            Field("predecessor_age", (), f32),
            Field("pose", (3,), f32),
            Field("inbox_sender", (kc,), np.int64),
        ),
    )


@dataclass(frozen=True, eq=False)
class Observation:
    """Structured observation of all controlled vehicles (see the module table).

    Immutable: fields cannot be rebound (build a changed copy with `dataclasses.replace`) and every
    array is made read-only when the Observation is built (`ndarray.flags.writeable`), so writing
    into a field raises. The arrays handed in are flagged in place (hand in a copy to keep writing
    yours); an array handed in as a view stays writable through its base.
    `alive`, `predecessor_age`, `pose` and `inbox_sender` may be None for observations rebuilt
    from a flat vector without them.
    """

    ego: np.ndarray
    leader: np.ndarray
    side: np.ndarray
    side_lane: np.ndarray
    neighbours: np.ndarray
    neighbour_mask: np.ndarray
    lane_ahead: np.ndarray
    right_of_way: np.ndarray
    route: np.ndarray
    inbox: np.ndarray
    inbox_mask: np.ndarray
    inbox_age: np.ndarray
    predecessor_message: np.ndarray
    predecessor_mask: np.ndarray
    alive: np.ndarray | None = None
    predecessor_age: np.ndarray | None = None
    pose: np.ndarray | None = None
    inbox_sender: np.ndarray | None = None

    def __post_init__(self) -> None:
        for value in self.__dict__.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)  # as `flags.writeable = False`, without a flags object per array

    @classmethod
    def of(cls, **fields: np.ndarray | None) -> "Observation":
        """`Observation(**fields)` with every field given, built without the frozen dataclass
        `__init__`'s per-field `object.__setattr__` (the observer builds one per step)."""
        if fields.keys() != _FIELD_NAMES:
            raise TypeError(f"Observation.of needs exactly the fields {sorted(_FIELD_NAMES)}")
        obs = object.__new__(cls)
        obs.__dict__.update(fields)
        obs.__post_init__()
        return obs

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled and deep-copied observations are read-only too."""
        self.__dict__.update(state)
        self.__post_init__()

    def __len__(self) -> int:
        return self.ego.shape[0]

    @property
    def layout(self) -> ObservationLayout:
        """The layout of this observation's flat vector (from its K, P, Kc and D)."""
        return flat_layout(self.neighbours.shape[1], self.lane_ahead.shape[1], *self.inbox.shape[1:])

    def flat(self) -> np.ndarray:
        """(M, obs_dim) float32: the fields of `layout` concatenated per vehicle (masks as 0/1)."""
        return self.layout.flatten(self.__dict__)

    @classmethod
    def from_flat(cls, flat: np.ndarray, layout: ObservationLayout, **fields: np.ndarray | None) -> "Observation":
        """The Observation whose `flat()` is `flat` (M, layout.size), masks read back as bools.

        `fields` give or replace fields by name (e.g. `alive`, `pose`); without them the predecessor
        message is absent (zeros, mask false) and the optional fields are None.
        """
        values: dict[str, Any] = layout.unflatten(np.asarray(flat, np.float32))
        for f in layout.fields:
            if f.dtype is np.bool_:
                values[f.name] = values[f.name] > 0.5
        m, d = len(flat), layout.extras[0].shape[0]
        values.setdefault("predecessor_message", np.zeros((m, d), np.float32))
        values.setdefault("predecessor_mask", np.zeros(m, bool))
        values.update(fields)
        return cls(**values)

    def validate(self, layout: ObservationLayout | None = None) -> None:
        """Raise ValueError naming the first field whose shape, dtype or finiteness breaks `layout`.

        `layout` defaults to `self.layout`, which still checks that every field agrees with the
        K, P, Kc and D read from `neighbours`, `lane_ahead` and `inbox`.
        """
        layout = self.layout if layout is None else layout
        m = self.ego.shape[0] if self.ego.ndim else -1
        for f in layout.fields + layout.extras:
            value = getattr(self, f.name)
            if value is None:
                continue
            expected = (m,) + f.shape
            if not isinstance(value, np.ndarray) or value.shape != expected:
                shape = getattr(value, "shape", type(value).__name__)
                raise ValueError(f"Observation.{f.name}: shape {shape}, expected {expected}")
            if value.dtype != f.dtype:
                raise ValueError(f"Observation.{f.name}: dtype {value.dtype}, expected {np.dtype(f.dtype)}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
                raise ValueError(f"Observation.{f.name}: non-finite value {value[bad]} at {bad}")

    def select(self, rows: np.ndarray) -> "Observation":
        """The observation of a subset of vehicles (e.g. one platoon)."""
        return Observation(**{k: None if v is None else v[rows] for k, v in self.__dict__.items()})

    def astype32(self) -> "Observation":
        """A copy with float arrays as float32 (masks stay bool, ids stay integer)."""
        return Observation(**{k: v if v is None or v.dtype.kind != "f" else v.astype(np.float32)
                              for k, v in self.__dict__.items()})

    @classmethod
    def zeros(cls, layout: ObservationLayout, m: int, **fields: np.ndarray) -> "Observation":
        """An all-absent observation of m vehicles (zeros, masks false, senders −1); `fields` replace fields."""
        values = {f.name: np.zeros((m,) + f.shape, f.dtype) for f in layout.fields + layout.extras}
        values["inbox_sender"] = np.full_like(values["inbox_sender"], -1)
        values.update(fields)
        return cls(**values)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Observation))
