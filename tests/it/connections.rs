//! One connection per page, and other servers (docs/interface.md, "One connection per page"
//! and "Publishing from other servers"), through the real server:
//!
//! - one WebSocket in several rooms, `room` on every message, a 33rd room refused;
//! - `clientId` acks, and a resend on a new socket after a drop stored once;
//! - `Idempotency-Key` on `POST`: the repeat gets the first 201 body.

use crate::chat::{collect_for, connect, join, next_of, poll, send_json};
use crate::common::{error_code, TestServer};

use std::time::Duration;

use serde_json::{json, Value};
use tidings::protocol::chat::ROOMS_PER_SOCKET;

#[tokio::test]
async fn one_socket_hears_several_rooms_and_a_resent_client_id_is_stored_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut a = connect(&server, &alice).await;
    join(&mut a, "ops", None).await;
    join(&mut a, "dev", None).await;
    let mut b = connect(&server, &bob).await;
    join(&mut b, "ops", None).await;
    // Alice sends to `ops` (not the room joined last) with a clientId: acked, and Bob hears
    // it in `ops`.
    send_json(
        &mut a,
        json!({"type":"chat-message","room":"ops","text":"deploying","clientId":"a-1"}),
    )
    .await;
    let ack = next_of(&mut a, "chat-ack").await;
    assert_eq!(
        (ack["clientId"].as_str(), ack["room"].as_str()),
        (Some("a-1"), Some("ops"))
    );
    let heard = next_of(&mut b, "chat-message").await;
    assert_eq!(
        (heard["room"].as_str(), heard["id"].clone()),
        (Some("ops"), ack["id"].clone())
    );
    // The connection drops before the ack could be read: the client resends on a new socket
    // with the same clientId, gets the first id, and nothing new is stored or delivered.
    drop(a);
    let mut again = connect(&server, &alice).await;
    join(&mut again, "ops", ack["id"].as_i64()).await;
    send_json(
        &mut again,
        json!({"type":"chat-message","room":"ops","text":"deploying","clientId":"a-1"}),
    )
    .await;
    assert_eq!(next_of(&mut again, "chat-ack").await["id"], ack["id"]);
    let later: Vec<Value> = collect_for(&mut b, Duration::from_millis(500)).await;
    assert!(
        later.iter().all(|v| v["type"] != "chat-message"),
        "{later:?}"
    );
    let (_, page) = poll(&server, &bob, "ops", "").await;
    assert_eq!(page.messages.len(), 1);
    // Up to 32 rooms; the 33rd is refused and the socket stays.
    for n in 1..ROOMS_PER_SOCKET {
        join(&mut again, &format!("room-{n}"), None).await;
    }
    send_json(&mut again, json!({"type":"chat-join","room":"one-more"})).await;
    let refused = next_of(&mut again, "chat-error").await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("at most 32 rooms"),
        "{refused}"
    );
    send_json(
        &mut again,
        json!({"type":"chat-message","room":"room-7","text":"still here"}),
    )
    .await;
    let m = next_of(&mut again, "chat-message").await;
    assert_eq!(
        (m["room"].as_str(), m["text"].as_str()),
        (Some("room-7"), Some("still here"))
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_post_return_the_first_message() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let post = |key: &str| {
        alice
            .http
            .post(server.url("/api/rooms/general/messages"))
            .header("idempotency-key", key)
            .json(&json!({"text": "once"}))
            .send()
    };
    let first = post("deploy-42").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let repeat = post("deploy-42").await.unwrap();
    assert_eq!(repeat.status(), 201);
    assert_eq!(repeat.json::<Value>().await.unwrap(), first);
    let (_, page) = poll(&server, &alice, "general", "").await;
    assert_eq!(page.messages.len(), 1);
    let too_long = post(&"k".repeat(65)).await.unwrap();
    assert_eq!(too_long.status(), 400);
    assert_eq!(error_code(too_long).await, "invalid_idempotency_key");
}
