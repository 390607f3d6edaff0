//! API keys for other servers (docs/interface.md, "Publishing from other servers"): what an
//! admin sends and gets back. The key itself appears once, in [`CreatedKey`].

use serde::{Deserialize, Serialize};

/// `POST /api/keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKey {
    pub name: String,
}

/// `201` to `POST /api/keys`: the only time the key is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub key: String,
}

/// One key in `GET /api/keys` (never the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// The admin who made it.
    #[serde(default)]
    pub created_by: String,
}

/// `GET /api/keys`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// Longest key name.
pub const KEY_NAME_MAX: usize = 32;

/// What is wrong with a key's name, if anything: it signs the key's messages, so it follows
/// the username rule (`[a-z0-9_-]`, 1–32).
pub fn key_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > KEY_NAME_MAX {
        return Some(format!(
            "A key's name is 1 to {KEY_NAME_MAX} characters; it signs what the key publishes."
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Some("A key's name uses a-z, 0-9, - and _ only (like `deploy-bot`).".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_wire_shape() {
        assert!(key_name_problem("deploy-bot").is_none());
        assert!(key_name_problem("").is_some());
        assert!(key_name_problem("Deploy Bot").is_some());
        assert!(key_name_problem(&"a".repeat(33)).is_some());
        let info = KeyInfo {
            id: "key_1".into(),
            name: "ci".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            last_used_at: None,
            created_by: "root".into(),
        };
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            serde_json::json!({"id":"key_1","name":"ci","createdAt":"2026-01-01T00:00:00Z","lastUsedAt":null,"createdBy":"root"})
        );
    }
}
