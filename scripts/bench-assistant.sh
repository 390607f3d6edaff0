#!/usr/bin/env bash
# AI token streams benchmark (issue 19): BENCH_CHATS concurrent answers (default 1000) of
# BENCH_TOKENS tokens (default 250) at BENCH_TOKENS_PER_SEC each (default 50: 50,000 tokens/s
# in all), each read over its own SSE stream. The provider is the bench process itself (OpenAI
# format, each token stamped with the microsecond it was emitted), so the added latency is
# "provider emits → reader receives" on one clock; the same streams are first read straight
# from the provider as the reference. Prints tokens/s, latency p50/p99/max for both, and the
# server's RSS, and checks every token arrived once and in order (benches/assistant.rs).
#
#   ./scripts/bench-assistant.sh
#   BENCH_CHATS=200 BENCH_TOKENS_PER_SEC=30 ./scripts/bench-assistant.sh
#
# The release server runs on 127.0.0.1 with a fresh SQLite file and is stopped at the end. Its
# limits on answers and streams per user are opened, as an operator would for a load test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

chats="${BENCH_CHATS:-1000}"
cargo build --release --features ssr --bin tidings --bench assistant
client="$(ls -t target/release/deps/assistant-* | grep -v '\.d$' | head -1)"
source scripts/bench-lib.sh

# The provider's port is chosen here so the server can be told it before the bench starts it.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
launch_server DATABASE_URL="sqlite://$work/bench.db?mode=rwc" \
  TIDINGS_AI_BASE_URL="http://127.0.0.1:$port/v1" \
  TIDINGS_AI_RUNNING_PER_USER=0 TIDINGS_AI_MAX_TOKENS=4096 \
  RUST_LOG=warn,tidings=info

BENCH_URL="$base" BENCH_SERVER_PID="$server_pid" BENCH_CHATS="$chats" \
  BENCH_PROVIDER_ADDR="127.0.0.1:$port" "$client"
