//! The key that signs stream tokens, and where it is kept.
//!
//! - `TIDINGS_SECRET` (at least 32 bytes, checked by `config`): used as is. Every instance of a
//!   deployment must have the same one.
//! - Unset, on an SQLite file: a random key in a file beside the database (`tidings.db` →
//!   `tidings.key`), created readable and writable by its owner only (mode 0600). Not in the
//!   database: whoever can read a backup of the database should not be able to mint tokens.
//!   A key that round 1 kept in the `settings` table moves into the file (tokens already
//!   handed out stay valid) and leaves the table. Instances started together on one file
//!   agree on one key: each writes its proposal to a file of its own and links it into place,
//!   and whoever loses the race reads the winner's.
//! - Unset, on PostgreSQL: the server refuses to start; there is no shared folder to keep a
//!   key in, and a key in the database is what we are avoiding.
//! - Unset, on an in-memory SQLite database: a random key for this process.
//!
//! Tests: `cargo test --features ssr server::access::secret`.

use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::server::{
    config::SECRET_MIN_BYTES,
    storage::{Backend, Store},
    Config,
};

/// Where round 1 kept the key.
const OLD_SETTING: &str = "stream_token_secret";

/// Fails, before anything connects, when the configuration cannot have a key: PostgreSQL
/// without `TIDINGS_SECRET`.
pub fn check(config: &Config) -> anyhow::Result<()> {
    if config.secret.is_none() && Backend::of_url(&config.database_url)? == Backend::Postgres {
        anyhow::bail!(
            "TIDINGS_SECRET must be set on PostgreSQL: every instance needs the same key to sign \
             stream tokens, and it is not kept in the database. Generate one with \
             `openssl rand -hex 32` and give it to every instance"
        );
    }
    Ok(())
}

/// The signing key for this server (see the module docs).
pub async fn signing_key(config: &Config, store: &Store) -> anyhow::Result<String> {
    if let Some(secret) = &config.secret {
        return Ok(secret.clone());
    }
    if store.backend() == Backend::Postgres {
        check(config)?;
    }
    let Some(db) = store.sqlite_file() else {
        return Ok(random_key());
    };
    let path = key_file(db);
    if let Some(key) = read_key(&path)? {
        // A key that round 1 also left in the database goes from there now.
        store.delete_setting(OLD_SETTING).await?;
        return Ok(key);
    }
    let proposed = match store.setting(OLD_SETTING).await? {
        Some(old) if old.len() >= SECRET_MIN_BYTES => old,
        _ => random_key(),
    };
    let key = write_key(&path, &proposed)?;
    store.delete_setting(OLD_SETTING).await?;
    tracing::info!(file = %path.display(), "the stream-token key is kept in a file readable by its owner only");
    Ok(key)
}

/// The key file beside an SQLite database file.
pub fn key_file(db: &Path) -> PathBuf {
    db.with_extension("key")
}

/// 32 random bytes, hex.
fn random_key() -> String {
    crate::server::random::hex::<32>()
}

/// The key in `path`, if the file exists; its permissions narrowed to the owner's if they
/// were wider.
fn read_key(path: &Path) -> anyhow::Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read the key file {}: {e}", path.display()),
    };
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "the key file was readable by others; narrowed to its owner");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            anyhow::anyhow!(
                "cannot narrow the key file {}'s permissions: {e}",
                path.display()
            )
        })?;
    }
    let key = text.trim().to_string();
    if key.len() < SECRET_MIN_BYTES {
        anyhow::bail!(
            "the key file {} is damaged (shorter than {SECRET_MIN_BYTES} bytes); delete it to make \
             a new key (stream tokens already handed out then stop working)",
            path.display()
        );
    }
    Ok(Some(key))
}

/// Puts `proposed` in `path` unless another process got there first; returns the key the
/// file holds.
fn write_key(path: &Path, proposed: &str) -> anyhow::Result<String> {
    let tmp = path.with_extension(format!(
        "key.{}-{}",
        std::process::id(),
        crate::server::random::hex::<6>()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(proposed.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("cannot write the key file {}: {e}", path.display());
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(proposed.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(path)?
            .ok_or_else(|| anyhow::anyhow!("the key file {} vanished", path.display())),
        Err(e) => anyhow::bail!("cannot create the key file {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_secret() -> Config {
        Config {
            secret: None,
            ..Config::for_tests("sqlite::memory:")
        }
    }

    #[tokio::test]
    async fn a_key_file_is_made_once_readable_by_its_owner_only() {
        let (dir, store) = crate::server::storage::temp_store().await;
        let key = signing_key(&no_secret(), &store).await.unwrap();
        assert!(key.len() >= SECRET_MIN_BYTES);
        let path = key_file(store.sqlite_file().unwrap());
        assert!(path.starts_with(dir.path()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            signing_key(&no_secret(), &store).await.unwrap(),
            key,
            "kept"
        );
        assert_eq!(
            store.setting(OLD_SETTING).await.unwrap(),
            None,
            "not in the database"
        );

        // Opened up by hand: narrowed again, same key.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(signing_key(&no_secret(), &store).await.unwrap(), key);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // A damaged file is named, not silently replaced.
        std::fs::write(&path, "short").unwrap();
        let e = signing_key(&no_secret(), &store)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("is damaged"), "{e}");
    }

    #[tokio::test]
    async fn a_key_kept_in_the_database_moves_into_the_file() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let old = "f".repeat(64);
        store.setting_or_insert(OLD_SETTING, &old).await.unwrap();
        assert_eq!(signing_key(&no_secret(), &store).await.unwrap(), old);
        assert_eq!(store.setting(OLD_SETTING).await.unwrap(), None);
        let path = key_file(store.sqlite_file().unwrap());
        assert_eq!(std::fs::read_to_string(path).unwrap().trim(), old);
    }

    #[test]
    fn racing_writers_agree_on_the_first_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.key");
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert_eq!(write_key(&path, &a).unwrap(), a);
        assert_eq!(
            write_key(&path, &b).unwrap(),
            a,
            "the loser reads the winner's"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary files left behind");
    }

    #[test]
    fn postgres_needs_the_variable() {
        let pg = Config {
            secret: None,
            ..Config::for_tests("postgres://u@127.0.0.1:1/db")
        };
        let e = check(&pg).unwrap_err().to_string();
        assert!(
            e.starts_with("TIDINGS_SECRET must be set on PostgreSQL"),
            "{e}"
        );
        assert!(check(&Config::for_tests("postgres://u@127.0.0.1:1/db")).is_ok());
        assert!(check(&no_secret()).is_ok(), "SQLite keeps a key file");
    }

    #[tokio::test]
    async fn the_variable_wins() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let config = Config::for_tests("sqlite::memory:");
        assert_eq!(
            signing_key(&config, &store).await.unwrap(),
            config.secret.clone().unwrap()
        );
        assert!(!key_file(store.sqlite_file().unwrap()).exists());
    }
}
