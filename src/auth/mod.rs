//! Accounts: signup, login, logout, "who am I", stream tokens, and their pages.
//!
//! - `server` (ssr): the `/api/auth/*` routes. Each takes JSON, or an HTML form with the
//!   same fields when JavaScript is off (then it answers with a 303 redirect instead of JSON).
//! - `client`: the same calls from the hydrated page with `fetch` (runs only in the browser).
//! - `view`: the login and signup pages, the signed-in user's menu.
//! - `users` (ssr): `tidings users add NAME [--admin]`, an account made straight in the
//!   database.
//!
//! Tests: `tests/it/auth.rs` (the routes over a real server), `end2end/tests/auth.spec.ts`
//! (the pages in Chromium, JavaScript on and off).

mod client;
#[cfg(feature = "ssr")]
mod password;
#[cfg(feature = "ssr")]
mod server;
#[cfg(feature = "ssr")]
pub mod users;
mod view;

#[cfg(feature = "ssr")]
pub use server::{create_account, router};
pub use view::{LoginPage, SignupPage, UserMenu};

use leptos::prelude::*;

use crate::protocol::UserView;

/// The signed-in user, or `None`. Runs on the server during rendering (reading the session
/// cookie) and is fetched from `/sf/whoami` when the browser asks again after login/logout.
#[server(prefix = "/sf", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<UserView>, ServerFnError> {
    use crate::server::{access::identity::MaybeUser, AppState};
    // Route listing at start-up renders the app without a request (and without state):
    // nobody is signed in there.
    let Some(state) = use_context::<AppState>() else {
        return Ok(None);
    };
    let user = MaybeUser::in_server_fn(&state).await?;
    Ok(user.map(|u| u.user))
}

/// The signed-in user as every page sees it: a resource the header and pages read, refetched
/// after the browser logs in or out.
#[derive(Clone, Copy)]
pub struct Session(pub Resource<Result<Option<UserView>, ServerFnError>>);

impl Session {
    /// Creates the resource and provides it as context. Call once, in `<App/>`.
    pub fn provide() -> Self {
        // Blocking: the first HTML already names the user, so pages work with JavaScript off.
        let session = Self(Resource::new_blocking(|| (), |_| whoami()));
        provide_context(session);
        session
    }

    /// The session from context.
    pub fn expect() -> Self {
        expect_context::<Self>()
    }

    /// The current user, `None` while loading or when signed out.
    pub fn user(&self) -> Option<UserView> {
        self.0.get().and_then(|r| r.ok()).flatten()
    }

    /// Asks the server again (after a login or logout).
    pub fn refresh(&self) {
        self.0.refetch();
    }
}
