#!/usr/bin/env bash
# Jobs benchmark (issue 4): BENCH_JOBS demo jobs (default 200) of BENCH_STEPS steps (default
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
cargo build --release --features ssr --bin tidings
cargo build --release --features ssr --bench jobs
client="$(ls -t target/release/deps/jobs-* | grep -v '\.d$' | head -1)"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

DATABASE_URL="sqlite://$work/bench.db?mode=rwc" TIDINGS_JOB_WORKERS="$jobs" \
  LEPTOS_SITE_ADDR=127.0.0.1:0 RUST_LOG=warn,tidings=info \
  target/release/tidings serve >"$work/server.log" 2>&1 &
server_pid=$!
base=""
for _ in $(seq 1 300); do
  base="$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | head -1 | sed 's/listening on //')" || true
  [ -n "$base" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { echo "bench: the server did not start" >&2; exit 1; }

BENCH_URL="$base" BENCH_SERVER_PID="$server_pid" BENCH_JOBS="$jobs" "$client"
