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
from auditors.safe_io import MAX_CONFIG_BYTES, UnsafeFile, read_regular_file
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
        msg = msg.removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
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
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"--set {key}: value longer than {MAX_CONFIG_BYTES} characters")
        value = parse_yaml(raw, f"--set {key}: value")
        if not isinstance(data, dict):
            raise ConfigError(f"--set {key}: the config's top level is not a mapping")
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


#: YAML aliases may reference anchors that reference anchors ("billion laughs"): 9 levels of 9
#: aliases are a 30-line file that expands to ~400 million nodes. A config has a few hundred.
MAX_YAML_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base`` merges may override
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let the base class raise its own error
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes ``root`` expands to once every alias is copied; stops counting past ``limit``.

    Raises ConfigError on a recursive alias (an anchor used inside itself).
    """
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise ConfigError("a recursive YAML alias (an anchor is used inside itself)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        active.discard(key)
        memo[key] = total
        return total

    return size(root)


def parse_yaml(text: str | bytes, source: str) -> Any:
    """Parse one YAML document safely: no tags that build objects, no duplicate keys, bounded aliases.

    The node graph is sized *before* any Python object is built, so an alias bomb costs
    microseconds instead of minutes and gigabytes.
    """
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            n = _expanded_size(node, MAX_YAML_NODES)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if n > MAX_YAML_NODES:
            raise ConfigError(
                f"{source}: YAML expands to more than {MAX_YAML_NODES} nodes through aliases (&anchor/*alias); "
                "refused before reading it (an alias bomb, or a config far larger than any real one)"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: the problem and where (PyYAML's own message spans several lines)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{exc.problem}{where}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{exc.reason} at byte {exc.position} (expected UTF-8, or UTF-16 with a byte-order mark)"
    return " ".join(str(exc).split())


def read_config_dict(path: Path) -> dict[str, Any]:
    """Read a YAML file into a dict with errors that name the file.

    Only a regular file is read (a FIFO would block forever), at most MAX_CONFIG_BYTES; UTF-8,
    or UTF-16 with a byte-order mark, as YAML allows.
    """
    path = Path(path)
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES)
    except UnsafeFile as exc:
        if exc.reason.startswith("file not found"):
            raise ConfigError(f"config file not found: {path}") from None
        raise ConfigError(f"config file {path}: {exc.reason}") from None
    data = parse_yaml(raw, f"config file {path}")
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
