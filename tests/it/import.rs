//! Import jobs through the real server: from another Tidings server's export (rows kept with
//! their ids, idempotent), from a source that sends a bad line and drops the connection
//! (warning with the line number, resumed from the last id, nothing lost), and from sources
//! that must be refused.

use crate::common;

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::Query, http::header, response::IntoResponse, routing::get, Router};
use common::{post_json, TestServer};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

/// Reads a job's events to the end; returns (event name, data) pairs.
async fn job_events(srv: &TestServer, client: &reqwest::Client, id: i64) -> Vec<(String, Value)> {
    let res = client
        .get(srv.url(&format!("/api/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    let mut events = res.bytes_stream().eventsource();
    let mut got = Vec::new();
    let read = async {
        while let Some(e) = events.next().await {
            let e = e.unwrap();
            got.push((e.event, serde_json::from_str(&e.data).unwrap()));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the import ends");
    got
}

/// Every id in `srv`'s audit log, read through its export.
async fn ids(srv: &TestServer, admin: &reqwest::Client) -> Vec<i64> {
    let text = admin
        .get(srv.url("/api/audit/export?batch=10000"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

async fn start_import(
    srv: &TestServer,
    admin: &reqwest::Client,
    source: &str,
) -> reqwest::Response {
    post_json(
        admin,
        &srv.url("/api/audit/import"),
        json!({ "source": source }),
    )
    .await
}

#[tokio::test]
async fn rows_from_another_servers_export_arrive_with_their_ids_once() {
    let source = TestServer::start().await;
    let source_admin = source.client();
    source.signup(&source_admin, "admin").await;
    let rows: Vec<_> = (0..5000)
        .map(|i| tidings::server::storage::audit::AuditRecord {
            id: 10_000 + i,
            row: tidings::server::storage::audit::NewAuditRow {
                at: 1_700_000_000_000 + i,
                action: "LOGIN".to_string(),
                username: format!("user{}", i % 7),
                detail: format!("{{\"seq\":{i}}}"),
            },
        })
        .collect();
    source.state.store.audit_import(&rows).await.unwrap();
    let token = source.stream_token(&source_admin).await;
    let url = source.url(&format!(
        "/api/audit/export?after=9999&limit=5000&token={}",
        token
    ));

    let base = source.base.clone();
    let target =
        TestServer::start_with(move |c| c.jobs.import_sources = vec![format!("{base}/")]).await;
    let admin = target.client();
    target.signup(&admin, "admin").await;
    let res = start_import(&target, &admin, &url).await;
    assert_eq!(res.status(), 201);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["kind"], "import");
    let events = job_events(&target, &admin, job["id"].as_i64().unwrap()).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "complete", "{events:?}");
    assert!(
        data["message"].as_str().unwrap().contains("5000 new"),
        "{data}"
    );
    // The source's own `after` and `limit` were kept, and its token is not shown.
    let started = &events[0].1["message"];
    assert!(
        started.as_str().unwrap().contains("after=9999"),
        "{started}"
    );
    assert!(!started.as_str().unwrap().contains(&token), "{started}");
    assert!(events.iter().any(|(e, _)| e == "progress"));
    let imported: Vec<i64> = ids(&target, &admin)
        .await
        .into_iter()
        .filter(|id| (10_000..15_000).contains(id))
        .collect();
    assert_eq!(imported, (10_000..15_000).collect::<Vec<_>>());

    // Again: idempotent, nothing doubled.
    let res = start_import(&target, &admin, &url).await;
    let job: Value = res.json().await.unwrap();
    let events = job_events(&target, &admin, job["id"].as_i64().unwrap()).await;
    let (_, data) = events.last().unwrap();
    assert!(
        data["message"].as_str().unwrap().contains("0 new"),
        "{data}"
    );
    let again = ids(&target, &admin).await;
    assert_eq!(
        again
            .iter()
            .filter(|id| (10_000..15_000).contains(*id))
            .count(),
        5000
    );
}

/// A source that serves rows 1..=40 as NDJSON: line 3 is broken, and the first request ends
/// after id 20 and half a line, without a trailer (a dropped stream); requests with `after`
/// get the rest.
async fn flaky_source() -> (String, Arc<AtomicU32>) {
    let requests = Arc::new(AtomicU32::new(0));
    let count = requests.clone();
    let app = Router::new()
        .route(
            "/export",
            get(move |Query(q): Query<Vec<(String, String)>>| {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    let after: i64 = q
                        .iter()
                        .find(|(k, _)| k == "after")
                        .map(|(_, v)| v.parse().unwrap())
                        .unwrap_or(0);
                    let mut body = String::new();
                    let end = if after == 0 { 20 } else { 40 };
                    for id in after + 1..=end {
                        if id == 3 && after == 0 {
                            body.push_str("{\"id\":3,\"at\": not json\n");
                            continue;
                        }
                        body.push_str(&format!(
                            "{{\"id\":{id},\"at\":\"2026-11-23T10:00:00.000Z\",\"action\":\"LOGIN\",\"user\":\"x\",\"detail\":{{\"n\":{id}}}}}\n"
                        ));
                    }
                    if after == 0 {
                        // The connection drops in the middle of row 21.
                        body.push_str("{\"id\":21,\"at\":\"2026-11");
                    }
                    if end == 40 {
                        body.push_str(&format!("{{\"done\":true,\"rows\":{},\"lastId\":40}}\n", 40 - after));
                    }
                    ([(header::CONTENT_TYPE, "application/x-ndjson")], body)
                }
            }),
        )
        .route(
            "/plain",
            // An export without `trailer=true` support: rows 1..=5, no trailer.
            get(|Query(q): Query<Vec<(String, String)>>| async move {
                let after: i64 = q
                    .iter()
                    .find(|(k, _)| k == "after")
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let body: String = (after + 1..=5)
                    .map(|id| format!(
                        "{{\"id\":{id},\"at\":\"2026-11-23T10:00:00.000Z\",\"action\":\"LOGIN\",\"user\":\"x\",\"detail\":{{}}}}\n"
                    ))
                    .collect();
                ([(header::CONTENT_TYPE, "application/x-ndjson")], body)
            }),
        )
        .route(
            "/ids",
            // Rows whose ids JavaScript could not hold exactly, or that no export writes.
            get(|| async {
                let row = |id: &str| format!(
                    "{{\"id\":{id},\"at\":\"2026-11-23T10:00:00.000Z\",\"action\":\"LOGIN\",\"user\":\"x\",\"detail\":{{}}}}\n"
                );
                let body = [row("0"), row("-5"), row("7"), row("9007199254740993"), row("9007199254740992")]
                    .concat()
                    + "{\"done\":true,\"rows\":5,\"lastId\":9007199254740993}\n";
                ([(header::CONTENT_TYPE, "application/x-ndjson")], body)
            }),
        )
        .route(
            "/page",
            get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html>hello</html>").into_response() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, requests)
}

#[tokio::test]
async fn a_bad_line_is_a_warning_and_a_dropped_stream_resumes_from_the_last_id() {
    let (source, requests) = flaky_source().await;
    let prefix = format!("{source}/");
    let srv = TestServer::start_with(move |c| c.jobs.import_sources = vec![prefix]).await;
    let admin = srv.client();
    srv.signup(&admin, "admin").await;
    let res = start_import(&srv, &admin, &format!("{source}/export")).await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let events = job_events(&srv, &admin, id).await;
    let warnings: Vec<String> = events
        .iter()
        .filter(|(e, _)| e == "warning")
        .map(|(_, d)| d["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("Line 3 ")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w == "Line 21 was cut short; skipped."),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("without its trailer") && w.contains("from id 20")),
        "{warnings:?}"
    );
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "complete", "{events:?}");
    assert!(
        data["message"].as_str().unwrap().contains("2 bad lines"),
        "{data}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    let stored: Vec<i64> = ids(&srv, &admin).await;
    let wanted: Vec<i64> = (1..=40).filter(|i| *i != 3).collect();
    for id in &wanted {
        assert!(stored.contains(id), "id {id} imported");
    }
}

#[tokio::test]
async fn ids_outside_1_to_2_pow_53_are_warnings_and_skipped() {
    let (source, _) = flaky_source().await;
    let prefix = format!("{source}/");
    let srv = TestServer::start_with(move |c| c.jobs.import_sources = vec![prefix]).await;
    let admin = srv.client();
    srv.signup(&admin, "admin").await;
    let res = start_import(&srv, &admin, &format!("{source}/ids")).await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let events = job_events(&srv, &admin, id).await;
    let warnings: Vec<String> = events
        .iter()
        .filter(|(e, _)| e == "warning")
        .map(|(_, d)| d["message"].as_str().unwrap().to_string())
        .collect();
    for (line, id) in [(1, "0"), (2, "-5"), (4, "9007199254740993")] {
        let want = format!("Line {line}: id {id} is outside 1 to 2^53");
        assert!(
            warnings.iter().any(|w| w.starts_with(&want)),
            "{want}: {warnings:?}"
        );
    }
    assert_eq!(events.last().unwrap().0, "complete", "{events:?}");
    // The imported rows (their user is "x"; the app's own rows come after them).
    let text = admin
        .get(srv.url("/api/audit/export"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let imported: Vec<i64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|row| row["user"] == "x")
        .map(|row| row["id"].as_i64().unwrap())
        .collect();
    assert_eq!(imported, [7, 9007199254740992]);
}

#[tokio::test]
async fn sources_that_cannot_be_used_are_refused_or_fail_with_the_reason() {
    let (source, _) = flaky_source().await;
    let prefix = format!("{source}/");
    let srv = TestServer::start_with(move |c| c.jobs.import_sources = vec![prefix]).await;
    let admin = srv.client();
    srv.signup(&admin, "admin").await;

    for bad in [
        "http://elsewhere.example/export",
        "not a url",
        "",
        "ftp://x/y",
    ] {
        let res = start_import(&srv, &admin, bad).await;
        assert_eq!(res.status(), 400, "{bad:?}");
        let body: Value = res.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().starts_with("`source`"),
            "{body}"
        );
    }
    let user = srv.client();
    srv.signup(&user, "ann").await;
    let res = start_import(&srv, &user, &format!("{source}/export")).await;
    assert_eq!(res.status(), 403);

    for (path, reason) in [("/page", "not NDJSON"), ("/missing", "404")] {
        let res = start_import(&srv, &admin, &format!("{source}{path}")).await;
        assert_eq!(res.status(), 201);
        let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        let events = job_events(&srv, &admin, id).await;
        let (last, data) = events.last().unwrap();
        assert_eq!(last, "failed", "{events:?}");
        assert!(data["message"].as_str().unwrap().contains(reason), "{data}");
    }
}

#[tokio::test]
async fn by_default_the_servers_own_export_is_the_one_allowed_source() {
    let srv = TestServer::start().await;
    let admin = srv.client();
    srv.signup(&admin, "admin").await;
    // No TIDINGS_IMPORT_SOURCES: this server's own origin only; its export needs the admin's
    // rights, which the job borrows through a stream token.
    let res = start_import(&srv, &admin, &srv.url("/api/audit/export?limit=100")).await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let events = job_events(&srv, &admin, id).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "complete", "{events:?}");
    assert!(
        data["message"].as_str().unwrap().contains("0 new"),
        "{data}"
    );
    let res = start_import(&srv, &admin, "http://127.0.0.2:1/api/audit/export").await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn a_source_without_a_trailer_completes_once_a_pass_brings_nothing_new() {
    let (source, _) = flaky_source().await;
    let prefix = format!("{source}/");
    let srv = TestServer::start_with(move |c| c.jobs.import_sources = vec![prefix]).await;
    let admin = srv.client();
    srv.signup(&admin, "admin").await;
    let res = start_import(&srv, &admin, &format!("{source}/plain")).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let events = job_events(&srv, &admin, id).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "complete", "{events:?}");
    assert!(
        data["message"]
            .as_str()
            .unwrap()
            .starts_with("Imported 5 rows"),
        "{data}"
    );
}
