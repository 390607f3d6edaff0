//! Chat: the WebSocket messages both ways, the SSE and polling shapes, and the limits the
//! interface fixes (docs/interface.md, "WebSocket" and "Chat over HTTP"). The server, the
//! browser and the terminal client all speak these types.

use serde::{Deserialize, Serialize};

/// Longest room name (`[a-z0-9-]{1,32}`).
pub const ROOM_NAME_MAX: usize = 32;
/// Longest message text, in characters.
pub const TEXT_MAX_CHARS: usize = 2000;
/// Largest WebSocket frame accepted; a larger one closes the connection with 1009.
pub const FRAME_MAX_BYTES: usize = 65_536;
/// Messages a user may send per second before `Slow down.`.
pub const RATE_PER_SECOND: u32 = 10;
/// Messages in a `chat-joined` history when no `lastMessageId` is given.
pub const JOIN_HISTORY: usize = 50;

/// The documented error sentences for the common mistakes.
pub const NOT_JSON: &str = "Messages must be JSON.";
pub const UNKNOWN_TYPE: &str = "Unknown chat message type.";
pub const JOIN_FIRST: &str = "Join a room first.";
pub const SLOW_DOWN: &str = "Slow down.";

/// The sentence a non-member of a private room gets, on every transport.
pub fn not_a_member(room: &str) -> String {
    format!("You are not a member of #{room}.")
}

/// Rooms one WebSocket may be in at once.
pub const ROOMS_PER_SOCKET: usize = 32;
/// Longest `clientId` (and `Idempotency-Key`), in characters.
pub const CLIENT_ID_MAX: usize = 64;

/// The sentence for a join past [`ROOMS_PER_SOCKET`].
pub fn too_many_rooms() -> String {
    format!("A connection can be in at most {ROOMS_PER_SOCKET} rooms; leave one first.")
}

/// What is wrong with a `clientId` or `Idempotency-Key`, if anything.
pub fn client_id_problem(id: &str, name: &str) -> Option<String> {
    let chars = id.chars().count();
    if chars == 0 || chars > CLIENT_ID_MAX {
        Some(format!(
            "`{name}` is 1 to {CLIENT_ID_MAX} characters; this one has {chars}."
        ))
    } else if id.chars().any(char::is_control) {
        Some(format!("`{name}` cannot hold control characters."))
    } else {
        None
    }
}

/// How often one user's `chat-typing` in one room is passed on at most.
pub const TYPING_EVERY_MS: u64 = 2000;

/// Client → server, over the WebSocket.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    #[serde(rename_all = "camelCase")]
    ChatJoin {
        room: String,
        #[serde(default)]
        last_message_id: Option<i64>,
    },
    /// A message to `room` (one the socket joined; without it, the room joined last).
    /// With `clientId`, the sender gets `chat-ack` once it is stored, and the same id again
    /// (a resend after a reconnect) stores nothing new.
    #[serde(rename_all = "camelCase")]
    ChatMessage {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// Leave `room` (without it, the room joined last).
    ChatLeave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// "I am typing" in `room` (without it, the room joined last).
    ChatTyping {
        #[serde(default)]
        room: Option<String>,
    },
    /// Replay the notifications after this id (a `notifications-gap` first when some are no
    /// longer kept), then go on live from there.
    #[serde(rename_all = "camelCase")]
    NotificationsSince { last_notification_id: i64 },
}

/// The client message types the server knows (others get [`UNKNOWN_TYPE`]).
pub const CLIENT_TYPES: [&str; 5] = [
    "chat-join",
    "chat-message",
    "chat-leave",
    "chat-typing",
    "notifications-since",
];

/// Reads one WebSocket text frame from a client: the message, or the sentence the client is
/// told (`chat-error`) when it is not JSON, not a known type, or not in that type's shape.
/// The server's one parser of client frames (`chat::session`); fuzzed by `fuzz/`.
pub fn parse_client_frame(frame: &str) -> Result<ClientMsg, String> {
    let value: serde_json::Value = serde_json::from_str(frame).map_err(|_| NOT_JSON.to_string())?;
    let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if !CLIENT_TYPES.contains(&kind) {
        return Err(UNKNOWN_TYPE.to_string());
    }
    serde_json::from_value(value.clone())
        .map_err(|e| format!("That {kind} message is not in the expected shape: {e}."))
}

/// One stored chat message, as every transport carries it.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub id: i64,
    pub room: String,
    pub display_name: String,
    /// Empty (and left out) once the message is deleted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    pub timestamp: String,
    /// Deleted by its author or an admin: the id stays in the history, the text is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Whether a presence change is someone arriving or leaving.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceAction {
    Joined,
    Left,
}

/// A presence change in a room.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatPresence {
    pub action: PresenceAction,
    pub room: String,
    pub display_name: String,
    pub message: String,
    pub timestamp: String,
}

/// Told before a replay that starts later than asked: messages after `after_id` and before
/// `first_available_id` are no longer kept.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatGap {
    pub room: String,
    pub after_id: i64,
    pub first_available_id: i64,
}

/// A notification to everyone or to some users (docs/interface.md, "Notifications").
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: i64,
    pub kind: String,
    pub title: String,
    pub message: String,
    pub timestamp: String,
}

/// Told before a notification replay that starts later than asked: the notifications after
/// `after_id` and before `first_available_id` are no longer kept.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationGap {
    pub after_id: i64,
    pub first_available_id: i64,
}

/// One notification in my inbox (`GET /api/notifications`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    #[serde(flatten)]
    pub notification: Notification,
    pub read: bool,
}

/// `GET /api/notifications?after=&limit=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbox {
    pub notifications: Vec<InboxItem>,
    /// How many of mine are unread in all (not only on this page).
    pub unread: i64,
    /// Set when `after` is older than the kept notifications.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
}

/// `POST /api/notifications/read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarkNotificationsRead {
    pub up_to: i64,
}

/// `POST /api/rooms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    pub name: String,
    #[serde(default)]
    pub private: bool,
}

/// A room as `POST /api/rooms` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomView {
    pub name: String,
    pub private: bool,
    /// Who created it (`None`: a public room made by joining it).
    pub owner: Option<String>,
}

/// `POST /api/rooms` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCreated {
    pub room: RoomView,
}

/// `GET /api/rooms/{room}/members` (members of a private room; present users of a public one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMembers {
    pub room: RoomView,
    pub members: Vec<String>,
}

/// `POST /api/rooms/{room}/read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarkRead {
    pub last_read_id: i64,
}

/// One live connection in `GET /api/admin/connections`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub username: String,
    /// `websocket` or `sse`.
    pub transport: String,
    /// The instance holding it.
    pub instance: String,
    /// When it opened (RFC 3339).
    pub since: String,
    /// What it follows: `room:<name>`, `notifications`, `job:<id>`, `metrics`, `logs`.
    pub topics: Vec<String>,
}

/// `GET /api/admin/connections`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionList {
    pub connections: Vec<ConnectionView>,
}

/// Server → client, over the WebSocket.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    ChatJoined {
        room: String,
        members: Vec<String>,
        history: Vec<ChatMessage>,
    },
    ChatMessage(ChatMessage),
    ChatPresence(ChatPresence),
    ChatGap(ChatGap),
    ChatError {
        message: String,
        /// The `clientId` of the message refused, when it had one (so the sender stops
        /// waiting for its ack).
        #[serde(default, rename = "clientId", skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// The sender's message with this `clientId` is stored as `id` (sent once per send,
    /// repeats included).
    #[serde(rename_all = "camelCase")]
    ChatAck {
        client_id: String,
        id: i64,
        room: String,
    },
    Notification(Notification),
    /// A private room's owner removed me: the room's stream ends here.
    ChatRemoved {
        room: String,
    },
    /// My read position in `room` moved (on this or another of my connections).
    #[serde(rename_all = "camelCase")]
    ChatRead {
        room: String,
        last_read_id: i64,
    },
    /// Someone else in the room is typing (never stored).
    #[serde(rename_all = "camelCase")]
    ChatTyping {
        room: String,
        display_name: String,
    },
    /// A message was deleted: show it as deleted.
    ChatDelete {
        room: String,
        id: i64,
    },
    /// Before a notification replay that starts later than asked.
    NotificationsGap(NotificationGap),
    /// My inbox is read up to `up_to` (on this or another of my connections).
    #[serde(rename_all = "camelCase")]
    NotificationsRead {
        up_to: i64,
    },
    /// A room I may read has new messages up to `last_message_id` (at most one a second per
    /// room): pages move its unread badge without following the room.
    #[serde(rename_all = "camelCase")]
    RoomActivity {
        room: String,
        last_message_id: i64,
        private: bool,
    },
}

/// `GET /api/rooms/{room}/messages?after=&limit=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    pub messages: Vec<ChatMessage>,
    /// Set when `after` is older than the kept history (the documented `"gap":true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
    /// The room's members now (pollers see presence by comparing).
    #[serde(default)]
    pub members: Vec<String>,
    /// The newest id the poller has after this page: the next `after`.
    #[serde(default)]
    pub last_id: i64,
}

/// Polled messages per request by default, and at most.
pub const POLL_LIMIT_DEFAULT: i64 = 100;
pub const POLL_LIMIT_MAX: i64 = 1000;

/// One room in `GET /api/rooms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    pub name: String,
    /// The newest message id (0: none yet).
    pub last_id: i64,
    /// Members present now.
    pub members: u32,
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub owner: Option<String>,
    /// The same as `last_id` (the contract's name for it).
    #[serde(default)]
    pub last_message_id: i64,
    /// My read position (0: nothing read).
    #[serde(default)]
    pub last_read_id: i64,
    /// Messages by others after my read position, still kept and not deleted.
    #[serde(default)]
    pub unread: i64,
}

/// `GET /api/rooms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomList {
    pub rooms: Vec<RoomInfo>,
}

/// The `/chat` page's first render: who is signed in, the rooms, and the open room's
/// members and recent history; the live connection continues after `last_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatSnapshot {
    pub user: Option<String>,
    pub admin: bool,
    pub rooms: Vec<RoomInfo>,
    pub room: String,
    pub members: Vec<String>,
    pub history: Vec<ChatMessage>,
    pub last_id: i64,
}

/// The room every user starts in.
pub const DEFAULT_ROOM: &str = "general";

/// The notification kinds (docs/interface.md, "Notifications").
pub const NOTIFICATION_KINDS: [&str; 3] = ["info", "deploy", "maintenance"];
/// Longest notification message, in characters.
pub const NOTIFICATION_MAX_CHARS: usize = 500;

/// `POST /api/notifications` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendNotification {
    pub kind: String,
    pub message: String,
    /// Shown above the message; defaults to the kind's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Usernames it goes to; omitted: everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
}

/// `POST /api/notifications` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSent {
    pub sent: bool,
    /// Live WebSocket and SSE connections (of every stream) it went out to.
    pub connection_count: u64,
    pub notification: Notification,
}

/// `POST /api/rooms/{room}/messages` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    pub text: String,
}

/// `HH:MM:SS` of a message's RFC 3339 `timestamp` (UTC), as the page and the terminal
/// client show it; the whole text if it is not one.
pub fn clock_of(timestamp: &str) -> &str {
    timestamp.get(11..19).unwrap_or(timestamp)
}

/// The sentence for a bad room name, or `None` when it is good.
pub fn room_name_problem(room: &str) -> Option<String> {
    let ok = !room.is_empty()
        && room.len() <= ROOM_NAME_MAX
        && room
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (!ok).then(|| {
        format!(
            "Room names are 1 to {ROOM_NAME_MAX} characters of a-z, 0-9 and '-'; {room:?} is not one."
        )
    })
}

/// The sentence for a bad message text, or `None` when it is good.
pub fn text_problem(text: &str) -> Option<String> {
    let chars = text.chars().count();
    if text.trim().is_empty() {
        Some("A message needs some text.".into())
    } else if text.contains('\0') {
        Some("Messages cannot contain the NUL character.".into())
    } else if chars > TEXT_MAX_CHARS {
        Some(format!(
            "Messages are at most {TEXT_MAX_CHARS} characters; this one has {chars}."
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_client_frame_is_a_message_or_the_sentence_the_client_is_told() {
        assert_eq!(parse_client_frame("{nope"), Err(NOT_JSON.to_string()));
        assert_eq!(
            parse_client_frame(r#"{"type":"chat-shout"}"#),
            Err(UNKNOWN_TYPE.to_string())
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"chat-join"}"#),
            Err(
                "That chat-join message is not in the expected shape: missing field `room`.".into()
            )
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"chat-leave","room":"general"}"#),
            Ok(ClientMsg::ChatLeave {
                room: Some("general".into())
            })
        );
    }

    #[test]
    fn client_messages_read_as_documented() {
        let join: ClientMsg = serde_json::from_value(
            json!({"type":"chat-join","room":"general","lastMessageId":null}),
        )
        .unwrap();
        assert_eq!(
            join,
            ClientMsg::ChatJoin {
                room: "general".into(),
                last_message_id: None
            }
        );
        let resume: ClientMsg =
            serde_json::from_value(json!({"type":"chat-join","room":"general","lastMessageId":41}))
                .unwrap();
        assert!(matches!(
            resume,
            ClientMsg::ChatJoin {
                last_message_id: Some(41),
                ..
            }
        ));
        let text: ClientMsg =
            serde_json::from_value(json!({"type":"chat-message","text":"hi"})).unwrap();
        assert_eq!(
            text,
            ClientMsg::ChatMessage {
                text: "hi".into(),
                room: None,
                client_id: None
            }
        );
        let acked: ClientMsg = serde_json::from_value(
            json!({"type":"chat-message","text":"hi","room":"ops","clientId":"c-1"}),
        )
        .unwrap();
        assert_eq!(
            acked,
            ClientMsg::ChatMessage {
                text: "hi".into(),
                room: Some("ops".into()),
                client_id: Some("c-1".into())
            }
        );
        let leave: ClientMsg = serde_json::from_value(json!({"type":"chat-leave"})).unwrap();
        assert_eq!(leave, ClientMsg::ChatLeave { room: None });
        assert!(serde_json::from_value::<ClientMsg>(json!({"type":"chat-dance"})).is_err());
    }

    #[test]
    fn server_messages_write_the_documented_fields() {
        let message = ChatMessage {
            id: 7,
            room: "general".into(),
            display_name: "alice".into(),
            text: "<b>hi</b>".into(),
            timestamp: "2026-11-23T10:00:00.000Z".into(),
            deleted: false,
        };
        assert_eq!(
            serde_json::to_value(ServerMsg::ChatMessage(message.clone())).unwrap(),
            json!({"type":"chat-message","id":7,"room":"general","displayName":"alice",
                   "text":"<b>hi</b>","timestamp":"2026-11-23T10:00:00.000Z"})
        );
        assert_eq!(
            serde_json::to_value(ServerMsg::ChatJoined {
                room: "general".into(),
                members: vec!["alice".into()],
                history: vec![message],
            })
            .unwrap()["type"],
            "chat-joined"
        );
        let presence = ServerMsg::ChatPresence(ChatPresence {
            action: PresenceAction::Left,
            room: "general".into(),
            display_name: "bob".into(),
            message: "bob left.".into(),
            timestamp: "2026-11-23T10:00:00.000Z".into(),
        });
        let v = serde_json::to_value(&presence).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["action"].as_str()),
            (Some("chat-presence"), Some("left"))
        );
        let gap = ServerMsg::ChatGap(ChatGap {
            room: "general".into(),
            after_id: 3,
            first_available_id: 900,
        });
        assert_eq!(
            serde_json::to_value(&gap).unwrap(),
            json!({"type":"chat-gap","room":"general","afterId":3,"firstAvailableId":900})
        );
        assert_eq!(
            serde_json::to_value(ServerMsg::ChatError {
                client_id: None,
                message: SLOW_DOWN.into()
            })
            .unwrap(),
            json!({"type":"chat-error","message":"Slow down."})
        );
        let page = MessagePage {
            messages: vec![],
            gap: false,
            members: vec!["alice".into()],
            last_id: 4,
        };
        assert_eq!(
            serde_json::to_value(&page).unwrap(),
            json!({"messages": [], "members": ["alice"], "lastId": 4})
        );
    }

    #[test]
    fn room_names_and_texts_are_checked_with_a_sentence() {
        for good in ["general", "a", "room-2", &"x".repeat(32)] {
            assert_eq!(room_name_problem(good), None, "{good}");
        }
        for bad in ["", "General", "two words", "é", &"x".repeat(33), "a_b"] {
            assert!(room_name_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(text_problem("hello"), None);
        assert_eq!(
            text_problem(&"é".repeat(2000)),
            None,
            "characters, not bytes"
        );
        assert!(text_problem(&"é".repeat(2001)).unwrap().contains("2001"));
        // PostgreSQL's TEXT cannot hold NUL: refused with a sentence, not a failed batch.
        assert!(text_problem("a\0b").unwrap().contains("NUL"));
        assert!(text_problem("   ").is_some());
    }

    // Properties (proptest): every message either side sends reads back as itself, and its
    // `type` is one of the documented names; no JSON at all makes the parser panic.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(crate::properties::config(512))]

            #[test]
            fn every_client_message_round_trips(msg in any::<ClientMsg>()) {
                let text = serde_json::to_string(&msg).unwrap();
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                prop_assert!(CLIENT_TYPES.contains(&v["type"].as_str().unwrap()), "{}", text);
                prop_assert_eq!(serde_json::from_str::<ClientMsg>(&text).unwrap(), msg);
            }

            #[test]
            fn every_server_message_round_trips(msg in any::<ServerMsg>()) {
                let text = serde_json::to_string(&msg).unwrap();
                prop_assert_eq!(serde_json::from_str::<ServerMsg>(&text).unwrap(), msg);
            }

            #[test]
            fn any_json_is_a_message_or_an_error(text in prop_oneof![
                any::<String>(),
                any::<ClientMsg>().prop_map(|m| {
                    // A real message cut short.
                    let s = serde_json::to_string(&m).unwrap();
                    s.chars().take(s.chars().count() / 2).collect()
                }),
                r#"\{"type":"(chat-join|chat-message|chat-leave|notifications-since)"(,"[a-zA-Z]{1,16}":(null|1|-1|"x"|\[\]|\{\}|true)){0,4}\}"#,
            ]) {
                // The server's parser: a message that writes back as itself, or a sentence.
                if let Ok(msg) = parse_client_frame(&text) {
                    let again = serde_json::to_string(&msg).unwrap();
                    prop_assert_eq!(parse_client_frame(&again), Ok(msg));
                }
            }
        }
    }
}
