//! The server's parser of WebSocket text frames from clients (`parse_client_frame`, which
//! `chat::session` answers every frame with): never panics, and a message it accepts written
//! back as JSON reads as the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::protocol::chat::parse_client_frame;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = parse_client_frame(frame) {
        let again = serde_json::to_string(&msg).expect("a message writes as JSON");
        assert_eq!(parse_client_frame(&again), Ok(msg), "{frame:?} → {again:?}");
    }
});
