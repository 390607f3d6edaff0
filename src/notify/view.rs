//! Toasts on every page, and `/notifications`, where an admin sends one.
//!
//! `<Toasts/>` sits in the app shell: in the browser, while someone is signed in, it opens the
//! one notification stream the page holds (the stream needs a session) and shows each
//! notification for ten seconds (or until closed); it closes the stream at logout. Text is
//! rendered as text. Tests: `end2end/tests/chat.spec.ts`.

use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use send_wrapper::SendWrapper;

use super::{client, client::Heard, notify_role};
use crate::{
    auth::Session,
    protocol::chat::{clock_of, InboxItem, Notification, SendNotification, NOTIFICATION_KINDS},
};

/// What the page-wide notification stream last brought, shared by the toasts (which own the
/// stream) and the bell: one connection for both.
#[derive(Clone, Copy)]
pub struct Feed(pub RwSignal<Option<Heard>>);

impl Feed {
    /// The app's feed (provided once, by the app).
    pub fn provide() {
        provide_context(Feed(RwSignal::new(None)));
    }
}

/// Entries the bell's dropdown shows.
const BELL_SHOWN: u32 = 20;

/// The header's bell: how many of my notifications are unread, and a dropdown of the latest
/// with "Mark all read". Live: new ones count up as they arrive, and marking read in another
/// tab clears it here too.
#[component]
pub fn Bell() -> impl IntoView {
    let session = Session::expect();
    let who = Memo::new(move |_| session.user().map(|u| u.username));
    let items = RwSignal::new(Vec::<InboxItem>::new());
    let unread = RwSignal::new(0i64);
    let open = RwSignal::new(false);
    let problem = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            let got = client::inbox(BELL_SHOWN).await;
            if items.is_disposed() {
                return;
            }
            match got {
                Ok(inbox) => {
                    let mut list = inbox.notifications;
                    list.reverse();
                    items.set(list);
                    unread.set(inbox.unread);
                    problem.set(None);
                }
                Err(e) => problem.set(Some(e)),
            }
        });
    };
    Effect::new(move |_| {
        if who.get().is_some() {
            load();
        }
    });
    if let Some(Feed(feed)) = use_context::<Feed>() {
        Effect::new(move |_| match feed.get() {
            Some(Heard::New(n)) => {
                if items.with_untracked(|l| l.iter().any(|i| i.notification.id == n.id)) {
                    return;
                }
                items.update(|l| {
                    l.insert(
                        0,
                        InboxItem {
                            notification: n,
                            read: false,
                        },
                    );
                    l.truncate(BELL_SHOWN as usize);
                });
                unread.update(|u| *u += 1);
            }
            // Read elsewhere: the server knows the exact count.
            Some(Heard::Read(_)) => load(),
            Some(Heard::Activity(..)) | None => {}
        });
    }
    let mark_all = move |_| {
        let Some(newest) = items.with_untracked(|l| l.first().map(|i| i.notification.id)) else {
            return;
        };
        spawn_local(async move {
            let done = client::mark_read(newest).await;
            if items.is_disposed() {
                return;
            }
            match done {
                Ok(()) => {
                    items.update(|l| l.iter_mut().for_each(|i| i.read = true));
                    unread.set(0);
                }
                Err(e) => problem.set(Some(e)),
            }
        });
    };
    // In a Transition, like the user menu: the session is a resource, so the server's HTML
    // and the hydrating browser agree on whether the bell is there.
    view! {
        <Transition fallback=|| ()>
            {move || session.user().map(|_| view! {
            <div class="bell">
                <button type="button" class="bell-button" data-testid="bell"
                    aria-expanded=move || open.get().to_string()
                    aria-label=move || format!("Notifications, {} unread", unread.get())
                    on:click=move |_| open.update(|o| *o = !*o)>
                    // Drawn, not an emoji: a machine without an emoji font shows a box.
                    <svg class="bell-icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
                        <path d="M12 2a6 6 0 0 0-6 6v3.6L4.3 15.3A1 1 0 0 0 5.2 17h13.6a1 1 0 0 0 .9-1.7L18 11.6V8a6 6 0 0 0-6-6zm0 20a3 3 0 0 0 2.8-2H9.2A3 3 0 0 0 12 22z" fill="currentColor"/>
                    </svg>
                    <span class="bell-count" data-testid="bell-count" data-unread=move || unread.get().to_string()
                        class:zero=move || unread.get() == 0>
                        {move || unread.get().to_string()}
                    </span>
                </button>
                <Show when=move || open.get()>
                    <div class="inbox" data-testid="inbox" role="dialog" aria-label="Notifications">
                        <div class="inbox-head">
                            <strong>"Notifications"</strong>
                            <button type="button" data-testid="mark-read" on:click=mark_all
                                disabled=move || unread.get() == 0>"Mark all read"</button>
                        </div>
                        {move || problem.get().map(|p| view! { <p class="error" role="alert">{p}</p> })}
                        <ul>
                            {move || {
                                let list = items.get();
                                if list.is_empty() {
                                    return view! { <li class="empty">"Nothing yet."</li> }.into_any();
                                }
                                list.into_iter().map(|i| view! {
                                    <li class:unread=!i.read data-id=i.notification.id.to_string()>
                                        <strong>{i.notification.title.clone()}</strong>
                                        <span>{i.notification.message.clone()}</span>
                                        <time datetime=i.notification.timestamp.clone()>{clock_of(&i.notification.timestamp).to_string()}</time>
                                    </li>
                                }).collect_view().into_any()
                            }}
                        </ul>
                    </div>
                </Show>
            </div>
            })}
        </Transition>
    }
}

/// Toasts shown at once at most (the newest).
const TOASTS_MAX: usize = 5;
/// How long a toast stays.
const TOAST_MS: u64 = 10_000;

/// The notifications as toasts, on every page.
#[component]
pub fn Toasts() -> impl IntoView {
    let toasts = RwSignal::new(Vec::<Notification>::new());
    let stream = StoredValue::new(None::<SendWrapper<crate::events::EventStream>>);
    let session = Session::expect();
    let who = Memo::new(move |_| session.user().map(|u| u.username));
    Effect::new(move |_| {
        // Follows the session: signed out, no stream (it would only be refused); another user,
        // a fresh stream.
        let signed_in = who.get().is_some();
        stream.set_value(None);
        if !signed_in {
            return;
        }
        let feed = use_context::<Feed>();
        let opened = client::open(move |heard| {
            if toasts.is_disposed() {
                return;
            }
            if let Some(Feed(feed)) = feed {
                feed.set(Some(heard.clone()));
            }
            let Heard::New(n) = heard else {
                return;
            };
            let id = n.id;
            toasts.update(|t| {
                if !t.iter().any(|x| x.id == id) {
                    t.push(n);
                    if t.len() > TOASTS_MAX {
                        t.remove(0);
                    }
                }
            });
            set_timeout(
                move || {
                    if !toasts.is_disposed() {
                        toasts.update(|t| t.retain(|x| x.id != id));
                    }
                },
                std::time::Duration::from_millis(TOAST_MS),
            );
        });
        if let Ok(s) = opened {
            stream.set_value(Some(SendWrapper::new(s)));
        }
    });
    on_cleanup(move || stream.set_value(None));
    view! {
        <div class="toasts" aria-live="polite" data-testid="toasts">
            <For each=move || toasts.get() key=|n| n.id let:n>
                <div class="toast" role="status" data-kind=n.kind.clone() data-id=n.id.to_string()>
                    <strong>{n.title.clone()}</strong>
                    <span class="toast-message">{n.message.clone()}</span>
                    <button type="button" aria-label="Dismiss"
                        on:click=move |_| toasts.update(|t| t.retain(|x| x.id != n.id))>"×"</button>
                </div>
            </For>
        </div>
    }
}

/// `/notifications`: what notifications are, and the admin's form.
#[component]
pub fn NotifyPage() -> impl IntoView {
    let role = Resource::new(|| (), |_| notify_role());
    view! {
        <section class="card">
            <h1>"Notifications"</h1>
            <p class="transport">
                "Server-Sent Events and WebSockets: a notification goes out once to every "
                "open WebSocket and every subscriber of the notification stream; the toasts on "
                "every page ride that one SSE stream, since a page only listens."
            </p>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || role.get().map(|r| match r {
                    Ok(Some(true)) => view! { <NotifyForm/> }.into_any(),
                    Ok(Some(false)) => view! {
                        <p data-testid="notify-admins-only">"Only admins can send notifications. Those sent appear here as toasts."</p>
                    }.into_any(),
                    Ok(None) => view! {
                        <p data-testid="notify-signin"><a href="/login">"Sign in"</a> " as an admin to send notifications."</p>
                    }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// The admin's form.
#[component]
fn NotifyForm() -> impl IntoView {
    let kind = RwSignal::new("info".to_string());
    let title = RwSignal::new(String::new());
    let message = RwSignal::new(String::new());
    let result = RwSignal::new(None::<Result<String, String>>);
    let busy = RwSignal::new(false);
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let request = SendNotification {
            kind: kind.get_untracked(),
            message: message.get_untracked(),
            title: Some(title.get_untracked()).filter(|t| !t.trim().is_empty()),
            to: None,
        };
        busy.set(true);
        spawn_local(async move {
            let sent = client::send(&request).await;
            if busy.is_disposed() {
                return;
            }
            result.set(Some(sent.map(|s| {
                format!(
                    "Sent to {} live connection{}.",
                    s.connection_count,
                    if s.connection_count == 1 { "" } else { "s" }
                )
            })));
            if matches!(result.get_untracked(), Some(Ok(_))) {
                message.set(String::new());
            }
            busy.set(false);
        });
    };
    view! {
        <form class="export-form" on:submit=on_submit data-testid="notify-form">
            <label>"Kind"
                <select name="kind" on:change=move |ev| kind.set(event_target_value(&ev)) prop:value=move || kind.get()>
                    {NOTIFICATION_KINDS.iter().map(|k| view! { <option value=*k>{*k}</option> }).collect_view()}
                </select>
            </label>
            <label>"Title" <input name="title" placeholder="(the kind)" maxlength="100" bind:value=title/></label>
            <label class="wide">"Message" <input name="message" maxlength="500" bind:value=message/></label>
            <div class="buttons">
                <button type="submit" disabled=move || busy.get()>"Send to everyone"</button>
            </div>
        </form>
        {move || result.get().map(|r| match r {
            Ok(s) => view! { <p class="ok" role="status" data-testid="notify-result">{s}</p> }.into_any(),
            Err(e) => view! { <p class="error" role="alert" data-testid="notify-error">{e}</p> }.into_any(),
        })}
    }
}
