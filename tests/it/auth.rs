//! Accounts over the real server: signup, login, logout, me, stream tokens, rate limits,
//! origin checks, bad input, and the plain-form (JavaScript off) twins of the routes.

use crate::common;

use axum::{routing::get, Router};
use common::{error_code, get_json, post_json, TestServer, PASSWORD};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use tidings::server::{config::TEST_SETUP_TOKEN, StreamUser};

fn set_cookie(res: &reqwest::Response) -> String {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("tidings_session="))
        .expect("a session cookie")
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("tidings_session=")
        .to_string()
}

#[tokio::test]
async fn signup_me_logout_login() {
    let srv = TestServer::start().await;
    let client = srv.client();

    let res = post_json(
        &client,
        &srv.url("/api/auth/signup"),
        json!({"username": "eric", "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let cookie = set_cookie(&res);
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "plain http: no Secure flag");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"user": {"username": "eric", "role": "user"}}));

    let me: Value = get_json(&client, &srv.url("/api/auth/me")).await;
    assert_eq!(me["user"]["username"], "eric");

    let res = client
        .post(srv.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        client
            .get(srv.url("/api/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The server really ended the session: the old cookie, replayed by hand, is refused.
    let replay = common::plain_client()
        .get(srv.url("/api/auth/me"))
        .header(
            header::COOKIE,
            format!("tidings_session={}", cookie_value(&cookie)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);

    let res = post_json(
        &client,
        &srv.url("/api/auth/login"),
        json!({"username": "eric", "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(
        cookie_value(&set_cookie(&res)),
        cookie_value(&cookie),
        "a new session id at login"
    );
    let me: Value = get_json(&client, &srv.url("/api/auth/me")).await;
    assert_eq!(me["user"]["username"], "eric");

    let actions: Vec<String> = srv
        .state
        .store
        .recent_audit(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(actions, ["LOGIN", "LOGOUT", "SIGNUP"]);
}

#[tokio::test]
async fn every_login_issues_a_new_session() {
    let srv = TestServer::start().await;
    let client = srv.client();
    srv.signup(&client, "fixed").await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let res = post_json(
            &client,
            &srv.url("/api/auth/login"),
            json!({"username": "fixed", "password": PASSWORD}),
        )
        .await;
        assert_eq!(res.status(), 200);
        assert!(seen.insert(cookie_value(&set_cookie(&res))));
    }
}

#[tokio::test]
async fn admins_come_from_the_environment() {
    let srv = TestServer::start().await;
    let res = post_json(
        &srv.client(),
        &srv.url("/api/auth/signup"),
        json!({"username": "admin", "password": PASSWORD, "setupToken": TEST_SETUP_TOKEN}),
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["role"], "admin");
}

#[tokio::test]
async fn secure_cookie_behind_https() {
    let signup = |srv: &TestServer, name: &str| {
        common::send(
            srv.client()
                .post(srv.url("/api/auth/signup"))
                .header("x-forwarded-proto", "https")
                .json(&json!({"username": name, "password": PASSWORD})),
        )
    };
    // From a trusted proxy, X-Forwarded-Proto says the browser used https.
    let trusted = TestServer::start_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    assert!(set_cookie(&signup(&trusted, "tls").await).contains("Secure"));
    // From anyone else, the header is ignored.
    let direct = TestServer::start().await;
    assert!(!set_cookie(&signup(&direct, "tls").await).contains("Secure"));
}

#[tokio::test]
async fn bad_input_gets_clear_4xx() {
    let srv = TestServer::start().await;
    let c = common::plain_client();
    let signup = srv.url("/api/auth/signup");
    let post_raw = |body: &'static str| {
        c.post(&signup)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
    };

    let res = post_raw("{not json").await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "malformed_json");

    let res = post_raw(r#"{"username":"abc"}"#).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_body");

    let res = post_raw(r#"{"username":42,"password":"12345678"}"#)
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_body");

    let res = c
        .post(&signup)
        .body("username=a")
        .header(header::CONTENT_TYPE, "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(error_code(res).await, "unsupported_media_type");

    let long = "x".repeat(33);
    for (username, password, code) in [
        (long.as_str(), PASSWORD, "invalid_username"),
        ("Upper", PASSWORD, "invalid_username"),
        ("a", PASSWORD, "invalid_username"),
        ("shorty", "1234567", "invalid_password"),
    ] {
        let res = post_json(
            &c,
            &signup,
            json!({"username": username, "password": password}),
        )
        .await;
        assert_eq!(res.status(), 400, "{username}");
        assert_eq!(error_code(res).await, code, "{username}");
    }

    let huge = json!({"username": "big", "password": "p".repeat(200_000)});
    let res = c.post(&signup).json(&huge).send().await.unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "payload_too_large");

    srv.signup(&c, "taken").await;
    let res = post_json(
        &c,
        &signup,
        json!({"username": "taken", "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 409);
    assert_eq!(error_code(res).await, "username_taken");

    let res = c.get(srv.url("/api/auth/login")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(error_code(res).await, "method_not_allowed");

    // Server functions read their own bodies; the limit covers them too.
    let res = c
        .post(srv.url("/sf/whoami"))
        .body(vec![b'x'; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "payload_too_large");

    let res = c.get(srv.url("/api/no/such/route")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");
}

#[tokio::test]
async fn routes_need_a_session() {
    let srv = TestServer::start().await;
    let c = common::plain_client();
    for (method, path) in [
        ("GET", "/api/auth/me"),
        ("POST", "/api/auth/logout"),
        ("POST", "/api/auth/stream-token"),
    ] {
        let res = c
            .request(method.parse().unwrap(), srv.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
        assert_eq!(error_code(res).await, "unauthorized");
    }
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_401() {
    let srv = TestServer::start().await;
    let c = srv.client();
    srv.signup(&c, "known").await;
    for (username, password) in [
        ("known", "wrong password"),
        ("nobody", PASSWORD),
        ("Bad Name", PASSWORD),
    ] {
        let res = post_json(
            &c,
            &srv.url("/api/auth/login"),
            json!({"username": username, "password": password}),
        )
        .await;
        assert_eq!(res.status(), 401, "{username}");
        assert_eq!(error_code(res).await, "bad_credentials");
    }
}

async fn login(srv: &TestServer, username: &str, password: &str) -> reqwest::Response {
    post_json(
        &common::plain_client(),
        &srv.url("/api/auth/login"),
        json!({"username": username, "password": password}),
    )
    .await
}

#[tokio::test]
async fn ten_failures_for_a_username_give_429() {
    let srv = TestServer::start().await;
    srv.signup(&srv.client(), "target").await;
    // Each guess from its own loopback address, so only the username's counter can reach 10.
    for i in 0..10 {
        let res = login_from(&srv, [127, 0, 0, 10 + i], "target", "wrong password").await;
        assert_eq!(res.status(), 401);
    }
    // Even the right password, from a fresh address, is refused now: that is the point.
    let res = login_from(&srv, [127, 0, 0, 99], "target", PASSWORD).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    assert_eq!(error_code(res).await, "rate_limited");
}

async fn login_from(
    srv: &TestServer,
    ip: [u8; 4],
    username: &str,
    password: &str,
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    post_json(
        &client,
        &srv.url("/api/auth/login"),
        json!({"username": username, "password": password}),
    )
    .await
}

#[tokio::test]
async fn parallel_guesses_cannot_pass_the_limit() {
    let srv = TestServer::start().await;
    srv.signup(&srv.client(), "burst").await;
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..25u8 {
        let (url, body) = (
            srv.url("/api/auth/login"),
            json!({"username": "burst", "password": format!("guess {i}")}),
        );
        let client = common::plain_client();
        guesses.spawn(async move { client.post(url).json(&body).send().await.unwrap().status() });
    }
    let statuses = guesses.join_all().await;
    let wrong = statuses.iter().filter(|s| s.as_u16() == 401).count();
    let limited = statuses.iter().filter(|s| s.as_u16() == 429).count();
    assert_eq!((wrong, limited), (10, 15), "{statuses:?}");
}

#[tokio::test]
async fn ten_failures_from_an_address_give_429() {
    let srv = TestServer::start().await;
    srv.signup(&srv.client(), "victim").await;
    for i in 0..10 {
        assert_eq!(
            login(&srv, &format!("guess{i}"), "wrong password")
                .await
                .status(),
            401
        );
    }
    assert_eq!(login(&srv, "victim", PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn foreign_origins_are_refused_on_writes() {
    let srv = TestServer::start().await;
    srv.signup(&srv.client(), "origin").await;
    let c = common::plain_client();
    let attempt = |origin: Option<&str>| {
        let mut req = c
            .post(srv.url("/api/auth/login"))
            .json(&json!({"username": "origin", "password": PASSWORD}));
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        req.send()
    };
    let res = attempt(Some("https://evil.example")).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "foreign_origin");
    // Signup too is state-changing.
    let res = common::send(
        c.post(srv.url("/api/auth/signup"))
            .header(header::ORIGIN, "https://evil.example")
            .json(&json!({"username": "newbie", "password": PASSWORD})),
    )
    .await;
    assert_eq!(res.status(), 403);

    assert_eq!(
        attempt(Some(&srv.base)).await.unwrap().status(),
        200,
        "own origin"
    );
    assert_eq!(
        attempt(Some("http://allowed.example"))
            .await
            .unwrap()
            .status(),
        200,
        "TIDINGS_ALLOWED_ORIGINS"
    );
    assert_eq!(
        attempt(None).await.unwrap().status(),
        200,
        "command-line clients send no Origin"
    );
    let read = c
        .get(srv.url("/healthz"))
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads are not state-changing");
}

/// Serves one GET stream-like route that takes a `StreamUser`, on the same state (database and
/// signer) as `srv`, and returns its base URL.
async fn stream_probe(srv: &TestServer) -> String {
    let router = Router::new()
        .route(
            "/probe",
            get(|StreamUser(u): StreamUser| async move { u.user.username })
                .post(|StreamUser(u): StreamUser| async move { u.user.username }),
        )
        .with_state(srv.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test]
async fn stream_tokens_grant_get_streams_until_altered_expired_or_logged_out() {
    let srv = TestServer::start().await;
    let client = srv.client();
    srv.signup(&client, "streamer").await;
    let res = client
        .post(srv.url("/api/auth/stream-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expiresAt"].as_str().unwrap()).unwrap();
    let ttl = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((290..=300).contains(&ttl), "valid 5 minutes, got {ttl}s");

    let probe = stream_probe(&srv).await;
    let anon = common::plain_client();
    let get = |t: String| {
        anon.get(format!("{probe}/probe"))
            .query(&[("token", t)])
            .send()
    };

    let ok = get(token.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "streamer");

    assert_eq!(
        anon.get(format!("{probe}/probe"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "no token"
    );

    let mut altered = token.clone().into_bytes();
    altered[0] = if altered[0] == b'9' { b'8' } else { b'9' };
    let res = get(String::from_utf8(altered).unwrap()).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_token");

    let session_id: i64 = token.split('.').next().unwrap().parse().unwrap();
    let expired = srv
        .state
        .signer
        .issue(session_id, chrono::Utc::now().timestamp() - 1);
    let res = get(expired).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_token");

    let res = anon
        .post(format!("{probe}/probe"))
        .query(&[("token", token.clone())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "tokens are for GET only");

    client
        .post(srv.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    let res = get(token).await.unwrap();
    assert_eq!(res.status(), 401, "logout revokes the session's tokens");
}

#[tokio::test]
async fn plain_forms_redirect() {
    let srv = TestServer::start().await;
    let c = srv.client_no_redirects();
    let res = common::send(
        c.post(srv.url("/api/auth/signup"))
            .form(&[("username", "formy"), ("password", PASSWORD)]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/");
    set_cookie(&res);

    let page = c
        .get(srv.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header = &page[page.find("<header").unwrap()..page.find("</header>").unwrap()];
    assert!(
        header.contains(r#"data-testid="current-user" class="who">formy"#),
        "the header itself (not a template that needs JavaScript) names the user: {header}"
    );

    let res = c
        .post(srv.url("/api/auth/logout"))
        .form(&[("x", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        c.get(srv.url("/api/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "the form logout ended the session"
    );

    let res = c
        .post(srv.url("/api/auth/login"))
        .form(&[("username", "formy"), ("password", "wrong password")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[header::LOCATION],
        "/login?error=bad_credentials&username=formy"
    );

    let res = common::send(
        c.post(srv.url("/api/auth/signup"))
            .form(&[("username", "Bad <Name>"), ("password", PASSWORD)]),
    )
    .await;
    assert_eq!(
        res.headers()[header::LOCATION],
        "/signup?error=invalid_username&username="
    );
}

#[tokio::test]
async fn pages_and_health() {
    let srv = TestServer::start().await;
    let c = common::plain_client();
    let home = c.get(srv.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    assert!(html.contains("Keep the browser up to date"));
    let header = &html[html.find("<header").unwrap()..html.find("</header>").unwrap()];
    assert!(
        header.contains(r#"<a href="/login">Sign in"#),
        "the signed-out header is in the first HTML, not in a template that needs JavaScript: {header}"
    );
    assert_eq!(c.get(srv.url("/login")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(srv.url("/nowhere")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(
        c.get(srv.url("/readyz")).send().await.unwrap().status(),
        200
    );
    srv.state.store.close().await;
    assert_eq!(
        c.get(srv.url("/readyz")).send().await.unwrap().status(),
        503,
        "database gone"
    );
}

/// Several servers in one process (as in these tests): a page being rendered on one while
/// others start must still finish. Listing the pages' routes parks every resource load in the
/// process while it runs, so each server lists them once per process, not at every start.
#[test]
fn pages_render_while_other_servers_start() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stops the starters however this test ends (a failed request must not leave them running).
    struct Done(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop_starters = Done(done.clone());
    let starters: Vec<_> = (0..3)
        .map(|_| {
            let done = done.clone();
            let started_tx = started_tx.clone();
            std::thread::spawn(move || {
                runtime().block_on(async {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        drop(TestServer::start().await);
                        let _ = started_tx.send(());
                    }
                })
            })
        })
        .collect();
    drop(started_tx);
    runtime().block_on(async {
        let srv = TestServer::start().await;
        let c = common::plain_client();
        let (mut pages, mut starts) = (0, 0);
        // Go on until the other threads have started a few servers while pages were asked for.
        while pages < 60 || starts < 6 {
            assert!(pages < 6000, "the other threads stopped starting servers");
            starts += started_rx.try_iter().count();
            for path in ["/", "/login", "/nowhere"] {
                let res = c.get(srv.url(path)).send().await;
                let res = res.unwrap_or_else(|e| {
                    panic!("GET {path} while other servers started (page {pages}): {e}")
                });
                assert!(res.status() == 200 || res.status() == 404, "{path}");
                pages += 1;
            }
        }
    });
    drop(stop_starters);
    for s in starters {
        s.join().unwrap();
    }
}
