//! Structured logs with `tracing`: `RUST_LOG` picks the console's levels (default
//! [`CONSOLE_DEFAULT`]: `info`, with sqlx's per-query lines only at `warn`), and
//! `TIDINGS_LOG_FORMAT=json` switches it to one JSON object per line for log collectors.
//!
//! The admin's log tail (`server::observe::logs`) has a filter of its own, `TIDINGS_LOG_TAIL` (same
//! syntax, default [`TAIL_DEFAULT`]): a console kept quiet at `warn` still leaves the dashboard the
//! server's requests and events.
//!
//! Both filters are wrapped in [`Fresh`]: with per-layer filters, tracing-subscriber 0.3 can
//! drop an event whose call site every filter always enables, when the last `enabled` check
//! on that thread (sqlx asks one after each query) was for something a filter refused
//! (tokio-rs/tracing#2519). A second instance on PostgreSQL lost its `listening on` line so,
//! and the benchmark scripts that wait for it gave up.
//!
//! Tests: `cargo test --features ssr observe::telemetry`.

use tracing::{span, subscriber::Interest, Event, Metadata, Subscriber};
use tracing_subscriber::{
    filter::LevelFilter,
    fmt,
    layer::{Context, Filter, SubscriberExt},
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

use crate::server::observe::logs::RingLayer;

/// What the console shows unless `RUST_LOG` says otherwise.
const CONSOLE_DEFAULT: &str = "info,sqlx=warn,tower_http=info";
/// What the log tail keeps unless `TIDINGS_LOG_TAIL` says otherwise.
const TAIL_DEFAULT: &str = "info,sqlx=warn";

/// Installs the global subscriber once; later calls do nothing (tests call it freely).
pub fn init() {
    let console_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(CONSOLE_DEFAULT));
    let tail_filter = EnvFilter::try_from_env("TIDINGS_LOG_TAIL")
        .unwrap_or_else(|_| EnvFilter::new(TAIL_DEFAULT));
    let json = std::env::var("TIDINGS_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let console = if json {
        fmt::layer().with_target(true).json().boxed()
    } else {
        fmt::layer().with_target(true).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(console.with_filter(Fresh(console_filter)))
        .with(RingLayer.with_filter(Fresh(tail_filter)))
        .try_init();
}

/// A per-layer filter that never lets a call site skip its check: where the inner filter
/// says "always", this says "sometimes", so `enabled` runs before every event and the
/// per-layer decision the event is dispatched with is this event's own, not a stale one
/// (see the module's notes). Costs one filter check per enabled event.
pub struct Fresh<F>(pub F);

impl<S: Subscriber, F: Filter<S>> Filter<S> for Fresh<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    /// Counts the events it is given.
    struct Count(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Two layers with different filters; an `enabled` check that one refuses and no event
    /// follows (what sqlx's query logger does), then an error every filter always enables.
    fn errors_seen(fresh: bool) -> (usize, usize) {
        let (console, tail) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let registry = tracing_subscriber::registry();
        let dispatch: tracing::Dispatch = if fresh {
            registry
                .with(Count(console.clone()).with_filter(Fresh(EnvFilter::new("info"))))
                .with(Count(tail.clone()).with_filter(Fresh(EnvFilter::new("warn"))))
                .into()
        } else {
            registry
                .with(Count(console.clone()).with_filter(EnvFilter::new("info")))
                .with(Count(tail.clone()).with_filter(EnvFilter::new("warn")))
                .into()
        };
        tracing::dispatcher::with_default(&dispatch, || {
            for _ in 0..3 {
                let _ = tracing::enabled!(tracing::Level::INFO);
                tracing::error!("seen by both");
            }
        });
        (console.load(Ordering::SeqCst), tail.load(Ordering::SeqCst))
    }

    #[test]
    fn every_layer_gets_every_event_its_filter_enables() {
        // The same layers without `Fresh` give (3, 0) with tracing-subscriber 0.3.23: the
        // tail's layer never sees the errors.
        assert_eq!(errors_seen(true), (3, 3));
    }
}
