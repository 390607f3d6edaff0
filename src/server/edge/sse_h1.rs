//! Event streams on plain HTTP/1.1 connections, answered without hyper.
//!
//! hyper's HTTP/1 server keeps two 8 KiB buffers for the life of a connection: the read buffer
//! the request came into and the write buffer the response head went out of (heaptrack: 16 KiB
//! of an idle event stream's 19.5 kB; hyper has no setting below 8 KiB). An event stream is
//! one GET that is answered for minutes and never reads again, so on a plain connection whose
//! first request is one (`Accept: text/event-stream`) this module answers it itself:
//! - [`parse_head`] reads the request head that has already arrived, looked at in place
//!   (peeked) with `httparse` (hyper's own parser). Anything it is not sure of (another method,
//!   HTTP/1.0, a body, an upgrade, an `Expect`, a head not all here yet or over 8 KiB, a header
//!   `http` refuses) is left to hyper untouched, so every other request is served as before.
//! - The app answers the request as usual (the same router, middleware and extensions).
//! - [`write_response`] writes the status line and headers, then the body: with
//!   `content-length` when its size is known (an error answer, say), else chunked, one write
//!   per chunk the body yields; then `connection: close` ends the connection. While it waits
//!   for the body it watches the socket, so a client that leaves is noticed at once (its
//!   stream's producer sees `Gone`), as hyper does.
//! - The app answers inside `fanout::sse::answered_for_a_cutting_writer`, so an event
//!   stream runs its producer in the body, in this task: an event goes from the bus to the
//!   socket with no hop between tasks. The producer only runs while the body is polled, so
//!   the slow-client cut-off is this writer's: a write that the client takes nothing of for
//!   the stream's limit (`fanout::sse::WriteLimit` on the response) ends the connection and
//!   counts a slow client.
//! - At shutdown the event stream ends itself (see `fanout::sse`); a write still blocked on a
//!   client that stopped reading gets [`SHUTDOWN_GRACE`] and no more, so it cannot hold
//!   shutdown up.
//!
//! Tests: the unit tests below (parsing, and both kinds of answer on an in-memory socket);
//! `edge::http`'s tests serve a stream this way on a real socket; every SSE integration test
//! and Playwright spec goes through it.

use std::{io, time::Duration};

use axum::{
    body::{Body, HttpBody},
    http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version},
};
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::server::{fanout::sse, Shutdown};

/// The longest request head looked at; a longer one is left to hyper.
pub const HEAD_MAX: usize = 8 * 1024;
/// Headers at most in a head looked at (hyper's own default is 100).
const HEADERS_MAX: usize = 100;
/// How long a write may still take once shutdown has begun.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The request in `bytes` and the length of its head, if it is an event-stream GET that
/// this module answers; `None` leaves the connection to hyper.
pub fn parse_head(bytes: &[u8]) -> Option<(usize, Request<Body>)> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    if parsed.method? != "GET" || parsed.version? != 1 {
        return None;
    }
    let path = parsed.path?;
    if !path.starts_with('/') {
        return None;
    }
    // Most requests are not event streams: told before anything is built.
    let wants_stream = parsed.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("accept")
            && std::str::from_utf8(h.value)
                .is_ok_and(|v| v.to_ascii_lowercase().contains("text/event-stream"))
    });
    if !wants_stream {
        return None;
    }
    let uri = Uri::try_from(path).ok()?;
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let map = request.headers_mut();
    map.reserve(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == header::CONTENT_LENGTH {
            if value != "0" {
                return None;
            }
        } else if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return None;
        }
        map.append(name, value);
    }
    Some((len, request))
}

/// Writes `response` to `io` (head, then body), watching `io` for the client leaving while
/// the body is quiet. Ends when the body ends, the client leaves or a write fails.
///
/// Not an `async fn`: the response is taken apart here, so the future (which lives as long as
/// the stream) keeps only the body and the head, not the whole response a second time.
pub fn write_response<'a, I>(
    io: &'a mut I,
    response: Response<Body>,
    stop: &'a Shutdown,
) -> impl std::future::Future<Output = ()> + 'a
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, body) = response.into_parts();
    let framing = if parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
    {
        Framing::Bodiless
    } else {
        body.size_hint()
            .exact()
            .map_or(Framing::Chunked, Framing::Length)
    };
    // An event stream's cut-off for a client too slow to take its events (its producer runs
    // in the body, so only the writer sees the client stop reading: `fanout::sse::stream`).
    let limit = parts.extensions.get::<sse::WriteLimit>().map(|l| l.0);
    let head = head(parts, framing);
    // What is left to send of a body of known size (`None`: chunked).
    let length = match framing {
        Framing::Bodiless => Some(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    write_body(io, head, body, length, Writing { stop, limit })
}

/// What every write of a response answers to: shutdown, and the slow-client limit.
struct Writing<'a> {
    stop: &'a Shutdown,
    limit: Option<Duration>,
}

/// How a response's body is delimited on the wire.
#[derive(Clone, Copy)]
enum Framing {
    /// No body at all (1xx, 204, 304): no length either.
    Bodiless,
    /// `content-length`.
    Length(u64),
    /// `transfer-encoding: chunked`, ended by an empty chunk.
    Chunked,
}

/// [`write_response`]'s future: `head`, then `body` (chunked when `length` is `None`).
async fn write_body<I>(
    io: &mut I,
    head: Vec<u8>,
    mut body: Body,
    mut length: Option<u64>,
    writing: Writing<'_>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    if write(io, &mut &head[..], &writing).await.is_err() {
        return;
    }
    drop(head);
    // What a client sends after its request is read and dropped; only its leaving matters.
    let mut scratch = [0u8; 32];
    loop {
        if length == Some(0) {
            // All it said it had (or a bodiless status): nothing more is read from the body.
            break;
        }
        // Only the data is kept across the write below, not the frame it came in (a frame
        // has room for trailers: 100 bytes more in every stream's future).
        let data = tokio::select! {
            frame = body.frame() => match frame {
                None => break,
                Some(Err(e)) => {
                    // Ended without the last chunk: the client sees a cut, not a whole answer.
                    tracing::debug!(error = %e, "an event stream's body failed");
                    return;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            },
            read = io.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        let sent = match &mut length {
            None => write(io, &mut chunk(data), &writing).await,
            // No more than the length said (nothing for a bodiless status).
            Some(left) => {
                let mut data = data;
                data.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= data.len() as u64;
                write(io, &mut data, &writing).await
            }
        };
        if sent.is_err() {
            return;
        }
    }
    match length {
        None if write(io, &mut &b"0\r\n\r\n"[..], &writing).await.is_err() => return,
        // Shorter than it said: closed without the usual goodbye, so the client sees a cut.
        Some(left) if left > 0 => return,
        _ => {}
    }
    // Boxed, as below: a timer is large, and this one is needed once.
    let _ = Box::pin(tokio::time::timeout(SHUTDOWN_GRACE, io.shutdown())).await;
}

/// The status line and headers of `parts`, with this writer's `framing` and
/// `connection: close`.
fn head(parts: axum::http::response::Parts, framing: Framing) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        // Framing is this writer's to say.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Bodiless => {}
        Framing::Length(n) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// `data` framed as one chunk: its size in hex, CRLF, the data, CRLF (written as one
/// vectored write, without copying the data).
fn chunk(data: Bytes) -> impl Buf {
    use std::io::Write;
    // At most 16 hex digits and CRLF.
    let mut size = [0u8; 18];
    let left = {
        let mut line = &mut size[..];
        write!(line, "{:x}\r\n", data.len()).expect("room for any usize");
        line.len()
    };
    let n = size.len() - left;
    Bytes::copy_from_slice(&size[..n])
        .chain(data)
        .chain(&b"\r\n"[..])
}

/// Writes all of `buf`: a client that takes none of it for the slow-client limit is cut off
/// (and counted), and once shutdown has begun a write gets [`SHUTDOWN_GRACE`] at most.
async fn write<I, B>(io: &mut I, buf: &mut B, writing: &Writing<'_>) -> io::Result<()>
where
    I: AsyncWrite + Unpin,
    B: Buf,
{
    let write = io.write_all_buf(buf);
    let mut write = std::pin::pin!(write);
    // Written at once (the usual case): no timer made, and the shared shutdown token is not
    // asked to wake anyone.
    if let std::task::Poll::Ready(written) = futures::poll!(write.as_mut()) {
        return written;
    }
    // Boxed, like the grace below: a timer is large, and only a write that waits needs one.
    let too_slow = async {
        match writing.limit {
            Some(limit) => Box::pin(tokio::time::sleep(limit)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        written = write.as_mut() => written,
        () = too_slow => {
            sse::count_slow();
            Err(io::Error::new(io::ErrorKind::TimedOut, "the client took too long to take its events"))
        }
        _ = writing.stop.cancelled() => match Box::pin(tokio::time::timeout(SHUTDOWN_GRACE, write)).await {
            Ok(written) => written,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "shut down while the client was not reading")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::convert::Infallible;

    const STREAM: &[u8] =
        b"GET /api/rooms/general/events?x=1 HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\nCookie: a=b\r\n\r\n";

    #[test]
    fn an_event_stream_get_is_taken_with_its_headers() {
        let mut bytes = STREAM.to_vec();
        bytes.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let (len, req) = parse_head(&bytes).expect("taken");
        assert_eq!(len, STREAM.len());
        assert_eq!(req.uri(), "/api/rooms/general/events?x=1");
        assert_eq!(req.headers()["cookie"], "a=b");
        assert_eq!(req.headers()["host"], "h");
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        let not_ours: &[&[u8]] = &[
            // Not all here yet.
            &STREAM[..STREAM.len() - 2],
            b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /x HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
            b"POST /x HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"HEAD /x HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"GET http://h/x HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nUpgrade: websocket\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nExpect: 100-continue\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nBad Name: 1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nX: a\x01b\r\n\r\n",
        ];
        for head in not_ours {
            assert!(
                parse_head(head).is_none(),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        let empty_body =
            b"GET /x HTTP/1.1\r\nACCEPT: Text/Event-Stream\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_head(empty_body).is_some());
    }

    /// Writes `response` to one end of a pipe; returns what the other end read.
    async fn written(response: Response<Body>) -> String {
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let stop = Shutdown::new();
        let writer = async move { write_response(&mut ours, response, &stop).await };
        let reader = async {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).await.unwrap();
            String::from_utf8(all).unwrap()
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(writer, reader).1
        })
        .await
        .expect("the answer ends")
    }

    /// A response of `status` and `content_type` with `body`.
    fn response_of(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }

    #[tokio::test]
    async fn a_body_of_known_size_goes_out_with_its_length() {
        let body = Body::from("{\"error\":\"x\"}");
        let response = response_of(StatusCode::UNAUTHORIZED, "application/json", body);
        let got = written(response).await;
        assert!(got.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{got}");
        assert!(got.contains("content-type: application/json\r\n"), "{got}");
        assert!(got.contains("content-length: 13\r\n"), "{got}");
        assert!(got.contains("connection: close\r\n"), "{got}");
        assert!(got.contains("\r\ndate: "), "{got}");
        assert!(got.ends_with("\r\n\r\n{\"error\":\"x\"}"), "{got}");
    }

    #[tokio::test]
    async fn a_stream_goes_out_chunked_and_ends_with_the_last_chunk() {
        let events = futures::stream::iter(["retry: 1000\n\n", "data: a\n\n", "", "data: b\n\n"])
            .map(|s| Ok::<_, Infallible>(Bytes::from_static(s.as_bytes())));
        let body = Body::from_stream(events);
        let response = response_of(StatusCode::OK, "text/event-stream", body);
        let got = written(response).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
        let body = got.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            "d\r\nretry: 1000\n\n\r\n9\r\ndata: a\n\n\r\n9\r\ndata: b\n\n\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_bodiless_status_goes_out_without_length_or_body() {
        let mut response = Response::new(Body::from("ignored"));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let got = written(response).await;
        assert!(got.starts_with("HTTP/1.1 204 No Content\r\n"), "{got}");
        assert!(!got.contains("content-length"), "{got}");
        assert!(!got.contains("transfer-encoding"), "{got}");
        assert!(got.ends_with("connection: close\r\n\r\n"), "{got}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stopped_reading_does_not_hold_shutdown_up() {
        // A pipe with room for little, and a client that never reads from it.
        let (mut ours, _theirs) = tokio::io::duplex(256);
        let stop = Shutdown::new();
        let endless =
            futures::stream::repeat(Bytes::from_static(&[b'x'; 1024])).map(Ok::<_, Infallible>);
        let serving = {
            let stop = stop.clone();
            tokio::spawn(async move {
                write_response(&mut ours, Response::new(Body::from_stream(endless)), &stop).await;
            })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            !serving.is_finished(),
            "blocked on the client, as it should be"
        );
        stop.trigger();
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(60), serving)
            .await
            .expect("ended by the grace, not by the client")
            .unwrap();
        assert!(
            started.elapsed() <= SHUTDOWN_GRACE,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn what_the_client_sends_after_its_request_is_dropped() {
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        let stop = Shutdown::new();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
        let serving = tokio::spawn(async move {
            write_response(
                &mut ours,
                Response::new(Body::from_stream(tokio_stream_of(rx))),
                &stop,
            )
            .await;
        });
        let mut head = [0u8; 256];
        let _ = theirs.read(&mut head).await.unwrap();
        // Far more than the scratch buffer, while the stream is quiet: read and dropped.
        theirs.write_all(&[b'y'; 4096]).await.unwrap();
        tx.send(Ok(Bytes::from_static(b"data: z\n\n")))
            .await
            .unwrap();
        drop(tx);
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"9\r\ndata: z\n\n\r\n0\r\n\r\n");
        serving.await.unwrap();
    }

    #[test]
    fn chunk_sizes_are_hex() {
        for (len, want) in [
            (1usize, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (65536, "10000\r\n"),
        ] {
            let mut framed = chunk(Bytes::from(vec![b'x'; len]));
            let bytes = framed.copy_to_bytes(framed.remaining());
            assert!(bytes.starts_with(want.as_bytes()), "{len}");
            assert!(bytes.ends_with(b"x\r\n"));
            assert_eq!(bytes.len(), want.len() + len + 2);
        }
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_a_quiet_stream() {
        let (mut ours, theirs) = tokio::io::duplex(1024);
        let stop = Shutdown::new();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
        let body = Body::from_stream(tokio_stream_of(rx));
        let mut theirs = theirs;
        let serving = tokio::spawn(async move {
            write_response(&mut ours, Response::new(body), &stop).await;
        });
        // The head arrives; then the client goes while nothing is being sent.
        let mut head = [0u8; 64];
        let n = theirs.read(&mut head).await.unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200 OK"));
        drop(theirs);
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("noticed the client leaving")
            .unwrap();
        assert!(tx.is_closed(), "the body was dropped with the connection");
    }

    fn tokio_stream_of<T: Send + 'static>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Send {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
    }
}
