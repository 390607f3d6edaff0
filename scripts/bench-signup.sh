#!/usr/bin/env bash
# Signup burst benchmark: login latency while BENCH_SIGNUPS signups (default 200)
# arrive at once from distinct addresses (benches/signup.rs). Prints login p50/p99 alone and
# during the burst, and what the signups got.
#
#   ./scripts/bench-signup.sh
#   BENCH_SIGNUPS=500 ./scripts/bench-signup.sh
#
# The release server runs on 127.0.0.1 with a fresh SQLite file, trusting this client as its
# proxy (so X-Forwarded-For gives each signup its own address) and with the default signup
# limit of 20 per address per hour; it is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# One build for both: apart, the bench's dev-dependencies would make each recompile the library.
cargo build --release --features ssr --bin tidings --bench signup
client="$(ls -t target/release/deps/signup-* | grep -v '\.d$' | head -1)"
source scripts/bench-lib.sh
launch_server DATABASE_URL="sqlite://$work/bench.db?mode=rwc" RUST_LOG=warn,tidings=info \
  TIDINGS_TRUSTED_PROXIES=127.0.0.1 TIDINGS_SIGNUP_PER_HOUR=20

BENCH_URL="$base" "$client"
