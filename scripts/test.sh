#!/usr/bin/env bash
# Command 2: set everything up, then run every test:
#   0. gates: `cargo fmt --check`, clippy with warnings as errors for the server (every target)
#      and the browser (wasm32) builds, and no dependency that the code never names,
#   1. unit tests beside the code and integration tests in tests/ (real server on 127.0.0.1:0),
#      then the integration tests again on a throwaway PostgreSQL (scripts/postgres.sh),
#   2. a 60 s soak under faults with its history checker (scripts/soak.sh),
#   3. Playwright specs in end2end/ driving the real binary in Chromium, on a dedicated port
#      with a fresh SQLite database in a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source scripts/env.sh
# setup.sh installed PostgreSQL, Redis and nginx: a test that finds one missing fails here
# instead of skipping, as it does under a plain `cargo test`.
export TIDINGS_TEST_SERVICES=required

printf '\n==> Gates: formatting, lints (server and browser builds), dependencies\n'
cargo fmt --all --check
cargo clippy --all-targets --features ssr -- -D warnings
cargo clippy --lib --features hydrate --target wasm32-unknown-unknown -- -D warnings
./scripts/check-deps.sh

printf '\n==> Unit and integration tests\n'
cargo test --features ssr

printf '\n==> Integration tests again, on PostgreSQL\n'
source scripts/postgres.sh
trap stop_test_postgres EXIT
start_test_postgres
cargo test --features ssr --test it
stop_test_postgres
unset TIDINGS_TEST_POSTGRES

printf '\n==> Soak: 60 s of every transport under every fault, each delivery checked\n'
# Two instances on PostgreSQL and Redis behind nginx; kill -9, Redis and PostgreSQL restarts,
# a 20 s SIGSTOP, mid-frame cuts. The checker's verdict fails the run (scripts/soak.sh).
SOAK_SECS=60 ./scripts/soak.sh

port="${TIDINGS_E2E_PORT:-3917}"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "test: port $port is already in use; the tests would talk to that server instead." >&2
  echo "      Stop it, or choose another port with TIDINGS_E2E_PORT." >&2
  exit 1
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

printf '\n==> End-to-end tests (Chromium) on 127.0.0.1:%s\n' "$port"
# The export spec reads these rows (ids 1 to 3,000) before anything else is written.
DATABASE_URL="sqlite://$scratch/e2e.db?mode=rwc" \
  cargo run --quiet --features ssr --bin tidings -- seed --audit-rows 3000
# Server and specs share the setup token (the listed admins sign up with it). Every spec's
# signup comes from 127.0.0.1, so the per-address signup limit is opened, as an operator
# would for a load test.
LEPTOS_SITE_ADDR="127.0.0.1:$port" \
TIDINGS_E2E_URL="http://127.0.0.1:$port" \
DATABASE_URL="sqlite://$scratch/e2e.db?mode=rwc" \
TIDINGS_ADMINS=e2e_admin,e2e_exporter,e2e_notifier,e2e_watcher,e2e_moderator,e2e_keeper,e2e_counter \
TIDINGS_SETUP_TOKEN=e2e-setup-token-0123456789 \
TIDINGS_SIGNUP_PER_HOUR=0 \
TIDINGS_SSE_MAX_SECS=3 \
TIDINGS_AI_TOKENS_PER_SEC=15 \
RUST_LOG="${RUST_LOG:-warn}" \
  cargo leptos end-to-end
