"""The audit config: ``schema`` (pydantic models, one per YAML section) and ``loading`` (files, overrides)."""

from auditors.config.loading import apply_overrides, config_from_dict, load_config, read_config_dict
from auditors.config.schema import AuditConfig

__all__ = ["AuditConfig", "apply_overrides", "config_from_dict", "load_config", "read_config_dict"]
