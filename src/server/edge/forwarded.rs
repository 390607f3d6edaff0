//! Who the client is behind a proxy: its address and whether it reached us over https.
//!
//! The peer of a connection is the client, unless the peer is one of
//! `TIDINGS_TRUSTED_PROXIES`. Only then are `X-Forwarded-For` (or, without it, `Forwarded`)
//! and `X-Forwarded-Proto` read: the client is the rightmost address in the chain that is not
//! itself a trusted proxy (each proxy appends the address it saw, so everything left of the
//! first untrusted hop was written by the client and proves nothing). From any other peer
//! those headers are ignored, so nobody can pose as another address by sending them.
//!
//! The [`client_info`] middleware works this out once per request and leaves a [`Client`] in
//! its extensions; the login limit, the signup limit, audit rows and `Secure` cookies read it.
//!
//! Tests: the unit tests below; `tests/it/deploy.rs` through a real nginx.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap},
    middleware::Next,
    response::Response,
};

use crate::server::{config::canonical, AppState, Config};

/// The client of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// Its address: the peer, or what trusted proxies say the peer saw. `None` when the
    /// server runs without connection info (`oneshot` tests).
    pub ip: Option<IpAddr>,
    /// Reached us over https: through TLS here, or a trusted proxy's
    /// `X-Forwarded-Proto: https` (or `Forwarded: proto=https`).
    pub https: bool,
}

/// Middleware: works out the [`Client`] and stores it in the request's extensions.
pub async fn client_info(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut client = resolve(peer, req.headers(), &state.config);
    // TLS ended here, not at a proxy.
    client.https |= req
        .extensions()
        .get::<crate::server::edge::tls::DirectTls>()
        .is_some();
    req.extensions_mut().insert(client);
    next.run(req).await
}

/// The client of a request from `peer` with these headers.
pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, config: &Config) -> Client {
    let Some(peer) = peer.map(canonical) else {
        return Client {
            ip: None,
            https: false,
        };
    };
    if !config.is_trusted_proxy(peer) {
        return Client {
            ip: Some(peer),
            https: false,
        };
    }
    let chain = forwarded_for(headers);
    let mut client = peer;
    // From the right: skip trusted proxies; the first address that is not one is the client.
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) => {
                client = canonical(*ip);
                if !config.is_trusted_proxy(client) {
                    break;
                }
            }
            // Something a trusted proxy would not write: stop at the last address trusted.
            None => break,
        }
    }
    Client {
        ip: Some(client),
        https: forwarded_https(headers),
    }
}

/// The addresses of `X-Forwarded-For` (every header line, in order), or else the `for=`
/// values of `Forwarded`; `None` for an entry that is not an address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    // Split the raw bytes, not the whole line as text: a client's own entry with a byte that
    // is not ASCII must spoil only that entry, not the proxy's hop appended after it.
    let xff: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .map(|s| std::str::from_utf8(s).ok().and_then(|s| parse_ip(s.trim())))
                .collect::<Vec<_>>()
        })
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(header::FORWARDED)
        .iter()
        .flat_map(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .map(|element| std::str::from_utf8(element).unwrap_or("for=?"))
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_ip(v.trim().trim_matches('"')))
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// An address as proxies write it: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .and_then(|ip| ip.parse().ok())
}

/// Whether a trusted proxy says the client used https: the last `X-Forwarded-Proto` value
/// (the nearest proxy's), else the last `proto=` of `Forwarded`.
fn forwarded_https(headers: &HeaderMap) -> bool {
    let last = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| {
                v.split(',')
                    .map(str::trim)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .last()
    };
    if let Some(proto) = last(header::HeaderName::from_static("x-forwarded-proto")) {
        return proto.eq_ignore_ascii_case("https");
    }
    last(header::FORWARDED)
        .and_then(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("proto")
                    .then(|| v.trim().trim_matches('"').eq_ignore_ascii_case("https"))
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config(proxies: &str) -> Config {
        let proxies = proxies.to_string();
        Config::from_vars(move |name| (name == "TIDINGS_TRUSTED_PROXIES").then(|| proxies.clone()))
            .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let c = config("127.0.0.1");
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            resolve(ip("127.0.0.2"), &h, &c),
            Client {
                ip: ip("127.0.0.2"),
                https: false
            }
        );
        assert_eq!(
            resolve(ip("127.0.0.1"), &h, &config("")).ip,
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_client_entry_that_is_not_text_spoils_only_itself() {
        // nginx appends its hop to whatever the client sent, on one line.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"6.6.\xff6.6, 203.0.113.7").unwrap(),
        );
        let c = config("127.0.0.1");
        assert_eq!(
            resolve(ip("127.0.0.1"), &h, &c).ip,
            ip("203.0.113.7"),
            "not the proxy's own address"
        );
        let mut h = HeaderMap::new();
        h.append(
            header::FORWARDED,
            HeaderValue::from_bytes(b"for=\xff, for=203.0.113.8").unwrap(),
        );
        assert_eq!(resolve(ip("127.0.0.1"), &h, &c).ip, ip("203.0.113.8"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let c = config("127.0.0.1, 10.0.0.0/8");
        // The client wrote "6.6.6.6" itself; the proxies appended what they saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.1.1")]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &c).ip, ip("203.0.113.7"));
        // Several header lines read as one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &c).ip, ip("198.51.100.2"));
        // Every hop trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &c).ip, ip("10.0.0.5"));
        // Garbage stops the walk at the last trusted address.
        let h = headers(&[("x-forwarded-for", "203.0.113.7, nonsense, 10.0.0.9")]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &c).ip, ip("10.0.0.9"));
        // No header: the proxy itself.
        assert_eq!(
            resolve(ip("127.0.0.1"), &HeaderMap::new(), &c).ip,
            ip("127.0.0.1")
        );
        // Ports and IPv6.
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:4711")]);
        assert_eq!(
            resolve(ip("::ffff:127.0.0.1"), &h, &c).ip,
            ip("2001:db8::7")
        );
    }

    #[test]
    fn forwarded_is_read_without_x_forwarded_for() {
        let c = config("127.0.0.1");
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=10.0.0.1",
        )]);
        let got = resolve(ip("127.0.0.1"), &h, &c);
        assert_eq!(
            got,
            Client {
                ip: ip("2001:db8:cafe::17"),
                https: true
            }
        );
    }

    #[test]
    fn the_scheme_comes_from_the_nearest_trusted_proxy() {
        let c = config("127.0.0.1");
        let h = headers(&[("x-forwarded-proto", "http, https")]);
        assert!(resolve(ip("127.0.0.1"), &h, &c).https);
        let h = headers(&[("x-forwarded-proto", "http")]);
        assert!(!resolve(ip("127.0.0.1"), &h, &c).https);
    }
}
