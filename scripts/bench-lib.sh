# Sourced by the bench scripts: a scratch folder, the release server on a free loopback port,
# and cleanup (the server is stopped by its PID and the folder removed on exit).
work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "${BENCH_KEEP_LOGS:-}" ] && cp "$work"/*.log "$BENCH_KEEP_LOGS"/ 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The token the benches' admins sign up with (TIDINGS_ADMINS names need it).
export BENCH_SETUP_TOKEN="bench-setup-token-0123456789"

# Starts target/release/tidings (or $SERVER_BIN, logging to $work/$SERVER_LOG) with the environment given as arguments
# (NAME=value …) on 127.0.0.1:0; sets server_pid and base (http://127.0.0.1:PORT) once it listens.
# A load test is one address and a few users doing a lot: the per-address and per-user limits are
# opened, as an operator would for one (the arguments may set them again).
launch_server() {
  local log="$work/${SERVER_LOG:-server.log}"
  env TIDINGS_SIGNUP_PER_HOUR=0 TIDINGS_MAX_STREAMS_PER_USER=0 TIDINGS_MAX_ACTIVE_JOBS_PER_USER=0 \
    TIDINGS_MAX_RUNNING_JOBS_PER_USER=256 TIDINGS_MAX_CONNECTIONS=100000 \
    TIDINGS_SETUP_TOKEN="$BENCH_SETUP_TOKEN" \
    "$@" LEPTOS_SITE_ADDR=127.0.0.1:0 "${SERVER_BIN:-target/release/tidings}" serve >"$log" 2>&1 &
  server_pid=$!
  wait_listening "$log"
}

# Waits (30 s at most) for server_pid to print `listening on http://ADDR` into LOG; sets base.
wait_listening() {
  local log="$1"
  base=""
  for _ in $(seq 1 300); do
    base="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's/listening on //')" || true
    [ -n "$base" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench: the server ($log) did not start" >&2
  exit 1
}

stop_server() {
  kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
