//! WebSocket plumbing every socket shares: the buffer and size limits of an upgrade, and the
//! counters the metrics stream reads (live sockets, queue drops, slow-client disconnects).
//!
//! Buffer sizes are what an idle socket costs: tungstenite's default 128 KiB read buffer
//! alone would make each idle connection cost about 144 kB; with a 512-byte read buffer, and a
//! write buffer that only grows while a burst is being written, it is a few kB.
//!
//! Tests: `tests/it/chat.rs` (limits, counters), `benches/chat.rs` (memory per socket).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::WebSocketUpgrade;

use crate::protocol::chat::FRAME_MAX_BYTES;

/// Bytes read from the socket at a time, and kept for it while it is idle. Clients send small
/// frames (a post, a join, a pong); a larger one takes more reads, not more memory.
pub const READ_BUFFER: usize = 512;
/// Frames are written out once this many bytes are queued (and at every flush).
pub const WRITE_BUFFER: usize = 16 * 1024;
/// The most a socket may hold unwritten before writes fail (a burst of frames plus one).
pub const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// Applies the limits: messages and frames up to [`FRAME_MAX_BYTES`] (larger closes the
/// socket with 1009), and the small buffers above.
pub fn configure(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(FRAME_MAX_BYTES)
        .max_frame_size(FRAME_MAX_BYTES)
}

static LIVE: AtomicU64 = AtomicU64::new(0);
static QUEUE_DROPS: AtomicU64 = AtomicU64::new(0);
static SLOW_DISCONNECTS: AtomicU64 = AtomicU64::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// Counts `n` frames written to a client (pings and closes not counted).
pub fn record_deliveries(n: u64) {
    DELIVERED.fetch_add(n, Ordering::Relaxed);
}

/// Frames written to clients since start.
pub fn deliveries() -> u64 {
    DELIVERED.load(Ordering::Relaxed)
}

/// Open WebSockets in this process.
pub fn live_connections() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

/// Messages dropped from slow sockets' and event streams' queues since start (each then read
/// back from history). Streams ended for slowness are counted by `sse::slow_disconnects`.
pub fn queue_drops() -> u64 {
    QUEUE_DROPS.load(Ordering::Relaxed)
}

/// Sockets closed since start because they could not keep up.
pub fn slow_disconnects() -> u64 {
    SLOW_DISCONNECTS.load(Ordering::Relaxed)
}

/// Counts `n` messages dropped from a socket's queue.
pub fn record_drops(n: u64) {
    QUEUE_DROPS.fetch_add(n, Ordering::Relaxed);
}

/// Counts one socket closed for being too slow.
pub fn record_slow_disconnect() {
    SLOW_DISCONNECTS.fetch_add(1, Ordering::Relaxed);
}

/// Counts one open socket while it lives.
pub fn live_socket() -> crate::server::observe::metrics::Live {
    crate::server::observe::metrics::Live::new(&LIVE)
}
