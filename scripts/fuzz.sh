#!/usr/bin/env bash
# Fuzzes the parsers that read what clients and other servers send (fuzz/fuzz_targets/):
# each target for FUZZ_SECS seconds (default 600), FUZZ_JOBS at a time (default 2, one per
# core). Findings are kept in fuzz/artifacts/<target>/, the corpus in fuzz/corpus/<target>/,
# each run's last lines in fuzz/logs/<target>.log; exits 1 if any target found a crash.
#
# cargo-fuzz drives libFuzzer, which needs a nightly toolchain: this script uses rustup's
# `nightly` when one is installed (cargo-fuzz itself is installed from crates.io if missing).
# Without nightly it stops and says so; the property tests beside the code
# (PROPTEST_CASES=20000 cargo test --features ssr properties) cover the same parsers on stable.
# Not part of scripts/test.sh: a fresh machine may have no nightly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
secs="${FUZZ_SECS:-600}"
jobs="${FUZZ_JOBS:-2}"
targets="${FUZZ_TARGETS:-ws_frame ndjson sse_tail cursor export_query}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain list); run the long property tests instead:" >&2
  echo "      PROPTEST_CASES=20000 cargo test --features ssr properties" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version "${CARGO_FUZZ_VERSION:-0.13.2}" --locked

cd fuzz
mkdir -p logs
# No sanitizer: the code under test is safe Rust; the fuzzers look for panics (assertions
# on the invariants included, and overflow checks: -a keeps debug assertions) and hangs, and
# run faster without one.
cargo +nightly fuzz build -s none -a
run() {
  local t="$1"
  mkdir -p "corpus/$t" "artifacts/$t"
  if cargo +nightly fuzz run -s none -a "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=4096 \
    -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1; then
    echo "fuzz: $t: no crash in $secs s ($(grep -o 'Done [0-9]* runs' "logs/$t.log" | grep -o '[0-9]*' || echo '?') runs, $(ls "corpus/$t" | wc -l) corpus entries)"
  else
    echo "fuzz: $t: FOUND a crash: $(ls "artifacts/$t")"
    tail -n 30 "logs/$t.log"
    return 1
  fi
}
export -f run
export secs
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run {}'
