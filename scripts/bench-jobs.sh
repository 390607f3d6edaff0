#!/usr/bin/env bash
# Jobs benchmark (benches/jobs.rs), three phases:
#   start  BENCH_SAMPLES (200) one-step jobs queued one at a time onto idle workers: from the
#          POST to the first event, and from the job's createdAt to its first event's at;
#   cold   BENCH_JOBS (200) demo jobs of BENCH_STEPS (20) steps with no step delay, queued at
#          once onto idle workers and each watched over its own SSE stream: events/s from the
#          first POST to the last event;
#   live   the same with every worker first held by a gate job, so the events are delivered
#          live: events/s and latency from each event's making to its arrival.
# Every phase checks that every event arrived exactly once and in order. Prints the server's
# peak RSS.
#
#   ./scripts/bench-jobs.sh
#   BENCH_PHASES=start BENCH_SAMPLES=500 ./scripts/bench-jobs.sh
#   BENCH_DB=postgres ./scripts/bench-jobs.sh
#
# The release server runs on 127.0.0.1 with one worker per job and a fresh SQLite file; with
# BENCH_DB=postgres, a throwaway PostgreSQL (scripts/postgres.sh) and two instances: the jobs
# are queued on one that runs none (TIDINGS_JOB_WORKERS=0) and run and watched on the other,
# so every start is a wake-up through NOTIFY. Servers are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

jobs="${BENCH_JOBS:-200}"
# One build for both: apart, the bench's dev-dependencies would make each recompile the library.
cargo build --release --features ssr --bin tidings --bench jobs
client="$(ls -t target/release/deps/jobs-* | grep -v '\.d$' | head -1)"
source scripts/bench-lib.sh

queue=""
if [ "${BENCH_DB:-sqlite}" = postgres ]; then
  source scripts/postgres.sh
  trap 'stop_test_postgres; [ -n "${queue_pid:-}" ] && kill "$queue_pid" 2>/dev/null; cleanup' EXIT
  start_test_postgres
  psql "$TIDINGS_TEST_POSTGRES" -qc "CREATE DATABASE bench_jobs"
  db="${TIDINGS_TEST_POSTGRES%/postgres}/bench_jobs"
  secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  SERVER_LOG=queue.log launch_server DATABASE_URL="$db" TIDINGS_SECRET="$secret" \
    TIDINGS_JOB_WORKERS=0 RUST_LOG=warn,tidings=info
  queue="$base" queue_pid="$server_pid"
  launch_server DATABASE_URL="$db" TIDINGS_SECRET="$secret" TIDINGS_JOB_WORKERS="$jobs" \
    RUST_LOG=warn,tidings=info
else
  launch_server DATABASE_URL="sqlite://$work/bench.db?mode=rwc" TIDINGS_JOB_WORKERS="$jobs" \
    RUST_LOG=warn,tidings=info
fi

BENCH_URL="$base" BENCH_QUEUE_URL="${queue:-$base}" BENCH_SERVER_PID="$server_pid" \
  BENCH_JOBS="$jobs" "$client"
