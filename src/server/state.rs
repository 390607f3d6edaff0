//! The state every handler shares: the server's configuration, database, token signer,
//! limiters, the registry of live streams, the bus, the metrics sampler, this instance's id,
//! the shutdown signal, and Leptos's options (which `leptos_axum` reads through `FromRef`).
//!
//! It knows no feature: the features' own services (the chat's hub, the job queue) start
//! beside it in `routes::Services`. See docs/architecture.md.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use crate::protocol::Role;
use crate::server::{
    access::limiter::SharedLimiter,
    access::secret,
    access::streams::Streams,
    access::token::Signer,
    clock,
    config::Config,
    edge::forwarded::Client,
    fanout::bus::{Bus, LocalBus},
    fanout::redis_bus::RedisBus,
    observe::metrics::Sampler,
    observe::prometheus::HttpMetrics,
    random,
    shutdown::Shutdown,
    storage::Store,
};

/// Shared by every request; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Where the site's files are and which address to serve (from `Cargo.toml` / `LEPTOS_*`).
    pub leptos_options: LeptosOptions,
    /// Settings from the environment.
    pub config: Arc<Config>,
    /// The database (SQLite or PostgreSQL).
    pub store: Store,
    /// Signs and checks stream tokens with the server's secret.
    pub signer: Arc<Signer>,
    /// Counts failed logins per username and per client address.
    pub login_limiter: Arc<SharedLimiter>,
    /// Counts signups per client address (`TIDINGS_SIGNUP_PER_HOUR`).
    pub signup_limiter: Arc<SharedLimiter>,
    /// The token that signing up as a listed admin needs (see [`AppState::new`]); `None`: no
    /// listed admin can sign up.
    pub setup_token: Option<Arc<str>>,
    /// Every open WebSocket and event stream, by session and user.
    pub streams: Streams,
    /// Redis, when `REDIS_URL` is set (for limits every instance shares).
    pub redis: Option<redis::aio::ConnectionManager>,
    /// The address the server listens on, once it does (the import default without
    /// `TIDINGS_PUBLIC_ORIGIN`).
    pub listening: Arc<OnceLock<SocketAddr>>,
    /// Fires once at shutdown; every long-lived loop selects on it.
    pub shutdown: Shutdown,
    /// The fan-out bus every broadcast goes through: in process, or across instances
    /// through Redis when `REDIS_URL` is set.
    pub bus: Arc<dyn Bus>,
    /// The live metrics, sampled once a second for every dashboard.
    pub metrics: Sampler,
    /// The request-duration histogram `GET /metrics` reports.
    pub http_metrics: HttpMetrics,
    /// This instance's id, made once here: the bus between instances and the job queue's
    /// claims both name the instance by it.
    pub instance: Arc<str>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl AppState {
    /// Opens the database (migrating it), loads or creates the signing key (`server::access::secret`),
    /// connects Redis where configured, and works out the admin setup token.
    pub async fn new(
        config: Config,
        leptos_options: LeptosOptions,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        secret::check(&config)?;
        let store = Store::connect(&config.database_url).await?;
        let secret = secret::signing_key(&config, &store).await?;
        let setup_token = setup_token(&config, &store).await?;
        let metrics = Sampler::start(store.clone(), shutdown.clone());
        let instance: Arc<str> = random::instance_id().into();
        let (bus, redis): (Arc<dyn Bus>, _) = match &config.redis_url {
            Some(url) => {
                let bus = RedisBus::connect(url, &instance, shutdown.clone()).await?;
                let conn = bus.connection();
                (bus, Some(conn))
            }
            None => (Arc::new(LocalBus::new()), None),
        };
        let limiter = |max: u32, window: Duration, name: &'static str| {
            Arc::new(SharedLimiter::new(max, window, name, redis.clone()))
        };
        let streams = Streams::start(
            store.clone(),
            bus.clone(),
            instance.clone(),
            shutdown.clone(),
            config.limits.streams_per_user,
        );
        let state = Self {
            leptos_options,
            login_limiter: limiter(10, Duration::from_secs(300), "login-failures"),
            signup_limiter: limiter(
                config.limits.signups_per_hour,
                Duration::from_secs(3600),
                "signups",
            ),
            config: Arc::new(config),
            store,
            signer: Arc::new(Signer::new(secret.as_bytes())),
            setup_token,
            streams,
            redis,
            listening: Arc::new(OnceLock::new()),
            metrics,
            http_metrics: HttpMetrics::default(),
            shutdown,
            bus,
            instance,
        };
        state.spawn_session_sweeper();
        Ok(state)
    }

    /// A limit of `max` per `window` per key, shared by every instance when Redis is there.
    pub fn limiter(&self, max: u32, window: Duration, name: &'static str) -> SharedLimiter {
        SharedLimiter::new(max, window, name, self.redis.clone())
    }

    /// The role of an account: admin when it was created as one, or when `TIDINGS_ADMINS`
    /// lists its name.
    pub fn role_of(&self, username: &str, stored_admin: bool) -> Role {
        if stored_admin || self.config.admins.contains(username) {
            Role::Admin
        } else {
            Role::User
        }
    }

    /// Whether cookies must be `Secure`: the client came over https, or the public origins
    /// (`TIDINGS_PUBLIC_ORIGIN`) are all https.
    pub fn secure_cookies(&self, client: &Client) -> bool {
        let public = &self.config.public_origins;
        client.https || (!public.is_empty() && public.iter().all(|o| o.https))
    }

    /// The origins this server is reached at, for telling its own URLs from others' (the
    /// import default): the public origins, else the loopback names of the port it listens
    /// on (never the request's `Host`, which a client chooses).
    pub fn own_origins(&self) -> Vec<String> {
        if !self.config.public_origins.is_empty() {
            return self
                .config
                .public_origins
                .iter()
                .map(|o| o.origin.clone())
                .collect();
        }
        let Some(addr) = self.listening.get() else {
            return Vec::new();
        };
        let port = addr.port();
        let mut origins = vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::1]:{port}"),
        ];
        if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
            origins.push(match addr {
                SocketAddr::V4(a) => format!("http://{}:{port}", a.ip()),
                SocketAddr::V6(a) => format!("http://[{}]:{port}", a.ip()),
            });
        }
        origins
    }

    /// Deletes expired sessions once an hour until shutdown.
    fn spawn_session_sweeper(&self) {
        let (store, shutdown) = (self.store.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        match store.delete_expired_sessions(clock::now_ms()).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(removed = n, "expired sessions removed"),
                            Err(e) => tracing::warn!(error = %e, "could not remove expired sessions"),
                        }
                    }
                }
            }
        });
    }
}

/// The token that signing up as one of `TIDINGS_ADMINS` needs: `TIDINGS_SETUP_TOKEN`, or else,
/// while a listed admin has no account, one generated and kept in the database (so every
/// instance on it accepts the same one) and printed in the log. `None` when every listed
/// admin has an account and no token was configured: nobody can sign up under those names.
async fn setup_token(config: &Config, store: &Store) -> anyhow::Result<Option<Arc<str>>> {
    const SETTING: &str = "admin_setup_token";
    let mut listed: Vec<&str> = config.admins.iter().map(String::as_str).collect();
    listed.sort_unstable();
    let missing = store.names_without_accounts(&listed).await?;
    if let Some(token) = &config.setup_token {
        if !missing.is_empty() {
            tracing::info!(admins = ?missing, "signing up as a listed admin needs TIDINGS_SETUP_TOKEN as setupToken");
        }
        return Ok(Some(token.as_str().into()));
    }
    if missing.is_empty() {
        store.delete_setting(SETTING).await?;
        return Ok(None);
    }
    let proposed = crate::server::random::hex::<16>();
    let token = store.setting_or_insert(SETTING, &proposed).await?;
    tracing::warn!(
        admins = ?missing,
        "admin setup: sign up as {} with the setup token {token} (the signup page's \"Setup token\" field, \
         or \"setupToken\" in POST /api/auth/signup); or create the account with `tidings users add NAME --admin`",
        missing.join(" or ")
    );
    Ok(Some(token.into()))
}
