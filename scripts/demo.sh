#!/usr/bin/env bash
# Set up and run the demo against a ComfyUI checkout:
#   COMFYUI_PATH=/path/to/ComfyUI bash scripts/demo.sh
# Installs what ComfyUI needs in library mode (keeping an installed torch), then samples a mid-size
# Flux with and without MagCache on this machine and prints the figures.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
: "${COMFYUI_PATH:?set COMFYUI_PATH to a ComfyUI v0.8.0 checkout (git clone --branch v0.8.0 <ComfyUI repo>)}"
[ -f "$COMFYUI_PATH/comfy/model_patcher.py" ] || { echo "no ComfyUI at COMFYUI_PATH=$COMFYUI_PATH" >&2; exit 2; }
python -c "import torch" 2>/dev/null || python -m pip install -q torch
torch_version="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
reqs="$(mktemp)"; cons="$(mktemp)"; trap 'rm -f "$reqs" "$cons"' EXIT
# torchvision/torchaudio/spandrel would replace the installed torch; the library mode does not need them.
grep -vE '^(torch|torchvision|torchaudio|spandrel)([<>=~ ].*)?$' "$COMFYUI_PATH/requirements.txt" > "$reqs"
echo requests >> "$reqs"
echo "torch==$torch_version" > "$cons"
python -m pip install -q -r "$reqs" -c "$cons"
COMFYUI_PATH="$COMFYUI_PATH" python "$here/scripts/demo.py" "$@"
