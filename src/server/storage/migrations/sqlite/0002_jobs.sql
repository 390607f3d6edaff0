-- Durable jobs and their events. Every event is stored (with its per-job id) before it is
-- sent, so a watcher that reconnects with Last-Event-ID replays exactly what it missed.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id      BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    owner         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    -- The request, as JSON (the worker reads its parameters from here).
    params        TEXT    NOT NULL,
    -- queued | running | completed | failed | cancelled
    status        TEXT    NOT NULL,
    step          BIGINT  NOT NULL DEFAULT 0,
    total         BIGINT  NOT NULL DEFAULT 0,
    percent       BIGINT  NOT NULL DEFAULT 0,
    message       TEXT    NOT NULL DEFAULT '',
    -- Where the job can pick up again after a restart (the demo's step, an import's last id).
    checkpoint    TEXT    NOT NULL DEFAULT '',
    last_event_id BIGINT  NOT NULL DEFAULT 0,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    -- Which instance runs it, and until when its claim holds (scale-out, issue 7).
    claimed_by    TEXT,
    lease_until   BIGINT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX jobs_by_owner ON jobs (owner_id, id);
CREATE INDEX jobs_by_status ON jobs (status, id);

CREATE TABLE job_events (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    id     BIGINT NOT NULL,
    event  TEXT   NOT NULL,
    data   TEXT   NOT NULL,
    PRIMARY KEY (job_id, id)
);
