//! The retry policy every client of another server follows (the command-line consumers, the
//! import job, the job event writer): jittered exponential backoff, and which statuses are
//! worth another try.
//!
//! Tests: `cargo test --features ssr retry::`.

use std::time::Duration;

/// Whether a request answered with `status` may be tried again: server errors, 408 and 429.
/// Other 4xx are final.
pub fn retryable(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// Jittered exponential backoff: the wait before attempt `attempt` (1-based), from `base`
/// doubling up to `max`, each wait a random 50–100 % of that (so clients that dropped together
/// do not come back together).
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let full = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    let mut byte = [0u8; 1];
    let _ = getrandom::getrandom(&mut byte);
    full.mul_f64(0.5 + f64::from(byte[0]) / 510.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 1..=20 {
            let full = (base * 2u32.pow((attempt - 1).min(16))).min(max);
            let wait = backoff(attempt, base, max);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
        }
    }

    #[test]
    fn only_server_errors_408_and_429_are_retried() {
        assert!(retryable(503));
        assert!(retryable(429));
        assert!(retryable(408));
        assert!(!retryable(400));
        assert!(!retryable(403));
    }
}
