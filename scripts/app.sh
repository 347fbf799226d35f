#!/usr/bin/env bash
# Install the app's packages and start it on the bundled runs in checkpoints/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
. .venv/bin/activate
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}" TOKENIZERS_PARALLELISM=false
exec streamlit run app.py --server.fileWatcherType none "$@"
