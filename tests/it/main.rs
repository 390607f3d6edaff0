//! Every integration test, in one binary: each module starts the real server (in process on
//! `127.0.0.1:0`, or the real `tidings` binary) and talks to it as a browser, a command-line
//! client or an operator would. One binary links the app once instead of once per file.
//!
//! Run all: `cargo test --features ssr --test it`; one area: `cargo test --features ssr --test
//! it chat::`. `scripts/test.sh` runs them on SQLite and again on a throwaway PostgreSQL.
//! The modules that need a service of their own (`postgres_restart`: PostgreSQL's `initdb`;
//! `scale`: `redis-server`; `proxy`: nginx and Redis) skip with a message when it is not
//! installed, unless `TIDINGS_TEST_SERVICES=required` (as `scripts/test.sh` sets) makes that a
//! failure.

#[path = "../common/mod.rs"]
mod common;

mod assistant;
mod auth;
mod binary;
mod chat;
mod chat_cli;
mod connections;
mod dashboard;
mod deploy;
mod export;
mod export_cli;
mod import;
mod jobs;
mod postgres_restart;
mod proxy;
mod rooms;
mod scale;
// The soak's history checker (benches/soak.rs) and its tests.
#[path = "../../benches/soak/check.rs"]
mod soak_check;
mod tail_cli;
mod tls;
mod upstream;
