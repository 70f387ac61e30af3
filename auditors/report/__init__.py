"""The self-contained HTML bias report."""

from auditors.report.render import render_report, write_report

__all__ = ["render_report", "write_report"]
