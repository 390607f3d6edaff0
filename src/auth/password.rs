//! Passwords: Argon2id hashes (the `argon2` crate's defaults: 19 MiB, 2 passes, with the
//! block memory reused during a burst and freed after it), checked in constant work for unknown usernames, and the
//! bound on how many run at once ([`Hashing`]): each runs on a blocking thread, logins wait
//! their turn (up to a bound), signups never wait (503 with `Retry-After` when the hashers are
//! busy) and never take the last slots, so a burst of signups cannot hold logins up.
//!
//! Tests: `cargo test --features ssr auth::password`.

use std::sync::OnceLock;

use argon2::{Argon2, PasswordHash};
use axum::http::StatusCode;
use password_hash::{rand_core::OsRng, SaltString};

use crate::server::ApiError;

/// The hash an unknown username is checked against, so that it costs a wrong password's time.
pub(super) fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("not-a-real-password").expect("hashing a constant works"))
}

pub(super) fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = Argon2::default();
    let mut raw_salt = [0u8; 64];
    let raw_salt = salt
        .as_salt()
        .decode_b64(&mut raw_salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    let hash = with_memory(argon2.params().block_count(), |memory| {
        password_hash::Output::init_with(argon2::Params::DEFAULT_OUTPUT_LEN, |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, memory)
                .map_err(password_hash::Error::from)
        })
    })
    .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: argon2
            .params()
            .try_into()
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    };
    Ok(phc.to_string())
}

pub(super) fn verify_password(password: &str, hash: &str) -> bool {
    let check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut raw_salt = [0u8; 64];
        let raw_salt = parsed.salt?.decode_b64(&mut raw_salt).ok()?;
        let argon2 = Argon2::new(algorithm, version, params);
        let computed = with_memory(argon2.params().block_count(), |memory| {
            password_hash::Output::init_with(expected.len(), |out| {
                argon2
                    .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, memory)
                    .map_err(password_hash::Error::from)
            })
        })
        .ok()?;
        // `Output`'s comparison takes the same time wherever the outputs differ.
        Some(computed == expected)
    };
    check().unwrap_or(false)
}

/// Argon2's working memory for one hash (19 MiB with the default parameters).
///
/// Letting argon2 allocate it per hash left the freed blocks in whichever malloc arena the
/// blocking thread used: after 200 logins the server held 1.2 GB it no longer used. Keeping
/// four buffers for reuse fixed that, but then those 76 MiB stayed resident for good after
/// any burst of logins: over half the server's memory under the chat benchmark.
///
/// Now buffers are kept only while hashes are running ([`with_memory`]), and each is made
/// with room for [`MAPPED_BLOCKS`]: glibc's malloc serves a request that large with a mapping
/// of its own and unmaps it when it is freed, so its pages go straight back to the OS. (Up to
/// 32 MiB, glibc raises its mapping threshold to the size of each mapped block freed, and the
/// next buffer of that size would come from an arena and stay there.) Only the blocks used
/// are written, so only they are resident. (mimalloc was tried instead: it kept a freed
/// buffer cached in the idle blocking thread that hashed, and started 23 MB heavier.)
type Memory = Vec<argon2::Block>;

/// 33 MiB of blocks: past glibc's largest mapping threshold (32 MiB on 64-bit), so always a
/// mapping of its own.
const MAPPED_BLOCKS: usize = 33 * 1024;

fn new_memory(blocks: usize) -> Memory {
    let mut memory = Vec::with_capacity(blocks.max(MAPPED_BLOCKS));
    memory.resize(blocks, argon2::Block::default());
    memory
}

/// Buffers kept for the next hash, and how many hashes are running.
struct Pool {
    kept: Vec<Memory>,
    running: usize,
}

impl Pool {
    /// A hash starts: a kept buffer of `blocks` blocks, if there is one.
    fn start(&mut self, blocks: usize) -> Option<Memory> {
        self.running += 1;
        let at = self.kept.iter().position(|m| m.len() == blocks);
        at.map(|i| self.kept.swap_remove(i))
    }

    /// A hash ends, giving its buffer back: returns the buffers to free. When it was the last
    /// hash running, that is all of them.
    fn end(&mut self, memory: Option<Memory>) -> Vec<Memory> {
        self.running -= 1;
        self.kept.extend(memory);
        if self.running == 0 {
            std::mem::take(&mut self.kept)
        } else {
            let extra = self.kept.len().saturating_sub(MAX_CONCURRENT_HASHES);
            self.kept.drain(..extra).collect()
        }
    }
}

static MEMORY: std::sync::Mutex<Pool> = std::sync::Mutex::new(Pool {
    kept: Vec::new(),
    running: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    MEMORY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with `blocks` blocks of working memory: a kept buffer while a burst of hashes is
/// running, a new one otherwise. When the last running hash ends, every kept buffer is freed
/// (unmapped), so an idle server holds none.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [argon2::Block]) -> T) -> T {
    let kept = pool().start(blocks);
    let mut memory = kept.unwrap_or_else(|| new_memory(blocks));
    let result = f(&mut memory);
    let freed = pool().end(Some(memory));
    // Freed outside the lock.
    drop(freed);
    result
}

/// At most this many password hashes run at once: each takes 19 MiB and a core for tens of
/// milliseconds, so a burst waits in line (or is refused) instead of exhausting memory.
const MAX_CONCURRENT_HASHES: usize = 4;
/// Of those, signups take at most this many: the rest stay free for logins.
const SIGNUP_HASHES: usize = 2;
/// Logins waiting for a hasher at most; more get 503 (a flood of guesses queues no further).
const LOGINS_WAITING_MAX: usize = 256;

/// The hashers (see the module docs).
pub(super) struct Hashing {
    all: tokio::sync::Semaphore,
    signups: tokio::sync::Semaphore,
    logins_waiting: std::sync::atomic::AtomicUsize,
}

pub(super) static HASHING: Hashing = Hashing::new();

/// Which kind of request a hash is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HashFor {
    /// Waits its turn (bounded by [`LOGINS_WAITING_MAX`]).
    Login,
    /// Never waits: 503 when no signup slot is free or a login is waiting.
    Signup,
}

fn busy() -> ApiError {
    ApiError::refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_busy",
        "The server is busy checking passwords; try again in a moment.",
    )
    .retry_after(1)
}

/// Counts a login waiting for a hasher while it lives: a waiter whose client went away (its
/// future dropped mid-wait) stops counting too.
struct Waiting(&'static Hashing);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0
            .logins_waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Hashing {
    const fn new() -> Self {
        Self {
            all: tokio::sync::Semaphore::const_new(MAX_CONCURRENT_HASHES),
            signups: tokio::sync::Semaphore::const_new(SIGNUP_HASHES),
            logins_waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn wait(&'static self) -> Option<Waiting> {
        use std::sync::atomic::Ordering;
        if self.logins_waiting.fetch_add(1, Ordering::Relaxed) >= LOGINS_WAITING_MAX {
            self.logins_waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Waiting(self))
    }

    /// Runs CPU-heavy hashing off the async workers, a few at a time, logins first.
    ///
    /// The permits go with the hash onto the blocking thread and are released when it ends,
    /// not when this future does: a client that hangs up mid-hash still holds its slot until
    /// the hash is done, so hanging up cannot start more than [`MAX_CONCURRENT_HASHES`] at once.
    pub(super) async fn run<T: Send + 'static>(
        &'static self,
        kind: HashFor,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        use std::sync::atomic::Ordering;
        let permits = match kind {
            HashFor::Signup => {
                if self.logins_waiting.load(Ordering::Relaxed) > 0 {
                    return Err(busy());
                }
                let slot = self.signups.try_acquire().map_err(|_| busy())?;
                let hasher = self.all.try_acquire().map_err(|_| busy())?;
                (Some(slot), hasher)
            }
            HashFor::Login => {
                let waiting = self.wait().ok_or_else(busy)?;
                let hasher = self.all.acquire().await;
                drop(waiting);
                let hasher = hasher.map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!("hashing queue closed: {e}"))
                })?;
                (None, hasher)
            }
        };
        tokio::task::spawn_blocking(move || {
            let done = f();
            drop(permits);
            done
        })
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signups_never_wait_for_a_hasher_and_never_take_the_last_ones() {
        static H: Hashing = Hashing::new();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        // Two signups hold their slots (blocked until told).
        let mut held = Vec::new();
        for _ in 0..SIGNUP_HASHES {
            let rx = rx.clone();
            held.push(tokio::spawn(H.run(HashFor::Signup, move || {
                let _ = rx.lock().unwrap().recv();
            })));
        }
        // Let them take their permits.
        while H.signups.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let e = H.run(HashFor::Signup, || ()).await.unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "server_busy")
        );
        // A login still finds a hasher at once.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            H.run(HashFor::Login, || 7),
        )
        .await
        .expect("a login is not held up by signups")
        .unwrap();
        for _ in 0..SIGNUP_HASHES {
            tx.send(()).unwrap();
        }
        for h in held {
            h.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_client_hanging_up_does_not_free_its_hasher_early() {
        static H: Hashing = Hashing::new();
        let (started_tx, started_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
        let mut started_rx = started_rx;
        // Every hasher busy, then every client hangs up.
        let mut requests = Vec::new();
        for _ in 0..MAX_CONCURRENT_HASHES {
            let (started, go) = (started_tx.clone(), go_rx.clone());
            requests.push(tokio::spawn(H.run(HashFor::Login, move || {
                started.send(()).unwrap();
                let _ = go.lock().unwrap().recv();
            })));
        }
        for _ in 0..MAX_CONCURRENT_HASHES {
            started_rx.recv().await.unwrap();
        }
        for r in &requests {
            r.abort();
        }
        for r in requests {
            assert!(r.await.unwrap_err().is_cancelled());
        }
        // The hashes still run, so the hashers are still taken: a new login waits.
        assert_eq!(H.all.available_permits(), 0);
        let waiting = tokio::spawn(H.run(HashFor::Login, || 7));
        while H.logins_waiting.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        // A waiter that hangs up stops counting as waiting (signups are not refused forever).
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(
            H.logins_waiting.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        for _ in 0..MAX_CONCURRENT_HASHES {
            go_tx.send(()).unwrap();
        }
        // Once the hashes end, the hashers are free again.
        let free = async {
            while H.all.available_permits() < MAX_CONCURRENT_HASHES {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), free)
            .await
            .expect("the hashers come back when the hashes end");
        assert_eq!(H.run(HashFor::Login, || 7).await.unwrap(), 7);
    }

    #[test]
    fn working_memory_is_reused_during_a_burst_and_freed_after_it() {
        let blocks = 8;
        let mut pool = Pool {
            kept: Vec::new(),
            running: 0,
        };
        // Two hashes at once: the first to end keeps its buffer for the next.
        assert!(pool.start(blocks).is_none());
        assert!(pool.start(blocks).is_none());
        assert!(pool
            .end(Some(vec![argon2::Block::default(); blocks]))
            .is_empty());
        assert_eq!(pool.kept.len(), 1);
        let reused = pool.start(blocks).expect("the kept buffer");
        assert!(
            pool.start(16).is_none(),
            "only a buffer of the right size is reused"
        );
        assert!(pool.end(None).is_empty());
        assert!(pool.end(Some(reused)).is_empty());
        assert_eq!(pool.running, 1);
        // The last hash ends: everything kept is freed.
        let freed = pool.end(Some(vec![argon2::Block::default(); blocks]));
        assert_eq!(freed.len(), 2);
        assert!(pool.kept.is_empty() && pool.running == 0);
        // Never more kept than hashes can run at once.
        for _ in 0..MAX_CONCURRENT_HASHES + 3 {
            pool.start(blocks);
        }
        let mut handed_back = 0;
        for _ in 0..MAX_CONCURRENT_HASHES + 2 {
            handed_back += pool.end(Some(vec![argon2::Block::default(); blocks])).len();
        }
        assert_eq!(pool.kept.len(), MAX_CONCURRENT_HASHES);
        assert_eq!(handed_back, 2);
    }

    #[test]
    fn a_new_buffer_is_big_enough_to_be_a_mapping_of_its_own() {
        let blocks = Argon2::default().params().block_count();
        let memory = new_memory(blocks);
        assert_eq!(memory.len(), blocks);
        // Past glibc's largest dynamic mapping threshold (32 MiB).
        assert!(memory.capacity() * std::mem::size_of::<argon2::Block>() > 32 << 20);
    }

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong horse", &a));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher() {
        use argon2::{PasswordHasher, PasswordVerifier};
        // Ours, checked by the crate's verifier.
        let ours = hash_password("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong horse", &parsed)
            .is_err());
        // The crate's (as stored by earlier versions), checked by ours, with other parameters too.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("battery staple", &theirs));
        assert!(!verify_password("battery stapler", &theirs));
        let params = argon2::Params::new(8 * 1024, 2, 1, None).unwrap();
        let small = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("battery staple", &small));
        assert!(!verify_password("battery stapler", &small));
        assert!(
            pool().kept.len() <= MAX_CONCURRENT_HASHES,
            "working memory kept is bounded"
        );
    }
}
