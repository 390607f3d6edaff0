//! Accounts and sessions: the bodies of `/api/auth/*`.

use serde::{Deserialize, Serialize};

/// `POST /api/auth/signup` and `POST /api/auth/login` body (JSON, or an HTML form with the
/// same field names when JavaScript is off).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    /// `[a-z0-9_.-]{2,32}`.
    pub username: String,
    /// At least 8 characters (at most 1024, to bound the hashing cost).
    pub password: String,
    /// Signup only: the setup token that a username listed in `TIDINGS_ADMINS` needs
    /// (`TIDINGS_SETUP_TOKEN`, or the one the server printed at start). Ignored elsewhere.
    #[serde(
        default,
        rename = "setupToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub setup_token: Option<String>,
}

/// What a signed-in user may do. Admins come from `TIDINGS_ADMINS`, or were created as admins
/// (`tidings users add NAME --admin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every signed-up account.
    User,
    /// Named in `TIDINGS_ADMINS`: may export and import the audit log, notify everyone.
    Admin,
}

/// The public view of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// The unique, lower-case username; also the display name in chat.
    pub username: String,
    /// `user` or `admin`.
    pub role: Role,
}

impl UserView {
    /// Whether this user holds the admin role.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// `{"user": …}`: the body of signup (201), login (200) and `GET /api/auth/me` (200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEnvelope {
    /// The signed-in user.
    pub user: UserView,
}

/// `POST /api/auth/stream-token` → a short-lived signed token for `?token=` on GET streams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamToken {
    /// Opaque, signed; pass it as `?token=` where a cookie cannot be sent.
    pub token: String,
    /// RFC 3339 UTC time after which the token is refused.
    pub expires_at: String,
}

/// Checks a username against the documented `[a-z0-9_.-]{2,32}`.
/// Returns the sentence to show when it does not match.
pub fn check_username(name: &str) -> Result<(), &'static str> {
    let len = name.chars().count();
    if len < 2 {
        return Err("Usernames need at least 2 characters.");
    }
    if len > 32 {
        return Err("Usernames have at most 32 characters.");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
    {
        return Err(
            "Usernames may hold only lower-case letters a-z, digits 0-9, '_', '.' and '-'.",
        );
    }
    Ok(())
}

/// Shortest password accepted at signup.
pub const PASSWORD_MIN_CHARS: u32 = 8;
/// Longest password accepted (bounds the work a request can ask of the hasher).
pub const PASSWORD_MAX_CHARS: u32 = 1024;

/// Checks a new password's length. Returns the sentence to show when it is refused.
pub fn check_password(password: &str) -> Result<(), &'static str> {
    let len = password.chars().count() as u32;
    if len < PASSWORD_MIN_CHARS {
        return Err("Passwords need at least 8 characters.");
    }
    if len > PASSWORD_MAX_CHARS {
        return Err("Passwords have at most 1024 characters.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_envelope_matches_the_documented_shape() {
        let env = UserEnvelope {
            user: UserView {
                username: "eric".into(),
                role: Role::Admin,
            },
        };
        assert_eq!(
            serde_json::to_string(&env).unwrap(),
            r#"{"user":{"username":"eric","role":"admin"}}"#
        );
    }

    #[test]
    fn stream_token_is_camel_case() {
        let t = StreamToken {
            token: "abc".into(),
            expires_at: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"token":"abc","expiresAt":"2026-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn usernames() {
        for ok in ["ab", "eric", "a.b-c_d", "x0123456789012345678901234567890"] {
            assert_eq!(check_username(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Eric",
            "with space",
            "émile",
            "a/b",
            &"x".repeat(33),
        ] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"p".repeat(1025)).is_err());
        // Characters, not bytes: eight accented letters are eight characters.
        assert!(check_password("éééééééé").is_ok());
    }
}
