#!/usr/bin/env bash
# Create the project's virtual environment in .venv and install imgcls with everything it needs.
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.installed"

# A CJK font for the report's plots (class names in any script); a browser only for the tests.
bash scripts/system-deps.sh font ${IMGCLS_SETUP_EXTRA:-}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[all,dev,bench]'
    touch "$STAMP"
fi
