//! The bare reference server the chat benchmark measures Tidings against: hyper and
//! tokio-tungstenite, rooms in memory, nothing else (no accounts, no database, no limits, no
//! presence, no history).
//!
//! It speaks just enough of Tidings' interface for `benches/chat.rs` to drive it unchanged:
//!
//! - `POST /api/auth/signup` and `/api/auth/login`: 200 with a session cookie (any name, any
//!   password).
//! - `GET /ws`: a WebSocket. `chat-join` answers `chat-joined` (no members, no history);
//!   `chat-message` is given the room's next id and broadcast to every socket in the room as
//!   Tidings' own `chat-message` frame (the same type, so the same bytes on the wire).
//! - `GET /api/rooms/{room}/events`: the room as Server-Sent Events (`id`, `event:
//!   chat-message`, `data`), as Tidings sends them.
//! - `GET /files/{name}` (with `--files DIR`): the file `DIR/name` with its length, read and
//!   sent 256 KiB at a time: a bare hyper file server, the export benchmark's second file
//!   ceiling beside nginx's `sendfile` (`scripts/bench-export.sh`).
//!
//! Each room is a `tokio::sync::broadcast` channel of encoded frames; ids are given under the
//! room's lock, so every subscriber sees them in order. Writes are coalesced as Tidings does
//! it: a socket's task feeds every frame already waiting, then flushes once (one write
//! system call for a burst); an event stream sends every waiting event as one chunk. The
//! socket buffers are Tidings' (`server::fanout::ws`), so memory is compared like for like.
//!
//! ```text
//! reference [--addr 127.0.0.1:0] [--threads T] [--files DIR]
//! ```
//!
//! Prints `listening on http://ADDR` once it accepts connections (`scripts/bench-chat.sh`
//! waits for that line, as it does for Tidings).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{
    body::{Frame, Incoming},
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tidings::{
    protocol::chat::{ChatMessage, ClientMsg, ServerMsg},
    server::{
        access::identity::SESSION_COOKIE,
        fanout::ws::{MAX_WRITE_BUFFER, READ_BUFFER, WRITE_BUFFER},
    },
};
use tokio::{net::TcpListener, sync::broadcast};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
        Message, Utf8Bytes,
    },
    WebSocketStream,
};

/// Frames a room keeps for a subscriber that is behind (Tidings' bus keeps 1,024).
const ROOM_BUFFER: usize = 1024;

type Body = BoxBody<Bytes, Infallible>;

/// One encoded message, as a WebSocket text frame and as an SSE event.
struct Encoded {
    ws: Utf8Bytes,
    sse: Bytes,
}

struct Room {
    next_id: i64,
    tx: broadcast::Sender<Arc<Encoded>>,
}

#[derive(Default)]
struct Rooms(Mutex<HashMap<String, Room>>);

impl Rooms {
    fn subscribe(&self, name: &str) -> broadcast::Receiver<Arc<Encoded>> {
        let mut rooms = self.0.lock().expect("the rooms lock");
        rooms
            .entry(name.to_string())
            .or_insert_with(|| Room {
                next_id: 0,
                tx: broadcast::channel(ROOM_BUFFER).0,
            })
            .tx
            .subscribe()
    }

    /// Gives `text` the room's next id and sends it to every subscriber.
    fn publish(&self, name: &str, text: String) {
        let mut rooms = self.0.lock().expect("the rooms lock");
        let Some(room) = rooms.get_mut(name) else {
            return;
        };
        room.next_id += 1;
        let message = ChatMessage {
            id: room.next_id,
            room: name.to_string(),
            display_name: "reference".to_string(),
            text,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            deleted: false,
        };
        let id = message.id;
        let json = serde_json::to_string(&ServerMsg::ChatMessage(message)).expect("serializable");
        let sse = Bytes::from(format!("id: {id}\nevent: chat-message\ndata: {json}\n\n"));
        let _ = room.tx.send(Arc::new(Encoded {
            ws: json.into(),
            sse,
        }));
    }
}

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let mut threads = 2usize;
    let mut files = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--addr", Some(v)) => {
                addr = v
                    .parse()
                    .unwrap_or_else(|e| die(&format!("--addr {v}: {e}")))
            }
            ("--threads", Some(v)) => {
                threads = v
                    .parse()
                    .unwrap_or_else(|e| die(&format!("--threads {v}: {e}")))
            }
            ("--files", Some(v)) => files = Some(std::path::PathBuf::from(v)),
            // `cargo bench` passes --bench; nothing to run then.
            ("--bench", _) => return,
            (f, _) => die(&format!(
                "unknown or incomplete flag {f} (usage: reference [--addr A] [--threads T] [--files DIR])"
            )),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(serve(addr, files.map(Arc::new)));
}

fn die(msg: &str) -> ! {
    eprintln!("reference: {msg}");
    std::process::exit(1)
}

async fn serve(addr: SocketAddr, files: Option<Arc<std::path::PathBuf>>) {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| die(&format!("binding {addr}: {e}")));
    let local = listener.local_addr().expect("a bound address");
    println!("listening on http://{local}");
    let rooms = Arc::new(Rooms::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of file descriptors, say: wait for one to close.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let rooms = rooms.clone();
        let files = files.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| route(req, rooms.clone(), files.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn full(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .expect("a response")
}

async fn route(
    req: Request<Incoming>,
    rooms: Arc<Rooms>,
    files: Option<Arc<std::path::PathBuf>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if let (Some(dir), Some(name)) = (files, path.strip_prefix("/files/")) {
        return Ok(file(&dir, name).await);
    }
    Ok(match (req.method(), path.as_str()) {
        (&Method::POST, "/api/auth/signup" | "/api/auth/login") => {
            let mut res = full(StatusCode::OK, "{}");
            res.headers_mut().insert(
                header::SET_COOKIE,
                header::HeaderValue::from_str(&format!("{SESSION_COOKIE}=reference; Path=/"))
                    .expect("a cookie"),
            );
            res
        }
        (&Method::GET, "/ws") => upgrade(req, rooms),
        (&Method::GET, p) => match p
            .strip_prefix("/api/rooms/")
            .and_then(|rest| rest.strip_suffix("/events"))
        {
            Some(room) if !room.is_empty() && !room.contains('/') => events(rooms.subscribe(room)),
            _ => full(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
        },
        _ => full(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    })
}

/// `dir/name` (a plain name, no folders), read and sent 256 KiB at a time.
async fn file(dir: &std::path::Path, name: &str) -> Response<Body> {
    use tokio::io::AsyncReadExt;
    const READ: usize = 256 * 1024;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return full(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#);
    }
    let Ok(file) = tokio::fs::File::open(dir.join(name)).await else {
        return full(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#);
    };
    let Ok(meta) = file.metadata().await else {
        return full(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#);
    };
    let body = futures::stream::unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(READ);
        match file.read_buf(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some((Ok::<_, Infallible>(Frame::data(buf.freeze())), file)),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CONTENT_LENGTH, meta.len())
        .body(BodyExt::boxed(StreamBody::new(body)))
        .expect("a response")
}

/// The room as an event stream: every event waiting goes out as one chunk.
fn events(rx: broadcast::Receiver<Arc<Encoded>>) -> Response<Body> {
    let body = futures::stream::unfold(rx, |mut rx| async move {
        let first = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let gap = Frame::data(Bytes::from_static(b"event: gap\ndata: {}\n\n"));
                return Some((Ok(gap), rx));
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        let mut chunk = BytesMut::from(&first.sse[..]);
        while let Ok(e) = rx.try_recv() {
            chunk.extend_from_slice(&e.sse);
        }
        Some((Ok::<_, Infallible>(Frame::data(chunk.freeze())), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(StreamBody::new(body)))
        .expect("a response")
}

fn upgrade(mut req: Request<Incoming>, rooms: Arc<Rooms>) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return full(StatusCode::BAD_REQUEST, r#"{"error":"not_a_websocket"}"#);
    };
    let accept = derive_accept_key(key.as_bytes());
    let accept = header::HeaderValue::from_str(&accept).expect("base64");
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(MAX_WRITE_BUFFER);
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        socket(ws, rooms).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()).boxed())
        .expect("a response")
}

/// One socket: joins and publishes what it reads; writes what its room broadcasts.
async fn socket<S>(mut ws: WebSocketStream<S>, rooms: Arc<Rooms>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut room: Option<(String, broadcast::Receiver<Arc<Encoded>>)> = None;
    loop {
        let incoming = async {
            match room.as_mut() {
                Some((_, rx)) => Some(rx.recv().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = ws.next() => {
                let Some(Ok(msg)) = read else { return };
                let Message::Text(text) = msg else { continue };
                match serde_json::from_str::<ClientMsg>(text.as_str()) {
                    Ok(ClientMsg::ChatJoin { room: name, .. }) => {
                        room = Some((name.clone(), rooms.subscribe(&name)));
                        let joined = ServerMsg::ChatJoined { room: name, members: Vec::new(), history: Vec::new() };
                        let frame = serde_json::to_string(&joined).expect("serializable");
                        if ws.send(Message::text(frame)).await.is_err() {
                            return;
                        }
                    }
                    Ok(ClientMsg::ChatMessage { text, .. }) => {
                        if let Some((name, _)) = &room {
                            rooms.publish(name, text);
                        }
                    }
                    _ => {}
                }
            }
            got = incoming => {
                let first = match got {
                    Some(Ok(e)) => e,
                    Some(Err(broadcast::error::RecvError::Lagged(_))) => {
                        let gap = r#"{"type":"chat-gap"}"#;
                        if ws.send(Message::text(gap)).await.is_err() { return }
                        continue;
                    }
                    _ => return,
                };
                if ws.feed(Message::Text(first.ws.clone())).await.is_err() {
                    return;
                }
                if let Some((_, rx)) = room.as_mut() {
                    while let Ok(e) = rx.try_recv() {
                        if ws.feed(Message::Text(e.ws.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
