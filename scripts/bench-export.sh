#!/usr/bin/env bash
# Export benchmark: streams N seeded audit rows over loopback and prints rows/s,
# MB/s and the server's memory, for each row count and each SQLite reader.
#
#   ./scripts/bench-export.sh                 # 100,000 and 1,000,000 rows
#   BENCH_ROWS="1000000" BENCH_READERS=auto BENCH_REPEATS=3 ./scripts/bench-export.sh
#
# For each row count it seeds a fresh SQLite file (`tidings seed`, timed), then for each reader
# (`auto` = rusqlite, `sqlx` = the portable path) and batch size starts the release server,
# signs in, and fetches the whole export with curl into /dev/null (curl is the lightest client,
# so the figure is the server's) BENCH_REPEATS times (default 5); the median time is shown. The server's peak RSS is reset just before each export
# (/proc/PID/clear_refs), so "growth" is what the export itself added. Finally the command-line
# consumer (`tidings export`, which parses and verifies every row) runs once for comparison.
# Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

rows_list="${BENCH_ROWS:-100000 1000000}"
batches="${BENCH_BATCHES:-500 10000}"
readers="${BENCH_READERS:-auto sqlx}"
repeats="${BENCH_REPEATS:-5}"

command -v curl >/dev/null || { echo "bench: curl is needed (apt-get install curl)" >&2; exit 1; }
cargo build --release --features ssr --bin tidings
source scripts/bench-lib.sh

# Starts the server on a free port for `db` and `reader`, and signs the bench admin in.
start_server() {
  local db="$1" reader="$2"
  launch_server DATABASE_URL="$db" TIDINGS_ADMINS=bench TIDINGS_EXPORT_READER="$reader" \
    RUST_LOG=info,tower_http=warn
  curl -s -o /dev/null -c "$work/jar" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password","setupToken":"'"$BENCH_SETUP_TOKEN"'"}' "$base/api/auth/signup"
  curl -s -o /dev/null -c "$work/jar" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password"}' "$base/api/auth/login"
}

kb() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$server_pid/status"; }

printf '\n%-9s %-8s %-6s %10s %8s %11s %9s %9s %9s\n' rows reader batch seconds MB rows/s MB/s "RSS MB" growth
for rows in $rows_list; do
  db="sqlite://$work/bench-$rows.db?mode=rwc"
  seed_line="$(DATABASE_URL="$db" target/release/tidings seed --audit-rows "$rows" | tail -1)"
  seeds+=("$seed_line")
  for reader in $readers; do
    start_server "$db" "$reader"
    total="$(curl -s -b "$work/jar" "$base/api/audit/count" | sed 's/.*"count":\([0-9]*\).*/\1/')"
    for batch in $batches; do
      before_kb="$(kb VmRSS)"
      echo 5 >"/proc/$server_pid/clear_refs"
      times=()
      for _ in $(seq 1 "$repeats"); do
        read -r size t < <(curl -s -b "$work/jar" -o /dev/null -w '%{size_download} %{time_total}\n' \
          "$base/api/audit/export?batch=$batch")
        times+=("$t")
      done
      secs="$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
      peak_kb="$(kb VmHWM)"
      awk -v r="$total" -v rd="$reader" -v b="$batch" -v s="$secs" -v z="$size" -v bk="$before_kb" -v pk="$peak_kb" \
        'BEGIN { printf "%-9d %-8s %-6d %10.2f %8.1f %11.0f %9.1f %9.1f %9.1f\n", r, rd, b, s, z/1e6, r/s, z/1e6/s, pk/1024, (pk-bk)/1024 }'
    done
    stop_server
  done
done

printf '\nSeeding:\n'
printf '  %s\n' "${seeds[@]}"

last_rows="${rows_list##* }"
printf '\nThe command-line consumer (parses and verifies every row), %s rows:\n  ' "$last_rows"
start_server "sqlite://$work/bench-$last_rows.db?mode=rwc" auto
target/release/tidings export --server "$base" --username bench --password bench-password --quiet --out /dev/null --batch 10000
stop_server
