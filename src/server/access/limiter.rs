//! Sliding-window limits: at most `max` attempts per key within `window`.
//!
//! - Failed logins: 429 once a username or a client address has 10 failures within 5 minutes
//!   (docs/interface.md). Every attempt counts until it succeeds and is forgiven, which is why this
//!   is not a token bucket from `governor`: successful logins must not use up anyone's
//!   allowance.
//! - Signups per client address per hour (`TIDINGS_SIGNUP_PER_HOUR`), chat messages per user
//!   per second (`Slow down.`): the same window, attempts forgiven when they did not happen.
//!
//! Keys are like "user:eric", "ip:127.0.0.1". Memory is bounded: at most `max` instants per key
//! and at most `capacity` keys (expired keys are swept first; past that the oldest-touched key
//! goes). With Redis, [`SharedLimiter`] keeps the window there, so every instance counts
//! together.
//!
//! Tests: `cargo test --features ssr server::access::limiter`.

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

/// One attempt, counted until forgiven.
#[derive(Clone, Debug)]
pub struct Attempt {
    at: Instant,
    /// Its entry in the shared sets (unique per attempt).
    member: String,
}

/// A limit of `max` attempts per key per `window`, for one instance ([`FailureLimiter`]) or
/// shared by every instance through Redis (`REDIS_URL`): ten failed logins on A and the
/// eleventh on B is still refused. If Redis does not answer in time, each instance falls back
/// to its own count rather than refuse or allow everyone. `max` 0: no limit.
#[derive(Debug)]
pub struct SharedLimiter {
    local: FailureLimiter,
    /// 0: everything is allowed.
    max: u32,
    /// `tidings:<name>:`, before each key in Redis.
    prefix: String,
    shared: Option<redis::aio::ConnectionManager>,
    /// How long Redis may take before this instance counts on its own.
    answer_within: Duration,
}

impl SharedLimiter {
    /// `max` attempts per key per `window` (0: no limit), named `name` in Redis; shared when
    /// `redis` is given.
    pub fn new(
        max: u32,
        window: Duration,
        name: &str,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> Self {
        Self {
            local: FailureLimiter::new(max as usize, window, 100_000),
            max,
            prefix: format!("tidings:{name}:"),
            shared: redis,
            answer_within: Duration::from_secs(2),
        }
    }

    /// In this process only.
    pub fn local(max: u32, window: Duration) -> Self {
        Self::new(max, window, "local", None)
    }

    /// Gives Redis at most `wait` to answer (a chat message should not wait seconds).
    pub fn answer_within(mut self, wait: Duration) -> Self {
        self.answer_within = wait;
        self
    }

    /// `Err(seconds)` if any key is at its limit; else the attempt counts against every key
    /// until [`forgive`](Self::forgive)n.
    pub async fn check_and_record(&self, keys: &[&str]) -> Result<Attempt, u64> {
        let now = Instant::now();
        let attempt = Attempt {
            at: now,
            member: format!(
                "{}-{}",
                crate::server::clock::now_ms(),
                crate::server::random::hex::<6>()
            ),
        };
        if self.max == 0 {
            return Ok(attempt);
        }
        if let Some(conn) = &self.shared {
            let mut conn = conn.clone();
            let window = self.local.window.as_millis() as u64;
            let mut call = redis::cmd("EVAL");
            call.arg(SHARED_CHECK).arg(keys.len());
            for key in keys {
                call.arg(format!("{}{key}", self.prefix));
            }
            call.arg(crate::server::clock::now_ms())
                .arg(window)
                .arg(self.max)
                .arg(&attempt.member);
            let answer =
                tokio::time::timeout(self.answer_within, call.query_async::<u64>(&mut conn)).await;
            match answer {
                Ok(Ok(0)) => return Ok(attempt),
                Ok(Ok(wait)) => return Err(wait),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, limit = %self.prefix, "the shared limit did not answer; counting here")
                }
                Err(_) => {
                    tracing::warn!(limit = %self.prefix, "the shared limit timed out; counting here")
                }
            }
        }
        self.local.check_and_record(keys, now).map(|()| attempt)
    }

    /// Takes back `attempt` for `key` (it succeeded, or did not happen after all).
    pub async fn forgive(&self, key: &str, attempt: &Attempt) {
        if self.max == 0 {
            return;
        }
        self.local.forgive(key, attempt.at);
        if let Some(conn) = &self.shared {
            let mut conn = conn.clone();
            let _ = tokio::time::timeout(
                self.answer_within,
                redis::cmd("ZREM")
                    .arg(format!("{}{key}", self.prefix))
                    .arg(&attempt.member)
                    .query_async::<i64>(&mut conn),
            )
            .await;
        }
    }

    /// Forgets every attempt of `key`.
    pub async fn clear(&self, key: &str) {
        self.local.clear(key);
        if let Some(conn) = &self.shared {
            let mut conn = conn.clone();
            let _ = tokio::time::timeout(
                self.answer_within,
                redis::cmd("DEL")
                    .arg(format!("{}{key}", self.prefix))
                    .query_async::<i64>(&mut conn),
            )
            .await;
        }
    }
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

    #[tokio::test]
    async fn a_shared_limiter_without_redis_counts_here_and_zero_means_no_limit() {
        let l = SharedLimiter::local(2, Duration::from_secs(60));
        let first = l.check_and_record(&["ip:1"]).await.unwrap();
        l.check_and_record(&["ip:1"]).await.unwrap();
        assert!(l.check_and_record(&["ip:1"]).await.unwrap_err() > 50);
        l.forgive("ip:1", &first).await;
        assert!(l.check_and_record(&["ip:1"]).await.is_ok());
        let open = SharedLimiter::local(0, Duration::from_secs(60));
        for _ in 0..100 {
            assert!(open.check_and_record(&["ip:1"]).await.is_ok());
        }
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
