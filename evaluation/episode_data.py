"""What an episode leaves for its report besides its record: member profiles and replay poses.

The report never simulates, so whatever it draws of one episode is recorded when the episode
runs. `EpisodeData` holds every platoon member's speed and gap to the vehicle ahead at each
policy step (the worst-episode profile plot) and, as a `Replay`, every vehicle's box over time
with its platoon role (the top-down GIF). The runner stores it as one compressed float32 npz
per episode, ``<run folder>/episodes/<job>.npz``, written atomically before the episode's
record is appended, so a record's data file is always whole.

Storage stays modest: the replay is kept when its compressed size is under
`REPLAY_BUDGET_BYTES`, and for larger episodes only when they matter to a report (a member
collided, or the minimum TTC fell below the TTC threshold). The profiles are always kept.
"""

from __future__ import annotations

import io as _bytes_io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from diffplatoon.evaluation.thresholds import Thresholds

DATA_DIR = "episodes"
# Largest compressed replay [bytes] kept for an episode that had no collision and no low TTC.
REPLAY_BUDGET_BYTES = 200_000
_REPLAY_FIELDS = ("x", "y", "heading", "crashed", "length", "width", "platoon", "member")


@dataclass(frozen=True)
class Replay:
    """Boxes of every vehicle seen in an episode, one row per policy step (T) and column (N).

    Attributes:
        x, y, heading: (T, N) float32 box centre [m] and heading [rad]; NaN where absent.
        crashed: (T, N) bool.
        length, width: (N,) float32 body size [m].
        platoon, member: (N,) int16 platoon index and position in it (leader 0); -1 for traffic.
    """

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    crashed: np.ndarray
    length: np.ndarray
    width: np.ndarray
    platoon: np.ndarray
    member: np.ndarray


@dataclass(frozen=True)
class EpisodeData:
    """Per-step arrays of one episode that the report draws.

    Attributes:
        dt: policy step [s]; step k is at time k * dt.
        names: the M member names, platoon by platoon, leader first.
        platoons: member columns of each platoon, leader first.
        speed, gap: (T, M) float32 member speed [m/s] and bumper-to-bumper gap to the vehicle
            ahead on its lane [m] (NaN: none, or the member has left).
        replay: the vehicles' boxes, or None when it was not kept.
    """

    dt: float
    names: tuple[str, ...]
    platoons: tuple[tuple[int, ...], ...]
    speed: np.ndarray
    gap: np.ndarray
    replay: Replay | None = None

    def to_bytes(self) -> bytes:
        """Compressed npz of the data (float32 arrays)."""
        arrays: dict[str, Any] = {
            "dt": np.float64(self.dt), "names": np.array(self.names, dtype=str),
            "platoon_sizes": np.array([len(p) for p in self.platoons], dtype=np.int16),
            "speed": self.speed.astype(np.float32), "gap": self.gap.astype(np.float32),
        }
        if self.replay is not None:
            arrays.update({f"replay_{f}": getattr(self.replay, f) for f in _REPLAY_FIELDS})
        buf = _bytes_io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def without_replay(self) -> EpisodeData:
        """The same data with the replay dropped."""
        return EpisodeData(self.dt, self.names, self.platoons, self.speed, self.gap, None)


def load(path: str | Path) -> EpisodeData:
    """Read an `EpisodeData` file written by the runner."""
    return load_bytes(Path(path).read_bytes())


def load_bytes(raw: bytes) -> EpisodeData:
    """An `EpisodeData` from the bytes of `EpisodeData.to_bytes`."""
    with np.load(_bytes_io.BytesIO(raw), allow_pickle=False) as z:
        sizes = [int(s) for s in z["platoon_sizes"]]
        starts = np.cumsum([0] + sizes)
        platoons = tuple(tuple(range(int(a), int(a) + s)) for a, s in zip(starts, sizes))
        replay = Replay(**{f: z[f"replay_{f}"] for f in _REPLAY_FIELDS}) if "replay_x" in z.files else None
        return EpisodeData(float(z["dt"]), tuple(str(n) for n in z["names"]), platoons,
                           z["speed"], z["gap"], replay)


def file_name(job_id: str) -> str:
    """File-system-safe stem of a job id (``scenario|policy|episode``)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", job_id.replace("|", "__"))


def data_path(out: str | Path, job_id: str) -> Path:
    """Where the runner stores the data of `job_id` in run folder `out`."""
    return Path(out) / DATA_DIR / f"{file_name(job_id)}.npz"


def notable(record: Mapping[str, Any], thresholds: Thresholds) -> bool:
    """Whether an episode matters to a report: a member collided or its minimum TTC is below threshold."""
    ttc = record.get("min_ttc")
    return bool(record.get("collision")) or (ttc is not None and math.isfinite(ttc) and ttc < thresholds.ttc)


def compact(data: EpisodeData, record: Mapping[str, Any], thresholds: Thresholds) -> tuple[bytes, bool]:
    """npz bytes to store for an episode and whether they hold its replay (module docstring)."""
    full = data.to_bytes()
    if data.replay is None or len(full) <= REPLAY_BUDGET_BYTES or notable(record, thresholds):
        return full, data.replay is not None
    return data.without_replay().to_bytes(), False
