#!/usr/bin/env bash
# Export benchmark: streams N seeded audit rows over loopback and prints rows/s,
# MB/s and the server's memory, for each row count and each SQLite reader.
#
#   ./scripts/bench-export.sh                 # 100,000 and 1,000,000 rows
#   BENCH_ROWS="1000000" BENCH_READERS=auto BENCH_THREADS=2 BENCH_REPEATS=3 ./scripts/bench-export.sh
#
# For each row count it seeds a fresh SQLite file (`tidings seed`, timed), then for each reader
# (`auto` = rusqlite, `sqlx` = the portable path), each TIDINGS_EXPORT_THREADS of BENCH_THREADS
# (default "1 2"; rusqlite only: sqlx reads on one) and batch size starts the release server,
# signs in, and fetches the whole export with curl into /dev/null (curl is the lightest client,
# so the figure is the server's) BENCH_REPEATS times (default 5); the median time is shown, and
# the first fetch's beside it ("first": the export cache is empty then, see below). The server's peak RSS is reset just before each export
# (/proc/PID/clear_refs), so "growth" is what the export itself added. Finally the command-line
# consumer (`tidings export`, which parses and verifies every row) runs once for comparison.
#
# The file ceiling (BENCH_NGINX=1, the default; needs Debian's nginx): the largest export
# (reader auto, the most threads, the largest batch) is saved to a file once, nginx serves that
# file on another loopback port (sendfile, no access log), and so does the bare hyper file
# server in benches/reference.rs (`--files`: read and sent 256 KiB at a time), and the same
# curl fetches each BENCH_REPEATS times. The target (issue 20): Tidings' rows/s at least 0.75x
# nginx's (or a bare hyper file server's) for the same bytes.
#
# The export cache (`TIDINGS_EXPORT_CACHE_MB`, on by default): the first export of a server writes
# the closed stretches of the log it sends to files, and the next ones send those files. So the
# first fetch of each server is the export without the cache, and the median (of 5) with it.
# BENCH_CACHE_MB=0 turns it off, for every fetch.
# Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

rows_list="${BENCH_ROWS:-100000 1000000}"
batches="${BENCH_BATCHES:-500 10000}"
readers="${BENCH_READERS:-auto sqlx}"
threads_list="${BENCH_THREADS:-1 2}"
repeats="${BENCH_REPEATS:-5}"
with_nginx="${BENCH_NGINX:-1}"
cache_mb="${BENCH_CACHE_MB:-1024}"

command -v curl >/dev/null || { echo "bench: curl is needed (apt-get install curl)" >&2; exit 1; }
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
if [ "$with_nginx" = 1 ] && [ ! -x "$nginx_bin" ]; then
  echo "bench: nginx is needed for the file ceiling (apt-get install nginx), or BENCH_NGINX=0" >&2
  exit 1
fi
# The server and the reference in one build (as bench-chat.sh builds them: built apart, the
# bench's dev-dependencies change the library's features and each build would redo the other).
built="$(cargo build --release --features ssr --bin tidings --bench reference \
  --message-format=json-render-diagnostics | grep '"kind":\["bench"\]')" || true
reference="$(sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' <<<"$built" | tail -1)"
if [ "$with_nginx" = 1 ] && { [ -z "$reference" ] || [ ! -x "$reference" ]; }; then
  echo "bench: could not find the built reference bench binary" >&2
  exit 1
fi
source scripts/bench-lib.sh

# Starts the server on a free port for `db`, `reader` and `threads` (default 2), and signs the
# bench admin in.
start_server() {
  local db="$1" reader="$2" threads="${3:-2}"
  launch_server DATABASE_URL="$db" TIDINGS_ADMINS=bench TIDINGS_EXPORT_READER="$reader" \
    TIDINGS_EXPORT_THREADS="$threads" TIDINGS_EXPORT_CACHE_MB="$cache_mb" RUST_LOG=info,tower_http=warn
  curl -s -o /dev/null -c "$work/jar" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password","setupToken":"'"$BENCH_SETUP_TOKEN"'"}' "$base/api/auth/signup"
  curl -s -o /dev/null -c "$work/jar" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password"}' "$base/api/auth/login"
}

# The median of BENCH_REPEATS fetches of URL (curl into /dev/null), the first one's time, and
# the size: "seconds first bytes".
median_fetch() {
  local url="$1" times=() size t
  shift
  for _ in $(seq 1 "$repeats"); do
    read -r size t < <(curl -s "$@" -o /dev/null -w '%{size_download} %{time_total}\n' "$url")
    times+=("$t")
  done
  printf '%s %s %s\n' "$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')" "${times[0]}" "$size"
}

kb() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$server_pid/status"; }

declare -A secs_of first_of
printf '\n%-9s %-8s %-7s %-6s %10s %8s %8s %11s %9s %9s %9s\n' rows reader threads batch seconds first MB rows/s MB/s "RSS MB" growth
for rows in $rows_list; do
  db="sqlite://$work/bench-$rows.db?mode=rwc"
  seed_line="$(DATABASE_URL="$db" target/release/tidings seed --audit-rows "$rows" | tail -1)"
  seeds+=("$seed_line")
  for reader in $readers; do
    threads_here="$threads_list"
    [ "$reader" = sqlx ] && threads_here=1
    for threads in $threads_here; do
      start_server "$db" "$reader" "$threads"
      total="$(curl -s -b "$work/jar" "$base/api/audit/count" | sed 's/.*"count":\([0-9]*\).*/\1/')"
      for batch in $batches; do
        before_kb="$(kb VmRSS)"
        echo 5 >"/proc/$server_pid/clear_refs"
        read -r secs first size < <(median_fetch "$base/api/audit/export?batch=$batch" -b "$work/jar")
        secs_of["$rows $reader $threads $batch"]="$secs"
        first_of["$rows $reader $threads $batch"]="$first"
        peak_kb="$(kb VmHWM)"
        awk -v r="$total" -v rd="$reader" -v th="$threads" -v b="$batch" -v s="$secs" -v f="$first" -v z="$size" -v bk="$before_kb" -v pk="$peak_kb" \
          'BEGIN { printf "%-9d %-8s %-7d %-6d %10.3f %8.3f %8.1f %11.0f %9.1f %9.1f %9.1f\n", r, rd, th, b, s, f, z/1e6, r/s, z/1e6/s, pk/1024, (pk-bk)/1024 }'
      done
      stop_server
    done
  done
done

printf '\nSeeding:\n'
printf '  %s\n' "${seeds[@]}"

last_rows="${rows_list##* }"
printf '\nThe command-line consumer (parses and verifies every row), %s rows:\n  ' "$last_rows"
start_server "sqlite://$work/bench-$last_rows.db?mode=rwc" auto
target/release/tidings export --server "$base" --username bench --password bench-password --quiet --out /dev/null --batch 10000
stop_server

[ "$with_nginx" = 1 ] || exit 0
# The file ceiling: the same bytes from a file, served by nginx and by a bare hyper server,
# read by the same curl.
best_batch="$(printf '%s\n' $batches | sort -n | tail -1)"
best_threads="$(printf '%s\n' $threads_list | sort -n | tail -1)"
tidings_secs="${secs_of["$last_rows auto $best_threads $best_batch"]:-}"
# The first fetch of the server that measured batch 500 ran with an empty cache.
first_batch="$(printf '%s\n' $batches | sort -n | head -1)"
tidings_first="${first_of["$last_rows auto $best_threads $first_batch"]:-}"
mkdir -p "$work/www" "$work/nginx-tmp"
start_server "sqlite://$work/bench-$last_rows.db?mode=rwc" auto "$best_threads"
curl -s -b "$work/jar" -o "$work/www/export.ndjson" "$base/api/audit/export?batch=$best_batch"
stop_server
chmod 755 "$work" "$work/www"
chmod 644 "$work/www/export.ndjson"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
$([ "$(id -u)" = 0 ] && echo "user root;")
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $work/nginx-tmp/body;
  proxy_temp_path $work/nginx-tmp/proxy;
  fastcgi_temp_path $work/nginx-tmp/fastcgi;
  uwsgi_temp_path $work/nginx-tmp/uwsgi;
  scgi_temp_path $work/nginx-tmp/scgi;
  types { application/x-ndjson ndjson; }
  server {
    listen 127.0.0.1:$port;
    root $work/www;
  }
}
CONF
"$nginx_bin" -e "$work/nginx-error.log" -p "$work" -c "$work/nginx.conf" &
nginx_pid=$!
trap 'kill "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null; cleanup' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
read -r nginx_secs _ nginx_size < <(median_fetch "http://127.0.0.1:$port/export.ndjson")
file_size="$(stat -c %s "$work/www/export.ndjson")"
[ "$nginx_size" = "$file_size" ] || { echo "bench: nginx sent $nginx_size bytes of $file_size" >&2; exit 1; }
# The bare hyper file server (benches/reference.rs --files), on the same file.
"$reference" --files "$work/www" >"$work/reference.log" 2>&1 &
server_pid=$!
wait_listening "$work/reference.log"
read -r hyper_secs _ hyper_size < <(median_fetch "$base/files/export.ndjson")
stop_server
[ "$hyper_size" = "$file_size" ] || { echo "bench: the hyper file server sent $hyper_size bytes of $file_size" >&2; exit 1; }
printf '\nThe file ceiling, the same %s rows (%.1f MB), the median of %s fetches by the same curl:\n' "$(wc -l <"$work/www/export.ndjson")" \
  "$(awk -v z="$file_size" 'BEGIN { print z / 1e6 }')" "$repeats"
file_rows="$(wc -l <"$work/www/export.ndjson")"
awk -v r="$file_rows" -v n="$nginx_secs" -v h="$hyper_secs" -v t="$tidings_secs" -v f="$tidings_first" -v fb="$first_batch" -v b="$best_batch" -v th="$best_threads" -v c="$cache_mb" 'BEGIN {
  printf "  nginx, the file (sendfile):         %6.3f s  %11.0f rows/s\n", n, r / n
  printf "  bare hyper, the file (256 KiB reads): %6.3f s  %11.0f rows/s\n", h, r / h
  printf "  Tidings (auto, %d threads, %5d):  %6.3f s  %11.0f rows/s  (the median; export cache %d MB)\n", th, b, t, r / t, c
  x = n / t; y = h / t
  printf "  Tidings / nginx: %.2fx, Tidings / bare hyper: %.2fx (target >= 0.75 of either)  [%s]\n", x, y, (x >= 0.75 || y >= 0.75 ? "met" : "MISSED")
  if (f != "") {
    printf "  Tidings, the first export of a fresh server (batch %d, nothing cached yet): %.3f s, %.0f rows/s: %.2fx nginx, %.2fx bare hyper\n", fb, f, r / f, n / f, h / f
  }
}'
