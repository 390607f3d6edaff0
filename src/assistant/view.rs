//! `/assistant`: ask a question and watch the answer grow token by token.
//!
//! The page is rendered first on the server ([`assistant_page`](super::assistant_page)) with
//! the chosen chat's answer as stored so far and the id of its last token; the browser then
//! follows the chat's topic on the shared stream after that id, so a reload mid-answer shows
//! the text at once and the rest streams on with no gap and no repeat. The answer is shown as
//! text only (line breaks kept, fenced code blocks monospaced), never as HTML. Stop asks the
//! server to end the answer (it closes the provider's request); the figures under the answer
//! are the tokens so far and their rate, then the provider's counts.
//!
//! Tests: `end2end/tests/assistant.spec.ts`.

use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::hooks::{use_navigate, use_query_map};
use send_wrapper::SendWrapper;

use super::{
    assistant_page,
    client::{self, News},
};
use crate::{
    events::{EventStream, LinkState},
    protocol::assistant::{blocks, AssistantSnapshot, Block, ChatState, ChatView, DoneData},
};

/// The assistant page.
#[component]
pub fn AssistantPage() -> impl IntoView {
    let query = use_query_map();
    let selected = move || query.read().get("chat").and_then(|v| v.parse::<i64>().ok());
    let snapshot = Resource::new(selected, assistant_page);
    view! {
        <section class="card wide">
            <h1>"Assistant"</h1>
            <p class="transport">
                "An AI answer is a Server-Sent Events stream of tokens. The server asks the model, "
                "stores every token as it arrives and relays it here, so the key never reaches "
                "your browser and a reload picks up at the next token."
            </p>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || snapshot.get().map(|result| match result {
                    Ok(s) => view! { <AssistantView snapshot=s/> }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn AssistantView(snapshot: AssistantSnapshot) -> impl IntoView {
    if snapshot.user.is_none() {
        return view! {
            <p data-testid="assistant-signin">
                <a href="/login">"Sign in"</a> " to ask the assistant."
            </p>
        }
        .into_any();
    }
    let chats = snapshot.chats.clone();
    // The open answer's state and token count, as it streams: its line in the list follows.
    let shown = snapshot.chat.as_ref().map(|c| c.id);
    let live = RwSignal::new(
        snapshot
            .chat
            .as_ref()
            .map_or((ChatState::Completed, 0), |c| (c.status, c.last_event_id)),
    );
    view! {
        <AskForm/>
        {match snapshot.chat.clone() {
            Some(chat) => view! { <Answer chat=chat live=live/> }.into_any(),
            None => view! { <p class="hint">"Ask something, or pick an earlier chat below."</p> }.into_any(),
        }}
        <h2>"Your chats"</h2>
        <ul class="recent-jobs" data-testid="assistant-chats">
            {chats.into_iter().map(|c| {
                let open = shown == Some(c.id);
                let state = move || if open { live.get() } else { (c.status, c.tokens) };
                view! {
                    <li data-chat=c.id.to_string() data-status=move || state().0.as_str()>
                        <a href=format!("/assistant?chat={}", c.id)>{c.prompt.clone()}</a>
                        {move || {
                            let (status, tokens) = state();
                            format!(" ({}, {tokens} tokens)", status.as_str())
                        }}
                    </li>
                }
            }).collect_view()}
        </ul>
    }
    .into_any()
}

/// The prompt box.
#[component]
fn AskForm() -> impl IntoView {
    let prompt = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let text = prompt.get_untracked();
        let navigate = navigate.clone();
        busy.set(true);
        spawn_local(async move {
            match client::ask(&text).await {
                Ok(created) => {
                    error.set(None);
                    prompt.set(String::new());
                    navigate(
                        &format!("/assistant?chat={}", created.id),
                        Default::default(),
                    );
                }
                Err(why) => error.set(Some(why)),
            }
            busy.set(false);
        });
    };
    view! {
        <form class="export-form" on:submit=on_submit data-testid="ask-form">
            <label class="wide">"Your question"
                <textarea name="prompt" rows="3" data-testid="prompt"
                    placeholder="How does an event stream resume after a drop?"
                    prop:value=move || prompt.get()
                    on:input=move |ev| prompt.set(event_target_value(&ev))></textarea>
            </label>
            <div class="buttons">
                <button type="submit" disabled=move || busy.get()>"Ask"</button>
            </div>
        </form>
        {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="ask-error">{e}</p> })}
    }
}

/// How the page speaks of the stream's state.
fn link_text(state: LinkState) -> &'static str {
    match state {
        LinkState::Connecting => "connecting",
        LinkState::Open => "live",
        LinkState::Reconnecting(_) => "reconnecting",
        LinkState::Closed => "closed",
    }
}

/// One answer: its text (growing while it streams), Stop, and its figures.
#[component]
fn Answer(chat: ChatView, live: RwSignal<(ChatState, i64)>) -> impl IntoView {
    let id = chat.id;
    let text = RwSignal::new(chat.text.clone());
    let last = RwSignal::new(chat.last_event_id);
    let status = RwSignal::new(chat.status);
    let done = RwSignal::new(chat.done.clone());
    let error = RwSignal::new(chat.error.clone());
    let link = RwSignal::new(if chat.status.is_final() {
        "ended"
    } else {
        "connecting"
    });
    let stop_error = RwSignal::new(None::<String>);
    // Tokens heard live, and when the first of them came (for the rate while it streams).
    let heard = RwSignal::new((0u32, 0.0f64, 0.0f64));
    let watch = StoredValue::new(None::<SendWrapper<EventStream>>);
    // The list's line for this chat follows the answer.
    Effect::new(move |_| live.set((status.get(), last.get())));

    let end = move |state: ChatState| {
        status.set(state);
        link.set("ended");
        // Closed, not dropped: this runs inside one of the stream's listeners.
        watch.with_value(|w| {
            if let Some(w) = w {
                w.close();
            }
        });
    };
    Effect::new(move |_| {
        if status.get_untracked().is_final() {
            return;
        }
        let opened = client::follow(id, last.get_untracked(), move |news| match news {
            News::Token(n, t) => {
                // The server sends each token once, in order; a repeat (a replay after a
                // reconnect) is skipped.
                if n > last.get_untracked() {
                    last.set(n);
                    text.update(|s| s.push_str(&t));
                    let now = js_sys::Date::now();
                    heard.update(|(count, first, latest)| {
                        if *count == 0 {
                            *first = now;
                        }
                        *count += 1;
                        *latest = now;
                    });
                }
            }
            News::Done(d) => {
                let state = if d.finish_reason == "cancelled" {
                    ChatState::Cancelled
                } else {
                    ChatState::Completed
                };
                done.set(Some(d));
                end(state);
            }
            News::Error(message) => {
                error.set(Some(message));
                end(ChatState::Failed);
            }
            News::Link(state) => {
                if link.get_untracked() != "ended" {
                    link.set(link_text(state));
                }
            }
        });
        match opened {
            Ok(w) => watch.set_value(Some(SendWrapper::new(w))),
            Err(why) => error.set(Some(why)),
        }
    });
    on_cleanup(move || watch.set_value(None));

    let on_stop = move |_| {
        spawn_local(async move {
            if let Err(why) = client::stop(id).await {
                stop_error.set(Some(why));
            }
        });
    };
    let stats = move || match done.get() {
        Some(DoneData {
            finish_reason,
            usage,
            tokens_per_second,
        }) => format!(
            "{} tokens · {:.1} tokens/s · prompt {} tokens · ended: {}",
            usage.completion_tokens, tokens_per_second, usage.prompt_tokens, finish_reason
        ),
        None => {
            let (count, first, latest) = heard.get();
            let rate = if count > 1 && latest > first {
                f64::from(count - 1) * 1000.0 / (latest - first)
            } else {
                0.0
            };
            format!("{} tokens · {:.1} tokens/s", last.get(), rate)
        }
    };
    view! {
        <article class="answer-card" data-testid="answer-card" data-chat=id.to_string()
            data-status=move || status.get().as_str() data-last=move || last.get().to_string()>
            <p class="prompt"><strong>"You: "</strong>{chat.prompt.clone()}</p>
            <div class="answer" data-testid="answer">
                {move || text.with(|t| blocks(t)).into_iter().map(|b| match b {
                    Block::Text(t) => view! { <p class="answer-text">{t}</p> }.into_any(),
                    Block::Code(c) => view! { <pre class="answer-code"><code>{c}</code></pre> }.into_any(),
                }).collect_view()}
            </div>
            <p class="answer-stats" data-testid="answer-stats">{stats}</p>
            <p class="link">"Stream: " <span data-testid="answer-link">{move || link.get()}</span></p>
            <div class="buttons">
                <button type="button" data-testid="stop" on:click=on_stop
                    disabled=move || status.get().is_final()>"Stop"</button>
            </div>
            {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="answer-error">{e}</p> })}
            {move || stop_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        </article>
    }
}
