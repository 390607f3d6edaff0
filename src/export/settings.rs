//! The export's one setting, `TIDINGS_EXPORT_READER`, read through the server's one loader.
//!
//! Tests: `cargo test --features ssr export::settings`.

use crate::server::config::Env;

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
}
