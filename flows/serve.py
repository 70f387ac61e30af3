"""``camaudit serve``: each audit config becomes a scheduled Prefect deployment of the audit flow.

Prefect schedules and runs them (``prefect.serve``): one process serves several audits, each
run is an ordinary flow run on the Prefect server, with its artifacts (table, verdict, link).
Schedules only fire on a real server (``prefect server start``), never on the temporary one a
plain ``camaudit run`` starts, so serving without ``PREFECT_API_URL`` is refused with the fix.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from auditors.errors import ConfigError

__all__ = ["parse_interval", "build_deployments", "serve_audits", "NO_SERVER"]

NO_SERVER = (
    "camaudit serve needs a running Prefect server (schedules never fire on the temporary one a run starts).\n"
    "  start one:   prefect server start --host 127.0.0.1 --port 4200\n"
    "  then:        export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
    "  and rerun:   camaudit serve CONFIG.yaml --cron '0 3 * * *'"
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> timedelta:
    """'90', '90s', '15m', '1h', '1d' -> timedelta (at least one second)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise ConfigError(f"--interval: {text!r} is not a duration like 3600, 90s, 15m, 1h or 1d")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds < 1:
        raise ConfigError(f"--interval: {text!r} is shorter than one second")
    return timedelta(seconds=seconds)


def build_deployments(configs: list[Path], overrides: list[str], cron: str | None, interval: str | None) -> list[Any]:
    """One deployment per config (validated now, so a typo fails before anything is served)."""
    from auditors.config import load_config
    from flows.audit import audit_flow

    if (cron is None) == (interval is None):
        raise ConfigError("serve: give exactly one of --cron '0 3 * * *' or --interval 1d")
    every = parse_interval(interval) if interval is not None else None
    deployments, seen = [], {}
    for path in configs:
        cfg = load_config(path, overrides)
        if cfg.name in seen:
            raise ConfigError(f"{path}: name {cfg.name!r} is also used by {seen[cfg.name]}; deployments need distinct names")
        seen[cfg.name] = path
        try:
            deployment = audit_flow.to_deployment(
                name=cfg.name,
                parameters={"config": cfg.public_dict()},
                cron=cron,
                interval=every,
                tags=["camaudit"],
                description=f"camaudit audit {cfg.name} from {Path(path).resolve()}",
            )
        except ValueError as exc:  # pydantic's schedule validation (a bad cron expression)
            first = str(exc).strip().splitlines()[-1]
            raise ConfigError(f"--cron: {cron!r} is not a valid schedule ({first}); e.g. '0 3 * * *' for 03:00 daily") from None
        deployments.append(deployment)
    return deployments


def serve_audits(configs: list[Path], overrides: list[str], cron: str | None, interval: str | None) -> None:
    """Register the deployments and run their scheduled (and manually triggered) runs until stopped."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError(NO_SERVER)
    deployments = build_deployments(configs, overrides, cron, interval)
    from prefect import serve

    when = f"cron {cron!r}" if cron else f"every {parse_interval(interval)}"
    print(f"camaudit: serving {len(deployments)} audit(s) ({when}) on {PREFECT_API_URL.value()}: "
          + ", ".join(f"camaudit-audit/{d.name}" for d in deployments), flush=True)
    serve(*deployments, print_starting_message=False)
