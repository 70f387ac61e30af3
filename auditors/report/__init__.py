"""The self-contained HTML bias report: one module per section, rendered by :mod:`.render`."""

from auditors.report.render import as_summary, render_report, write_report

__all__ = ["as_summary", "render_report", "write_report"]
