#!/usr/bin/env bash
# Installs what the browser test needs: Debian's Chromium and Playwright's Python package, which
# drives that Chromium (no browser is downloaded by Playwright), and a CJK font so the screenshots of
# the translated (zh/ko/ja) frontend show text instead of boxes. Run as root (or with sudo).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq chromium
fi
if ! fc-list 2>/dev/null | grep -qi "wenquanyi"; then
  apt-get update -qq
  apt-get install -y -qq fonts-wqy-microhei
fi
python -m pip install -q playwright
echo "browser test ready: $(chromium --version)"
