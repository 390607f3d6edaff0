//! `tidings export`, the real binary: it streams a verified file, resumes by itself when its
//! connection is cut mid-export (through a proxy that cuts it), and says clearly why it stops.

use crate::common;

use std::{process::Stdio, sync::atomic::Ordering};

use common::{cutting_proxy, TestServer, PASSWORD};
use tidings::protocol::{AuditRow, ExportLine};

async fn seeded(rows: i64) -> TestServer {
    let srv = TestServer::start().await;
    srv.signup(&srv.client(), "admin").await;
    srv.signup(&srv.client(), "eve").await;
    let batch: Vec<_> = (0..rows)
        .map(|i| tidings::server::storage::audit::NewAuditRow {
            at: 1_700_000_000_000 + i,
            action: "LOGIN".to_string(),
            username: format!("user{}", i % 10),
            detail: format!("{{\"seq\":{i},\"pad\":\"{}\"}}", "x".repeat(150)),
        })
        .collect();
    srv.state.store.audit_many(&batch).await.unwrap();
    srv
}

fn tidings_export(server: &str, user: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDINGS_PASSWORD", PASSWORD)
        .args(["export", "--server", server, "--username", user, "--quiet"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test]
async fn a_cut_connection_is_resumed_with_no_gap_and_no_duplicate() {
    let srv = seeded(20_000).await;
    let (proxy, cut) = cutting_proxy(srv.base.clone(), 1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.ndjson");
    let output = tidings_export(
        &proxy,
        "admin",
        &["--batch", "500", "--out", out.to_str().unwrap()],
    )
    .output()
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(cut.load(Ordering::SeqCst), "the proxy did cut a connection");
    assert!(stderr.contains("connection dropped after id"), "{stderr}");
    assert!(stderr.contains("resumed 1 times"), "{stderr}");

    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<AuditRow> = text
        .lines()
        .map(|l| match serde_json::from_str::<ExportLine>(l).unwrap() {
            ExportLine::Row(row) => row,
            ExportLine::Trailer(_) => panic!("trailers are not written to the file"),
        })
        .collect();
    // Two SIGNUP rows, then the seeded rows: ids 1..=20002, each exactly once, in order. The
    // CLI's own LOGIN row follows; the resumed request takes a fresh snapshot, so the cut
    // export's own EXPORT row may too.
    assert!(rows.len() >= 20_002, "{} rows", rows.len());
    if let Some((i, row)) = rows.iter().enumerate().find(|(i, r)| r.id != *i as i64 + 1) {
        panic!("row {i} has id {}: a gap or a duplicate", row.id);
    }
    assert_eq!(rows[20_002].action, "LOGIN");
    assert!(rows[20_003..].iter().all(|r| r.action == "EXPORT"));
}

#[tokio::test]
async fn csv_output_with_filters_and_limit() {
    let srv = seeded(1_000).await;
    let output = tidings_export(
        &srv.base,
        "admin",
        &["--format", "csv", "--user", "user3", "--limit", "7"],
    )
    .output()
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "id,at,action,user,detail");
    assert_eq!(lines.len(), 8);
    assert!(lines[1].starts_with("6,2023-11-14T22:13:20.003Z,LOGIN,user3,\"{\"\"seq\"\":3,"));
}

#[tokio::test]
async fn refusals_are_final_and_explained() {
    let srv = seeded(10).await;
    let output = tidings_export(&srv.base, "eve", &[])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Only admins may export"), "{stderr}");

    let output = tidings_export(&srv.base, "admin", &["--batch", "0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("`batch`"));

    let mut cmd = tidings_export(&srv.base, "admin", &[]);
    cmd.env("TIDINGS_PASSWORD", "wrong password!");
    let output = cmd.output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("signing in as admin failed"));
}
