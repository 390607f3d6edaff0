//! The Jobs routes through the real server: create, status with ETag, SSE with replay and
//! Last-Event-ID, 204 after the end, cancel, owner-only access, bad input, and a job that
//! survives a restart of the server.

use crate::common;

use std::time::Duration;

use common::{error_code, plain_client, post_json, TestServer};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

/// One received SSE event: id, name, data.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    id: i64,
    event: String,
    data: Value,
}

/// Reads an event stream until it ends (or `stop` says so), within 30 s.
async fn read_events(res: reqwest::Response, stop: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let mut stream = res.bytes_stream().eventsource();
    let mut got = Vec::new();
    let read = async {
        while let Some(event) = stream.next().await {
            let event = event.expect("a well-formed event");
            got.push(Got {
                id: event.id.parse().expect("numeric ids"),
                event: event.event,
                data: serde_json::from_str(&event.data).expect("JSON data"),
            });
            if stop(&got) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the stream ends in time");
    got
}

/// A server with user `ann` signed in on the returned client.
async fn with_user() -> (TestServer, reqwest::Client) {
    let srv = TestServer::start().await;
    let ann = srv.client();
    srv.signup(&ann, "ann").await;
    (srv, ann)
}

/// Creates a demo job; returns its id.
async fn demo(srv: &TestServer, client: &reqwest::Client, body: Value) -> i64 {
    let mut body = body;
    body["kind"] = json!("demo");
    let res = post_json(client, &srv.url("/api/jobs"), body).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["status"], "queued");
    assert_eq!(created["eventsUrl"], format!("/api/jobs/{id}/events"));
    assert_eq!(created["statusUrl"], format!("/api/jobs/{id}"));
    id
}

async fn events(
    srv: &TestServer,
    client: &reqwest::Client,
    id: i64,
    last: Option<&str>,
) -> reqwest::Response {
    let mut req = client.get(srv.url(&format!("/api/jobs/{id}/events")));
    if let Some(last) = last {
        req = req.header("last-event-id", last);
    }
    req.send().await.unwrap()
}

/// Ids must run 1, 2, 3… (or from `first`) with no gap and no duplicate.
fn assert_contiguous(got: &[Got], first: i64) {
    let ids: Vec<i64> = got.iter().map(|g| g.id).collect();
    let want: Vec<i64> = (first..first + got.len() as i64).collect();
    assert_eq!(ids, want, "contiguous ids");
}

#[tokio::test]
async fn a_demo_job_streams_every_event_in_order_then_ends_and_replays() {
    let (srv, ann) = with_user().await;
    let id = demo(&srv, &ann, json!({"steps": 5, "stepMs": 20, "warnAt": [2]})).await;
    let res = events(&srv, &ann, id, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert!(res.headers().get("content-encoding").is_none());
    let got = read_events(res, |_| false).await;
    let names: Vec<&str> = got.iter().map(|g| g.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "started", "progress", "warning", "progress", "progress", "progress", "progress",
            "complete"
        ]
    );
    assert_contiguous(&got, 1);
    let last = got.last().unwrap();
    assert_eq!(last.data["percent"], 100);
    assert_eq!(last.data["jobId"], id);
    assert_eq!(got[1].data["step"], 1);
    assert_eq!(got[1].data["total"], 5);
    assert_eq!(got[1].data["percent"], 20);
    for key in ["jobId", "step", "total", "percent", "message", "at"] {
        assert!(got[0].data.get(key).is_some(), "{key} in {}", got[0].data);
    }

    // Resuming after id 3 replays only the later events; after the last one: 204.
    let later = read_events(events(&srv, &ann, id, Some("3")).await, |_| false).await;
    assert_eq!(later, got[3..]);
    let done = events(&srv, &ann, id, Some(&last.id.to_string())).await;
    assert_eq!(done.status(), 204);
    // The query parameter works like the header (for a first connection that resumes).
    let res = ann
        .get(srv.url(&format!("/api/jobs/{id}/events?lastEventId=6")))
        .send()
        .await
        .unwrap();
    assert_eq!(read_events(res, |_| false).await, got[6..]);
    // A fresh request for a finished job replays everything and ends.
    assert_eq!(
        read_events(events(&srv, &ann, id, None).await, |_| false).await,
        got
    );
    // The status route negotiates: the same stream with Accept: text/event-stream.
    let res = ann
        .get(srv.url(&format!("/api/jobs/{id}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(read_events(res, |_| false).await, got);
}

#[tokio::test]
async fn the_first_bytes_are_the_retry_line() {
    let (srv, ann) = with_user().await;
    let id = demo(&srv, &ann, json!({"steps": 3, "stepMs": 2000})).await;
    let mut res = events(&srv, &ann, id, None).await;
    let first = tokio::time::timeout(Duration::from_secs(10), res.chunk())
        .await
        .expect("sent at once")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"retry: 3000\n"), "{first:?}");
}

#[tokio::test]
async fn status_is_json_with_an_etag_and_304_when_unchanged() {
    let (srv, ann) = with_user().await;
    let id = demo(&srv, &ann, json!({"steps": 2, "stepMs": 0})).await;
    read_events(events(&srv, &ann, id, None).await, |_| false).await;
    let res = ann
        .get(srv.url(&format!("/api/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tag = res.headers()["etag"].to_str().unwrap().to_string();
    let status: Value = res.json().await.unwrap();
    for key in [
        "id",
        "kind",
        "status",
        "percent",
        "message",
        "createdAt",
        "updatedAt",
        "lastEventId",
    ] {
        assert!(status.get(key).is_some(), "{key} in {status}");
    }
    assert_eq!(status["status"], "completed");
    assert_eq!(status["percent"], 100);
    assert_eq!(status["lastEventId"], 4);
    let again = ann
        .get(srv.url(&format!("/api/jobs/{id}")))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], tag.as_str());

    let list = common::get_json(&ann, &srv.url("/api/jobs")).await;
    assert_eq!(list["jobs"][0]["id"], id);
}

#[tokio::test]
async fn a_job_runs_on_with_nobody_watching_and_polling_sees_it_finish() {
    let (srv, ann) = with_user().await;
    let id = demo(&srv, &ann, json!({"steps": 4, "stepMs": 30})).await;
    let (mut polls, mut unchanged, mut tag) = (0, 0, String::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let res = ann
            .get(srv.url(&format!("/api/jobs/{id}")))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        polls += 1;
        if res.status() == 304 {
            unchanged += 1;
        } else {
            tag = res.headers()["etag"].to_str().unwrap().to_string();
            let status: Value = res.json().await.unwrap();
            if status["status"] == "completed" {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the job finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(polls > unchanged, "{polls} polls, {unchanged} unchanged");
}

#[tokio::test]
async fn cancel_stops_a_running_job_and_a_queued_one_and_409_once_ended() {
    let (srv, ann) = with_user().await;
    let running = demo(&srv, &ann, json!({"steps": 200, "stepMs": 50})).await;
    // Wait until it has started, then cancel.
    let res = events(&srv, &ann, running, None).await;
    let started = read_events(res, |g| g.len() >= 2).await;
    assert_eq!(started[0].event, "started");
    let res = ann
        .post(srv.url(&format!("/api/jobs/{running}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let rest = read_events(events(&srv, &ann, running, Some("2")).await, |_| false).await;
    assert_eq!(rest.last().unwrap().event, "cancelled");
    let again = ann
        .post(srv.url(&format!("/api/jobs/{running}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "job_finished");

    // The test server has 4 workers: with 4 long jobs running, a fifth waits in the queue.
    let mut long = Vec::new();
    for _ in 0..4 {
        long.push(demo(&srv, &ann, json!({"steps": 100, "stepMs": 100})).await);
    }
    for id in &long {
        read_events(events(&srv, &ann, *id, None).await, |g| !g.is_empty()).await;
    }
    let queued = demo(&srv, &ann, json!({"steps": 3, "stepMs": 10})).await;
    let status: Value = common::get_json(&ann, &srv.url(&format!("/api/jobs/{queued}"))).await;
    assert_eq!(status["status"], "queued");
    let res = ann
        .post(srv.url(&format!("/api/jobs/{queued}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let got = read_events(events(&srv, &ann, queued, None).await, |_| false).await;
    let names: Vec<&str> = got.iter().map(|g| g.event.as_str()).collect();
    assert_eq!(names, ["cancelled"]);
    for id in long {
        ann.post(srv.url(&format!("/api/jobs/{id}/cancel")))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn bad_requests_are_4xx_with_the_parameter_named() {
    let (srv, ann) = with_user().await;
    let url = srv.url("/api/jobs");
    for (body, code, param) in [
        (json!({"kind": "dance"}), "invalid_parameter", "`kind`"),
        (
            json!({"kind": "demo", "steps": 0}),
            "invalid_parameter",
            "`steps`",
        ),
        (
            json!({"kind": "demo", "steps": 50000}),
            "invalid_parameter",
            "`steps`",
        ),
        (
            json!({"kind": "demo", "stepMs": -5}),
            "invalid_parameter",
            "`stepMs`",
        ),
        (
            json!({"kind": "demo", "stepMs": 999999}),
            "invalid_parameter",
            "`stepMs`",
        ),
        (
            json!({"kind": "demo", "steps": 5, "failAt": 9}),
            "invalid_parameter",
            "`failAt`",
        ),
    ] {
        let res = post_json(&ann, &url, body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"], code, "{body}");
        assert!(err["message"].as_str().unwrap().starts_with(param), "{err}");
    }
    let res = post_json(&ann, &url, json!({"kind": "demo", "steps": "many"})).await;
    assert_eq!(res.status(), 400);

    let id = demo(&srv, &ann, json!({"steps": 1, "stepMs": 0})).await;
    let res = events(&srv, &ann, id, Some("soon")).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("Last-Event-ID"));
    for path in [
        "/api/jobs/999999",
        "/api/jobs/abc",
        "/api/jobs/999999/events",
    ] {
        let res = ann.get(srv.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(error_code(res).await, "not_found");
    }
}

#[tokio::test]
async fn only_the_owner_and_admins_see_a_job_and_stream_tokens_work() {
    let (srv, ann) = with_user().await;
    let id = demo(&srv, &ann, json!({"steps": 2, "stepMs": 0})).await;
    let bob = srv.client();
    srv.signup(&bob, "bob").await;
    for path in [format!("/api/jobs/{id}"), format!("/api/jobs/{id}/events")] {
        let res = bob.get(srv.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    let res = bob
        .post(srv.url(&format!("/api/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let admin = srv.client();
    srv.signup(&admin, "admin").await;
    let res = admin
        .get(srv.url(&format!("/api/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let anonymous = plain_client()
        .get(srv.url(&format!("/api/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // An EventSource on another origin: a stream token instead of the cookie.
    let token = srv.stream_token(&ann).await;
    // The token opens the stream, not the JSON status.
    let res = plain_client()
        .get(srv.url(&format!("/api/jobs/{id}?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = plain_client()
        .get(srv.url(&format!("/api/jobs/{id}/events?token={token}")))
        .header("origin", "http://allowed.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://allowed.example"
    );
    let got = read_events(res, |_| false).await;
    assert_eq!(got.last().unwrap().event, "complete");
}

#[tokio::test]
async fn a_watcher_that_joins_late_gets_the_rest_with_no_gap_or_duplicate() {
    let (srv, ann) = with_user().await;
    let id = demo(&srv, &ann, json!({"steps": 30, "stepMs": 15})).await;
    let early = read_events(events(&srv, &ann, id, None).await, |g| g.len() >= 6).await;
    let last = early.last().unwrap().id;
    let rest = read_events(
        events(&srv, &ann, id, Some(&last.to_string())).await,
        |_| false,
    )
    .await;
    assert_contiguous(&rest, last + 1);
    assert_eq!(rest.last().unwrap().event, "complete");
}

#[tokio::test]
async fn a_job_left_running_by_a_stopped_server_continues_after_the_restart() {
    let (first, ann) = with_user().await;
    let id = demo(&first, &ann, json!({"steps": 40, "stepMs": 40})).await;
    let before = read_events(events(&first, &ann, id, None).await, |g| g.len() >= 5).await;
    first.state.shutdown.trigger();
    assert!(first.state.shutdown.drain(Duration::from_secs(20)).await);

    let url = first.state.config.database_url.clone();
    let second = TestServer::start_with(move |c| c.server.database_url = url).await;
    let client = second.client();
    let res = post_json(
        &client,
        &second.url("/api/auth/login"),
        json!({"username": "ann", "password": common::PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let last = before.last().unwrap().id;
    let after = read_events(
        events(&second, &client, id, Some(&last.to_string())).await,
        |_| false,
    )
    .await;
    assert_contiguous(&after, last + 1);
    assert_eq!(after.last().unwrap().event, "complete");
    let resumed = after
        .iter()
        .find(|g| g.event == "warning")
        .expect("a note that the job resumed");
    assert!(resumed.data["message"]
        .as_str()
        .unwrap()
        .contains("restarted"));
    // Every step was done once: the progress steps seen across both servers are 1..=40.
    let steps: Vec<i64> = before
        .iter()
        .chain(&after)
        .filter(|g| g.event == "progress")
        .map(|g| g.data["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, (1..=40).collect::<Vec<_>>());
}

/// Runs demo jobs one after another on `runner` (each queued on `queuer`, watched on
/// `runner`); each must end within the stream's 30 s while polling is set to ten minutes, so
/// only a wake-up can have started it.
async fn queued_jobs_start_when_woken(
    queuer: &TestServer,
    runner: &TestServer,
    client: &reqwest::Client,
) {
    for _ in 0..3 {
        let id = demo(queuer, client, json!({"steps": 1, "stepMs": 0})).await;
        let got = read_events(events(runner, client, id, None).await, |got| {
            got.last().is_some_and(|g| g.event == "complete")
        })
        .await;
        assert_eq!(got.last().map(|g| g.event.as_str()), Some("complete"));
        assert_contiguous(&got, 1);
    }
}

#[tokio::test]
async fn a_queued_job_wakes_an_idle_worker_here_and_on_another_instance() {
    let slow_poll = |c: &mut tidings::settings::Settings| {
        c.jobs.poll = Duration::from_secs(600);
    };
    // One instance: the route wakes a worker of its own process.
    let dir = tempfile::tempdir().unwrap();
    let database = common::fresh_database(dir.path()).await;
    let a = TestServer::start_on(&database, slow_poll).await;
    let ann = a.client();
    a.signup(&ann, "ann").await;
    queued_jobs_start_when_woken(&a, &a, &ann).await;

    // PostgreSQL: a job queued on an instance that runs none (`TIDINGS_JOB_WORKERS=0`) is
    // announced with NOTIFY, and the other instance's idle worker takes it at once.
    if !database.starts_with("postgres") {
        return;
    }
    let b = TestServer::start_on(&database, |c| {
        slow_poll(c);
        c.jobs.workers = Some(0);
    })
    .await;
    queued_jobs_start_when_woken(&b, &a, &ann).await;
}
