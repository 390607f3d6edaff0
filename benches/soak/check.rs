//! The soak's history checker: what every client of `benches/soak.rs` recorded, read back
//! after the run and held to Tidings' delivery promises (the Jepsen way: record everything,
//! judge afterwards). Shared by the soak binary (`soak check`) and the integration tests
//! (`tests/it/soak_check.rs`), which show it catching a dropped message and a duplicate.
//!
//! What it proves, from [`History`] alone:
//! - every acknowledged chat message reached every client subscribed to its room exactly once,
//!   in id order (across reconnects and resumes), or that client was told `gap` covering it;
//! - no message was stored twice (one client token under two ids is a duplicate that
//!   idempotency should have stopped), and every copy of an id carries the same token;
//! - every sent notification reached every client that follows notifications, once, in order,
//!   or a gap covering it was told;
//! - every job's events are 1..n, in order, with no hole or repeat, ending in a terminal event;
//! - every export finished (resuming after a cut) with ids strictly ascending;
//! - no 5xx and no failed request outside the fault windows (a fault's start to its end plus
//!   [`GRACE_MS`]);
//! - each instance's resident memory over the second half of the run grows under 10 %.
//!
//! [`check`] gives a [`Report`] (verdict, failures, figures); [`svg`] draws the run over time.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// After a fault ends, how long errors still count as the fault's (nginx's `fail_timeout` is
/// 5 s; a client's reconnect backs off up to 2 s; a restarted instance takes a few seconds to
/// listen and a restarted database or Redis to be found again).
pub const GRACE_MS: u64 = 15_000;
/// Most memory growth allowed over the second half of the run, in percent.
pub const RSS_GROWTH_LIMIT: f64 = 10.0;
/// At most this many failures are listed (all are counted).
const LISTED: usize = 50;

/// Everything the soak's clients recorded, written as `history.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    /// Milliseconds since the epoch: the first post, and the end of the drain.
    pub started_ms: u64,
    pub ended_ms: u64,
    /// When the publishers stopped (the drain began).
    pub stopped_ms: u64,
    /// Messages whose store was acknowledged: WebSocket `chat-ack` or a 201 to a POST.
    pub posts: Vec<Post>,
    pub clients: Vec<Client>,
    pub jobs: Vec<Job>,
    /// Notification ids a 200 to `POST /api/notifications` gave.
    pub notifications: Vec<i64>,
    pub exports: Vec<Export>,
    /// Requests made, and each one that failed (a 5xx or no answer).
    pub requests: u64,
    pub errors: Vec<Failure>,
    /// Requests refused with a reason (429 `Slow down.` after a paused instance resumes and
    /// a burst arrives at once): never acknowledged, so never owed; counted, not failures.
    #[serde(default)]
    pub refused: Vec<Failure>,
    /// From the chaos loop, and the clients' own mid-frame cuts.
    pub faults: Vec<Fault>,
    /// One a second.
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Post {
    pub room: String,
    pub id: i64,
    pub token: String,
    pub at_ms: u64,
    /// `ws` or `http`.
    pub via: String,
}

/// One subscriber: what it follows and, in order of arrival, everything it was told.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Client {
    pub name: String,
    /// `ws`, `sse`, `events` (multi-topic), `long-poll` or `poll`.
    pub transport: String,
    pub rooms: Vec<String>,
    pub notifications: bool,
    pub seen: Vec<Seen>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Seen {
    Message {
        room: String,
        id: i64,
        token: String,
    },
    /// `room` none: a notifications gap. Ids after `after` and before `first` are gone.
    Gap {
        room: Option<String>,
        after: i64,
        first: i64,
    },
    Notification {
        id: i64,
    },
    /// The connection ended (the client then resumes).
    Disconnect {
        reason: String,
        at_ms: u64,
    },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    /// `(event id, event name)` in order of arrival, across the watcher's reconnects.
    pub events: Vec<(i64, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Export {
    pub at_ms: u64,
    pub rows: u64,
    pub last_id: i64,
    /// How many times it resumed with `after=` after a broken stream.
    pub resumed: u32,
    /// Finished: the stream ended cleanly (after any resumes), ids strictly ascending.
    pub finished: bool,
    /// What went wrong, when something did (a repeat or a step back in ids, or giving up).
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub at_ms: u64,
    /// The HTTP status, 0 when no answer came (refused, reset, timed out).
    pub status: u16,
    pub what: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    pub start_ms: u64,
    pub end_ms: u64,
    pub name: String,
}

impl Fault {
    /// A client's own mid-frame cut: only that client's connection is hit, so it opens no
    /// window for the others' errors.
    pub fn is_client_cut(&self) -> bool {
        self.name.starts_with("cut ")
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    /// Chat messages delivered to the WebSocket clients in this second.
    pub deliveries: u64,
    /// Their post-to-delivery p99, when there were any.
    pub p99_ms: Option<f64>,
    /// Resident memory per instance (by name), with the pid it was read from.
    pub rss_kb: BTreeMap<String, (u32, u64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub ok: bool,
    pub failure_count: usize,
    /// The first [`LISTED`].
    pub failures: Vec<String>,
    pub figures: Figures,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figures {
    pub secs: f64,
    pub acked_messages: usize,
    /// (client, room, acknowledged message) triples checked.
    pub deliveries_checked: u64,
    pub messages_received: u64,
    pub gaps_told: u64,
    pub disconnects: u64,
    pub clients: usize,
    pub jobs: usize,
    pub job_events: usize,
    pub notifications: usize,
    pub exports: usize,
    pub export_rows: u64,
    pub export_resumes: u64,
    pub requests: u64,
    pub refused: usize,
    pub errors_in_fault_windows: usize,
    pub errors_outside: usize,
    /// Faults by name (`kill-9 a`, `restart redis`, …).
    pub faults: BTreeMap<String, usize>,
    pub delivery_p50_ms: Option<f64>,
    pub delivery_p99_ms: Option<f64>,
    pub rss: Vec<RssGrowth>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RssGrowth {
    pub instance: String,
    pub pid: u32,
    /// Mean of the first and last quarter of the second half's samples of that process.
    pub first_mb: f64,
    pub last_mb: f64,
    pub growth_pct: f64,
    pub samples: usize,
}

const TERMINAL: [&str; 3] = ["complete", "failed", "cancelled"];

/// Judges `h`.
pub fn check(h: &History) -> Report {
    let mut f: Vec<String> = Vec::new();
    let mut fig = Figures {
        secs: h.ended_ms.saturating_sub(h.started_ms) as f64 / 1000.0,
        acked_messages: h.posts.len(),
        clients: h.clients.len(),
        jobs: h.jobs.len(),
        notifications: h.notifications.len(),
        exports: h.exports.len(),
        requests: h.requests,
        refused: h.refused.len(),
        ..Figures::default()
    };

    // Messages: one token per id, one id per token.
    let mut acked: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut token_of: HashMap<(&str, i64), &str> = HashMap::new();
    let mut id_of: HashMap<&str, (&str, i64)> = HashMap::new();
    for p in &h.posts {
        acked.entry(p.room.as_str()).or_default().push(p.id);
        match token_of.insert((p.room.as_str(), p.id), p.token.as_str()) {
            Some(other) if other != p.token => f.push(format!(
                "#{} {} was acknowledged to two messages ({other} and {})",
                p.room, p.id, p.token
            )),
            _ => {}
        }
        match id_of.insert(p.token.as_str(), (p.room.as_str(), p.id)) {
            Some((room, id)) if (room, id) != (p.room.as_str(), p.id) => f.push(format!(
                "duplicate: message {} was stored twice (#{room} {id} and #{} {})",
                p.token, p.room, p.id
            )),
            _ => {}
        }
    }
    for ids in acked.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    for c in &h.clients {
        for s in &c.seen {
            if let Seen::Message { room, id, token } = s {
                match token_of.get(&(room.as_str(), *id)) {
                    Some(t) if t != token => f.push(format!(
                        "{}: #{room} {id} arrived as {token}, but was stored as {t}",
                        c.name
                    )),
                    _ => {}
                }
                match id_of.get(token.as_str()) {
                    Some(&(r, i)) if (r, i) != (room.as_str(), *id) => f.push(format!(
                        "duplicate: {} received message {token} as #{room} {id}, but it was stored as #{r} {i}",
                        c.name
                    )),
                    None => {
                        id_of.insert(token.as_str(), (room.as_str(), *id));
                    }
                    _ => {}
                }
            }
        }
    }

    // Each subscriber: in order, once, everything acknowledged, or a gap that covers it.
    for c in &h.clients {
        let mut last: HashMap<&str, i64> = HashMap::new();
        let mut got: HashMap<&str, Vec<i64>> = HashMap::new();
        let mut gaps: HashMap<Option<&str>, Vec<(i64, i64)>> = HashMap::new();
        let mut last_notification = 0i64;
        let mut notified: Vec<i64> = Vec::new();
        for s in &c.seen {
            match s {
                Seen::Message { room, id, .. } => {
                    fig.messages_received += 1;
                    if !c.rooms.contains(room) {
                        f.push(format!(
                            "{} ({}) got #{room} {id} from a room it does not follow",
                            c.name, c.transport
                        ));
                        continue;
                    }
                    let before = last.entry(room.as_str()).or_insert(0);
                    if *id == *before {
                        f.push(format!(
                            "duplicate: {} ({}) got #{room} {id} twice in a row",
                            c.name, c.transport
                        ));
                    } else if *id < *before {
                        let again = got[room.as_str()].contains(id);
                        f.push(format!(
                            "{}: {} ({}) got #{room} {id} after {before}",
                            if again { "duplicate" } else { "out of order" },
                            c.name,
                            c.transport
                        ));
                    } else {
                        *before = *id;
                    }
                    got.entry(room.as_str()).or_default().push(*id);
                }
                Seen::Gap { room, after, first } => {
                    fig.gaps_told += 1;
                    gaps.entry(room.as_deref())
                        .or_default()
                        .push((*after, *first));
                }
                Seen::Notification { id } => {
                    if *id <= last_notification {
                        f.push(format!(
                            "{}: {} ({}) got notification {id} after {last_notification}",
                            if notified.contains(id) {
                                "duplicate"
                            } else {
                                "out of order"
                            },
                            c.name,
                            c.transport
                        ));
                    } else {
                        last_notification = *id;
                    }
                    notified.push(*id);
                }
                Seen::Disconnect { .. } => fig.disconnects += 1,
            }
        }
        let covered = |room: Option<&str>, id: i64| {
            gaps.get(&room)
                .is_some_and(|g| g.iter().any(|&(after, first)| after < id && id < first))
        };
        for room in &c.rooms {
            let mut have = got.remove(room.as_str()).unwrap_or_default();
            have.sort_unstable();
            let Some(ids) = acked.get(room.as_str()) else {
                continue;
            };
            let mut missing = Vec::new();
            for &id in ids {
                fig.deliveries_checked += 1;
                if have.binary_search(&id).is_err() && !covered(Some(room), id) {
                    missing.push(id);
                }
            }
            if !missing.is_empty() {
                f.push(format!(
                    "lost: {} ({}) never got {} acknowledged message(s) of #{room} and was told no gap: {}",
                    c.name,
                    c.transport,
                    missing.len(),
                    list(&missing)
                ));
            }
        }
        if c.notifications {
            notified.sort_unstable();
            let missing: Vec<i64> = h
                .notifications
                .iter()
                .copied()
                .filter(|id| notified.binary_search(id).is_err() && !covered(None, *id))
                .collect();
            if !missing.is_empty() {
                f.push(format!(
                    "lost: {} ({}) never got {} notification(s) and was told no gap: {}",
                    c.name,
                    c.transport,
                    missing.len(),
                    list(&missing)
                ));
            }
        }
    }

    // Jobs: 1..n, then a terminal event.
    for j in &h.jobs {
        fig.job_events += j.events.len();
        for (at, (id, name)) in j.events.iter().enumerate() {
            let want = at as i64 + 1;
            if *id != want {
                f.push(format!(
                    "job {}: event {} was id {id} ({name}), not {want}: {}",
                    j.id,
                    at + 1,
                    list(&j.events.iter().map(|e| e.0).collect::<Vec<_>>())
                ));
                break;
            }
        }
        match j.events.last() {
            Some((_, name)) if TERMINAL.contains(&name.as_str()) => {}
            Some((id, name)) => f.push(format!(
                "job {}: its events stop at {id} ({name}), with no terminal event",
                j.id
            )),
            None => f.push(format!("job {}: no events at all", j.id)),
        }
        let terminals = j
            .events
            .iter()
            .filter(|e| TERMINAL.contains(&e.1.as_str()))
            .count();
        if terminals > 1 {
            f.push(format!("job {}: {terminals} terminal events", j.id));
        }
    }

    // Exports.
    for e in &h.exports {
        fig.export_rows += e.rows;
        fig.export_resumes += u64::from(e.resumed);
        if !e.finished || e.problem.is_some() {
            f.push(format!(
                "export at {}: {} after {} rows (last id {}, {} resumes)",
                e.at_ms,
                e.problem.as_deref().unwrap_or("did not finish"),
                e.rows,
                e.last_id,
                e.resumed
            ));
        }
    }

    // Errors outside the fault windows.
    let windows: Vec<(u64, u64)> = h
        .faults
        .iter()
        .filter(|x| !x.is_client_cut())
        .map(|x| (x.start_ms, x.end_ms + GRACE_MS))
        .collect();
    for fault in &h.faults {
        *fig.faults.entry(fault.name.clone()).or_default() += 1;
    }
    for e in &h.errors {
        if windows.iter().any(|&(a, b)| a <= e.at_ms && e.at_ms <= b) {
            fig.errors_in_fault_windows += 1;
        } else {
            fig.errors_outside += 1;
            f.push(format!(
                "{} outside every fault window, {:.1} s in: {}",
                if e.status == 0 {
                    "a request with no answer".to_string()
                } else {
                    format!("HTTP {}", e.status)
                },
                e.at_ms.saturating_sub(h.started_ms) as f64 / 1000.0,
                e.what
            ));
        }
    }

    // Latency over the run (from the per-second p99s; the p50 of those p99s is not a p50, so
    // only the worst second and the median second are given).
    let mut p99s: Vec<f64> = h.samples.iter().filter_map(|s| s.p99_ms).collect();
    p99s.sort_by(f64::total_cmp);
    if !p99s.is_empty() {
        fig.delivery_p50_ms = Some(p99s[p99s.len() / 2]);
        fig.delivery_p99_ms = Some(p99s[((p99s.len() as f64 * 0.99) as usize).min(p99s.len() - 1)]);
    }

    // Memory over the second half, per instance, of the process that lived longest in it.
    let half = h.started_ms + (h.ended_ms.saturating_sub(h.started_ms)) / 2;
    let mut per: BTreeMap<&str, BTreeMap<u32, Vec<u64>>> = BTreeMap::new();
    for s in h.samples.iter().filter(|s| s.at_ms >= half) {
        for (name, &(pid, kb)) in &s.rss_kb {
            per.entry(name.as_str())
                .or_default()
                .entry(pid)
                .or_default()
                .push(kb);
        }
    }
    for (name, pids) in per {
        let Some((&pid, kbs)) = pids.iter().max_by_key(|(_, v)| v.len()) else {
            continue;
        };
        if kbs.len() < 8 {
            continue;
        }
        let q = kbs.len() / 4;
        let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64 / 1024.0;
        let first = mean(&kbs[..q]);
        let last = mean(&kbs[kbs.len() - q..]);
        let growth = (last / first - 1.0) * 100.0;
        if growth >= RSS_GROWTH_LIMIT {
            f.push(format!(
                "instance {name} (pid {pid}) grew {growth:.1} % over the second half ({first:.1} → {last:.1} MB)"
            ));
        }
        fig.rss.push(RssGrowth {
            instance: name.to_string(),
            pid,
            first_mb: first,
            last_mb: last,
            growth_pct: growth,
            samples: kbs.len(),
        });
    }

    let failure_count = f.len();
    f.truncate(LISTED);
    Report {
        ok: failure_count == 0,
        failure_count,
        failures: f,
        figures: fig,
    }
}

/// Up to 10 ids, then how many more.
fn list(ids: &[i64]) -> String {
    let shown: Vec<String> = ids.iter().take(10).map(|i| i.to_string()).collect();
    if ids.len() > 10 {
        format!("{} … ({} more)", shown.join(", "), ids.len() - 10)
    } else {
        shown.join(", ")
    }
}

/// The verdict and figures as a few lines of text.
pub fn summary(r: &Report) -> String {
    let g = &r.figures;
    let mut out = format!(
        "verdict: {}\n\
         {:.0} s; {} acknowledged messages, {} (client, message) deliveries checked, {} received, {} gaps told, {} disconnects\n\
         {} jobs ({} events), {} notifications, {} exports ({} rows, {} resumes)\n\
         {} requests ({} refused with a reason); errors: {} inside fault windows, {} outside\n",
        if r.ok {
            "PASS".to_string()
        } else {
            format!("FAIL ({} failures)", r.failure_count)
        },
        g.secs,
        g.acked_messages,
        g.deliveries_checked,
        g.messages_received,
        g.gaps_told,
        g.disconnects,
        g.jobs,
        g.job_events,
        g.notifications,
        g.exports,
        g.export_rows,
        g.export_resumes,
        g.requests,
        g.refused,
        g.errors_in_fault_windows,
        g.errors_outside,
    );
    let faults: Vec<String> = g.faults.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
    out += &format!("faults: {}\n", faults.join(", "));
    if let (Some(p50), Some(p99)) = (g.delivery_p50_ms, g.delivery_p99_ms) {
        out += &format!(
            "WebSocket delivery p99 per second: median {p50:.1} ms, worst 1% {p99:.1} ms\n"
        );
    }
    for m in &g.rss {
        out += &format!(
            "instance {} (pid {}): RSS {:.1} → {:.1} MB over the second half ({:+.1} %)\n",
            m.instance, m.pid, m.first_mb, m.last_mb, m.growth_pct
        );
    }
    for x in &r.failures {
        out += &format!("  FAIL {x}\n");
    }
    out
}

/// The run over time as an SVG: deliveries/s, the p99 of each second, each instance's RSS;
/// fault windows shaded and named.
pub fn svg(h: &History) -> String {
    const W: f64 = 960.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const PANEL: f64 = 150.0;
    const GAP: f64 = 45.0;
    const TOP: f64 = 40.0;
    let t0 = h.started_ms as f64;
    let span = (h.ended_ms.saturating_sub(h.started_ms)).max(1) as f64;
    let x = |ms: u64| LEFT + (ms as f64 - t0).max(0.0) / span * (W - LEFT - RIGHT);
    let height = TOP + 3.0 * (PANEL + GAP) + 20.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"14\">Tidings soak: {:.0} s, {} faults (shaded)</text>\n",
        span / 1000.0,
        h.faults.iter().filter(|f| !f.is_client_cut()).count()
    );
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut names: Vec<&str> = h
        .samples
        .iter()
        .flat_map(|s| s.rss_kb.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    type Series = Vec<(u64, f64)>;
    let panels: Vec<(&str, Vec<(String, Series)>)> = vec![
        (
            "WebSocket deliveries / s",
            vec![(
                "deliveries".into(),
                h.samples
                    .iter()
                    .map(|s| (s.at_ms, s.deliveries as f64))
                    .collect(),
            )],
        ),
        (
            "delivery p99 of each second (ms, log scale)",
            vec![(
                "p99".into(),
                h.samples
                    .iter()
                    .filter_map(|s| Some((s.at_ms, s.p99_ms?)))
                    .collect(),
            )],
        ),
        (
            "RSS per instance (MB)",
            names
                .iter()
                .map(|n| {
                    (
                        format!("instance {n}"),
                        h.samples
                            .iter()
                            .filter_map(|s| {
                                s.rss_kb
                                    .get(*n)
                                    .map(|&(_, kb)| (s.at_ms, kb as f64 / 1024.0))
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
    ];
    for (i, (title, series)) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        let bottom = top + PANEL;
        let max = series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        out += &format!(
            "<text x=\"{LEFT}\" y=\"{}\" font-weight=\"bold\">{title}</text>\n",
            top - 6.0
        );
        for fault in h.faults.iter().filter(|f| !f.is_client_cut()) {
            let (a, b) = (
                x(fault.start_ms),
                x(fault.end_ms).max(x(fault.start_ms) + 2.0),
            );
            out += &format!(
                "<rect x=\"{a:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{PANEL}\" fill=\"#f5a623\" opacity=\"0.25\"/>\n",
                b - a
            );
            if i == 0 {
                out += &format!(
                    "<text x=\"{a:.1}\" y=\"{:.1}\" font-size=\"9\" fill=\"#a05a00\" transform=\"rotate(90 {a:.1} {:.1})\">{}</text>\n",
                    top + 4.0,
                    top + 4.0,
                    escape(&fault.name)
                );
            }
        }
        out += &format!(
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#999\"/>\n",
            W - LEFT - RIGHT
        );
        // The latency panel is logarithmic (1 ms to the worst second), so both the usual few
        // milliseconds and a paused instance's 20 s show.
        let log = title.contains("p99");
        let decades = max.log10().ceil().max(1.0);
        let y_of = |v: f64| {
            if log {
                bottom - (v.max(1.0).log10() / decades).min(1.0) * PANEL
            } else {
                bottom - v / max * PANEL
            }
        };
        let ticks: Vec<f64> = if log {
            (0..=decades as i32).map(|k| 10f64.powi(k)).collect()
        } else {
            (0..=4).map(|k| max * f64::from(k) / 4.0).collect()
        };
        for v in ticks {
            out += &format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                LEFT - 5.0,
                y_of(v) + 4.0,
                if max >= 100.0 || log {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
        for (j, (name, points)) in series.iter().enumerate() {
            let color = colors[j % colors.len()];
            // A second with nothing to show (no delivery, an instance down) breaks the line.
            for run in points.chunk_by(|a, b| b.0 - a.0 <= 2_000) {
                let path: Vec<String> = run
                    .iter()
                    .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y_of(v)))
                    .collect();
                out += &format!(
                    "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.3\" points=\"{}\"/>\n",
                    path.join(" ")
                );
            }
            if series.len() > 1 {
                out += &format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>\n",
                    W - RIGHT - 90.0,
                    top + 14.0 + 13.0 * j as f64,
                    escape(name)
                );
            }
        }
    }
    let axis = TOP + 3.0 * (PANEL + GAP) - GAP + 14.0;
    let secs = span / 1000.0;
    let step = [5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|s| secs / s <= 12.0)
        .unwrap_or(600.0);
    let mut t = 0.0;
    while t <= secs {
        out += &format!(
            "<text x=\"{:.1}\" y=\"{axis:.1}\" text-anchor=\"middle\">{t:.0} s</text>\n",
            x(h.started_ms + (t * 1000.0) as u64)
        );
        t += step;
    }
    out += "</svg>\n";
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// The checker's own tests run with the integration tests (`tests/it/soak_check.rs` includes
// this file), since a bench target's tests are not run by `cargo test`.
#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, id: i64) -> Seen {
        Seen::Message {
            room: room.into(),
            id,
            token: format!("t{room}{id}"),
        }
    }

    /// Three messages in #a, each acknowledged; two clients got them all; one job; one
    /// notification; a fault from 10 s to 12 s.
    fn clean() -> History {
        let t0 = 1_000_000;
        History {
            started_ms: t0,
            ended_ms: t0 + 60_000,
            stopped_ms: t0 + 50_000,
            posts: (1..=3)
                .map(|id| Post {
                    room: "a".into(),
                    id,
                    token: format!("ta{id}"),
                    at_ms: t0 + id as u64,
                    via: "ws".into(),
                })
                .collect(),
            clients: ["ws-1", "sse-1"]
                .into_iter()
                .map(|name| Client {
                    name: name.into(),
                    transport: "ws".into(),
                    rooms: vec!["a".into()],
                    notifications: true,
                    seen: vec![
                        msg("a", 1),
                        Seen::Notification { id: 7 },
                        Seen::Disconnect {
                            reason: "reset".into(),
                            at_ms: t0 + 11_000,
                        },
                        msg("a", 2),
                        msg("a", 3),
                    ],
                })
                .collect(),
            jobs: vec![Job {
                id: 1,
                events: vec![
                    (1, "started".into()),
                    (2, "progress".into()),
                    (3, "complete".into()),
                ],
            }],
            notifications: vec![7],
            exports: vec![Export {
                at_ms: t0,
                rows: 10,
                last_id: 10,
                resumed: 1,
                finished: true,
                problem: None,
            }],
            requests: 10,
            errors: vec![Failure {
                at_ms: t0 + 11_000,
                status: 502,
                what: "during the fault".into(),
            }],
            refused: Vec::new(),
            faults: vec![Fault {
                start_ms: t0 + 10_000,
                end_ms: t0 + 12_000,
                name: "kill -9 a".into(),
            }],
            samples: (0..60)
                .map(|s| Sample {
                    at_ms: t0 + s * 1000,
                    deliveries: 6,
                    p99_ms: Some(3.0),
                    rss_kb: [("a".to_string(), (42, 50_000 + s))].into(),
                })
                .collect(),
        }
    }

    fn failures(h: &History) -> Vec<String> {
        let r = check(h);
        assert_eq!(r.ok, r.failures.is_empty());
        r.failures
    }

    fn fails_with(h: &History, needle: &str) {
        let f = failures(h);
        assert!(
            f.iter().any(|x| x.contains(needle)),
            "expected a failure with {needle:?}, got {f:?}"
        );
    }

    #[test]
    fn a_clean_history_passes_and_its_figures_add_up() {
        let h = clean();
        let r = check(&h);
        assert!(r.ok, "{:?}", r.failures);
        assert_eq!(r.figures.deliveries_checked, 6);
        assert_eq!(r.figures.messages_received, 6);
        assert_eq!(r.figures.errors_in_fault_windows, 1);
        assert_eq!(r.figures.errors_outside, 0);
        assert_eq!(r.figures.rss.len(), 1);
        assert!(summary(&r).starts_with("verdict: PASS"));
        let picture = svg(&h);
        assert!(picture.starts_with("<svg") && picture.contains("kill -9 a"));
    }

    #[test]
    fn a_dropped_message_is_caught() {
        let mut h = clean();
        h.clients[1].seen.remove(3);
        fails_with(
            &h,
            "lost: sse-1 (ws) never got 1 acknowledged message(s) of #a",
        );
    }

    #[test]
    fn a_message_delivered_twice_is_caught() {
        let mut h = clean();
        h.clients[0].seen.push(msg("a", 2));
        fails_with(&h, "duplicate: ws-1 (ws) got #a 2 after 3");
        let mut h = clean();
        h.clients[0].seen.insert(1, msg("a", 1));
        fails_with(&h, "duplicate: ws-1 (ws) got #a 1 twice in a row");
    }

    #[test]
    fn a_message_stored_twice_is_caught() {
        // The same client token under a second id: idempotency failed.
        let mut h = clean();
        h.clients[0].seen.push(Seen::Message {
            room: "a".into(),
            id: 4,
            token: "ta2".into(),
        });
        fails_with(&h, "duplicate: ws-1 received message ta2 as #a 4");
    }

    #[test]
    fn out_of_order_is_caught_and_a_told_gap_excuses_what_it_covers() {
        let mut h = clean();
        h.clients[0].seen.swap(3, 4);
        fails_with(&h, "out of order: ws-1 (ws) got #a 2 after 3");
        let mut h = clean();
        h.clients[1].seen.remove(3);
        h.clients[1].seen.insert(
            3,
            Seen::Gap {
                room: Some("a".into()),
                after: 1,
                first: 3,
            },
        );
        assert!(failures(&h).is_empty());
    }

    #[test]
    fn a_lost_notification_is_caught_unless_a_gap_was_told() {
        let mut h = clean();
        h.clients[0].seen.remove(1);
        fails_with(&h, "lost: ws-1 (ws) never got 1 notification(s)");
        h.clients[0].seen.push(Seen::Gap {
            room: None,
            after: 6,
            first: 8,
        });
        assert!(failures(&h).is_empty());
    }

    #[test]
    fn job_events_must_be_one_to_n_and_end_in_a_terminal_event() {
        let mut h = clean();
        h.jobs[0].events.remove(1);
        fails_with(&h, "job 1: event 2 was id 3 (complete), not 2");
        let mut h = clean();
        h.jobs[0].events.pop();
        fails_with(
            &h,
            "job 1: its events stop at 2 (progress), with no terminal event",
        );
    }

    #[test]
    fn errors_count_only_inside_a_fault_window_and_its_grace() {
        let mut h = clean();
        h.errors.push(Failure {
            at_ms: h.started_ms + 12_000 + GRACE_MS - 1,
            status: 0,
            what: "reset".into(),
        });
        assert!(failures(&h).is_empty());
        h.errors.push(Failure {
            at_ms: h.started_ms + 40_000,
            status: 500,
            what: "GET /api/jobs".into(),
        });
        fails_with(
            &h,
            "HTTP 500 outside every fault window, 40.0 s in: GET /api/jobs",
        );
    }

    #[test]
    fn an_unfinished_export_and_memory_growth_are_caught() {
        let mut h = clean();
        h.exports[0].finished = false;
        fails_with(&h, "did not finish after 10 rows");
        let mut h = clean();
        for s in &mut h.samples {
            let (_, kb) = s.rss_kb.get_mut("a").unwrap();
            *kb = 20_000 + (s.at_ms - h.started_ms);
        }
        fails_with(&h, "instance a (pid 42) grew");
    }
}
