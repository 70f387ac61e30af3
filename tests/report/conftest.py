"""Report test fixtures: one headless Chromium for all report tests (tests/browser.py fails,
not skips, without it) and the three reports the browser tests open."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import chromium_driver, open_file
from tests.report.builders import cf_report, realistic_report, token_report


@pytest.fixture(scope="session")
def driver():
    with chromium_driver(width=1280, height=900) as d:
        yield d


def _open(driver, path: Path, clear: bool = True):
    open_file(driver, path)
    if clear:
        driver.get_log("browser")  # reading the log clears it: later checks see only this test's actions
    return driver


@pytest.fixture(scope="session")
def report_path(tmp_path_factory) -> Path:
    return realistic_report(tmp_path_factory.mktemp("run"))


@pytest.fixture()
def page(driver, report_path):
    return _open(driver, report_path)


@pytest.fixture(scope="session")
def cf_report_path(tmp_path_factory) -> Path:
    return cf_report(tmp_path_factory.mktemp("cf-run"))


@pytest.fixture()
def cf_page(driver, cf_report_path):
    return _open(driver, cf_report_path, clear=False)  # its tests check the page loads without errors


@pytest.fixture(scope="session")
def token_report_path(tmp_path_factory) -> Path:
    return token_report(tmp_path_factory.mktemp("token-run"))


@pytest.fixture()
def token_page(driver, token_report_path):
    return _open(driver, token_report_path)
