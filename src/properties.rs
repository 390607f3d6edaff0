//! What the property tests (proptest) beside the code share: how many cases each runs.
//!
//! Each test names its own count for `cargo test` (enough to be worth it in CI, a few seconds
//! in all); `PROPTEST_CASES=<n>` raises every one of them for a long run, the stand-in for a
//! fuzzer where no nightly toolchain is at hand:
//! `PROPTEST_CASES=2000000 cargo test --release --features ssr properties`. A failing case is
//! shrunk and printed with the seed; nothing is written into the source tree.

use proptest::test_runner::Config;

/// A test's settings: `cases` unless `PROPTEST_CASES` says otherwise.
pub fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..Config::default()
    }
}
