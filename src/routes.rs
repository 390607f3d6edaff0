//! The one place that knows every route: merges each feature's `router()` with the Leptos
//! pages and wraps them in the layers every request passes, outermost first: tracing, the
//! request log, the panic guard, security headers (and the page's CSP nonce), the host check,
//! the client's address (trusted proxies), CORS, the body limit and the origin check.
//! `serve` starts the [`Services`] once, then runs `app(state, services)` (a pure builder
//! that tests may call) on `server::edge::http`.

use std::{any::Any, sync::Arc};

use axum::{
    extract::DefaultBodyLimit,
    http::{header, HeaderName, Method},
    middleware,
    response::{IntoResponse, Response},
    routing::{any, get},
    Router,
};
use leptos_axum::{generate_route_list, AxumRouteListing, LeptosRoutes};
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    trace::TraceLayer,
};

use crate::{
    app::{shell, App},
    assistant, auth, chat, dashboard, export, jobs, notify,
    server::{
        edge::body_limit::{limit_request_body, MAX_BODY_BYTES},
        edge::forwarded::client_info,
        edge::headers::{provide_request_nonce, security_headers},
        edge::host::check_host,
        edge::http::{self, HttpLimits},
        edge::origin::refuse_foreign_origins,
        error::{api_method_not_allowed, api_not_found},
        fanout::topics::{self, Topics},
        observe::{health, prometheus},
        ApiError, AppState,
    },
    settings::Settings,
};

/// The services that run beside the routes (the chat's hub, the job queue's workers, the
/// export's permits), each with its feature's settings: started once per process, in
/// [`serve`], and handed to the routers that use them.
#[derive(Clone)]
pub struct Services {
    /// The chat's writer and presence.
    pub hub: chat::hub::Hub,
    /// The job queue and its workers.
    pub jobs: jobs::runner::Jobs,
    /// The export's reader choice and running-export permits.
    pub exports: export::Exports,
    /// The assistant's answers being written.
    pub assistant: assistant::runner::Assistant,
    /// The topics `GET /api/events` serves, one kind per feature.
    pub topics: Topics,
}

impl Services {
    /// Starts every service for `state` with the features' `settings` (they stop with the
    /// state's shutdown signal).
    pub fn start(state: &AppState, settings: &Settings) -> Self {
        let hub = chat::start(state, &settings.chat);
        let topics = Topics::new(vec![
            Arc::new(chat::RoomTopic(hub.clone())),
            Arc::new(jobs::JobTopic),
            Arc::new(notify::NotificationsTopic),
            Arc::new(dashboard::MetricsTopic),
            Arc::new(dashboard::LogsTopic),
            Arc::new(assistant::ChatTopic),
        ]);
        Self {
            hub,
            jobs: jobs::start(state, &settings.jobs),
            exports: export::start(settings.export, &state.store),
            assistant: assistant::start(state, &settings.assistant),
            topics,
        }
    }
}

/// The whole application for `state` on `services`. Builds routes only (nothing starts), so a
/// test may call it twice.
pub fn app(state: AppState, services: &Services) -> Router {
    let api = Router::new()
        .merge(auth::router())
        .merge(export::router(services.exports.clone()))
        .merge(jobs::router(services.jobs.clone()))
        .merge(chat::router(services.hub.clone()))
        .merge(notify::router())
        .merge(dashboard::router())
        .merge(assistant::router(services.assistant.clone(), &state))
        .merge(topics::router(services.topics.clone()))
        .route("/api/{*rest}", any(api_not_found))
        .method_not_allowed_fallback(api_method_not_allowed);

    let mut router = Router::new()
        .merge(health::router())
        .route("/metrics", get(prometheus::scrape))
        .merge(api)
        .leptos_routes_with_context(&state, route_list(), provide_request_nonce, {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(provide_request_nonce, shell))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_foreign_origins,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(limit_request_body));

    if !state.config.allowed_origins.is_empty() {
        let origins = state
            .config
            .allowed_origins
            .iter()
            .filter_map(|o| o.parse().ok());
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_credentials(true)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::CONTENT_TYPE,
                    HeaderName::from_static("last-event-id"),
                ]),
        );
    }

    router
        .layer(middleware::from_fn_with_state(state.clone(), client_info))
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            prometheus::record_request,
        ))
        .layer(middleware::from_fn(log_request))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The pages' routes, worked out once per process.
///
/// `generate_route_list` renders the app to find its routes, and while it does, it sets a
/// process-wide flag (leptos_server's `SuppressResourceLoad`) that parks every resource load
/// started meanwhile, in any server of the process, forever. One server per process never
/// notices (it lists its routes before it serves), but several servers in one process (the
/// integration tests) would have a page render hang now and then when another server
/// started. Listing once, before any server can serve, closes that window.
fn route_list() -> Vec<AxumRouteListing> {
    static ROUTES: std::sync::OnceLock<Vec<AxumRouteListing>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(App)).clone()
}

/// Logs each request at `info` (target `tidings::http`) once its answer's head is ready:
/// method, path (never the query, which may carry a stream token), status and time taken.
/// The app's own files (`/pkg/…`) are left out.
async fn log_request(request: axum::extract::Request, next: middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if !path.starts_with("/pkg/") {
        let status = response.status().as_u16();
        let ms = started.elapsed().as_millis() as u64;
        // Event streams and sockets reconnect on their own every few minutes: debug, so
        // they do not crowd the tail.
        if path.ends_with("/events") || path == "/ws" {
            tracing::debug!(target: "tidings::http", status, ms, "{method} {path} {status}");
        } else {
            tracing::info!(target: "tidings::http", status, ms, "{method} {path} {status}");
        }
    }
    response
}

/// A panic in a handler becomes a plain 500 in the documented shape; the panic is logged.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    ApiError::Internal(anyhow::anyhow!("handler panicked: {detail}")).into_response()
}

/// How long a stopping server waits for background work (exports writing their audit row,
/// workers marking their jobs) before it closes the database anyway.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `state` (its features set up with `settings`) on `listener` until its shutdown signal fires, then waits (up to
/// [`DRAIN_LIMIT`]) for background work and closes the database.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    settings: Settings,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let store = state.store.clone();
    if let Ok(addr) = listener.local_addr() {
        let _ = state.listening.set(addr);
    }
    let limits = HttpLimits::new(state.config.max_connections);
    let tls = match &state.config.tls {
        Some(files) => Some(crate::server::edge::tls::acceptor(files).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e:#}"))
        })?),
        None => None,
    };
    let services = Services::start(&state, &settings);
    let result = http::serve(
        listener,
        app(state, &services),
        limits,
        tls,
        shutdown.clone(),
    )
    .await;
    shutdown.trigger();
    shutdown.drain(DRAIN_LIMIT).await;
    store.close().await;
    result
}
