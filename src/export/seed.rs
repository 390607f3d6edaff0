//! `tidings seed --audit-rows N`: adds N synthetic audit rows for demos and benchmarks.
//!
//! Rows are written in transactions of [`ROWS_PER_TRANSACTION`], several hundred per
//! statement, so a million rows take seconds, not minutes. Each row is shaped like the real
//! ones (an action, a username, a small JSON detail) and is about 225 bytes as an NDJSON line,
//! the size the export benchmark is specified for. Their times are spread over the last N
//! seconds, oldest first, so ids and times ascend together.

use crate::server::{
    clock,
    storage::{audit::NewAuditRow, Store},
};

/// Rows per transaction (and per progress update).
pub const ROWS_PER_TRANSACTION: u64 = 10_000;

const ACTIONS: &[&str] = &[
    "LOGIN",
    "LOGOUT",
    "EXPORT",
    "IMPORT",
    "JOB_CREATE",
    "NOTIFY",
    "SIGNUP",
];

/// The synthetic row number `i` (of `total`, ending at `now_ms`): `(at, action, user, detail)`.
pub fn synthetic_row(i: u64, total: u64, now_ms: i64) -> NewAuditRow {
    let at = now_ms - (total - i) as i64 * 1000;
    let action = ACTIONS[(i % ACTIONS.len() as u64) as usize].to_string();
    let user = format!("user{:04}", i % 500);
    let detail = serde_json::json!({
        "ip": format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        "seq": i,
        "agent": "tidings-seed/1.0",
        "path": "/api/auth/login",
        "note": "synthetic row for demos and benchmarks",
    })
    .to_string();
    NewAuditRow {
        at,
        action,
        username: user,
        detail,
    }
}

/// Writes `total` synthetic rows, calling `progress(rows_written_so_far)` after each
/// transaction. Returns the number written.
pub async fn seed_audit_rows(
    store: &Store,
    total: u64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let now = clock::now_ms();
    let mut written = 0;
    let mut batch = Vec::with_capacity(ROWS_PER_TRANSACTION as usize);
    while written < total {
        let end = (written + ROWS_PER_TRANSACTION).min(total);
        batch.clear();
        batch.extend((written..end).map(|i| synthetic_row(i, total, now)));
        written += store.audit_many(&batch).await?;
        progress(written);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AuditRow;

    #[test]
    fn rows_are_about_225_bytes_as_ndjson_and_ascend_in_time() {
        let NewAuditRow {
            at,
            action,
            username: user,
            detail,
        } = synthetic_row(123_456, 1_000_000, 1_700_000_000_000);
        let line = serde_json::to_string(&AuditRow {
            id: 123_457,
            at: clock::rfc3339(at),
            action,
            user,
            detail: serde_json::from_str(&detail).unwrap(),
        })
        .unwrap();
        assert!(
            (215..=235).contains(&line.len()),
            "{} bytes: {line}",
            line.len()
        );
        assert!(synthetic_row(1, 10, 0).at > synthetic_row(0, 10, 0).at);
    }

    #[tokio::test]
    async fn seeds_exactly_the_rows_asked_for_with_progress() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let mut seen = Vec::new();
        let n = seed_audit_rows(&store, 25_001, |w| seen.push(w))
            .await
            .unwrap();
        assert_eq!(n, 25_001);
        assert_eq!(seen, [10_000, 20_000, 25_001]);
        assert_eq!(store.audit_count().await.unwrap(), 25_001);
    }
}
