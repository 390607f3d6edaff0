//! Chat under load: room delivery over WebSocket and SSE, and what an idle
//! WebSocket costs the server.
//!
//! - `ws`: N WebSocket clients joined to one room; P of them (each its own account, so each
//!   has its own rate limit) also publish, R messages per second in all, for S seconds. Every
//!   client counts the room's messages it receives and the latency of each: the publisher
//!   puts its send time in the text (`t=<µs since the epoch>;p=<publisher>;n=<seq>`) and
//!   publishers and clients share this process's clock. Prints messages published,
//!   deliveries/s (every client's messages over the time from the first send to the last
//!   arrival), latency p50/p99/max, and whether every client got every message once, in order.
//! - `sse`: the same with N subscribers of `GET /api/rooms/{room}/events` and P WebSocket
//!   publishers beside them.
//! - `events`: the same with N subscribers of one `GET /api/events` stream each, following 4
//!   rooms (`<room>-0` … `<room>-3`), the publishers taking turns over the rooms: the
//!   multi-topic stream's delivery, order per room and latency.
//! - `idle`: N WebSockets opened (and joined to an empty room unless `--no-join`), then held
//!   for a while; prints the server's resident memory growth per connection (VmRSS of `--pid`)
//!   and whether all N stayed open at once.
//!
//! Targets (round 1's; the server and this load generator share a 2-core machine): 1,000
//! WebSocket clients with 1,000 msgs/s offered (1,000,000 deliveries/s): every message
//! delivered, at least 800,000 deliveries/s, p99 under 250 ms. 1,000 SSE subscribers at
//! 100 msgs/s: p99 under 100 ms. Idle WebSockets: at most 8 kB of server memory each, and
//! 10,000 held at once.
//!
//! Run by `scripts/bench-chat.sh`, which builds the release server, starts it on a fresh
//! SQLite file for each scenario and passes `--url` and `--pid`. By hand:
//!
//! ```text
//! chat ws   [--clients N] [--publishers P] [--rate R] [--secs S] [--room NAME]
//! chat sse  [--clients N] [--publishers P] [--rate R] [--secs S] [--room NAME]
//! chat idle [--clients N] [--hold S] [--room NAME | --no-join]
//!   every mode: [--url URL] [--pid PID] [--connect-at-once K] [--drain S] [--threads T]
//! ```
//!
//! `--url` and `--pid` default to `BENCH_URL` and `BENCH_SERVER_PID`; both may list several
//! instances, comma-separated (`--url A,B --pid 11,12`): client i then connects to instance
//! i mod n, and CPU and memory are summed over the pids. `--connect-at-once`
//! (default 50) bounds connections being opened at a time, `--drain` (default 10) is how long
//! to wait for late messages with nothing new arriving, `--threads` (default 2) the runtime's
//! worker threads. Progress goes to stderr; the figures to stdout, ending with one
//! `result key=value …` line that the script summarises. Receivers share one account
//! (`chat_bench`: presence counts a user once); publishers are `chat_pub0000`, … . Each
//! receiver scans frames for the `"text":"t=` marker instead of parsing them, and keeps a
//! log-bucketed histogram (under 1.6 % error) rather than every sample.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use serde_json::json;

mod common;

use tidings::{protocol::chat::ClientMsg, server::access::identity::SESSION_COOKIE};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, Semaphore},
    time::MissedTickBehavior,
};
use tokio_tungstenite::{
    client_async_with_config, connect_async_with_config,
    tungstenite::{
        client::IntoClientRequest,
        http::{header, HeaderValue},
        protocol::{CloseFrame, WebSocketConfig},
        Message,
    },
    MaybeTlsStream, WebSocketStream,
};

const USAGE: &str = "\
usage: chat ws   [--clients N] [--publishers P] [--rate R] [--secs S] [--room NAME]
       chat sse  [--clients N] [--publishers P] [--rate R] [--secs S] [--room NAME]
       chat events [--clients N] [--publishers P] [--rate R] [--secs S] [--room NAME]
       chat idle [--clients N] [--hold S] [--rooms K] [--room NAME | --no-join] [--sse]
  idle: --sse holds SSE streams of the room instead of WebSockets
  ws: [--acks] puts a clientId on every message (the server acks each)
  every mode: [--url URL] [--pid PID] [--connect-at-once K] [--drain S] [--threads T]
  (--url and --pid default to BENCH_URL and BENCH_SERVER_PID; see scripts/bench-chat.sh)";

const PASSWORD: &str = "bench-password";
/// The account every receiver shares.
const RECEIVER: &str = "chat_bench";
/// The account the idle sockets share.
const IDLE_USER: &str = "chat_idle";
/// Client read buffers: roomy for the loaded runs, small for the idle thousands.
const READ_BUFFER_LOAD: usize = 16 * 1024;
const READ_BUFFER_IDLE: usize = 4 * 1024;
/// How long one connection (and its join) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Sign-ins at a time (the server hashes 4 passwords at once).
const SIGN_INS_AT_ONCE: usize = 8;

/// Frame prefixes and markers the receivers look for.
const KIND_MESSAGE: &str = r#"{"type":"chat-message","#;
const KIND_ERROR: &str = r#"{"type":"chat-error""#;
const KIND_GAP: &str = r#"{"type":"chat-gap""#;
const KIND_JOINED: &str = r#"{"type":"chat-joined""#;
const ID: &str = r#""id":"#;
const MARK: &str = r#""text":"t="#;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WsSink = SplitSink<Ws, Message>;

fn die(msg: &str) -> ! {
    eprintln!("chat bench: {msg}");
    std::process::exit(1)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

// ---------------------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ws,
    Sse,
    /// SSE subscribers of one `/api/events` stream each, over [`TOPICS`] rooms.
    Events,
    Idle,
}

/// Rooms each subscriber of the `events` mode follows on its one stream.
const TOPICS: usize = 4;

struct Opts {
    mode: Mode,
    url: String,
    clients: usize,
    publishers: usize,
    rate: f64,
    secs: f64,
    /// `None`: idle sockets join nothing.
    room: Option<String>,
    pid: Option<String>,
    hold: f64,
    connect_at_once: usize,
    drain: f64,
    threads: usize,
    /// Publishers put a `clientId` on every message (and get `chat-ack`s back).
    acks: bool,
    /// Rooms each idle socket joins (`<room>`, `<room>-1`, …): the cost of a subscription
    /// on a connection that is already open.
    rooms: usize,
    /// Idle mode: SSE streams of the room instead of WebSockets.
    sse: bool,
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .trim()
        .parse()
        .unwrap_or_else(|_| die(&format!("{flag} wants a number, not {value:?}")))
}

/// The options, or `None` when there is no mode (plain `cargo bench`, `--help`).
fn parse_args() -> Option<Opts> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mode = match args.next()?.as_str() {
        "ws" => Mode::Ws,
        "sse" => Mode::Sse,
        "events" => Mode::Events,
        "idle" => Mode::Idle,
        "-h" | "--help" | "help" => return None,
        other => die(&format!("unknown mode {other:?}\n{USAGE}")),
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut o = Opts {
        mode,
        url: env("BENCH_URL").unwrap_or_else(|| "http://127.0.0.1:3000".to_string()),
        clients: if mode == Mode::Idle { 10_000 } else { 1000 },
        publishers: if matches!(mode, Mode::Sse | Mode::Events) {
            20
        } else {
            200
        },
        rate: if matches!(mode, Mode::Sse | Mode::Events) {
            100.0
        } else {
            1000.0
        },
        secs: if matches!(mode, Mode::Sse | Mode::Events) {
            15.0
        } else {
            20.0
        },
        room: Some(
            if mode == Mode::Idle {
                "bench-idle"
            } else {
                "bench"
            }
            .to_string(),
        ),
        pid: env("BENCH_SERVER_PID"),
        hold: 10.0,
        connect_at_once: 50,
        drain: 10.0,
        threads: 2,
        acks: false,
        rooms: 1,
        sse: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--no-join" {
            o.room = None;
            continue;
        }
        if flag == "--acks" {
            o.acks = true;
            continue;
        }
        if flag == "--sse" && mode == Mode::Idle {
            o.sse = true;
            continue;
        }
        let Some(value) = args.next() else {
            die(&format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--url" => o.url = value,
            "--clients" => o.clients = number(&flag, &value),
            "--publishers" => o.publishers = number(&flag, &value),
            "--rate" => o.rate = number(&flag, &value),
            "--secs" => o.secs = number(&flag, &value),
            "--room" => o.room = Some(value),
            "--pid" => o.pid = Some(value).filter(|v| !v.trim().is_empty()),
            "--hold" => o.hold = number(&flag, &value),
            "--connect-at-once" => o.connect_at_once = number(&flag, &value),
            "--drain" => o.drain = number(&flag, &value),
            "--threads" => o.threads = number(&flag, &value),
            "--rooms" => o.rooms = number(&flag, &value),
            _ => die(&format!("unknown option {flag}\n{USAGE}")),
        }
    }
    o.url = o.url.trim_end_matches('/').to_string();
    if o.clients == 0 || o.connect_at_once == 0 || o.threads == 0 {
        die("--clients, --connect-at-once and --threads must be at least 1");
    }
    if !(o.hold >= 0.0 && o.hold.is_finite() && o.drain >= 0.0 && o.drain.is_finite()) {
        die("--hold and --drain must be 0 or more seconds");
    }
    if let Some(room) = &o.room {
        if let Some(problem) = tidings::protocol::chat::room_name_problem(room) {
            die(&problem);
        }
    }
    if o.sse && (o.room.is_none() || o.rooms != 1) {
        die("idle --sse subscribes to one room: no --no-join or --rooms");
    }
    if mode != Mode::Idle {
        if o.room.is_none() {
            die("--no-join is for idle only");
        }
        if o.publishers == 0 || !(o.rate > 0.0 && o.rate.is_finite()) {
            die("--publishers and --rate must be more than 0");
        }
        if !(o.secs > 0.0 && o.secs.is_finite()) {
            die("--secs must be more than 0");
        }
        if mode == Mode::Ws && o.publishers > o.clients {
            die("--publishers must be at most --clients (in ws mode the publishers are among the clients)");
        }
        let each = o.rate / o.publishers as f64;
        if each > 8.0 {
            eprintln!(
                "chat bench: each publisher sends {each:.1} msgs/s; the server refuses more than \
                 TIDINGS_CHAT_RATE (default 10) a second per user: add publishers or raise it"
            );
        }
    }
    Some(o)
}

fn main() {
    let Some(opts) = parse_args() else {
        println!("{USAGE}");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        match opts.mode {
            Mode::Ws | Mode::Sse | Mode::Events => load(&opts).await,
            Mode::Idle => idle(&opts).await,
        }
    });
}

// ---------------------------------------------------------------------------------------
// Accounts and connections

/// The session cookie's value from a signup or login answer.
fn session_cookie(res: &reqwest::Response) -> Option<String> {
    let prefix = format!("{SESSION_COOKIE}=");
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(prefix.as_str())
                .map(|rest| rest.split(';').next().unwrap_or("").to_string())
        })
        .filter(|v| !v.is_empty())
}

/// Signs `username` up (or in, when it exists already); returns the session cookie's value.
async fn sign_in(http: &reqwest::Client, base: &str, username: &str) -> Result<String, String> {
    let creds = json!({"username": username, "password": PASSWORD});
    for path in ["signup", "login"] {
        // A 503 with Retry-After (every password hasher busy) is tried again after the time it
        // names, as a well-behaved client does, up to a minute.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let res = loop {
            let res = http
                .post(format!("{base}/api/auth/{path}"))
                .json(&creds)
                .send()
                .await
                .map_err(|e| format!("{path} as {username}: {e}"))?;
            let wait = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            match wait {
                Some(secs)
                    if res.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
                _ => break res,
            }
        };
        let status = res.status();
        if status.is_success() {
            return session_cookie(&res)
                .ok_or_else(|| format!("{path} as {username}: no {SESSION_COOKIE} cookie"));
        }
        if !(path == "signup" && status == reqwest::StatusCode::CONFLICT) {
            let body = res.text().await.unwrap_or_default();
            return Err(format!("{path} as {username}: {status} {body}"));
        }
    }
    Err(format!("could not sign in as {username}"))
}

/// Cookies for `names`, in order, a few sign-ins at a time (each hashes a password).
async fn sign_in_all(http: &reqwest::Client, base: &str, names: Vec<String>) -> Vec<String> {
    let results: Vec<Result<String, String>> = futures::stream::iter(names)
        .map(|name| {
            let http = http.clone();
            let base = base.to_string();
            async move { sign_in(&http, &base, &name).await }
        })
        .buffered(SIGN_INS_AT_ONCE)
        .collect()
        .await;
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| die(&e)))
        .collect()
}

/// `http://host:port` → `ws://host:port/ws`.
/// The source address of connection `index` to a loopback server: spread over 127.0.0.0/8
/// (127.1.0.1, 127.1.0.2, …), so no one source address runs out of ports however many
/// connections are open or lingering in TIME_WAIT.
fn source_address(index: usize) -> std::net::SocketAddr {
    let n = (index as u32 % 0x00fe_ffff) + 1;
    let ip = std::net::Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
    std::net::SocketAddr::from((ip, 0))
}

/// A TCP connection to `host:port`, from [`source_address`]`(index)` when the server is on
/// IPv4 loopback.
async fn connect_tcp(host: &str, port: u16, index: usize) -> Result<TcpStream, String> {
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    if !(addr.is_ipv4() && addr.ip().is_loopback()) {
        return TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"));
    }
    let from = source_address(index);
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("a socket: {e}"))?;
    socket
        .bind(from)
        .map_err(|e| format!("binding {from}: {e}"))?;
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr} from {from}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// WebSocket `index` (which picks its source address) to `url`, signed in with `cookie`.
async fn open_ws(url: &str, cookie: &str, read_buffer: usize, index: usize) -> Result<Ws, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("bad WebSocket URL {url}: {e}"))?;
    let value = HeaderValue::from_str(&format!("{SESSION_COOKIE}={cookie}"))
        .map_err(|e| format!("bad cookie: {e}"))?;
    request.headers_mut().insert(header::COOKIE, value);
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    let uri = request.uri().clone();
    let (ws, _) = match (uri.scheme_str(), uri.host()) {
        (Some("ws"), Some(host)) => {
            let port = uri.port_u16().unwrap_or(80);
            let tcp = connect_tcp(host, port, index).await?;
            client_async_with_config(request, MaybeTlsStream::Plain(tcp), Some(config))
                .await
                .map_err(|e| format!("connecting to {url}: {e}"))?
        }
        _ => connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?,
    };
    Ok(ws)
}

fn describe_close(frame: Option<CloseFrame>) -> String {
    match frame {
        Some(f) => format!(
            "closed by the server: {} {}",
            u16::from(f.code),
            f.reason.as_str()
        ),
        None => "closed by the server".to_string(),
    }
}

/// Sends `chat-join` and waits for `chat-joined` (ignoring whatever else arrives).
async fn join(ws: &mut Ws, room: &str) -> Result<(), String> {
    let join = ClientMsg::ChatJoin {
        room: room.to_string(),
        last_message_id: None,
    };
    let frame = serde_json::to_string(&join).expect("serializable");
    ws.send(Message::text(frame))
        .await
        .map_err(|e| format!("sending chat-join: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let s = t.as_str();
                if s.starts_with(KIND_JOINED) {
                    return Ok(());
                }
                if s.starts_with(KIND_ERROR) {
                    return Err(format!("chat-join refused: {s}"));
                }
            }
            Some(Ok(Message::Close(f))) => {
                return Err(format!("while joining: {}", describe_close(f)))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("while joining: {e}")),
            None => return Err("the connection ended while joining".to_string()),
        }
    }
}

/// Reads the server's `/proc/PID/status` field `key` (kB).
/// `key` of `/proc/<pid>/status` in kB, summed over a comma-separated list of pids (several
/// instances).
fn status_kb(pids: &str, key: &str) -> Option<u64> {
    pids.split(',')
        .map(|pid| common::status_kb(pid.trim(), key))
        .sum()
}

/// CPU seconds (user + system) used so far, summed over a comma-separated list of pids;
/// `self` is this process.
fn cpu_secs(pids: &str) -> Option<f64> {
    pids.split(',')
        .map(|pid| common::cpu_secs(pid.trim()))
        .sum()
}

// ---------------------------------------------------------------------------------------
// Measuring

/// What one client shares with the driver while it runs (one cache line each).
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    /// Benchmark messages received.
    received: AtomicU64,
    /// When the latest of them arrived, µs since the epoch.
    last_at: AtomicU64,
    /// Publishers: messages sent.
    sent: AtomicU64,
    /// `chat-error` replies (`Slow down.`, …).
    errors: AtomicU64,
    /// The connection ended (or never opened) before the driver stopped it.
    ended: AtomicBool,
}

/// Sub-buckets per power of two: values are kept to within 1/64 (1.6 %).
const SUB_BITS: u32 = 6;
/// Buckets for values up to `u32::MAX` µs (71 minutes).
const BUCKETS: usize = (32 - SUB_BITS as usize + 1) << SUB_BITS;

fn bucket(v: u64) -> usize {
    if v < (1 << SUB_BITS) {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    (((msb - SUB_BITS + 1) as usize) << SUB_BITS) + ((v >> shift) as usize - (1 << SUB_BITS))
}

/// The largest value that falls in bucket `b`.
fn bucket_top(b: usize) -> u64 {
    if b < (1 << SUB_BITS) {
        return b as u64;
    }
    let shift = (b >> SUB_BITS) as u32 - 1;
    let low = (((1 << SUB_BITS) + (b & ((1 << SUB_BITS) - 1))) as u64) << shift;
    low + (1u64 << shift) - 1
}

/// Latencies in µs, log-bucketed.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn record(&mut self, us: u64) {
        let v = us.min(u32::MAX as u64);
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile in µs (the top of its bucket, at most the maximum seen).
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_top(b).min(self.max);
            }
        }
        self.max
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `(id, sent at)` of a benchmark `chat-message` (a WebSocket frame or an SSE data line).
/// A chat message's room slot (its topic's number on a multi-topic stream, else 0), id and
/// send time.
fn scan(s: &str) -> Option<(usize, u64, u64)> {
    const TOPIC: &str = r#"{"topic":""#;
    const TYPE: &str = r#""type":"chat-message","#;
    let (slot, rest) = match s.strip_prefix(TOPIC) {
        Some(tagged) => {
            let end = tagged.find('"')?;
            let slot = tagged[..end]
                .rsplit('-')
                .next()
                .and_then(|k| k.parse::<usize>().ok())
                .unwrap_or(0)
                % TOPICS;
            let at = tagged.find(TYPE)?;
            (slot, &tagged[at + TYPE.len()..])
        }
        None => (0, s.strip_prefix(KIND_MESSAGE)?),
    };
    let at = rest.find(MARK)?;
    let sent = leading_number(&rest[at + MARK.len()..])?;
    let id = rest
        .find(ID)
        .and_then(|i| leading_number(&rest[i + ID.len()..]))
        .unwrap_or(0);
    Some((slot, id, sent))
}

fn leading_number(s: &str) -> Option<u64> {
    let mut n: u64 = 0;
    let mut digits = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.wrapping_mul(10).wrapping_add((b - b'0') as u64);
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// What one client saw.
struct Tally {
    latency: Histogram,
    received: u64,
    /// The newest id per room (one room, or [`TOPICS`] on a multi-topic stream).
    last_id: [u64; TOPICS],
    /// Ids at or below one already seen (duplicates or reordering).
    out_of_order: u64,
    /// `chat-gap` notices (messages no longer kept, so never delivered).
    gaps: u64,
    errors: u64,
    first_error: Option<String>,
    /// Why the connection ended before the driver stopped it.
    ended: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Histogram::new(),
            received: 0,
            last_id: [0; TOPICS],
            out_of_order: 0,
            gaps: 0,
            errors: 0,
            first_error: None,
            ended: None,
        }
    }

    /// One text frame (or SSE data line). Messages sent before `since` (an earlier run's,
    /// replayed as history) are not counted.
    fn frame(&mut self, s: &str, since: u64, slot: &Slot) {
        if let Some((room, id, sent)) = scan(s) {
            if sent < since {
                return;
            }
            let now = now_us();
            self.latency.record(now.saturating_sub(sent));
            if id <= self.last_id[room] {
                self.out_of_order += 1;
            } else {
                self.last_id[room] = id;
            }
            self.received += 1;
            slot.received.store(self.received, Relaxed);
            slot.last_at.store(now, Relaxed);
        } else if s.starts_with(KIND_ERROR) {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(s.to_string());
            }
            slot.errors.fetch_add(1, Relaxed);
        } else if s.starts_with(KIND_GAP) {
            self.gaps += 1;
        }
    }

    /// The complete lines of an SSE stream in `buf`; returns the bytes consumed.
    fn sse_lines(&mut self, buf: &[u8], since: u64, slot: &Slot) -> usize {
        let mut start = 0;
        while let Some(n) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + n];
            if let Some(data) = line.strip_prefix(b"data: ") {
                if let Ok(s) = std::str::from_utf8(data) {
                    self.frame(s, since, slot);
                }
            } else if line == &b"event: gap"[..] {
                self.gaps += 1;
            }
            start += n + 1;
        }
        start
    }

    fn end(&mut self, why: String, slot: &Slot) {
        slot.ended.store(true, Relaxed);
        self.ended = Some(why);
    }
}

// ---------------------------------------------------------------------------------------
// Clients

/// A client's report once it is connected (and joined), or why it is not.
struct Ready {
    /// Publishers hand their sending half to the driver: `(slot, sink)`.
    sink: Option<(usize, WsSink)>,
    error: Option<String>,
}

/// What every client task gets from the driver.
struct Ctx {
    index: usize,
    since: u64,
    slots: Arc<Vec<Slot>>,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Ready>,
    stop: oneshot::Receiver<()>,
}

/// A WebSocket client: connects and joins (a few at a time), then counts until stopped.
async fn ws_client(
    ctx: Ctx,
    url: Arc<str>,
    cookie: Arc<str>,
    room: Arc<str>,
    publisher: bool,
) -> Tally {
    let Ctx {
        index,
        since,
        slots,
        gate,
        ready,
        stop,
    } = ctx;
    let slot = &slots[index];
    let mut tally = Tally::new();
    let permit = gate.acquire_owned().await.expect("the gate stays open");
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut ws = open_ws(&url, &cookie, READ_BUFFER_LOAD, index).await?;
        join(&mut ws, &room).await?;
        Ok::<Ws, String>(ws)
    })
    .await
    .unwrap_or_else(|_| Err("timed out connecting and joining".to_string()));
    drop(permit);
    let ws = match opened {
        Ok(ws) => ws,
        Err(e) => {
            tally.end(e.clone(), slot);
            let _ = ready.send(Ready {
                sink: None,
                error: Some(e),
            });
            return tally;
        }
    };
    let (sink, mut stream) = ws.split();
    let _kept: Option<WsSink> = if publisher {
        let _ = ready.send(Ready {
            sink: Some((index, sink)),
            error: None,
        });
        None
    } else {
        let _ = ready.send(Ready {
            sink: None,
            error: None,
        });
        Some(sink)
    };
    drop(ready);
    read_ws(&mut stream, &mut tally, since, slot, stop).await;
    tally
}

async fn read_ws(
    stream: &mut SplitStream<Ws>,
    tally: &mut Tally,
    since: u64,
    slot: &Slot,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => None,
            m = stream.next() => Some(m),
        };
        let Some(next) = next else { return };
        match next {
            Some(Ok(Message::Text(t))) => tally.frame(t.as_str(), since, slot),
            Some(Ok(Message::Close(f))) => return tally.end(describe_close(f), slot),
            Some(Ok(_)) => {}
            Some(Err(e)) => return tally.end(e.to_string(), slot),
            None => return tally.end("the connection ended".to_string(), slot),
        }
    }
}

/// An SSE subscriber of the room: counts `chat-message` data lines until stopped.
async fn sse_client(ctx: Ctx, http: reqwest::Client, url: Arc<str>, cookie: Arc<str>) -> Tally {
    let Ctx {
        index,
        since,
        slots,
        gate,
        ready,
        mut stop,
    } = ctx;
    let slot = &slots[index];
    let mut tally = Tally::new();
    let permit = gate.acquire_owned().await.expect("the gate stays open");
    let request = http
        .get(&*url)
        .header(
            reqwest::header::COOKIE,
            format!("{SESSION_COOKIE}={cookie}"),
        )
        // What a browser's EventSource sends.
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send();
    let opened = match tokio::time::timeout(CONNECT_TIMEOUT, request).await {
        Ok(Ok(res)) if res.status() == reqwest::StatusCode::OK => Ok(res),
        Ok(Ok(res)) => Err(format!("GET {url}: {}", res.status())),
        Ok(Err(e)) => Err(format!("GET {url}: {e}")),
        Err(_) => Err(format!("GET {url}: timed out")),
    };
    drop(permit);
    let res = match opened {
        Ok(res) => res,
        Err(e) => {
            tally.end(e.clone(), slot);
            let _ = ready.send(Ready {
                sink: None,
                error: Some(e),
            });
            return tally;
        }
    };
    // The server subscribed before it answered: nothing published from now on is missed.
    let _ = ready.send(Ready {
        sink: None,
        error: None,
    });
    drop(ready);
    let mut body = Box::pin(res.bytes_stream());
    let mut carry: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => None,
            c = body.next() => Some(c),
        };
        let Some(next) = next else { break };
        match next {
            Some(Ok(bytes)) => {
                carry.extend_from_slice(&bytes);
                let used = tally.sse_lines(&carry, since, slot);
                carry.drain(..used);
            }
            Some(Err(e)) => {
                tally.end(format!("the event stream broke: {e}"), slot);
                break;
            }
            None => {
                tally.end("the event stream ended".to_string(), slot);
                break;
            }
        }
    }
    tally
}

/// When and how fast one publisher sends.
struct Plan {
    /// This publisher's number (0..publishers), which staggers it in the period.
    number: usize,
    publishers: usize,
    rate: f64,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
    /// Send a `clientId` with each message.
    acks: bool,
}

/// Sends `rate / publishers` messages a second from `start` to `end`; `Some(why)` if sending
/// failed.
async fn publish(
    mut sink: WsSink,
    plan: Plan,
    slots: Arc<Vec<Slot>>,
    index: usize,
) -> Option<String> {
    let slot = &slots[index];
    let period = Duration::from_secs_f64(plan.publishers as f64 / plan.rate);
    let offset = period.mul_f64(plan.number as f64 / plan.publishers as f64);
    let mut tick = tokio::time::interval_at(plan.start + offset, period);
    // Never catch up in a burst: that could cross the per-user limit.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        if tokio::time::Instant::now() >= plan.end {
            return None;
        }
        let text = format!("t={};p={};n={sent}", now_us(), plan.number);
        let client_id = plan.acks.then(|| format!("p{}-{sent}", plan.number));
        let frame = serde_json::to_string(&ClientMsg::ChatMessage {
            text,
            room: None,
            client_id,
        })
        .expect("serializable");
        if let Err(e) = sink.send(Message::text(frame)).await {
            return Some(format!("sending failed: {e}"));
        }
        sent += 1;
        slot.sent.store(sent, Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// ws and sse

async fn load(o: &Opts) {
    let sse = matches!(o.mode, Mode::Sse | Mode::Events);
    let topics = o.mode == Mode::Events;
    let room_name = o.room.clone().expect("checked: loaded runs join a room");
    let since = now_us();
    let http = reqwest::Client::new();

    let t = Instant::now();
    // Accounts are made on the first instance (they share one database).
    let first = o.url.split(',').next().unwrap_or_default().to_string();
    let receiver = sign_in(&http, &first, RECEIVER)
        .await
        .unwrap_or_else(|e| die(&e));
    let names: Vec<String> = (0..o.publishers)
        .map(|i| format!("chat_pub{i:04}"))
        .collect();
    let publisher_cookies = sign_in_all(&http, &first, names).await;
    eprintln!(
        "  {} accounts ready in {:.1} s",
        o.publishers + 1,
        t.elapsed().as_secs_f64()
    );

    // Slots: the measured clients first (WebSocket clients, the first P of them publishing;
    // or SSE subscribers), then in SSE mode the publishers' WebSockets.
    let measured = o.clients;
    let total = if sse {
        o.clients + o.publishers
    } else {
        o.clients
    };
    let publisher_slots = if sse {
        measured..total
    } else {
        0..o.publishers
    };
    let slots: Arc<Vec<Slot>> = Arc::new((0..total).map(|_| Slot::default()).collect());
    let gate = Arc::new(Semaphore::new(o.connect_at_once));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Ready>();
    // With several instances (`--url A,B`), client i connects to instance i mod n, so the
    // publishers and the receivers of each are spread over all of them.
    let bases: Vec<&str> = o
        .url
        .split(',')
        .map(|u| u.trim().trim_end_matches('/'))
        .collect();
    let ws: Vec<Arc<str>> = bases.iter().map(|b| Arc::from(common::ws_url(b))).collect();
    let events: Vec<Arc<str>> = bases
        .iter()
        .map(|b| {
            if topics {
                let query: Vec<String> = (0..TOPICS)
                    .map(|k| format!("topic=room:{room_name}-{k}"))
                    .collect();
                Arc::from(format!("{b}/api/events?{}", query.join("&")))
            } else {
                Arc::from(format!("{b}/api/rooms/{room_name}/events"))
            }
        })
        .collect();
    // In the events mode the publishers take turns over the rooms.
    let rooms: Vec<Arc<str>> = (0..TOPICS)
        .map(|k| Arc::from(format!("{room_name}-{k}")))
        .collect();
    let room: Arc<str> = room_name.clone().into();
    let receiver: Arc<str> = receiver.into();
    let publisher_cookies: Vec<Arc<str>> = publisher_cookies
        .into_iter()
        .map(Arc::<str>::from)
        .collect();
    let sse_http = reqwest::Client::new();

    let t = Instant::now();
    let mut stops = Vec::with_capacity(total);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let (stop_tx, stop_rx) = oneshot::channel();
        stops.push(stop_tx);
        let ctx = Ctx {
            index: i,
            since,
            slots: slots.clone(),
            gate: gate.clone(),
            ready: ready_tx.clone(),
            stop: stop_rx,
        };
        let task = if sse && i < measured {
            tokio::spawn(sse_client(
                ctx,
                sse_http.clone(),
                events[i % events.len()].clone(),
                receiver.clone(),
            ))
        } else {
            let publisher = publisher_slots.contains(&i);
            let cookie = if publisher {
                publisher_cookies[i - publisher_slots.start].clone()
            } else {
                receiver.clone()
            };
            let room = if topics && publisher {
                rooms[(i - publisher_slots.start) % TOPICS].clone()
            } else {
                room.clone()
            };
            tokio::spawn(ws_client(
                ctx,
                ws[i % ws.len()].clone(),
                cookie,
                room,
                publisher,
            ))
        };
        tasks.push(task);
    }
    drop(ready_tx);
    let mut sinks: Vec<(usize, WsSink)> = Vec::with_capacity(o.publishers);
    let mut failed = 0usize;
    let mut first_failure: Option<String> = None;
    for _ in 0..total {
        let r = ready_rx.recv().await.expect("every client reports once");
        if let Some(e) = r.error {
            failed += 1;
            if first_failure.is_none() {
                first_failure = Some(e);
            }
        }
        if let Some(s) = r.sink {
            sinks.push(s);
        }
    }
    if failed > 0 {
        die(&format!(
            "{failed} of {total} connections failed; the first: {}",
            first_failure.unwrap_or_default()
        ));
    }
    eprintln!(
        "  {total} connections open in room {room_name} in {:.1} s; publishing for {} s",
        t.elapsed().as_secs_f64(),
        o.secs
    );
    sinks.sort_by_key(|s| s.0);

    // Publish. The server's peak RSS is read for the fan-out itself: its high-water mark so
    // far (sign-ins, whose Argon2 buffers are freed after, and connections opening) is kept for
    // the report, then reset to what it holds now (`clear_refs` 5, Linux 4.0 and later).
    let setup_peak = o.pid.as_deref().and_then(|p| status_kb(p, "VmHWM"));
    let peak_reset = o
        .pid
        .as_deref()
        .is_some_and(|p| std::fs::write(format!("/proc/{p}/clear_refs"), "5").is_ok());
    let server_cpu0 = o.pid.as_deref().and_then(cpu_secs);
    let own_cpu0 = cpu_secs("self");
    let wall0 = Instant::now();
    let lead = Duration::from_millis(200);
    let start = tokio::time::Instant::now() + lead;
    let start_us = now_us() + lead.as_micros() as u64;
    let end = start + Duration::from_secs_f64(o.secs);
    let publishers: Vec<_> = sinks
        .into_iter()
        .enumerate()
        .map(|(number, (index, sink))| {
            let plan = Plan {
                number,
                publishers: o.publishers,
                rate: o.rate,
                start,
                end,
                acks: o.acks,
            };
            tokio::spawn(publish(sink, plan, slots.clone(), index))
        })
        .collect();
    let mut send_failures = 0usize;
    let mut first_send_failure: Option<String> = None;
    for p in publishers {
        if let Some(e) = p.await.expect("a publisher task") {
            send_failures += 1;
            if first_send_failure.is_none() {
                first_send_failure = Some(e);
            }
        }
    }

    // Drain: until every live client has every message, or nothing new for `--drain` s.
    let sum = |range: std::ops::Range<usize>, field: fn(&Slot) -> u64| -> u64 {
        slots[range].iter().map(field).sum()
    };
    let quiet = Duration::from_secs_f64(o.drain);
    let mut seen = u64::MAX;
    let mut changed_at = Instant::now();
    let drained = loop {
        let sent = sum(publisher_slots.clone(), |s| s.sent.load(Relaxed));
        let refused = sum(publisher_slots.clone(), |s| s.errors.load(Relaxed));
        let expected = sent.saturating_sub(refused);
        let mut received = 0u64;
        let mut behind = 0usize;
        for s in &slots[..measured] {
            let r = s.received.load(Relaxed);
            received += r;
            if r < expected && !s.ended.load(Relaxed) {
                behind += 1;
            }
        }
        if behind == 0 {
            break true;
        }
        if received != seen {
            seen = received;
            changed_at = Instant::now();
        } else if changed_at.elapsed() >= quiet {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall = wall0.elapsed().as_secs_f64().max(1e-3);
    let server_cpu = match (server_cpu0, o.pid.as_deref().and_then(cpu_secs)) {
        (Some(a), Some(b)) => Some((b - a) / wall * 100.0),
        _ => None,
    };
    let own_cpu = match (own_cpu0, cpu_secs("self")) {
        (Some(a), Some(b)) => Some((b - a) / wall * 100.0),
        _ => None,
    };

    for s in stops {
        let _ = s.send(());
    }
    let mut tallies = Vec::with_capacity(total);
    for t in tasks {
        tallies.push(t.await.expect("a client task"));
    }

    // Figures.
    let sent = sum(publisher_slots.clone(), |s| s.sent.load(Relaxed));
    let refused: u64 = tallies[publisher_slots.clone()]
        .iter()
        .map(|t| t.errors)
        .sum();
    let first_refusal = tallies[publisher_slots.clone()]
        .iter()
        .find_map(|t| t.first_error.clone());
    let expected = sent.saturating_sub(refused);
    let m = &tallies[..measured];
    let delivered: u64 = m.iter().map(|t| t.received).sum();
    let least = m.iter().map(|t| t.received).min().unwrap_or(0);
    let most = m.iter().map(|t| t.received).max().unwrap_or(0);
    let out_of_order: u64 = m.iter().map(|t| t.out_of_order).sum();
    let gaps: u64 = m.iter().map(|t| t.gaps).sum();
    let lost: Vec<&str> = m.iter().filter_map(|t| t.ended.as_deref()).collect();
    let publishers_lost = tallies[publisher_slots.clone()]
        .iter()
        .filter(|t| t.ended.is_some())
        .count();
    let mut latency = Histogram::new();
    for t in m {
        latency.merge(&t.latency);
    }
    let last = slots[..measured]
        .iter()
        .map(|s| s.last_at.load(Relaxed))
        .max()
        .unwrap_or(0);
    let window = (last.saturating_sub(start_us) as f64 / 1e6).max(1e-3);
    let per_s = delivered as f64 / window;
    let all = expected > 0
        && least == expected
        && most == expected
        && out_of_order == 0
        && gaps == 0
        && lost.is_empty();
    let yes = |b: bool| if b { "yes" } else { "no" };

    let mode = match o.mode {
        Mode::Events => "events",
        _ if sse => "sse",
        _ => "ws",
    };
    if o.mode == Mode::Events {
        println!(
            "chat events: {} subscribers of one /api/events stream each over {TOPICS} rooms ({room_name}-0..{}), {} WebSocket publishers, {:.0} msgs/s offered for {} s",
            o.clients, TOPICS - 1, o.publishers, o.rate, o.secs
        );
    } else if sse {
        println!(
            "chat sse: {} SSE subscribers of room {room_name}, {} WebSocket publishers, {:.0} msgs/s offered for {} s",
            o.clients, o.publishers, o.rate, o.secs
        );
    } else {
        println!(
            "chat ws: {} WebSocket clients in room {room_name} ({} of them publishing), {:.0} msgs/s offered for {} s",
            o.clients, o.publishers, o.rate, o.secs
        );
    }
    println!(
        "  published {sent} ({:.0} msgs/s), refused {refused}{}, send failures {send_failures}{}",
        sent as f64 / o.secs,
        first_refusal
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        first_send_failure
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "  delivered {delivered} of {} (per client min {least} max {most}); all delivered: {}{}",
        expected * measured as u64,
        yes(all),
        if drained {
            String::new()
        } else {
            format!(" (gave up after {} s with nothing new)", o.drain)
        }
    );
    println!(
        "  deliveries/s {per_s:.0} (in {window:.3} s)   latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(latency.quantile(0.50)),
        ms(latency.quantile(0.99)),
        ms(latency.max)
    );
    println!(
        "  out of order {out_of_order}, gaps {gaps}, connections lost {}{}, publishers' connections lost {publishers_lost}",
        lost.len(),
        lost.first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let mut machine = Vec::new();
    if let Some(c) = server_cpu {
        machine.push(format!("server CPU {c:.0}% of a core"));
    }
    if let Some(c) = own_cpu {
        machine.push(format!("this load generator {c:.0}%"));
    }
    // Megabytes with one decimal, or `na`.
    let mb =
        |kb: Option<u64>| kb.map_or("na".to_string(), |kb| format!("{:.1}", kb as f64 / 1024.0));
    let peak = o.pid.as_deref().and_then(|p| status_kb(p, "VmHWM"));
    let setup_peak = setup_peak.filter(|_| peak_reset);
    if peak.is_some() {
        machine.push(if peak_reset {
            format!(
                "server peak RSS {} MB while publishing ({} MB before, while signing in and connecting)",
                mb(peak),
                mb(setup_peak)
            )
        } else {
            format!("server peak RSS {} MB since it started", mb(peak))
        });
    }
    // RSS counts the pages of the binary's code read in from its file (17.5 MB of a fresh
    // Tidings, whose binary is 60 MB; under 1 MB of the reference's): what the server
    // allocated is its anonymous part, read here, with the clients still connected.
    let anon = o.pid.as_deref().and_then(|p| status_kb(p, "RssAnon"));
    if anon.is_some() {
        machine.push(format!("anonymous {} MB now", mb(anon)));
    }
    if !machine.is_empty() {
        println!("  {}", machine.join(", "));
    }
    println!(
        "result mode={mode} instances={} clients={} publishers={} rate={:.0} secs={} expected={expected} delivered={delivered} min={least} per_s={per_s:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} all={} rss_mb={} setup_rss_mb={} anon_mb={} cpu={}",
        o.url.split(',').count(),
        o.clients,
        o.publishers,
        o.rate,
        o.secs,
        ms(latency.quantile(0.50)),
        ms(latency.quantile(0.99)),
        ms(latency.max),
        yes(all),
        mb(peak),
        mb(setup_peak),
        mb(anon),
        server_cpu.map_or("na".to_string(), |c| format!("{c:.0}"))
    );
}

// ---------------------------------------------------------------------------------------
// idle

/// Opens an idle connection with `open` (a few at a time, within [`CONNECT_TIMEOUT`]) and
/// tells the driver how it went; `None`, with the slot marked ended, if it failed.
async fn open_idle<T>(
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Ready>,
    slot: &Slot,
    open: impl std::future::Future<Output = Result<T, String>>,
) -> Option<T> {
    let permit = gate.acquire_owned().await.expect("the gate stays open");
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .unwrap_or_else(|_| Err("timed out connecting".to_string()));
    drop(permit);
    let error = opened.as_ref().err().cloned();
    if error.is_some() {
        slot.ended.store(true, Relaxed);
    }
    let _ = ready.send(Ready { sink: None, error });
    opened.ok()
}

/// An idle WebSocket: connects (and joins), then only answers pings until stopped.
async fn idle_client(
    ctx: Ctx,
    url: Arc<str>,
    cookie: Arc<str>,
    room: Option<Arc<str>>,
    rooms: usize,
) {
    let Ctx {
        index,
        slots,
        gate,
        ready,
        mut stop,
        ..
    } = ctx;
    let slot = &slots[index];
    let opened = open_idle(gate, ready, slot, async {
        let mut ws = open_ws(&url, &cookie, READ_BUFFER_IDLE, index).await?;
        if let Some(room) = room.as_deref() {
            join(&mut ws, room).await?;
            for k in 1..rooms {
                join(&mut ws, &format!("{room}-{k}")).await?;
            }
        }
        Ok::<Ws, String>(ws)
    });
    let Some(mut ws) = opened.await else { return };
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => None,
            m = ws.next() => Some(m),
        };
        match next {
            None => return,
            // Reading is what answers the server's pings.
            Some(Some(Ok(Message::Close(_)))) | Some(Some(Err(_))) | Some(None) => {
                slot.ended.store(true, Relaxed);
                return;
            }
            Some(Some(Ok(_))) => {}
        }
    }
}

/// An idle SSE stream of `room`: a plain HTTP/1.1 request on its own connection (from
/// [`source_address`]), then reads (and drops) whatever comes until stopped.
async fn idle_sse_client(ctx: Ctx, base: Arc<str>, cookie: Arc<str>, room: Arc<str>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ctx {
        index,
        slots,
        gate,
        ready,
        mut stop,
        ..
    } = ctx;
    let slot = &slots[index];
    let opened = open_idle(gate, ready, slot, async {
        let url = reqwest::Url::parse(&base).map_err(|e| format!("bad URL {base}: {e}"))?;
        let host = url.host_str().unwrap_or("127.0.0.1").to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut tcp = connect_tcp(&host, port, index).await?;
        let request = format!(
            "GET /api/rooms/{room}/events HTTP/1.1\r\nHost: {host}:{port}\r\n\
             Cookie: {SESSION_COOKIE}={cookie}\r\nAccept: text/event-stream\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        // The status line and headers (they fit one small read on loopback; read on until
        // the blank line if not).
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            if n == 0 || head.len() > 16 * 1024 {
                return Err("the answer ended before its headers did".to_string());
            }
            head.extend_from_slice(&buf[..n]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(format!("GET events: {}", String::from_utf8_lossy(line)));
        }
        Ok::<TcpStream, String>(tcp)
    });
    let Some(mut tcp) = opened.await else { return };
    let mut buf = [0u8; 256];
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => return,
            n = tcp.read(&mut buf) => n,
        };
        if !matches!(next, Ok(n) if n > 0) {
            slot.ended.store(true, Relaxed);
            return;
        }
    }
}

async fn idle(o: &Opts) {
    let n = o.clients;
    let http = reqwest::Client::new();
    let cookie: Arc<str> = sign_in(&http, &o.url, IDLE_USER)
        .await
        .unwrap_or_else(|e| die(&e))
        .into();
    let url: Arc<str> = common::ws_url(&o.url).into();
    let room: Option<Arc<str>> = o.room.clone().map(Arc::<str>::from);
    let rss = || o.pid.as_deref().and_then(|p| status_kb(p, "VmRSS"));
    let before = rss();

    let slots: Arc<Vec<Slot>> = Arc::new((0..n).map(|_| Slot::default()).collect());
    let gate = Arc::new(Semaphore::new(o.connect_at_once));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Ready>();
    let t = Instant::now();
    let mut stops = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (stop_tx, stop_rx) = oneshot::channel();
        stops.push(stop_tx);
        let ctx = Ctx {
            index: i,
            since: 0,
            slots: slots.clone(),
            gate: gate.clone(),
            ready: ready_tx.clone(),
            stop: stop_rx,
        };
        tasks.push(match (&room, o.sse) {
            (Some(room), true) => tokio::spawn(idle_sse_client(
                ctx,
                o.url.as_str().into(),
                cookie.clone(),
                room.clone(),
            )),
            _ => tokio::spawn(idle_client(
                ctx,
                url.clone(),
                cookie.clone(),
                room.clone(),
                o.rooms,
            )),
        });
    }
    drop(ready_tx);
    let mut opened = 0usize;
    let mut first_failure: Option<String> = None;
    for _ in 0..n {
        let r = ready_rx.recv().await.expect("every socket reports once");
        match r.error {
            None => opened += 1,
            Some(e) => {
                if first_failure.is_none() {
                    first_failure = Some(e);
                }
            }
        }
    }
    let took = t.elapsed().as_secs_f64();
    eprintln!(
        "  {opened} of {n} {} open in {took:.1} s; holding them {} s",
        if o.sse { "SSE streams" } else { "WebSockets" },
        o.hold
    );
    // Let the last joins' replies go out before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_them = rss();
    tokio::time::sleep(Duration::from_secs_f64(o.hold)).await;
    let after_hold = rss();
    let open_now = slots.iter().filter(|s| !s.ended.load(Relaxed)).count();
    let held = open_now == n;

    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        t.await.expect("an idle socket task");
    }

    let (what, joined) = match (&o.room, o.sse) {
        (Some(r), true) => ("SSE streams", format!("of room {r}")),
        (Some(r), false) => ("WebSockets", format!("joined to room {r}")),
        (None, _) => ("WebSockets", "joined to no room".to_string()),
    };
    println!(
        "chat idle: {n} {what} {joined}, {opened} opened in {took:.1} s ({} at a time){}",
        o.connect_at_once,
        first_failure
            .map(|e| format!("; first failure: {e}"))
            .unwrap_or_default()
    );
    println!(
        "  open after {} s more: {open_now} of {n}; all held at once: {}",
        o.hold + 2.0,
        if held { "yes" } else { "no" }
    );
    let kb_each = match (before, with_them.max(after_hold)) {
        (Some(b), Some(a)) if opened > 0 => {
            let each = a.saturating_sub(b) as f64 / opened as f64;
            println!(
                "  server RSS {:.1} MB before, {:.1} MB with them open, {:.1} MB after holding: {each:.1} kB per connection",
                b as f64 / 1024.0,
                with_them.unwrap_or(0) as f64 / 1024.0,
                after_hold.unwrap_or(0) as f64 / 1024.0,
            );
            format!("{each:.1}")
        }
        _ => {
            println!("  server memory not measured (no --pid, or nothing opened)");
            "na".to_string()
        }
    };
    println!(
        "result mode={} clients={n} open={open_now} held={} kb_each={kb_each}",
        if o.sse { "idle-sse" } else { "idle" },
        if held { "yes" } else { "no" }
    );
}
