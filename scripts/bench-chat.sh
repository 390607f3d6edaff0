#!/usr/bin/env bash
# Chat benchmark, three scenarios, each against the release server on a fresh SQLite
# file (benches/chat.rs does the measuring):
#   1. ws:   CLIENTS WebSocket clients (default 1000) in one room, PUBLISHERS of them (default
#            RATE/5, so 5 msgs/s each, under the 10/s per-user limit) publishing RATE msgs/s
#            (default 1000) for SECS seconds (default 20): deliveries/s, latency p50/p99, and
#            whether every client got every message.
#   2. sse:  SSE_CLIENTS SSE subscribers (default CLIENTS) of the room, SSE_PUBLISHERS WebSocket
#            publishers (default SSE_RATE/5) sending SSE_RATE msgs/s (default 100) for SSE_SECS
#            seconds (default 15): the same figures.
#   events (not in the default PHASES): EVENTS_CLIENTS subscribers (default CLIENTS) of one
#            /api/events stream each over 4 rooms, EVENTS_RATE msgs/s (default 100: 25 per
#            room) for EVENTS_SECS seconds: delivery, order per room, latency (target: p99
#            under 100 ms at 1,000 subscribers).
#   ACKS=1: the ws scenario's publishers put a clientId on every message (the server acks
#            each and remembers the id for 24 h): compare with a run without.
#   IDLE_ROOMS=K: each idle socket joins K rooms: the cost of a subscription on a connection
#            already open is the difference from a K=1 run, per extra room.
#   3. idle: IDLE WebSockets opened and held, signed in and joined, from source addresses
#            spread over 127.0.0.0/8: server memory per connection. IDLE is a list of counts
#            (default "5000 10000 19000"), each on a fresh server, to show the cost does not
#            grow with the count.
#   idle-sse (in the default PHASES): IDLE_SSE SSE streams of one room (default 10000) held
#            the same way.
#   Reference: the ws, sse, idle (at the largest count) and idle-sse scenarios run first
#            against benches/reference.rs, a bare hyper + tokio-tungstenite server with rooms in
#            memory and coalesced writes, with the same client, offer and checks (REFERENCE=0
#            skips it): the summary gives Tidings' figures as ratios of (or beside) the
#            reference's, measured minutes apart on the same machine.
#   4. ws2 (not in the default PHASES): the ws scenario across two instances on one throwaway
#            PostgreSQL and one Redis (scripts/postgres.sh, Debian's redis-server), clients and
#            publishers spread over both.
#
#   ./scripts/bench-chat.sh
#   CLIENTS=200 RATE=200 SECS=5 IDLE=1000 IDLE_SSE=1000 ./scripts/bench-chat.sh   # a quick run
#   PHASES="idle" ./scripts/bench-chat.sh                              # some scenarios only
#
# Targets (round 2; the server and the load generator share this 2-core machine): ws at
# 2,000 clients and 1,000 msgs/s from 200 publishers: every message delivered, deliveries/s
# >= 0.9x the reference's, p99 <= 1.2x the reference's; sse at 1,000 subscribers and 100
# msgs/s: every message delivered, p99 <= 1.5x the reference's; peak RSS during both <= 2x
# the reference's (while publishing: the server's high-water mark is reset once every client
# is connected; the peak before, with the sign-ins, is printed beside it); idle: <= 5 kB per
# WebSocket with 19,000 held (and no more at 19,000 than at 5,000), <= 6 kB per SSE stream
# with 10,000 held.
#
# TIDINGS_* variables in the environment reach the server (e.g. TIDINGS_CHAT_HISTORY); the chat
# rate limit is raised only when a publisher would otherwise send more than 5 msgs/s. Everything
# listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

clients="${CLIENTS:-2000}"
rate="${RATE:-1000}"
secs="${SECS:-20}"
publishers="${PUBLISHERS:-$(((rate + 4) / 5))}"
((publishers > clients)) && publishers="$clients"
((publishers < 1)) && publishers=1
sse_clients="${SSE_CLIENTS:-1000}"
sse_rate="${SSE_RATE:-100}"
sse_secs="${SSE_SECS:-15}"
sse_publishers="${SSE_PUBLISHERS:-$(((sse_rate + 4) / 5))}"
((sse_publishers < 1)) && sse_publishers=1
idle="${IDLE:-5000 10000 19000}"
idle_sse="${IDLE_SSE:-10000}"
phases="${PHASES:-ws sse idle idle-sse}"
reference_too="${REFERENCE:-1}"

# The per-user limit the server needs: at least twice what each publisher sends.
chat_rate() {
  local need=$(((2 * $1 + $2 - 1) / $2))
  local limit="${TIDINGS_CHAT_RATE:-10}"
  ((need > limit)) && limit="$need"
  echo "$limit"
}

# Every socket is a file descriptor, in this shell's children: the server and the client.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds="$(ulimit -n)"
most_idle="$(printf '%s\n' $idle "$idle_sse" | sort -n | tail -1)"
if [[ " $phases " == *" idle"* && "$fds" != unlimited ]] && ((fds < most_idle + 1000)); then
  echo "bench: ulimit -n is $fds; $most_idle idle connections need about $((most_idle + 1000)). Raise the hard limit or lower IDLE / IDLE_SSE." >&2
  exit 1
fi

# The server and the bench in one build: built apart, the bench's dev-dependencies change the
# library's features, so each build would recompile it for the other. The bench binary's path
# comes from cargo itself (target/release/deps/chat-* could also be a test).
built="$(cargo build --release --features ssr --bin tidings --bench chat --bench reference \
  --message-format=json-render-diagnostics | grep '"kind":\["bench"\]')" || true
bench_binary() {
  grep "\"name\":\"$1\"" <<<"$built" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
}
client="$(bench_binary chat)"
reference="$(bench_binary reference)"
if [ -z "$client" ] || [ ! -x "$client" ] || [ -z "$reference" ] || [ ! -x "$reference" ]; then
  echo "bench: could not find the built chat and reference bench binaries" >&2
  exit 1
fi
source scripts/bench-lib.sh

# Starts the server on a fresh database named after the scenario; extra NAME=value follow.
fresh_server() {
  local name="$1"
  shift
  launch_server DATABASE_URL="sqlite://$work/$name.db?mode=rwc" RUST_LOG=warn,tidings=info "$@"
}

# Starts the reference server (benches/reference.rs) on a free loopback port; sets server_pid
# and base like launch_server.
launch_reference() {
  "$reference" >"$work/reference.log" 2>&1 &
  server_pid=$!
  wait_listening "$work/reference.log"
}

# Runs the bench client against the server ($label names it in the results: tidings or
# reference); its figures are kept for the summary.
label=tidings
run_client() {
  printf '\n[%s]\n' "$label"
  if ! "$client" "$@" --url "$base" --pid "$server_pid" \
    | awk -v l="$label" '/^result / { sub(/^result /, "result server=" l " ") } { print; fflush() }' \
    | tee -a "$work/results"; then
    echo "bench: the chat bench failed; the server's log ends:" >&2
    tail -n 20 "$work"/*.log >&2
    exit 1
  fi
}

for phase in $phases; do
  case "$phase" in
    ws)
      if [ "$reference_too" = 1 ]; then
        launch_reference
        label=reference run_client ws --clients "$clients" --publishers "$publishers" --rate "$rate" --secs "$secs" ${ACKS:+--acks}
        stop_server
      fi
      fresh_server ws TIDINGS_CHAT_RATE="$(chat_rate "$rate" "$publishers")"
      run_client ws --clients "$clients" --publishers "$publishers" --rate "$rate" --secs "$secs" ${ACKS:+--acks}
      stop_server
      ;;
    sse)
      if [ "$reference_too" = 1 ]; then
        launch_reference
        label=reference run_client sse --clients "$sse_clients" --publishers "$sse_publishers" --rate "$sse_rate" --secs "$sse_secs"
        stop_server
      fi
      fresh_server sse TIDINGS_CHAT_RATE="$(chat_rate "$sse_rate" "$sse_publishers")"
      run_client sse --clients "$sse_clients" --publishers "$sse_publishers" --rate "$sse_rate" --secs "$sse_secs"
      stop_server
      ;;
    events)
      # The multi-topic stream: EVENTS_CLIENTS subscribers (default CLIENTS), each on one
      # /api/events stream of 4 rooms, 25 msgs/s per room (EVENTS_RATE, default 100, in all).
      events_rate="${EVENTS_RATE:-100}"
      events_publishers="${EVENTS_PUBLISHERS:-$(((events_rate + 4) / 5))}"
      fresh_server events TIDINGS_CHAT_RATE="$(chat_rate "$events_rate" "$events_publishers")"
      run_client events --clients "${EVENTS_CLIENTS:-$clients}" --publishers "$events_publishers" \
        --rate "$events_rate" --secs "${EVENTS_SECS:-$sse_secs}"
      stop_server
      ;;
    ws2)
      # Two instances on one PostgreSQL and one Redis, clients and publishers spread over
      # both: the cross-instance fan-out.
      source scripts/postgres.sh
      trap 'stop_test_postgres; [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null; cleanup' EXIT
      start_test_postgres
      psql "$TIDINGS_TEST_POSTGRES" -qc "CREATE DATABASE bench_ws2"
      db="${TIDINGS_TEST_POSTGRES%/postgres}/bench_ws2"
      redis_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
      redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
      redis_pid=$!
      for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break; sleep 0.05; done
      limit="$(chat_rate "$rate" "$publishers")"
      # One secret for both (PostgreSQL keeps none).
      secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      SERVER_LOG=a.log launch_server DATABASE_URL="$db" REDIS_URL="redis://127.0.0.1:$redis_port" \
        RUST_LOG=warn,tidings=info TIDINGS_CHAT_RATE="$limit" TIDINGS_SECRET="$secret"
      pid_a="$server_pid" base_a="$base"
      SERVER_LOG=b.log launch_server DATABASE_URL="$db" REDIS_URL="redis://127.0.0.1:$redis_port" \
        RUST_LOG=warn,tidings=info TIDINGS_CHAT_RATE="$limit" TIDINGS_SECRET="$secret"
      pid_b="$server_pid" base_b="$base"
      base="$base_a,$base_b" server_pid="$pid_a,$pid_b"
      run_client ws --clients "$clients" --publishers "$publishers" --rate "$rate" --secs "$secs" --room bench2
      kill "$pid_a" "$pid_b" 2>/dev/null && wait "$pid_a" "$pid_b" 2>/dev/null || true
      server_pid=""
      kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
      redis_pid=""
      stop_test_postgres
      ;;
    idle)
      if [ "$reference_too" = 1 ]; then
        launch_reference
        label=reference run_client idle --clients "${idle##* }"
        stop_server
      fi
      for count in $idle; do
        fresh_server "idle-$count"
        run_client idle --clients "$count" --rooms "${IDLE_ROOMS:-1}"
        stop_server
      done
      ;;
    idle-sse)
      if [ "$reference_too" = 1 ]; then
        launch_reference
        label=reference run_client idle --sse --clients "$idle_sse"
        stop_server
      fi
      fresh_server idle-sse
      run_client idle --sse --clients "$idle_sse"
      stop_server
      ;;
    *)
      echo "bench: unknown phase $phase (ws, sse, events, idle, idle-sse, ws2)" >&2
      exit 1
      ;;
  esac
done

printf '\nSummary (round 2 targets, against the reference measured in this run; the server and the load generator share this machine):\n'
awk '
  $1 != "result" { next }
  {
    delete f
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
  }
  f["server"] == "reference" {
    ref_per_s[f["mode"]] = f["per_s"]; ref_p99[f["mode"]] = f["p99_ms"]; ref_rss[f["mode"]] = f["rss_mb"]
    ref_anon[f["mode"]] = f["anon_mb"]
    ref_kb[f["mode"]] = f["kb_each"]; ref_n[f["mode"]] = f["clients"]
    next
  }
  f["mode"] == "ws" || f["mode"] == "sse" || f["mode"] == "events" {
    kind = f["mode"] == "ws" ? "WebSocket" : (f["mode"] == "sse" ? "SSE      " : "Events   ")
    if (f["instances"] + 0 > 1) kind = "WS, " f["instances"] " inst"
    printf "  %s %5d clients, %5d msgs/s: %9.0f deliveries/s, p99 %.1f ms, peak RSS %s MB while publishing (%s MB before), all delivered %s", \
      kind, f["clients"], f["rate"], f["per_s"], f["p99_ms"], f["rss_mb"], f["setup_rss_mb"], f["all"]
    ok = f["all"] == "yes"
    m = f["mode"]
    if (f["instances"] + 0 > 1) {
      ok = ok && f["p99_ms"] + 0 < 100
      printf " (p99 < 100 ms)"
    } else if (m in ref_per_s) {
      p99_max = (m == "ws" ? 1.2 : 1.5)
      rate_x = f["per_s"] / (ref_per_s[m] > 0 ? ref_per_s[m] : 1)
      p99_x = f["p99_ms"] / (ref_p99[m] > 0 ? ref_p99[m] : 0.1)
      rss_x = f["rss_mb"] / (ref_rss[m] > 0 ? ref_rss[m] : 1)
      printf "\n      vs reference (%.0f/s, p99 %.1f ms, %s MB): deliveries %.2fx", ref_per_s[m], ref_p99[m], ref_rss[m], rate_x
      if (m == "ws") { printf " (>= 0.9)"; ok = ok && rate_x >= 0.9 }
      printf ", p99 %.2fx (<= %.1f), RSS %.2fx (<= 2)", p99_x, p99_max, rss_x
      ok = ok && p99_x <= p99_max && rss_x <= 2
      if (f["anon_mb"] != "" && f["anon_mb"] != "na" && ref_anon[m] + 0 > 0)
        printf "\n      (not a target: anonymous memory at the end, without the binary'"'"'s code, %s MB vs %s MB: %.2fx)", f["anon_mb"], ref_anon[m], f["anon_mb"] / ref_anon[m]
    } else {
      printf " (no reference run)"
      ok = 0
    }
    printf "  [%s]\n", ok ? "met" : "MISSED"
  }
  f["mode"] == "idle" || f["mode"] == "idle-sse" {
    limit = f["mode"] == "idle" ? 5 : 6
    ok = f["held"] == "yes" && f["kb_each"] != "na" && f["kb_each"] + 0 <= limit
    ref = f["mode"] in ref_kb ? sprintf(", reference %s kB at %d", ref_kb[f["mode"]], ref_n[f["mode"]]) : ""
    printf "  Idle %-10s %5d: %s open, held at once %s, %s kB each (<= %d)%s  [%s]\n", \
      (f["mode"] == "idle" ? "WebSockets" : "SSE"), f["clients"], f["open"], f["held"], f["kb_each"], limit, ref, (ok ? "met" : "MISSED")
  }
' "$work/results"
