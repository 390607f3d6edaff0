//! `<HomePage/>`: the decision guide.

use leptos::prelude::*;

/// One way of keeping a browser up to date.
struct Pattern {
    name: &'static str,
    /// One line: what it is, on the wire.
    wire: &'static str,
    use_when: &'static [&'static str],
    reach_elsewhere: &'static [&'static str],
    /// The pages that show it working: (address, button label).
    demos: &'static [(&'static str, &'static str)],
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        name: "Polling",
        wire: "The browser asks again every few seconds; the server answers at once. With ETag and If-None-Match, an unchanged answer is a 304 with no body.",
        use_when: &[
            "Updates are rare, and a few seconds late is fine.",
            "Every proxy, firewall and old client in the path must cope.",
            "You want the simplest thing that works, and caches to help.",
        ],
        reach_elsewhere: &[
            "Updates must arrive within a second: SSE or WebSockets.",
            "Many clients poll often: most answers are wasted work.",
        ],
        demos: &[("/jobs", "Poll a job’s status (ETag)"), ("/chat", "Chat by polling")],
    },
    Pattern {
        name: "HTTP streaming",
        wire: "One response, written as it is produced: NDJSON or CSV rows, flushed in batches, read by fetch() as they arrive.",
        use_when: &[
            "One large result (an export, a report) that takes a while to produce.",
            "The user should see rows at once instead of waiting for the whole file.",
            "A broken download should resume where it stopped (after=<last id>).",
        ],
        reach_elsewhere: &[
            "Many small events over a long time: SSE gives you ids, retry and resume for free.",
            "The client must talk back on the same connection: WebSockets.",
        ],
        demos: &[("/export", "Open the audit log export")],
    },
    Pattern {
        name: "Server-Sent Events",
        wire: "text/event-stream: named events with ids, one way from server to browser, reconnecting by itself with Last-Event-ID.",
        use_when: &[
            "The server pushes: job progress, notifications, live metrics, log tails.",
            "Resume after a drop must be exact, and you want it built into the browser.",
            "Plain HTTP: works through proxies, with cookies, with HTTP/2.",
        ],
        reach_elsewhere: &[
            "The browser sends as often as it receives (chat, games): WebSockets.",
            "Binary payloads, or more than a handful of streams per page on HTTP/1.1.",
        ],
        demos: &[
            ("/jobs", "Watch a job’s progress"),
            ("/dashboard", "Open the live dashboard"),
            ("/assistant", "Ask the assistant (AI tokens)"),
        ],
    },
    Pattern {
        name: "WebSockets",
        wire: "One upgraded connection carrying messages both ways: chat, presence, notifications.",
        use_when: &[
            "Both sides talk often: chat rooms, collaboration, presence.",
            "Low latency in both directions matters.",
        ],
        reach_elsewhere: &[
            "Only the server talks: SSE is simpler and resumes by itself.",
            "You need HTTP caching, or plain request logs per update.",
        ],
        demos: &[("/chat", "Open the chat rooms")],
    },
    Pattern {
        name: "Queues and background jobs",
        wire: "The request only enqueues; a worker pool does the work, stores every event, and any transport above reports progress.",
        use_when: &[
            "The work takes longer than a request should (seconds to hours).",
            "It must survive the user closing the tab, or the server restarting.",
        ],
        reach_elsewhere: &[
            "The answer is ready in milliseconds: just answer the request.",
        ],
        demos: &[("/jobs", "Queue a job")],
    },
];

/// `/`: the talk's decision guide.
#[component]
pub fn HomePage() -> impl IntoView {
    view! {
        <section class="intro">
            <h1>"Keep the browser up to date"</h1>
            <p>
                "Tidings shows, working for real, the ways a server keeps a browser current. "
                "Pick by who talks, how often, and what must survive a dropped connection."
            </p>
        </section>
        <section class="patterns">
            {PATTERNS
                .iter()
                .map(|p| {
                    view! {
                        <article class="card pattern" data-testid="pattern">
                            <h2>{p.name}</h2>
                            <p class="wire">{p.wire}</p>
                            <h3>"Use it when"</h3>
                            <ul>{p.use_when.iter().map(|s| view! { <li>{*s}</li> }).collect_view()}</ul>
                            <h3>"Reach for another when"</h3>
                            <ul>{p.reach_elsewhere.iter().map(|s| view! { <li>{*s}</li> }).collect_view()}</ul>
                            <p class="demos">
                                {p.demos.iter().map(|(href, label)| view! {
                                    <a class="button" href=*href>{*label}</a>
                                }).collect_view()}
                            </p>
                        </article>
                    }
                })
                .collect_view()}
        </section>
    }
}
