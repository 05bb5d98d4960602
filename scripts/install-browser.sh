#!/bin/sh
# Install Debian's headless-capable Chromium for the report's browser test (tests/test_report_*).
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -eu

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser.sh: /usr/bin/chromium is missing and installing it needs root;" >&2
    echo "  run: sudo $0   (or: apt-get install -y --no-install-recommends chromium)" >&2
    exit 1
fi

# --no-install-recommends keeps the image small: the test needs no fonts beyond the defaults,
# no desktop integration and no sandbox helper (it runs with --no-sandbox).
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
