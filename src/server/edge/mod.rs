//! The edge of every request: the HTTP server and its connection limits, TLS, trusted
//! proxies, the host and origin checks, security headers, the body limit.

pub mod body_limit;
pub mod forwarded;
pub mod headers;
pub mod host;
pub mod http;
pub mod origin;
pub mod sse_h1;
pub mod tls;
