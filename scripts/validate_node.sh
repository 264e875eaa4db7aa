#!/usr/bin/env bash
# The Comfy Registry's check of this pack (pyproject's [tool.comfy], security checks), as
# ComfyUI-Manager and `comfy node publish` run it: comfy-cli's `comfy node validate`, from its own
# venv in the cache (comfy-cli pins its own dependencies), with a throwaway HOME so no comfy-cli
# configuration of the user is read or written. Runs offline once comfy-cli is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${MAGCACHE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/magcache-comfyui}"
venv="$cache/comfy-cli"
[ -x "$venv/bin/comfy" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check comfy-cli; }
home="$(mktemp -d)"; trap 'rm -rf "$home"' EXIT
HOME="$home" "$venv/bin/comfy" --skip-prompt --no-json node validate < /dev/null
