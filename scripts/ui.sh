#!/usr/bin/env bash
# Open the Dagster UI on the same instance and DuckDB as the CLI (FBE_HOME, default ./var).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
export DAGSTER_HOME="$(.venv/bin/python -c 'from fbe_pipeline.settings import prepare_dagster_home; print(prepare_dagster_home())')"
exec .venv/bin/dagster dev -w workspace.yaml "$@"
