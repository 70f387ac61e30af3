"""Exceptions with messages meant for the person running the audit."""

from __future__ import annotations


class CamAuditError(Exception):
    """Base class of camaudit's own errors."""


class ConfigError(CamAuditError):
    """The config (or a path it names) is invalid; the run cannot start. CLI exit status 2."""


class InputError(CamAuditError):
    """One input file is unusable. Recorded in errors.csv; the run goes on without it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
