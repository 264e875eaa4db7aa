#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test, and a CJK font so the screenshots of the
# translated (zh/ko/ja) frontend show text instead of boxes. Run as root (or with sudo). Playwright,
# which drives Chromium, comes with the test venvs of scripts/comfyui.py; it downloads no browser.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "wenquanyi"; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
fi
echo "browser test ready: $(chromium --version 2>/dev/null)"
