//! `/dashboard`: the numbers, plots of the last five minutes and (for admins) the server's log.
//!
//! The page holds one event stream (`client::open`); every second's sample is added to a
//! bounded history ([`HISTORY`] samples) that the plots draw as SVG polylines, and log records
//! to a bounded list ([`LOG_LINES`]), so a dashboard left open for hours holds flat memory.
//! The status line says whether the stream is live, reconnecting (the browser retries by
//! itself) or closed (refused: the page opens a new stream after [`REOPEN_MS`]).
//!
//! Tests: unit tests of the plot geometry below; `end2end/tests/dashboard.spec.ts`.

use std::{collections::VecDeque, sync::Arc};

use leptos::{html, prelude::*};
use send_wrapper::SendWrapper;

use super::{client, dashboard_page, DashboardSnapshot};
use crate::{
    events::{EventStream, LinkState},
    protocol::{
        chat::clock_of,
        metrics::{LogLevel, LogRecord, Metrics},
    },
};

/// Samples kept and drawn: five minutes at one a second.
pub const HISTORY: usize = 300;
/// Log records kept on the page (and held while paused).
pub const LOG_LINES: usize = 500;
/// Records arriving together are drawn together, this long after the first.
const DRAW_MS: u64 = 100;
/// How long after a refused stream the page tries a new one.
const REOPEN_MS: u64 = 5_000;
/// How long a reconnect may take before the page says it is disconnected (the server ends
/// every stream now and then, and the browser is back within a second).
const QUIET_RECONNECT_MS: u64 = 2_000;
/// The plots' drawing box.
const PLOT_W: f64 = 300.0;
const PLOT_H: f64 = 80.0;

/// `/dashboard`.
#[component]
pub fn DashboardPage() -> impl IntoView {
    let snapshot = Resource::new(|| (), |_| dashboard_page());
    view! {
        <section class="card dash-intro">
            <h1>"Live dashboard"</h1>
            <p class="transport">
                "Server-Sent Events: the server pushes a sample every second down one long "
                "response (admins get the server's log as a second event name on the same "
                "stream), and the browser reconnects by itself. Nothing goes back, so no WebSocket."
            </p>
        </section>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || snapshot.get().map(|s| match s {
                Ok(s) if s.signed_in => {
                    // Each part erased on its own: one nested view type too deep for the
                    // release build's layout queries otherwise.
                    let admin = s.admin;
                    let live = view! { <Dashboard snapshot=s/> }.into_any();
                    let connections = admin.then(|| view! { <Connections/> }.into_any());
                    let keys = admin.then(|| view! { <ApiKeys/> }.into_any());
                    view! { {live} {connections} {keys} }.into_any()
                }
                Ok(_) => view! {
                    <p class="card" data-testid="dash-signin">
                        <a href="/login">"Sign in"</a> " to watch the server's metrics."
                    </p>
                }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}

/// How often the admin's connection table is read again.
const CONNECTIONS_REFRESH_MS: u64 = 3_000;

/// The admin's table of live connections on every instance, each user with a Disconnect
/// button (signs them out everywhere and closes their sockets and streams at once).
#[component]
fn Connections() -> impl IntoView {
    use crate::{
        fetch::{get_json, send, Method},
        protocol::chat::ConnectionList,
    };
    let rows = RwSignal::new(Vec::new());
    let problem = RwSignal::new(None::<String>);
    let done = RwSignal::new(None::<String>);
    let load = move || {
        leptos::task::spawn_local(async move {
            let got = get_json::<ConnectionList>("/api/admin/connections").await;
            if rows.is_disposed() {
                return;
            }
            match got {
                Ok(list) => {
                    rows.set(list.connections);
                    problem.set(None);
                }
                Err(e) => problem.set(Some(e)),
            }
        });
    };
    Effect::new(move |_| {
        load();
        if let Ok(handle) = set_interval_with_handle(
            load,
            std::time::Duration::from_millis(CONNECTIONS_REFRESH_MS),
        ) {
            on_cleanup(move || handle.clear());
        }
    });
    let disconnect = move |who: String| {
        leptos::task::spawn_local(async move {
            let url = format!("/api/admin/users/{who}/disconnect");
            let result = send::<()>(Method::Post, &url, None).await;
            if rows.is_disposed() {
                return;
            }
            match result {
                Ok(()) => {
                    done.set(Some(format!(
                        "{who} was signed out and disconnected everywhere."
                    )));
                    load();
                }
                Err(e) => problem.set(Some(e)),
            }
        });
    };
    view! {
        <section class="card wide" data-testid="connections">
            <h2>"Who is connected"</h2>
            <p class="hint">"Every WebSocket and event stream, on every instance; refreshed every few seconds."</p>
            {move || problem.get().map(|p| view! { <p class="error" role="alert">{p}</p> })}
            {move || done.get().map(|d| view! { <p class="ok" role="status" data-testid="disconnected">{d}</p> })}
            <table class="connections">
                <thead><tr><th>"User"</th><th>"Transport"</th><th>"Instance"</th><th>"Since"</th><th>"Following"</th><th></th></tr></thead>
                <tbody>
                    {move || rows.get().into_iter().map(|c: crate::protocol::chat::ConnectionView| {
                        let who = c.username.clone();
                        view! {
                            <tr data-user=c.username.clone() data-transport=c.transport.clone()>
                                <td>{c.username.clone()}</td>
                                <td>{c.transport.clone()}</td>
                                <td><code>{c.instance.clone()}</code></td>
                                <td><time datetime=c.since.clone()>{clock_of(&c.since).to_string()}</time></td>
                                <td>{c.topics.join(", ")}</td>
                                <td><button type="button" data-testid="disconnect"
                                    aria-label=format!("Disconnect {}", c.username)
                                    on:click=move |_| disconnect(who.clone())>"Disconnect"</button></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

/// The admin's API keys for other servers: make one (shown once, to copy), see when each was
/// last used, revoke one (refused at once on every instance).
#[component]
fn ApiKeys() -> impl IntoView {
    use crate::{
        fetch::{get_json, post_json, send, Method},
        protocol::keys::{key_name_problem, CreateKey, CreatedKey, KeyInfo, KeyList},
    };
    let keys = RwSignal::new(Vec::<KeyInfo>::new());
    let problem = RwSignal::new(None::<String>);
    let made = RwSignal::new(None::<CreatedKey>);
    let name = RwSignal::new(String::new());
    let load = move || {
        leptos::task::spawn_local(async move {
            let got = get_json::<KeyList>("/api/keys").await;
            if keys.is_disposed() {
                return;
            }
            match got {
                Ok(list) => keys.set(list.keys),
                Err(e) => problem.set(Some(e)),
            }
        });
    };
    Effect::new(move |_| load());
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let wanted = name.get_untracked().trim().to_string();
        if let Some(why) = key_name_problem(&wanted) {
            problem.set(Some(why));
            return;
        }
        leptos::task::spawn_local(async move {
            let result = post_json::<_, CreatedKey>("/api/keys", &CreateKey { name: wanted }).await;
            if keys.is_disposed() {
                return;
            }
            match result {
                Ok(key) => {
                    made.set(Some(key));
                    name.set(String::new());
                    problem.set(None);
                    load();
                }
                Err(e) => problem.set(Some(e)),
            }
        });
    };
    let revoke = move |id: String| {
        leptos::task::spawn_local(async move {
            let result = send::<()>(Method::Delete, &format!("/api/keys/{id}"), None).await;
            if keys.is_disposed() {
                return;
            }
            match result {
                Ok(()) => {
                    if made.get_untracked().is_some_and(|k| k.id == id) {
                        made.set(None);
                    }
                    load();
                }
                Err(e) => problem.set(Some(e)),
            }
        });
    };
    view! {
        <section class="card wide" data-testid="api-keys">
            <h2>"API keys"</h2>
            <p class="hint">"For other servers (a deploy script, a billing service): "
                <code>"Authorization: Bearer <key>"</code>" posts to rooms and sends notifications, nothing else."</p>
            <form class="inline" on:submit=create data-testid="new-key-form">
                <input name="name" placeholder="deploy-bot" aria-label="Key name" maxlength="32" bind:value=name/>
                <button type="submit">"Make a key"</button>
            </form>
            {move || problem.get().map(|p| view! { <p class="error" role="alert">{p}</p> })}
            {move || made.get().map(|k| view! {
                <p class="ok" role="status">"Key " <strong>{k.name.clone()}</strong>
                    " made. It is shown only now; copy it: " <code data-testid="new-key">{k.key.clone()}</code></p>
            })}
            <table class="keys">
                <thead><tr><th>"Name"</th><th>"Made"</th><th>"By"</th><th>"Last used"</th><th></th></tr></thead>
                <tbody>
                    {move || keys.get().into_iter().map(|k| {
                        let id = k.id.clone();
                        view! {
                            <tr data-key=k.name.clone()>
                                <td>{k.name.clone()}</td>
                                <td><time datetime=k.created_at.clone()>{clock_of(&k.created_at).to_string()}</time></td>
                                <td>{k.created_by.clone()}</td>
                                <td>{k.last_used_at.as_deref().map_or("never".to_string(), |t| clock_of(t).to_string())}</td>
                                <td><button type="button" data-testid="revoke-key"
                                    aria-label=format!("Revoke {}", k.name)
                                    on:click=move |_| revoke(id.clone())>"Revoke"</button></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

/// The live part, for a signed-in user.
#[component]
fn Dashboard(snapshot: DashboardSnapshot) -> impl IntoView {
    let admin = snapshot.admin;
    let history = RwSignal::new(snapshot.metrics.into_iter().collect::<VecDeque<Metrics>>());
    let link = RwSignal::new(LinkState::Connecting);
    // Records as `Arc`s: the list is cloned for each redraw, its records are not.
    let logs = RwSignal::new(VecDeque::<Arc<LogRecord>>::new());
    let held = RwSignal::new(VecDeque::<Arc<LogRecord>>::new());
    // Records that came since the last redraw: a replay of hundreds is drawn once, not
    // hundreds of times.
    let incoming = StoredValue::new(Vec::<Arc<LogRecord>>::new());
    let flush_due = StoredValue::new(false);
    // The epoch of the log the records come from (a new one: the server restarted).
    let epoch = StoredValue::new(None::<i64>);
    let missed = RwSignal::new(0u64);
    let paused = RwSignal::new(false);
    let follow = RwSignal::new(true);
    let level = RwSignal::new(LogLevel::Info);
    // Bumped to open a new stream after a refusal.
    let reopen = RwSignal::new(0u32);
    // Bumped whenever the stream opens or closes (a reconnect's timer checks it).
    let link_changes = RwSignal::new(0u32);
    let stream = StoredValue::new(None::<SendWrapper<Vec<EventStream>>>);
    let log_box = NodeRef::<html::Ol>::new();

    let on_news = move |news: client::News| {
        if history.is_disposed() {
            return;
        }
        match news {
            client::News::Metrics(m) => history.update(|h| {
                // A reconnected stream starts with the newest sample, maybe one already here.
                if h.back().is_some_and(|last| last.at == m.at) {
                    return;
                }
                h.push_back(m);
                while h.len() > HISTORY {
                    h.pop_front();
                }
            }),
            client::News::Log(record) => {
                incoming.update_value(|v| v.push(Arc::new(record)));
                if !flush_due.get_value() {
                    flush_due.set_value(true);
                    set_timeout(
                        move || {
                            if logs.is_disposed() {
                                return;
                            }
                            flush_due.set_value(false);
                            let records = incoming
                                .try_update_value(std::mem::take)
                                .unwrap_or_default();
                            let paused = paused.get_untracked();
                            let dropped = keep_latest(if paused { held } else { logs }, records);
                            if paused && dropped > 0 {
                                missed.update(|n| *n += dropped);
                            }
                        },
                        std::time::Duration::from_millis(DRAW_MS),
                    );
                }
            }
            client::News::Ready(ready) => {
                // Another epoch: the server restarted and its ids mean something else; start
                // the tail afresh.
                let before = epoch.get_value();
                epoch.set_value(Some(ready.epoch));
                if before.is_some_and(|e| e != ready.epoch) {
                    reopen.update(|n| *n += 1);
                }
            }
            client::News::Gap(gap) => missed.update(|n| {
                *n += gap.first_available_id.saturating_sub(gap.after_id + 1);
            }),
            client::News::Link(state @ (LinkState::Connecting | LinkState::Reconnecting(_))) => {
                // Said only if the reconnect takes a while.
                let seen = link_changes.get_untracked();
                set_timeout(
                    move || {
                        if !link.is_disposed() && link_changes.get_untracked() == seen {
                            link.set(state);
                        }
                    },
                    std::time::Duration::from_millis(QUIET_RECONNECT_MS),
                );
            }
            client::News::Link(state) => {
                link_changes.update(|n| *n += 1);
                link.set(state);
                if state == LinkState::Closed {
                    set_timeout(
                        move || {
                            if !reopen.is_disposed() {
                                reopen.update(|n| *n += 1);
                            }
                        },
                        std::time::Duration::from_millis(REOPEN_MS),
                    );
                }
            }
        }
    };
    // (Re)opens the stream: at first, when the admin picks another level, after a refusal.
    Effect::new(move |_| {
        reopen.track();
        let logs_at = admin.then(|| level.get());
        stream.set_value(None);
        if admin {
            logs.set(VecDeque::new());
            held.set(VecDeque::new());
            incoming.set_value(Vec::new());
            missed.set(0);
        }
        // The link's state is left as it is: the new stream's `open` says when it is live.
        match client::open(logs_at, on_news) {
            Ok(s) => stream.set_value(Some(SendWrapper::new(s))),
            Err(_) => link.set(LinkState::Closed),
        }
    });
    on_cleanup(move || stream.set_value(None));
    // Keeps the newest record in view while following.
    Effect::new(move |_| {
        logs.track();
        if follow.get() {
            if let Some(list) = log_box.get() {
                list.set_scroll_top(list.scroll_height());
            }
        }
    });

    let latest = move || history.with(|h| h.back().cloned()).unwrap_or_default();
    let status = move || match link.get() {
        LinkState::Open => ("live", "Live: a sample every second."),
        LinkState::Connecting => ("connecting", "Connecting…"),
        // A first stream that drops before it ever opened is still connecting.
        LinkState::Reconnecting(_) if link_changes.get() == 0 => ("connecting", "Connecting…"),
        LinkState::Reconnecting(_) => ("reconnecting", "Disconnected: reconnecting…"),
        LinkState::Closed => (
            "closed",
            "Disconnected: the server refused the stream; trying again shortly.",
        ),
    };
    let resume = move |_| {
        paused.set(false);
        let waiting = held.try_update(std::mem::take).unwrap_or_default();
        keep_latest(logs, waiting.into_iter().collect());
    };

    view! {
        <section class="card dash">
            <p class="conn-status" data-testid="dash-status" data-state=move || status().0>
                {move || status().1}
            </p>
            <dl class="stats" data-testid="dash-numbers">
                <Number label="WebSockets" id="websocket" value=move || latest().connections.websocket.to_string()/>
                <Number label="SSE streams" id="sse" value=move || latest().connections.sse.to_string()/>
                <Number label="HTTP streams" id="streams" value=move || latest().connections.streams.to_string()/>
                <Number label="Messages/s" id="messages" value=move || format!("{:.1}", latest().messages_per_second)/>
                <Number label="Jobs queued" id="queued" value=move || latest().jobs.queued.to_string()/>
                <Number label="Jobs running" id="running" value=move || latest().jobs.running.to_string()/>
                <Number label="Rows exported" id="rows" value=move || latest().rows_exported.to_string()/>
                <Number label="Memory" id="rss" value=move || megabytes(latest().rss_bytes)/>
                <Number label="Slow-client drops" id="drops" value=move || latest().slow_clients.queue_drops.to_string()/>
                <Number label="Slow disconnects" id="disconnects" value=move || latest().slow_clients.disconnects.to_string()/>
                <Number label="Up" id="uptime" value=move || duration(latest().uptime_seconds)/>
            </dl>
            <div class="plots">
                <Plot title="Connections" id="connections" history=history
                    series=vec![
                        Series { label: "WebSocket", class: "s1", value: |m| m.connections.websocket as f64 },
                        Series { label: "SSE", class: "s2", value: |m| m.connections.sse as f64 },
                        Series { label: "HTTP streams", class: "s3", value: |m| m.connections.streams as f64 },
                    ]/>
                <Plot title="Messages per second" id="messages" history=history
                    series=vec![
                        Series { label: "chat + notifications", class: "s1", value: |m| m.messages_per_second },
                    ]/>
                <Plot title="Jobs" id="jobs" history=history
                    series=vec![
                        Series { label: "queued", class: "s2", value: |m| m.jobs.queued as f64 },
                        Series { label: "running", class: "s1", value: |m| m.jobs.running as f64 },
                    ]/>
                <Plot title="Memory (MB)" id="memory" history=history
                    series=vec![
                        Series { label: "resident", class: "s3", value: |m| m.rss_bytes as f64 / 1_048_576.0 },
                    ]/>
            </div>
        </section>
        <section class="card dash-log">
            <h2>"Server log"</h2>
            {if admin {
                view! {
                    <div class="log-controls">
                        <label>"Level"
                            <select data-testid="log-level"
                                on:change=move |ev| {
                                    if let Some(l) = LogLevel::parse(&event_target_value(&ev)) {
                                        level.set(l);
                                    }
                                }>
                                {LogLevel::ALL.iter().map(|l| view! {
                                    <option value=l.as_str() selected=*l == LogLevel::Info>{l.as_str()}</option>
                                }).collect_view()}
                            </select>
                        </label>
                        <button type="button" data-testid="log-pause"
                            on:click=move |ev| if paused.get_untracked() { resume(ev) } else { paused.set(true) }>
                            {move || if paused.get() {
                                format!("Resume ({} new)", held.with(|h| h.len()))
                            } else {
                                "Pause".to_string()
                            }}
                        </button>
                        <label class="inline">
                            <input type="checkbox" data-testid="log-follow"
                                prop:checked=move || follow.get()
                                on:change=move |ev| follow.set(event_target_checked(&ev))/>
                            "Auto-scroll"
                        </label>
                        <span class="note" data-testid="log-missed" hidden=move || missed.get() == 0>
                            {move || format!("{} records were not shown (too many at once).", missed.get())}
                        </span>
                    </div>
                    <ol class="log-tail" data-testid="log-tail" node_ref=log_box>
                        <For each=move || logs.get() key=|r| r.id let:r>
                            <LogLine record=r/>
                        </For>
                    </ol>
                }.into_any()
            } else {
                view! {
                    <p data-testid="log-admins-only">"The server's log is for admins."</p>
                }.into_any()
            }}
        </section>
    }
}

/// Appends `records` to `list`, keeping the latest [`LOG_LINES`]; returns how many fell off.
fn keep_latest(list: RwSignal<VecDeque<Arc<LogRecord>>>, records: Vec<Arc<LogRecord>>) -> u64 {
    if records.is_empty() {
        return 0;
    }
    let mut dropped = 0;
    list.update(|l| {
        l.extend(records);
        while l.len() > LOG_LINES {
            l.pop_front();
            dropped += 1;
        }
    });
    dropped
}

/// One figure in the numbers grid.
#[component]
fn Number(
    label: &'static str,
    id: &'static str,
    value: impl Fn() -> String + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        <div data-testid=format!("num-{id}")>
            <dt>{label}</dt>
            <dd>{value}</dd>
        </div>
    }
}

/// One log record.
#[component]
fn LogLine(record: Arc<LogRecord>) -> impl IntoView {
    let fields = record
        .fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    view! {
        <li class="log-line" data-level=record.level.as_str() data-id=record.id.to_string()>
            <time>{clock_of(&record.at).to_string()}</time>
            <span class="level">{record.level.as_str()}</span>
            <span class="target">{record.target.clone()}</span>
            <span class="message">{record.message.clone()}</span>
            <span class="fields">{fields}</span>
        </li>
    }
}

/// One line of a plot.
#[derive(Clone, Copy)]
pub struct Series {
    pub label: &'static str,
    /// The CSS class that colours it (`s1`, `s2`, `s3`).
    pub class: &'static str,
    pub value: fn(&Metrics) -> f64,
}

/// A plot of `series` over the history, newest at the right edge.
#[component]
fn Plot(
    title: &'static str,
    id: &'static str,
    history: RwSignal<VecDeque<Metrics>>,
    series: Vec<Series>,
) -> impl IntoView {
    let lines = series.clone();
    let top = move || {
        history.with(|h| {
            nice_max(
                h.iter()
                    .flat_map(|m| lines.iter().map(move |s| (s.value)(m)))
                    .fold(0.0, f64::max),
            )
        })
    };
    let top = Memo::new(move |_| top());
    view! {
        <figure class="plot" data-testid=format!("plot-{id}")>
            <figcaption>
                <strong>{title}</strong>
                <span class="legend">
                    {series.iter().map(|s| {
                        let s = *s;
                        view! {
                            <span class=format!("key {}", s.class)
                                data-testid=format!("plot-{id}-{}", s.class)
                                data-last=move || history.with(|h| h.back().map(|m| format_value((s.value)(m))).unwrap_or_default())>
                                {s.label} " " {move || history.with(|h| h.back().map(|m| format_value((s.value)(m))).unwrap_or_default())}
                            </span>
                        }
                    }).collect_view()}
                </span>
            </figcaption>
            <svg viewBox=format!("0 0 {PLOT_W} {PLOT_H}") preserveAspectRatio="none" role="img"
                aria-label=title data-points=move || history.with(|h| h.len()).to_string()>
                <line class="axis" x1="0" y1=PLOT_H x2=PLOT_W y2=PLOT_H/>
                <line class="grid" x1="0" y1=PLOT_H / 2.0 x2=PLOT_W y2=PLOT_H / 2.0/>
                {series.iter().map(|s| {
                    let s = *s;
                    view! {
                        <polyline class=format!("line {}", s.class) fill="none"
                            points=move || history.with(|h| {
                                let values: Vec<f64> = h.iter().map(|m| (s.value)(m)).collect();
                                points(&values, top.get(), HISTORY)
                            })/>
                    }
                }).collect_view()}
            </svg>
            <div class="scale"><span>{move || format_value(top.get())}</span><span>"5 min"</span></div>
        </figure>
    }
}

/// The SVG `points` of `values` (oldest first) in a `slots`-wide window whose right edge is
/// the newest value, scaled so `top` is the top of the box.
pub fn points(values: &[f64], top: f64, slots: usize) -> String {
    let slots = slots.max(2);
    let shown = &values[values.len().saturating_sub(slots)..];
    let step = PLOT_W / (slots - 1) as f64;
    let start = (slots - shown.len()) as f64 * step;
    let top = if top > 0.0 { top } else { 1.0 };
    let mut out = String::with_capacity(shown.len() * 12);
    for (i, v) in shown.iter().enumerate() {
        let x = start + i as f64 * step;
        let y = PLOT_H - (v.clamp(0.0, top) / top) * PLOT_H;
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{x:.1},{y:.1}"));
    }
    out
}

/// A round number at or above `max` for the top of a plot (1, 2, 5 × a power of ten).
pub fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * power >= max {
            return m * power;
        }
    }
    10.0 * power
}

/// A value as the plots show it: whole numbers plainly, others with one decimal.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_048_576.0)
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_put_the_newest_value_at_the_right_edge() {
        assert_eq!(
            points(&[0.0, 5.0, 10.0], 10.0, 3),
            "0.0,80.0 150.0,40.0 300.0,0.0"
        );
        // Fewer values than slots: they sit at the right.
        assert_eq!(points(&[10.0], 10.0, 3), "300.0,0.0");
        // More values than slots: only the newest are drawn.
        let many: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(points(&many, 9.0, 2), "0.0,8.9 300.0,0.0");
        // Out-of-range values stay in the box; a zero top does not divide by zero.
        assert_eq!(points(&[-1.0, 20.0], 10.0, 2), "0.0,80.0 300.0,0.0");
        assert_eq!(points(&[0.0], 0.0, 2), "300.0,80.0");
        assert_eq!(points(&[], 10.0, 300), "");
    }

    #[test]
    fn plot_tops_are_round_numbers() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.3), 0.5);
        assert_eq!(nice_max(1.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(7.5), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(2.26), "2.3");
        assert_eq!(megabytes(3 * 1_048_576), "3.0 MB");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(61), "1 min 1 s");
        assert_eq!(duration(7322), "2 h 2 min");
    }
}
