//! `/export`: the live export viewer.
//!
//! Filters and batch/delay controls build an [`ExportQuery`]. **Start** asks for the count
//! (for the progress bar), then streams the export with `fetch`; rows appear as chunks
//! arrive. The page keeps only the latest [`WINDOW`] rows for the table and counts all of
//! them, so it stays responsive with a million. **Stop** aborts the fetch (the server sees
//! the disconnect and stops reading). After a stop or a drop, **Resume** continues with
//! `after=<last id>` and the rest of the limit: no gap, no duplicate. The download link gives
//! the same export as a file (NDJSON or CSV), straight from the server.
//!
//! Tests: `end2end/tests/export.spec.ts` (start, stop, resume, rows before the end, download).

use std::collections::VecDeque;

use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use send_wrapper::SendWrapper;

use super::client::{self, ShownRow, StreamEnd, WINDOW};
use crate::protocol::{
    audit::{AUDIT_ACTIONS, BATCH_DEFAULT},
    ExportFormat, ExportQuery,
};

/// Where the viewer is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Idle,
    Counting,
    Streaming,
    Stopped,
    Dropped(String),
    Complete,
    Failed(String),
}

impl Status {
    fn label(&self) -> String {
        match self {
            Self::Idle => "Ready.".into(),
            Self::Counting => "Counting the rows…".into(),
            Self::Streaming => "Streaming…".into(),
            Self::Stopped => "Stopped. Resume continues from the last row received.".into(),
            Self::Dropped(why) => format!(
                "The connection dropped ({why}) Resume continues from the last row received."
            ),
            Self::Complete => {
                "Complete: every row arrived, and the server's trailer agrees.".into()
            }
            Self::Failed(why) => why.clone(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Counting => "counting",
            Self::Streaming => "streaming",
            Self::Stopped => "stopped",
            Self::Dropped(_) => "dropped",
            Self::Complete => "complete",
            Self::Failed(_) => "failed",
        }
    }

    fn running(&self) -> bool {
        matches!(self, Self::Counting | Self::Streaming)
    }

    fn resumable(&self) -> bool {
        matches!(self, Self::Stopped | Self::Dropped(_))
    }
}

/// The form's fields, as typed.
#[derive(Clone, Copy)]
struct Form {
    action: RwSignal<String>,
    user: RwSignal<String>,
    since: RwSignal<String>,
    until: RwSignal<String>,
    after: RwSignal<String>,
    limit: RwSignal<String>,
    batch: RwSignal<String>,
    delay: RwSignal<String>,
    format: RwSignal<String>,
}

/// A number field: `None` when empty, an error naming it when it is not a number.
fn field<T: std::str::FromStr>(name: &str, value: &str) -> Result<Option<T>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("`{name}` must be a whole number, not {value:?}."))
}

fn text(value: String) -> Option<String> {
    let value = value.trim().to_string();
    (!value.is_empty()).then_some(value)
}

impl Form {
    /// The query the fields describe, each read with `read` (tracked or not); a field that is
    /// not a number is an error naming it.
    fn query_with(&self, read: fn(&RwSignal<String>) -> String) -> Result<ExportQuery, String> {
        Ok(ExportQuery {
            after: field("after", &read(&self.after))?.unwrap_or(0),
            limit: field("limit", &read(&self.limit))?,
            batch: field("batch", &read(&self.batch))?,
            delay_ms: field("delayMs", &read(&self.delay))?,
            action: text(read(&self.action)),
            user: text(read(&self.user)),
            since: text(read(&self.since)),
            until: text(read(&self.until)),
            ..Default::default()
        })
    }

    /// The query Start streams (NDJSON with its trailer).
    fn query(&self) -> Result<ExportQuery, String> {
        let query = self.query_with(|s| s.get_untracked())?;
        Ok(ExportQuery {
            trailer: true,
            ..query
        })
    }

    /// The download link's URL for the current fields (tracked, so the link follows them);
    /// `#` while a number field holds something else.
    fn download_href(&self) -> String {
        let format = match self.format.get().as_str() {
            "csv" => ExportFormat::Csv,
            _ => ExportFormat::Ndjson,
        };
        match self.query_with(|s| s.get()) {
            Ok(query) => {
                let query = ExportQuery {
                    format,
                    download: true,
                    delay_ms: None,
                    ..query
                };
                format!("/api/audit/export?{}", query.to_query_string())
            }
            Err(_) => "#".into(),
        }
    }
}

/// The export viewer page.
#[component]
pub fn ExportPage() -> impl IntoView {
    let session = crate::auth::Session::expect();
    // Start stays off until the browser knows an admin is signed in (read in an effect: the
    // session is a resource).
    let is_admin = RwSignal::new(false);
    Effect::new(move |_| is_admin.set(session.user().is_some_and(|u| u.is_admin())));
    let form = Form {
        action: RwSignal::new(String::new()),
        user: RwSignal::new(String::new()),
        since: RwSignal::new(String::new()),
        until: RwSignal::new(String::new()),
        after: RwSignal::new(String::new()),
        limit: RwSignal::new(String::new()),
        batch: RwSignal::new(BATCH_DEFAULT.to_string()),
        delay: RwSignal::new("0".to_string()),
        format: RwSignal::new("ndjson".to_string()),
    };
    let status = RwSignal::new(Status::Idle);
    let total = RwSignal::new(None::<u64>);
    let received = RwSignal::new(0u64);
    let bytes = RwSignal::new(0u64);
    let last_id = RwSignal::new(0i64);
    let resumes = RwSignal::new(0u32);
    let elapsed_ms = RwSignal::new(0f64);
    let rows = RwSignal::new(VecDeque::<ShownRow>::new());
    // The query Start began with; Resume continues it.
    let base = StoredValue::new(ExportQuery::default());
    // Time spent streaming before the current run, and when the current run began.
    let clock = StoredValue::new((0f64, 0f64));
    // The running fetch's controller. Browser objects live on one thread, so it is wrapped; the
    // value stays `None` on the server, where the page is rendered on any thread.
    let controller = StoredValue::new(None::<SendWrapper<web_sys::AbortController>>);

    let run = move |resume: bool| {
        spawn_local(async move {
            if !resume {
                status.set(Status::Counting);
                match client::count(&base.get_value()).await {
                    Ok(c) => total.set(Some(c.count)),
                    Err(why) => {
                        status.set(Status::Failed(why));
                        return;
                    }
                }
            }
            let Ok(abort) = web_sys::AbortController::new() else {
                status.set(Status::Failed("This browser cannot stop a fetch.".into()));
                return;
            };
            let signal = abort.signal();
            controller.set_value(Some(SendWrapper::new(abort)));
            let mut query = base.get_value();
            let start_id = last_id.get_untracked();
            query.after = start_id;
            query.limit = query
                .limit
                .map(|l| l.saturating_sub(received.get_untracked()));
            clock.update_value(|c| c.1 = js_sys::Date::now());
            status.set(Status::Streaming);
            // The table is repainted at most ten times a second, however fast chunks come.
            let mut window = rows.get_untracked();
            let mut painted = 0f64;
            let end = client::stream(&query, &signal, start_id, |chunk| {
                received.update(|n| *n += chunk.rows);
                bytes.update(|n| *n += chunk.bytes);
                last_id.set(chunk.last_id);
                let now = js_sys::Date::now();
                let (before, since) = clock.get_value();
                elapsed_ms.set(before + now - since);
                window.extend(chunk.shown);
                while window.len() > WINDOW {
                    window.pop_front();
                }
                if now - painted >= 100.0 {
                    painted = now;
                    rows.set(window.clone());
                }
            })
            .await;
            rows.set(window);
            controller.set_value(None);
            clock.update_value(|c| c.0 += js_sys::Date::now() - c.1);
            elapsed_ms.set(clock.get_value().0);
            status.set(match end {
                StreamEnd::Complete(_) => Status::Complete,
                StreamEnd::Aborted => Status::Stopped,
                StreamEnd::Dropped(why) => Status::Dropped(why),
                StreamEnd::Failed(why) => Status::Failed(why),
            });
        });
    };

    let on_start = move |ev: SubmitEvent| {
        ev.prevent_default();
        if status.get_untracked().running() {
            return;
        }
        match form.query() {
            Ok(query) => {
                received.set(0);
                bytes.set(0);
                resumes.set(0);
                elapsed_ms.set(0.0);
                total.set(None);
                rows.set(VecDeque::new());
                clock.set_value((0.0, 0.0));
                last_id.set(query.after);
                base.set_value(query);
                run(false);
            }
            Err(why) => status.set(Status::Failed(why)),
        }
    };
    let on_stop = move |_| {
        controller.with_value(|c| {
            if let Some(c) = c {
                c.abort();
            }
        });
    };
    let on_resume = move |_| {
        if status.get_untracked().resumable() {
            resumes.update(|n| *n += 1);
            run(true);
        }
    };

    let percent = move || match total.get() {
        Some(0) => 100.0,
        Some(t) => (received.get() as f64 * 100.0 / t as f64).min(100.0),
        None => 0.0,
    };
    let rate = move || {
        let secs = elapsed_ms.get() / 1000.0;
        if secs > 0.0 {
            format!("{:.0}", received.get() as f64 / secs)
        } else {
            "0".into()
        }
    };

    view! {
        <section class="card wide">
            <h1>"Audit log export"</h1>
            <p class="transport">
                "HTTP streaming: one long GET whose body is read as it arrives (NDJSON, a row per line). "
                "Plain HTTP, resumable with " <code>"after"</code> ", and fine for files of any size."
            </p>
            <noscript>
                <p class="hint">"The live viewer needs JavaScript; the download link below works without it."</p>
            </noscript>
            // Said before anyone fills the form: the export is an admin's tool.
            <Transition fallback=|| ()>
            {move || match session.user() {
                Some(u) if u.is_admin() => None,
                Some(u) => Some(view! {
                    <p class="notice" role="note" data-testid="export-admins-only">
                        {format!("Exports are for admins: the audit log names every user. You are signed in as {}, so Start is off; ask an admin (see TIDINGS_ADMINS) if you need an export.", u.username)}
                    </p>
                }.into_any()),
                None => Some(view! {
                    <p class="notice" role="note" data-testid="export-admins-only">
                        "Exports are for admins: " <a href="/login">"sign in"</a> " as one to start an export."
                    </p>
                }.into_any()),
            }}
            </Transition>
            <form class="export-form" on:submit=on_start data-testid="export-form">
                <label>"Action"
                    <select name="action" on:change=move |ev| form.action.set(event_target_value(&ev))>
                        <option value="">"All"</option>
                        {AUDIT_ACTIONS.iter().map(|a| view! { <option value=*a>{*a}</option> }).collect_view()}
                    </select>
                </label>
                <label>"User" <input name="user" placeholder="any" bind:value=form.user/></label>
                <label>"Since" <input type="date" name="since" bind:value=form.since/></label>
                <label>"Until" <input type="date" name="until" bind:value=form.until/></label>
                <label>"After id" <input type="number" name="after" min="0" placeholder="0" bind:value=form.after/></label>
                <label>"Limit" <input type="number" name="limit" min="0" placeholder="all" bind:value=form.limit/></label>
                <label>"Batch" <input type="number" name="batch" min="1" max="10000"
                    value=BATCH_DEFAULT.to_string() bind:value=form.batch/></label>
                <label>"Delay (ms)" <input type="number" name="delayMs" min="0" max="5000"
                    value="0" bind:value=form.delay/></label>
                <div class="buttons">
                    <button type="submit" data-testid="export-start"
                        disabled=move || status.get().running() || !is_admin.get()>"Start"</button>
                    <button type="button" on:click=on_stop disabled=move || status.get() != Status::Streaming>"Stop"</button>
                    <button type="button" on:click=on_resume disabled=move || !status.get().resumable()>"Resume"</button>
                </div>
            </form>

            <p class="status" role="status" data-testid="export-status" data-status=move || status.get().code()>
                {move || status.get().label()}
            </p>
            <progress max="100" value=move || format!("{:.1}", percent()) data-testid="export-progress"></progress>
            <dl class="stats">
                <div><dt>"Rows"</dt><dd>
                    <span data-testid="rows-received">{move || received.get()}</span>
                    " of " <span data-testid="rows-total">{move || total.get().map(|t| t.to_string()).unwrap_or_else(|| "?".into())}</span>
                    {move || format!(" ({:.0} %)", percent())}
                </dd></div>
                <div><dt>"Rows/s"</dt><dd data-testid="rows-per-second">{rate}</dd></div>
                <div><dt>"Received"</dt><dd>{move || format!("{:.2} MB", bytes.get() as f64 / 1e6)}</dd></div>
                <div><dt>"Elapsed"</dt><dd>{move || format!("{:.1} s", elapsed_ms.get() / 1000.0)}</dd></div>
                <div><dt>"Last id"</dt><dd data-testid="last-id">{move || last_id.get()}</dd></div>
                <div><dt>"Resumes"</dt><dd data-testid="resumes">{move || resumes.get()}</dd></div>
            </dl>

            <p class="download">
                <label>"Download as "
                    <select name="format" on:change=move |ev| form.format.set(event_target_value(&ev))>
                        <option value="ndjson">"NDJSON"</option>
                        <option value="csv">"CSV"</option>
                    </select>
                </label>
                " "
                <a href=move || form.download_href() data-testid="download-link" download>"Download the export"</a>
            </p>

            <table class="rows" data-testid="export-rows">
                <caption>{move || format!("The latest {} rows received", rows.with(|r| r.len()))}</caption>
                <thead><tr><th>"id"</th><th>"at"</th><th>"action"</th><th>"user"</th><th>"detail"</th></tr></thead>
                <tbody>
                    {move || rows.with(|window| window.iter().rev().map(|r| view! {
                        <tr data-testid="export-row">
                            <td>{r.id}</td><td>{r.at.clone()}</td><td>{r.action.clone()}</td>
                            <td>{r.user.clone()}</td><td class="detail">{r.detail.clone()}</td>
                        </tr>
                    }).collect_view())}
                </tbody>
            </table>
        </section>
    }
}
