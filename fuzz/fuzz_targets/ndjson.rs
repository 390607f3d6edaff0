//! The NDJSON line decoder (export clients, the import job): the same bytes give the same
//! lines and errors however they are cut into chunks, for any line limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::protocol::ndjson::LineDecoder;

// Input: 2 bytes of limit, 2 bytes seeding the chunk sizes, then the stream.
fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let limit = u32::from(u16::from_le_bytes([data[0], data[1]]) % 300) + 1;
    let mut seed = u32::from(u16::from_le_bytes([data[2], data[3]])) | 1;
    let stream = &data[4..];
    let decode = |chunks: &mut dyn Iterator<Item = &[u8]>| {
        let mut d = LineDecoder::new(limit);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(d.push(chunk));
        }
        out.extend(d.finish());
        out
    };
    let whole = decode(&mut std::iter::once(stream));
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed as usize % 40).min(rest.len());
        let (a, b) = rest.split_at(n);
        pieces.push(a);
        rest = b;
    }
    let cut = decode(&mut pieces.into_iter());
    assert_eq!(whole, cut, "limit {limit}");
});
