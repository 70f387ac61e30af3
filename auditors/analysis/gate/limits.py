"""The gate's limits per region and rule kind (the one lookup the gate and the report share)."""

from __future__ import annotations

from auditors.config.schema import GateConfig

__all__ = ["limit", "lift_limits", "effect_limits"]


def limit(gate: GateConfig, region: str, kind: str) -> float | None:
    """The gate's ``kind`` ("lift" or "effect") limit for ``region``, or None when none is set."""
    if region == "text":
        return gate.max_text_lift if kind == "lift" else gate.max_text_effect
    return (gate.max_lift if kind == "lift" else gate.max_effect).get(region)


def lift_limits(gate: GateConfig, regions: list[str]) -> dict[str, float]:
    """Lift limits of the measured regions that have one."""
    out = {r: v for r, v in gate.max_lift.items() if r in regions}
    if "text" in regions:
        out["text"] = gate.max_text_lift
    return out


def effect_limits(gate: GateConfig, cf_regions: list[str]) -> dict[str, float]:
    """Effect limits of the intervened regions that have one."""
    out = {r: v for r, v in gate.max_effect.items() if r in cf_regions}
    if "text" in cf_regions:
        out["text"] = gate.max_text_effect
    return out
