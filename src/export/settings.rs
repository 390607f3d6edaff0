//! The export's settings, `TIDINGS_EXPORT_READER`, `TIDINGS_EXPORT_THREADS` and
//! `TIDINGS_EXPORT_CACHE_MB`, read through the server's one loader.
//!
//! Tests: `cargo test --features ssr export::settings`.

use crate::server::config::Env;

/// Most threads one export may read and format on.
pub const EXPORT_THREADS_MAX: u64 = 8;
/// The export cache's default size, in MB (about 4,000,000 of the app's own audit rows).
pub const EXPORT_CACHE_MB_DEFAULT: u64 = 1024;

/// How exports read SQLite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// Which reader (`TIDINGS_EXPORT_READER`).
    pub reader: ExportReader,
    /// Threads one export reads and formats pages on with the rusqlite reader
    /// (`TIDINGS_EXPORT_THREADS`, 1 to [`EXPORT_THREADS_MAX`], default 2); the sqlx reader
    /// and exports with a `limit` or a `delayMs` use one.
    pub threads: u8,
    /// Most disk the export cache may take, in MB (`TIDINGS_EXPORT_CACHE_MB`, default
    /// [`EXPORT_CACHE_MB_DEFAULT`]; 0 turns it off). SQLite files only: see `export::cache`.
    pub cache_mb: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            reader: ExportReader::Auto,
            threads: 2,
            cache_mb: EXPORT_CACHE_MB_DEFAULT,
        }
    }
}

impl ExportConfig {
    /// Reads both variables.
    pub fn from(vars: &Env<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            reader: ExportReader::from(vars)?,
            threads: vars.number("TIDINGS_EXPORT_THREADS", 2, 1, EXPORT_THREADS_MAX)? as u8,
            cache_mb: vars.number(
                "TIDINGS_EXPORT_CACHE_MB",
                EXPORT_CACHE_MB_DEFAULT,
                0,
                1_000_000_000,
            )?,
        })
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

impl ExportReader {
    /// Reads `TIDINGS_EXPORT_READER`: `auto` (default): a dedicated rusqlite connection on
    /// SQLite files, the measured fast path; `sqlx`: the portable path PostgreSQL always uses
    /// (for comparing the two).
    pub fn from(vars: &Env<'_>) -> anyhow::Result<Self> {
        match vars.get("TIDINGS_EXPORT_READER").as_deref() {
            None | Some("auto") => Ok(Self::Auto),
            Some("sqlx") => Ok(Self::Sqlx),
            Some(other) => {
                anyhow::bail!("TIDINGS_EXPORT_READER must be auto or sqlx, not {other:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_sqlx_or_a_sentence() {
        let env = |v: &'static str| Env::from_fn(move |_| Some(v.to_string()));
        assert_eq!(
            ExportReader::from(&env("sqlx")).unwrap(),
            ExportReader::Sqlx
        );
        assert_eq!(ExportReader::from(&env(" ")).unwrap(), ExportReader::Auto);
        let e = ExportReader::from(&env("fast")).unwrap_err().to_string();
        assert!(
            e.contains("TIDINGS_EXPORT_READER must be auto or sqlx"),
            "{e}"
        );
    }

    #[test]
    fn threads_default_to_two_within_one_to_eight() {
        let read = |pairs: &[(&str, &str)]| ExportConfig::from(&Env::from_pairs(pairs));
        assert_eq!(read(&[]).unwrap(), ExportConfig::default());
        assert_eq!(read(&[]).unwrap().threads, 2);
        assert_eq!(read(&[("TIDINGS_EXPORT_THREADS", "1")]).unwrap().threads, 1);
        for bad in ["0", "9", "two"] {
            let e = read(&[("TIDINGS_EXPORT_THREADS", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("TIDINGS_EXPORT_THREADS"), "{e}");
        }
    }

    #[test]
    fn the_cache_defaults_to_a_gigabyte_and_zero_turns_it_off() {
        let read = |pairs: &[(&str, &str)]| ExportConfig::from(&Env::from_pairs(pairs));
        assert_eq!(read(&[]).unwrap().cache_mb, 1024);
        assert_eq!(
            read(&[("TIDINGS_EXPORT_CACHE_MB", "0")]).unwrap().cache_mb,
            0
        );
        for bad in ["-1", "lots", "1.5"] {
            let e = read(&[("TIDINGS_EXPORT_CACHE_MB", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("TIDINGS_EXPORT_CACHE_MB must be a whole number"),
                "{e}"
            );
        }
    }
}
