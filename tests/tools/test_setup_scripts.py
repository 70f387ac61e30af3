"""The set-up scripts: tools/test-system-deps.sh installs the browser packages when it can, else
says what to run; .ci/run fails when `make test` fails or runs no tests.

The scripts run for real under bash; only the system commands they call (id, sudo, apt-get,
dpkg-query, make) are stand-ins on PATH, so no test touches the machine's packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "test-system-deps.sh"
CI_RUN = REPO / ".ci" / "run"
INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core"


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{shutil.which('bash')}\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: Path, fakes: dict[str, str], present: bool = False, script: Path = SCRIPT) -> tuple[subprocess.CompletedProcess, str]:
    """Run ``script`` with only ``fakes`` (plus text tools) on PATH; returns the result and the apt-get log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("grep", "tr", "sed", "env", "touch", "chmod", "mkdir", "dirname", "tee", "mktemp", "cat", "bash"):
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
    res = subprocess.run([shutil.which("bash"), str(script)], env=env, capture_output=True, text=True, timeout=60)
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


def test_scripts_are_executable():
    assert os.access(CI_RUN, os.X_OK) and os.access(SCRIPT, os.X_OK), "CI calls .ci/run directly; the script runs alone too"


# .ci/run: the browser packages are present (stand-in binaries); `make` is a stand-in that logs its arguments.
MAKE = 'echo "make $*" >> "$APT_LOG"; '


def test_ci_run_passes_when_tests_pass(tmp_path):
    res, log = _run(tmp_path, {"make": MAKE + 'echo "12 passed in 3.0s"', "id": "echo 0"}, present=True, script=CI_RUN)
    assert res.returncode == 0, res.stderr
    assert log.startswith("make test PYTEST_ARGS=-rs -p no:cacheprovider"), "runs the README's command"


def test_ci_run_fails_when_no_test_ran(tmp_path):
    res, _ = _run(tmp_path, {"make": MAKE + 'echo "no tests ran in 0.1s"', "id": "echo 0"}, present=True, script=CI_RUN)
    assert res.returncode == 1 and "ran no tests" in res.stderr


def test_ci_run_fails_with_make_status(tmp_path):
    res, _ = _run(tmp_path, {"make": MAKE + 'echo "1 failed, 3 passed"; exit 2', "id": "echo 0"}, present=True, script=CI_RUN)
    assert res.returncode == 2 and "make test failed (exit 2)" in res.stderr


def test_ci_run_stops_before_the_tests_without_the_packages(tmp_path):
    res, log = _run(tmp_path, {"make": MAKE, "apt-get": APT_RECORDS, "id": "echo 1000"}, script=CI_RUN)
    assert res.returncode == 1 and "sudo apt-get update" in res.stderr and "make" not in log
