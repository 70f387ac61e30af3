"""Parameter checks with messages that name the parameter, the value and the allowed choices."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from auditors.errors import ConfigError

__all__ = ["CamParameterError", "check_choice", "check_bool", "check_size", "check_callable"]


class CamParameterError(ConfigError, ValueError):
    """A CAM engine parameter is invalid or does not apply to this model.

    Subclasses both ConfigError (the CLI reports it and exits with status 2) and ValueError
    (what Python code validating arguments is expected to raise).
    """


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    choices = sorted(choices)
    if not isinstance(value, str) or value not in choices:
        raise CamParameterError(f"{name}={value!r} is not valid; choose from {choices}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Reject truthy non-bools such as "no" so that a YAML typo never flips a switch silently."""
    if not isinstance(value, bool):
        raise CamParameterError(f"{name} must be True or False, got {value!r}")
    return value


def check_size(name: str, value: Any) -> tuple[int, int]:
    """A (height, width) pair of positive ints."""
    try:
        h, w = value
    except (TypeError, ValueError):
        raise CamParameterError(f"{name} must be a (height, width) pair, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise CamParameterError(f"{name} must hold two positive ints, got {value!r}")
    return int(h), int(w)


def check_callable(name: str, value: Any) -> Callable | None:
    """None or a callable."""
    if value is not None and not callable(value):
        raise CamParameterError(f"{name} must be callable or None, got {type(value).__name__}")
    return value
