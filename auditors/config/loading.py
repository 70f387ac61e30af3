"""Read an audit config: YAML file, ``${VAR}`` expansion, ``--set`` overrides, validation.

Every error names the file or key so a nightly job's log says what to fix.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from auditors.config.schema import AuditConfig
from auditors.errors import ConfigError


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> AuditConfig:
    """Validate a plain dict; raise ConfigError naming each bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a config dict."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value is not valid YAML ({exc})") from None
        node = data
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {p} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return data


_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(data: Any, where: str = "") -> Any:
    """Replace ``${VAR}`` in string values with environment variables (nightly jobs set paths so)."""
    if isinstance(data, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, str):

        def sub(m: re.Match) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(f"{where}: environment variable {m.group(1)} is not set")
            return os.environ[m.group(1)]

        return _ENV_VAR.sub(sub, data)
    return data


def read_config_dict(path: Path) -> dict[str, Any]:
    """Read a YAML file into a dict with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty")
    return data


def load_config(path: Path | str, overrides: list[str] | None = None) -> AuditConfig:
    """Load, override, validate and resolve a YAML audit config.

    ``${VAR}`` in string values is replaced from the environment. Relative paths are taken
    relative to the current working directory, like every other path given on a command line.
    """
    path = Path(path)
    data = apply_overrides(expand_env(read_config_dict(path)), overrides or [])
    cfg = config_from_dict(data, source=str(path))
    return cfg.resolve_paths(Path.cwd())
