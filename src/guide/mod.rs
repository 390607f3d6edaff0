//! The home page: the decision guide. Which way should a server keep a browser up to date?
//! Polling, HTTP streaming, Server-Sent Events, WebSockets, and a queue for the long work,
//! each with when to use it, when to reach for another, and a link to the page that shows it.
//!
//! Tests: `end2end/tests/shell.spec.ts`.

mod view;

pub use view::HomePage;
