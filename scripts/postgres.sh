# Sourced by scripts/test.sh: a throwaway PostgreSQL from Debian's packages, on a free loopback
# port, in a temporary folder, for the integration tests' second run (TIDINGS_TEST_POSTGRES;
# each test server then creates a database of its own there). `start_test_postgres` starts it,
# `stop_test_postgres` stops it and removes the folder (test.sh calls it on exit). PostgreSQL
# refuses to run as root, so as root it runs as the `postgres` user the Debian package creates.

pg_folder=""
pg_as=()

# The folder holding initdb and pg_ctl: on the PATH, or Debian's newest under /usr/lib/postgresql.
pg_bin() {
  local initdb
  initdb="$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)"
  [ -n "$initdb" ] && dirname "$initdb"
}

start_test_postgres() {
  local bin port
  bin="$(pg_bin)" || { echo "test: PostgreSQL's initdb was not found (scripts/setup.sh installs Debian's postgresql)." >&2; return 1; }
  pg_folder="$(mktemp -d)"
  chmod 755 "$pg_folder"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "test: running as root needs the postgres user (Debian's postgresql package)." >&2; return 1; }
    chown postgres "$pg_folder"
    pg_as=(runuser -u postgres --)
  fi
  "${pg_as[@]}" "$bin/initdb" -D "$pg_folder/data" -A trust -U tidings --no-sync >"$pg_folder/initdb.log" 2>&1 \
    || { cat "$pg_folder/initdb.log" >&2; return 1; }
  # A port nobody listens on may still be taken: these ports are in the kernel's ephemeral
  # range, so a client socket left from the tests before can hold one. Then the next is tried.
  local tries=0
  for port in $(seq 55432 55532); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    # -F: no fsync, a throwaway cluster; listens on loopback only, its socket in the folder.
    if "${pg_as[@]}" "$bin/pg_ctl" -D "$pg_folder/data" -l "$pg_folder/server.log" -w \
      -o "-h 127.0.0.1 -p $port -k $pg_folder -F -c max_connections=300" start >/dev/null; then
      export TIDINGS_TEST_POSTGRES="postgres://tidings@127.0.0.1:$port/postgres"
      return 0
    fi
    tries=$((tries + 1))
    if [ "$tries" -ge 10 ] || ! grep -q "Address already in use" "$pg_folder/server.log"; then
      cat "$pg_folder/server.log" >&2
      return 1
    fi
  done
  echo "test: no free port for PostgreSQL in 55432-55532." >&2
  return 1
}

stop_test_postgres() {
  [ -n "$pg_folder" ] || return 0
  "${pg_as[@]}" "$(pg_bin)/pg_ctl" -D "$pg_folder/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_folder"
  pg_folder=""
}
