//! The fan-out bus across instances: `REDIS_URL` set, every envelope published on one
//! instance reaches the subscribers of its topic on every instance.
//!
//! How: each instance keeps its local bus ([`LocalBus`]) and delivers to its own subscribers
//! itself, whatever Redis does: at once, except that envelopes of an ordered topic (a chat
//! room) pass through [`Reorder`], which puts them back in id order across the instances while
//! Redis is heard. Every envelope also goes, as JSON with the publishing instance's
//! id, to one Redis channel ([`CHANNEL`]) through a bounded queue and one publishing task; one
//! subscribing task per instance hears that channel and hands other instances' envelopes to the
//! local bus (topics nobody here watches are dropped there, as locally).
//!
//! Nothing is lost when Redis goes away, because stored ids are the truth: while Redis is away
//! each instance goes on serving its own clients and `/readyz` says 503 ([`Bus::ready`]). When
//! the subscriber comes back it tells every local subscriber to read back from storage (a
//! `Lagged(0)`, see [`RESYNC`]); a publisher that failed to send tells every instance the same
//! once it can send again.
//!
//! Tests: `cargo test --features ssr server::fanout::redis_bus` (encoding); `tests/it/scale.rs` runs two
//! instances on one Redis (scripts/test.sh starts one).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::server::fanout::bus::{Bus, Envelope, LocalBus, Subscription, RESYNC};
use crate::server::fanout::reorder::Reorder;
use crate::server::Shutdown;

/// The one Redis channel every instance publishes to and hears.
pub const CHANNEL: &str = "tidings:bus";
/// Envelopes waiting for the publishing task; past this (Redis far too slow or away) they are
/// dropped for other instances, counted, and every instance is told to read back.
const QUEUE: usize = 16 * 1024;
/// Envelopes sent to Redis in one round trip at most.
const PIPELINE: usize = 256;
/// How long an early envelope of an ordered topic waits for the one before it (see
/// [`crate::server::fanout::reorder`]): well over a Redis hop, well under what a reader would notice.
const REORDER_WAIT: Duration = Duration::from_millis(250);
/// How long connecting (at start, and each reconnect) or one command may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The wait between reconnect attempts.
const RETRY: Duration = Duration::from_millis(500);
/// How often an instance reports its open connections (they expire after three reports).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Keys of the instances' connection reports.
const CONNECTIONS_PREFIX: &str = "tidings:connections:";

/// What goes over Redis: the envelope and who sent it.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The publishing instance (it ignores its own envelopes: it delivered them already).
    from: String,
    envelope: Envelope,
}

/// The bus over Redis; see the module docs.
#[derive(Debug)]
pub struct RedisBus {
    local: LocalBus,
    /// Envelopes published here or heard from Redis pass through it on their way to `local`
    /// (presence worked out here and resyncs do not), so this instance's subscribers get each
    /// ordered topic in id order whichever instance published.
    order: Arc<Reorder>,
    instance: String,
    outbox: mpsc::Sender<Envelope>,
    /// For commands (the counts of other instances).
    conn: redis::aio::ConnectionManager,
    /// Whether the subscriber is connected and the last send went through.
    hearing: Arc<AtomicBool>,
    sending: Arc<AtomicBool>,
    /// Set when an envelope could not be queued for Redis: the publishing task then sends a
    /// resync first thing, so the other instances read back what they did not get.
    dropped: Arc<AtomicBool>,
    /// Stops the reorderer's task when the bus goes (as well as at shutdown).
    _stop: tokio_util::sync::DropGuard,
}

impl RedisBus {
    /// Connects to `url` (failing fast, with a sentence, when it does not answer) and starts
    /// the publishing and subscribing tasks, which end at `shutdown`.
    pub async fn connect(
        url: &str,
        instance: &str,
        shutdown: Shutdown,
    ) -> anyhow::Result<Arc<Self>> {
        let shown = crate::server::storage::redact(url);
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL {shown:?} is not a Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let mut publisher =
            tokio::time::timeout(TIMEOUT, client.get_connection_manager_with_config(config))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("cannot reach Redis at {shown}: no answer in {TIMEOUT:?}")
                })?
                .map_err(|e| anyhow::anyhow!("cannot reach Redis at {shown}: {e}"))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut publisher)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {shown}: {e}"))?;

        let local = LocalBus::new();
        let instance = instance.to_string();
        let (outbox, queued) = mpsc::channel(QUEUE);
        let hearing = Arc::new(AtomicBool::new(false));
        let sending = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let order = Arc::new(Reorder::new(REORDER_WAIT));
        let bus = Arc::new(Self {
            local,
            order: order.clone(),
            instance: instance.clone(),
            outbox,
            conn: publisher.clone(),
            hearing: hearing.clone(),
            sending: sending.clone(),
            dropped: dropped.clone(),
            _stop: stop.clone().drop_guard(),
        });
        tokio::spawn({
            let local = bus.local.clone();
            let shutdown = shutdown.clone();
            async move {
                let stop = async {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = stop.cancelled() => {}
                    }
                };
                order.run(stop, |e| local.publish(e)).await;
            }
        });
        tokio::spawn(heartbeat_loop(
            publisher.clone(),
            instance.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(publish_loop(
            publisher,
            instance.clone(),
            queued,
            sending,
            dropped,
            shutdown.clone(),
        ));
        tokio::spawn(subscribe_loop(
            client,
            Arc::downgrade(&bus),
            instance,
            hearing.clone(),
            shutdown,
        ));
        // Ready once the subscription stands, so nothing published from now on is missed.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !hearing.load(Ordering::Relaxed) {
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("cannot subscribe to Redis at {shown}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(redis = %shown, instance = %bus.instance, "fan-out over Redis");
        Ok(bus)
    }

    /// Tells every local subscriber to read back from storage, after handing out what the
    /// reorderer held (its holes may never fill now).
    fn resync(&self) {
        self.order.reset(|e| self.local.publish(e));
        self.local.publish_everywhere(RESYNC);
    }

    /// A connection for other shared state (the login limit), reconnecting by itself.
    pub fn connection(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
    }
}

/// The key under which an instance reports its open connections.
fn connections_key(instance: &str) -> String {
    format!("{CONNECTIONS_PREFIX}{instance}")
}

/// Reports this instance's open WebSockets and SSE streams every [`HEARTBEAT`], with an
/// expiry of three beats: a dead instance stops counting within seconds.
async fn heartbeat_loop(
    mut conn: redis::aio::ConnectionManager,
    instance: String,
    shutdown: Shutdown,
) {
    let key = connections_key(&instance);
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _: redis::RedisResult<i64> = conn.del(&key).await;
                return;
            }
            _ = tick.tick() => {}
        }
        let open = crate::server::fanout::ws::live_connections()
            + crate::server::fanout::sse::live_connections();
        let result: redis::RedisResult<()> = conn.set_ex(&key, open, 3 * HEARTBEAT.as_secs()).await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "reporting connections to Redis failed");
        }
    }
}

impl RedisBus {
    /// The sum of what the other instances last reported (0 when Redis does not answer).
    async fn sum_elsewhere(&self) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{CONNECTIONS_PREFIX}*"))
                .arg("COUNT")
                .arg(100)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mine = connections_key(&self.instance);
        keys.retain(|k| *k != mine);
        if keys.is_empty() {
            return Ok(0);
        }
        let counts: Vec<Option<u64>> = conn.mget(&keys).await?;
        Ok(counts.into_iter().flatten().sum())
    }
}

impl Bus for RedisBus {
    fn publish(&self, message: Envelope) {
        if self.hearing.load(Ordering::Relaxed) {
            self.order
                .offer(message.clone(), tokio::time::Instant::now(), |e| {
                    self.local.publish(e)
                });
        } else {
            // Nothing comes from the other instances now: no hole here can fill, so none is
            // waited for (subscribers read back; hearing again resets the reorderer).
            self.local.publish(message.clone());
        }
        if self.outbox.try_send(message).is_err() {
            // Redis cannot keep up (or is away): other instances will be told to read back.
            self.dropped.store(true, Ordering::SeqCst);
            self.sending.store(false, Ordering::Relaxed);
        }
    }

    fn subscribe(&self, topic: &str) -> Subscription {
        self.local.subscribe(topic)
    }

    fn publish_local(&self, message: Envelope) {
        self.local.publish(message);
    }

    fn spans_instances(&self) -> bool {
        true
    }
    fn instance(&self) -> &str {
        &self.instance
    }

    fn ready(&self) -> bool {
        self.hearing.load(Ordering::Relaxed) && self.sending.load(Ordering::Relaxed)
    }

    fn connections_elsewhere(&self) -> futures::future::BoxFuture<'_, u64> {
        Box::pin(async move {
            match tokio::time::timeout(TIMEOUT, self.sum_elsewhere()).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "counting other instances' connections failed");
                    0
                }
                Err(_) => 0,
            }
        })
    }
}

/// [`Wire`] borrowed, for sending without copying the envelope.
#[derive(Serialize)]
struct WireRef<'a> {
    from: &'a str,
    envelope: &'a Envelope,
}

/// The JSON that goes over Redis.
fn encode(from: &str, envelope: &Envelope) -> String {
    serde_json::to_string(&WireRef { from, envelope }).expect("an envelope serializes")
}

/// Sends queued envelopes to Redis: whatever is waiting (up to [`PIPELINE`]) in one round
/// trip, so a busy instance's envelopes do not queue behind one round trip each. After a
/// failure, or after `publish` could not queue an envelope (`dropped`), it tells every
/// instance to resync with the next round trip that goes through.
async fn publish_loop(
    mut conn: redis::aio::ConnectionManager,
    instance: String,
    mut queued: mpsc::Receiver<Envelope>,
    sending: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
    shutdown: Shutdown,
) {
    let resync = Envelope::new(RESYNC, 0, RESYNC, String::new());
    let mut batch: Vec<Envelope> = Vec::with_capacity(PIPELINE);
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = queued.recv_many(&mut batch, PIPELINE) => n,
        };
        if received == 0 {
            return;
        }
        let failed_before = !sending.load(Ordering::Relaxed);
        // Taken, not read: an envelope dropped while this round trip is under way sets it
        // again, and the next round trip carries its resync.
        let tell_resync = dropped.swap(false, Ordering::SeqCst) || failed_before;
        let mut pipe = redis::pipe();
        if tell_resync {
            pipe.publish(CHANNEL, encode(&instance, &resync)).ignore();
        }
        for envelope in batch.drain(..) {
            pipe.publish(CHANNEL, encode(&instance, &envelope)).ignore();
        }
        let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        match result {
            Ok(()) => {
                sending.store(true, Ordering::Relaxed);
                continue;
            }
            Err(e) if !failed_before => {
                tracing::warn!(error = %e, "publishing to Redis failed; other instances will resync");
            }
            Err(_) => {}
        }
        sending.store(false, Ordering::Relaxed);
        // Keep trying, with or without new traffic, until Redis takes the resync: then every
        // instance reads back what this one could not send, and `/readyz` is green again.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
            let result: redis::RedisResult<i64> =
                conn.publish(CHANNEL, encode(&instance, &resync)).await;
            if result.is_ok() {
                tracing::info!("publishing to Redis again");
                sending.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// Hears the channel and hands other instances' envelopes to the local bus; reconnects when
/// the connection drops, and then tells local subscribers to read back what they missed.
async fn subscribe_loop(
    client: redis::Client,
    bus: std::sync::Weak<RedisBus>,
    instance: String,
    hearing: Arc<AtomicBool>,
    shutdown: Shutdown,
) {
    let mut lost = false;
    loop {
        let connected = async {
            let mut pubsub = tokio::time::timeout(TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| anyhow::anyhow!("no answer"))??;
            tokio::time::timeout(TIMEOUT, pubsub.subscribe(CHANNEL))
                .await
                .map_err(|_| anyhow::anyhow!("no answer"))??;
            anyhow::Ok(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = connected => c,
        };
        match pubsub {
            Ok(pubsub) => {
                hearing.store(true, Ordering::Relaxed);
                let Some(me) = bus.upgrade() else { return };
                if lost {
                    tracing::info!("hearing Redis again; subscribers read back what they missed");
                    me.resync();
                }
                drop(me);
                let mut messages = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    let Some(me) = bus.upgrade() else { return };
                    match serde_json::from_slice::<Wire>(msg.get_payload_bytes()) {
                        Ok(wire) if wire.from == instance => {}
                        Ok(wire) if wire.envelope.kind == RESYNC => me.resync(),
                        Ok(wire) => {
                            me.order
                                .offer(wire.envelope, tokio::time::Instant::now(), |e| {
                                    me.local.publish(e)
                                })
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "an unreadable message on the Redis bus")
                        }
                    }
                }
                tracing::warn!("the Redis subscription dropped; reconnecting");
            }
            Err(e) => {
                if !lost {
                    tracing::warn!(error = %e, "cannot subscribe to Redis; retrying");
                }
            }
        }
        hearing.store(false, Ordering::Relaxed);
        lost = true;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_cross_as_json_with_their_sender() {
        let e =
            Envelope::new("room:general", 7, "chat-message", r#"{"text":"hé"}"#.into()).in_order();
        let text = encode("abc", &e);
        let back: Wire = serde_json::from_str(&text).unwrap();
        assert_eq!(back.from, "abc");
        assert_eq!(back.envelope, e);
        assert!(back.envelope.ordered, "the order mark crosses");
        let plain = Envelope::new("presence", 0, "presence", "{}".into());
        assert!(
            !encode("abc", &plain).contains("ordered"),
            "and costs nothing when unset"
        );
    }
}
