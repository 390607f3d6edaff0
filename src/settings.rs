//! Every setting, read once at start: the shared server's [`Config`] and each feature's own
//! (the chat's, the job queue's, the export's), all through one [`Env`] loader, so a bad
//! value anywhere fails the start with a sentence naming its variable.
//!
//! Above the features (it names them all), beside `routes`. Tests build one with
//! [`Settings::for_tests`] and change what they need.

use crate::{
    assistant::settings::AssistantConfig,
    chat::settings::ChatConfig,
    export::settings::ExportConfig,
    jobs::settings::JobsConfig,
    server::{
        config::{Config, Env},
        storage::Backend,
    },
};

/// Everything the server and its features are configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What every feature shares (database, origins, proxies, limits, …).
    pub server: Config,
    /// Rooms, presence, the WebSocket's ping.
    pub chat: ChatConfig,
    /// The job queue and imports.
    pub jobs: JobsConfig,
    /// How the export reads SQLite.
    pub export: ExportConfig,
    /// Which model answers the assistant, and its limits.
    pub assistant: AssistantConfig,
}

impl Settings {
    /// Reads the process's environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from(&Env::process())
    }

    /// Reads every part from `vars`.
    pub fn from(vars: &Env<'_>) -> anyhow::Result<Self> {
        let settings = Self {
            server: Config::from(vars)?,
            chat: ChatConfig::from(vars)?,
            jobs: JobsConfig::from(vars)?,
            export: ExportConfig::from(vars)?,
            assistant: AssistantConfig::from(vars)?,
        };
        // An SQLite file has one instance: with no workers, its jobs would wait forever.
        let backend = Backend::of_url(&settings.server.database_url).ok();
        if settings.jobs.workers == Some(0) && backend != Some(Backend::Postgres) {
            anyhow::bail!(
                "TIDINGS_JOB_WORKERS=0 leaves the jobs to other instances, which need a shared \
                 PostgreSQL database; on SQLite nothing would run them (give 1 to 256)"
            );
        }
        Ok(settings)
    }

    /// The settings tests start from: [`Config::for_tests`] on `database_url`, and each
    /// feature's own test settings.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            server: Config::for_tests(database_url),
            chat: ChatConfig::for_tests(),
            jobs: JobsConfig::for_tests(),
            export: ExportConfig::default(),
            assistant: AssistantConfig::for_tests(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &'static [(&'static str, &'static str)]) -> anyhow::Result<Settings> {
        Settings::from(&Env::from_pairs(pairs))
    }

    #[test]
    fn no_workers_needs_a_shared_postgresql_database() {
        let e = read(&[
            ("DATABASE_URL", "sqlite://tidings.db?mode=rwc"),
            ("TIDINGS_JOB_WORKERS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("TIDINGS_JOB_WORKERS=0"), "{e}");
        let pg = read(&[
            ("DATABASE_URL", "postgres://tidings@127.0.0.1/tidings"),
            (
                "TIDINGS_SECRET",
                "a secret of at least thirty-two bytes, for tests",
            ),
            ("TIDINGS_JOB_WORKERS", "0"),
        ])
        .unwrap();
        assert_eq!(pg.jobs.workers, Some(0));
    }
}
