#!/usr/bin/env bash
# Create .venv with the app's and the tests' Python packages (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r "${1:-requirements.txt}"
