//! Stream tokens: short-lived, signed grants for `?token=` on GET stream routes.
//!
//! An `EventSource` on another origin cannot send the session cookie, so
//! `POST /api/auth/stream-token` hands out `<session id>.<expiry>.<signature>`: the session's
//! row id, a Unix expiry in seconds, and an HMAC-SHA256 over both with the server's secret.
//! Verifying checks the signature (in constant time), then the expiry; the caller then checks
//! that the session still exists, so logout revokes every token it issued.
//!
//! Tests: `cargo test --features ssr server::access::token`.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `<id>.<expiry>.<signature>`.
    #[error("the stream token is malformed")]
    Malformed,
    /// The signature does not match: altered, or signed with another key.
    #[error("the stream token's signature is wrong")]
    BadSignature,
    /// Past its expiry.
    #[error("the stream token has expired")]
    Expired,
}

/// Issues and verifies stream tokens with one secret key.
#[derive(Clone)]
pub struct Signer {
    mac: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer keyed with `secret` (any length; HMAC hashes long keys).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    fn signature(&self, payload: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(b"tidings-stream-token:");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for `session_id`, valid until `expires_at` (Unix seconds).
    pub fn issue(&self, session_id: i64, expires_at: i64) -> String {
        let payload = format!("{session_id}.{expires_at}");
        let sig = self.signature(&payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// The session id a token grants, if its signature is right and it has not expired at
    /// `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<i64, TokenError> {
        let (payload, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (id, expiry) = payload.split_once('.').ok_or(TokenError::Malformed)?;
        let session_id: i64 = id.parse().map_err(|_| TokenError::Malformed)?;
        let expires_at: i64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        self.signature(payload)
            .verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_token_grants_its_session() {
        let s = Signer::new(b"key");
        let t = s.issue(42, 1_000);
        assert_eq!(s.verify(&t, 999), Ok(42));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let s = Signer::new(b"key");
        assert_eq!(
            s.verify(&s.issue(42, 1_000), 1_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn altered_tokens_are_refused() {
        let s = Signer::new(b"key");
        let t = s.issue(42, 1_000);
        // Another session id, or a later expiry, with the original signature.
        let sig = t.rsplit_once('.').unwrap().1;
        assert_eq!(
            s.verify(&format!("43.1000.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            s.verify(&format!("42.9999.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        // Signed with another key.
        assert_eq!(
            Signer::new(b"other").verify(&t, 0),
            Err(TokenError::BadSignature)
        );
        // One flipped character in the signature.
        let mut bytes = t.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(s.verify(std::str::from_utf8(&bytes).unwrap(), 0).is_err());
    }

    #[test]
    fn garbage_is_malformed() {
        let s = Signer::new(b"key");
        for bad in ["", "abc", "1.2", "x.1.AAAA", "1.y.AAAA", "1.2.***"] {
            assert_eq!(s.verify(bad, 0), Err(TokenError::Malformed), "{bad}");
        }
    }
}
