//! What the property tests (proptest) beside the code share: how many cases each runs.
//!
//! Each test names its own count for `cargo test` (enough to be worth it in CI, a few seconds
//! in all); `PROPTEST_CASES=<n>` raises every one of them for a long run:
//! `PROPTEST_CASES=20000 cargo test --features ssr --lib properties` (about 10 minutes; the
//! dev profile, since a release test build is a whole-program LTO build). A failing case is
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
