#!/usr/bin/env bash
# Installs what the browser test needs: Debian's Chromium and Playwright's Python package, which
# drives that Chromium (no browser is downloaded by Playwright). Run as root (or with sudo).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq chromium
fi
python -m pip install -q playwright
echo "browser test ready: $(chromium --version)"
