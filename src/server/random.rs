//! Random values from the operating system: tokens, nonces, keys, and the id of a server
//! instance. One place, so every caller gets the same source and the same encodings.
//!
//! Tests: `cargo test --features ssr server::random`.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

/// `N` random bytes. The system's generator does not fail on the platforms we serve; if it
/// ever did, nothing secret could be made, so this panics.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("the system's random numbers");
    bytes
}

/// `N` random bytes as lowercase hex (`2N` characters).
pub fn hex<const N: usize>() -> String {
    bytes::<N>().iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` random bytes as unpadded base64url.
pub fn base64url<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<N>())
}

/// A fresh id for one server instance: made once when its state is built, and used wherever
/// instances tell themselves apart (the bus between instances, job claims).
pub fn instance_id() -> String {
    hex::<8>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_have_their_lengths_and_differ() {
        assert_eq!(hex::<6>().len(), 12);
        assert!(hex::<6>().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(base64url::<16>().len(), 22);
        assert_ne!(instance_id(), instance_id());
    }
}
