//! How a stored chat row becomes what every transport sends: the bus topic of a room, the
//! wire message, its JSON. Below the hub, its writer and presence, which all use it.

use super::store::ChatRow;
use crate::{
    protocol::chat::{ChatMessage, ServerMsg},
    server::clock,
};

/// The bus topic of a room.
pub fn topic(room: &str) -> String {
    format!("room:{room}")
}

/// The wire form of a stored message.
pub fn message_of(row: &ChatRow) -> ChatMessage {
    ChatMessage {
        id: row.id,
        room: row.room.clone(),
        display_name: row.author.clone(),
        text: if row.deleted {
            String::new()
        } else {
            row.text.clone()
        },
        timestamp: clock::rfc3339(row.created_at),
        deleted: row.deleted,
    }
}

/// The JSON every transport sends for a server message.
pub fn json(msg: &ServerMsg) -> String {
    serde_json::to_string(msg).expect("server messages serialize")
}
