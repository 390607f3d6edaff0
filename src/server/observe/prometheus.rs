//! `GET /metrics`: the server's numbers in the Prometheus (OpenMetrics) text format, for an
//! admin session or `Authorization: Bearer <TIDINGS_METRICS_TOKEN>`.
//!
//! Built with `prometheus-client` (typed metrics, no global registry: each instance, and each
//! test server, has its own). The hot paths keep counting with one relaxed atomic add where
//! they are (`observe::metrics`, `fanout::ws`, `fanout::sse`); a scrape reads those into a
//! registry made for it, so scraping costs the hot paths nothing. Only the request-duration
//! histogram lives here between scrapes ([`HttpMetrics`], fed by [`record_request`]).
//!
//! Every name starts with `tidings_`:
//! - `tidings_connections{transport="websocket"|"sse"|"export"}` (gauge)
//! - `tidings_messages_total{transport="websocket"|"http"}`: chat messages accepted
//! - `tidings_published_total`: messages published to users (chat and notifications)
//! - `tidings_deliveries_total{transport="websocket"|"sse"}`: frames and events written
//! - `tidings_slow_client_drops_total{transport="websocket"}`: messages a lagging socket
//!   had to read back (none lost)
//! - `tidings_slow_client_disconnects_total{transport="websocket"|"sse"}`
//! - `tidings_rows_exported_total`, `tidings_jobs{status}` (gauge, one query per scrape)
//! - `tidings_http_request_duration_seconds{method,route,status}` (histogram; `route` is the
//!   matched route pattern, never the raw path, and `status` the class: `2xx`…`5xx`). For a
//!   stream it is the time to the response head, not the stream's life.
//! - `tidings_rss_bytes`, `tidings_uptime_seconds`.
//!
//! Tests: the unit test below; `tests/it/connections.rs` scrapes the real server.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use sha2::{Digest, Sha256};

use crate::server::{
    access::identity::{bearer, CurrentUser},
    fanout::{sse, ws},
    observe::metrics,
    ApiError, AppState,
};

/// The labels of one request in the duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    method: String,
    route: String,
    status: &'static str,
}

type Durations = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The request-duration histogram, per instance.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    durations: Durations,
}

fn histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            durations: Family::new_with_constructor(histogram),
        }
    }
}

fn class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Middleware: times each request into the histogram, by its matched route.
pub async fn record_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        status: class(response.status()),
    };
    state
        .http_metrics
        .durations
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(value.min(i64::MAX as u64) as i64);
    g
}

/// One label set of a per-transport metric.
type ByTransport = Vec<(&'static str, &'static str)>;

/// The text a scrape gets.
pub async fn render(state: &AppState) -> String {
    let mut registry = Registry::with_prefix("tidings");
    let connections = metrics::connections_now();
    let conn = Family::<ByTransport, Gauge>::default();
    for (t, v) in [
        ("websocket", connections.websocket),
        ("sse", connections.sse),
        ("export", connections.streams),
    ] {
        conn.get_or_create(&vec![("transport", t)]).set(v as i64);
    }
    registry.register("connections", "Open connections per transport", conn);

    let (ws_in, http_in) = metrics::received();
    let received = Family::<ByTransport, Counter>::default();
    received
        .get_or_create(&vec![("transport", "websocket")])
        .inc_by(ws_in);
    received
        .get_or_create(&vec![("transport", "http")])
        .inc_by(http_in);
    registry.register(
        "messages",
        "Chat messages accepted from clients, per transport",
        received,
    );
    registry.register(
        "published",
        "Messages published to users (chat and notifications)",
        counter(metrics::messages()),
    );

    let delivered = Family::<ByTransport, Counter>::default();
    delivered
        .get_or_create(&vec![("transport", "websocket")])
        .inc_by(ws::deliveries());
    delivered
        .get_or_create(&vec![("transport", "sse")])
        .inc_by(sse::deliveries());
    registry.register(
        "deliveries",
        "Frames and events written to clients, per transport",
        delivered,
    );

    let drops = Family::<ByTransport, Counter>::default();
    drops
        .get_or_create(&vec![("transport", "websocket")])
        .inc_by(ws::queue_drops());
    registry.register(
        "slow_client_drops",
        "Messages a lagging client had to read back from history (none lost)",
        drops,
    );
    let slow = Family::<ByTransport, Counter>::default();
    slow.get_or_create(&vec![("transport", "websocket")])
        .inc_by(ws::slow_disconnects());
    slow.get_or_create(&vec![("transport", "sse")])
        .inc_by(sse::slow_disconnects());
    registry.register(
        "slow_client_disconnects",
        "Connections closed for being too slow, per transport",
        slow,
    );

    registry.register(
        "rows_exported",
        "Audit rows sent by exports",
        counter(metrics::rows_exported()),
    );

    let jobs = Family::<Vec<(&'static str, String)>, Gauge>::default();
    match state.store.jobs_by_status().await {
        Ok(counts) => {
            for (status, n) in counts {
                jobs.get_or_create(&vec![("status", status)]).set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting jobs for /metrics failed"),
    }
    registry.register("jobs", "Jobs per status", jobs);
    registry.register(
        "http_request_duration_seconds",
        "Time to the response head, per method, matched route and status class",
        state.http_metrics.durations.clone(),
    );
    registry.register(
        "rss_bytes",
        "Resident memory of this process",
        gauge(metrics::rss_bytes()),
    );
    registry.register(
        "uptime_seconds",
        "Seconds since this process started",
        gauge(metrics::uptime().as_secs()),
    );

    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "encoding /metrics failed");
    }
    out
}

/// Whether `given` is the metrics token (compared as digests, so the time taken says nothing
/// about how much of it matched).
fn is_token(given: &str, token: &str) -> bool {
    Sha256::digest(given.as_bytes()) == Sha256::digest(token.as_bytes())
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, _) = req.into_parts();
    let token_ok = match (
        bearer(&parts.headers),
        state.config.metrics_token.as_deref(),
    ) {
        (Some(Ok(given)), Some(token)) => is_token(given, token),
        (Some(_), _) => {
            return Err(ApiError::refused(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "That is not the metrics token (`TIDINGS_METRICS_TOKEN`).",
            ))
        }
        (None, _) => false,
    };
    if !token_ok {
        use axum::extract::FromRequestParts;
        let user = CurrentUser::from_request_parts(&mut parts, &state).await?;
        if !user.user.is_admin() {
            return Err(ApiError::Forbidden(
                "Metrics are for admins, or for a scraper with TIDINGS_METRICS_TOKEN.".into(),
            ));
        }
    }
    let mut response = render(&state).await.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_and_the_token_check() {
        assert_eq!(class(StatusCode::OK), "2xx");
        assert_eq!(class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(class(StatusCode::BAD_GATEWAY), "5xx");
        assert!(is_token("abc", "abc"));
        assert!(!is_token("abd", "abc"));
    }
}
