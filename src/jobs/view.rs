//! `/jobs`: start a demo job and watch its progress bar, over Server-Sent Events or by polling.
//!
//! The page is rendered first on the server ([`jobs_page`](super::jobs_page)) with the
//! selected job's state, its latest events and its last event id; the browser then opens an
//! event stream ([`client::watch`], on the shared `crate::events::EventStream`) that continues
//! after that id, so nothing is missed between the render and the connection. The browser
//! reconnects by itself after a drop (a server restart included) and sends `Last-Event-ID`;
//! the page counts the connections so reconnects show. A switch watches the same job by
//! polling `GET /api/jobs/{id}` with `If-None-Match` instead, and the page counts the requests
//! each way took.
//!
//! Tests: `end2end/tests/jobs.spec.ts`.

use std::collections::VecDeque;

use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::hooks::{use_navigate, use_query_map};
use send_wrapper::SendWrapper;

use super::{
    client::{self, Polled, WatchNews},
    jobs_page, LOG_WINDOW,
};
use crate::{
    events::{EventStream, LinkState},
    protocol::jobs::{
        CreateJob, JobCreated, JobEvent, JobEventKind, JobState, JobStatus, JobsSnapshot,
        STEPS_DEFAULT, STEP_MS_DEFAULT,
    },
};

/// How often the polling mode asks.
/// How often the unfinished jobs of the recent list (other than the watched one) are asked.
const RECENT_REFRESH_MS: u64 = 3000;
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The jobs page.
#[component]
pub fn JobsPage() -> impl IntoView {
    let query = use_query_map();
    let selected = move || query.read().get("job").and_then(|v| v.parse::<i64>().ok());
    let snapshot = Resource::new(selected, jobs_page);
    view! {
        <section class="card wide">
            <h1>"Jobs"</h1>
            <p class="transport">
                "Server-Sent Events: the server pushes each step of a background job down one "
                "long response; the browser reconnects by itself and resumes after the last event id. "
                "Polling, beside it, asks again and again."
            </p>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || snapshot.get().map(|result| match result {
                    Ok(s) => view! { <JobsView snapshot=s/> }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn JobsView(snapshot: JobsSnapshot) -> impl IntoView {
    if snapshot.user.is_none() {
        return view! {
            <p data-testid="jobs-signin">
                <a href="/login">"Sign in"</a> " to run jobs."
            </p>
        }
        .into_any();
    }
    // Live: the watched job's entry follows its stream, and the other unfinished ones are
    // asked again every few seconds until they end.
    let recent = RwSignal::new(snapshot.recent.clone());
    let watched = snapshot.job.as_ref().map(|j| j.id);
    Effect::new(move |_| {
        let refresh = move || {
            let open: Vec<i64> = recent.with_untracked(|l| {
                l.iter()
                    .filter(|j| !j.status.is_final() && Some(j.id) != watched)
                    .map(|j| j.id)
                    .collect()
            });
            for id in open {
                spawn_local(async move {
                    if let Ok(client::Polled::Changed(now, _)) = client::poll(id, "").await {
                        {
                            if !recent.is_disposed() {
                                recent.update(|l| {
                                    if let Some(j) = l.iter_mut().find(|j| j.id == id) {
                                        *j = now;
                                    }
                                });
                            }
                        }
                    }
                });
            }
        };
        if let Ok(handle) =
            set_interval_with_handle(refresh, std::time::Duration::from_millis(RECENT_REFRESH_MS))
        {
            on_cleanup(move || handle.clear());
        }
    });
    let admin = snapshot.admin;
    view! {
        <CreateForm/>
        {admin.then(|| view! { <ImportForm/> })}
        {match snapshot.job.clone() {
            Some(job) => view! { <Watcher job=job events=snapshot.events.clone() recent=recent/> }.into_any(),
            None => view! { <p class="hint">"Start a job, or pick one below."</p> }.into_any(),
        }}
        <h2>"Your recent jobs"</h2>
        <ul class="recent-jobs" data-testid="recent-jobs">
            {move || recent.get().into_iter().map(|j| view! {
                <li data-job=j.id.to_string() data-status=j.status.as_str()>
                    <a href=format!("/jobs?job={}", j.id)>{format!("Job {}", j.id)}</a>
                    {format!(" {}: {} ({} %)", j.kind, j.status.as_str(), j.percent)}
                </li>
            }).collect_view()}
        </ul>
    }
    .into_any()
}

/// The demo job's form.
#[component]
fn CreateForm() -> impl IntoView {
    let steps = RwSignal::new(STEPS_DEFAULT.to_string());
    let step_ms = RwSignal::new(STEP_MS_DEFAULT.to_string());
    let warn_at = RwSignal::new("7".to_string());
    let fail_at = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();

    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let number = |name: &str, v: String| -> Result<Option<i64>, String> {
            let v = v.trim().to_string();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|_| format!("`{name}` must be a whole number, not {v:?}."))
        };
        let request = (|| -> Result<CreateJob, String> {
            let warn: Result<Vec<i64>, String> = warn_at
                .get_untracked()
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| number("warnAt", s.to_string()).map(|n| n.unwrap_or(0)))
                .collect();
            Ok(CreateJob {
                kind: "demo".into(),
                steps: number("steps", steps.get_untracked())?,
                step_ms: number("stepMs", step_ms.get_untracked())?,
                warn_at: warn?,
                fail_at: number("failAt", fail_at.get_untracked())?,
                source: None,
            })
        })();
        let request = match request {
            Ok(r) => r,
            Err(why) => {
                error.set(Some(why));
                return;
            }
        };
        let navigate = navigate.clone();
        start_job(
            async move { client::create(&request).await },
            navigate,
            busy,
            error,
        );
    };

    view! {
        <form class="export-form" on:submit=on_submit data-testid="job-form">
            <label>"Steps" <input type="number" name="steps" min="1" bind:value=steps/></label>
            <label>"Step time (ms)" <input type="number" name="stepMs" min="0" bind:value=step_ms/></label>
            <label>"Warn at steps" <input name="warnAt" placeholder="7, 12" bind:value=warn_at/></label>
            <label>"Fail at step" <input type="number" name="failAt" placeholder="never" bind:value=fail_at/></label>
            <div class="buttons">
                <button type="submit" disabled=move || busy.get()>"Start a demo job"</button>
            </div>
        </form>
        {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="job-error">{e}</p> })}
    }
}

/// Runs `create` (a request that makes a job) and shows the new job, or the error.
fn start_job(
    create: impl std::future::Future<Output = Result<JobCreated, String>> + 'static,
    navigate: impl Fn(&str, leptos_router::NavigateOptions) + 'static,
    busy: RwSignal<bool>,
    error: RwSignal<Option<String>>,
) {
    busy.set(true);
    spawn_local(async move {
        match create.await {
            Ok(created) => {
                error.set(None);
                navigate(&format!("/jobs?job={}", created.id), Default::default());
            }
            Err(why) => error.set(Some(why)),
        }
        busy.set(false);
    });
}

/// An import of an NDJSON export (admins): by default, this server's own export.
#[component]
fn ImportForm() -> impl IntoView {
    let source = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    // The default source needs the page's origin: filled in the browser.
    Effect::new(move |_| {
        if source.get_untracked().is_empty() {
            if let Ok(origin) = window().location().origin() {
                source.set(format!("{origin}/api/audit/export"));
            }
        }
    });
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let navigate = navigate.clone();
        let source = source.get_untracked().trim().to_string();
        start_job(
            async move { client::import(&source).await },
            navigate,
            busy,
            error,
        );
    };
    view! {
        <form class="export-form" on:submit=on_submit data-testid="import-form">
            <label class="wide">"Import from an NDJSON export"
                <input name="source" type="url" bind:value=source/>
            </label>
            <div class="buttons">
                <button type="submit" disabled=move || busy.get()>"Start an import"</button>
            </div>
        </form>
        {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="import-error">{e}</p> })}
    }
}

/// How the page follows the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Sse,
    Polling,
}

/// The selected job's progress bar, status, counters and event log, kept live.
#[component]
fn Watcher(
    job: JobStatus,
    events: Vec<JobEvent>,
    /// The "Your recent jobs" list: this job's entry follows what the watcher hears.
    recent: RwSignal<Vec<JobStatus>>,
) -> impl IntoView {
    let id = job.id;
    let newest = events.last().map_or(0, |e| e.id);
    let last_id = RwSignal::new(job.last_event_id.max(newest));
    let status = RwSignal::new(job);
    let log = RwSignal::new(events.into_iter().collect::<VecDeque<_>>());
    let mode = RwSignal::new(Mode::Sse);
    let connections = RwSignal::new(0u32);
    let link = RwSignal::new("connecting");
    let polls = RwSignal::new(0u32);
    let unchanged = RwSignal::new(0u32);
    let error = RwSignal::new(None::<String>);
    // The open event stream (browser objects live on one thread, hence the wrapper), and the
    // polling timer.
    let watch = StoredValue::new(None::<SendWrapper<EventStream>>);
    let timer = StoredValue::new(None::<IntervalHandle>);

    let finished = move || status.with(|s| s.status.is_final());
    let finished_now = move || status.with_untracked(|s| s.status.is_final());
    let apply = move |e: JobEvent| {
        if e.id <= last_id.get_untracked() {
            return;
        }
        last_id.set(e.id);
        status.update(|s| {
            s.step = e.data.step;
            s.total = e.data.total;
            s.percent = e.data.percent;
            s.message = e.data.message.clone();
            s.last_event_id = e.id;
            s.updated_at = e.data.at.clone();
            s.status = e.event.final_state().unwrap_or(JobState::Running);
        });
        let now = status.get_untracked();
        recent.update(|l| {
            if let Some(j) = l.iter_mut().find(|j| j.id == now.id) {
                *j = now;
            }
        });
        log.update(|l| {
            l.push_back(e);
            while l.len() > LOG_WINDOW as usize {
                l.pop_front();
            }
        });
    };
    let stop_all = move || {
        watch.set_value(None);
        timer.update_value(|t| {
            if let Some(t) = t.take() {
                t.clear();
            }
        });
    };

    // Connects in the chosen mode (in the browser only: effects do not run on the server).
    Effect::new(move |_| {
        let mode = mode.get();
        stop_all();
        if finished_now() {
            link.set("finished");
            return;
        }
        match mode {
            Mode::Sse => {
                link.set(link_text(LinkState::Connecting));
                let opened = client::watch(id, last_id.get_untracked(), move |news| match news {
                    WatchNews::Link(state) => {
                        if state == LinkState::Open {
                            connections.update(|n| *n += 1);
                        }
                        if link.get_untracked() != "finished" {
                            link.set(link_text(state));
                        }
                    }
                    WatchNews::Event(e) => {
                        let terminal = e.event.final_state().is_some();
                        apply(e);
                        if terminal {
                            // Nothing follows: close rather than let the browser reconnect.
                            // (Closed, not dropped: this runs inside one of its listeners.)
                            watch.with_value(|w| {
                                if let Some(w) = w {
                                    w.close();
                                }
                            });
                            link.set("finished");
                        }
                    }
                });
                match opened {
                    Ok(w) => watch.set_value(Some(SendWrapper::new(w))),
                    Err(why) => error.set(Some(why)),
                }
            }
            Mode::Polling => {
                link.set("polling");
                let etag = StoredValue::new(String::new());
                let in_flight = StoredValue::new(false);
                let tick = move || {
                    if in_flight.get_value() {
                        return;
                    }
                    in_flight.set_value(true);
                    spawn_local(async move {
                        polls.update(|n| *n += 1);
                        let polled = client::poll(id, &etag.get_value()).await;
                        // The page may have moved on to another job while this was in flight.
                        if status.is_disposed() {
                            return;
                        }
                        match polled {
                            Ok(Polled::Unchanged) => unchanged.update(|n| *n += 1),
                            Ok(Polled::Changed(s, tag)) => {
                                etag.set_value(tag);
                                if s.last_event_id > last_id.get_untracked() {
                                    last_id.set(s.last_event_id);
                                }
                                status.set(s);
                                error.set(None);
                            }
                            Err(why) => error.set(Some(why)),
                        }
                        in_flight.set_value(false);
                        if finished_now() {
                            link.set("finished");
                            timer.update_value(|t| {
                                if let Some(t) = t.take() {
                                    t.clear();
                                }
                            });
                        }
                    });
                };
                tick();
                if let Ok(handle) = set_interval_with_handle(tick, POLL_EVERY) {
                    timer.set_value(Some(handle));
                }
            }
        }
    });
    on_cleanup(stop_all);

    let on_cancel = move |_| {
        spawn_local(async move {
            if let Err(why) = client::cancel(id).await {
                error.set(Some(why));
            }
        });
    };

    view! {
        <div class="job" data-testid="job" data-job-id=id>
            <h2>{format!("Job {id}")}</h2>
            <p class="status" role="status" data-testid="job-status" data-status=move || status.with(|s| s.status.as_str())>
                {move || status.with(|s| format!("{}: {}", s.status.as_str(), s.message))}
            </p>
            <progress max="100" value=move || status.with(|s| s.percent.to_string()) data-testid="job-progress"></progress>
            <dl class="stats">
                <div><dt>"Progress"</dt><dd data-testid="job-percent">{move || status.with(|s| format!("{} %", s.percent))}</dd></div>
                <div><dt>"Step"</dt><dd data-testid="job-step">{move || status.with(|s| format!("{} of {}", s.step, s.total))}</dd></div>
                <div><dt>"Last event id"</dt><dd data-testid="job-last-id">{move || last_id.get()}</dd></div>
                <div><dt>"Link"</dt><dd data-testid="job-link">{move || link.get()}</dd></div>
                <div><dt>"SSE connections"</dt><dd data-testid="job-connections">{move || connections.get()}</dd></div>
                <div><dt>"Polling requests"</dt><dd data-testid="job-polls">
                    {move || format!("{} ({} unchanged, 304)", polls.get(), unchanged.get())}
                </dd></div>
            </dl>
            <div class="buttons">
                <label><input type="radio" name="mode" data-testid="mode-sse"
                    prop:checked=move || mode.get() == Mode::Sse
                    on:change=move |_| mode.set(Mode::Sse)/>" Server-Sent Events"</label>
                <label><input type="radio" name="mode" data-testid="mode-polling"
                    prop:checked=move || mode.get() == Mode::Polling
                    on:change=move |_| mode.set(Mode::Polling)/>" Polling"</label>
                <button type="button" on:click=on_cancel disabled=finished data-testid="job-cancel">"Cancel"</button>
            </div>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <ol class="event-log" data-testid="job-log">
                {move || log.with(|l| l.iter().map(|e| view! {
                    <li data-testid="job-event" data-event=e.event.as_str() data-id=e.id
                        class=event_class(e.event)>
                        <code>{format!("#{} {}", e.id, e.event.as_str())}</code>
                        " " {e.data.message.clone()}
                    </li>
                }).collect_view())}
            </ol>
        </div>
    }
}

/// What the page's link line says for the stream's state.
fn link_text(state: LinkState) -> &'static str {
    match state {
        LinkState::Connecting => "connecting",
        LinkState::Open => "open",
        LinkState::Reconnecting(_) => "reconnecting",
        LinkState::Closed => "closed",
    }
}

fn event_class(kind: JobEventKind) -> &'static str {
    match kind {
        JobEventKind::Warning => "warning",
        JobEventKind::Failed | JobEventKind::Cancelled => "bad",
        JobEventKind::Complete => "good",
        _ => "",
    }
}
