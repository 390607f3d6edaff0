//! Server-Sent Events: the one encoder and response that every stream in the app uses (job
//! events, chat rooms, notifications, live metrics and the admin's log tail).
//!
//! It covers what BoxLang's `SSE()` emitter does, on top of a plain axum body:
//! - [`Event`]: `id`, `event` name and data; data with newlines (`\n`, `\r\n` or `\r`) is split
//!   over several `data:` lines, so the browser joins it back with `\n`; payloads of any size go
//!   out intact; an id or name cannot smuggle a line break into the stream.
//! - [`stream`] answers at once with the three headers (`text/event-stream`, `no-cache`,
//!   `X-Accel-Buffering: no`), never compressed, and a first chunk `retry: <ms>` flushed
//!   before anything else; then it runs the producer, which gets an [`Sender`] with
//!   [`send`](Sender::send), [`comment`](Sender::comment), [`is_gone`](Sender::is_gone) /
//!   [`gone`](Sender::gone) ("is the client gone?") and [`close`](Sender::close).
//! - A `: keep-alive` comment goes out after [`SseOptions::keep_alive`] of silence (it is also
//!   how a vanished client is found out: the write fails and the producer sees `Gone`); an
//!   optional overall [`SseOptions::timeout`] ends the stream; shutdown ends it too; an optional
//!   CORS origin is answered for an EventSource on another origin.
//! - The queue between producer and socket holds [`SseOptions::buffer`] chunks: a slow client
//!   makes `send` wait, it never grows memory.
//!
//! [`live_connections`] counts open streams for the metrics (an atomic, nothing on the hot
//! path but one add and one subtract per connection).
//!
//! Tests: `cargo test --features ssr server::fanout::sse` checks the encoding against the independent
//! WHATWG parser of the `eventsource-stream` crate, with the bytes split at every position.
//!
//! Length: over 600 lines, a quarter of them tests. The event encoding, the response and the
//! producer's sender (with its departure and shutdown handling) are one idea: every stream in
//! the app goes through all three.

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use tokio::{sync::mpsc, time::Instant};

use std::sync::Arc;

use crate::server::{
    access::streams::Held, fanout::bus::Envelope, ApiError, AppState, CurrentUser, Shutdown,
};

/// The comment that keeps an idle stream (and the proxies on its way) alive.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// One event: optional id and name, and its data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    id: Option<String>,
    name: Option<String>,
    data: String,
}

impl Event {
    /// An unnamed event (`message` in the browser) carrying `data`.
    pub fn new(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// An event carrying `value` as JSON.
    pub fn json<T: serde::Serialize>(value: &T) -> Self {
        Self::new(serde_json::to_string(value).expect("serializable"))
    }

    /// Sets the id (what the browser sends back as `Last-Event-ID`). Line breaks and NUL,
    /// which the format cannot carry in an id, are dropped.
    pub fn id(mut self, id: impl std::fmt::Display) -> Self {
        let id = id.to_string();
        self.id = Some(id.replace(['\r', '\n', '\0'], ""));
        self
    }

    /// Sets the event name (`addEventListener(name, …)` in the browser); line breaks dropped.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.replace(['\r', '\n'], ""));
        self
    }

    /// Appends the wire form of this event to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if let Some(name) = &self.name {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        for line in lines(&self.data) {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        // The id goes last: a parser that sees it has seen the whole event's fields.
        if let Some(id) = &self.id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }

    /// The id, if set.
    pub fn id_str(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The same event with its id replaced (`None`: no id line).
    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id.map(|id| id.replace(['\r', '\n', '\0'], ""));
        self
    }

    /// The same event with `"topic":"<topic>"` first in its JSON object data, and with its
    /// own id (the topic's position) as `"eventId"` (data that is not an object becomes
    /// `{"topic","data"}`).
    pub fn with_topic(mut self, topic: &str) -> Self {
        let mut head = format!(
            "{{\"topic\":{}",
            serde_json::to_string(topic).expect("a string")
        );
        if let Some(id) = &self.id {
            head.push_str(",\"eventId\":");
            head.push_str(&serde_json::to_string(id).expect("a string"));
        }
        let data = self.data.trim_start();
        self.data = match data.strip_prefix('{') {
            Some(rest) if rest.trim_start().starts_with('}') => format!("{head}}}"),
            Some(rest) => format!("{head},{rest}"),
            None => format!(
                "{head},\"data\":{}}}",
                serde_json::to_string(&self.data).expect("a string")
            ),
        };
        self
    }

    /// The wire form of this event.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.data.len() + 64);
        self.encode_into(&mut out);
        Bytes::from(out)
    }
}

/// `text` split at `\r\n`, `\r` and `\n`, as the WHATWG parser splits lines (one empty
/// line for empty text).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// A comment (`: text`), one per line of `text`; browsers ignore it.
pub fn comment(text: &str) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + 4);
    for line in lines(text) {
        out.extend_from_slice(b": ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// `retry: <ms>`: how long the browser waits before reconnecting.
pub fn retry(after: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", after.as_millis()))
}

/// How a stream behaves.
#[derive(Clone, Debug)]
pub struct SseOptions {
    /// Sent first, at once (documented: `retry: 3000`). `None`: no retry line.
    pub retry: Option<Duration>,
    /// A `: keep-alive` comment after this long without anything sent.
    pub keep_alive: Duration,
    /// The stream ends after this long, whatever happens (`None`: never).
    pub timeout: Option<Duration>,
    /// An origin to answer CORS for (with credentials), for an EventSource on another
    /// origin. The app's CORS layer already answers for `TIDINGS_ALLOWED_ORIGINS`.
    pub cors_origin: Option<HeaderValue>,
    /// Chunks queued between the producer and the socket.
    pub buffer: usize,
    /// A send that waits longer than this (the client stopped reading) ends the stream and
    /// counts a slow client, instead of holding the producer, and what it holds, forever.
    /// `None`: wait as long as the client is connected.
    pub send_limit: Option<Duration>,
    /// The stream's place among its user's connections (`server::access::streams`): kept while the
    /// stream lives, and the stream ends when its session does.
    pub held: Option<Arc<Held>>,
}

impl SseOptions {
    /// The options every stream of `user` starts from: ends after `TIDINGS_SSE_MAX_SECS`,
    /// counts against the user's quota (429 `too_many_streams` when it is full), ends with
    /// the session.
    /// `topics` is what the stream follows, as the admin's connection list shows it.
    pub fn for_stream(
        state: &AppState,
        user: &CurrentUser,
        topics: Vec<String>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            timeout: Some(state.config.sse_max),
            held: Some(Arc::new(state.streams.hold(user, "sse", topics)?)),
            ..Self::default()
        })
    }
}

impl Default for SseOptions {
    fn default() -> Self {
        Self {
            retry: Some(Duration::from_millis(3000)),
            keep_alive: Duration::from_secs(15),
            timeout: None,
            cors_origin: None,
            buffer: 16,
            send_limit: None,
            held: None,
        }
    }
}

/// The client went away (or the stream ended): stop producing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone;

/// The producer's handle on one stream.
#[derive(Debug)]
pub struct Sender {
    out: Out,
    send_limit: Option<Duration>,
}

/// Tags the events of one topic of a multi-topic stream (`fanout::topics`): encodes `event`
/// of topic `index` with the stream's cursor and hands the bytes to `send`, all under one
/// lock, so the order in the body is the order of the cursor.
pub trait Tagger: Send + Sync {
    fn tag(&self, index: u8, event: &Event, send: &mut dyn FnMut(Bytes));
}

/// What the queue between a producer and its body carries: boxed, since tokio's channel
/// makes room for its first 32 items when it is made, and that is 1 KiB of every open stream
/// with 32-byte `Bytes` (256 bytes with boxes; one small allocation per event in exchange).
type Chunk = Box<Bytes>;

/// Where a producer's events go: the response body as they are, or (one topic of a
/// multi-topic stream) the same body tagged by the stream's [`Tagger`].
enum Out {
    Body(mpsc::Sender<Chunk>),
    Topic {
        index: u8,
        tx: mpsc::Sender<Chunk>,
        tagger: Arc<dyn Tagger>,
    },
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Body(_) => f.write_str("Body"),
            Self::Topic { index, .. } => write!(f, "Topic({index})"),
        }
    }
}

impl Sender {
    /// A producer's sender for topic `index` of the multi-topic stream `body` writes:
    /// its events go to the same body, tagged by `tagger`; its comments nowhere.
    pub fn for_topic(body: &Sender, index: u8, tagger: Arc<dyn Tagger>) -> Self {
        let tx = match &body.out {
            Out::Body(tx) | Out::Topic { tx, .. } => tx.clone(),
        };
        Self {
            out: Out::Topic { index, tx, tagger },
            send_limit: body.send_limit,
        }
    }

    /// Sends an event, waiting while the client is slow; `Err(Gone)` once it left.
    pub async fn send(&self, event: &Event) -> Result<(), Gone> {
        match &self.out {
            Out::Body(_) => self.raw(event.encode()).await,
            Out::Topic { index, tx, tagger } => {
                // A place in the queue first; then tagging and queueing are one step.
                let permit = match self.send_limit {
                    None => tx.reserve().await.map_err(|_| Gone)?,
                    Some(limit) => match tokio::time::timeout(limit, tx.reserve()).await {
                        Ok(permit) => permit.map_err(|_| Gone)?,
                        Err(_) => {
                            count_slow();
                            return Err(Gone);
                        }
                    },
                };
                let mut permit = Some(permit);
                tagger.tag(*index, event, &mut |bytes| {
                    if let Some(p) = permit.take() {
                        p.send(Box::new(bytes));
                    }
                });
                Ok(())
            }
        }
    }

    /// Sends `envelope` as its own event (`event: <kind>`, the data, `id: <id>`): the bytes
    /// every stream of its topic shares ([`Envelope::sse_event`]), or, on a topic of a
    /// multi-topic stream, tagged like any event.
    pub async fn send_envelope(&self, envelope: &Envelope) -> Result<(), Gone> {
        match &self.out {
            Out::Body(_) => self.raw(envelope.sse_event()).await,
            Out::Topic { .. } => self.send(&envelope.event()).await,
        }
    }

    /// Sends a comment line (ignored by browsers; useful for debugging and padding).
    pub async fn comment(&self, text: &str) -> Result<(), Gone> {
        self.raw(comment(text)).await
    }

    /// Sends already encoded bytes (on a topic of a multi-topic stream: nothing, as only
    /// events can be tagged with their topic).
    pub async fn raw(&self, bytes: Bytes) -> Result<(), Gone> {
        let tx = match &self.out {
            Out::Body(tx) => tx,
            Out::Topic { tx, .. } if tx.is_closed() => return Err(Gone),
            Out::Topic { .. } => return Ok(()),
        };
        let bytes = Box::new(bytes);
        let Some(limit) = self.send_limit else {
            return tx.send(bytes).await.map_err(|_| Gone);
        };
        match tokio::time::timeout(limit, tx.send(bytes)).await {
            Ok(sent) => sent.map_err(|_| Gone),
            Err(_) => {
                count_slow();
                Err(Gone)
            }
        }
    }

    /// Whether the client has gone (or the stream ended by timeout or shutdown).
    pub fn is_gone(&self) -> bool {
        match &self.out {
            Out::Body(tx) => tx.is_closed(),
            Out::Topic { tx, .. } => tx.is_closed(),
        }
    }

    /// Resolves when the client has gone; use it in `select!` while waiting for work.
    pub async fn gone(&self) {
        match &self.out {
            Out::Body(tx) => tx.closed().await,
            Out::Topic { tx, .. } => tx.closed().await,
        }
    }

    /// Ends the stream cleanly after what was sent (dropping the sender does the same).
    pub fn close(self) {}
}

/// Open SSE streams in this process.
static LIVE: AtomicU64 = AtomicU64::new(0);
/// Streams ended since start because a send waited past its `send_limit`.
static SLOW: AtomicU64 = AtomicU64::new(0);
/// Events handed to clients since start (keep-alives not counted).
static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// How many events all streams have taken since start.
pub fn deliveries() -> u64 {
    DELIVERED.load(Ordering::Relaxed)
}

/// How many streams were ended for being too slow (see [`SseOptions::send_limit`]).
pub fn slow_disconnects() -> u64 {
    SLOW.load(Ordering::Relaxed)
}

/// How many SSE streams are open now.
pub fn live_connections() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

/// The headers every event stream carries.
pub fn headers(response: &mut Response, options: &SseOptions) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(origin) = &options.cors_origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// A producer run inside its stream's body (see [`stream`]).
type Producing = Pin<Box<dyn Future<Output = ()> + Send>>;

tokio::task_local! {
    /// Set while `edge::sse_h1` has the app answer a request: it writes the response itself
    /// and cuts off a write that waits past the stream's [`WriteLimit`].
    static WRITER_CUTS_OFF: ();
}

/// Runs `answer` (the app answering a request) for a writer that cuts off a client too slow
/// to take its events ([`WriteLimit`]): event streams made meanwhile run their producer
/// inside the body, with no hop between tasks.
pub async fn answered_for_a_cutting_writer<F: Future>(answer: F) -> F::Output {
    WRITER_CUTS_OFF.scope((), answer).await
}

/// On an event stream's response when its writer must cut off the client after one write
/// has waited this long (the stream's [`SseOptions::send_limit`]), and count it
/// ([`count_slow`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLimit(pub Duration);

/// Counts a stream ended for being too slow (the metrics' `slowClients.disconnects`).
pub fn count_slow() {
    SLOW.fetch_add(1, Ordering::Relaxed);
    tracing::info!("ending an event stream too slow to take its events");
}

/// An event stream: answers at once (headers and the `retry` line), then runs `produce`
/// with a [`Sender`]. The stream ends when `produce` returns (after what it sent), at the
/// timeout, or at shutdown; the producer sees [`Gone`] when the client leaves.
///
/// Where the producer runs:
/// - when `edge::sse_h1` writes the response (a plain connection's event stream: see
///   [`answered_for_a_cutting_writer`]), inside the body: an event goes from the bus to the
///   socket in the one task that writes it. The producer is only run while the body is
///   polled, so the slow-client cut-off ([`SseOptions::send_limit`]) is the writer's, on
///   each write ([`WriteLimit`] on the response);
/// - otherwise (hyper writes: a reused keep-alive connection, TLS, HTTP/2) on its own task,
///   feeding the body through the queue, and a send that waits past the limit ends it.
pub fn stream<F, Fut>(options: SseOptions, shutdown: Shutdown, produce: F) -> Response
where
    F: FnOnce(Sender) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(options.buffer.max(1));
    // Counted before the producer starts: the first thing it sends (a metrics sample, say)
    // already counts this stream.
    let live = crate::server::observe::metrics::Live::new(&LIVE);
    let inside = WRITER_CUTS_OFF.try_with(|_| ()).is_ok();
    let sender = Sender {
        out: Out::Body(tx),
        send_limit: if inside { None } else { options.send_limit },
    };
    let producing: Option<Producing> = if inside {
        Some(Box::pin(produce(sender)))
    } else {
        tokio::spawn(produce(sender));
        None
    };
    let first = options.retry.map(retry);
    let mut response = (
        StatusCode::OK,
        Body::from_stream(body(rx, producing, first, &options, shutdown, live)),
    )
        .into_response();
    if let (true, Some(limit)) = (inside, options.send_limit) {
        response.extensions_mut().insert(WriteLimit(limit));
    }
    headers(&mut response, &options);
    response
}

/// What the body stream keeps between chunks. The timers and the shutdown wait live here,
/// pinned once: a busy stream sends thousands of chunks, and making them afresh per chunk
/// would touch the timer wheel and the shared shutdown token's lock each time.
struct BodyState {
    rx: mpsc::Receiver<Chunk>,
    /// The producer, when it runs in the body (see [`stream`]); `None` once it has ended.
    producing: Option<Producing>,
    first: Option<Bytes>,
    keep_alive: Duration,
    /// When something was last sent; the idle timer checks it when it fires.
    last_sent: Instant,
    /// Chunks sent since the ends were last looked at (see [`QUICK`]).
    quick: u8,
    idle: Pin<Box<tokio::time::Sleep>>,
    end: Option<Pin<Box<tokio::time::Sleep>>>,
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// Fires when the stream's session ends.
    ended: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    /// Counts this stream while it lives.
    _live: crate::server::observe::metrics::Live,
    /// Holds its place among the user's connections while it lives.
    _held: Option<Arc<Held>>,
}

/// The response body: the first chunk, then the producer's chunks (what is queued goes out
/// as one chunk), with keep-alives in the silences; ends with the producer, at the timeout,
/// or at shutdown.
fn body(
    rx: mpsc::Receiver<Chunk>,
    producing: Option<Producing>,
    first: Option<Bytes>,
    options: &SseOptions,
    shutdown: Shutdown,
    live: crate::server::observe::metrics::Live,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let now = Instant::now();
    let state = BodyState {
        rx,
        producing,
        first,
        keep_alive: options.keep_alive,
        last_sent: now,
        quick: 0,
        idle: Box::pin(tokio::time::sleep_until(now + options.keep_alive)),
        end: options
            .timeout
            .map(|t| Box::pin(tokio::time::sleep_until(now + t))),
        stop: Box::pin(shutdown.cancelled_owned()),
        ended: options
            .held
            .as_ref()
            .map(|h| Box::pin(h.ended().clone().cancelled_owned())),
        _live: live,
        _held: options.held.clone(),
    };
    futures::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take() {
            st.last_sent = Instant::now();
            return Some((Ok(first), st));
        }
        // What is queued goes out at once, without waiting on the ends below (each wait
        // polled takes a lock: the shutdown token's is shared by every stream); they are
        // looked at whenever the queue is empty, and after every QUICK chunks at the latest.
        let queued = if st.quick < QUICK {
            st.rx.try_recv().ok()
        } else {
            None
        };
        let chunk = match queued {
            Some(first) => {
                st.quick += 1;
                gather(*first, &mut st.rx)
            }
            None => {
                st.quick = 0;
                match std::future::poll_fn(|cx| st.poll_wait(cx)).await {
                    Woke::Chunk(first) => gather(first, &mut st.rx),
                    Woke::Quiet => Bytes::from_static(KEEP_ALIVE),
                    Woke::End => return None,
                }
            }
        };
        st.last_sent = Instant::now();
        // Re-armed only once it fired: sending does not touch the timer.
        if st.idle.is_elapsed() {
            st.idle.as_mut().reset(st.last_sent + st.keep_alive);
        }
        Some((Ok(chunk), st))
    })
}

/// What a body waiting for its next chunk woke to.
enum Woke {
    Chunk(Bytes),
    /// Silent for the keep-alive time.
    Quiet,
    /// The producer is done and all it sent has gone, or an end came (shutdown, the
    /// session's end, the timeout).
    End,
}

impl BodyState {
    /// Waits for the next chunk, a silence or an end, in that order of precedence: the ends
    /// first, then the producer (when it runs here) and what it queued, then the idle timer.
    fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Woke> {
        use std::task::Poll;
        if self.stop.as_mut().poll(cx).is_ready()
            || self
                .ended
                .as_mut()
                .is_some_and(|e| e.as_mut().poll(cx).is_ready())
            || self
                .end
                .as_mut()
                .is_some_and(|e| e.as_mut().poll(cx).is_ready())
        {
            return Poll::Ready(Woke::End);
        }
        if let Some(producing) = self.producing.as_mut() {
            if producing.as_mut().poll(cx).is_ready() {
                // Its sender is dropped with it: the queue ends once drained.
                self.producing = None;
            }
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => return Poll::Ready(Woke::Chunk(*chunk)),
            Poll::Ready(None) => return Poll::Ready(Woke::End),
            Poll::Pending => {}
        }
        while self.idle.as_mut().poll(cx).is_ready() {
            let due = self.last_sent + self.keep_alive;
            if Instant::now() >= due {
                return Poll::Ready(Woke::Quiet);
            }
            // Polled again (above) once reset, so it wakes this task at `due`.
            self.idle.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// Chunks a busy stream sends before it looks at its ends again (shutdown, the session, the
/// timeout).
const QUICK: u8 = 16;

/// `first` and whatever else is queued behind it (up to 64 KiB), as one chunk: one write.
fn gather(first: Bytes, rx: &mut mpsc::Receiver<Chunk>) -> Bytes {
    let mut events = 1;
    let chunk = match rx.try_recv() {
        Err(_) => first,
        Ok(next) => {
            let mut joined = bytes::BytesMut::with_capacity(first.len() + next.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&next);
            events += 1;
            while joined.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok(more) => {
                        joined.extend_from_slice(&more);
                        events += 1;
                    }
                    Err(_) => break,
                }
            }
            joined.freeze()
        }
    };
    DELIVERED.fetch_add(events, Ordering::Relaxed);
    chunk
}

/// The client's last event id: the `Last-Event-ID` header (what EventSource sends when it
/// reconnects), else the `lastEventId` query parameter (what a page passes on its first
/// connect, continuing from what it rendered), else `None`. A malformed one is a 400 naming
/// where it came from.
pub fn last_event_id(
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Option<i64>, ApiError> {
    match last_event_text(headers, query)? {
        None => Ok(None),
        Some((name, value)) => value
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    name,
                    format!("must be an event id (a whole number ≥ 0), not {value:?}."),
                )
            }),
    }
}

/// The client's last event id as sent, trimmed (`None` when absent or empty), with where it
/// came from (`Last-Event-ID` or `lastEventId`): for ids that are not numbers (the
/// multi-topic stream's cursor).
pub fn last_event_text<'a>(
    headers: &'a HeaderMap,
    query: &'a [(String, String)],
) -> Result<Option<(&'static str, &'a str)>, ApiError> {
    let (name, value) = match headers.get("last-event-id") {
        Some(v) => (
            "Last-Event-ID",
            v.to_str()
                .map_err(|_| ApiError::bad_parameter("Last-Event-ID", "must be an event id."))?,
        ),
        None => match query.iter().find(|(k, _)| k == "lastEventId") {
            Some((_, v)) => ("lastEventId", v.as_str()),
            None => return Ok(None),
        },
    };
    let value = value.trim();
    Ok((!value.is_empty()).then_some((name, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_comes_from_the_header_or_the_query() {
        let mut h = HeaderMap::new();
        let q = |v: &str| vec![("lastEventId".to_string(), v.to_string())];
        assert_eq!(last_event_id(&h, &[]).unwrap(), None);
        assert_eq!(last_event_id(&h, &q("7")).unwrap(), Some(7));
        h.insert("last-event-id", HeaderValue::from_static("9"));
        assert_eq!(
            last_event_id(&h, &q("7")).unwrap(),
            Some(9),
            "the header wins"
        );
        h.insert("last-event-id", HeaderValue::from_static("nine"));
        let e = last_event_id(&h, &[]).unwrap_err();
        assert!(e.to_string().starts_with("`Last-Event-ID`"));
        assert!(last_event_id(&HeaderMap::new(), &q("-1")).is_err());
    }
    use eventsource_stream::Eventsource;
    use futures::StreamExt;

    /// Parses `bytes`, fed in pieces of `piece` bytes, with the independent parser.
    async fn parse(bytes: &[u8], piece: usize) -> Vec<eventsource_stream::Event> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(piece.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(chunks)
            .eventsource()
            .map(|e| e.expect("a valid event"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn events_round_trip_through_a_whatwg_parser_at_every_split() {
        let events = [
            Event::new("plain").id(1).name("progress"),
            Event::new("two\nlines").id(2),
            Event::new("crlf\r\nand\rcr").id(3).name("warning"),
            Event::new(" leading space and trailing \n").id(4),
            Event::new("{\"json\":\"zoë 日本 🦀\"}")
                .id(5)
                .name("complete"),
            Event::new("id\nwith break").id("6\n7").name("bad\nname"),
        ];
        let mut wire = retry(Duration::from_millis(3000)).to_vec();
        wire.extend_from_slice(&comment("hello\nthere"));
        for e in &events {
            e.encode_into(&mut wire);
        }
        let want = [
            ("progress", "plain", "1"),
            ("message", "two\nlines", "2"),
            ("warning", "crlf\nand\ncr", "3"),
            ("message", " leading space and trailing \n", "4"),
            ("complete", "{\"json\":\"zoë 日本 🦀\"}", "5"),
            ("badname", "id\nwith break", "67"),
        ];
        for piece in 1..wire.len() {
            let got = parse(&wire, piece).await;
            let got: Vec<(&str, &str, &str)> = got
                .iter()
                .map(|e| (e.event.as_str(), e.data.as_str(), e.id.as_str()))
                .collect();
            assert_eq!(got, want, "split every {piece} bytes");
        }
        // The retry line, read as the field of an event's block.
        let mut block = retry(Duration::from_millis(3000)).to_vec();
        block.pop();
        block.extend_from_slice(b"data: x\n\n");
        let parsed = parse(&block, block.len()).await;
        assert_eq!(parsed[0].retry, Some(Duration::from_millis(3000)));
    }

    #[tokio::test]
    async fn a_large_payload_arrives_intact() {
        let data: String = (0..60_000).map(|i| format!("{i},")).collect();
        let mut wire = Vec::new();
        Event::new(data.clone()).id(9).encode_into(&mut wire);
        for piece in [4096, 65536] {
            let got = parse(&wire, piece).await;
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].data, data);
        }
    }

    #[test]
    fn lines_split_like_the_standard() {
        let split = |s| lines(s).collect::<Vec<_>>();
        assert_eq!(split(""), [""]);
        assert_eq!(split("a"), ["a"]);
        assert_eq!(split("a\n"), ["a", ""]);
        assert_eq!(split("a\r\nb\rc\nd"), ["a", "b", "c", "d"]);
        assert_eq!(split("\r\r\n"), ["", "", ""]);
    }

    async fn collect_body(response: Response) -> Vec<u8> {
        let mut body = response.into_body().into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    // On tokio's paused clock: the keep-alives and the timeout fire in order at once, with no
    // real waiting and no timing slack.
    #[tokio::test(start_paused = true)]
    async fn retry_first_then_events_then_keep_alives_until_the_timeout() {
        let options = SseOptions {
            keep_alive: Duration::from_millis(20),
            timeout: Some(Duration::from_millis(300)),
            ..SseOptions::default()
        };
        let response = stream(options, Shutdown::new(), |tx| async move {
            tx.send(&Event::new("hi").id(1)).await.unwrap();
            // Holds the stream open without sending: keep-alives fill the silence.
            tx.gone().await;
        });
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let started = tokio::time::Instant::now();
        let text = String::from_utf8(collect_body(response).await).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "ends at the timeout, not before"
        );
        let rest = text
            .strip_prefix("retry: 3000\n\ndata: hi\nid: 1\n\n")
            .expect("retry first, then the event");
        assert!(!rest.is_empty(), "keep-alives in the silence");
        assert_eq!(rest.replace(": keep-alive\n\n", ""), "", "only keep-alives");
        let keep_alives = rest.matches(": keep-alive").count();
        assert!(
            (13..=15).contains(&keep_alives),
            "one every 20 ms of the 300: {keep_alives}"
        );
    }

    #[tokio::test]
    async fn the_stream_ends_with_its_producer_and_the_producer_sees_a_departure() {
        let response = stream(SseOptions::default(), Shutdown::new(), |tx| async move {
            tx.send(&Event::new("one")).await.unwrap();
            tx.close();
        });
        let text = String::from_utf8(collect_body(response).await).unwrap();
        assert_eq!(text, "retry: 3000\n\ndata: one\n\n");

        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let response = stream(SseOptions::default(), Shutdown::new(), |tx| async move {
            tx.gone().await;
            let _ = seen_tx.send(tx.send(&Event::new("late")).await);
        });
        drop(response);
        assert_eq!(seen_rx.await.unwrap(), Err(Gone));
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream_and_live_connections_are_counted() {
        let shutdown = Shutdown::new();
        let response = stream(SseOptions::default(), shutdown.clone(), |tx| async move {
            tx.gone().await;
        });
        assert!(live_connections() >= 1);
        shutdown.trigger();
        let text = String::from_utf8(collect_body(response).await).unwrap();
        assert_eq!(text, "retry: 3000\n\n");
    }

    // Property (proptest): any events, encoded and cut anywhere, come out of the independent
    // WHATWG parser as they went in (line breaks as `\n`, the characters an id or a name
    // cannot carry dropped), comments in between unseen.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Text full of what an encoder can get wrong: CR, LF, CRLF, `:` and spaces at the
        /// start of a line, field names, NUL, any Unicode, and now and then a huge line.
        fn tricky() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                4 => any::<String>(),
                2 => Just("\n".to_owned()),
                2 => Just("\r".to_owned()),
                2 => Just("\r\n".to_owned()),
                2 => Just(":".to_owned()),
                1 => Just(" ".to_owned()),
                1 => Just("data: id: event: retry: 7".to_owned()),
                1 => Just("\0".to_owned()),
                1 => Just("\u{FEFF}".to_owned()),
                1 => (1usize..3).prop_map(|n| "x".repeat(n * 40_000)),
            ];
            prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
        }

        proptest! {
            #![proptest_config(crate::properties::config(256))]

            #[test]
            fn events_and_comments_round_trip_at_any_cuts(
                events in prop::collection::vec((tricky(), prop::option::of(tricky()), tricky()), 1..5),
                note in tricky(),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
            ) {
                let mut wire = retry(Duration::from_millis(3000)).to_vec();
                let mut want = Vec::new();
                for (i, (data, name, id)) in events.iter().enumerate() {
                    if i == 1 {
                        wire.extend_from_slice(&comment(&note));
                    }
                    let mut event = Event::new(data.clone()).id(id);
                    if let Some(name) = name {
                        event = event.name(name);
                    }
                    event.encode_into(&mut wire);
                    let name = name.as_deref().unwrap_or_default().replace(['\r', '\n'], "");
                    want.push((
                        if name.is_empty() { "message".to_owned() } else { name },
                        data.replace("\r\n", "\n").replace('\r', "\n"),
                        id.replace(['\r', '\n', '\0'], ""),
                    ));
                }
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
                cuts.push(wire.len());
                cuts.sort_unstable();
                let mut chunks = Vec::new();
                let mut start = 0;
                for cut in cuts {
                    chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(&wire[start..cut])));
                    start = cut;
                }
                let got: Vec<(String, String, String)> = futures::executor::block_on(
                    futures::stream::iter(chunks)
                        .eventsource()
                        .map(|e| e.expect("a valid event"))
                        .map(|e| (e.event, e.data, e.id))
                        .collect(),
                );
                prop_assert_eq!(got, want);
            }
        }
    }
}
