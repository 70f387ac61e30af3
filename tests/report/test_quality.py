"""Data quality: the errors table and the Great Expectations results."""

from __future__ import annotations

from auditors.report import render_report
from auditors.report.quality import MAX_ERROR_ROWS
from tests.report.builders import make_errors, realistic_summary, validation_result
from tests.report.html_text import visible_text


def test_errors_table_is_capped():
    n = MAX_ERROR_ROWS + 57
    summary, images = realistic_summary(errors=make_errors(n))
    assert summary.n_failed == n
    html = render_report(summary, images, [], validation_result(), make_errors(n))
    assert html.count('<td class="path">') == MAX_ERROR_ROWS
    assert "57 more in" in visible_text(html) and 'href="errors.csv"' in html


def test_validation_table():
    summary, images = realistic_summary()
    html = render_report(summary, images, [], validation_result(success=False), make_errors())
    text = " ".join(visible_text(html).split())
    assert "expect_column_values_to_be_between text_mass min_value=0.0, max_value=1.0 fail 3 1.67%" in text
    assert "2 of 3 expectations met" in text
    assert "expect_table_row_count_to_be_between" in text and "180" in text
