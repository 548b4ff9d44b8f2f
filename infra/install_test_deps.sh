#!/usr/bin/env bash
# System packages the test suite needs beyond the Python virtual environment.
#
# - chromium (Debian's package): tests/evaluation/test_html_in_browser.py renders the evaluation
#   and comparison HTML in headless Chromium and checks that the plots are drawn.
#
# Idempotent: installs only what is missing, and says what it does. Needs root (or sudo) for
# apt-get; CI runs it before `make test`.
set -euo pipefail

log() { echo "install_test_deps: $*"; }

find_chromium() {
    command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || true
}

existing="$(find_chromium)"
if [ -n "$existing" ]; then
    log "chromium already installed at $existing ($("$existing" --version 2>/dev/null || echo 'version unknown')); nothing to do"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
    log "not root: using sudo"
else
    log "ERROR: chromium is missing and this script needs root (or sudo) to run apt-get" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "ERROR: chromium is missing and apt-get is not available; install Chromium by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "chromium not found: running apt-get update"
$SUDO apt-get update
log "running apt-get install -y --no-install-recommends chromium"
$SUDO apt-get install -y --no-install-recommends chromium

installed="$(find_chromium)"
if [ -z "$installed" ]; then
    log "ERROR: apt-get finished but no chromium binary is on PATH" >&2
    exit 1
fi
log "installed $installed ($("$installed" --version 2>/dev/null || echo 'version unknown'))"
