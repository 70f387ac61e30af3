"""Headless Chromium for tests: open a local HTML file, collect console errors, take screenshots.

Uses the distribution's ``chromium`` and ``chromedriver`` (Debian packages) through Selenium,
with an explicit driver path so Selenium Manager never tries to download a browser. When
they are missing this raises: the report tests must fail loudly, not skip, because CI
installs both packages and a skipped browser test would hide a broken report.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "CHROMIUM",
    "CHROMEDRIVER",
    "BrowserMissing",
    "chromium_driver",
    "open_file",
    "console_errors",
    "full_page_png",
    "render_png",
]

CHROMIUM = Path(os.environ.get("CAMAUDIT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CAMAUDIT_CHROMEDRIVER", "/usr/bin/chromedriver"))

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",  # containers often give /dev/shm only 64 MB
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


class BrowserMissing(RuntimeError):
    """Chromium, chromedriver or selenium is not installed."""


def _check_installed() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise BrowserMissing(
            f"headless browser tests need {', '.join(missing)}: "
            "install with `apt-get install -y chromium chromium-driver`"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise BrowserMissing("headless browser tests need selenium: pip install -e '.[test]'") from None


@contextmanager
def chromium_driver(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A fresh headless Chromium (own temp profile) with browser console logging on."""
    _check_installed()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never go to the network
    profile = tempfile.mkdtemp(prefix="camaudit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_file(driver: Any, html_path: Path) -> None:
    """Load a local file and wait until it and all its images have finished loading."""
    driver.get(Path(html_path).resolve().as_uri())
    driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const imgs = Array.from(document.images);
        Promise.all(imgs.map(i => i.complete ? Promise.resolve() : i.decode().catch(() => null)))
          .then(() => done(true));
        """
    )


def console_errors(driver: Any) -> list[str]:
    """Console messages at SEVERE level (JS exceptions, console.error, CSP violations)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def full_page_png(driver: Any) -> bytes:
    """Screenshot of the whole page, not just the viewport, via the DevTools protocol."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    return base64.b64decode(shot["data"])


def render_png(html_path: Path, png_path: Path, width: int = 1280) -> Path:
    """Full-page screenshot of a local HTML file at ``width`` CSS pixels; returns ``png_path``."""
    png_path = Path(png_path)
    with chromium_driver(width=width) as driver:
        open_file(driver, html_path)
        png_path.write_bytes(full_page_png(driver))
    return png_path
