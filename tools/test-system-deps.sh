#!/usr/bin/env bash
# The system packages the test suite needs beyond the venv: headless Chromium, its driver and a
# font, for the report's browser tests. The one place that knows them; `make test`,
# `make test-fast` and .ci/run call it. Installs them with apt-get when it can (root, or
# passwordless sudo); otherwise stops and prints the exact command to run. Does nothing when
# they are already there, so it is cheap to run before every test run.
#
# CAMAUDIT_CHROMIUM / CAMAUDIT_CHROMEDRIVER: the binaries tests/browser.py uses (same defaults).
set -euo pipefail

PACKAGES=(chromium chromium-driver fonts-dejavu-core)
CHROMIUM=${CAMAUDIT_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CAMAUDIT_CHROMEDRIVER:-/usr/bin/chromedriver}
INSTALL="apt-get install -y --no-install-recommends ${PACKAGES[*]}"

missing() {  # what is not there yet, one word each
  [ -x "$CHROMIUM" ] || echo "$CHROMIUM"
  [ -x "$CHROMEDRIVER" ] || echo "$CHROMEDRIVER"
  if command -v dpkg-query >/dev/null 2>&1 \
     && ! dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null | grep -q 'install ok installed'; then
    echo fonts-dejavu-core
  fi
}

stop() {
  {
    echo "camaudit: the browser tests need ${PACKAGES[*]} (missing: $(missing | tr '\n' ' ' | sed 's/ $//'))."
    echo "$1"
  } >&2
  exit 1
}

[ -z "$(missing)" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  stop "No apt-get here: install Chromium and the matching chromedriver with this system's package manager,
then point the tests at them and run the tests again:
  export CAMAUDIT_CHROMIUM=/path/to/chromium CAMAUDIT_CHROMEDRIVER=/path/to/chromedriver"
fi

if [ "$(id -u)" -eq 0 ]; then
  AS_ROOT=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  AS_ROOT=(sudo -n)
else
  stop "Installing them needs root. Run this, then the tests again:
  sudo apt-get update && sudo $INSTALL"
fi

echo "camaudit: installing ${PACKAGES[*]} for the browser tests (apt-get)" >&2
if ! "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
   || ! "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; then
  stop "apt-get failed (output above). Fix the apt sources if needed, then run:
  apt-get update && $INSTALL"
fi
[ -z "$(missing)" ] || stop "apt-get finished but they are still missing; check the packages' install paths."
