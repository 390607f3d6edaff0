//! `/chat`: a room's messages, its members and a composer, kept live over the transport the
//! user picks (WebSocket, SSE + POST, or polling), so the same room can be watched working
//! three ways.
//!
//! The server renders the room's latest messages and the id they end at
//! ([`chat_page`](super::chat_page)); the browser then opens the chosen transport, resuming
//! after that id, so nothing is missed or shown twice between the render and the
//! connection. A drop is retried with backoff and resumes after the last message shown;
//! switching transports does the same. Text is always rendered as text.
//!
//! Tests: `end2end/tests/chat.spec.ts`.

use std::collections::VecDeque;

use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::hooks::{use_navigate, use_query_map};
use send_wrapper::SendWrapper;

use super::{
    chat_page,
    client::{Link, News, Transport},
};
use crate::{
    events::LinkState,
    protocol::chat::{
        clock_of, room_name_problem, text_problem, ChatMessage, ChatSnapshot, PresenceAction,
        DEFAULT_ROOM,
    },
};

/// Lines the page keeps at most (the newest).
const LINES_KEPT: usize = 500;

/// One line of the conversation.
#[derive(Clone, Debug, PartialEq)]
enum Line {
    Message(ChatMessage),
    /// Presence changes, gaps: `kind` is the CSS class.
    Note {
        seq: u64,
        kind: &'static str,
        text: String,
    },
}

impl Line {
    fn key(&self) -> String {
        match self {
            Self::Message(m) => format!("m{}", m.id),
            Self::Note { seq, .. } => format!("n{seq}"),
        }
    }
}

/// The chat page.
#[component]
pub fn ChatPage() -> impl IntoView {
    let query = use_query_map();
    let room = move || {
        query
            .read()
            .get("room")
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_ROOM.to_string())
    };
    let snapshot = Resource::new(room, chat_page);
    view! {
        <section class="card wide">
            <h1>"Chat"</h1>
            <p class="transport">
                "WebSockets: one connection carries messages both ways. The same rooms also work "
                "over Server-Sent Events with a POST to send, and by polling: switch below and watch."
            </p>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || snapshot.get().map(|result| match result {
                    Ok(s) => view! { <ChatView snapshot=s/> }.into_any(),
                    Err(e) => view! {
                        <p class="error" role="alert" data-testid="chat-error">
                            {e.to_string().trim_start_matches("error running server function: ").to_string()}
                        </p>
                        <p><a href="/chat">"Back to #general"</a></p>
                    }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn ChatView(snapshot: ChatSnapshot) -> impl IntoView {
    let Some(me) = snapshot.user.clone() else {
        return view! {
            <p data-testid="chat-signin"><a href="/login">"Sign in"</a> " to chat."</p>
        }
        .into_any();
    };
    let room = snapshot.room.clone();
    let lines = RwSignal::new(
        snapshot
            .history
            .iter()
            .cloned()
            .map(Line::Message)
            .collect::<VecDeque<_>>(),
    );
    let members = RwSignal::new(snapshot.members.clone());
    let transport = RwSignal::new(Transport::WebSocket);
    let state = RwSignal::new(LinkState::Connecting);
    let opened = RwSignal::new(0u32);
    let problem = RwSignal::new(None::<String>);
    let last_id = StoredValue::new(snapshot.last_id);
    let seq = StoredValue::new(0u64);
    let link = StoredValue::new(None::<SendWrapper<Link>>);

    let push = move |line: Line| {
        lines.update(|l| {
            l.push_back(line);
            while l.len() > LINES_KEPT {
                l.pop_front();
            }
        });
    };
    let note = move |kind: &'static str, text: String| {
        seq.update_value(|s| *s += 1);
        push(Line::Note {
            seq: seq.get_value(),
            kind,
            text,
        });
    };
    let on_news = move |news: News| {
        if lines.is_disposed() {
            return;
        }
        match news {
            News::State(s) => {
                if s == LinkState::Open && state.get_untracked() != LinkState::Open {
                    opened.update(|n| *n += 1);
                }
                state.set(s);
            }
            News::Joined(m) | News::Members(m) => members.set(m),
            News::Message(m) => {
                last_id.set_value(m.id);
                push(Line::Message(m));
            }
            News::Presence(p) => {
                members.update(|m| match p.action {
                    PresenceAction::Joined if !m.contains(&p.display_name) => {
                        m.push(p.display_name.clone());
                        m.sort();
                    }
                    PresenceAction::Left => m.retain(|n| *n != p.display_name),
                    _ => {}
                });
                note("presence", p.message);
            }
            News::Gap(g) => note(
                "gap",
                format!(
                    "Messages {} to {} are no longer kept; the room continues from {}.",
                    g.after_id + 1,
                    g.first_available_id - 1,
                    g.first_available_id
                ),
            ),
            News::Problem(p) => problem.set(Some(p)),
            News::Typing(_) | News::Deleted(_) | News::Read(..) => {}
        }
    };

    // Opens the chosen transport (in the browser only: effects do not run on the server),
    // resuming after the last message shown; switching drops the old link first.
    Effect::new({
        let room = room.clone();
        move |_| {
            let transport = transport.get();
            link.set_value(None);
            state.set(LinkState::Connecting);
            let opened = Link::open(transport, &room, last_id.get_value(), on_news);
            link.set_value(Some(SendWrapper::new(opened)));
        }
    });
    on_cleanup(move || link.set_value(None));
    // Keeps the newest line in view.
    let list = NodeRef::<leptos::html::Ol>::new();
    Effect::new(move |_| {
        lines.track();
        if let Some(el) = list.get() {
            el.set_scroll_top(el.scroll_height());
        }
    });

    let text = RwSignal::new(String::new());
    let sending = RwSignal::new(false);
    let on_send = move |ev: SubmitEvent| {
        ev.prevent_default();
        let body = text.get_untracked();
        if let Some(why) = text_problem(&body) {
            problem.set(Some(why));
            return;
        }
        let Some(sender) = link.with_value(|l| l.as_ref().map(|l| l.sender())) else {
            return;
        };
        sending.set(true);
        spawn_local(async move {
            let sent = sender.send(&body).await;
            if text.is_disposed() {
                return;
            }
            match sent {
                Ok(()) => {
                    text.set(String::new());
                    problem.set(None);
                }
                Err(why) => problem.set(Some(why)),
            }
            sending.set(false);
        });
    };

    let status = move || match state.get() {
        LinkState::Connecting => ("connecting", "Connecting…".to_string()),
        LinkState::Open => (
            "open",
            format!("Connected over {}", transport.get().label()),
        ),
        LinkState::Reconnecting(Some(ms)) => (
            "reconnecting",
            format!("Connection lost; retrying in {} s…", ms.div_ceil(1000)),
        ),
        // Never told: the link always knows when it tries next, and it retries until dropped.
        LinkState::Reconnecting(None) => ("reconnecting", "Connection lost; retrying…".to_string()),
        LinkState::Closed => ("closed", "Disconnected.".to_string()),
    };

    let me_for_members = me.clone();
    view! {
        <div class="chat" data-room=room.clone()>
            <aside class="rooms">
                <h2>"Rooms"</h2>
                <RoomList rooms=snapshot.rooms.iter().map(|r| r.name.clone()).collect() current=room.clone()/>
                <JoinForm/>
            </aside>
            <div class="conversation">
                <div class="chat-head">
                    <h2>{format!("#{room}")}</h2>
                    <fieldset class="transport-switch" data-testid="transport-switch">
                        <legend>"Transport"</legend>
                        {Transport::ALL.into_iter().map(|t| view! {
                            <label>
                                <input type="radio" name="transport" value=t.as_str()
                                    id=format!("transport-{}", t.as_str())
                                    prop:checked=move || transport.get() == t
                                    on:change=move |_| transport.set(t)/>
                                {t.label()}
                            </label>
                        }).collect_view()}
                    </fieldset>
                    <p class="conn-status" data-testid="chat-status"
                        data-state=move || status().0
                        data-transport=move || transport.get().as_str()
                        data-connections=move || opened.get().to_string()>
                        {move || status().1}
                    </p>
                </div>
                <ol class="messages" data-testid="messages" aria-live="polite" node_ref=list>
                    <For each=move || lines.get() key=Line::key let:line>
                        {match line {
                            Line::Message(m) => {
                                let mine = m.display_name == me;
                                view! {
                                    <li class="message" class:mine=mine data-id=m.id.to_string()>
                                        <span class="author">{m.display_name.clone()}</span>
                                        <time datetime=m.timestamp.clone() title=m.timestamp.clone()>{clock_of(&m.timestamp).to_string()}</time>
                                        <span class="text">{m.text.clone()}</span>
                                    </li>
                                }.into_any()
                            }
                            Line::Note { kind, text, .. } => view! {
                                <li class=format!("note {kind}")>{text}</li>
                            }.into_any(),
                        }}
                    </For>
                </ol>
                <form class="composer" on:submit=on_send data-testid="composer">
                    <input name="text" maxlength="2000" autocomplete="off"
                        placeholder=format!("Message #{room}") aria-label="Message"
                        bind:value=text/>
                    <button type="submit" disabled=move || sending.get()>"Send"</button>
                </form>
                {move || problem.get().map(|p| view! { <p class="error" role="alert" data-testid="chat-problem">{p}</p> })}
            </div>
            <aside class="members">
                <h2>"Here now"</h2>
                <ul data-testid="members">
                    {move || members.get().into_iter().map(|m| {
                        let you = m == me_for_members;
                        view! { <li class:you=you>{m}{you.then_some(" (you)")}</li> }
                    }).collect_view()}
                </ul>
            </aside>
        </div>
    }
    .into_any()
}

/// The rooms with messages, plus the current one and `#general`.
#[component]
fn RoomList(rooms: Vec<String>, current: String) -> impl IntoView {
    let mut names = rooms;
    for r in [current.clone(), DEFAULT_ROOM.to_string()] {
        if !names.contains(&r) {
            names.push(r);
        }
    }
    names.sort();
    view! {
        <ul class="room-list" data-testid="rooms">
            {names.into_iter().map(|name| {
                let here = name == current;
                view! {
                    <li class:current=here>
                        <a href=format!("/chat?room={name}") aria-current=here.then_some("page")>{format!("#{name}")}</a>
                    </li>
                }
            }).collect_view()}
        </ul>
    }
}

/// Goes to (and so creates) a room by name.
#[component]
fn JoinForm() -> impl IntoView {
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let navigate = use_navigate();
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let room = name.get_untracked().trim().to_string();
        match room_name_problem(&room) {
            Some(why) => error.set(Some(why)),
            None => {
                error.set(None);
                navigate(&format!("/chat?room={room}"), Default::default());
            }
        }
    };
    view! {
        <form class="join-room" on:submit=on_submit data-testid="join-room">
            <input name="room" placeholder="room-name" aria-label="Room name" bind:value=name/>
            <button type="submit">"Join"</button>
        </form>
        {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
    }
}
