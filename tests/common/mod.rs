//! Starts the real Tidings server on `127.0.0.1:0` with a fresh database (an SQLite file, or a
//! database of its own on `TIDINGS_TEST_POSTGRES`), for the tests in this folder; signs users
//! up and opens their WebSockets; runs the real binary. Dropping the `TestServer` shuts it down.
//!
//! Each server runs on the runtime of the test that started it, and ends with it.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use leptos::config::get_configuration;
use tidings::{
    server::{AppState, Shutdown},
    settings::Settings,
};

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The server's state (database, signer…), for looking behind the API.
    pub state: AppState,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with `Settings::for_tests` (one admin called `admin`).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` changed the test configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = fresh_database(dir.path()).await;
        Self::start_in(dir, &url, adjust).await
    }

    /// Starts a server on `database_url`, which other servers may share (instances of one
    /// deployment), after `adjust` changed the test configuration.
    pub async fn start_on(database_url: &str, adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        Self::start_in(dir, database_url, adjust).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        database_url: &str,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = Settings::for_tests(database_url);
        adjust(&mut settings);
        let leptos_options = get_configuration(Some("Cargo.toml"))
            .expect("leptos config")
            .leptos_options;
        let state = AppState::new(settings.server.clone(), leptos_options, Shutdown::new())
            .await
            .expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let scheme = if settings.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        tokio::spawn(tidings::routes::serve(listener, state.clone(), settings));
        Self {
            base,
            state,
            _dir: dir,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("the server's address")
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A client that keeps cookies, as a browser would (but sends no `Origin`).
    pub fn client(&self) -> reqwest::Client {
        client_builder().cookie_store(true).build().unwrap()
    }

    /// A client that keeps cookies and does not follow redirects.
    pub fn client_no_redirects(&self) -> reqwest::Client {
        client_builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// Signs `username` up with a good password on `client`; panics unless 201.
    pub async fn signup(&self, client: &reqwest::Client, username: &str) {
        let res = send(
            client
                .post(self.url("/api/auth/signup"))
                .json(&serde_json::json!({
                    "username": username,
                    "password": PASSWORD,
                    // Needed for the admin's name; ignored for everyone else.
                    "setupToken": tidings::server::config::TEST_SETUP_TOKEN,
                })),
        )
        .await;
        assert_eq!(
            res.status(),
            201,
            "signup of {username}: {}",
            res.text().await.unwrap()
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.shutdown.trigger();
    }
}

/// Every test client gives up after 30 s, so a stuck request fails the test instead of hanging it.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(30))
}

/// The database for a new test server: a fresh SQLite file in `dir`, or, when
/// `TIDINGS_TEST_POSTGRES` names a PostgreSQL server (`scripts/test.sh` starts one and runs
/// these tests again against it), a fresh database there.
pub async fn fresh_database(dir: &std::path::Path) -> String {
    let admin = match std::env::var("TIDINGS_TEST_POSTGRES") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => return format!("sqlite://{}/tidings.db?mode=rwc", dir.display()),
    };
    use sqlx::{Connection, Executor};
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "tidings_test_{}_{}_{}",
        std::process::id(),
        CREATED.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("TIDINGS_TEST_POSTGRES ({admin}) does not answer: {e}"));
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("a test database");
    let _ = conn.close().await;
    let mut url = reqwest::Url::parse(&admin).expect("TIDINGS_TEST_POSTGRES is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The secret every test instance shares (PostgreSQL needs one; instances of one deployment
/// must agree on it).
pub const SECRET: &str = "tests-only secret, at least thirty-two bytes long";

/// The real `tidings` binary with a clean environment plus `envs`, listening on a free
/// loopback port, its output piped (read it with [`wait_for_listening`]). Like a test
/// deployment's operator, it sets the secret and the admin setup token, and opens the signup
/// limit; `envs` may set any of them again (empty: unset).
pub fn binary(envs: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LEPTOS_OUTPUT_NAME", "tidings")
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("TIDINGS_SECRET", SECRET)
        .env(
            "TIDINGS_SETUP_TOKEN",
            tidings::server::config::TEST_SETUP_TOKEN,
        )
        .env("TIDINGS_SIGNUP_PER_HOUR", "0")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Reads the child's stdout until the "listening on" line (and keeps draining it after);
/// returns the base URL.
pub fn wait_for_listening(child: &mut std::process::Child) -> String {
    wait_for_listening_logged(child).0
}

/// The same, and the log lines it printed before it listened.
pub fn wait_for_listening_logged(child: &mut std::process::Child) -> (String, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut before = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line
                .find("listening on http://")
                .or_else(|| line.find("listening on https://"))
            {
                let base = line[i + "listening on ".len()..].trim().to_string();
                let _ = tx.send((base, std::mem::take(&mut before)));
            } else {
                before.push(line);
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the server says where it listens")
}

/// A signed-up user: an HTTP client holding the session, and the `Cookie` header value for
/// a WebSocket handshake.
pub struct User {
    pub name: String,
    pub http: reqwest::Client,
    /// `tidings_session=…`.
    pub cookie: String,
}

impl TestServer {
    /// Signs `name` up; the session cookie is read back from the client's jar (it works on
    /// every server sharing this one's database).
    pub async fn user(&self, name: &str) -> User {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let http = client_builder()
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        self.signup(&http, name).await;
        let url: reqwest::Url = self.base.parse().expect("the server's URL");
        let cookie = reqwest::cookie::CookieStore::cookies(&*jar, &url)
            .expect("signup sets a session cookie")
            .to_str()
            .unwrap()
            .to_string();
        assert!(cookie.contains("tidings_session="), "{cookie}");
        User {
            name: name.to_string(),
            http,
            cookie,
        }
    }

    /// Opens `/ws` with `cookie` (no `Origin`, like a command-line client).
    pub async fn ws(&self, cookie: &str) -> Ws {
        open_ws(&self.base, cookie).await
    }
}

/// A client-side WebSocket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens `{base}/ws` with `cookie`; panics unless it opens within 15 s.
pub async fn open_ws(base: &str, cookie: &str) -> Ws {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", HeaderValue::from_str(cookie).unwrap());
    tokio::time::timeout(
        std::time::Duration::from_secs(15),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("the handshake ends in time")
    .expect("the socket opens")
    .0
}

/// A client without cookies (a command-line client, or a stranger).
pub fn plain_client() -> reqwest::Client {
    client_builder().build().unwrap()
}

/// The password every test account uses.
pub const PASSWORD: &str = "correct horse battery";

/// `POST url` with a JSON body on `client`.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    send(client.post(url).json(&body)).await
}

/// Sends `req` as a well-behaved client does: a 503 with `Retry-After` (the password hashers
/// are all busy, which happens when many test servers share one process) is tried again after
/// the time it names, up to a minute in all; so is a plain form's redirect that says
/// `error=server_busy` (after a second, as a person would). Any other answer is returned as
/// it is.
pub async fn send(req: reqwest::RequestBuilder) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let retry = req.try_clone().expect("a request with a plain body");
        let res = retry.send().await.expect("the server answers");
        let header = |name| res.headers().get(name).and_then(|v| v.to_str().ok());
        let busy_form = res.status() == 303
            && header(reqwest::header::LOCATION).is_some_and(|l| l.contains("error=server_busy"));
        let wait = header(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| res.status() == 503)
            .or(busy_form.then_some(1));
        match wait {
            Some(secs) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
            }
            _ => return res,
        }
    }
}

/// `GET url` on `client`, parsed as JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let res = client.get(url).send().await.expect("the server answers");
    res.json().await.expect("a JSON body")
}

impl TestServer {
    /// A stream token for `client`'s session (`POST /api/auth/stream-token`).
    pub async fn stream_token(&self, client: &reqwest::Client) -> String {
        let body: serde_json::Value = client
            .post(self.url("/api/auth/stream-token"))
            .send()
            .await
            .expect("the server answers")
            .json()
            .await
            .expect("a token");
        body["token"].as_str().expect("a token").to_string()
    }
}

/// Reads a JSON error body and checks it has the documented shape; returns its `error` code.
pub async fn error_code(res: reqwest::Response) -> String {
    let body: serde_json::Value = res.json().await.expect("error bodies are JSON");
    let message = body["message"].as_str().expect("a message");
    assert!(!message.is_empty());
    body["error"].as_str().expect("an error code").to_string()
}

/// A loopback proxy to `upstream` that cuts the first connection once it has carried
/// `cut_after` bytes back to the client; later connections pass untouched.
pub async fn cutting_proxy(upstream: String, cut_after: u64) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            let flag = flag.clone();
            tokio::spawn(async move {
                let server = TcpStream::connect(upstream.trim_start_matches("http://"))
                    .await
                    .unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let carried = AtomicU64::new(0);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let total = carried.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                    if total > cut_after && !flag.swap(true, Ordering::SeqCst) {
                        break; // Dropping both halves cuts the connection mid-response.
                    }
                }
                up.abort();
            });
        }
    });
    (addr, cut)
}

/// How long an [`Sse`] reader waits for the next event before the test fails.
pub const SSE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// One event read from a stream: its id (the last one seen: the WHATWG parser keeps it across
/// events that carry none), name and JSON data.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub event: String,
    pub data: serde_json::Value,
}

/// An open event stream, read one event at a time (every SSE test reads through this).
pub struct Sse {
    events: futures::stream::LocalBoxStream<
        'static,
        Result<eventsource_stream::Event, eventsource_stream::EventStreamError<reqwest::Error>>,
    >,
}

impl Sse {
    /// Sends `request` and expects 200 with the event-stream headers.
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let res = request.send().await.expect("the server answers");
        let status = res.status();
        if status != 200 {
            panic!(
                "expected an event stream, got {status}: {}",
                res.text().await.unwrap_or_default()
            );
        }
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        Self {
            events: res.bytes_stream().eventsource().boxed_local(),
        }
    }

    fn got(event: eventsource_stream::Event) -> Got {
        let data = serde_json::from_str(&event.data)
            .unwrap_or_else(|e| panic!("JSON data ({e}): {}", event.data));
        Got {
            id: event.id,
            event: event.event,
            data,
        }
    }

    /// The next event within `wait` (else the test fails); `None` when the response ended.
    pub async fn next_within(&mut self, wait: std::time::Duration) -> Option<Got> {
        use futures::StreamExt;
        let event = tokio::time::timeout(wait, self.events.next())
            .await
            .expect("an event in time")?;
        Some(Self::got(event.expect("a well-formed event")))
    }

    /// The next event within [`SSE_WAIT`]; `None` when the response ended.
    pub async fn next(&mut self) -> Option<Got> {
        self.next_within(SSE_WAIT).await
    }

    /// The next event named `name`, skipping others, each within `wait`.
    pub async fn next_named_within(&mut self, name: &str, wait: std::time::Duration) -> Got {
        loop {
            let got = self
                .next_within(wait)
                .await
                .unwrap_or_else(|| panic!("the stream ended before a {name} event"));
            if got.event == name {
                return got;
            }
        }
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str) -> Got {
        self.next_named_within(name, SSE_WAIT).await
    }

    /// Every remaining event; the response must end within [`SSE_WAIT`].
    pub async fn rest(mut self) -> Vec<Got> {
        use futures::StreamExt;
        let until = tokio::time::Instant::now() + SSE_WAIT;
        let mut all = Vec::new();
        loop {
            match tokio::time::timeout_at(until, self.events.next())
                .await
                .expect("the response ends in time")
            {
                None => return all,
                Some(event) => all.push(Self::got(event.expect("a well-formed event"))),
            }
        }
    }
}

/// Whether a test that needs `program` (a service it starts itself: `redis-server`, nginx,
/// PostgreSQL's `initdb`) must skip because it is not installed. It says so on stderr, so a
/// plain `cargo test` on a machine without the services stays green and tells why;
/// `TIDINGS_TEST_SERVICES=required` (set by `scripts/test.sh`, which installs them) makes a
/// missing one a failure instead.
pub fn skip_without(program: &str, installed: bool) -> bool {
    if installed {
        return false;
    }
    assert!(
        std::env::var("TIDINGS_TEST_SERVICES").as_deref() != Ok("required"),
        "this test needs {program}, which is not installed (scripts/setup.sh installs it)"
    );
    eprintln!(
        "skipped: this test needs {program}, which is not installed here; \
         scripts/setup.sh installs it and scripts/test.sh runs the test"
    );
    true
}

/// Whether `program` runs (found on `PATH` or at the given path).
pub fn runs(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Skips (see [`skip_without`]) unless `redis-server` is installed.
pub fn skip_without_redis() -> bool {
    skip_without("redis-server", runs("redis-server"))
}

/// A `redis-server` of this test's own, stopped when dropped.
pub struct Redis {
    child: Option<std::process::Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut redis = Self {
            child: None,
            port,
            _dir: dir,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (or starts again) the server on the same port, and waits until it answers.
    pub fn resume(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(self._dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the server (by its PID), as if it went away.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
