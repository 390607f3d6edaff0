//! Failed-login limiter: 429 once a username or a client address has `max` failures within
//! `window` (the contract: 10 within 5 minutes).
//!
//! A sliding window of failure times per key ("user:eric", "ip:127.0.0.1"). Only failures
//! count, which is why this is not a token bucket from `governor`: successful logins must not
//! use up anyone's allowance. Memory is bounded: at most `max` instants per key and at most
//! `capacity` keys (expired keys are swept first; past that the oldest-touched key goes).
//!
//! Tests: `cargo test --features ssr server::limiter`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Counts recent failures per key.
#[derive(Debug)]
pub struct FailureLimiter {
    max: usize,
    window: Duration,
    capacity: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// `max` failures per `window` per key; at most `capacity` keys remembered.
    pub fn new(max: usize, window: Duration, capacity: usize) -> Self {
        Self {
            max: max.max(1),
            window,
            capacity: capacity.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The contract's limit: 10 failures in 5 minutes, up to 100,000 keys.
    pub fn for_logins() -> Self {
        Self::new(10, Duration::from_secs(300), 100_000)
    }

    /// `Err(seconds until a retry may succeed)` when any key is at its limit at `now`.
    pub fn check(&self, keys: &[&str], now: Instant) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        Self::wait_for(&mut map, keys, now, self.max, self.window)
    }

    fn wait_for(
        map: &mut HashMap<String, VecDeque<Instant>>,
        keys: &[&str],
        now: Instant,
        max: usize,
        window: Duration,
    ) -> Result<(), u64> {
        let mut wait = Duration::ZERO;
        for key in keys {
            if let Some(times) = map.get_mut(*key) {
                prune(times, now, window);
                if times.len() >= max {
                    let oldest = times[times.len() - max];
                    wait = wait.max(window.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.as_secs().max(1))
        }
    }

    /// In one locked step: `Err(seconds)` if any key is at its limit, else counts this
    /// attempt as a failure against every key (undo with [`forgive`](Self::forgive) when it
    /// succeeds). Parallel attempts therefore cannot all pass the check before any is counted.
    pub fn check_and_record(&self, keys: &[&str], now: Instant) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        Self::wait_for(&mut map, keys, now, self.max, self.window)?;
        self.record_locked(&mut map, keys, now);
        Ok(())
    }

    /// Takes back the failure recorded for `key` at `at` (the attempt succeeded).
    pub fn forgive(&self, key: &str, at: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = map.get_mut(key) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Records one failure against every key.
    pub fn record_failure(&self, keys: &[&str], now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        self.record_locked(&mut map, keys, now);
    }

    fn record_locked(
        &self,
        map: &mut HashMap<String, VecDeque<Instant>>,
        keys: &[&str],
        now: Instant,
    ) {
        for key in keys {
            if !map.contains_key(*key) && map.len() >= self.capacity {
                map.retain(|_, times| {
                    prune(times, now, self.window);
                    !times.is_empty()
                });
                if map.len() >= self.capacity {
                    let stalest = map
                        .iter()
                        .min_by_key(|(_, t)| t.back().copied())
                        .map(|(k, _)| k.clone());
                    if let Some(k) = stalest {
                        map.remove(&k);
                    }
                }
            }
            let times = map.entry((*key).to_string()).or_default();
            prune(times, now, self.window);
            times.push_back(now);
            while times.len() > self.max {
                times.pop_front();
            }
        }
    }

    /// Forgets a key's failures (a username after its owner proved the password).
    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// How many keys are remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// Checks and records one attempt against every key atomically in Redis (a sorted set of
/// attempt times per key): `0` when allowed, else the seconds until a retry may succeed.
const SHARED_CHECK: &str = r#"
local now, window, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = 0
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= max then
    local oldest = tonumber(redis.call('ZRANGE', key, -max, -max, 'WITHSCORES')[2])
    wait = math.max(wait, math.ceil((oldest + window - now) / 1000), 1)
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, window)
end
return 0
"#;

/// Prefix of the shared limiter's keys in Redis.
const SHARED_PREFIX: &str = "tidings:login-failures:";

/// One login attempt, counted as a failure until forgiven.
#[derive(Clone, Debug)]
pub struct Attempt {
    at: Instant,
    /// Its entry in the shared sets (unique per attempt).
    member: String,
}

/// The failed-login limit, for one instance ([`FailureLimiter`]) or shared by every instance
/// through Redis (`REDIS_URL`): ten failures on A and the eleventh on B is still refused. If
/// Redis does not answer, each instance falls back to its own count rather than refuse or
/// allow everyone.
#[derive(Debug)]
pub struct LoginLimiter {
    local: FailureLimiter,
    shared: Option<redis::aio::ConnectionManager>,
}

impl LoginLimiter {
    /// The contract's limit, in this process only.
    pub fn local() -> Self {
        Self {
            local: FailureLimiter::for_logins(),
            shared: None,
        }
    }

    /// The contract's limit, shared through Redis.
    pub fn shared(conn: redis::aio::ConnectionManager) -> Self {
        Self {
            local: FailureLimiter::for_logins(),
            shared: Some(conn),
        }
    }

    /// `Err(seconds)` if any key is at its limit; else the attempt counts as a failure against
    /// every key until [`forgive`](Self::forgive)n.
    pub async fn check_and_record(&self, keys: &[&str]) -> Result<Attempt, u64> {
        let now = Instant::now();
        let attempt = Attempt {
            at: now,
            member: format!("{}-{}", super::clock::now_ms(), random_suffix()),
        };
        if let Some(conn) = &self.shared {
            let mut conn = conn.clone();
            let window = self.local.window.as_millis() as u64;
            let mut call = redis::cmd("EVAL");
            call.arg(SHARED_CHECK).arg(keys.len());
            for key in keys {
                call.arg(format!("{SHARED_PREFIX}{key}"));
            }
            call.arg(super::clock::now_ms())
                .arg(window)
                .arg(self.local.max)
                .arg(&attempt.member);
            let answer =
                tokio::time::timeout(Duration::from_secs(2), call.query_async::<u64>(&mut conn))
                    .await;
            match answer {
                Ok(Ok(0)) => return Ok(attempt),
                Ok(Ok(wait)) => return Err(wait),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the shared login limit did not answer; counting here")
                }
                Err(_) => tracing::warn!("the shared login limit timed out; counting here"),
            }
        }
        self.local.check_and_record(keys, now).map(|()| attempt)
    }

    /// Takes back `attempt`'s failure for `key` (the attempt succeeded).
    pub async fn forgive(&self, key: &str, attempt: &Attempt) {
        self.local.forgive(key, attempt.at);
        if let Some(conn) = &self.shared {
            let mut conn = conn.clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                redis::cmd("ZREM")
                    .arg(format!("{SHARED_PREFIX}{key}"))
                    .arg(&attempt.member)
                    .query_async::<i64>(&mut conn),
            )
            .await;
        }
    }

    /// Forgets every failure of `key`.
    pub async fn clear(&self, key: &str) {
        self.local.clear(key);
        if let Some(conn) = &self.shared {
            let mut conn = conn.clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                redis::cmd("DEL")
                    .arg(format!("{SHARED_PREFIX}{key}"))
                    .query_async::<i64>(&mut conn),
            )
            .await;
        }
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenth_failure_locks_until_the_window_passes() {
        let l = FailureLimiter::new(10, Duration::from_secs(300), 100);
        let t0 = Instant::now();
        for i in 0..9 {
            l.record_failure(&["user:eric"], t0 + Duration::from_secs(i));
            assert!(l.check(&["user:eric"], t0 + Duration::from_secs(i)).is_ok());
        }
        l.record_failure(&["user:eric"], t0 + Duration::from_secs(9));
        let wait = l
            .check(&["user:eric"], t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, 290, "the first failure leaves the window at t0+300");
        assert!(l
            .check(&["user:eric"], t0 + Duration::from_secs(300))
            .is_ok());
    }

    #[test]
    fn any_key_at_its_limit_refuses() {
        let l = FailureLimiter::new(2, Duration::from_secs(60), 100);
        let now = Instant::now();
        l.record_failure(&["ip:1", "user:a"], now);
        l.record_failure(&["ip:1", "user:b"], now);
        assert!(
            l.check(&["ip:1", "user:c"], now).is_err(),
            "the address is at its limit"
        );
        assert!(l.check(&["ip:2", "user:a"], now).is_ok());
        l.clear("ip:1");
        assert!(l.check(&["ip:1", "user:c"], now).is_ok());
    }

    #[test]
    fn attempts_count_before_they_finish_and_successes_are_forgiven() {
        let l = FailureLimiter::new(3, Duration::from_secs(60), 100);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(l.check_and_record(&["ip:1"], now).is_ok());
        }
        assert!(
            l.check_and_record(&["ip:1"], now).is_err(),
            "a fourth parallel attempt is refused"
        );
        l.forgive("ip:1", now);
        assert!(
            l.check_and_record(&["ip:1"], now).is_ok(),
            "a success gives its attempt back"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let l = FailureLimiter::new(3, Duration::from_secs(60), 5);
        let now = Instant::now();
        for i in 0..50 {
            for _ in 0..10 {
                l.record_failure(&[&format!("ip:{i}")], now);
            }
        }
        assert!(l.len() <= 5);
    }
}
