#!/usr/bin/env bash
# Open the Dagster UI on the same instance and tables as the CLI (FBE_HOME, default ./var).
# Extra arguments go to `dagster dev` (e.g. `-p 3001`).
#
# SIGTERM and SIGINT (Ctrl-C) stop everything within seconds and leave no process behind. Each
# step runs as a background job in its own process group and the script waits for it: bash runs
# no trap while a foreground child runs, and an untrapped SIGTERM would orphan the child. On a
# signal the trap sends it to the step's whole process group, as Ctrl-C in a terminal does.
# Sent to `dagster dev` alone it stops the webserver and daemon, but the code servers wait for
# their in-progress runs to finish and those runs go on (dagster-io/dagster#3839): that took
# 40-75 s with two partition runs launched from the UI. Whatever is left after 6-7 s is killed.
set -euo pipefail
cd "$(dirname "$0")/.."

group=""
running() { # any process of process group $1 that is not a zombie (init reaps those late)
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}
stop() { # stop SIGNAL EXIT_STATUS
  trap '' INT TERM
  if [ -n "$group" ]; then
    # A run worker killed before it recorded its interruption would stay "started": a reaper,
    # outside the group, records those runs as failed once their worker is gone.
    local reaper=""
    if [ -n "${DAGSTER_HOME:-}" ]; then
      .venv/bin/python -m fbe_pipeline.cli reap-runs &
      reaper=$!
    fi
    kill -s "$1" -- "-$group" 2>/dev/null || true
    local deadline=$((${EPOCHSECONDS:-$(date +%s)} + 7))
    while running "$group" && [ "${EPOCHSECONDS:-$(date +%s)}" -lt "$deadline" ]; do
      sleep 0.1
    done
    kill -s KILL -- "-$group" 2>/dev/null || true
    if [ -n "$reaper" ]; then
      wait "$reaper" 2>/dev/null || true
    fi
  fi
  exit "$2"
}
trap 'stop INT 130' INT
trap 'stop TERM 143' TERM

step() { # run "$@" in a process group of its own and wait for it
  set -m
  "$@" &
  group=$!
  set +m
  wait "$group"
  group=""
}

step bash scripts/setup.sh
. scripts/env.sh
DAGSTER_HOME="$(.venv/bin/python -c 'from fbe_pipeline.settings import prepare_dagster_home; print(prepare_dagster_home())')"
export DAGSTER_HOME
step .venv/bin/dagster dev -w workspace.yaml "$@"
