#!/usr/bin/env bash
# Dashboard benchmark: a dashboard left open holds flat memory, in the server and in
# the browser, while the log pours in. Starts the development server on a fresh SQLite file, then
# scripts/bench-dashboard.mjs opens STREAMS admin metrics+log streams (default 100) and one
# /dashboard page in Chromium, and makes RATE logged requests a second (default 200) for SECS
# seconds (default 60), printing the server's RSS and the page's JS heap every STEP seconds.
#
#   ./scripts/bench-dashboard.sh
#   STREAMS=20 RATE=100 SECS=30 ./scripts/bench-dashboard.sh     # a quick run
#
# Flat means: from the end of the warm-up (WARMUP, default 15 s) to the end, neither grows by
# more than a few MB, although far more records pass than the page (500) or the ring (2000)
# keeps. Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# The development build, server and page together: a page hydrates only against the markup of
# the same build (a release server's differs from a debug page's). Memory growth is measured
# here, not speed.
cargo leptos build
source scripts/bench-lib.sh
SERVER_BIN=target/debug/tidings launch_server DATABASE_URL="sqlite://$work/dash.db?mode=rwc" TIDINGS_ADMINS=bench_admin \
  LEPTOS_SITE_ROOT=target/site LEPTOS_OUTPUT_NAME=tidings RUST_LOG=warn,tidings=info,tidings::http=warn
BENCH_URL="$base" BENCH_SERVER_PID="$server_pid" node scripts/bench-dashboard.mjs
