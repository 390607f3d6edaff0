//! `GET /api/audit/export` and `GET /api/audit/count` through the real server: headers,
//! every parameter and error, streaming before the end, disconnects, shutdown, resume.

use crate::common;

use std::time::{Duration, Instant};

use common::{error_code, plain_client, TestServer};
use tidings::{
    export::store::{AuditFilter, AuditSink},
    protocol::{AuditRow, ExportLine, ExportTrailer},
    server::storage::Store,
};

/// A server with an admin (signed in on the returned client) and `rows` seeded rows.
async fn seeded(rows: i64) -> (TestServer, reqwest::Client) {
    seeded_on(TestServer::start().await, rows, 0).await
}

/// `srv` with an admin and `rows` seeded rows, each detail padded with `pad` bytes.
async fn seeded_on(srv: TestServer, rows: i64, pad: usize) -> (TestServer, reqwest::Client) {
    let admin = srv.client();
    srv.signup(&admin, "admin").await;
    let batch: Vec<_> = (0..rows)
        .map(|i| {
            let action = ["LOGIN", "LOGOUT", "EXPORT", "NOTIFY"][(i % 4) as usize].to_string();
            tidings::server::storage::audit::NewAuditRow {
                at: 1_700_000_000_000 + i * 60_000,
                action,
                username: format!("user{}", i % 10),
                detail: if pad == 0 {
                    format!("{{\"seq\":{i}}}")
                } else {
                    format!("{{\"seq\":{i},\"pad\":\"{}\"}}", "x".repeat(pad))
                },
            }
        })
        .collect();
    srv.state.store.audit_many(&batch).await.unwrap();
    (srv, admin)
}

/// `GET path` on `client`, whatever the answer (no retry: some tests want the 503).
async fn get(srv: &TestServer, client: &reqwest::Client, path: &str) -> reqwest::Response {
    client
        .get(srv.url(path))
        .send()
        .await
        .expect("the server answers")
}

/// The raw body of an export.
async fn body(srv: &TestServer, client: &reqwest::Client, query: &str) -> String {
    let res = get(srv, client, &format!("/api/audit/export?{query}")).await;
    assert_eq!(res.status(), 200, "{query}");
    res.text().await.unwrap()
}

/// An export started with `query`, and its first chunk, the rest left unread.
async fn first_chunk(
    srv: &TestServer,
    client: &reqwest::Client,
    query: &str,
) -> (reqwest::Response, bytes::Bytes) {
    let mut res = get(srv, client, &format!("/api/audit/export?{query}")).await;
    let first = res.chunk().await.unwrap().expect("a first chunk");
    (res, first)
}

/// Whether the server is on SQLite (read through rusqlite, on several threads), rather than
/// PostgreSQL (`TIDINGS_TEST_POSTGRES`: sqlx, one thread).
fn on_sqlite(srv: &TestServer) -> bool {
    srv.state.store.backend() == tidings::server::storage::Backend::Sqlite
}

/// The whole body of an NDJSON export, parsed: rows, and the trailer if any.
async fn export(
    srv: &TestServer,
    client: &reqwest::Client,
    query: &str,
) -> (Vec<AuditRow>, Option<ExportTrailer>) {
    let text = body(srv, client, query).await;
    let (mut rows, mut trailer) = (Vec::new(), None);
    for line in text.lines() {
        assert!(trailer.is_none(), "nothing after the trailer");
        match serde_json::from_str::<ExportLine>(line).expect(line) {
            ExportLine::Row(r) => rows.push(r),
            ExportLine::Trailer(t) => trailer = Some(t),
        }
    }
    assert!(
        rows.windows(2).all(|w| w[0].id < w[1].id),
        "ids strictly ascend"
    );
    (rows, trailer)
}

async fn count(srv: &TestServer, client: &reqwest::Client, query: &str) -> u64 {
    let body: serde_json::Value = get(srv, client, &format!("/api/audit/count?{query}"))
        .await
        .json()
        .await
        .unwrap();
    body["count"].as_u64().expect("a count")
}

/// The EXPORT audit rows whose outcome is `outcome`, read through the export itself.
async fn export_reports(
    srv: &TestServer,
    client: &reqwest::Client,
    outcome: &str,
) -> Vec<serde_json::Value> {
    let (rows, _) = export(srv, client, "action=EXPORT&user=admin").await;
    rows.into_iter()
        .map(|r| r.detail)
        .filter(|d| d["outcome"] == outcome)
        .collect()
}

/// Polls until `pick` finds its EXPORT row among those with `outcome` (the producer writes
/// it when it stops).
async fn wait_for_reports(
    srv: &TestServer,
    client: &reqwest::Client,
    outcome: &str,
    pick: impl Fn(Vec<serde_json::Value>) -> Option<serde_json::Value>,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(d) = pick(export_reports(srv, client, outcome).await) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "no such EXPORT row with outcome {outcome}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last EXPORT row with `outcome`, once there is one.
async fn wait_for_report(
    srv: &TestServer,
    client: &reqwest::Client,
    outcome: &str,
) -> serde_json::Value {
    wait_for_reports(srv, client, outcome, |mut reports| reports.pop()).await
}

#[tokio::test]
async fn streams_every_row_as_ndjson_with_the_documented_headers() {
    let (srv, admin) = seeded(1234).await;
    let res = get(&srv, &admin, "/api/audit/export?batch=100&trailer=true").await;
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "application/x-ndjson; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache, no-store, must-revalidate");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("content-encoding").is_none(), "never compressed");
    assert!(h.get("content-length").is_none(), "streamed, not buffered");
    drop(res);

    let total = count(&srv, &admin, "").await;
    let (rows, trailer) = export(&srv, &admin, "batch=100&trailer=true").await;
    // The SIGNUP row, the seeded rows, and the EXPORT row of the export dropped above (which
    // may or may not have been written before this one took its snapshot).
    assert!(rows.len() as u64 >= 1235 && rows.len() as u64 <= total + 1);
    let seeded: Vec<&AuditRow> = rows.iter().filter(|r| r.user.starts_with("user")).collect();
    assert_eq!(seeded.len(), 1234);
    assert_eq!(seeded[5].detail, serde_json::json!({"seq": 5}));
    assert_eq!(seeded[5].action, "LOGOUT");
    assert_eq!(seeded[0].at, "2023-11-14T22:13:20.000Z");
    assert_eq!(rows[0].action, "SIGNUP");
    let trailer = trailer.expect("a trailer");
    assert_eq!(
        (trailer.rows, trailer.last_id),
        (rows.len() as u64, rows.last().unwrap().id)
    );
}

#[tokio::test]
async fn first_rows_arrive_long_before_the_export_ends() {
    let (srv, admin) = seeded(200).await;
    let started = Instant::now();
    let (mut res, first) = first_chunk(&srv, &admin, "batch=10&delayMs=100&trailer=true").await;
    let first_at = started.elapsed();
    let lines = first.iter().filter(|b| **b == b'\n').count();
    assert_eq!(lines, 10, "one flush of `batch` rows");
    let mut rest = Vec::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(rest).unwrap();
    let last: ExportLine = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        matches!(last, ExportLine::Trailer(ExportTrailer { rows: 201, .. })),
        "200 seeded rows and the SIGNUP row, then the trailer: {last:?}"
    );
    // 21 flushes with 100 ms pauses: the first came at least a second before the end.
    assert!(
        started.elapsed() > first_at + Duration::from_secs(1),
        "first chunk after {first_at:?}, end after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn after_and_limit_resume_with_no_gap_and_no_duplicate() {
    let (srv, admin) = seeded(1000).await;
    let (all, _) = export(&srv, &admin, "batch=77").await;
    let (first, t1) = export(&srv, &admin, "limit=300&batch=77&trailer=true").await;
    assert_eq!(first.len(), 300);
    let t1 = t1.unwrap();
    assert_eq!((t1.rows, t1.last_id), (300, first[299].id));
    let (second, _) = export(&srv, &admin, &format!("after={}&batch=77", t1.last_id)).await;
    let joined: Vec<i64> = first.iter().chain(&second).map(|r| r.id).collect();
    let whole: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert_eq!(joined[..whole.len()], whole[..], "no gap, no duplicate");

    let (none, t) = export(&srv, &admin, "limit=0&trailer=true").await;
    assert!(none.is_empty());
    assert_eq!(t.unwrap().rows, 0);
    assert_eq!(count(&srv, &admin, "limit=10").await, 10);
    let tail = count(&srv, &admin, &format!("after={}", whole[whole.len() - 5])).await;
    assert!(
        tail >= 4,
        "4 rows after the fifth-last, plus EXPORT rows since: {tail}"
    );
}

#[tokio::test]
async fn filters_select_rows_and_the_count_agrees() {
    let (srv, admin) = seeded(400).await;
    for (query, want) in [
        // Row i: action i % 4 (LOGIN, LOGOUT, EXPORT, NOTIFY), user i % 10.
        ("action=LOGIN&user=user3", 0),
        ("action=LOGIN&user=user4", 20),
        ("action=LOGIN,LOGOUT&user=user1", 20),
        ("user=user3", 40),
        // Seeded rows are a minute apart from 2023-11-14T22:13:20Z.
        (
            "since=2023-11-14T22:23:20Z&until=2023-11-14T22:33:20.000Z&user=user0",
            1,
        ),
        ("since=2023-11-16&until=2023-11-17", 0),
        ("since=2023-11-15&until=2023-11-16", 400 - 107),
        ("since=2023-11-14T23:13:20%2B01:00&limit=3", 3),
    ] {
        let (rows, _) = export(&srv, &admin, query).await;
        assert_eq!(rows.len(), want, "{query}");
        assert_eq!(count(&srv, &admin, query).await, want as u64, "{query}");
    }
    let (rows, _) = export(&srv, &admin, "action=LOGOUT&user=user1&batch=3").await;
    assert!(rows
        .iter()
        .all(|r| r.action == "LOGOUT" && r.user == "user1"));
}

#[tokio::test]
async fn csv_by_format_or_accept_and_as_a_download() {
    let (srv, admin) = seeded(50).await;
    for req in [
        admin.get(srv.url("/api/audit/export?format=csv&user=user1")),
        admin
            .get(srv.url("/api/audit/export?user=user1"))
            .header("accept", "text/csv"),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
        assert_eq!(res.headers()["x-accel-buffering"], "no");
        let text = res.text().await.unwrap();
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[0], "id,at,action,user,detail");
        assert_eq!(lines.len(), 6, "header + 5 rows of user1");
        assert!(
            lines[1].ends_with(",LOGOUT,user1,\"{\"\"seq\"\":1}\""),
            "{}",
            lines[1]
        );
    }
    let res = get(&srv, &admin, "/api/audit/export?format=csv&download=true").await;
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"tidings-audit.csv\""
    );
}

#[tokio::test]
async fn bad_parameters_are_400_json_naming_the_parameter() {
    let (srv, admin) = seeded(10).await;
    for (query, param) in [
        ("after=abc", "after"),
        ("after=-1", "after"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("batch=0", "batch"),
        ("batch=10001", "batch"),
        ("flushEvery=0", "flushEvery"),
        ("delayMs=-1", "delayMs"),
        ("delayMs=5001", "delayMs"),
        ("format=xml", "format"),
        ("since=last-tuesday", "since"),
        ("until=2026-02-30", "until"),
        ("since=2026-01-02&until=2026-01-01", "until"),
        ("action=DANCE", "action"),
        ("user=", "user"),
        ("trailer=yes-please", "trailer"),
        ("sort=desc", "sort"),
    ] {
        for route in ["export", "count"] {
            let res = get(&srv, &admin, &format!("/api/audit/{route}?{query}")).await;
            assert_eq!(res.status(), 400, "{route}?{query}");
            assert!(res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"));
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["error"], "invalid_parameter");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!("`{param}`")),
                "{query}: {message}"
            );
        }
    }
}

#[tokio::test]
async fn anonymous_is_401_others_403_and_stream_tokens_work() {
    let (srv, admin) = seeded(3).await;
    for route in ["/api/audit/export", "/api/audit/count"] {
        let res = plain_client().get(srv.url(route)).send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(error_code(res).await, "unauthorized");
    }
    let eve = srv.client();
    srv.signup(&eve, "eve").await;
    for route in ["/api/audit/export", "/api/audit/count"] {
        let res = eve.get(srv.url(route)).send().await.unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(error_code(res).await, "forbidden");
    }
    // Anonymous with a bad parameter: still 401 (who asks is checked first).
    let res = get(&srv, &plain_client(), "/api/audit/export?batch=0").await;
    assert_eq!(res.status(), 401);

    let token = srv.stream_token(&admin).await;
    let res = get(
        &srv,
        &plain_client(),
        &format!("/api/audit/export?limit=2&token={token}"),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap().lines().count(), 2);
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_reading_within_a_batch() {
    let (srv, admin) = seeded(2000).await;
    let (res, first) = first_chunk(&srv, &admin, "batch=10&delayMs=50").await;
    assert_eq!(first.iter().filter(|b| **b == b'\n').count(), 10);
    drop(res);

    let report = wait_for_report(&srv, &admin, "client_gone").await;
    let read = report["rowsRead"].as_u64().unwrap();
    let sent = report["rowsSent"].as_u64().unwrap();
    // The client took 10 rows; the producer may have read the next page or two while the
    // connection's end travelled back, never the 2000 an unwatched export would.
    assert!(read <= 40, "read {read} rows after the client left");
    assert!(sent <= read);
    // SQLite reads through rusqlite; PostgreSQL through sqlx (TIDINGS_TEST_POSTGRES).
    let reader = if on_sqlite(&srv) { "rusqlite" } else { "sqlx" };
    assert_eq!(report["reader"], reader);
}

#[tokio::test]
async fn a_slow_reader_gets_everything_at_its_own_pace() {
    let (srv, admin) = seeded(3000).await;
    let mut res = get(&srv, &admin, "/api/audit/export?batch=100&trailer=true").await;
    let mut bytes = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = res.chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
        chunks += 1;
        if chunks < 10 {
            // A reader busy with something else: the producer must wait for it, not drop.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let text = String::from_utf8(bytes).unwrap();
    let last: ExportLine = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let ExportLine::Trailer(t) = last else {
        panic!("ends with a trailer")
    };
    assert_eq!(t.rows as usize, text.lines().count() - 1);
    assert!(t.rows >= 3001);
}

#[tokio::test]
async fn shutdown_cuts_the_transfer_so_the_client_knows_to_resume() {
    let (srv, admin) = seeded(500).await;
    let (mut res, first) = first_chunk(&srv, &admin, "batch=10&delayMs=100&trailer=true").await;
    assert!(!first.is_empty());
    srv.state.shutdown.trigger();
    let mut ended = None;
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => assert!(
                !String::from_utf8_lossy(&chunk).contains("\"done\""),
                "no trailer on a cut export"
            ),
            Ok(None) => {
                ended = Some("clean");
                break;
            }
            Err(_) => break,
        }
    }
    assert_eq!(ended, None, "the transfer is cut, not ended cleanly");

    // The stopping server waits for the export to write its audit row before it closes the
    // database: read the file again once the background work is drained.
    assert!(
        srv.state.shutdown.drain(Duration::from_secs(20)).await,
        "the export's producer ended"
    );
    let store = Store::connect(&srv.state.config.database_url)
        .await
        .unwrap();
    let filter = AuditFilter {
        actions: vec!["EXPORT".into()],
        user: Some("admin".into()),
        max_id: store.audit_max_id().await.unwrap(),
        ..Default::default()
    };
    let mut pages = store.audit_pages(&filter, true).unwrap();
    let (details, _) = pages.read(0, 100, Details::default()).await.unwrap();
    let outcomes: Vec<&str> = details
        .0
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["shutdown"]);
    assert!(details.0[0]["rowsSent"].as_u64().unwrap() >= 10);
    store.close().await;
}

/// Collects the detail JSON of audit rows read straight from storage.
#[derive(Default)]
struct Details(Vec<serde_json::Value>);

impl AuditSink for Details {
    fn row(&mut self, _: i64, _: i64, _: &[u8], _: &[u8], detail: &[u8]) {
        self.0.push(serde_json::from_slice(detail).unwrap());
    }
}

#[tokio::test]
async fn too_many_exports_at_once_get_503() {
    let (srv, admin) = seeded(100).await;
    let mut running = Vec::new();
    for _ in 0..16 {
        let mut res = get(&srv, &admin, "/api/audit/export?batch=1&delayMs=5000").await;
        assert_eq!(res.status(), 200);
        res.chunk().await.unwrap().expect("a first row");
        running.push(res);
    }
    let res = get(&srv, &admin, "/api/audit/export").await;
    assert_eq!(res.status(), 503);
    assert_eq!(error_code(res).await, "unavailable");
    drop(running);
    // The slots come back once the producers see their clients gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = get(&srv, &admin, "/api/audit/export?limit=1").await;
        if res.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pages_read_on_several_threads_make_the_same_bytes_as_one() {
    let srv = TestServer::start_with(|s| s.export.threads = 3).await;
    let (srv, admin) = seeded_on(srv, 2345, 0).await;
    // Seeded rows are from 2023: `until` leaves out the EXPORT rows the comparisons add. A
    // `limit` larger than the log makes the same export on one thread, keyset page by page.
    for query in [
        "until=2024-01-01",
        "until=2024-01-01&batch=100&flushEvery=30",
        "until=2024-01-01&batch=64&flushEvery=1000",
        "until=2024-01-01&action=LOGIN,NOTIFY&batch=50",
        "until=2024-01-01&user=user3&batch=7&flushEvery=2",
        "until=2024-01-01&format=csv&batch=300",
        "until=2024-01-01&after=17&batch=100&trailer=true",
        "until=2024-01-01&after=2000&batch=100&trailer=true",
        "since=2023-11-15&until=2023-11-16&batch=10",
        "until=2024-01-01&action=SIGNUP&batch=10&trailer=true",
    ] {
        let many = body(&srv, &admin, query).await;
        let one = body(&srv, &admin, &format!("{query}&limit=1000000000")).await;
        assert!(!many.is_empty(), "{query}");
        assert_eq!(many, one, "{query}");
    }
    // Unfiltered, each without the EXPORT rows of the ones before it.
    let without_exports = |text: String| -> Vec<String> {
        text.lines()
            .filter(|l| !l.contains(r#""action":"EXPORT","user":"admin""#))
            .map(str::to_string)
            .collect()
    };
    let many = without_exports(body(&srv, &admin, "").await);
    let one = without_exports(body(&srv, &admin, "limit=1000000000").await);
    assert!(many.len() > 2345);
    assert_eq!(many, one);

    // The EXPORT rows say how many threads read: three where pages could be shared out.
    let threads: Vec<u64> = export_reports(&srv, &admin, "complete")
        .await
        .iter()
        .map(|d| d["threads"].as_u64().expect("threads"))
        .collect();
    let want = if on_sqlite(&srv) { 3 } else { 1 };
    assert!(threads.contains(&want), "{threads:?}");
    assert!(threads.contains(&1), "{threads:?}");
}

#[tokio::test]
async fn a_hole_in_the_ids_up_to_2_pow_53_costs_no_pages() {
    let (srv, admin) = seeded(1000).await;
    // An import may keep any id from 1 to 2^53: the log's last id is then 2^53, and the ids
    // between are one hole that pages must step over, not walk.
    let far = |id: i64| tidings::server::storage::audit::AuditRecord {
        id,
        row: tidings::server::storage::audit::NewAuditRow {
            at: 1_700_000_000_000,
            action: "IMPORT".to_string(),
            username: "far".to_string(),
            detail: format!("{{\"id\":{id}}}"),
        },
    };
    let rows = [far(1_000_000_000_000), far(9_007_199_254_740_992)];
    assert_eq!(srv.state.store.audit_import(&rows).await.unwrap(), 2);
    let query = "until=2024-01-01&batch=10&trailer=true";
    let started = Instant::now();
    let many = body(&srv, &admin, query).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let one = body(&srv, &admin, &format!("{query}&limit=1000000000")).await;
    assert_eq!(many, one);
    assert!(many.contains(r#""id":9007199254740992,"#), "{many:.200}");
    let last = serde_json::from_str::<ExportLine>(many.lines().last().unwrap()).unwrap();
    let ExportLine::Trailer(trailer) = last else {
        panic!("ends with a trailer");
    };
    assert_eq!(
        (trailer.rows, trailer.last_id),
        (1002, 9_007_199_254_740_992)
    );
}

#[tokio::test]
async fn a_client_that_goes_away_stops_every_reading_thread() {
    // 12,000 rows of about 1 kB: more than the socket buffers and the queue hold.
    let (srv, admin) = seeded_on(TestServer::start().await, 12_000, 1000).await;
    let (res, first) = first_chunk(&srv, &admin, "batch=500").await;
    assert!(!first.is_empty());
    drop(res);

    let report = wait_for_report(&srv, &admin, "client_gone").await;
    let read = report["rowsRead"].as_u64().unwrap();
    assert!(read < 12_000, "read all {read} rows after the client left");
    let want = if on_sqlite(&srv) { 2 } else { 1 };
    assert_eq!(report["threads"], want);
}

/// The `n`th (from 1) EXPORT report of an export without filters, once it is written.
async fn nth_unfiltered_report(
    srv: &TestServer,
    client: &reqwest::Client,
    n: usize,
) -> serde_json::Value {
    wait_for_reports(srv, client, "complete", |reports| {
        reports
            .into_iter()
            .filter(|d| d["filters"]["action"].as_array().is_some_and(Vec::is_empty))
            .nth(n - 1)
    })
    .await
}

#[tokio::test]
async fn kept_segments_send_the_same_bytes_until_the_log_changes_under_them() {
    use tidings::export::cache::SEGMENT_IDS;
    use tidings::server::storage::audit::{AuditRecord, NewAuditRow};
    // The SIGNUP row and 140,000 rows (ids 1 to 140,001), then two imported rows above them
    // (150,000 and 200,000): segments 0, 1 and 2 are closed (a larger id exists), the one
    // holding 200,000 and the exports' own EXPORT rows is not, and ids 140,002 to 149,999
    // are a hole.
    let (srv, admin) = seeded(140_000).await;
    let imported = |id: i64| AuditRecord {
        id,
        row: NewAuditRow {
            at: 1_700_000_000_000,
            action: "IMPORT".to_string(),
            username: "far".to_string(),
            detail: format!("{{\"id\":{id}}}"),
        },
    };
    let store = &srv.state.store;
    let two = [imported(150_000), imported(200_000)];
    assert_eq!(store.audit_import(&two).await.unwrap(), 2);
    const { assert!(200_000 > 3 * SEGMENT_IDS && 150_000 < 3 * SEGMENT_IDS) };
    // An export's lines up to id 200,000 (the EXPORT rows of the exports before it come
    // after), and its trailer's rows and last id.
    let history = |text: &str| -> (Vec<String>, (u64, i64)) {
        let lines: Vec<&str> = text.lines().collect();
        let Ok(ExportLine::Trailer(t)) = serde_json::from_str(lines[lines.len() - 1]) else {
            panic!("ends with a trailer");
        };
        let id = |line: &str| -> i64 {
            let rest = line.strip_prefix(r#"{"id":"#).expect(line);
            rest[..rest.find(',').expect(line)].parse().expect(line)
        };
        let rows = lines[..lines.len() - 1]
            .iter()
            .filter(|l| id(l) <= 200_000)
            .map(|l| l.to_string())
            .collect();
        (rows, (t.rows, t.last_id))
    };
    let cached_rows = |d: &serde_json::Value| d["cachedRows"].as_u64().expect("cachedRows");
    let mut made = 0;
    // Each export (one at a time), with the rows its EXPORT row says came from the cache.
    let mut exports = Vec::new();
    for query in [
        "trailer=true",
        "trailer=true&batch=777",
        "trailer=true&limit=1000000000",
    ] {
        let text = body(&srv, &admin, query).await;
        made += 1;
        let report = nth_unfiltered_report(&srv, &admin, made).await;
        exports.push((query, history(&text), cached_rows(&report)));
    }
    let (_, (first, _), first_cached) = &exports[0];
    assert_eq!(first.len(), 140_003, "every row up to 200,000");
    assert_eq!(*first_cached, 0, "the first export reads every row");
    for (query, (rows, (trailer_rows, last_id)), _) in &exports {
        assert_eq!(rows, first, "{query}");
        assert!(*trailer_rows >= 140_003 && *last_id >= 200_000, "{query}");
    }
    let (second_cached, keyset_cached) = (exports[1].2, exports[2].2);
    if on_sqlite(&srv) {
        // Segments 0 to 2 came from the cache: every row up to 150,000.
        assert_eq!(second_cached, 140_002);
    } else {
        assert_eq!(second_cached, 0, "PostgreSQL reads every time");
    }
    assert_eq!(keyset_cached, 0, "a limit reads keyset pages");

    // A resumed export reads the rest of the segment it starts in, then the cache.
    let resumed = body(&srv, &admin, "after=70000&trailer=true").await;
    made += 1;
    let report = nth_unfiltered_report(&srv, &admin, made).await;
    let (rows, _) = history(&resumed);
    assert_eq!(rows, first[70_000..], "the rows after id 70,000");
    if on_sqlite(&srv) {
        assert_eq!(cached_rows(&report), 140_002 - 131_072, "segment 2 only");
    }

    // An import into the hole: the cache must not hide the new row.
    assert_eq!(store.audit_import(&[imported(145_000)]).await.unwrap(), 1);
    for round in ["the cache is dropped", "and made again"] {
        let text = body(&srv, &admin, "trailer=true").await;
        made += 1;
        let report = nth_unfiltered_report(&srv, &admin, made).await;
        let (rows, _) = history(&text);
        assert_eq!(rows.len(), 140_004, "{round}");
        assert!(
            rows[140_001].starts_with(r#"{"id":145000,"#),
            "{round}: {}",
            rows[140_001]
        );
        let want = match (on_sqlite(&srv), round) {
            (true, "and made again") => 140_003,
            _ => 0,
        };
        assert_eq!(cached_rows(&report), want, "{round}");
    }

    // A client that leaves during a kept segment: its EXPORT row counts what was read (from
    // the file) at least as far as what was sent, and names the last id read.
    let (res, first) = first_chunk(&srv, &admin, "").await;
    assert!(first.starts_with(br#"{"id":1,"#));
    drop(res);
    let report = wait_for_report(&srv, &admin, "client_gone").await;
    let (read, sent) = (report["rowsRead"].as_u64(), report["rowsSent"].as_u64());
    assert!(read >= sent && sent > Some(0), "{report}");
    let last_id = report["lastId"].as_u64().expect("lastId");
    assert!(last_id > 0 && last_id <= 200_000, "{report}");
    if on_sqlite(&srv) {
        assert!(
            read < Some(140_000),
            "it stopped within the cache: {report}"
        );
        assert_eq!(report["cachedRows"].as_u64(), read, "{report}");
    }
}

#[tokio::test]
async fn an_export_sends_no_row_past_its_snapshot_even_from_a_kept_segment() {
    // Rows of about 330 bytes: segment 0 (21 MB) is more than the socket buffers hold, so an
    // export whose client stops reading waits inside it.
    let (srv, admin) = seeded_on(TestServer::start().await, 140_000, 100).await;
    let store = &srv.state.store;
    // Ids 1 to 140,001: segment 2 (131,073 to 196,608) is open.
    let snapshot = store.audit_max_id().await.unwrap();
    assert_eq!(snapshot, 140_001);
    let (mut slow, first) = first_chunk(&srv, &admin, "trailer=true").await;

    // While it waits, appends close segment 2, and the next exports keep it.
    let more: Vec<_> = (0..60_000)
        .map(|i| tidings::server::storage::audit::NewAuditRow {
            at: 1_800_000_000_000 + i,
            action: "NOTIFY".to_string(),
            username: "late".to_string(),
            detail: "{}".to_string(),
        })
        .collect();
    store.audit_many(&more).await.unwrap();
    for n in 1..=2 {
        assert!(body(&srv, &admin, "").await.lines().count() > 200_000);
        let report = nth_unfiltered_report(&srv, &admin, n).await;
        if on_sqlite(&srv) && n == 2 {
            assert_eq!(report["cachedRows"], 196_608, "segments 0 to 2 are kept");
        }
    }

    // The first export reads on: it ends at its own snapshot, kept segment or not.
    let mut text = first.to_vec();
    while let Some(chunk) = slow.chunk().await.unwrap() {
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(text).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let Ok(ExportLine::Trailer(trailer)) = serde_json::from_str(lines.pop().unwrap()) else {
        panic!("ends with a trailer");
    };
    assert_eq!((trailer.rows, trailer.last_id), (140_001, snapshot));
    assert_eq!(lines.len(), 140_001);
    let last = serde_json::from_str::<AuditRow>(lines[lines.len() - 1]).unwrap();
    assert_eq!(last.id, snapshot);
}
