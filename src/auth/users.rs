//! `tidings users add NAME [--admin]`: creates an account straight in `DATABASE_URL`'s
//! database, with the password from `TIDINGS_PASSWORD` (never an argument, which `ps` and the
//! shell's history would show). The way to make the first admin without the setup token, and
//! the way to add an admin whose name is not in `TIDINGS_ADMINS`.
//!
//! Tests: `tests/it/binary.rs` runs it and signs in as the new admin.

use crate::server::{storage::Store, Config};

/// `tidings users …`.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create an account (password from TIDINGS_PASSWORD).
    Add {
        /// The username: 2 to 32 characters, a-z, 0-9, '_', '.' and '-'.
        name: String,
        /// Make it an admin (whatever TIDINGS_ADMINS says).
        #[arg(long)]
        admin: bool,
    },
}

/// Runs a `users` subcommand.
pub async fn run(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add { name, admin } => {
            let password = std::env::var("TIDINGS_PASSWORD").map_err(|_| {
                anyhow::anyhow!(
                    "set TIDINGS_PASSWORD to the new account's password (at least 8 characters)"
                )
            })?;
            let config = Config::from_env()?;
            let store = Store::connect(&config.database_url).await?;
            let created = super::create_account(&store, &name, &password, admin).await;
            store.close().await;
            created?;
            let role = if admin || config.admins.contains(&name) {
                "an admin"
            } else {
                "a user"
            };
            println!(
                "created {name}, {role}, in {}",
                crate::server::storage::redact(&config.database_url)
            );
            Ok(())
        }
    }
}
