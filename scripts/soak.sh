#!/usr/bin/env bash
# The soak: two instances on one PostgreSQL and one Redis behind nginx (the README's block),
# clients on every transport recording everything (benches/soak.rs), and a chaos loop; then
# the history checker's verdict, its JSON report and a picture.
#
#   SOAK_SECS=600 ./scripts/soak.sh          # the 10-minute run (default 600 s)
#   SOAK_SECS=60  ./scripts/soak.sh          # scripts/test.sh's short run: every fault once
#
# The chaos loop repeats, every 60 s of the run: kill -9 an instance and start it again
# (at 6 s), restart Redis (14 s), restart PostgreSQL (22 s), SIGSTOP an instance for 20 s
# then SIGCONT (32 s to 52 s); the instances take turns. The clients themselves leave a
# WebSocket mid-frame and an event stream mid-stream every 10 s, and two of them go through a
# proxy of the soak's that cuts their connections mid-frame every 10 s. Every fault is written to
# faults.txt (`START_MS END_MS NAME`; a fault ends when what it hit serves again), so the
# checker can tell errors inside a fault window from errors outside one.
#
# Output (history.json, report.json, soak.svg, faults.txt, the servers' logs) goes to
# $SOAK_OUT (default target/soak, emptied first). SOAK_RELEASE=1 runs the release build
# (whole-program LTO: a long first build) instead of the dev build the tests use.
# Everything listens on 127.0.0.1; every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/postgres.sh

secs="${SOAK_SECS:-600}"
out="${SOAK_OUT:-target/soak}"
rows="${SOAK_AUDIT_ROWS:-20000}"
profile=()
[ "${SOAK_RELEASE:-0}" = 1 ] && profile=(--release)

built="$(cargo build "${profile[@]}" --features ssr --bin tidings --bench soak \
  --message-format=json-render-diagnostics)"
client="$(grep '"kind":\["bench"\]' <<<"$built" | grep '"name":"soak"' \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
server="$(grep '"kind":\["bin"\]' <<<"$built" | grep '"name":"tidings"' \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
[ -x "$client" ] && [ -x "$server" ] || { echo "soak: the soak and server binaries were not built" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
faults="$out/faults.txt"
: >"$faults"

declare -A pid=()
redis_pid=""
nginx_pid=""
client_pid=""
cleanup() {
  local p
  for p in "${pid[@]}" "$nginx_pid" "$redis_pid" "$client_pid"; do
    [ -n "$p" ] || continue
    kill -CONT "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  stop_test_postgres
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A port nothing listens on, below the kernel's ephemeral range (32768 and up): a restarted
# instance must get its port back, and an outgoing connection could hold an ephemeral one.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    listening "$p" || { echo "$p"; return; }
  done
}
# Waits until something listens on port $1 (at most $2 tenths of a second).
await_port() {
  for _ in $(seq 1 "${2:-300}"); do listening "$1" && return 0; sleep 0.1; done
  echo "soak: nothing listens on $1" >&2
  return 1
}

# PostgreSQL (no fsync, throwaway) and Redis, on loopback.
start_test_postgres
psql "$TIDINGS_TEST_POSTGRES" -qc "CREATE DATABASE soak"
db="${TIDINGS_TEST_POSTGRES%/postgres}/soak"
redis_port="$(free_port)"
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$out" \
    >>"$out/redis.log" 2>&1 &
  redis_pid=$!
  await_port "$redis_port"
}
start_redis

secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
setup_token="soak-setup-token-0123456789"
export SOAK_SETUP_TOKEN="$setup_token"
instance_env=(
  DATABASE_URL="$db" REDIS_URL="redis://127.0.0.1:$redis_port" TIDINGS_SECRET="$secret"
  TIDINGS_ADMINS=soak_admin TIDINGS_SETUP_TOKEN="$setup_token" TIDINGS_SIGNUP_PER_HOUR=0
  TIDINGS_TRUSTED_PROXIES=127.0.0.1/32 RUST_LOG="${RUST_LOG:-warn,tidings=info}"
  # With backtraces on, the first internal error (a query cut by the PostgreSQL restart)
  # symbolises one, which loads the dev binary's line tables: about 150 MB, kept for the
  # process's life, that the memory check would rightly count (seen in a 10-minute run).
  RUST_BACKTRACE="${SOAK_BACKTRACE:-0}"
)
env "${instance_env[@]}" "$server" seed --audit-rows "$rows" >"$out/seed.log" 2>&1

declare -A port=([a]="$(free_port)" [b]="$(free_port)")
start_instance() {
  local name="$1"
  env "${instance_env[@]}" LEPTOS_SITE_ADDR="127.0.0.1:${port[$name]}" "$server" serve \
    >>"$out/$name.log" 2>&1 &
  pid[$name]=$!
  echo "${pid[$name]}" >"$out/$name.pid"
  await_port "${port[$name]}"
}
start_instance a
start_instance b

# nginx with the README's block, the ports put in (as tests/it/proxy.rs does).
nginx_port="$(free_port)"
mkdir -p "$out/nginx"
block="$(awk '/^```nginx$/ { on = 1; next } on && /^```$/ { exit } on' README.md \
  | sed -e "s/listen 80;/listen 127.0.0.1:$nginx_port;/" \
    -e "s/server 127.0.0.1:3001 /server 127.0.0.1:${port[a]} /" \
    -e "s/server 127.0.0.1:3002 /server 127.0.0.1:${port[b]} /")"
n="$out/nginx"
cat >"$n/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $n/body;
  proxy_temp_path $n/proxy;
  fastcgi_temp_path $n/fastcgi;
  uwsgi_temp_path $n/uwsgi;
  scgi_temp_path $n/scgi;
$block
}
EOF
/usr/sbin/nginx -p "$n" -e "$n/error.log" -c "$n/nginx.conf" >/dev/null 2>&1 &
nginx_pid=$!
await_port "$nginx_port"

"$client" run --url "http://127.0.0.1:$nginx_port" --out "$out" --secs "$secs" \
  --pid "a=$out/a.pid" --pid "b=$out/b.pid" --faults "$faults" &
client_pid=$!

# Records a fault from $1 (ms) to now.
fault() { echo "$1 $(now_ms) $2" >>"$faults"; echo "soak: fault: $2" >&2; }

# The chaos loop: waits for the clients to start, then runs the schedule against the clock.
for _ in $(seq 1 600); do [ -s "$out/started" ] && break; kill -0 "$client_pid" 2>/dev/null || break; sleep 0.1; done
[ -s "$out/started" ] || { echo "soak: the clients did not start" >&2; wait "$client_pid"; exit 1; }
t0="$(cat "$out/started")"
# Sleeps until $1 seconds into the run; false once the run is over (or the clients ended).
at() {
  local due=$((t0 + $1 * 1000))
  (($1 < secs)) || return 1
  while (($(now_ms) < due)); do
    kill -0 "$client_pid" 2>/dev/null || return 1
    sleep 0.2
  done
}
cycle=0
while :; do
  c=$((cycle * 60))
  victim=a other=b
  ((cycle % 2)) && victim=b other=a
  at $((c + 6)) || break
  s="$(now_ms)"; kill -9 "${pid[$victim]}" 2>/dev/null || true; wait "${pid[$victim]}" 2>/dev/null || true
  start_instance "$victim"; fault "$s" "kill -9 $victim"
  at $((c + 14)) || break
  s="$(now_ms)"; kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true
  sleep 1; start_redis; fault "$s" "restart redis"
  at $((c + 22)) || break
  s="$(now_ms)"
  "${pg_as[@]}" "$(pg_bin)/pg_ctl" -D "$pg_folder/data" -m fast -w restart >>"$out/postgres.log" 2>&1
  fault "$s" "restart postgres"
  # A pause starts only if it ends within the run (the checker reads the faults then).
  ((c + 52 <= secs)) || break
  at $((c + 32)) || break
  s="$(now_ms)"; kill -STOP "${pid[$other]}" 2>/dev/null || true
  sleep 20; kill -CONT "${pid[$other]}" 2>/dev/null || true; fault "$s" "sigstop $other 20 s"
  cycle=$((cycle + 1))
done

rc=0
wait "$client_pid" || rc=$?
client_pid=""
echo "soak: output in $out (history.json, report.json, soak.svg, faults.txt, a.log, b.log)"
exit "$rc"
