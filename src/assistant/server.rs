//! The assistant's routes (docs/interface.md, "AI token streams"): start a chat, list mine,
//! read one with its answer so far, follow its tokens over SSE, stop it; and the built-in
//! model's `POST /v1/chat/completions`.
//!
//! The event stream subscribes to the chat's bus topic *first*, then reads the chat and the
//! stored tokens after the client's last id, then goes live, skipping what it sent. Tokens are
//! published before they are stored (see `runner`), so a live token may run ahead of the
//! database: when one arrives past a hole, the hole is read back once the writer stored it
//! (it does within [`runner::FLUSH_EVERY`]). So a reader sees every token exactly once, in
//! order, after a reload, on another instance, or after coming back hours later; the stream
//! ends with `done` or `error`, and a reconnect that has it gets 204.
//!
//! Tests: `tests/it/assistant.rs`.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use futures::future::BoxFuture;

use super::{
    model::{self, BuiltIn},
    runner::{self, terminal_of, topic, Assistant},
    settings::AssistantConfig,
    store::ChatRow,
};
use crate::{
    protocol::assistant::{
        ChatCreated, ChatList, ChatState, ChatSummary, ChatView, NewChat, TokenData, TOKEN,
    },
    server::{
        access::identity::{CurrentUser, StreamUser},
        clock,
        fanout::bus::Received,
        fanout::sse::{self, Event, SseOptions},
        fanout::topics::{self, Producer, TopicKind},
        storage::{Backend, Store},
        ApiError, ApiJson, AppState,
    },
};

/// Chats listed by `GET /api/assistant/chats`.
const LIST_LIMIT: i64 = 50;
/// Tokens read from the database per replay page.
const REPLAY_PAGE: i64 = 2000;

/// The routes.
pub fn router(assistant: Assistant, state: &AppState) -> Router<AppState> {
    let c = assistant.config();
    let built_in = BuiltIn {
        pace: Duration::from_secs(1) / c.tokens_per_sec.max(1),
        max_tokens: c.max_tokens,
        streams: (c.model_streams > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(c.model_streams as usize))),
        shutdown: state.shutdown.clone(),
    };
    Router::new()
        .route("/api/assistant/chats", post(create).get(list))
        .route("/api/assistant/chats/{id}", get(show))
        .route("/api/assistant/chats/{id}/events", get(events))
        .route("/api/assistant/chats/{id}/cancel", post(cancel))
        .route(
            "/v1/chat/completions",
            post(model::completions).with_state(built_in),
        )
        .layer(Extension(assistant))
}

/// Starts the assistant for `state` with `config`: once per process, at start-up.
pub fn start(state: &AppState, config: &AssistantConfig) -> Assistant {
    // As for jobs: an SQLite file with no Redis is one process's.
    let sole = state.store.backend() == Backend::Sqlite && state.config.redis_url.is_none();
    Assistant::start(
        state.store.clone(),
        state.bus.clone(),
        state.shutdown.clone(),
        config.clone(),
        &state.instance,
        sole,
    )
}

/// The prompt of a request, checked: present, not blank, not too long.
fn check_prompt(body: &NewChat, max_chars: u32) -> Result<String, ApiError> {
    let prompt = body.prompt.as_deref().map(str::trim).unwrap_or_default();
    if body.prompt.is_none() {
        return Err(ApiError::BadRequest {
            code: "missing_prompt",
            message: "Send {\"prompt\": \"…\"}: the question to answer.".into(),
        });
    }
    if prompt.is_empty() {
        return Err(ApiError::BadRequest {
            code: "empty_prompt",
            message: "The prompt is empty: write a question.".into(),
        });
    }
    if prompt.contains('\0') {
        return Err(ApiError::BadRequest {
            code: "bad_prompt",
            message: "The prompt cannot contain the NUL character.".into(),
        });
    }
    let chars = prompt.chars().count();
    if chars > max_chars as usize {
        return Err(ApiError::BadRequest {
            code: "prompt_too_long",
            message: format!(
                "The prompt is {chars} characters long; at most {max_chars} are accepted \
                 (TIDINGS_AI_PROMPT_MAX_CHARS)."
            ),
        });
    }
    Ok(prompt.to_string())
}

pub fn events_url(id: i64) -> String {
    format!("/api/assistant/chats/{id}/events")
}

pub fn summary_of(chat: &ChatRow, tokens: i64) -> ChatSummary {
    ChatSummary {
        id: chat.id,
        prompt: chat.prompt.clone(),
        status: ChatState::parse(&chat.status).unwrap_or(ChatState::Failed),
        tokens,
        created_at: clock::rfc3339(chat.created_at),
    }
}

/// A chat with the answer as stored now.
pub async fn view_of(store: &Store, chat: &ChatRow) -> Result<ChatView, ApiError> {
    let status = ChatState::parse(&chat.status).unwrap_or(ChatState::Failed);
    let mut tokens = store.chat_tokens_after(chat.id, 0, i64::MAX / 2).await?;
    if status.is_final() {
        tokens.retain(|t| t.0 <= chat.tokens);
    }
    let last_event_id = tokens.last().map_or(0, |t| t.0);
    let text: String = tokens.into_iter().map(|t| t.1).collect();
    Ok(ChatView {
        id: chat.id,
        prompt: chat.prompt.clone(),
        status,
        text,
        last_event_id,
        done: (status.is_final() && status != ChatState::Failed).then(|| runner::done_of(chat)),
        error: chat.error.clone(),
        events_url: events_url(chat.id),
    })
}

/// `POST /api/assistant/chats`: 201 `{"id","eventsUrl"}`.
async fn create(
    State(state): State<AppState>,
    Extension(assistant): Extension<Assistant>,
    user: CurrentUser,
    ApiJson(body): ApiJson<NewChat>,
) -> Result<Response, ApiError> {
    let prompt = check_prompt(&body, assistant.config().prompt_max_chars)?;
    let max = assistant.config().running_per_user;
    let chat = assistant
        .create(user.user_id, &prompt)
        .await?
        .map_err(|n| {
            ApiError::too_many(
                "too_many_answers",
                format!(
                    "You have {n} answers being written, the most one user may have \
                 (TIDINGS_AI_RUNNING_PER_USER is {max}); wait for one or stop it."
                ),
            )
        })?;
    state
        .store
        .audit(
            "ASSISTANT_ASK",
            &user.user.username,
            &serde_json::json!({"chatId": chat.id, "promptChars": prompt.chars().count()}),
            clock::now_ms(),
        )
        .await?;
    let created = ChatCreated {
        id: chat.id,
        events_url: events_url(chat.id),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `owner_id`'s newest `limit` chats; a running one counts the tokens stored so far.
pub async fn summaries(store: &Store, owner_id: i64, limit: i64) -> sqlx::Result<Vec<ChatSummary>> {
    let rows = store.chats_of(owner_id, limit).await?;
    let mut chats = Vec::with_capacity(rows.len());
    for chat in &rows {
        let tokens = if chat.status == ChatState::Running.as_str() {
            store.stored_tokens(chat.id).await?
        } else {
            chat.tokens
        };
        chats.push(summary_of(chat, tokens));
    }
    Ok(chats)
}

/// `GET /api/assistant/chats`: mine, newest first.
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<ChatList>, ApiError> {
    let chats = summaries(&state.store, user.user_id, LIST_LIMIT).await?;
    Ok(Json(ChatList { chats }))
}

/// The chat `id` names, if it is `user`'s; 404 otherwise (also for admins: prompts are
/// private).
async fn own_chat(store: &Store, user: &CurrentUser, id: &str) -> Result<ChatRow, ApiError> {
    let missing = || ApiError::NotFound(format!("There is no chat {id}."));
    let id: i64 = id.parse().map_err(|_| missing())?;
    let chat = store.chat(id).await?.ok_or_else(missing)?;
    if chat.owner_id == user.user_id {
        Ok(chat)
    } else {
        Err(missing())
    }
}

/// `GET /api/assistant/chats/{id}`: the chat and its answer so far.
async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<ChatView>, ApiError> {
    let chat = own_chat(&state.store, &user, &id).await?;
    Ok(Json(view_of(&state.store, &chat).await?))
}

/// `POST /api/assistant/chats/{id}/cancel`: 202 while it runs, 409 once it ended.
async fn cancel(
    State(state): State<AppState>,
    Extension(assistant): Extension<Assistant>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let chat = own_chat(&state.store, &user, &id).await?;
    match assistant.cancel(chat.id).await?.as_deref() {
        Some("running") => {
            let tokens = state.store.stored_tokens(chat.id).await?;
            Ok((StatusCode::ACCEPTED, Json(summary_of(&chat, tokens))).into_response())
        }
        Some(done) => Err(ApiError::Conflict {
            code: "chat_finished",
            message: format!("Chat {} has already ended ({done}).", chat.id),
        }),
        None => Err(ApiError::NotFound(format!("There is no chat {id}."))),
    }
}

/// Whether a reader that has event `after` has the chat's end (then there is nothing more).
fn has_end(chat: &ChatRow, after: i64) -> bool {
    ChatState::parse(&chat.status).is_some_and(ChatState::is_final) && after > chat.tokens
}

/// `GET /api/assistant/chats/{id}/events`: see the module docs.
async fn events(
    State(state): State<AppState>,
    user: StreamUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let after = sse::last_event_id(&headers, &query)?.unwrap_or(0);
    let chat = own_chat(&state.store, &user.0, &id).await?;
    if has_end(&chat, after) {
        // The client has the terminal event: 204 tells EventSource to stop reconnecting.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let produce = follow(&state, &chat, after);
    let options = SseOptions::for_stream(&state, &user.0, vec![topic(chat.id)])?;
    Ok(sse::stream(options, state.shutdown.clone(), produce))
}

/// The `assistant:<id>` topic of `GET /api/events`: the same stream (another user's chat is
/// refused as missing).
pub struct ChatTopic;

impl TopicKind for ChatTopic {
    fn name(&self) -> &'static str {
        "assistant"
    }

    fn problem(&self, arg: Option<&str>) -> Option<String> {
        topics::id_problem(arg, "assistant", "chat")
    }

    fn open<'a>(
        &'a self,
        state: &'a AppState,
        user: &'a CurrentUser,
        arg: Option<&'a str>,
        after: Option<i64>,
    ) -> BoxFuture<'a, Result<Producer, ApiError>> {
        Box::pin(async move {
            let chat = own_chat(&state.store, user, arg.unwrap_or_default()).await?;
            let after = after.unwrap_or(0);
            if has_end(&chat, after) {
                return Ok(Box::new(|_tx| Box::pin(async {}) as BoxFuture<'static, ()>) as Producer);
            }
            Ok(follow(state, &chat, after))
        })
    }
}

/// Subscribes to the chat's events and returns the producer that sends those after `after`.
fn follow(state: &AppState, chat: &ChatRow, after: i64) -> Producer {
    // Subscribe before reading anything: nothing published in between is missed.
    let subscription = state.bus.subscribe(&topic(chat.id));
    let store = state.store.clone();
    let chat_id = chat.id;
    Box::new(move |tx: sse::Sender| {
        Box::pin(async move {
            let mut subscription = subscription;
            let mut last = after;
            if catch_up(&store, &tx, chat_id, &mut last, None).await != Ok(false) {
                return;
            }
            loop {
                let received = tokio::select! {
                    r = subscription.recv() => r,
                    _ = tx.gone() => return,
                };
                match received {
                    // An end at or before what was sent: the chat was ended by another
                    // instance's sweep after its own died with tokens published but never
                    // stored. Send the stored end.
                    Received::Message(m) if m.kind != TOKEN && m.id <= last => {
                        let _ = catch_up(&store, &tx, chat_id, &mut last, None).await;
                        return;
                    }
                    Received::Message(m) if m.id <= last => {}
                    Received::Message(m) => {
                        if m.id > last + 1 {
                            // Published before it was stored: read the hole back.
                            match catch_up(&store, &tx, chat_id, &mut last, Some(m.id - 1)).await {
                                Ok(false) => {}
                                _ => return,
                            }
                            if m.id <= last {
                                continue;
                            }
                        }
                        let terminal = m.kind != TOKEN;
                        let event = Event::new(m.text()).id(m.id).name(&m.kind);
                        if tx.send(&event).await.is_err() || terminal {
                            return;
                        }
                        last = m.id;
                    }
                    Received::Lagged(_) => {
                        if catch_up(&store, &tx, chat_id, &mut last, None).await != Ok(false) {
                            return;
                        }
                    }
                    Received::Closed => return,
                }
            }
        }) as BoxFuture<'static, ()>
    })
}

/// Sends the stored tokens after `*last`, and the end if the chat has ended. With `until`,
/// waits for the writer to store tokens up to that id first, or for the chat to end (if
/// their instance died, the lease sweep ends it with what was stored, and that end is
/// sent): a token is never skipped. `Ok(true)`: the end went out; `Err`: the client left
/// or the database failed.
async fn catch_up(
    store: &Store,
    tx: &sse::Sender,
    chat_id: i64,
    last: &mut i64,
    until: Option<i64>,
) -> Result<bool, ()> {
    let fail =
        |e: sqlx::Error| tracing::warn!(error = %e, chat = chat_id, "replaying an answer failed");
    loop {
        // The chat first: if it ended, every token is stored. Its count is the last token
        // (one stored late, after another instance's sweep ended the chat, is not sent).
        let chat = store.chat(chat_id).await.map_err(fail)?.ok_or(())?;
        let ended = ChatState::parse(&chat.status).is_some_and(ChatState::is_final);
        let cap = if ended { chat.tokens } else { i64::MAX };
        'pages: loop {
            let page = store
                .chat_tokens_after(chat_id, *last, REPLAY_PAGE)
                .await
                .map_err(fail)?;
            if page.is_empty() {
                break;
            }
            for (id, text) in page {
                if id > cap {
                    break 'pages;
                }
                let data = serde_json::to_string(&TokenData { text }).unwrap_or_default();
                tx.send(&Event::new(data).id(id).name(TOKEN))
                    .await
                    .map_err(|_| ())?;
                *last = id;
            }
        }
        if ended {
            let (name, data) = terminal_of(&chat);
            *last = chat.tokens + 1;
            tx.send(&Event::new(data).id(*last).name(name))
                .await
                .map_err(|_| ())?;
            return Ok(true);
        }
        match until {
            Some(until) if *last < until => {
                tokio::select! {
                    _ = tokio::time::sleep(runner::FLUSH_EVERY / 2) => {}
                    _ = tx.gone() => return Err(()),
                }
            }
            _ => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_checked_with_a_sentence() {
        let ask = |p: Option<&str>| {
            check_prompt(
                &NewChat {
                    prompt: p.map(str::to_string),
                },
                10,
            )
        };
        assert_eq!(ask(Some("  why?  ")).unwrap(), "why?");
        for (p, code) in [
            (None, "missing_prompt"),
            (Some("   "), "empty_prompt"),
            (Some("eleven char"), "prompt_too_long"),
        ] {
            match ask(p) {
                Err(ApiError::BadRequest { code: c, message }) => {
                    assert_eq!(c, code);
                    assert!(
                        message.ends_with('.') || message.ends_with(')'),
                        "{message}"
                    );
                }
                other => panic!("{p:?}: {other:?}"),
            }
        }
        // Ten characters are fine, counted as characters, not bytes.
        assert!(ask(Some("éééééééééé")).is_ok());
    }
}
