//! Through a real nginx (Debian's `nginx-light`, which `scripts/setup.sh` installs), set up
//! with the README's configuration word for word (read from README.md; only the listen
//! address and the upstream ports are put in), in front of two instances on one database and
//! one Redis, as the README deploys them:
//! - a client guessing passwords behind the proxy is refused, while another client behind the
//!   same proxy still logs in (the instances trust nginx's `X-Forwarded-For`, nothing else);
//! - what a client writes in `X-Forwarded-For` itself does not get it past the limit;
//! - WebSockets upgrade through it, event streams arrive unbuffered;
//! - the public origin is the only `Host` served.

use crate::common;

use std::{net::IpAddr, sync::Arc, time::Duration};

use common::{fresh_database, Redis, Sse, TestServer, PASSWORD};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

/// The ```nginx block of README.md.
fn readme_config() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("```nginx\n")
        .expect("README.md has an nginx block")
        + 9;
    let end = start + readme[start..].find("```").expect("the block ends");
    readme[start..end].to_string()
}

/// nginx running `config` (the README's block with our ports), stopped when dropped.
struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// Debian's nginx, if installed.
fn nginx() -> Option<&'static str> {
    ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|p| std::process::Command::new(p).arg("-v").output().is_ok())
}

impl Nginx {
    fn start(port: u16, upstreams: [u16; 2]) -> Self {
        let readme = readme_config();
        for needed in [
            "listen 80;",
            "server 127.0.0.1:3001 ",
            "server 127.0.0.1:3002 ",
        ] {
            assert!(readme.contains(needed), "the README's block has {needed:?}");
        }
        let block = readme
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "server 127.0.0.1:3001 ",
                &format!("server 127.0.0.1:{} ", upstreams[0]),
            )
            .replace(
                "server 127.0.0.1:3002 ",
                &format!("server 127.0.0.1:{} ", upstreams[1]),
            );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        // Everything around the README's block: one process of our own, files in our folder.
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{block}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let nginx =
            nginx().expect("nginx is installed (scripts/setup.sh installs Debian's nginx-light)");
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nginx starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A browser-like client on its own loopback address, and its cookie jar.
fn client_from(last: u8) -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, last]))
        .cookie_provider(jar.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    (client, jar)
}

#[tokio::test]
async fn behind_nginx_one_guesser_is_refused_and_everyone_else_gets_in() {
    if common::skip_without("nginx", nginx().is_some()) || common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    // The README's settings for each instance.
    let settings = |c: &mut tidings::settings::Settings| {
        c.server.redis_url = Some(redis.url());
        c.server.public_origins = tidings::server::Config::from_vars(|n| {
            (n == "TIDINGS_PUBLIC_ORIGIN").then(|| public.clone())
        })
        .unwrap()
        .public_origins;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    };
    let a = TestServer::start_on(&database, settings).await;
    let b = TestServer::start_on(&database, settings).await;
    let ports = [&a, &b].map(|s| s.base.rsplit(':').next().unwrap().parse::<u16>().unwrap());
    let _nginx = Nginx::start(port, ports);
    let url = |path: &str| format!("{public}{path}");

    let (bob, bobs_jar) = client_from(3);
    let res = common::send(
        bob.post(url("/api/auth/signup"))
            .json(&json!({"username": "bob", "password": PASSWORD})),
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert!(bob
        .post(url("/api/auth/logout"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    // The guesser, on 127.0.0.2, even claiming other addresses in X-Forwarded-For itself.
    let (guesser, _) = client_from(2);
    let guess = |i: usize| {
        guesser
            .post(url("/api/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"username": format!("victim{i}"), "password": "wrong password"}))
            .send()
    };
    for i in 0..10 {
        assert_eq!(guess(i).await.unwrap().status(), 401, "guess {i}");
    }
    let refused = guess(10).await.unwrap();
    assert_eq!(
        refused.status(),
        429,
        "both instances count the guesser's address"
    );
    // Bob, behind the same proxy, logs in.
    let res = bob
        .post(url("/api/auth/login"))
        .json(&json!({"username": "bob", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let rows = a.state.store.recent_audit(100).await.unwrap();
    assert!(rows
        .iter()
        .any(|r| r.action == "LOGIN" && r.username == "bob"));

    // Event streams arrive through it at once; a message posted through it reaches them.
    let mut events = Sse::open(bob.get(url("/api/rooms/lobby/events"))).await;
    assert_eq!(events.next().await.unwrap().event, "chat-joined");
    let posted = bob
        .post(url("/api/rooms/lobby/messages"))
        .header("origin", &public)
        .json(&json!({"text": "through nginx"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    assert_eq!(
        events.next_named("chat-message").await.data["text"],
        "through nginx"
    );

    // A WebSocket upgrades through it, with the public origin as its Origin.
    let cookie = {
        use reqwest::cookie::CookieStore;
        bobs_jar
            .cookies(&public.parse().unwrap())
            .expect("bob's session cookie")
            .to_str()
            .unwrap()
            .to_string()
    };
    let mut request = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    let h = request.headers_mut();
    h.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    h.insert("origin", HeaderValue::from_str(&public).unwrap());
    let (mut ws, res) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade passes nginx");
    assert_eq!(res.status(), 101);
    ws.send(Message::text(
        json!({"type": "chat-join", "room": "lobby"}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("a frame");
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "chat-joined" {
                assert!(v["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["text"] == "through nginx"));
                break;
            }
        }
    }

    // Straight to an instance, its own address is not the public origin.
    let direct = reqwest::get(a.url("/api/auth/me")).await.unwrap();
    assert_eq!(direct.status(), 421);
}
