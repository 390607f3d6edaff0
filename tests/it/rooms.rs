//! Who hears what, through the real server (docs/interface.md, "Private rooms, per-user
//! delivery, read positions"), as two users and an admin, one user with two tabs:
//!
//! - a private room is its members' only on every transport (WebSocket join, SSE, long
//!   polling, polling, `POST`): 403 `not_a_member`, and on the socket the documented sentence
//!   with the socket still open; the owner adds and removes members, and a removed member's
//!   socket and stream end within 2 s and carry nothing more of the room;
//! - the room list with read positions and unread counts, `chat-read` to my other tab;
//! - typing reaches the others, once per 2 s, never the typist;
//! - deleting a message: author or admin only, `chat-delete` everywhere, a tombstone in the
//!   history;
//! - notifications to some users, the inbox with read state, the full replay on both
//!   transports;
//! - the admin's connection list and disconnect.
//!
//! Across instances: `tests/it/scale.rs`.

use crate::chat::{
    close_code, collect_for, connect, join, next_of, next_text, poll, post, post_ok, room_events,
    send_json, WAIT,
};
use crate::common::{error_code, get_json, post_json, Sse, TestServer, User};

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidings::protocol::chat::{not_a_member, Inbox, RoomList};

/// What "within 2 s" allows for a change to reach a live connection.
const PROMPT: Duration = Duration::from_secs(2);

/// `POST /api/rooms` as `user`.
async fn create_room(
    server: &TestServer,
    user: &User,
    name: &str,
    private: bool,
) -> reqwest::Response {
    post_json(
        &user.http,
        &server.url("/api/rooms"),
        json!({"name": name, "private": private}),
    )
    .await
}

/// `PUT` or `DELETE /api/rooms/{room}/members/{member}` as `user`; the status.
async fn member(
    server: &TestServer,
    user: &User,
    put: bool,
    room: &str,
    who: &str,
) -> reqwest::Response {
    let url = server.url(&format!("/api/rooms/{room}/members/{who}"));
    let request = if put {
        user.http.put(url)
    } else {
        user.http.delete(url)
    };
    request.send().await.expect("the server answers")
}

async fn rooms(server: &TestServer, user: &User) -> RoomList {
    serde_json::from_value(get_json(&user.http, &server.url("/api/rooms")).await)
        .expect("the room list")
}

/// The messages of `room` a socket hears within `window`.
fn of_room<'a>(heard: &'a [Value], room: &str) -> Vec<&'a Value> {
    heard.iter().filter(|v| v["room"] == room).collect()
}

#[tokio::test]
async fn a_private_room_is_its_members_only_on_every_transport() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;

    let res = create_room(&server, &alice, "club", true).await;
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.unwrap();
    assert_eq!(
        made,
        json!({"room": {"name": "club", "private": true, "owner": "alice"}})
    );
    let again = create_room(&server, &bob, "club", false).await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "room_exists");
    let bad = create_room(&server, &bob, "No Spaces", false).await;
    assert_eq!(bad.status(), 400);
    post_ok(&server, &alice, "club", "members only").await;

    // Bob, not a member, on every transport.
    let mut ws = connect(&server, &bob).await;
    send_json(
        &mut ws,
        json!({"type": "chat-join", "room": "club", "lastMessageId": null}),
    )
    .await;
    let refused = next_text(&mut ws).await;
    assert_eq!(
        refused,
        json!({"type": "chat-error", "message": not_a_member("club")})
    );
    let (members, _) = join(&mut ws, "general", None).await;
    assert_eq!(members, ["bob"], "the socket stays open and usable");
    for (what, res) in [
        (
            "SSE",
            room_events(&server, &bob, "club", "", None)
                .send()
                .await
                .unwrap(),
        ),
        (
            "long poll",
            room_events(&server, &bob, "club", "?once=true", None)
                .send()
                .await
                .unwrap(),
        ),
        (
            "poll",
            bob.http
                .get(server.url("/api/rooms/club/messages"))
                .send()
                .await
                .unwrap(),
        ),
        ("POST", post(&server, &bob, "club", "let me in").await),
        (
            "members",
            bob.http
                .get(server.url("/api/rooms/club/members"))
                .send()
                .await
                .unwrap(),
        ),
    ] {
        assert_eq!(res.status(), 403, "{what}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "not_a_member", "{what}");
        assert!(
            body["message"].as_str().unwrap().contains("alice"),
            "names who may: {body}"
        );
    }
    assert!(
        rooms(&server, &bob)
            .await
            .rooms
            .iter()
            .all(|r| r.name != "club"),
        "not listed to outsiders"
    );
    let listed = rooms(&server, &alice).await;
    let club = listed
        .rooms
        .iter()
        .find(|r| r.name == "club")
        .expect("listed to its owner");
    assert!(club.private);
    assert_eq!(club.owner.as_deref(), Some("alice"));

    // Only the owner changes members; unknown users and rooms are 404.
    assert_eq!(
        member(&server, &carol, true, "club", "carol")
            .await
            .status(),
        403
    );
    assert_eq!(
        member(&server, &alice, true, "club", "nobody")
            .await
            .status(),
        404
    );
    assert_eq!(
        member(&server, &alice, true, "nowhere", "bob")
            .await
            .status(),
        404
    );
    assert_eq!(
        member(&server, &alice, false, "club", "alice")
            .await
            .status(),
        400
    );
    assert_eq!(
        member(&server, &alice, true, "club", "bob").await.status(),
        204
    );

    // Now Bob is in, on every transport.
    let (members, history) = join(&mut ws, "club", None).await;
    assert_eq!(members, ["bob"]);
    assert_eq!(history[0].text, "members only");
    post_ok(&server, &bob, "club", "thanks").await;
    let (_, page) = poll(&server, &bob, "club", "").await;
    assert_eq!(page.messages.len(), 2);
    let mut sse = Sse::open(room_events(&server, &bob, "club", "", None)).await;
    sse.next_named("chat-joined").await;
    let list: Value = get_json(&bob.http, &server.url("/api/rooms/club/members")).await;
    assert_eq!(list["members"], json!(["alice", "bob"]));
}

#[tokio::test]
async fn a_removed_member_hears_nothing_more_of_the_room_within_two_seconds() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    assert_eq!(
        create_room(&server, &alice, "club", true).await.status(),
        201
    );
    assert_eq!(
        member(&server, &alice, true, "club", "bob").await.status(),
        204
    );

    let mut ws = connect(&server, &bob).await;
    join(&mut ws, "club", None).await;
    let mut sse = Sse::open(room_events(&server, &bob, "club", "", None)).await;
    sse.next_named("chat-joined").await;
    post_ok(&server, &alice, "club", "before").await;
    assert_eq!(next_of(&mut ws, "chat-message").await["text"], "before");

    let asked = Instant::now();
    assert_eq!(
        member(&server, &alice, false, "club", "bob").await.status(),
        204
    );
    let removed = next_of(&mut ws, "chat-removed").await;
    assert_eq!(removed, json!({"type": "chat-removed", "room": "club"}));
    let got = sse.next_named("removed").await;
    assert_eq!(got.data["room"], "club");
    assert!(asked.elapsed() < PROMPT, "took {:?}", asked.elapsed());
    assert!(sse.next().await.is_none(), "the stream ends");

    // Not another byte of the room, on the socket that stays open.
    post_ok(&server, &alice, "club", "after").await;
    send_json(&mut ws, json!({"type": "chat-typing", "room": "club"})).await;
    let heard = collect_for(&mut ws, Duration::from_millis(500)).await;
    assert!(
        of_room(&heard, "club")
            .iter()
            .all(|v| v["type"] == "chat-error"),
        "{heard:?}"
    );
    send_json(
        &mut ws,
        json!({"type": "chat-message", "text": "still here?"}),
    )
    .await;
    let refused = next_of(&mut ws, "chat-error").await;
    assert_eq!(refused["message"], not_a_member("club"));
    assert_eq!(post(&server, &bob, "club", "hello?").await.status(), 403);
    let again = room_events(&server, &bob, "club", "", None)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 403);
    assert_eq!(
        member(&server, &alice, false, "club", "bob").await.status(),
        404
    );
}

#[tokio::test]
async fn read_positions_count_unread_and_reach_my_other_tab() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    for text in ["one", "two", "three"] {
        post_ok(&server, &alice, "general", text).await;
    }
    post_ok(&server, &bob, "general", "mine").await;
    let general = |list: RoomList| {
        list.rooms
            .into_iter()
            .find(|r| r.name == "general")
            .unwrap()
    };
    let before = general(rooms(&server, &bob).await);
    assert_eq!(
        (before.last_message_id, before.last_read_id, before.unread),
        (4, 0, 3),
        "my own message is not unread"
    );

    let mut tab1 = connect(&server, &bob).await;
    let mut tab2 = connect(&server, &bob).await;
    join(&mut tab1, "general", None).await;
    let url = server.url("/api/rooms/general/read");
    let res = post_json(&bob.http, &url, json!({"lastReadId": 2})).await;
    assert_eq!(res.status(), 204);
    for tab in [&mut tab1, &mut tab2] {
        let read = next_of(tab, "chat-read").await;
        assert_eq!(
            read,
            json!({"type": "chat-read", "room": "general", "lastReadId": 2})
        );
    }
    let after = general(rooms(&server, &bob).await);
    assert_eq!((after.last_read_id, after.unread), (2, 1));
    assert_eq!(
        general(rooms(&server, &alice).await).last_read_id,
        0,
        "per user"
    );

    for (body, why) in [
        (json!({"lastReadId": 99}), "past the last message"),
        (json!({"lastReadId": -1}), "negative"),
        (json!({"last": 1}), "unknown field"),
    ] {
        let res = post_json(&bob.http, &url, body).await;
        assert_eq!(res.status(), 400, "{why}");
    }
}

#[tokio::test]
async fn typing_reaches_the_others_once_per_two_seconds_and_never_the_typist() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut a = connect(&server, &alice).await;
    let mut b = connect(&server, &bob).await;
    join(&mut a, "general", None).await;
    join(&mut b, "general", None).await;
    for _ in 0..3 {
        send_json(&mut a, json!({"type": "chat-typing", "room": "general"})).await;
    }
    let typing = next_of(&mut b, "chat-typing").await;
    assert_eq!(
        typing,
        json!({"type": "chat-typing", "room": "general", "displayName": "alice"})
    );
    let more = collect_for(&mut b, Duration::from_millis(600)).await;
    assert!(
        more.iter().all(|v| v["type"] != "chat-typing"),
        "throttled: {more:?}"
    );
    let own = collect_for(&mut a, Duration::from_millis(200)).await;
    assert!(
        own.iter().all(|v| v["type"] != "chat-typing"),
        "not echoed: {own:?}"
    );
    send_json(&mut a, json!({"type": "chat-typing", "room": "elsewhere"})).await;
    assert_eq!(next_text(&mut a).await["type"], "chat-error");
    let stored = get_json(&alice.http, &server.url("/api/rooms/general/messages")).await;
    assert_eq!(stored["messages"], json!([]), "never stored");
}

#[tokio::test]
async fn a_deleted_message_is_a_tombstone_on_every_transport() {
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let first = post_ok(&server, &alice, "general", "oops").await;
    let second = post_ok(&server, &bob, "general", "rude").await;
    let mut ws = connect(&server, &bob).await;
    join(&mut ws, "general", Some(second.id)).await;
    let mut sse = Sse::open(room_events(&server, &bob, "general", "", None)).await;
    sse.next_named("chat-joined").await;

    let delete = |who: &User, id: i64| {
        who.http
            .delete(server.url(&format!("/api/rooms/general/messages/{id}")))
            .send()
    };
    let res = delete(&bob, first.id).await.unwrap();
    assert_eq!(res.status(), 403, "not the author");
    assert!(error_code(res).await == "forbidden");
    assert_eq!(delete(&alice, first.id).await.unwrap().status(), 204);
    let heard = next_of(&mut ws, "chat-delete").await;
    assert_eq!(
        heard,
        json!({"type": "chat-delete", "room": "general", "id": first.id})
    );
    let got = sse.next_named("chat-delete").await;
    assert_eq!(got.data["id"], first.id);
    assert_eq!(
        delete(&admin, second.id).await.unwrap().status(),
        204,
        "an admin may"
    );
    assert_eq!(delete(&alice, 99).await.unwrap().status(), 404);
    assert_eq!(delete(&alice, 0).await.unwrap().status(), 400);

    let (raw, page) = poll(&server, &bob, "general", "").await;
    assert_eq!(
        page.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [1, 2],
        "ids kept"
    );
    assert!(page.messages.iter().all(|m| m.deleted && m.text.is_empty()));
    assert!(raw["messages"][0].get("text").is_none(), "no text: {raw}");
    assert_eq!(raw["messages"][0]["deleted"], true);
}

/// `POST /api/notifications` with `to`, as `admin`; the reply.
async fn notify_to(
    server: &TestServer,
    admin: &User,
    to: Option<&[&str]>,
    message: &str,
) -> reqwest::Response {
    let mut body = json!({"kind": "info", "message": message});
    if let Some(to) = to {
        body["to"] = json!(to);
    }
    post_json(&admin.http, &server.url("/api/notifications"), body).await
}

async fn inbox(server: &TestServer, user: &User, query: &str) -> Inbox {
    serde_json::from_value(
        get_json(
            &user.http,
            &server.url(&format!("/api/notifications{query}")),
        )
        .await,
    )
    .expect("an inbox")
}

#[tokio::test]
async fn a_notification_to_some_users_reaches_only_them_and_their_inbox() {
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let mut bob_tab1 = connect(&server, &bob).await;
    let mut bob_tab2 = connect(&server, &bob).await;
    let mut carol_ws = connect(&server, &carol).await;
    let events = server.url("/api/notifications/events");
    let mut bob_sse = Sse::open(bob.http.get(&events)).await;
    bob_sse.next_named("ready").await;
    let mut carol_sse = Sse::open(carol.http.get(&events)).await;
    carol_sse.next_named("ready").await;

    let res = notify_to(&server, &admin, Some(&["bob"]), "just you").await;
    assert_eq!(res.status(), 200);
    let to_bob: Value = res.json().await.unwrap();
    let id = to_bob["notification"]["id"].as_i64().unwrap();
    assert_eq!(next_of(&mut bob_tab1, "notification").await["id"], id);
    assert_eq!(bob_sse.next_named("notification").await.data["id"], id);
    let res = notify_to(&server, &admin, None, "everyone").await;
    assert_eq!(res.status(), 200);
    // Carol's first notification is the one to everyone: the one to Bob never came.
    assert_eq!(
        next_of(&mut carol_ws, "notification").await["message"],
        "everyone"
    );
    assert_eq!(
        carol_sse.next_named("notification").await.data["message"],
        "everyone"
    );

    let mine = inbox(&server, &bob, "").await;
    let texts: Vec<&str> = mine
        .notifications
        .iter()
        .map(|n| n.notification.message.as_str())
        .collect();
    assert_eq!(texts, ["just you", "everyone"]);
    assert_eq!(mine.unread, 2);
    assert!(mine.notifications.iter().all(|n| !n.read));
    let carols = inbox(&server, &carol, "").await;
    assert_eq!(carols.notifications.len(), 1);

    let res = post_json(
        &bob.http,
        &server.url("/api/notifications/read"),
        json!({"upTo": id}),
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(
        next_of(&mut bob_tab2, "notifications-read").await["upTo"],
        id
    );
    let mine = inbox(&server, &bob, "").await;
    assert_eq!(mine.unread, 1);
    assert_eq!(
        mine.notifications
            .iter()
            .map(|n| n.read)
            .collect::<Vec<_>>(),
        [true, false]
    );
    let after = inbox(&server, &bob, &format!("?after={id}")).await;
    assert_eq!(after.notifications.len(), 1);

    let unknown = notify_to(&server, &admin, Some(&["bob", "nobody"]), "x").await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.text().await.unwrap().contains("nobody"));
    assert_eq!(
        notify_to(&server, &admin, Some(&[]), "x").await.status(),
        400
    );
    assert_eq!(
        notify_to(&server, &bob, Some(&["carol"]), "x")
            .await
            .status(),
        403
    );
    let bad = bob
        .http
        .get(server.url("/api/notifications?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_reconnect_replays_every_missed_notification_on_both_transports() {
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let bob = server.user("bob").await;
    let first: Value = notify_to(&server, &admin, None, "n0")
        .await
        .json()
        .await
        .unwrap();
    let from = first["notification"]["id"].as_i64().unwrap();
    // More than the 20 a reconnect used to get, some to Bob only, one to someone else.
    for i in 1..=30 {
        let to: Option<&[&str]> = if i % 3 == 0 { Some(&["bob"]) } else { None };
        assert_eq!(
            notify_to(&server, &admin, to, &format!("n{i}"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        notify_to(&server, &admin, Some(&["admin"]), "not bob's")
            .await
            .status(),
        200
    );
    let want: Vec<String> = (1..=30).map(|i| format!("n{i}")).collect();

    let stream = Sse::open(
        bob.http
            .get(server.url("/api/notifications/events"))
            .header("last-event-id", from.to_string()),
    )
    .await;
    let mut got = Vec::new();
    let mut stream = stream;
    while got.len() < want.len() {
        let e = stream.next_named("notification").await;
        got.push(e.data["message"].as_str().unwrap().to_string());
    }
    assert_eq!(got, want, "every one, in order, none of someone else's");

    let mut ws = connect(&server, &bob).await;
    send_json(
        &mut ws,
        json!({"type": "notifications-since", "lastNotificationId": from}),
    )
    .await;
    let mut heard = Vec::new();
    while heard.len() < want.len() {
        let v = next_of(&mut ws, "notification").await;
        heard.push(v["message"].as_str().unwrap().to_string());
    }
    assert_eq!(heard, want);
    send_json(
        &mut ws,
        json!({"type": "notifications-since", "lastNotificationId": -1}),
    )
    .await;
    assert_eq!(next_text(&mut ws).await["type"], "chat-error");
}

#[tokio::test]
async fn an_admin_sees_every_connection_and_disconnects_a_user_everywhere() {
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let bob = server.user("bob").await;
    let mut ws = connect(&server, &bob).await;
    join(&mut ws, "general", None).await;
    let mut sse = Sse::open(bob.http.get(server.url("/api/notifications/events"))).await;
    sse.next_named("ready").await;

    let url = server.url("/api/admin/connections");
    assert_eq!(bob.http.get(&url).send().await.unwrap().status(), 403);
    let list = get_json(&admin.http, &url).await;
    let bobs: Vec<&Value> = list["connections"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|c| c["username"] == "bob")
        .collect();
    assert_eq!(bobs.len(), 2, "{list}");
    let socket = bobs
        .iter()
        .find(|c| c["transport"] == "websocket")
        .expect("the socket");
    assert_eq!(socket["topics"], json!(["room:general", "notifications"]));
    assert!(socket["instance"].as_str().is_some_and(|i| !i.is_empty()));
    assert!(socket["since"].as_str().unwrap().ends_with('Z'));
    let stream = bobs
        .iter()
        .find(|c| c["transport"] == "sse")
        .expect("the stream");
    assert_eq!(stream["topics"], json!(["notifications"]));

    let disconnect = |who: &str| {
        admin
            .http
            .post(server.url(&format!("/api/admin/users/{who}/disconnect")))
            .send()
    };
    assert_eq!(disconnect("nobody").await.unwrap().status(), 404);
    let asked = Instant::now();
    assert_eq!(disconnect("bob").await.unwrap().status(), 204);
    assert_eq!(close_code(&mut ws).await, 1008);
    assert!(
        tokio::time::timeout(WAIT, async { while sse.next().await.is_some() {} })
            .await
            .is_ok()
    );
    assert!(asked.elapsed() < PROMPT, "took {:?}", asked.elapsed());
    let after = bob.http.get(server.url("/api/rooms")).send().await.unwrap();
    assert_eq!(after.status(), 401, "signed out, so a reconnect is refused");
    let list = get_json(&admin.http, &url).await;
    assert!(
        list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["username"] != "bob"),
        "{list}"
    );
}

#[tokio::test]
async fn room_activity_reaches_the_readers_of_the_room_only_at_most_once_a_second() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    assert_eq!(
        create_room(&server, &alice, "club", true).await.status(),
        201
    );
    assert_eq!(
        member(&server, &alice, true, "club", "bob").await.status(),
        204
    );
    let events = server.url("/api/notifications/events");
    let mut bob_sse = Sse::open(bob.http.get(&events)).await;
    bob_sse.next_named("ready").await;
    let mut carol_ws = connect(&server, &carol).await;

    for text in ["one", "two", "three"] {
        post_ok(&server, &alice, "club", text).await;
    }
    post_ok(&server, &alice, "general", "public").await;
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 2 {
        let got = bob_sse.next_named("room-activity").await;
        seen.insert(
            got.data["room"].as_str().unwrap().to_string(),
            (
                got.data["lastMessageId"].as_i64().unwrap(),
                got.data["private"].as_bool().unwrap(),
            ),
        );
    }
    // Coalesced: the three messages of #club are one activity naming the last.
    assert_eq!(seen["club"], (3, true));
    assert_eq!(seen["general"], (1, false));
    // Carol hears #general's but never the private room's.
    let heard = collect_for(&mut carol_ws, Duration::from_millis(1500)).await;
    let activity: Vec<&Value> = heard
        .iter()
        .filter(|v| v["type"] == "room-activity")
        .collect();
    assert!(activity.iter().any(|v| v["room"] == "general"), "{heard:?}");
    assert!(activity.iter().all(|v| v["room"] != "club"), "{heard:?}");
}
