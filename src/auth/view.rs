//! The login and signup pages, and the header's user menu.
//!
//! Each form is a real HTML form posting to the JSON route's form twin, so it works with
//! JavaScript off (the server answers with a redirect, and errors come back as `?error=code`).
//! Once hydrated, submitting sends JSON with `fetch` instead, shows the server's sentence
//! inline, and updates the header without a page load.

use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::hooks::{use_navigate, use_query_map};

use super::{client, Session};
use crate::protocol::{AuthRequest, Role};

/// The sentence for an error code a plain-form round trip put in the URL. Only known codes are
/// shown, so a crafted link cannot put words in the page's mouth.
fn sentence_for(code: &str) -> Option<&'static str> {
    Some(match code {
        "bad_credentials" => "Wrong username or password.",
        "rate_limited" => "Too many failed attempts. Wait a few minutes, then try again.",
        "invalid_username" => "Usernames have 2 to 32 characters: lower-case letters a-z, digits 0-9, '_', '.' and '-'.",
        "invalid_password" => "Passwords need at least 8 characters (and at most 1024).",
        "username_taken" => "That username is taken; choose another.",
        "invalid_form" => "Fill in both the username and the password.",
        "reserved_username" => "That username is reserved for an administrator: signing up as it needs the setup token.",
        "too_many_signups" => "Too many accounts were created from this address in the last hour; try again later.",
        "server_busy" => "The server is busy; try again in a moment.",
        _ => return None,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Login,
    Signup,
}

/// `/login`.
#[component]
pub fn LoginPage() -> impl IntoView {
    view! { <CredentialsForm mode=Mode::Login/> }
}

/// `/signup`.
#[component]
pub fn SignupPage() -> impl IntoView {
    view! { <CredentialsForm mode=Mode::Signup/> }
}

#[component]
fn CredentialsForm(mode: Mode) -> impl IntoView {
    let (title, action, button, busy, password_autocomplete, min_password) = match mode {
        Mode::Login => (
            "Sign in",
            "/api/auth/login",
            "Sign in",
            "Signing in…",
            "current-password",
            "1",
        ),
        Mode::Signup => (
            "Create an account",
            "/api/auth/signup",
            "Sign up",
            "Creating…",
            "new-password",
            "8",
        ),
    };
    let query = use_query_map();
    let username = RwSignal::new(query.with_untracked(|q| q.get("username").unwrap_or_default()));
    let password = RwSignal::new(String::new());
    let setup_token = RwSignal::new(String::new());
    let error = RwSignal::new(query.with_untracked(|q| {
        q.get("error")
            .and_then(|c| sentence_for(&c))
            .map(str::to_string)
    }));
    let pending = RwSignal::new(false);
    let session = Session::expect();
    let navigate = use_navigate();

    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if pending.get_untracked() {
            return;
        }
        pending.set(true);
        error.set(None);
        let body = AuthRequest {
            username: username.get_untracked().trim().to_string(),
            password: password.get_untracked(),
            setup_token: Some(setup_token.get_untracked().trim().to_string())
                .filter(|t| !t.is_empty()),
        };
        let navigate = navigate.clone();
        spawn_local(async move {
            match client::post_credentials(action, &body).await {
                Ok(_) => {
                    session.refresh();
                    navigate("/", Default::default());
                }
                Err(message) => error.set(Some(message)),
            }
            pending.set(false);
        });
    };

    view! {
        <section class="card narrow">
            <h1>{title}</h1>
            <form method="post" action=action class="stack" on:submit=on_submit data-testid="credentials-form">
                <p class="error" role="alert" hidden=move || error.with(Option::is_none)>
                    {move || error.get().unwrap_or_default()}
                </p>
                <label>
                    "Username"
                    <input name="username" autocomplete="username" required maxlength="32"
                        autocapitalize="none" spellcheck="false"
                        // `value` for the server-rendered page (JavaScript off); `bind:` once hydrated.
                        value=username.get_untracked() bind:value=username/>
                </label>
                {(mode == Mode::Signup).then(|| view! {
                    <p class="hint">"2 to 32 characters: a-z, 0-9, '_', '.' and '-'."</p>
                })}
                <label>
                    "Password"
                    <input type="password" name="password" autocomplete=password_autocomplete required
                        minlength=min_password bind:value=password/>
                </label>
                {(mode == Mode::Signup).then(|| view! {
                    <p class="hint">"At least 8 characters."</p>
                    <details class="setup-token">
                        <summary>"Setting up an admin account?"</summary>
                        <label>
                            "Setup token"
                            <input name="setupToken" autocomplete="off" spellcheck="false"
                                bind:value=setup_token/>
                        </label>
                        <p class="hint">"Names listed in TIDINGS_ADMINS need the token the server printed in its log at start (or TIDINGS_SETUP_TOKEN)."</p>
                    </details>
                })}
                <button type="submit" disabled=move || pending.get()>
                    {move || if pending.get() { busy } else { button }}
                </button>
            </form>
            {match mode {
                Mode::Login => view! { <p>"No account yet? " <a href="/signup">"Sign up"</a></p> }.into_any(),
                Mode::Signup => view! { <p>"Have an account? " <a href="/login">"Sign in"</a></p> }.into_any(),
            }}
        </section>
    }
}

/// The header's right side: the signed-in user with a logout button, or sign-in links.
#[component]
pub fn UserMenu() -> impl IntoView {
    let session = Session::expect();
    let navigate = use_navigate();
    let error = RwSignal::new(None::<String>);

    let on_logout = move |ev: SubmitEvent| {
        ev.prevent_default();
        let navigate = navigate.clone();
        spawn_local(async move {
            match client::logout().await {
                Ok(()) => {
                    session.refresh();
                    navigate("/", Default::default());
                }
                Err(message) => error.set(Some(message)),
            }
        });
    };

    view! {
        <div class="user-menu">
            <Transition fallback=|| ()>
                {move || match session.user() {
                    Some(user) => view! {
                        <span class="who" data-testid="current-user">{user.username.clone()}</span>
                        {(user.role == Role::Admin).then(|| view! { <span class="badge">"admin"</span> })}
                        <form method="post" action="/api/auth/logout" on:submit=on_logout.clone()>
                            <button type="submit" class="link">"Log out"</button>
                        </form>
                        <span class="error" hidden=move || error.with(Option::is_none)>{move || error.get()}</span>
                    }.into_any(),
                    None => view! {
                        <a href="/login">"Sign in"</a>
                        <a href="/signup" class="button">"Sign up"</a>
                    }.into_any(),
                }}
            </Transition>
        </div>
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_known_codes_have_sentences() {
        assert!(super::sentence_for("bad_credentials").is_some());
        assert!(super::sentence_for("Your account is locked, call us").is_none());
    }
}
