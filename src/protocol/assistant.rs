//! The assistant's wire types (docs/interface.md, "AI token streams"; issue 19): a chat's
//! creation, its stream's `token`, `done` and `error` events, and the listings the page and
//! the command-line client read.
//!
//! Tests: `cargo test --features ssr protocol::assistant` (round trips against the documented
//! JSON).

use serde::{Deserialize, Serialize};

/// The event names of a chat's stream.
pub const TOKEN: &str = "token";
pub const DONE: &str = "done";
pub const ERROR: &str = "error";

/// `POST /api/assistant/chats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewChat {
    /// The question (required, not blank, at most the server's limit).
    #[serde(default)]
    pub prompt: Option<String>,
}

/// The 201 answer to [`NewChat`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatCreated {
    pub id: i64,
    pub events_url: String,
}

/// A `token` event's data: the next text of the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenData {
    pub text: String,
}

/// Token counts of an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// A `done` event's data: how the answer ended (`stop`, `length`, `cancelled`, or the
/// provider's own reason), its counts and its speed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoneData {
    pub finish_reason: String,
    pub usage: Usage,
    pub tokens_per_second: f64,
}

/// An `error` event's data: why the answer ended early (what arrived before stays).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    pub message: String,
}

/// Where a chat stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatState {
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl ChatState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        self != Self::Running
    }
}

/// A chat in a listing (`GET /api/assistant/chats`), without its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatSummary {
    pub id: i64,
    pub prompt: String,
    pub status: ChatState,
    /// Tokens stored so far.
    pub tokens: i64,
    pub created_at: String,
}

/// `GET /api/assistant/chats`: mine, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatList {
    pub chats: Vec<ChatSummary>,
}

/// `GET /api/assistant/chats/{id}`: a chat with its answer as stored so far. `lastEventId` is
/// the id of the last token in `text`, so a stream opened with it continues right after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatView {
    pub id: i64,
    pub prompt: String,
    pub status: ChatState,
    pub text: String,
    pub last_event_id: i64,
    /// The `done` data, once it ended that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<DoneData>,
    /// The `error` sentence, once it ended that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub events_url: String,
}

/// The `/assistant` page's first render: who is signed in, their chats, and the open one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssistantSnapshot {
    pub user: Option<String>,
    pub chats: Vec<ChatSummary>,
    pub chat: Option<ChatView>,
}

/// A piece of an answer as the page shows it: plain text (line breaks kept) or a fenced code
/// block (monospaced). Text is only ever shown as text, never as HTML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    Text(String),
    Code(String),
}

/// Splits an answer at its ```` ``` ```` fences (an open fence at the end is a code block
/// still growing). The language word after an opening fence is dropped.
pub fn blocks(answer: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (i, part) in answer.split("```").enumerate() {
        if i > 0 {
            in_code = !in_code;
        }
        if in_code {
            // The rest of the fence's line names a language.
            let body = match part.split_once('\n') {
                Some((first, rest)) if !first.contains(' ') => rest,
                _ => part,
            };
            out.push(Block::Code(body.trim_end_matches('\n').to_string()));
        } else if !part.is_empty() {
            out.push(Block::Text(part.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_match_the_documented_json() {
        let done = DoneData {
            finish_reason: "stop".into(),
            usage: Usage {
                prompt_tokens: 7,
                completion_tokens: 120,
            },
            tokens_per_second: 29.5,
        };
        assert_eq!(
            serde_json::to_value(&done).unwrap(),
            serde_json::json!({"finishReason":"stop",
                "usage":{"promptTokens":7,"completionTokens":120},"tokensPerSecond":29.5})
        );
        let created = ChatCreated {
            id: 3,
            events_url: "/api/assistant/chats/3/events".into(),
        };
        assert_eq!(
            serde_json::to_string(&created).unwrap(),
            r#"{"id":3,"eventsUrl":"/api/assistant/chats/3/events"}"#
        );
        let back: NewChat = serde_json::from_str(r#"{"prompt":"hi"}"#).unwrap();
        assert_eq!(back.prompt.as_deref(), Some("hi"));
        let none: NewChat = serde_json::from_str("{}").unwrap();
        assert_eq!(none.prompt, None);
        assert_eq!(ChatState::parse("cancelled"), Some(ChatState::Cancelled));
        assert!(!ChatState::Running.is_final());
    }

    #[test]
    fn answers_split_into_text_and_code_blocks() {
        assert_eq!(
            blocks("Run this:\n```sh\ncurl -N /x\n```\nThen <b>wait</b>."),
            vec![
                Block::Text("Run this:\n".into()),
                Block::Code("curl -N /x".into()),
                Block::Text("\nThen <b>wait</b>.".into()),
            ]
        );
        assert_eq!(
            blocks("A ```rust\nlet x"),
            vec![Block::Text("A ".into()), Block::Code("let x".into())]
        );
        assert_eq!(blocks(""), vec![]);
    }
}
