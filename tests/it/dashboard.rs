//! The live dashboard's streams against a real server: `GET /api/metrics/events`
//! (schema, once a second, values that follow real traffic, auth) and the admin's
//! `GET /api/logs/events` (auth, level filter, replay with `Last-Event-ID`, gaps, and no
//! secrets in what it carries).
//!
//! The servers run in this process, so the log ring is this process's: records are told apart
//! by unique usernames and targets, and the test installs the same ring layer the binary does.

use crate::common;

use common::{error_code, plain_client, Got, Sse, TestServer};

use serde_json::{json, Value};
use tidings::{
    protocol::metrics::{LogGap, LogLevel, LogRecord, Metrics},
    server::observe::logs::{RingLayer, RING_RECORDS},
};

/// Installs the log ring (and an `info` filter) for this test process, once.
fn logging() {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};
    let _ = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(RingLayer)
        .try_init();
}

/// What the dashboard's streams carry, read on the shared reader.
impl Sse {
    /// The next metrics sample for which `test` holds (samples come once a second).
    async fn metrics_until(&mut self, what: &str, test: impl Fn(&Metrics) -> bool) -> Metrics {
        for _ in 0..15 {
            let m: Metrics = serde_json::from_value(self.next_named("metrics").await.data)
                .expect("a metrics sample");
            if test(&m) {
                return m;
            }
        }
        panic!("no sample showed {what} within 15 samples");
    }

    /// The next log record, skipping records of other tests.
    async fn next_log(&mut self, mine: impl Fn(&LogRecord) -> bool) -> (Got, LogRecord) {
        loop {
            let got = self.next().await.expect("the stream goes on");
            if got.event == "log" {
                let record: LogRecord = serde_json::from_value(got.data.clone()).unwrap();
                if mine(&record) {
                    return (got, record);
                }
            }
        }
    }
}

#[tokio::test]
async fn metrics_come_every_second_with_the_documented_fields_and_follow_traffic() {
    let server = TestServer::start().await;
    // Signed out: 401, like every other API route.
    let res = plain_client()
        .get(server.url("/api/metrics/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "unauthorized");

    let ann = server.user("metrics_ann").await;
    let mut sse = Sse::open(ann.http.get(server.url("/api/metrics/events"))).await;
    let first = sse.next_named("metrics").await;
    assert!(first.id.is_empty(), "samples carry no id");
    for path in [
        "/connections/websocket",
        "/connections/sse",
        "/connections/streams",
        "/messagesPerSecond",
        "/jobs/queued",
        "/jobs/running",
        "/rowsExported",
        "/rssBytes",
        "/at",
    ] {
        assert!(
            first.data.pointer(path).is_some(),
            "{path} in {}",
            first.data
        );
    }
    let first: Metrics = serde_json::from_value(first.data).unwrap();
    assert!(first.rss_bytes > 1_000_000, "real resident memory");
    assert!(first.at.ends_with('Z'), "RFC 3339 UTC: {}", first.at);
    // A new sample each second. (Connection counters are process-wide, shared with other
    // tests' servers, so the checks below say "at least".)
    let second = sse.metrics_until("a new sample", |m| m.at > first.at).await;
    assert!(second.uptime_seconds >= first.uptime_seconds);

    // A WebSocket opens and a message is sent: both show.
    let mut ws = server.ws(&ann.cookie).await;
    sse.metrics_until("the WebSocket", |m| m.connections.websocket >= 1)
        .await;
    let posted = ann
        .http
        .post(server.url("/api/rooms/general/messages"))
        .json(&json!({"text": "hello metrics"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    sse.metrics_until("the message", |m| m.messages_per_second > 0.0)
        .await;

    // A job queued shows in the job counts (from the database: only this server's jobs).
    let _ = ws.close(None).await;
    let created = ann
        .http
        .post(server.url("/api/jobs"))
        .json(&json!({"kind": "demo", "steps": 40, "stepMs": 250}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    sse.metrics_until("the job", |m| m.jobs.queued + m.jobs.running >= 1)
        .await;

    // An export being written is an HTTP stream, and its rows are counted. (The audit log
    // holds the signups' rows; the export sends one a second.)
    let admin = server.user("admin").await;
    let rows_before = sse.metrics_until("a sample", |_| true).await.rows_exported;
    let export = admin
        .http
        .get(server.url("/api/audit/export?limit=3&batch=1&flushEvery=1&delayMs=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let reading = tokio::spawn(export.text());
    sse.metrics_until("the export stream", |m| m.connections.streams >= 1)
        .await;
    let body = reading.await.unwrap().unwrap();
    assert_eq!(body.lines().count(), 3);
    sse.metrics_until("the exported rows", |m| m.rows_exported >= rows_before + 3)
        .await;
}

#[tokio::test]
async fn the_log_tail_is_for_admins_and_checks_its_level() {
    logging();
    let server = TestServer::start().await;
    let res = plain_client()
        .get(server.url("/api/logs/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let bob = server.user("logs_bob").await;
    for path in ["/api/logs/events", "/api/metrics/events?logs=info"] {
        let res = bob.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 403, "{path} for a non-admin");
        assert_eq!(error_code(res).await, "forbidden");
    }
    let admin = server.user("admin").await;
    for path in [
        "/api/logs/events?level=loud",
        "/api/metrics/events?logs=loud",
    ] {
        let res = admin.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 400, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_parameter");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("trace, debug, info, warn, error"),
            "{body}"
        );
    }
    let res = admin
        .http
        .get(server.url("/api/logs/events"))
        .header("last-event-id", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn the_log_tail_streams_records_filters_replays_and_hides_secrets() {
    logging();
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let mut tail = Sse::open(admin.http.get(server.url("/api/logs/events?level=info"))).await;
    let ready = tail.next_named("ready").await;
    let ready_id: u64 = ready.id.parse().expect("ready carries the newest id");

    // A real record of the server's: a signup, logged at info with the username.
    let secret_password = "pw-9f3a-never-shown";
    let carol = common::send(
        plain_client()
            .post(server.url("/api/auth/signup"))
            .json(&json!({"username": "logs_carol", "password": secret_password})),
    )
    .await;
    assert_eq!(carol.status(), 201);
    let (got, record) = tail
        .next_log(|r| r.fields.get("username").map(String::as_str) == Some("logs_carol"))
        .await;
    assert_eq!(record.message, "signed up");
    assert_eq!(record.level, LogLevel::Info);
    assert!(record.target.starts_with("tidings::"), "{}", record.target);
    assert!(record.at.ends_with('Z'));
    assert_eq!(got.id, record.id.to_string(), "SSE id = record id");
    assert!(record.id > ready_id);

    // Records of this test, at three levels, with secrets in them.
    let token = admin
        .http
        .post(server.url("/api/auth/stream-token"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    tracing::info!(target: "tidings::log_test", step = 1, "first");
    tracing::warn!(
        target: "tidings::log_test",
        step = 2,
        password = secret_password,
        uri = %format!("/api/jobs/1/events?token={token}"),
        "second"
    );
    tracing::error!(target: "tidings::log_test", step = 3, "third, with Cookie: tidings_session=abc123");
    let mine = |r: &LogRecord| r.target == "tidings::log_test";
    let (first, _) = tail.next_log(mine).await;
    let (_, second) = tail.next_log(mine).await;
    let (_, third) = tail.next_log(mine).await;
    assert_eq!(second.fields["password"], "[redacted]");
    assert_eq!(second.fields["uri"], "/api/jobs/1/events?token=[redacted]");
    assert_eq!(third.message, "third, with Cookie: [redacted]");
    for r in [&second, &third] {
        let text = serde_json::to_string(r).unwrap();
        assert!(
            !text.contains(secret_password) && !text.contains(&token) && !text.contains("abc123")
        );
    }

    // A level filter: warn and above only.
    let mut warn = Sse::open(
        admin
            .http
            .get(server.url("/api/logs/events?level=warn"))
            .header("last-event-id", first.id.as_str()),
    )
    .await;
    warn.next_named("ready").await;
    let (_, w) = warn.next_log(mine).await;
    assert_eq!(w.message, "second", "the info record is filtered out");
    let (_, e) = warn.next_log(mine).await;
    assert_eq!(e.message, "third, with Cookie: [redacted]");

    // The same stream on the metrics route, for the dashboard (one stream per page).
    let mut both = Sse::open(
        admin
            .http
            .get(server.url("/api/metrics/events?logs=info"))
            .header("last-event-id", first.id.as_str()),
    )
    .await;
    let (_, replayed) = both.next_log(mine).await;
    assert_eq!(replayed.message, "second", "replayed after Last-Event-ID");
    both.next_named("metrics").await;

    // An id from before a restart (past the newest): the tail starts afresh, not silent.
    let mut restarted = Sse::open(
        admin
            .http
            .get(server.url("/api/logs/events?level=error"))
            .header("last-event-id", "999999999999"),
    )
    .await;
    let ready = restarted.next_named("ready").await;
    assert_ne!(ready.id, "999999999999", "the stale id is not continued");
    assert!(ready.data["epoch"].as_i64().unwrap() > 0);
    let (_, again) = restarted.next_log(mine).await;
    assert_eq!(
        again.message, "third, with Cookie: [redacted]",
        "the latest are replayed"
    );

    // Nothing the ring holds carries a secret: a wrong password, the signup's password, the
    // session cookie or a stream token.
    let wrong = plain_client()
        .post(server.url("/api/auth/login"))
        .json(&json!({"username": "logs_carol", "password": "wrong-pw-4c1d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let _ = admin
        .http
        .get(server.url(&format!("/api/jobs?token={token}")))
        .send()
        .await
        .unwrap();
    let session = admin
        .cookie
        .trim_start_matches("tidings_session=")
        .to_string();
    let everything = tidings::server::observe::logs::after(None, LogLevel::Trace, RING_RECORDS);
    assert!(!everything.records.is_empty());
    for r in &everything.records {
        let text = serde_json::to_string(&**r).unwrap();
        for secret in [
            secret_password,
            "wrong-pw-4c1d",
            token.as_str(),
            session.as_str(),
        ] {
            assert!(!text.contains(secret), "a secret in the log: {text}");
        }
    }

    // Far behind the ring: a gap, then what is kept.
    for i in 0..RING_RECORDS + 10 {
        tracing::info!(target: "tidings::log_filler", i, "filler");
    }
    let mut late = Sse::open(
        admin
            .http
            .get(server.url("/api/logs/events?level=error"))
            .header("last-event-id", first.id.as_str()),
    )
    .await;
    late.next_named("ready").await;
    let gap: LogGap = serde_json::from_value(late.next_named("gap").await.data).unwrap();
    assert_eq!(gap.after_id.to_string(), first.id);
    assert!(gap.first_available_id > third.id);
}

#[tokio::test]
async fn the_first_sample_on_a_new_stream_counts_that_stream() {
    let server = TestServer::start().await;
    let client = server.client();
    server.signup(&client, "first_sampler").await;
    // A sample is taken every second; wait for one from before this stream opens.
    while server.state.metrics.latest().at.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut stream = Sse::open(client.get(server.url("/api/metrics/events"))).await;
    let first: Metrics = serde_json::from_value(stream.next_named("metrics").await.data).unwrap();
    assert!(
        first.connections.sse >= 1,
        "the stream that got it counts: {first:?}"
    );
}
