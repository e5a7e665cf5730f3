#!/usr/bin/env bash
# Install multidom with every extra into ./.venv (or the active virtual environment).
#
# torch is chosen here, not pinned in pyproject.toml:
#   * a torch already importable is kept (GPU users install theirs first, as usual);
#   * MULTIDOM_TORCH="torch==X+cu124" (any pip requirement) overrides the choice;
#   * a machine with an NVIDIA driver gets the default PyPI build (CUDA);
#   * a CPU-only machine gets torch==2.13.0, whose CPU build lies on the project's machines;
#     elsewhere, set MULTIDOM_TORCH (e.g. to a CPU wheel index build) to avoid a multi-GB CUDA download.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    py=.venv/bin/python
else
    py="$VIRTUAL_ENV/bin/python"
fi
"$py" -m pip install -q --upgrade pip
if ! "$py" -c "import torch" 2>/dev/null; then
    if [ -n "${MULTIDOM_TORCH:-}" ]; then spec="$MULTIDOM_TORCH"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then spec="torch"
    else spec="torch==2.13.0"
    fi
    echo "installing $spec"
    "$py" -m pip install -q "$spec"
fi
"$py" -m pip install -q -e ".[$extras]"
echo "multidom installed in $("$py" -c 'import sys; print(sys.prefix)')"
