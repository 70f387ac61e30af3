"""The strict base of every config section: unknown keys are errors, assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["_Strict"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
