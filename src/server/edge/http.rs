//! The HTTP server: accepts connections and serves the app on each, with the limits that
//! keep slow or idle clients from piling up (axum's own `serve` has none of them).
//!
//! - At most `max_connections` open connections (`TIDINGS_MAX_CONNECTIONS`): one more is
//!   answered at once with a short 503 and closed, instead of waiting in the backlog.
//! - A request's headers must arrive within [`HttpLimits::header_timeout`] (10 s) of its first
//!   byte (of the connection, for the first request): a client that trickles them (slowloris)
//!   is cut off.
//! - A keep-alive connection with no request in flight is closed after
//!   [`HttpLimits::idle_timeout`] (60 s).
//!
//! hyper's own header timeout cannot tell an idle keep-alive connection from a slow request
//! (its clock starts when it waits for a request, so idle connections would close after
//! 10 s too), so both clocks live in [`Watched`], the connection's reader: it knows when bytes
//! arrive, and the service wrapper tells it when a request is in flight (from its headers
//! until its response body ends: an event stream is "in flight" for its whole life). A
//! connection upgraded to a WebSocket leaves both clocks to the socket's own pings.
//!
//! Every request gets the peer's address as `ConnectInfo<SocketAddr>`, as with axum's
//! `into_make_service_with_connect_info`. Shutdown stops accepting, asks every connection to
//! finish (streams and sockets end on the same signal) and waits for them.
//!
//! A plain connection is looked at (peeked, not read) before it is served: one that begins
//! with a request line goes to hyper's HTTP/1 server directly ([`serve_h1`]); one that begins
//! like HTTP/2's preface (`h2c` with prior knowledge) goes to hyper-util's `auto`, which tells
//! the two apart by reading. Before hyper, one whose first request is an event stream, all
//! arrived, is answered by `edge::sse_h1` instead ([`serve_event_stream`]): an event stream
//! lives for minutes, and hyper would hold 16 KiB of buffers for it all that time.
//!
//! With `tls` (`edge::tls`), each connection is a TLS one: the handshake runs in the
//! connection's own task (within the header timeout), ALPN picks h2 or http/1.1 (HTTP/1.1
//! goes to [`serve_h1`] too), and every request is marked [`DirectTls`]. On h2 a WebSocket is
//! an extended CONNECT answered 200 (RFC 8441), which counts as an upgrade like a 101 does.
//!
//! Tests: the unit tests below (timeouts on a real socket); `tests/it/deploy.rs`;
//! `tests/it/connections.rs` (TLS, h2).

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, HttpBody},
    extract::ConnectInfo,
    http::{Request, StatusCode},
    Router,
};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tower::ServiceExt;

use crate::server::{
    edge::{sse_h1, tls::DirectTls},
    fanout::sse,
    Shutdown,
};

/// The limits of [`serve`].
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive.
    pub header_timeout: Duration,
    /// How long a connection may wait, idle, for its next request.
    pub idle_timeout: Duration,
}

impl HttpLimits {
    /// The documented limits with `max_connections`.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Open connections, and those refused for the limit, since start (for tests and metrics).
static OPEN: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Connections being answered 503 at once (each for a second at most).
static REFUSING: AtomicUsize = AtomicUsize::new(0);
/// Past this many, a connection over the limit is closed without an answer: a flood of them
/// must not hold more sockets than the limit it is refused for.
const REFUSING_MAX: usize = 256;

/// Connections refused since start because `TIDINGS_MAX_CONNECTIONS` were open.
pub fn refused_connections() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// What a connection refused for the limit is told.
const REFUSAL_BODY: &str =
    "{\"error\":\"too_many_connections\",\"message\":\"The server has as many \
connections open as it takes (TIDINGS_MAX_CONNECTIONS); try again in a moment.\"}";

/// Serves `app` on `listener` until `shutdown`, then waits for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None);
    // CONNECT with :protocol, for WebSockets over HTTP/2 (RFC 8441).
    builder.http2().enable_connect_protocol();
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.header_read_timeout(None);
    // Shared: each connection's task keeps a pointer, not its own copy of both (hundreds of
    // bytes, for as long as an event stream lasts).
    let (h1, builder) = (Arc::new(h1), Arc::new(builder));
    let mut stop = std::pin::pin!(shutdown.cancelled_owned());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // keep serving the ones we have.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            if REFUSING.fetch_add(1, Ordering::Relaxed) < REFUSING_MAX {
                tokio::spawn(async move {
                    refuse(stream).await;
                    REFUSING.fetch_sub(1, Ordering::Relaxed);
                });
            } else {
                REFUSING.fetch_sub(1, Ordering::Relaxed);
                drop(stream);
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        let counted = Counted::new(open.clone());
        let state = Arc::new(ConnState::new());
        let watched = Watched::new(stream, state.clone(), limits);
        let direct_tls = tls.is_some();
        let app = app.clone();
        let service = {
            let app = app.clone();
            tower::service_fn(move |mut req: Request<Incoming>| {
                mark(&mut req, peer, direct_tls);
                let connect = req.method() == axum::http::Method::CONNECT;
                let in_flight = InFlight::begin(state.clone());
                let app = app.clone();
                async move {
                    let response = app.oneshot(req.map(Body::new)).await?;
                    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS
                        || (connect && response.status().is_success());
                    if upgraded {
                        in_flight.state.upgraded.store(true, Ordering::Relaxed);
                    }
                    Ok::<_, Infallible>(response.map(|body| {
                        Body::new(Tracked {
                            body,
                            _in_flight: in_flight,
                        })
                    }))
                }
            })
        };
        let service = TowerToHyperService::new(service);
        // Every connection's task holds a watcher: `graceful.shutdown()` below waits for them.
        let watcher = graceful.watcher();
        let stop = shutdown.clone();
        let h1 = h1.clone();
        let builder = builder.clone();
        match &tls {
            None => {
                tokio::spawn(async move {
                    // A connection still silent when shutdown begins is closed at once.
                    let sniffed = tokio::select! {
                        sniffed = watched.sniff() => sniffed,
                        _ = stop.cancelled() => Sniffed::Gone,
                    };
                    match sniffed {
                        Sniffed::Gone => {}
                        Sniffed::Http1 => {
                            if let Some(head) = event_stream_head(&watched).await {
                                // On a task of its own, sized for a stream: this one, sized for
                                // hyper's connection (1.5 kB), ends here.
                                let stream = EventStream {
                                    head,
                                    app,
                                    peer,
                                    stop,
                                    counted,
                                    watcher,
                                };
                                tokio::spawn(serve_event_stream(Box::new((watched, stream))));
                                return;
                            }
                            serve_h1(&h1, TokioIo::new(watched), service, &stop).await
                        }
                        Sniffed::Unsure => {
                            serve_auto(&builder, TokioIo::new(watched), service, watcher).await
                        }
                    }
                    drop(counted);
                });
            }
            Some(acceptor) => {
                // The handshake in the connection's task: a slow one holds up no one else,
                // and the header clock in `Watched` cuts off one that never finishes.
                let accept = acceptor.accept(watched);
                tokio::spawn(async move {
                    let stream = match accept.await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "a TLS handshake failed");
                            return;
                        }
                    };
                    // ALPN said which: HTTP/1.1 goes straight to hyper's HTTP/1 (see `serve_h1`).
                    if stream.get_ref().1.alpn_protocol() == Some(b"http/1.1") {
                        serve_h1(&h1, TokioIo::new(stream), service, &stop).await;
                    } else {
                        serve_auto(&builder, TokioIo::new(stream), service, watcher).await;
                    }
                    drop(counted);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What every request learns from its connection, whoever parsed it (hyper or `sse_h1`):
/// the peer's address, and whether it came over TLS that this server ended.
fn mark<B>(request: &mut Request<B>, peer: std::net::SocketAddr, direct_tls: bool) {
    request.extensions_mut().insert(ConnectInfo(peer));
    if direct_tls {
        request.extensions_mut().insert(DirectTls);
    }
}

/// How a connection begins.
enum Sniffed {
    /// With something that is not HTTP/2's preface: a request line.
    Http1,
    /// With the preface, or too little of it to tell yet.
    Unsure,
    /// Closed, or silent past the header clock (or into shutdown), before its first byte.
    Gone,
}

/// What an HTTP/2 connection (prior knowledge, `h2c`) begins with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The connection's first request, if it is an event stream already all arrived (see
/// `edge::sse_h1`), with the length of its head; `None` leaves the connection to hyper
/// untouched (looked at, nothing read).
async fn event_stream_head(watched: &Watched) -> Option<(usize, Request<Body>)> {
    let mut head = vec![0u8; sse_h1::HEAD_MAX];
    let n = watched.io.peek(&mut head).await.ok()?;
    sse_h1::parse_head(&head[..n])
}

/// What an event stream answered by `edge::sse_h1` takes from its connection's first task.
struct EventStream {
    /// The head's length and the request in it.
    head: (usize, Request<Body>),
    app: Router,
    peer: std::net::SocketAddr,
    stop: Shutdown,
    /// The connection still counts, and shutdown still waits for it.
    counted: Counted,
    watcher: hyper_util::server::graceful::Watcher,
}

/// Answers an event stream without hyper's two 8 KiB buffers (`edge::sse_h1`), then closes
/// the connection. Its task lives as long as the stream, so its future is kept small: what it
/// is given comes boxed (an `async fn` keeps its arguments beside its locals), and the
/// request's part, which needs room for the request and the app's future, is boxed too.
async fn serve_event_stream(given: Box<(Watched, EventStream)>) {
    let Some(answered) = Box::pin(answer_event_stream(given)).await else {
        return;
    };
    let Answered {
        mut watched,
        response,
        stop,
        guards,
    } = *answered;
    sse_h1::write_response(&mut watched, response, &stop).await;
    drop(guards);
}

/// An event stream's answer, ready to be written.
struct Answered {
    watched: Watched,
    response: axum::http::Response<Body>,
    stop: Shutdown,
    /// Dropped when the stream ends: the request is in flight, the connection counts, and
    /// shutdown waits for it.
    guards: (InFlight, Counted, hyper_util::server::graceful::Watcher),
}

/// Takes the event stream's head off the socket and has the app answer it; `None` if the
/// client left first.
async fn answer_event_stream(given: Box<(Watched, EventStream)>) -> Option<Box<Answered>> {
    let (mut watched, stream) = *given;
    let EventStream {
        head: (len, mut request),
        app,
        peer,
        stop,
        counted,
        watcher,
    } = stream;
    // In flight from here: neither clock runs while it is answered.
    let in_flight = InFlight::begin(watched.state.clone());
    // The head is taken off the socket (all there: it was just looked at).
    let mut taken = vec![0u8; len];
    watched.read_exact(&mut taken).await.ok()?;
    drop(taken);
    mark(&mut request, peer, false);
    // Written by `sse_h1`, which cuts off a client too slow to take its events: an event
    // stream made here runs its producer in the body (`fanout::sse::stream`).
    let Ok(response) = sse::answered_for_a_cutting_writer(app.oneshot(request)).await;
    Some(Box::new(Answered {
        watched,
        response,
        stop,
        guards: (in_flight, counted, watcher),
    }))
}

/// Serves an HTTP/1 connection (and its upgrades) with hyper's own HTTP/1 server, without
/// the version sniffing of hyper-util's `auto`: that reads the first 24 bytes apart and hands
/// them back on hyper's first read, so hyper read a request in two and grew its read buffer
/// from 8 to 16 KiB on every connection, for good (heaptrack: 16 KiB of an idle event
/// stream's 28 kB). It is also a smaller task than `auto`'s, which has room for HTTP/2's.
/// Shutdown asks it to finish the response in flight, as `graceful` does.
async fn serve_h1<I, S, B>(
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    shutdown: &Shutdown,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: HttpBody + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(io, service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::trace!(error = %e, "a connection ended with an error");
    }
}

/// Serves a connection that may be HTTP/2 with hyper-util's `auto` (boxed: the connection
/// tasks of HTTP/1, most of them, do not carry room for it).
async fn serve_auto<I, S, B>(
    builder: &Builder<TokioExecutor>,
    io: I,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = axum::http::Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    if let Err(e) = Box::pin(watcher.watch(conn)).await {
        tracing::trace!(error = %e, "a connection ended with an error");
    }
}

/// Answers a connection over the limit with a 503 and closes it (within a second).
async fn refuse(mut stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Counts one open connection while it lives (here and in [`OPEN`]).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OPEN.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open HTTP connections in this process.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// Milliseconds since the connection opened, for the clocks below (`NONE` when unset).
const NONE: u64 = u64::MAX;

/// What the reader and the service share about one connection.
struct ConnState {
    opened: Instant,
    /// Requests whose response has not ended.
    in_flight: AtomicUsize,
    /// When the last response ended (the idle clock starts there).
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived (the header clock starts there).
    request_started: AtomicU64,
    /// Now a WebSocket (or another upgraded protocol): no clocks.
    upgraded: AtomicBool,
}

impl ConnState {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // The first request's headers are due from the moment the connection opened.
            request_started: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// When the connection must be closed if nothing changes, or `None` while a request is in
    /// flight or after an upgrade.
    fn deadline(&self, limits: &HttpLimits) -> Option<u64> {
        if self.upgraded.load(Ordering::Relaxed) || self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let started = self.request_started.load(Ordering::Relaxed);
        Some(if started != NONE {
            started + limits.header_timeout.as_millis() as u64
        } else {
            self.idle_since.load(Ordering::Relaxed) + limits.idle_timeout.as_millis() as u64
        })
    }
}

/// A request in flight, from its headers until its response's body ends.
struct InFlight {
    state: Arc<ConnState>,
}

impl InFlight {
    fn begin(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.request_started.store(NONE, Ordering::Relaxed);
        Self { state }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.state;
        s.idle_since.store(s.now(), Ordering::Relaxed);
        s.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its request's [`InFlight`] when it is done (or dropped).
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, reading with the header and idle clocks (see the module docs).
struct Watched {
    io: TcpStream,
    state: Arc<ConnState>,
    limits: HttpLimits,
    /// Armed for the current deadline (milliseconds since open).
    /// `None` until a deadline is armed, and again once the connection is upgraded: a timer
    /// keeps the waker of the task that last polled it, and the connection's task (about
    /// 4 kB, done once it hands the socket to a WebSocket) stayed allocated until the header
    /// clock ran out, 10 s after every WebSocket opened.
    timer: Option<Pin<Box<Sleep>>>,
    armed: u64,
}

impl Watched {
    fn new(io: TcpStream, state: Arc<ConnState>, limits: HttpLimits) -> Self {
        Self {
            io,
            state,
            limits,
            timer: None,
            armed: NONE,
        }
    }

    /// Waits for the connection's first bytes (within the header clock, which runs from the
    /// moment it opened) and looks at them without taking them.
    async fn sniff(&self) -> Sniffed {
        let mut first = [0u8; H2_PREFACE.len()];
        let due = self.state.opened + self.limits.header_timeout;
        match tokio::time::timeout_at(due, self.io.peek(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => Sniffed::Gone,
            Ok(Ok(n)) if first[..n] == H2_PREFACE[..n] => Sniffed::Unsure,
            Ok(Ok(_)) => Sniffed::Http1,
        }
    }

    /// `Err` once the current deadline has passed; else arms the timer for it.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.state.deadline(&self.limits) else {
            if self.state.upgraded.load(Ordering::Relaxed) {
                // For good: no clock runs on an upgraded connection.
                self.timer = None;
                self.armed = NONE;
            }
            return Ok(());
        };
        if self.state.now() >= deadline {
            return Err(self.expired());
        }
        let at = self.state.opened + Duration::from_millis(deadline);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if self.armed != deadline {
            self.armed = deadline;
            timer.as_mut().reset(at);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(self.expired()),
            Poll::Pending => Ok(()),
        }
    }

    fn expired(&self) -> io::Error {
        let waiting_for_headers = self.state.request_started.load(Ordering::Relaxed) != NONE;
        if waiting_for_headers {
            tracing::debug!("closing a connection whose request headers did not arrive in time");
        }
        io::Error::new(io::ErrorKind::TimedOut, "the connection's time ran out")
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        let state = &self.state;
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // The first byte of a request that is not in flight yet starts its header clock.
            if state.in_flight.load(Ordering::Relaxed) == 0
                && state.request_started.load(Ordering::Relaxed) == NONE
            {
                state.request_started.store(state.now(), Ordering::Relaxed);
            }
            return read;
        }
        if read.is_pending() {
            if let Err(e) = self.check(cx) {
                return Poll::Ready(Err(e));
            }
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use futures::StreamExt;
    use std::net::SocketAddr;

    /// A server with short clocks; returns its address and its shutdown.
    async fn server(limits: HttpLimits) -> (SocketAddr, Shutdown) {
        let app = Router::new().route("/", get(|| async { "hello" })).route(
            "/slow",
            get(|| async {
                // A response that stays in flight longer than the idle clock.
                let stream = futures::stream::unfold(0, |n| async move {
                    if n == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some((Ok::<_, Infallible>(format!("{n}\n")), n + 1))
                });
                Body::from_stream(stream)
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(serve(listener, app, limits, None, shutdown.clone()));
        (addr, shutdown)
    }

    fn short() -> HttpLimits {
        HttpLimits {
            max_connections: 100,
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
        }
    }

    /// Reads until the peer closes; returns what came and how long it took.
    async fn read_to_close(s: &mut TcpStream) -> (String, Duration) {
        let started = std::time::Instant::now();
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
            .await
            .expect("the server closes the connection");
        (
            String::from_utf8_lossy(&all).into_owned(),
            started.elapsed(),
        )
    }

    /// Connects, sends `request` and reads until the server closes: what came, and how long
    /// it took.
    async fn whole_answer(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        read_to_close(&mut s).await
    }

    /// Sends `request` on the open connection `s`; returns the first bytes answered.
    async fn ask_again(s: &mut TcpStream, request: &[u8]) -> String {
        s.write_all(request).await.unwrap();
        let mut first = [0u8; 512];
        let n = s.read(&mut first).await.unwrap();
        String::from_utf8_lossy(&first[..n]).into_owned()
    }

    /// Connects, sends `request` and returns the connection with the first bytes answered.
    async fn ask(addr: SocketAddr, request: &[u8]) -> (TcpStream, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let answer = ask_again(&mut s, request).await;
        (s, answer)
    }

    #[tokio::test]
    async fn trickled_headers_are_cut_off() {
        let (addr, _stop) = server(short()).await;
        let (got, took) = whole_answer(addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
        assert!(!got.contains("hello"), "{got}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // A connection that sends nothing at all is cut off on the same clock.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let (_, took) = read_to_close(&mut silent).await;
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_closes_after_the_idle_clock_not_the_header_one() {
        let (addr, _stop) = server(short()).await;
        let (mut s, first) = ask(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(first.contains("hello"));
        // Idle past the header clock (300 ms) but within the idle one (600 ms): still open.
        tokio::time::sleep(Duration::from_millis(450)).await;
        let again = ask_again(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(again.contains("hello"), "served again: {again}");
        let (_, took) = read_to_close(&mut s).await;
        assert!(
            took >= Duration::from_millis(500),
            "closed only when idle: {took:?}"
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn a_long_response_is_not_cut_off() {
        // /slow takes 900 ms: past the header clock (300 ms) and the idle clock (600 ms).
        let (addr, _stop) = server(short()).await;
        let (got, _) = whole_answer(
            addr,
            b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(got.contains("0\n") && got.contains("2\n"), "{got}");
        // The same as an event stream, answered by `sse_h1` instead of hyper.
        let (got, took) = whole_answer(
            addr,
            b"GET /slow HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await;
        assert!(
            got.contains("connection: close\r\n"),
            "answered here: {got}"
        );
        assert!(
            got.ends_with("2\r\n0\n\r\n2\r\n1\n\r\n2\r\n2\n\r\n0\r\n\r\n"),
            "whole: {got}"
        );
        assert!(took >= Duration::from_millis(800), "{took:?}");
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused_at_once() {
        let limits = HttpLimits {
            max_connections: 2,
            ..HttpLimits::new(2)
        };
        let (addr, _stop) = server(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let (s, first) = ask(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(first.contains("hello"));
            held.push(s);
        }
        let before = refused_connections();
        let mut third = TcpStream::connect(addr).await.unwrap();
        let (got, took) = read_to_close(&mut third).await;
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        assert!(got.contains("too_many_connections"), "{got}");
        assert!(took < Duration::from_secs(2));
        assert!(refused_connections() > before);
        drop(held);
    }

    #[tokio::test]
    async fn http2_with_prior_knowledge_is_still_served() {
        let (addr, _stop) = server(short()).await;
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .uri(format!("http://{addr}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.version(), axum::http::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"hello");
    }

    #[tokio::test]
    async fn a_request_that_begins_like_the_http2_preface_is_served_as_http1() {
        let (addr, _stop) = server(short()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // "PR" is as much as HTTP/2's preface has in common with a request line. Sent apart,
        // it usually reaches the server alone; either way the answer must be HTTP/1.1's.
        s.write_all(b"PR").await.unwrap();
        s.flush().await.unwrap();
        tokio::task::yield_now().await;
        s.write_all(b"OPFIND / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_to_close(&mut s).await;
        assert!(got.starts_with("HTTP/1.1 405"), "{got}");
    }

    #[tokio::test]
    async fn shutdown_lets_a_response_in_flight_finish_then_closes() {
        // An idle clock far longer than the test: the close must come from the shutdown.
        let (addr, stop) = server(HttpLimits {
            idle_timeout: Duration::from_secs(30),
            ..short()
        })
        .await;
        let (mut s, head) = ask(addr, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200"));
        stop.trigger();
        let (rest, took) = read_to_close(&mut s).await;
        assert!(
            rest.contains("2\n"),
            "the whole response, then the close: {rest}"
        );
        assert!(took < Duration::from_secs(5), "closed after it: {took:?}");
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_a_connection_that_never_spoke() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Shutdown::new();
        let app = Router::new().route("/", get(|| async { "hello" }));
        // A header clock far longer than the test.
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(30),
            ..short()
        };
        let served = tokio::spawn(serve(listener, app, limits, None, stop.clone()));
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Accepted in order: once this one is answered, the silent one is being served.
        let (_s, first) = ask(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(first.contains("hello"), "the server is up: {first}");
        stop.trigger();
        let (_, took) = read_to_close(&mut silent).await;
        assert!(
            took < Duration::from_secs(5),
            "closed at shutdown: {took:?}"
        );
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("serve returns once its connections are done")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_event_stream_is_answered_without_hyper_and_other_requests_with_it() {
        let app = Router::new().route(
            "/events",
            get(
                |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                    let stream = futures::stream::iter([format!("data: {}\n\n", peer.ip())])
                        .map(Ok::<_, Infallible>);
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                        Body::from_stream(stream),
                    )
                },
            ),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, app, short(), None, Shutdown::new()));
        let (got, _) = whole_answer(
            addr,
            b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await;
        // This module's answer: closed after the stream, which it says, and chunked.
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("connection: close\r\n"), "{got}");
        assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
        assert!(
            got.ends_with("\r\n\r\n11\r\ndata: 127.0.0.1\n\n\r\n0\r\n\r\n"),
            "{got}"
        );
        // Without the Accept header, hyper answers and keeps the connection.
        let (mut s, got) = ask(addr, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(!got.contains("connection: close"), "{got}");
        let more = ask_again(
            &mut s,
            b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await;
        assert!(
            more.starts_with("HTTP/1.1 200 OK"),
            "a second request on it: {more}"
        );
    }

    #[tokio::test]
    async fn an_event_streams_task_stays_small() {
        // Its task lives as long as the stream: 1,688 bytes before its parts were boxed and
        // taken apart, 624 after (idle SSE 7.4 -> 6.5 kB, README). A change that makes it
        // carry the request, the response or a timer again fails here.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = TcpStream::connect(addr).await.unwrap();
        let watched = Watched::new(socket, Arc::new(ConnState::new()), short());
        let (_, request) =
            sse_h1::parse_head(b"GET / HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let stream = EventStream {
            head: (1, request),
            app: Router::new(),
            peer: addr,
            stop: Shutdown::new(),
            counted: Counted::new(Arc::new(AtomicUsize::new(0))),
            watcher: graceful.watcher(),
        };
        let task = serve_event_stream(Box::new((watched, stream)));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 800, "the event stream's future is {size} bytes");
    }
}
