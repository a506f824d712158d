#!/usr/bin/env bash
# Set up, then run the whole test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
IMGCLS_SETUP_EXTRA="browser git-lfs" bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests
.venv/bin/python -m pytest "$@"
