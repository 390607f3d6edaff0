//! HTTPS served by Tidings itself (docs/interface.md, "One connection per page": HTTPS with
//! HTTP/2), with a `tidings dev-cert` pair: ALPN offers h2 and http/1.1, a page's many event
//! streams share one h2 connection (past the six a browser allows per origin on HTTP/1.1),
//! and the WebSocket works over both: RFC 8441 extended CONNECT on h2, the usual upgrade on
//! http/1.1.

use crate::chat::{next_of, send_json};
use crate::common::{Sse, TestServer};

use std::sync::Arc;

use serde_json::json;
use tidings::server::{config::TlsFiles, edge::tls::write_dev_cert};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, ServerName},
};
use tokio_tungstenite::{tungstenite::protocol::Role, WebSocketStream};

fn tls_client(files: &TlsFiles, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_stream(
    server: &TestServer,
    files: &TlsFiles,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let addr = server.base.trim_start_matches("https://").to_string();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let stream = tls_client(files, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the TLS handshake");
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(alpn),
        "ALPN agreed"
    );
    stream
}

#[tokio::test]
async fn https_speaks_h2_and_http1_and_the_websocket_works_over_both() {
    let certs = tempfile::tempdir().unwrap();
    let files = write_dev_cert(certs.path()).unwrap();
    let server = TestServer::start_with(|s| s.server.tls = Some(files.clone())).await;
    assert!(server.base.starts_with("https://127.0.0.1:"));
    let root = reqwest::Certificate::from_pem(&std::fs::read(&files.cert).unwrap()).unwrap();
    let h2 = reqwest::Client::builder()
        .add_root_certificate(root.clone())
        .cookie_store(true)
        .build()
        .unwrap();
    let http1 = reqwest::Client::builder()
        .add_root_certificate(root)
        .http1_only()
        .build()
        .unwrap();
    let res = h2.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    let res = http1.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    // The session cookie is Secure over TLS here.
    let res = h2
        .post(server.url("/api/auth/signup"))
        .json(&json!({"username":"alice","password":crate::common::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("Secure"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    // Nine event streams at once on one h2 connection, and a tenth request still answered:
    // on HTTP/1.1 a browser would have stalled at six.
    let mut streams = Vec::new();
    for _ in 0..9 {
        streams.push(Sse::open(h2.get(server.url("/api/notifications/events"))).await);
    }
    let res = h2.get(server.url("/api/rooms")).send().await.unwrap();
    assert_eq!(
        (res.status().as_u16(), res.version()),
        (200, reqwest::Version::HTTP_2)
    );

    // The WebSocket over h2: extended CONNECT (RFC 8441).
    let stream = tls_stream(&server, &files, b"h2").await;
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(format!("https://localhost:{port}/ws"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .header("cookie", &cookie)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let mut res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200, "an extended CONNECT is answered 200");
    let upgraded = hyper::upgrade::on(&mut res).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    send_json(&mut ws, json!({"type":"chat-join","room":"secure"})).await;
    next_of(&mut ws, "chat-joined").await;
    send_json(&mut ws, json!({"type":"chat-message","text":"over h2"})).await;
    assert_eq!(next_of(&mut ws, "chat-message").await["text"], "over h2");

    // And over TLS with http/1.1: the usual upgrade.
    let stream = tls_stream(&server, &files, b"http/1.1").await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://localhost:{port}/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    let (mut ws1, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    send_json(&mut ws1, json!({"type":"chat-join","room":"secure"})).await;
    let joined = next_of(&mut ws1, "chat-joined").await;
    assert_eq!(joined["history"][0]["text"], "over h2");
    drop(streams);
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_writes_a_dev_cert_and_serves_https_with_it_or_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = crate::common::binary(&[])
        .args(["dev-cert", "--out", certs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    assert!(std::fs::read_to_string(&cert)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let database = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    // Only one of the pair: the start stops with a sentence naming both variables.
    let out = crate::common::binary(&[
        ("DATABASE_URL", &database),
        ("TIDINGS_TLS_CERT", cert.to_str().unwrap()),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("TIDINGS_TLS_CERT and TIDINGS_TLS_KEY go together"),
        "{said}"
    );

    let mut child = Child(
        crate::common::binary(&[
            ("DATABASE_URL", &database),
            ("TIDINGS_TLS_CERT", cert.to_str().unwrap()),
            ("TIDINGS_TLS_KEY", key.to_str().unwrap()),
        ])
        .spawn()
        .unwrap(),
    );
    let base = crate::common::wait_for_listening(&mut child.0);
    assert!(base.starts_with("https://"), "{base}");
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let res = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(
        (res.status().as_u16(), res.version()),
        (200, reqwest::Version::HTTP_2)
    );
}
