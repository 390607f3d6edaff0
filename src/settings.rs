//! Every setting, read once at start: the shared server's [`Config`] and each feature's own
//! (the chat's, the job queue's, the export's), all through one [`Env`] loader, so a bad
//! value anywhere fails the start with a sentence naming its variable.
//!
//! Above the features (it names them all), beside `routes`. Tests build one with
//! [`Settings::for_tests`] and change what they need.

use crate::{
    assistant::settings::AssistantConfig,
    chat::settings::ChatConfig,
    export::settings::ExportReader,
    jobs::settings::JobsConfig,
    server::config::{Config, Env},
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
    pub export: ExportReader,
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
        Ok(Self {
            server: Config::from(vars)?,
            chat: ChatConfig::from(vars)?,
            jobs: JobsConfig::from(vars)?,
            export: ExportReader::from(vars)?,
            assistant: AssistantConfig::from(vars)?,
        })
    }

    /// The settings tests start from: [`Config::for_tests`] on `database_url`, and each
    /// feature's own test settings.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            server: Config::for_tests(database_url),
            chat: ChatConfig::for_tests(),
            jobs: JobsConfig::for_tests(),
            export: ExportReader::default(),
            assistant: AssistantConfig::for_tests(),
        }
    }
}
