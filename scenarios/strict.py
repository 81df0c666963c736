"""The base of every scenario spec model (and of other YAML specs that follow the same rules)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every spec model: unknown keys are errors; specs are immutable once loaded.

    Numbers must be finite (NaN and infinities are refused) and integer fields are strict: a
    YAML ``true`` is not the integer 1, and 2.0 is not an integer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
