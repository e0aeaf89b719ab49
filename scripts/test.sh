#!/usr/bin/env bash
# Install, then run the test suite on the real sample data (FBE_SAMPLE_DATA, default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A headless Chromium for the console's browser tests (Playwright drives Debian's build, since
# `playwright install` cannot download here), and Redis for the Celery scale-out test (its broker).
# Without root the tests say why they skip.
if { ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null; } \
  && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium redis-server >/dev/null
fi
.venv/bin/python -m pytest "$@"
