"""tools/test-system-deps.sh: installs the browser packages when it can, else says what to run.

The script runs for real under bash; only the system commands it calls (id, sudo, apt-get,
dpkg-query) are stand-ins on PATH, so no test touches the machine's packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "test-system-deps.sh"
INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core"


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{shutil.which('bash')}\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: Path, fakes: dict[str, str], present: bool = False) -> tuple[subprocess.CompletedProcess, str]:
    """Run the script with only ``fakes`` (plus text tools) on PATH; returns the result and the apt-get log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("grep", "tr", "sed", "env", "touch", "chmod", "mkdir", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for name, body in fakes.items():
        _fake(bin_dir, name, body)
    browser, driver = tmp_path / "usr" / "chromium", tmp_path / "usr" / "chromedriver"
    if present:
        browser.parent.mkdir()
        for p in (browser, driver):
            p.write_text("")
            p.chmod(0o755)
    env = {"PATH": str(bin_dir), "CAMAUDIT_CHROMIUM": str(browser), "CAMAUDIT_CHROMEDRIVER": str(driver),
           "APT_LOG": str(tmp_path / "apt.log"), "HOME": str(tmp_path)}
    res = subprocess.run([shutil.which("bash"), str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    log = tmp_path / "apt.log"
    return res, log.read_text() if log.exists() else ""


APT_RECORDS = 'echo "$*" >> "$APT_LOG"'
# apt-get that "installs" by creating the two binaries where the tests look for them.
APT_INSTALLS = APT_RECORDS + '\nif [ "$1" = install ]; then mkdir -p "$(dirname "$CAMAUDIT_CHROMIUM")"; ' \
    'touch "$CAMAUDIT_CHROMIUM" "$CAMAUDIT_CHROMEDRIVER"; chmod +x "$CAMAUDIT_CHROMIUM" "$CAMAUDIT_CHROMEDRIVER"; fi'


def test_nothing_to_do_when_present(tmp_path):
    res, log = _run(tmp_path, {"apt-get": APT_RECORDS, "id": "echo 0"}, present=True)
    assert res.returncode == 0 and res.stderr == "" and log == ""


def test_root_installs_the_three_packages(tmp_path):
    res, log = _run(tmp_path, {"apt-get": APT_INSTALLS, "id": "echo 0"})
    assert res.returncode == 0, res.stderr
    update, install = log.splitlines()
    assert update.startswith("update") and install.split()[-3:] == ["chromium", "chromium-driver", "fonts-dejavu-core"]
    assert "--no-install-recommends" in install


def test_passwordless_sudo_is_used(tmp_path):
    sudo = '[ "$1" = -n ] && shift; echo "sudo $*" >> "$APT_LOG.sudo"; "$@"'
    res, log = _run(tmp_path, {"apt-get": APT_INSTALLS, "id": "echo 1000", "sudo": sudo})
    assert res.returncode == 0, res.stderr
    assert "install" in log and "apt-get install" in (tmp_path / "apt.log.sudo").read_text()


@pytest.mark.parametrize("sudo", [None, "exit 1"], ids=["no-sudo", "sudo-asks-a-password"])
def test_not_root_prints_the_exact_command(tmp_path, sudo):
    fakes = {"apt-get": APT_RECORDS, "id": "echo 1000"} | ({"sudo": sudo} if sudo else {})
    res, log = _run(tmp_path, fakes)
    assert res.returncode == 1 and log == "", "nothing is attempted without root"
    assert f"sudo apt-get update && sudo {INSTALL}" in res.stderr
    assert str(tmp_path / "usr" / "chromium") in res.stderr, "says what is missing"


def test_no_apt_get_names_the_settings(tmp_path):
    res, _ = _run(tmp_path, {"id": "echo 0"})
    assert res.returncode == 1 and "No apt-get" in res.stderr and "CAMAUDIT_CHROMEDRIVER=" in res.stderr


def test_failed_apt_get_stops_with_the_command(tmp_path):
    res, log = _run(tmp_path, {"apt-get": APT_RECORDS + '\n[ "$1" = update ] || exit 100', "id": "echo 0"})
    assert res.returncode == 1 and "apt-get failed" in res.stderr and INSTALL in res.stderr
    assert len(log.splitlines()) == 2


def test_missing_font_package_is_installed_too(tmp_path):
    dpkg = 'echo "unknown ok not-installed"'
    res, log = _run(tmp_path, {"apt-get": APT_RECORDS, "id": "echo 1000", "dpkg-query": dpkg}, present=True)
    assert res.returncode == 1 and "missing: fonts-dejavu-core" in res.stderr and log == ""


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK), "make and .ci/run call it directly"
