"""The self-contained HTML bias report: one module per section, rendered by :mod:`.render`."""

from auditors.report.render import ReportInputs, as_summary, render_report, write_report

__all__ = ["ReportInputs", "as_summary", "render_report", "write_report"]
