//! The export's query string, read as `GET /api/audit/export` reads it: any query is a
//! validated request or a 400, never a panic, and every accepted one is within the documented
//! bounds (`tidings::export::fuzz_query` asserts them).
#![no_main]

use libfuzzer_sys::fuzz_target;

// Input: 1 byte choosing the `Accept` header, then the query string.
fuzz_target!(|data: &[u8]| {
    let Some((&accept, query)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let accept = match accept % 3 {
        0 => None,
        1 => Some("text/csv"),
        _ => Some("application/x-ndjson"),
    };
    tidings::export::fuzz_query(query, accept);
});
