"""Run history of one audit: past runs under ``<output.dir>/<name>/``, the change of each class
against an earlier run (with intervals), and the static ``index.html`` with trend charts."""

from auditors.history.compare import compare_runs, compare_with_history
from auditors.history.index_page import refresh_index, write_index
from auditors.history.runs import RunRecord, check_baseline, load_runs, reference_run

__all__ = [
    "RunRecord", "load_runs", "reference_run", "check_baseline", "compare_runs", "compare_with_history", "write_index",
    "refresh_index",
]
