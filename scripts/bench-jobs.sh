#!/usr/bin/env bash
# Jobs benchmark: BENCH_JOBS demo jobs (default 200) of BENCH_STEPS steps (default
# 20) with no step delay, each watched over its own SSE stream, run to completion. Prints
# events/s delivered, event latency p50/p99 and the server's peak RSS, and checks every event
# arrived exactly once and in order (benches/jobs.rs).
#
#   ./scripts/bench-jobs.sh
#   BENCH_JOBS=500 BENCH_STEPS=50 ./scripts/bench-jobs.sh
#
# The release server runs on 127.0.0.1 with a fresh SQLite file and one worker per job, and is
# stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

jobs="${BENCH_JOBS:-200}"
# One build for both: apart, the bench's dev-dependencies would make each recompile the library.
cargo build --release --features ssr --bin tidings --bench jobs
client="$(ls -t target/release/deps/jobs-* | grep -v '\.d$' | head -1)"
source scripts/bench-lib.sh
launch_server DATABASE_URL="sqlite://$work/bench.db?mode=rwc" TIDINGS_JOB_WORKERS="$jobs" \
  RUST_LOG=warn,tidings=info

BENCH_URL="$base" BENCH_SERVER_PID="$server_pid" BENCH_JOBS="$jobs" "$client"
