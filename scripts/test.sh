#!/usr/bin/env bash
# Install, then run the test suite on the real sample data (FBE_SAMPLE_DATA, default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
