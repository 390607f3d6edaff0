#!/usr/bin/env bash
# Command 1: set everything up, then build and run Tidings on its embedded default
# (an SQLite file under data/, created with its schema on first start).
# Open http://127.0.0.1:3000. Extra arguments go to `cargo leptos serve` (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source scripts/env.sh
printf '\n==> Building and starting Tidings on http://%s\n' "${LEPTOS_SITE_ADDR:-127.0.0.1:3000}"
exec cargo leptos serve "$@"
