//! The multi-topic stream's resume cursor (`Last-Event-ID` of `/api/events`) and its
//! `start=<id>:<topic>` values: any text is a cursor or a reason, never a panic; a cursor it
//! reads writes back to text that reads as the same cursor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::server::fanout::topics::{start_of, Cursor};

// Input: the cursor text, a NUL, then the stream's topics one per line.
fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cursor, topics) = text.split_once('\0').unwrap_or((text, "room:general"));
    let topics: Vec<String> = topics.lines().take(32).map(str::to_string).collect();
    if let Some((id, topic)) = start_of(cursor) {
        // What it read writes back as the same value (`41:room:general`).
        let again = format!("{id}:{topic}");
        assert_eq!(start_of(&again), Some((id, topic)), "{cursor:?}");
    }
    if let Ok(c) = Cursor::decode(cursor, &topics) {
        let again = c.encode(&topics);
        assert_eq!(
            Cursor::decode(&again, &topics),
            Ok(c),
            "{cursor:?} → {again:?}"
        );
    }
});
