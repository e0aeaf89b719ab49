#!/usr/bin/env bash
# Open the Dagster UI on the same instance and DuckDB as the CLI (FBE_HOME, default ./var).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FBE_HOME="${FBE_HOME:-$PWD/var}"
if [ -z "${FBE_SCORING_CONFIG+set}" ]; then
  export FBE_SCORING_CONFIG='{"trigger_score": 30}'
fi
export DAGSTER_HOME="$(.venv/bin/python -c 'from fbe_pipeline.settings import prepare_dagster_home; print(prepare_dagster_home())')"
exec .venv/bin/dagster dev -w workspace.yaml "$@"
