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
    fetch::{get_json, post_json, send as send_request, Method},
    protocol::chat::{
        clock_of, room_name_problem, text_problem, ChatMessage, ChatSnapshot, CreateRoom, MarkRead,
        PresenceAction, RoomCreated, RoomInfo, RoomList as RoomListBody, RoomMembers, DEFAULT_ROOM,
    },
};

/// How long "alice is typing…" stays without a new word from her.
const TYPING_SHOWN_MS: u64 = 3000;
/// How often the page says it is typing at most (the server passes on one per 2 s).
const TYPING_EVERY_MS: f64 = 1500.0;
/// How often the room list (unread counts of the other rooms) is read again.
const ROOMS_REFRESH_MS: u64 = 15_000;

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
            Self::Message(m) => format!("m{}{}", m.id, if m.deleted { "d" } else { "" }),
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
    // A plain form's post that was refused comes back with its sentence (no JavaScript).
    let form_error = move || query.read().get("error").filter(|e| !e.is_empty());
    view! {
        <section class="card wide">
            <h1>"Chat"</h1>
            <p class="transport">
                "WebSockets: one connection carries messages both ways. The same rooms also work "
                "over Server-Sent Events with a POST to send, and by polling: switch below and watch."
            </p>
            {move || form_error().map(|e| view! { <p class="error" role="alert" data-testid="chat-form-error">{e}</p> })}
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
    let rooms = RwSignal::new(snapshot.rooms.clone());
    let typing = RwSignal::new(Vec::<(String, u64)>::new());
    let typing_seq = StoredValue::new(0u64);
    let typed_at = StoredValue::new(0f64);
    let read_sent = StoredValue::new(0i64);
    let transport = RwSignal::new(Transport::WebSocket);
    let state = RwSignal::new(LinkState::Connecting);
    let opened = RwSignal::new(0u32);
    let problem = RwSignal::new(None::<String>);
    // Sent, not yet stored: shown below the messages until the server's ack.
    let pending = RwSignal::new(Vec::<String>::new());
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
    // My read position follows what this page shows: the newest message, once (the server
    // tells my other tabs, which clear their badge too).
    let room_name = StoredValue::new(room.clone());
    let mark_read = {
        move |id: i64| {
            if id <= read_sent.get_value() {
                return;
            }
            read_sent.set_value(id);
            let url = format!("/api/rooms/{}/read", room_name.get_value());
            spawn_local(async move {
                let _ =
                    send_request(Method::Post, &url, Some(&MarkRead { last_read_id: id })).await;
            });
        }
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
                typing.update(|t| t.retain(|(n, _)| *n != m.display_name));
                push(Line::Message(m));
                mark_read(last_id.get_value());
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
            News::Pending(p) => pending.set(p),
            News::Typing(who) => {
                typing_seq.update_value(|s| *s += 1);
                let mine = typing_seq.get_value();
                typing.update(|t| {
                    t.retain(|(n, _)| *n != who);
                    t.push((who.clone(), mine));
                });
                set_timeout(
                    move || {
                        if !typing.is_disposed() {
                            typing.update(|t| t.retain(|(n, s)| !(*n == who && *s == mine)));
                        }
                    },
                    std::time::Duration::from_millis(TYPING_SHOWN_MS),
                );
            }
            News::Deleted(id) => lines.update(|l| {
                for line in l.iter_mut() {
                    if let Line::Message(m) = line {
                        if m.id == id {
                            m.deleted = true;
                            m.text.clear();
                        }
                    }
                }
            }),
            News::Read(room_name, read) => rooms.update(|list| {
                if let Some(r) = list.iter_mut().find(|r| r.name == room_name) {
                    if read > r.last_read_id {
                        r.last_read_id = read;
                        r.unread = 0.max(r.last_message_id - read).min(r.unread);
                    }
                }
            }),
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
    // Other rooms' badges move as the page-wide notification stream says they have new
    // messages (`room-activity`, public rooms and mine), whatever this page's transport.
    if let Some(crate::notify::Feed(feed)) = use_context::<crate::notify::Feed>() {
        let current = room.clone();
        Effect::new(move |_| {
            let Some(crate::notify::Heard::Activity(name, last, private)) = feed.get() else {
                return;
            };
            if name == current {
                return;
            }
            rooms.update(|list| match list.iter_mut().find(|r| r.name == name) {
                Some(r) if last > r.last_message_id => {
                    r.unread += last - r.last_message_id.max(r.last_read_id);
                    r.last_message_id = last;
                    r.last_id = last;
                }
                Some(_) => {}
                None => list.push(RoomInfo {
                    name,
                    last_id: last,
                    members: 0,
                    private,
                    owner: None,
                    last_message_id: last,
                    last_read_id: 0,
                    unread: last,
                }),
            });
        });
    }
    // The current room is read as it is shown; the others' counts are read again now and then
    // (and at once when another tab reads).
    Effect::new(move |_| {
        mark_read(last_id.get_value());
        let refresh = move || {
            spawn_local(async move {
                if let Ok(list) = get_json::<RoomListBody>("/api/rooms").await {
                    if !rooms.is_disposed() {
                        rooms.set(list.rooms);
                    }
                }
            });
        };
        if let Ok(handle) =
            set_interval_with_handle(refresh, std::time::Duration::from_millis(ROOMS_REFRESH_MS))
        {
            on_cleanup(move || handle.clear());
        }
    });
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

    let on_typing = move |_| {
        let now = js_sys::Date::now();
        if now - typed_at.get_value() < TYPING_EVERY_MS {
            return;
        }
        typed_at.set_value(now);
        link.with_value(|l| {
            if let Some(l) = l {
                l.typing();
            }
        });
    };
    let current_room = rooms.get_untracked().into_iter().find(|r| r.name == room);
    let owner_panel = current_room
        .filter(|r| r.private && r.owner.as_deref() == Some(me.as_str()))
        .map(|_| view! { <OwnerPanel room=room.clone()/> });
    let me_for_members = me.clone();
    let me_for_lines = me.clone();
    let room_for_delete = room.clone();
    view! {
        <div class="chat" data-room=room.clone()>
            <aside class="rooms">
                <h2>"Rooms"</h2>
                <RoomList rooms=rooms current=room.clone()/>
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
                                let mine = m.display_name == me_for_lines;
                                let id = m.id;
                                let url = format!("/api/rooms/{room_for_delete}/messages/{id}");
                                let delete = move |_| {
                                    let url = url.clone();
                                    spawn_local(async move {
                                        if let Err(e) = send_request::<()>(Method::Delete, &url, None).await {
                                            if !problem.is_disposed() {
                                                problem.set(Some(e));
                                            }
                                        }
                                    });
                                };
                                view! {
                                    <li class="message" class:mine=mine class:deleted=m.deleted data-id=m.id.to_string()>
                                        <span class="author">{m.display_name.clone()}</span>
                                        <time datetime=m.timestamp.clone() title=m.timestamp.clone()>{clock_of(&m.timestamp).to_string()}</time>
                                        {if m.deleted {
                                            view! { <span class="text tombstone">"(deleted)"</span> }.into_any()
                                        } else {
                                            view! { <span class="text">{m.text.clone()}</span> }.into_any()
                                        }}
                                        {(mine && !m.deleted).then(|| view! {
                                            <button type="button" class="delete" aria-label="Delete this message"
                                                data-testid="delete-message" on:click=delete>"Delete"</button>
                                        })}
                                    </li>
                                }.into_any()
                            }
                            Line::Note { kind, text, .. } => view! {
                                <li class=format!("note {kind}")>{text}</li>
                            }.into_any(),
                        }}
                    </For>
                </ol>
                <ul class="pending" data-testid="pending">
                    {move || pending.get().into_iter().map(|t| view! {
                        <li class="message pending"><span class="text">{t}</span>" "<span class="sending">"sending…"</span></li>
                    }).collect_view()}
                </ul>
                <p class="typing" data-testid="typing" aria-live="polite">
                    {move || typing_line(&typing.get())}
                </p>
                // Without JavaScript the form posts to /chat/send and the page reloads with the
                // message; with it, the message goes over the live connection.
                <form class="composer" method="post" action="/chat/send" on:submit=on_send data-testid="composer">
                    <input type="hidden" name="room" value=room.clone()/>
                    <input name="text" maxlength="2000" autocomplete="off"
                        placeholder=format!("Message #{room}") aria-label="Message"
                        bind:value=text on:input=on_typing/>
                    <button type="submit" disabled=move || sending.get()>"Send"</button>
                </form>
                {move || problem.get().map(|p| view! { <p class="error" role="alert" data-testid="chat-problem">{p}</p> })}
            </div>
            <aside class="members">
                {owner_panel}
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

/// "alice is typing…", "alice and bob are typing…", or nothing.
fn typing_line(typing: &[(String, u64)]) -> String {
    let names: Vec<&str> = typing.iter().map(|(n, _)| n.as_str()).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => format!("{one} is typing…"),
        [a, b] => format!("{a} and {b} are typing…"),
        [first, ..] => format!("{first} and {} others are typing…", names.len() - 1),
    }
}

/// The public rooms and my private ones (plus the current one and `#general`), each with my
/// unread count; live as the page reads and as other tabs do.
#[component]
fn RoomList(rooms: RwSignal<Vec<RoomInfo>>, current: String) -> impl IntoView {
    let entries = move || {
        let mut list = rooms.get();
        for r in [current.clone(), DEFAULT_ROOM.to_string()] {
            if !list.iter().any(|x| x.name == r) {
                list.push(RoomInfo {
                    name: r,
                    last_id: 0,
                    members: 0,
                    private: false,
                    owner: None,
                    last_message_id: 0,
                    last_read_id: 0,
                    unread: 0,
                });
            }
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let current = current.clone();
        list.into_iter()
            .map(|r| {
                let here = r.name == current;
                // The room on screen is being read.
                let unread = if here { 0 } else { r.unread };
                view! {
                    <li class:current=here class:private=r.private data-room=r.name.clone()>
                        <a href=format!("/chat?room={}", r.name) aria-current=here.then_some("page")>
                            {format!("#{}", r.name)}
                            {r.private.then_some(view! { <span class="lock" title="Private room: members only">"private"</span> })}
                        </a>
                        {(unread > 0).then(|| view! {
                            <span class="badge" data-testid="unread" aria-label=format!("{unread} unread")>{unread.to_string()}</span>
                        })}
                    </li>
                }
            })
            .collect_view()
    };
    view! { <ul class="room-list" data-testid="rooms">{entries}</ul> }
}

/// The owner's panel of a private room: its members, add by username, remove.
#[component]
fn OwnerPanel(room: String) -> impl IntoView {
    let members = RwSignal::new(Vec::<String>::new());
    let owner = RwSignal::new(None::<String>);
    let name = RwSignal::new(String::new());
    let problem = RwSignal::new(None::<String>);
    let base = format!("/api/rooms/{room}/members");
    let load = {
        let base = base.clone();
        move || {
            let base = base.clone();
            spawn_local(async move {
                let got = get_json::<RoomMembers>(&base).await;
                if members.is_disposed() {
                    return;
                }
                match got {
                    Ok(list) => {
                        owner.set(list.room.owner);
                        members.set(list.members);
                    }
                    Err(e) => problem.set(Some(e)),
                }
            });
        }
    };
    Effect::new({
        let load = load.clone();
        move |_| load()
    });
    let change = {
        let base = base.clone();
        let load = load.clone();
        move |method: Method, who: String| {
            let url = format!("{base}/{who}");
            let load = load.clone();
            spawn_local(async move {
                let done = send_request::<()>(method, &url, None).await;
                if members.is_disposed() {
                    return;
                }
                match done {
                    Ok(()) => {
                        problem.set(None);
                        name.set(String::new());
                        load();
                    }
                    Err(e) => problem.set(Some(e)),
                }
            });
        }
    };
    let add = {
        let change = change.clone();
        move |ev: SubmitEvent| {
            ev.prevent_default();
            let who = name.get_untracked().trim().to_string();
            if who.is_empty() {
                problem.set(Some("Type a username to add.".into()));
                return;
            }
            change(Method::Put, who);
        }
    };
    view! {
        <section class="owner-panel" data-testid="owner-panel">
            <h2>"Members"</h2>
            <ul data-testid="room-members">
                {move || {
                    let change = change.clone();
                    members.get().into_iter().map(|m| {
                        let is_owner = owner.get().as_deref() == Some(m.as_str());
                        let change = change.clone();
                        let who = m.clone();
                        view! {
                            <li data-member=m.clone()>
                                {m.clone()}
                                {if is_owner {
                                    view! { <span class="owner-mark">" (owner)"</span> }.into_any()
                                } else {
                                    view! {
                                        <button type="button" class="remove" data-testid="remove-member"
                                            aria-label=format!("Remove {m}")
                                            on:click=move |_| change(Method::Delete, who.clone())>"Remove"</button>
                                    }.into_any()
                                }}
                            </li>
                        }
                    }).collect_view()
                }}
            </ul>
            <form class="add-member" on:submit=add data-testid="add-member">
                <input name="member" placeholder="username" aria-label="Username to add" bind:value=name/>
                <button type="submit">"Add"</button>
            </form>
            {move || problem.get().map(|p| view! { <p class="error" role="alert">{p}</p> })}
        </section>
    }
}

/// Goes to (and so creates) a room by name.
#[component]
fn JoinForm() -> impl IntoView {
    let name = RwSignal::new(String::new());
    let private = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let navigate = use_navigate();
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let room = name.get_untracked().trim().to_string();
        if let Some(why) = room_name_problem(&room) {
            error.set(Some(why));
            return;
        }
        error.set(None);
        let to = format!("/chat?room={room}");
        if !private.get_untracked() {
            // Joining an unknown name makes it, public.
            navigate(&to, Default::default());
            return;
        }
        let navigate = navigate.clone();
        spawn_local(async move {
            let made = post_json::<_, RoomCreated>(
                "/api/rooms",
                &CreateRoom {
                    name: room,
                    private: true,
                },
            )
            .await;
            match made {
                Ok(_) => navigate(&to, Default::default()),
                Err(e) => {
                    if !error.is_disposed() {
                        error.set(Some(e));
                    }
                }
            }
        });
    };
    view! {
        <form class="join-room" on:submit=on_submit data-testid="join-room">
            <input name="room" placeholder="room-name" aria-label="Room name" bind:value=name/>
            <label class="private-toggle">
                <input type="checkbox" name="private" data-testid="private-room" bind:checked=private/>
                " private (members only)"
            </label>
            <button type="submit">{move || if private.get() { "Create" } else { "Join" }}</button>
        </form>
        {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
    }
}
