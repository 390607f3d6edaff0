//! The export's CSV: its header and one record per audit row (RFC 4180, CRLF line ends), with
//! fields a spreadsheet would run as a formula made text. The server's export and the
//! command-line consumer (`tidings export --format csv`, which writes CSV from a verified
//! NDJSON stream) write the same bytes through these two items.
//!
//! Tests: `cargo test --features ssr protocol::csv`; the export's own tests check whole files.

/// The CSV header row.
pub const CSV_HEADER: &[u8] = b"id,at,action,user,detail\r\n";

/// Appends one CSV record `id,at,action,user,detail` ending in CRLF.
pub fn csv_record(out: &mut Vec<u8>, id: i64, at: &str, action: &str, user: &str, detail: &str) {
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    for field in [at, action, user, detail] {
        out.push(b',');
        csv_field(out, field);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `s` as a CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma,
/// quote, CR or LF. A field that begins with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`,
/// so a spreadsheet opening the file shows it as text instead of running it as a formula
/// (OWASP's CSV injection advice).
fn csv_field(out: &mut Vec<u8>, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push(b'"');
        if formula {
            out.push(b'\'');
        }
        for part in s.split('"').enumerate() {
            if part.0 > 0 {
                out.extend_from_slice(b"\"\"");
            }
            out.extend_from_slice(part.1.as_bytes());
        }
        out.push(b'"');
    } else {
        if formula {
            out.push(b'\'');
        }
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_quote_what_needs_quoting_and_defuse_formulas() {
        let mut out = Vec::new();
        csv_record(&mut out, 7, "t", "LOGIN", "a,b", r#"{"k":"v"}"#);
        csv_record(&mut out, 8, "t", "=1+1", "-x", "line\nbreak");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7,t,LOGIN,\"a,b\",\"{\"\"k\"\":\"\"v\"\"}\"\r\n8,t,'=1+1,'-x,\"line\nbreak\"\r\n"
        );
    }
}
