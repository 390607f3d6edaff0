//! The state every handler shares: configuration, database, token signer, login limiter,
//! shutdown signal, and Leptos's options (which `leptos_axum` reads through `FromRef`).

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use super::{
    bus::{Bus, LocalBus},
    clock,
    config::Config,
    limiter::LoginLimiter,
    metrics::Sampler,
    redis_bus::RedisBus,
    shutdown::Shutdown,
    storage::Store,
    token::Signer,
};
use crate::protocol::Role;

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
    pub login_limiter: Arc<LoginLimiter>,
    /// Fires once at shutdown; every long-lived loop selects on it.
    pub shutdown: Shutdown,
    /// The fan-out bus every broadcast goes through (in-process for now).
    pub bus: Arc<dyn Bus>,
    /// The live metrics, sampled once a second for every dashboard.
    pub metrics: Sampler,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl AppState {
    /// Opens the database (migrating it) and loads or creates the signing secret.
    pub async fn new(
        config: Config,
        leptos_options: LeptosOptions,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database_url).await?;
        let secret = match &config.secret {
            Some(s) => s.clone(),
            None => {
                let mut bytes = [0u8; 32];
                getrandom::getrandom(&mut bytes)?;
                let proposed = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
                store
                    .setting_or_insert("stream_token_secret", &proposed)
                    .await?
            }
        };
        let metrics = Sampler::start(store.clone(), shutdown.clone());
        let (bus, login_limiter): (Arc<dyn Bus>, LoginLimiter) = match &config.redis_url {
            Some(url) => {
                let bus = RedisBus::connect(url, shutdown.clone()).await?;
                let limiter = LoginLimiter::shared(bus.connection());
                (bus, limiter)
            }
            None => (Arc::new(LocalBus::new()), LoginLimiter::local()),
        };
        let state = Self {
            leptos_options,
            config: Arc::new(config),
            store,
            signer: Arc::new(Signer::new(secret.as_bytes())),
            login_limiter: Arc::new(login_limiter),
            metrics,
            shutdown,
            bus,
        };
        state.spawn_session_sweeper();
        Ok(state)
    }

    /// The role `TIDINGS_ADMINS` gives a username.
    pub fn role_of(&self, username: &str) -> Role {
        if self.config.admins.contains(username) {
            Role::Admin
        } else {
            Role::User
        }
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
