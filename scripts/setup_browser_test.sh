#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test (run as root, or with sudo). Playwright, which
# drives it, comes with the test venvs of scripts/comfyui.py; it downloads no browser of its own.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
echo "browser test ready: $(chromium --version 2>/dev/null)"
