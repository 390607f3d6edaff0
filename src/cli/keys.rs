//! `tidings keys`: an admin's API keys from the terminal, through the same routes as the
//! dashboard (`/api/keys`). `create NAME` prints the key once (on stdout alone, so a script can
//! capture it: `KEY=$(tidings keys create deploy)`), `list` prints one key per line, `revoke ID`
//! revokes at once on every instance.
//!
//! Tests: `tests/it/connections.rs` runs the real binary.

use std::time::Duration;

use anyhow::Context;

use super::{http_client, login, refusal, Connection};
use crate::protocol::keys::{CreateKey, CreatedKey, KeyList};

/// `tidings keys` options.
#[derive(Clone, Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub action: KeysAction,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum KeysAction {
    /// Make a key named NAME (it signs what the key publishes); prints the key, shown once.
    Create { name: String },
    /// List the live keys: id, name, made, last used.
    List,
    /// Revoke the key with this id (`list` shows ids).
    Revoke { id: String },
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let http = http_client(Duration::from_secs(30))?;
    login(&http, &args.conn).await?;
    match args.action {
        KeysAction::Create { name } => {
            let res = http
                .post(args.conn.url("/api/keys"))
                .json(&CreateKey { name })
                .send()
                .await?;
            if !res.status().is_success() {
                anyhow::bail!("making the key failed: {}", refusal(res).await);
            }
            let created: CreatedKey = res.json().await.context("the answer is not a key")?;
            eprintln!(
                "made key {} ({}); it is shown only now, keep it safe:",
                created.id, created.name
            );
            println!("{}", created.key);
        }
        KeysAction::List => {
            let res = http.get(args.conn.url("/api/keys")).send().await?;
            if !res.status().is_success() {
                anyhow::bail!("listing keys failed: {}", refusal(res).await);
            }
            let list: KeyList = res.json().await.context("the answer is not a key list")?;
            for k in list.keys {
                println!(
                    "{}\t{}\tmade {} by {}\tlast used {}",
                    k.id,
                    k.name,
                    k.created_at,
                    k.created_by,
                    k.last_used_at.as_deref().unwrap_or("never")
                );
            }
        }
        KeysAction::Revoke { id } => {
            let res = http
                .delete(args.conn.url(&format!("/api/keys/{id}")))
                .send()
                .await?;
            if !res.status().is_success() {
                anyhow::bail!("revoking {id} failed: {}", refusal(res).await);
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
