//! `tidings tail`'s event-stream reading: the events (parsed by eventsource-stream, as tail
//! does) and the `retry:` field tail's own scanner finds are the same however the bytes are
//! cut into chunks; neither panics on any bytes.
#![no_main]

use eventsource_stream::Eventsource;
use futures::{executor::block_on, stream, StreamExt};
use libfuzzer_sys::fuzz_target;
use tidings::cli::tail::RetryScanner;

fn events(chunks: Vec<&[u8]>) -> (Vec<String>, Option<std::time::Duration>) {
    let mut scanner = RetryScanner::default();
    for c in &chunks {
        scanner.push(c);
    }
    let body = stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c))),
    );
    let parsed = block_on(body.eventsource().collect::<Vec<_>>());
    let out = parsed
        .into_iter()
        .map(|e| match e {
            Ok(e) => format!("{}|{}|{}|{:?}", e.event, e.data, e.id, e.retry),
            Err(e) => format!("error: {e}"),
        })
        .collect();
    (out, scanner.found)
}

// Input: 1 byte seeding the chunk sizes, then the stream.
fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let whole = events(vec![body]);
    let mut cuts = Vec::new();
    let mut rest = body;
    let mut s = u32::from(seed) | 1;
    while !rest.is_empty() {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((s >> 16) as usize % 17).min(rest.len()).max(1);
        let (a, b) = rest.split_at(n);
        cuts.push(a);
        rest = b;
    }
    assert_eq!(whole, events(cuts));
});
