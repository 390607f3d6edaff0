//! `tidings tail`: follows any Server-Sent Events URL from the command line (a Tidings job,
//! room or notification stream, or another service's) — BoxLang's `http().sse(true)`, done
//! right.
//!
//! - Events are parsed by the `eventsource-stream` crate (the WHATWG rules) and printed one
//!   per line: `id event data`, or as JSON lines with `--json`. That crate drops a `retry`
//!   field sent in a block without data (as the `retry: 3000` every Tidings stream starts with is), so a
//!   small [`RetryScanner`] reads that one field from the raw bytes beside it.
//! - After a drop, or a clean end, it reconnects like a browser's EventSource: after the
//!   server's `retry` (else `--retry-ms`), growing with jittered exponential backoff while
//!   attempts keep failing, and with `Last-Event-ID`, so the server replays only what was
//!   missed.
//! - `--state-file` keeps the last id on disk (written atomically after each event), so a
//!   consumer that is restarted resumes where the previous one stopped.
//! - A 204 ends it (the stream is over). Errors are reported by HTTP status: a 4xx other than
//!   408 and 429 is final (exit code 1 with the server's sentence); 5xx, 408, 429 and network
//!   errors are retried, up to `--max-retries` attempts in a row.
//!
//! - Other servers' streams too: `--method POST --header 'Authorization: Bearer …' --data
//!   '{…}'` asks an AI provider for an answer (the request goes through
//!   [`crate::upstream::connect`], the client the server's relay uses: `Retry-After` on 429
//!   and 503, the server's sentence on a refusal); `--done-marker '[DONE]'` ends at that data
//!   instead of reconnecting; `--timeout` gives up on a connection silent that long;
//!   `--max-reconnects` bounds the reconnections in all.
//!
//! Tests: `tests/it/tail_cli.rs` runs the real binary against a job stream cut by a proxy,
//! and against the built-in model with a POST body and `--done-marker`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use eventsource_stream::Eventsource;
use futures::StreamExt;

use super::{backoff, http_client, retryable, sign_in};
use crate::upstream::{connect, Upstream, UpstreamError};

/// `tidings tail`: follow an SSE stream, resuming after drops and restarts.
#[derive(Clone, Debug, clap::Args)]
pub struct TailArgs {
    /// The stream: a full URL, or a path (like `/api/jobs/7/events`) on `--server`.
    pub url: String,
    /// The Tidings server that paths are relative to (and that `--username` signs in to).
    #[arg(long, env = "TIDINGS_SERVER", default_value = "http://127.0.0.1:3000")]
    pub server: String,
    /// Sign in as this user first (Tidings streams need a session); omit for open streams.
    #[arg(long, env = "TIDINGS_USERNAME")]
    pub username: Option<String>,
    /// The password (better given in the environment).
    #[arg(long, env = "TIDINGS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Keep the last event id in this file, and start after the id it holds.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Start after this event id (overrides the state file's).
    #[arg(long)]
    pub last_event_id: Option<String>,
    /// Print each event as a JSON object (`{"id","event","data"}`) per line.
    #[arg(long)]
    pub json: bool,
    /// The reconnection delay until the server sends `retry`.
    #[arg(long, default_value_t = 3000)]
    pub retry_ms: u64,
    /// The longest wait between attempts.
    #[arg(long, default_value_t = 60_000)]
    pub max_wait_ms: u64,
    /// Failed attempts in a row before giving up (0: never give up).
    #[arg(long, default_value_t = 0)]
    pub max_retries: u32,
    /// Stop after this many events (0: follow until the stream says it is over).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// The request's method (an AI provider's stream is a POST).
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header, `Name: value` (repeat for more). Give secrets through the
    /// environment, e.g. `--header "Authorization: Bearer $KEY"`: they are never printed.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The request's body (JSON unless a `Content-Type` header says otherwise); `@FILE` reads
    /// it from a file.
    #[arg(long)]
    pub data: Option<String>,
    /// Stop when an event's data is exactly this (OpenAI's streams end with `[DONE]`).
    #[arg(long)]
    pub done_marker: Option<String>,
    /// Give up on a connection that sends nothing (not even a keep-alive) for this many
    /// seconds; it is reconnected like a drop.
    #[arg(long, default_value_t = 90)]
    pub timeout: u64,
    /// Reconnections in all before giving up, whether or not they brought events
    /// (0: no limit; `--max-retries` counts failures in a row).
    #[arg(long, default_value_t = 0)]
    pub max_reconnects: u32,
}

/// The request `args` describe, checked.
fn request_of(args: &TailArgs, url: &str) -> anyhow::Result<Upstream> {
    let method = reqwest::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow::anyhow!("--method {:?} is not an HTTP method", args.method))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .filter(|(n, _)| !n.trim().is_empty())
            // Not the text itself: it may be a key.
            .context("each --header must be `Name: value` (the one given is not shown)")?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let body = match args.data.as_deref() {
        Some(d) if d.starts_with('@') => Some(
            std::fs::read_to_string(&d[1..]).with_context(|| format!("cannot read {}", &d[1..]))?,
        ),
        Some(d) => Some(d.to_string()),
        None => None,
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    Ok(Upstream {
        url: url.to_string(),
        method,
        headers,
        body,
        format: crate::protocol::ai::Format::OpenAi,
        connect_timeout: timeout.min(Duration::from_secs(30)),
        idle_timeout: timeout,
    })
}

/// How one connection ended.
enum Ended {
    /// The server said the stream is over (204).
    Over,
    /// `--count` events were printed, or the done marker came.
    Enough,
    /// The connection closed or broke: reconnect (`delivered`: it brought events).
    Again { delivered: bool, why: String },
}

/// Runs `tidings tail`; returns the number of events printed.
pub async fn run(args: TailArgs) -> anyhow::Result<u64> {
    let url = if args.url.starts_with('/') {
        format!("{}{}", args.server.trim_end_matches('/'), args.url)
    } else {
        args.url.clone()
    };
    reqwest::Url::parse(&url).with_context(|| format!("{url:?} is not a URL"))?;
    let request = request_of(&args, &url)?;
    // No read timeout beyond a generous idle limit: streams are long and may be quiet, but a
    // server that sends nothing (not even keep-alives) for this long is gone.
    let client = http_client(request.idle_timeout)?;
    if let Some(username) = &args.username {
        let password = args
            .password
            .as_deref()
            .context("--username needs --password (or TIDINGS_PASSWORD)")?;
        sign_in(&client, &args.server, username, password).await?;
    }
    let mut last_id = match (&args.last_event_id, &args.state_file) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(path)) => read_state(path)?,
        (None, None) => None,
    };
    let mut retry = Duration::from_millis(args.retry_ms);
    let max_wait = Duration::from_millis(args.max_wait_ms);
    let mut printed = 0u64;
    let mut failures = 0u32;
    let mut reconnects = 0u32;
    let stdout = std::io::stdout();
    loop {
        let ended = follow(
            &client,
            &request,
            &args,
            &mut last_id,
            &mut retry,
            &mut printed,
            &stdout,
        )
        .await?;
        let why = match ended {
            Ended::Over | Ended::Enough => return Ok(printed),
            Ended::Again { delivered, why } => {
                if delivered {
                    failures = 0;
                }
                why
            }
        };
        failures += 1;
        reconnects += 1;
        if args.max_reconnects > 0 && reconnects > args.max_reconnects {
            anyhow::bail!("giving up after {} reconnections: {why}", reconnects - 1);
        }
        if args.max_retries > 0 && failures > args.max_retries {
            anyhow::bail!("giving up after {} failed attempts: {why}", failures - 1);
        }
        // The first reconnect waits `retry`, as EventSource does; later ones back off.
        let wait = backoff(failures, retry, max_wait.max(retry));
        eprintln!(
            "tail: {why}; reconnecting in {:.1} s{}",
            wait.as_secs_f64(),
            last_id
                .as_deref()
                .map(|id| format!(" after event {id}"))
                .unwrap_or_default()
        );
        tokio::time::sleep(wait).await;
    }
}

/// One connection: prints its events until it ends.
async fn follow(
    client: &reqwest::Client,
    request: &Upstream,
    args: &TailArgs,
    last_id: &mut Option<String>,
    retry: &mut Duration,
    printed: &mut u64,
    stdout: &std::io::Stdout,
) -> anyhow::Result<Ended> {
    let res = match connect(client, request, last_id.as_deref()).await {
        Ok(res) => res,
        Err(UpstreamError::Over) => return Ok(Ended::Over),
        Err(UpstreamError::Refused { status, message }) if !retryable(status) => {
            anyhow::bail!("the server refused the stream: {message} ({status})")
        }
        Err(e @ UpstreamError::NotAStream { .. }) => {
            anyhow::bail!("{} is not an event stream: {e}", request.url)
        }
        Err(e) => {
            return Ok(Ended::Again {
                delivered: false,
                why: e.to_string(),
            })
        }
    };
    let scanner = std::sync::Arc::new(std::sync::Mutex::new(RetryScanner::default()));
    let seen = scanner.clone();
    let mut events = res
        .bytes_stream()
        .inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                seen.lock().expect("scanner").push(bytes);
            }
        })
        .eventsource();
    let mut delivered = false;
    loop {
        let event = match tokio::time::timeout(request.idle_timeout, events.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(_) => {
                return Ok(Ended::Again {
                    delivered,
                    why: format!("nothing arrived for {} s", request.idle_timeout.as_secs()),
                })
            }
        };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                return Ok(Ended::Again {
                    delivered,
                    why: format!("the stream broke ({e})"),
                })
            }
        };
        if let Some(r) = event
            .retry
            .or_else(|| scanner.lock().expect("scanner").found.take())
        {
            *retry = r;
        }
        if args.done_marker.as_deref() == Some(event.data.as_str()) {
            return Ok(Ended::Enough);
        }
        if !event.id.is_empty() {
            *last_id = Some(event.id.clone());
            if let Some(path) = &args.state_file {
                write_state(path, &event.id)?;
            }
        }
        let line = if args.json {
            serde_json::json!({"id": event.id, "event": event.event, "data": event.data})
                .to_string()
        } else {
            format!(
                "{} {} {}",
                event.id,
                event.event,
                event.data.replace('\n', "\\n")
            )
        };
        let mut out = stdout.lock();
        writeln!(out, "{line}").context("cannot write to standard output")?;
        out.flush().ok();
        *printed += 1;
        delivered = true;
        if args.count > 0 && *printed >= args.count {
            return Ok(Ended::Enough);
        }
    }
    if let Some(r) = scanner.lock().expect("scanner").found.take() {
        *retry = r;
    }
    Ok(Ended::Again {
        delivered,
        why: "the stream ended".into(),
    })
}

/// Finds `retry:` fields in raw event-stream bytes, whatever block they are in. Keeps at
/// most a few bytes of the current line: a longer line cannot be a retry field.
#[derive(Debug, Default)]
pub struct RetryScanner {
    line: Vec<u8>,
    overflow: bool,
    /// The latest reconnection time found, until taken.
    pub found: Option<Duration>,
}

impl RetryScanner {
    const KEEP: usize = 32;

    /// Reads the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.end_line();
            } else if self.line.len() < Self::KEEP {
                self.line.push(b);
            } else {
                self.overflow = true;
            }
        }
    }

    fn end_line(&mut self) {
        if !self.overflow {
            if let Some(value) = self.line.strip_prefix(b"retry:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
                    if let Ok(ms) = std::str::from_utf8(value).unwrap_or("").parse::<u64>() {
                        self.found = Some(Duration::from_millis(ms));
                    }
                }
            }
        }
        self.line.clear();
        self.overflow = false;
    }
}

/// The id a state file holds (`None`: no file yet, or empty).
fn read_state(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the state file's content with `id`, atomically (write beside it, then rename),
/// so a crash never leaves half an id.
fn write_state(path: &Path, id: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_fields_are_found_across_chunks_and_only_whole() {
        let mut s = RetryScanner::default();
        s.push(b"ret");
        s.push(b"ry: 30");
        assert_eq!(s.found, None, "not before the line ends");
        s.push(b"00\n\ndata: retry: 5\n");
        assert_eq!(s.found.take(), Some(Duration::from_millis(3000)));
        s.push(b"retry: soon\nretry:12\r\n");
        assert_eq!(s.found.take(), Some(Duration::from_millis(12)));
        let long = format!("data: {}\nretry: 7\n", "x".repeat(100));
        s.push(long.as_bytes());
        assert_eq!(s.found.take(), Some(Duration::from_millis(7)));
        s.push(b"retry: 99999999999999999999999999999\n");
        assert_eq!(s.found, None, "too long to be a retry");
    }

    #[test]
    fn the_state_file_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-id");
        assert_eq!(read_state(&path).unwrap(), None);
        write_state(&path, "42").unwrap();
        assert_eq!(read_state(&path).unwrap().as_deref(), Some("42"));
        write_state(&path, "43").unwrap();
        assert_eq!(read_state(&path).unwrap().as_deref(), Some("43"));
    }
}
