//! Tidings: the three ways a server keeps a browser up to date (HTTP streaming, Server-Sent
//! Events, WebSockets), next to polling and a durable job queue, in one Leptos app whose
//! server, browser and command-line client share their wire types.
//!
//! Map of the modules, top to bottom (imports only ever point down; docs/architecture.md
//! draws it and follows a message through):
//! - `routes` (ssr): starts the features' services once (`Services`), merges every feature's
//!   `router()` with the Leptos pages; `serve()`.
//! - `settings` (ssr): every setting read once at start (the server's and each feature's).
//! - `app`: the HTML shell, `<App/>`, the page routes.
//! - features, each with its view, browser client and (ssr) server half, its queries
//!   (`store.rs`) and its settings:
//!   `auth` (accounts, sessions, stream tokens, `tidings users add`), `guide` (the home page's
//!   decision guide), `export` (the audit log streamed as NDJSON or CSV, its viewer, its
//!   seeding command), `jobs` (durable jobs watched over SSE or polling, imports), `chat`
//!   (rooms over WebSocket, SSE + POST and polling, with presence), `notify` (admin
//!   notifications shown as toasts), `dashboard` (live metrics and the admin's log tail),
//!   `assistant` (an AI model's answer relayed token by token, stored as it streams).
//! - `cli` (ssr): the command-line network clients (`tidings export`, `tail`, `chat`),
//!   beside the features; they import only `protocol` and `retry`.
//! - `server` (ssr): infrastructure that knows no feature: storage, access, edge, fanout,
//!   observe (see its map).
//! - `upstream` (ssr): the SSE client for AI providers (a POST with a JSON body, timeouts,
//!   `Retry-After`, the OpenAI and Anthropic formats of `protocol::ai`), below `cli` and
//!   `server` like `retry`.
//! - `retry` (ssr): the retry policy every client of another server follows (the command-line
//!   clients, the import job, the job event writer), below both `cli` and `server`.
//! - `protocol`: wire types only, for wasm32 and native alike.
//! - `fetch` and `events`: the browser's `fetch` helpers and its one `EventSource` wrapper,
//!   which every page's client shares; like `protocol`, below the features.
//!
//! `hydrate()` is the WASM entry point. Tests: `cargo test --features ssr` (unit tests beside
//! the code, `tests/it/` against a real server), `cargo leptos end-to-end` (Playwright).

pub mod app;
pub mod assistant;
pub mod auth;
pub mod chat;
#[cfg(feature = "ssr")]
pub mod cli;
pub mod dashboard;
pub mod events;
pub mod export;
pub mod fetch;
pub mod guide;
pub mod jobs;
pub mod notify;
/// Settings the property tests beside the code share.
#[cfg(test)]
mod properties;
pub mod protocol;
#[cfg(feature = "ssr")]
pub mod retry;
#[cfg(feature = "ssr")]
pub mod routes;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod settings;
#[cfg(feature = "ssr")]
pub mod upstream;

/// Browser entry point: attaches the server-rendered page to the WASM app.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
