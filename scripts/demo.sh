#!/usr/bin/env bash
# Fresh machine to results: install, load all of the sample data (FBE_SAMPLE_DATA, default
# ../shared/data) into the raw store, materialize every partition through Dagster, print the
# summary. State goes to FBE_HOME (default ./var).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
.venv/bin/fbe demo
