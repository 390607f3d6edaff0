//! Configuration from the environment (and a `.env` file, read by `main`).
//!
//! Every variable the contract names is read here and nowhere else, so the rest of the
//! server takes a `Config` and tests build one by hand (`Config::for_tests`). A bad value
//! fails at start with a sentence naming the variable: an operator learns of a typo before
//! the first user does.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use ipnet::IpNet;

/// Where SQLite lives when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/tidings.db?mode=rwc";

/// Longest session or token lifetime accepted: one year, in seconds.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

/// Shortest `TIDINGS_SECRET` accepted, in bytes.
pub const SECRET_MIN_BYTES: usize = 32;

/// Shortest `TIDINGS_SETUP_TOKEN` accepted, in characters.
pub const SETUP_TOKEN_MIN_CHARS: usize = 16;

/// Settings that come from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`: `sqlite://path?mode=rwc` (default under `data/`) or `postgres://…`.
    pub database_url: String,
    /// `REDIS_URL` (`redis://host:port`): set, the fan-out bus goes over Redis so several
    /// instances serve one set of rooms, jobs and notifications; unset, one process.
    pub redis_url: Option<String>,
    /// `TIDINGS_ADMINS`: usernames that get the admin role. Each can only be signed up with
    /// the setup token (see [`setup_token`](Self::setup_token)).
    pub admins: HashSet<String>,
    /// `TIDINGS_SETUP_TOKEN`: the token that signing up as a listed admin needs. Unset: one is
    /// generated (kept in the database, so every instance shares it) and printed in the log at
    /// start while a listed admin has no account.
    pub setup_token: Option<String>,
    /// `TIDINGS_ALLOWED_ORIGINS`: origins besides our own that may call state-changing routes
    /// and open WebSockets (and that CORS answers for), as browsers write them
    /// (`https://app.example.com`, no path). `null`, `*` or a path fails the start.
    pub allowed_origins: Vec<String>,
    /// `TIDINGS_PUBLIC_ORIGIN`: the origins users reach this server at. Set, they are the only
    /// `Host` values served (others get 421), our own origins, the import default, and they
    /// decide `Secure` cookies. Empty: a `Host` that is an IP literal or `localhost` is served.
    pub public_origins: Vec<PublicOrigin>,
    /// `TIDINGS_TRUSTED_PROXIES`: the proxies (IPs or CIDRs) whose `X-Forwarded-For`,
    /// `Forwarded` and `X-Forwarded-Proto` are believed. Empty: those headers are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// `TIDINGS_SECRET` (at least [`SECRET_MIN_BYTES`]): key for signing stream tokens.
    /// Unset: a random key kept in a file beside the SQLite database, readable by its owner
    /// only; on PostgreSQL the server refuses to start without it.
    pub secret: Option<String>,
    /// `TIDINGS_STREAM_TOKEN_TTL` (seconds, default 300): how long a stream token lives.
    pub stream_token_ttl: Duration,
    /// `TIDINGS_SESSION_TTL` (seconds, default 30 days): how long a session lives.
    pub session_ttl: Duration,
    /// `TIDINGS_EXPORT_READER`: how exports read SQLite. `auto` (default): a dedicated
    /// rusqlite connection, the measured fast path; `sqlx`: the portable sqlx path that
    /// PostgreSQL always uses (for comparing the two).
    pub export_reader: ExportReader,
    /// `TIDINGS_JOB_WORKERS` (1–256): jobs run at once. Unset: the queue's default.
    pub job_workers: Option<usize>,
    /// `TIDINGS_IMPORT_SOURCES`: URL prefixes imports may read from. Empty: this server's
    /// own origin only (the public origins, else the address it listens on).
    pub import_sources: Vec<String>,
    /// `TIDINGS_SSE_MAX_SECS` (default 600): an event stream ends after this long and the
    /// browser reconnects with `Last-Event-ID`, so no connection is pinned to one instance
    /// (or one proxy) forever. The end-to-end tests set it short to exercise reconnects.
    pub sse_max: Duration,
    /// Chat tuning (rooms, presence, WebSocket health); see [`ChatConfig`].
    pub chat: ChatConfig,
    /// Per-user and per-address limits; see [`Limits`].
    pub limits: Limits,
    /// `TIDINGS_MAX_CONNECTIONS` (default 20000): open HTTP connections at most; more are
    /// refused at once.
    pub max_connections: usize,
}

/// One of `TIDINGS_PUBLIC_ORIGIN`'s origins, taken apart for matching `Host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicOrigin {
    /// As a browser writes it in `Origin`: `https://chat.example.com` (no default port).
    pub origin: String,
    /// The host, lower-case (an IPv6 address in brackets).
    pub host: String,
    /// The port, the scheme's default when the origin names none.
    pub port: u16,
    /// Served over https (through a proxy that ends TLS, or directly).
    pub https: bool,
}

impl PublicOrigin {
    /// Whether a `Host` header value (`host` or `host:port`) names this origin.
    pub fn matches_host(&self, host_header: &str) -> bool {
        match split_host_port(host_header) {
            Some((host, port)) => {
                host.eq_ignore_ascii_case(&self.host)
                    && port.unwrap_or(self.default_port()) == self.port
            }
            None => false,
        }
    }

    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }
}

/// Splits a `Host` value into host and port (`[::1]:3000` → `[::1]`, 3000). `None` when the
/// port is not a number.
pub fn split_host_port(value: &str) -> Option<(&str, Option<u16>)> {
    let value = value.trim();
    let (host, port) = if value.starts_with('[') {
        match value.find(']') {
            Some(end) => {
                let rest = &value[end + 1..];
                (&value[..=end], rest.strip_prefix(':'))
            }
            None => return None,
        }
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// How much one user or one address may hold or do. Defaults are safe for the open internet;
/// benchmarks and tests open them up explicitly, as an operator would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `TIDINGS_SIGNUP_PER_HOUR` (default 20; 0: no limit): signups per client address per hour.
    pub signups_per_hour: u32,
    /// `TIDINGS_MAX_STREAMS_PER_USER` (default 64; 0: no limit): open WebSockets and event
    /// streams per user, on each instance.
    pub streams_per_user: u32,
    /// `TIDINGS_MAX_ACTIVE_JOBS_PER_USER` (default 20; 0: no limit): queued or running jobs
    /// per user.
    pub active_jobs_per_user: u32,
    /// `TIDINGS_MAX_RUNNING_JOBS_PER_USER`: jobs of one user running at once, counted over
    /// every instance (the claim counts the database's running jobs). `None`: half of this
    /// instance's workers (at least one), so one user's backlog never takes every worker from
    /// the others.
    pub running_jobs_per_user: Option<u32>,
    /// `TIDINGS_JOB_RETENTION_DAYS` (default 7): jobs that ended longer ago are deleted with
    /// their events.
    pub job_retention: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            signups_per_hour: 20,
            streams_per_user: 64,
            active_jobs_per_user: 20,
            running_jobs_per_user: None,
            job_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Limits {
    /// Every limit open (what tests and benchmarks start from).
    pub fn open() -> Self {
        Self {
            signups_per_hour: 0,
            streams_per_user: 0,
            active_jobs_per_user: 0,
            ..Self::default()
        }
    }
}

/// How the chat behaves. Defaults suit people; tests shorten the waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatConfig {
    /// `TIDINGS_CHAT_RATE` (default 10): messages a user may send per second (the contract's
    /// `Slow down.` limit), across every instance when `REDIS_URL` is set. Load tests that
    /// need one user to send more may raise it.
    pub rate_per_second: u32,
    /// `TIDINGS_CHAT_HISTORY` (default 1000): messages a room keeps.
    pub history: i64,
    /// `TIDINGS_PRESENCE_GRACE_MS` (default 5000): how long after a user's last connection
    /// closes before the room hears `left` (a reload reconnects well within it).
    pub presence_grace: Duration,
    /// `TIDINGS_WS_PING_MS` (default 20000): a WebSocket is pinged after this long without
    /// traffic, and closed when nothing arrives for twice as long (a vanished peer).
    pub ping_interval: Duration,
    /// `TIDINGS_SLOW_CLIENT_MS` (default 10000): a socket that takes longer than this to accept
    /// one batch of writes is closed as too slow (it would otherwise hold its queue forever).
    pub slow_client: Duration,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            rate_per_second: 10,
            history: 1000,
            presence_grace: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
            slow_client: Duration::from_secs(10),
        }
    }
}

/// How the audit export reads an SQLite database (PostgreSQL always goes through sqlx).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportReader {
    /// rusqlite on SQLite files, sqlx otherwise.
    #[default]
    Auto,
    /// sqlx everywhere.
    Sqlx,
}

/// Reads variables through `get` (the environment, or a map in tests).
struct Vars<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A whole number from `min` to `max`, or `default` when unset.
    fn number(&self, name: &str, default: u64, min: u64, max: u64) -> anyhow::Result<u64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    anyhow::anyhow!("{name} must be a whole number from {min} to {max}, not {v:?}")
                }),
        }
    }

    /// Seconds from 1 to a year. Capped there: larger values would overflow millisecond
    /// timestamps.
    fn seconds(&self, name: &str, default: u64) -> anyhow::Result<Duration> {
        match self.get(name) {
            None => Ok(Duration::from_secs(default)),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_TTL_SECS).contains(n))
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{name} must be a whole number of seconds from 1 to {MAX_TTL_SECS}, not {v:?}"
                    )
                }),
        }
    }

    fn millis(&self, name: &str, default: Duration) -> anyhow::Result<Duration> {
        self.number(name, default.as_millis() as u64, 1, 3_600_000)
            .map(Duration::from_millis)
    }

    fn list(&self, name: &str) -> Vec<String> {
        split_list(self.get(name).as_deref())
    }
}

impl Config {
    /// Reads the environment. Fails with a sentence naming the variable on a bad value.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables `get` gives (the environment in [`from_env`](Self::from_env)).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let vars = Vars(get);
        let chat = {
            let d = ChatConfig::default();
            ChatConfig {
                rate_per_second: vars.number(
                    "TIDINGS_CHAT_RATE",
                    d.rate_per_second.into(),
                    1,
                    100_000,
                )? as u32,
                history: vars.number("TIDINGS_CHAT_HISTORY", d.history as u64, 1, 1_000_000)?
                    as i64,
                presence_grace: vars.millis("TIDINGS_PRESENCE_GRACE_MS", d.presence_grace)?,
                ping_interval: vars.millis("TIDINGS_WS_PING_MS", d.ping_interval)?,
                slow_client: vars.millis("TIDINGS_SLOW_CLIENT_MS", d.slow_client)?,
            }
        };
        let limits = {
            let d = Limits::default();
            Limits {
                signups_per_hour: vars.number(
                    "TIDINGS_SIGNUP_PER_HOUR",
                    d.signups_per_hour.into(),
                    0,
                    1_000_000,
                )? as u32,
                streams_per_user: vars.number(
                    "TIDINGS_MAX_STREAMS_PER_USER",
                    d.streams_per_user.into(),
                    0,
                    1_000_000,
                )? as u32,
                active_jobs_per_user: vars.number(
                    "TIDINGS_MAX_ACTIVE_JOBS_PER_USER",
                    d.active_jobs_per_user.into(),
                    0,
                    1_000_000,
                )? as u32,
                running_jobs_per_user: match vars.get("TIDINGS_MAX_RUNNING_JOBS_PER_USER") {
                    None => None,
                    Some(_) => {
                        Some(vars.number("TIDINGS_MAX_RUNNING_JOBS_PER_USER", 1, 1, 256)? as u32)
                    }
                },
                job_retention: Duration::from_secs(
                    vars.number("TIDINGS_JOB_RETENTION_DAYS", 7, 1, 36_500)? * 24 * 3600,
                ),
            }
        };
        Ok(Self {
            database_url: vars
                .get("DATABASE_URL")
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
            redis_url: vars.get("REDIS_URL"),
            admins: vars
                .list("TIDINGS_ADMINS")
                .into_iter()
                .map(|name| match crate::protocol::auth::check_username(&name) {
                    Ok(()) => Ok(name),
                    // A name nobody can sign up as would never be reserved, nor ever be admin.
                    Err(rule) => Err(anyhow::anyhow!(
                        "TIDINGS_ADMINS: {name:?} can never be a username. {rule}"
                    )),
                })
                .collect::<anyhow::Result<_>>()?,
            setup_token: match vars.get("TIDINGS_SETUP_TOKEN") {
                Some(t) if t.chars().count() < SETUP_TOKEN_MIN_CHARS => anyhow::bail!(
                    "TIDINGS_SETUP_TOKEN must be at least {SETUP_TOKEN_MIN_CHARS} characters (it has {}); \
                     generate one with `openssl rand -hex 16`",
                    t.chars().count()
                ),
                other => other,
            },
            allowed_origins: vars
                .list("TIDINGS_ALLOWED_ORIGINS")
                .iter()
                .map(|o| parse_origin("TIDINGS_ALLOWED_ORIGINS", o).map(|p| p.origin))
                .collect::<anyhow::Result<_>>()?,
            public_origins: vars
                .list("TIDINGS_PUBLIC_ORIGIN")
                .iter()
                .map(|o| parse_origin("TIDINGS_PUBLIC_ORIGIN", o))
                .collect::<anyhow::Result<_>>()?,
            trusted_proxies: vars
                .list("TIDINGS_TRUSTED_PROXIES")
                .iter()
                .map(|p| parse_proxy(p))
                .collect::<anyhow::Result<_>>()?,
            secret: match vars.get("TIDINGS_SECRET") {
                Some(s) if s.len() < SECRET_MIN_BYTES => anyhow::bail!(
                    "TIDINGS_SECRET must be at least {SECRET_MIN_BYTES} bytes (it has {}); \
                     generate one with `openssl rand -hex 32`",
                    s.len()
                ),
                other => other,
            },
            stream_token_ttl: vars.seconds("TIDINGS_STREAM_TOKEN_TTL", 300)?,
            session_ttl: vars.seconds("TIDINGS_SESSION_TTL", 30 * 24 * 3600)?,
            export_reader: match vars.get("TIDINGS_EXPORT_READER").as_deref() {
                None | Some("auto") => ExportReader::Auto,
                Some("sqlx") => ExportReader::Sqlx,
                Some(other) => {
                    anyhow::bail!("TIDINGS_EXPORT_READER must be auto or sqlx, not {other:?}")
                }
            },
            job_workers: match vars.get("TIDINGS_JOB_WORKERS") {
                None => None,
                Some(_) => Some(vars.number("TIDINGS_JOB_WORKERS", 16, 1, 256)? as usize),
            },
            import_sources: vars.list("TIDINGS_IMPORT_SOURCES"),
            sse_max: vars.seconds("TIDINGS_SSE_MAX_SECS", 600)?,
            chat,
            limits,
            max_connections: vars.number("TIDINGS_MAX_CONNECTIONS", 20_000, 1, 10_000_000)?
                as usize,
        })
    }

    /// A configuration for tests: the given database, one admin called `admin` (signed up with
    /// [`TEST_SETUP_TOKEN`]), a fixed secret, and the limits open.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_string(),
            redis_url: None,
            admins: ["admin".to_string()].into_iter().collect(),
            setup_token: Some(TEST_SETUP_TOKEN.to_string()),
            allowed_origins: vec!["http://allowed.example".to_string()],
            public_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            secret: Some("tests-only secret, at least thirty-two bytes long".to_string()),
            stream_token_ttl: Duration::from_secs(300),
            session_ttl: Duration::from_secs(3600),
            export_reader: ExportReader::Auto,
            job_workers: Some(4),
            import_sources: Vec::new(),
            sse_max: Duration::from_secs(600),
            chat: ChatConfig {
                presence_grace: Duration::from_millis(300),
                ..ChatConfig::default()
            },
            limits: Limits::open(),
            max_connections: 20_000,
        }
    }

    /// Whether `ip` is one of `TIDINGS_TRUSTED_PROXIES`.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// The setup token of [`Config::for_tests`].
pub const TEST_SETUP_TOKEN: &str = "test-setup-token-0123456789";

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Parses an origin (`scheme://host[:port]`, a trailing `/` tolerated) for the variable `name`.
fn parse_origin(name: &str, value: &str) -> anyhow::Result<PublicOrigin> {
    let refuse = |why: &str| {
        anyhow::anyhow!(
            "{name} entries must be origins such as https://chat.example.com \
             (scheme, host and port only); {value:?} {why}"
        )
    };
    if value == "*" || value.eq_ignore_ascii_case("null") {
        return Err(refuse("would let any site in"));
    }
    let url = reqwest::Url::parse(value).map_err(|_| refuse("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse("is not http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("carries credentials"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("has a path, query or fragment"));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        Some(h) => h.to_string().to_ascii_lowercase(),
        None => return Err(refuse("has no host")),
    };
    let https = url.scheme() == "https";
    Ok(PublicOrigin {
        origin: url.origin().ascii_serialization(),
        port: url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 }),
        host,
        https,
    })
}

/// Parses one trusted proxy: an IP address or a CIDR block.
fn parse_proxy(value: &str) -> anyhow::Result<IpNet> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    value
        .parse::<IpAddr>()
        .map(|ip| IpNet::from(canonical(ip)))
        .map_err(|_| {
            anyhow::anyhow!(
                "TIDINGS_TRUSTED_PROXIES entries must be IP addresses or CIDR blocks \
                 (10.0.0.0/8, 127.0.0.1, ::1), not {value:?}"
            )
        })
}

/// Splits a comma-separated list, trimming blanks.
fn split_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|name| map.get(name).cloned())
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        config(pairs).expect_err("refused").to_string()
    }

    #[test]
    fn admin_names_must_be_usernames() {
        let e = refusal(&[("TIDINGS_ADMINS", "eric, Eric")]);
        assert!(e.starts_with("TIDINGS_ADMINS: \"Eric\""), "{e}");
        assert!(config(&[("TIDINGS_ADMINS", "eric,ann")])
            .unwrap()
            .admins
            .contains("ann"));
    }

    #[test]
    fn lists_are_trimmed() {
        assert_eq!(split_list(Some(" a, b ,,c")), vec!["a", "b", "c"]);
        assert!(split_list(None).is_empty());
    }

    #[test]
    fn defaults_are_the_safe_ones() {
        let c = config(&[]).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.signups_per_hour, 20);
        assert_eq!(c.limits.streams_per_user, 64);
        assert_eq!(c.limits.active_jobs_per_user, 20);
        assert_eq!(c.limits.job_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.max_connections, 20_000);
        assert!(c.public_origins.is_empty() && c.trusted_proxies.is_empty());
        assert_eq!(c.secret, None);
    }

    #[test]
    fn short_secrets_and_setup_tokens_fail_the_start_naming_the_variable() {
        let e = refusal(&[("TIDINGS_SECRET", "too short")]);
        assert!(
            e.starts_with("TIDINGS_SECRET must be at least 32 bytes (it has 9)"),
            "{e}"
        );
        let long = "x".repeat(32);
        assert_eq!(
            config(&[("TIDINGS_SECRET", &long)])
                .unwrap()
                .secret
                .as_deref(),
            Some(long.as_str())
        );
        let e = refusal(&[("TIDINGS_SETUP_TOKEN", "abc")]);
        assert!(
            e.starts_with("TIDINGS_SETUP_TOKEN must be at least 16"),
            "{e}"
        );
    }

    #[test]
    fn allowed_origins_must_be_origins() {
        for bad in [
            "*",
            "null",
            "NULL",
            "https://a.example/path",
            "https://a.example/?q=1",
            "ftp://a.example",
            "a.example",
            "https://u:p@a.example",
        ] {
            let e = refusal(&[("TIDINGS_ALLOWED_ORIGINS", bad)]);
            assert!(
                e.starts_with("TIDINGS_ALLOWED_ORIGINS entries must be origins"),
                "{bad}: {e}"
            );
        }
        let c = config(&[(
            "TIDINGS_ALLOWED_ORIGINS",
            "https://App.Example.com/, http://localhost:8080, https://b.example:443",
        )])
        .unwrap();
        assert_eq!(
            c.allowed_origins,
            [
                "https://app.example.com",
                "http://localhost:8080",
                "https://b.example"
            ]
        );
    }

    #[test]
    fn public_origins_match_their_hosts() {
        let c = config(&[(
            "TIDINGS_PUBLIC_ORIGIN",
            "https://chat.example.com, http://[::1]:3000",
        )])
        .unwrap();
        let (chat, v6) = (&c.public_origins[0], &c.public_origins[1]);
        assert_eq!(chat.origin, "https://chat.example.com");
        assert!(chat.https);
        for ok in [
            "chat.example.com",
            "Chat.Example.COM",
            "chat.example.com:443",
        ] {
            assert!(chat.matches_host(ok), "{ok}");
        }
        for bad in [
            "chat.example.com:80",
            "evil.example",
            "chat.example.com.evil",
            "chat.example.com:x",
        ] {
            assert!(!chat.matches_host(bad), "{bad}");
        }
        assert!(v6.matches_host("[::1]:3000"));
        assert!(!v6.matches_host("[::1]"));
        assert!(
            refusal(&[("TIDINGS_PUBLIC_ORIGIN", "https://x.example/app")])
                .starts_with("TIDINGS_PUBLIC_ORIGIN entries")
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        let c = config(&[(
            "TIDINGS_TRUSTED_PROXIES",
            "127.0.0.1, 10.0.0.0/8, ::1, 192.168.1.77/24",
        )])
        .unwrap();
        for yes in [
            "127.0.0.1",
            "10.9.8.7",
            "::1",
            "192.168.1.3",
            "::ffff:127.0.0.1",
        ] {
            assert!(c.is_trusted_proxy(yes.parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.2", "11.0.0.1", "::2", "192.168.2.1"] {
            assert!(!c.is_trusted_proxy(no.parse().unwrap()), "{no}");
        }
        let e = refusal(&[("TIDINGS_TRUSTED_PROXIES", "proxy.example")]);
        assert!(e.contains("\"proxy.example\""), "{e}");
    }

    #[test]
    fn limits_are_read_and_checked() {
        let c = config(&[
            ("TIDINGS_SIGNUP_PER_HOUR", "0"),
            ("TIDINGS_MAX_STREAMS_PER_USER", "3"),
            ("TIDINGS_MAX_ACTIVE_JOBS_PER_USER", "5"),
            ("TIDINGS_MAX_RUNNING_JOBS_PER_USER", "2"),
            ("TIDINGS_JOB_RETENTION_DAYS", "1"),
            ("TIDINGS_MAX_CONNECTIONS", "100"),
        ])
        .unwrap();
        assert_eq!(
            c.limits,
            Limits {
                signups_per_hour: 0,
                streams_per_user: 3,
                active_jobs_per_user: 5,
                running_jobs_per_user: Some(2),
                job_retention: Duration::from_secs(86_400),
            }
        );
        assert_eq!(c.max_connections, 100);
        let e = refusal(&[("TIDINGS_MAX_CONNECTIONS", "lots")]);
        assert!(
            e.starts_with("TIDINGS_MAX_CONNECTIONS must be a whole number"),
            "{e}"
        );
        let e = refusal(&[("TIDINGS_JOB_RETENTION_DAYS", "0")]);
        assert!(e.starts_with("TIDINGS_JOB_RETENTION_DAYS"), "{e}");
    }

    #[test]
    fn host_values_split() {
        assert_eq!(
            split_host_port("a.example:80"),
            Some(("a.example", Some(80)))
        );
        assert_eq!(split_host_port("a.example"), Some(("a.example", None)));
        assert_eq!(split_host_port("[::1]:3000"), Some(("[::1]", Some(3000))));
        assert_eq!(split_host_port("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_host_port("a:b"), None);
        assert_eq!(split_host_port("[::1"), None);
    }
}
