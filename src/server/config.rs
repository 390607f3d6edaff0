//! Configuration from the environment (and a `.env` file, read by `main`).
//!
//! [`Env`] is the one loader: it reads each variable, trims it, and checks numbers, durations
//! and lists, failing with a sentence naming the variable (an operator learns of a typo at
//! start, before the first user does). [`Config`] holds what the shared server needs; each
//! feature reads its own settings through the same loader (`chat::settings`,
//! `jobs::settings`, `export::settings`), and `crate::settings` puts them together once at
//! start. Tests build a `Config` by hand (`Config::for_tests`).
//!
//! Length: a little over 600 lines, a third of them the tests of every variable's checks;
//! the parsing and its refusals read best together.

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
    /// `TIDINGS_SSE_MAX_SECS` (default 600): an event stream ends after this long and the
    /// browser reconnects with `Last-Event-ID`, so no connection is pinned to one instance
    /// (or one proxy) forever. The end-to-end tests set it short to exercise reconnects.
    pub sse_max: Duration,
    /// `TIDINGS_SLOW_CLIENT_MS` (default 10000): a WebSocket or event stream that takes
    /// longer than this to accept one batch of writes is closed as too slow (it would
    /// otherwise hold its queue forever).
    pub slow_client: Duration,
    /// Per-user and per-address limits; see [`Limits`].
    pub limits: Limits,
    /// `TIDINGS_MAX_CONNECTIONS` (default 20000): open HTTP connections at most; more are
    /// refused at once.
    pub max_connections: usize,
    /// `TIDINGS_METRICS_TOKEN` (at least 16 characters): lets a Prometheus server scrape
    /// `GET /metrics` with `Authorization: Bearer <token>`; unset, only an admin session can.
    pub metrics_token: Option<String>,
    /// `TIDINGS_TLS_CERT` and `TIDINGS_TLS_KEY` (PEM files, both or neither): serve HTTPS
    /// with h2 and http/1.1 on `LEPTOS_SITE_ADDR` instead of plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// The certificate chain and private key that `TIDINGS_TLS_CERT`/`TIDINGS_TLS_KEY` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// The metrics token of [`Config::for_tests`].
pub const TEST_METRICS_TOKEN: &str = "tests-only metrics token";

/// Shortest `TIDINGS_METRICS_TOKEN`.
pub const METRICS_TOKEN_MIN_CHARS: usize = 16;

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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            signups_per_hour: 20,
            streams_per_user: 64,
        }
    }
}

impl Limits {
    /// Every limit open (what tests and benchmarks start from).
    pub fn open() -> Self {
        Self {
            signups_per_hour: 0,
            streams_per_user: 0,
        }
    }
}

/// The one loader: reads variables through a lookup (the environment, or a map in tests).
pub struct Env<'a>(Box<Lookup<'a>>);

/// How [`Env`] finds a variable's raw value.
type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

impl<'a> Env<'a> {
    /// Reads the process's environment.
    pub fn process() -> Env<'static> {
        Env::from_fn(|name| std::env::var(name).ok())
    }

    /// Reads variables through `get` (a map in tests).
    pub fn from_fn(get: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self(Box::new(get))
    }

    /// Reads the `(name, value)` pairs given, and nothing else (tests).
    pub fn from_pairs(pairs: &'a [(&'a str, &'a str)]) -> Self {
        Self::from_fn(move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// The variable's trimmed value; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A whole number from `min` to `max`, or `default` when unset.
    pub fn number(&self, name: &str, default: u64, min: u64, max: u64) -> anyhow::Result<u64> {
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
    pub fn seconds(&self, name: &str, default: u64) -> anyhow::Result<Duration> {
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

    /// Milliseconds from 1 to an hour, or `default` when unset.
    pub fn millis(&self, name: &str, default: Duration) -> anyhow::Result<Duration> {
        self.number(name, default.as_millis() as u64, 1, 3_600_000)
            .map(Duration::from_millis)
    }

    /// A comma-separated list, each item trimmed, empty items dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        split_list(self.get(name).as_deref())
    }
}

impl Config {
    /// Reads the environment. Fails with a sentence naming the variable on a bad value.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from(&Env::process())
    }

    /// Reads the variables `get` gives (the environment in [`from_env`](Self::from_env)).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        Self::from(&Env::from_fn(get))
    }

    /// Reads the shared server's variables from `vars`.
    pub fn from(vars: &Env<'_>) -> anyhow::Result<Self> {
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
            sse_max: vars.seconds("TIDINGS_SSE_MAX_SECS", 600)?,
            slow_client: vars.millis("TIDINGS_SLOW_CLIENT_MS", Duration::from_secs(10))?,
            limits,
            max_connections: vars.number("TIDINGS_MAX_CONNECTIONS", 20_000, 1, 10_000_000)?
                as usize,
            metrics_token: match vars.get("TIDINGS_METRICS_TOKEN") {
                Some(t) if t.chars().count() < METRICS_TOKEN_MIN_CHARS => anyhow::bail!(
                    "TIDINGS_METRICS_TOKEN must be at least {METRICS_TOKEN_MIN_CHARS} characters (it has {}); \
                     generate one with `openssl rand -hex 16`",
                    t.chars().count()
                ),
                other => other,
            },
            tls: match (vars.get("TIDINGS_TLS_CERT"), vars.get("TIDINGS_TLS_KEY")) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.into(),
                    key: key.into(),
                }),
                _ => anyhow::bail!(
                    "TIDINGS_TLS_CERT and TIDINGS_TLS_KEY go together: set both (PEM files) for HTTPS, or neither; \
                     `tidings dev-cert --out DIR` writes a pair for localhost"
                ),
            },
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
            sse_max: Duration::from_secs(600),
            slow_client: Duration::from_secs(10),
            limits: Limits::open(),
            max_connections: 20_000,
            metrics_token: Some(TEST_METRICS_TOKEN.to_string()),
            tls: None,
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
            ("TIDINGS_MAX_CONNECTIONS", "100"),
        ])
        .unwrap();
        assert_eq!(
            c.limits,
            Limits {
                signups_per_hour: 0,
                streams_per_user: 3,
            }
        );
        assert_eq!(c.max_connections, 100);
        let e = refusal(&[("TIDINGS_MAX_CONNECTIONS", "lots")]);
        assert!(
            e.starts_with("TIDINGS_MAX_CONNECTIONS must be a whole number"),
            "{e}"
        );
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
