//! The HTML shell and `<App/>`: header, page routes, footer.
//!
//! Pages live with their features (`auth::view`, `guide::view`, …); this file only places
//! them. Tests: `end2end/tests/*.spec.ts` drive every route in Chromium.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    SsrMode, StaticSegment,
};

use crate::{
    assistant::AssistantPage,
    auth::{LoginPage, Session, SignupPage, UserMenu},
    chat::ChatPage,
    dashboard::DashboardPage,
    export::ExportPage,
    guide::HomePage,
    jobs::JobsPage,
    notify::{Bell, Feed, NotifyPage, Toasts},
};

/// The document around the app; rendered on the server for every page.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The pages that exist, in header order.
const NAV: &[(&str, &str)] = &[
    ("/", "Guide"),
    ("/export", "Export"),
    ("/jobs", "Jobs"),
    ("/chat", "Chat"),
    ("/notifications", "Notify"),
    ("/dashboard", "Dashboard"),
    ("/assistant", "Assistant"),
];

/// The application: session, header, routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    Session::provide();
    Feed::provide();
    // Tells tests (and curious readers of the DOM) that the page is interactive now.
    Effect::new(|_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <Stylesheet id="leptos" href="/pkg/tidings.css"/>
        <Title text="Tidings"/>
        <Router>
            <header class="topbar">
                <a class="brand" href="/">"Tidings"</a>
                <nav>{NAV.iter().map(|(href, label)| view! { <A href=*href>{*label}</A> }).collect_view()}</nav>
                <Bell/>
                <UserMenu/>
            </header>
            <main>
                // InOrder: every Suspense is written in place, in document order, so the page
                // is whole without JavaScript. (PartiallyBlocked left the signed-out header
                // as an empty fallback plus a <template> that only JavaScript swaps in,
                // because `whoami` resolves without waiting when there is no cookie.)
                <Routes fallback=NotFound>
                    <Route path=StaticSegment("") view=HomePage ssr=SsrMode::InOrder/>
                    <Route path=StaticSegment("login") view=LoginPage ssr=SsrMode::InOrder/>
                    <Route path=StaticSegment("signup") view=SignupPage ssr=SsrMode::InOrder/>
                    <Route path=StaticSegment("export") view=ExportPage ssr=SsrMode::InOrder/>
                    <Route path=StaticSegment("jobs") view=JobsPage ssr=SsrMode::InOrder/>
                    <Route path=StaticSegment("chat") view=ChatPage ssr=SsrMode::InOrder/>
                    <Route path=StaticSegment("notifications") view=NotifyPage ssr=SsrMode::InOrder/>
                    <Route path=StaticSegment("dashboard") view=DashboardPage ssr=SsrMode::InOrder/>
                    <Route path=StaticSegment("assistant") view=AssistantPage ssr=SsrMode::InOrder/>
                </Routes>
            </main>
            <Toasts/>
            <footer>
                "Tidings: polling, HTTP streaming, Server-Sent Events and WebSockets, in Rust."
            </footer>
        </Router>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <section class="card narrow">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <a href="/">"Back to the guide"</a></p>
        </section>
    }
}
