//! The durable job queue's engine: a bounded pool of workers, the event writer, and the
//! `demo` job.
//!
//! - **Workers** ([`JOB_WORKERS_DEFAULT`] unless `TIDINGS_JOB_WORKERS` says otherwise) claim the
//!   oldest queued job with a lease, run it, and claim the next. A new job wakes one idle
//!   worker at once: in this process through a `Notify`, and on every other instance of a
//!   PostgreSQL database through `NOTIFY` on [`WAKE_CHANNEL`]. Polling
//!   (`TIDINGS_JOB_POLL_MS`, 2 s) is only the fallback, for a wake-up lost while a listener
//!   reconnects.
//! - **Events** go through one writer task: it takes whatever events are waiting (from every
//!   job), stores them in one transaction, and only then publishes them on the bus. So every
//!   event has its per-job id in the database before anyone sees it, and hundreds of jobs
//!   reporting at once cost a few transactions, not one each.
//! - **Durability**: a job keeps running when its watchers leave (nothing here knows about
//!   watchers). At start, running jobs left by a previous process are queued again and pick up
//!   from their checkpoint; a sweeper requeues jobs whose lease ran out (an instance died).
//!   At shutdown, workers stop between steps and leave their job to be picked up again.
//! - **Cancel**: a queued job is cancelled on the spot; a running one is told through an
//!   in-process token (and, for other instances, the database flag, checked every second).
//!
//! Tests: `tests/it/jobs.rs` through the real server (restart, cancel, replay).
//!
//! Length: over 600 lines. Claiming, running, leases, cancelling and the event writer share
//! the queue's inner state and its exactly-once rules (a claim and its events, a lease and
//! its renewal); kept in one file so those rules read in one place.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::{
    settings::JobsConfig,
    store::{JobRow, NewJobEvent},
};
use crate::{
    protocol::jobs::{CreateJob, JobEventData, JobEventKind, JobState},
    retry,
    server::{
        access::token::Signer,
        clock,
        fanout::bus::{Bus, Envelope},
        storage::{prune_periodically, Store},
        Shutdown,
    },
};

/// Workers running jobs at once, unless `TIDINGS_JOB_WORKERS` says otherwise.
pub const JOB_WORKERS_DEFAULT: usize = 16;
/// How long a claim holds without being renewed.
pub const LEASE: Duration = Duration::from_secs(15);
/// The PostgreSQL channel a queued job is announced on; the payload is the instance that
/// queued it (which has woken its own worker already).
const WAKE_CHANNEL: &str = "tidings_jobs_queued";
/// Events the writer stores in one transaction at most.
const WRITE_BATCH: usize = 512;
/// Events waiting for the writer at most (then `emit` waits: backpressure).
const WRITE_QUEUE: usize = 4096;
/// After shutdown, the writer stops once nothing arrived for this long.
const WRITE_LINGER: Duration = Duration::from_millis(300);

/// The bus topic of a job's events.
pub fn topic(job_id: i64) -> String {
    format!("job:{job_id}")
}

/// How the queue shares its workers (`workers`, worked out from the settings) and how long it
/// keeps ended jobs.
#[derive(Clone, Copy, Debug)]
struct QueueLimits {
    /// Jobs of one owner running at once at most (on every instance together).
    running_per_owner: usize,
    /// Ended jobs older than this are deleted with their events.
    retention: Duration,
}

/// The queue: cheap to clone, shared by the routes and the workers.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Mints stream tokens (an import reading this server's own export).
    signer: Arc<Signer>,
    shutdown: Shutdown,
    /// This process's name in `claimed_by`.
    instance: String,
    limits: QueueLimits,
    /// The queue's settings (per-user limits, import sources).
    config: JobsConfig,
    /// Wakes one idle worker when a job is queued.
    wake: Notify,
    writer: mpsc::Sender<Write>,
    /// Tokens of the jobs this process runs, to cancel them at once.
    running: Mutex<HashMap<i64, CancellationToken>>,
}

/// An event for the writer, and who waits for it to be stored.
struct Write {
    event: NewJobEvent,
    done: Option<oneshot::Sender<bool>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("instance", &self.inner.instance)
            .finish()
    }
}

impl Jobs {
    /// The settings this queue runs with.
    pub fn config(&self) -> &JobsConfig {
        &self.inner.config
    }

    /// Starts the queue: the writer, then (once the jobs a previous process left running are
    /// queued again) `workers` workers and the sweeper, all tracked by `shutdown`.
    /// `sole_instance`: nobody else can be running jobs on this database (an SQLite file),
    /// so every job marked running at start is stale.
    pub fn start(
        store: Store,
        bus: Arc<dyn Bus>,
        signer: Arc<Signer>,
        shutdown: Shutdown,
        config: JobsConfig,
        instance: &str,
        sole_instance: bool,
    ) -> Self {
        let workers = config.workers.unwrap_or(JOB_WORKERS_DEFAULT);
        let limits = QueueLimits {
            running_per_owner: config
                .running_per_user
                .map_or((workers / 2).max(1), |n| n as usize),
            retention: config.retention,
        };
        let (writer, rx) = mpsc::channel(WRITE_QUEUE);
        let jobs = Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                signer,
                shutdown: shutdown.clone(),
                instance: instance.to_string(),
                limits,
                config,
                wake: Notify::new(),
                writer,
                running: Mutex::new(HashMap::new()),
            }),
        };
        shutdown.spawn(write_events(store.clone(), bus, shutdown.clone(), rx));
        if workers > 0 {
            // Another instance's new job wakes one of ours (PostgreSQL only; returns at once
            // on SQLite).
            let listener = jobs.clone();
            shutdown.spawn(async move {
                let inner = &listener.inner;
                inner
                    .store
                    .listen(WAKE_CHANNEL, inner.shutdown.clone(), |from| {
                        if from != Some(inner.instance.as_str()) {
                            inner.wake.notify_one();
                        }
                    })
                    .await;
            });
        }
        let starter = jobs.clone();
        shutdown.spawn(async move {
            match store
                .requeue_stale_jobs(clock::now_ms(), sole_instance)
                .await
            {
                Ok(ids) if !ids.is_empty() => tracing::info!(
                    jobs = ?ids,
                    "jobs left running by the last process are queued again"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "queueing stale jobs again failed"),
            }
            let tracker = starter.inner.shutdown.clone();
            for n in 0..workers {
                let jobs = starter.clone();
                tracker.spawn(async move { jobs.work(n).await });
            }
            let pruner = starter.clone();
            tracker.spawn(async move { starter.sweep().await });
            tracker.spawn(async move { pruner.prune().await });
        });
        jobs
    }

    /// Wakes a worker for a newly queued job: one of this process's, and (on PostgreSQL)
    /// one on every other instance, the first of which to claim it runs it.
    pub async fn queued(&self) {
        self.inner.wake.notify_one();
        if let Err(e) = self
            .inner
            .store
            .notify(WAKE_CHANNEL, &self.inner.instance)
            .await
        {
            tracing::warn!(error = %e, "announcing a queued job failed; other instances find it by polling");
        }
    }

    /// Cancels a job: a queued one at once (the `cancelled` event is stored before this
    /// returns), a running one by telling its runner. Returns the job's status before.
    pub async fn cancel(&self, job: &JobRow) -> anyhow::Result<Option<String>> {
        let store = &self.inner.store;
        let before = store.request_job_cancel(job.id).await?;
        match before.as_deref() {
            Some("queued") => {
                let now = clock::now_ms();
                if let Some(claimed) = store
                    .claim_job(
                        job.id,
                        &self.inner.instance,
                        now,
                        now + LEASE.as_millis() as i64,
                    )
                    .await?
                {
                    let mut run = Run::new(self.clone(), claimed);
                    run.cancelled().await;
                }
                // Otherwise a worker claimed it meanwhile and sees the flag before it starts.
            }
            Some("running") => {
                if let Some(token) = self.inner.running.lock().expect("lock").get(&job.id) {
                    token.cancel();
                }
            }
            _ => {}
        }
        Ok(before)
    }

    /// One worker: claim, run, repeat, until shutdown.
    async fn work(self, n: usize) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let now = clock::now_ms();
            let claimed = self
                .inner
                .store
                .claim_next_job(
                    &self.inner.instance,
                    now,
                    now + LEASE.as_millis() as i64,
                    self.inner.limits.running_per_owner as i64,
                )
                .await;
            match claimed {
                Ok(Some(job)) => {
                    tracing::debug!(worker = n, job = job.id, kind = %job.kind, "running a job");
                    self.run(job).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.inner.wake.notified() => {}
                        _ = tokio::time::sleep(self.inner.config.poll) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed; trying again shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(self.inner.config.poll) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Requeues jobs whose lease ran out (their instance died), until shutdown.
    async fn sweep(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.poll) => {}
                _ = shutdown.cancelled() => return,
            }
            match self
                .inner
                .store
                .requeue_stale_jobs(clock::now_ms(), false)
                .await
            {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(jobs = ?ids, "jobs whose runner stopped renewing are queued again");
                    for _ in ids {
                        self.queued().await;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping stale jobs failed"),
            }
        }
    }

    /// Deletes jobs that ended longer ago than the retention, with their events: at start, then
    /// every [`PRUNE_EVERY`], until shutdown.
    async fn prune(self) {
        let store = self.inner.store.clone();
        prune_periodically(
            self.inner.shutdown.clone(),
            self.inner.limits.retention,
            "ended jobs",
            |before, batch| {
                let store = store.clone();
                async move { store.prune_ended_jobs(before, batch).await }
            },
        )
        .await;
    }

    /// Runs one claimed job to its end (or until shutdown).
    async fn run(&self, job: JobRow) {
        let token = CancellationToken::new();
        self.inner
            .running
            .lock()
            .expect("lock")
            .insert(job.id, token.clone());
        let id = job.id;
        let mut run = Run::new(self.clone(), job);
        run.token = token;
        let work = async {
            if run.job.cancel_requested {
                run.cancelled().await;
            } else {
                match run.job.kind.as_str() {
                    "demo" => run_demo(&mut run).await,
                    "import" => super::import::run_import(&mut run).await,
                    other => {
                        let message = format!("Unknown job kind {other:?}.");
                        run.finish(JobEventKind::Failed, &message).await;
                    }
                }
            }
        };
        // The claim is renewed on a timer while the job runs, whatever the job is waiting
        // for (an import reading a slow source sends no event for a while): otherwise the
        // sweeper would queue it again and a second worker would run it too.
        let (store, instance) = (self.inner.store.clone(), self.inner.instance.clone());
        let renew = async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let until = clock::now_ms() + LEASE.as_millis() as i64;
                if let Err(e) = store.renew_job_lease(id, &instance, until).await {
                    tracing::warn!(job = id, error = %e, "renewing a job's lease failed");
                }
            }
        };
        tokio::select! {
            _ = work => {}
            _ = renew => {}
        }
        self.inner.running.lock().expect("lock").remove(&id);
    }
}

/// A job being run: its row, the next event id, and how it is told to stop.
pub struct Run {
    jobs: Jobs,
    pub job: JobRow,
    next_id: i64,
    token: CancellationToken,
    /// When the database's cancel flag was last read.
    flag_checked: tokio::time::Instant,
}

/// Why a running job should stop now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Someone cancelled it.
    Cancelled,
    /// The server is stopping: leave the job to be picked up again.
    Shutdown,
}

impl Run {
    fn new(jobs: Jobs, job: JobRow) -> Self {
        Self {
            next_id: job.last_event_id + 1,
            jobs,
            job,
            token: CancellationToken::new(),
            flag_checked: tokio::time::Instant::now(),
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.jobs.inner.store
    }

    /// The stream-token signer.
    pub fn signer(&self) -> &Signer {
        &self.jobs.inner.signer
    }

    /// Whether this job has sent any event before (it is resuming after a restart).
    pub fn resuming(&self) -> bool {
        self.job.last_event_id > 0
    }

    /// Records an event and the job's state after it. The event is stored, then published,
    /// by the writer, in order; `wait` waits until it is stored (and says whether it was).
    pub async fn emit(&mut self, kind: JobEventKind, message: &str, wait: bool) -> bool {
        let job = &mut self.job;
        let status = kind.final_state().unwrap_or(JobState::Running);
        if kind == JobEventKind::Complete {
            job.step = job.total;
        }
        job.percent = if job.total > 0 {
            (job.step * 100 / job.total).clamp(0, 100)
        } else if kind == JobEventKind::Complete {
            100
        } else {
            0
        };
        job.message = message.to_string();
        job.status = status.as_str().to_string();
        let at = clock::now_ms();
        let data = JobEventData {
            job_id: job.id,
            step: job.step,
            total: job.total,
            percent: job.percent,
            message: job.message.clone(),
            at: clock::rfc3339(at),
        };
        let event = NewJobEvent {
            job_id: job.id,
            id: self.next_id,
            event: kind.as_str().to_string(),
            data: serde_json::to_string(&data).expect("serializable"),
            status: job.status.clone(),
            step: job.step,
            total: job.total,
            percent: job.percent,
            message: job.message.clone(),
            checkpoint: job.checkpoint.clone(),
            at,
        };
        self.next_id += 1;
        job.last_event_id = event.id;
        let (done, stored) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if self
            .jobs
            .inner
            .writer
            .send(Write { event, done })
            .await
            .is_err()
        {
            return false;
        }
        match stored {
            Some(rx) => rx.await.unwrap_or(false),
            None => true,
        }
    }

    /// Ends the job with a terminal event, waiting until it is stored.
    pub async fn finish(&mut self, kind: JobEventKind, message: &str) {
        if !self.emit(kind, message, true).await {
            tracing::error!(
                job = self.job.id,
                "the job's last event could not be stored"
            );
        }
    }

    /// Ends the job as cancelled.
    pub async fn cancelled(&mut self) {
        let message = format!("Cancelled at step {} of {}.", self.job.step, self.job.total);
        self.finish(JobEventKind::Cancelled, &message).await;
    }

    /// Whether the job must stop now: cancelled (in this process, or through the database
    /// flag, read at most once a second) or shutdown.
    pub async fn should_stop(&mut self) -> Option<Stop> {
        if self.token.is_cancelled() {
            return Some(Stop::Cancelled);
        }
        if self.jobs.inner.shutdown.is_triggered() {
            return Some(Stop::Shutdown);
        }
        if self.flag_checked.elapsed() >= Duration::from_secs(1) {
            self.flag_checked = tokio::time::Instant::now();
            if self
                .store()
                .job_cancel_requested(self.job.id)
                .await
                .unwrap_or(false)
            {
                return Some(Stop::Cancelled);
            }
        }
        None
    }

    /// Waits `delay`, unless the job is cancelled or the server stops first; renews the lease
    /// during long waits.
    pub async fn pause(&mut self, delay: Duration) -> Option<Stop> {
        let until = tokio::time::Instant::now() + delay;
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                return self.should_stop().await;
            }
            let slice = (until - now).min(LEASE / 3);
            tokio::select! {
                _ = tokio::time::sleep(slice) => {}
                _ = self.token.cancelled() => return Some(Stop::Cancelled),
                _ = self.jobs.inner.shutdown.cancelled() => return Some(Stop::Shutdown),
            }
            if let Some(stop) = self.should_stop().await {
                return Some(stop);
            }
            if tokio::time::Instant::now() < until {
                let now_ms = clock::now_ms();
                let _ = self
                    .store()
                    .renew_job_lease(
                        self.job.id,
                        &self.jobs.inner.instance,
                        now_ms + LEASE.as_millis() as i64,
                    )
                    .await;
            }
        }
    }

    /// Resolves when the job is cancelled here or the server stops (for waits that cannot be
    /// cut into slices, like reading a source).
    pub async fn interrupted(&self) -> Stop {
        tokio::select! {
            _ = self.token.cancelled() => Stop::Cancelled,
            _ = self.jobs.inner.shutdown.cancelled() => Stop::Shutdown,
        }
    }

    /// Handles a stop: a cancel ends the job; a shutdown leaves it for the next start.
    pub async fn stopped(&mut self, stop: Stop) {
        match stop {
            Stop::Cancelled => self.cancelled().await,
            Stop::Shutdown => tracing::info!(
                job = self.job.id,
                step = self.job.step,
                "server stopping: the job will continue at the next start"
            ),
        }
    }
}

/// The writer: stores waiting events in batches, then publishes them. Ends when every
/// sender (the queue and its workers) is gone.
///
/// After shutdown it keeps storing until nothing has arrived for [`WRITE_LINGER`] (the
/// workers stop at their next step), so what a job reported is not lost with the process.
async fn write_events(
    store: Store,
    bus: Arc<dyn Bus>,
    shutdown: Shutdown,
    mut rx: mpsc::Receiver<Write>,
) {
    let mut batch: Vec<Write> = Vec::with_capacity(WRITE_BATCH);
    loop {
        batch.clear();
        let received = shutdown
            .recv_batch(&mut rx, &mut batch, WRITE_BATCH, WRITE_LINGER)
            .await;
        if received == 0 {
            return;
        }
        let events: Vec<NewJobEvent> = batch.iter().map(|w| w.event.clone()).collect();
        // Retried until stored (a batch is idempotent), so an outage of the database leaves no
        // gap in the ids; meanwhile the queue fills and the jobs wait. Only shutdown gives up:
        // the jobs then continue from what was stored.
        let mut stored = false;
        let mut attempt = 0u32;
        loop {
            let lease_until = clock::now_ms() + LEASE.as_millis() as i64;
            match store.append_job_events(&events, lease_until).await {
                Ok(()) => {
                    stored = true;
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::error!(error = %e, attempt, events = events.len(), "storing job events failed");
                    if shutdown.is_triggered() && attempt >= 3 {
                        break;
                    }
                    let wait =
                        retry::backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled(), if attempt >= 3 => break,
                    }
                }
            }
        }
        for write in batch.drain(..) {
            if stored {
                let e = write.event;
                bus.publish(Envelope::new(topic(e.job_id), e.id, e.event, e.data));
            }
            if let Some(done) = write.done {
                let _ = done.send(stored);
            }
        }
    }
}

/// The demo job: `steps` steps of `stepMs` each, a `warning` at each `warnAt` step, failing at
/// `failAt`. Its checkpoint is the last step done, so a restart continues from there.
async fn run_demo(run: &mut Run) {
    // The request was checked by the route before it was queued.
    let p: CreateJob = serde_json::from_str(&run.job.params).unwrap_or_default();
    let steps = p.steps();
    run.job.total = steps;
    let done: i64 = run.job.checkpoint.parse().unwrap_or(0);
    run.job.step = done;
    if run.resuming() {
        let message = format!(
            "The server restarted; continuing after step {done} of {}.",
            steps
        );
        run.emit(JobEventKind::Warning, &message, false).await;
    } else {
        run.emit(JobEventKind::Started, "Started.", false).await;
    }
    for step in done + 1..=steps {
        if let Some(stop) = run.pause(Duration::from_millis(p.step_ms() as u64)).await {
            return run.stopped(stop).await;
        }
        run.job.step = step;
        if p.fail_at == Some(step) {
            let message = format!("Step {step} of {steps} failed (failAt).");
            return run.finish(JobEventKind::Failed, &message).await;
        }
        if p.warn_at.contains(&step) {
            let message = format!("Step {step} needs a look (warnAt).");
            run.emit(JobEventKind::Warning, &message, false).await;
        }
        // The checkpoint moves with the progress event: a restart between the two redoes
        // the step rather than skipping its progress event.
        run.job.checkpoint = step.to_string();
        let message = format!("Step {step} of {steps} done.");
        run.emit(JobEventKind::Progress, &message, false).await;
    }
    let message = format!("All {steps} steps done.");
    run.finish(JobEventKind::Complete, &message).await;
}
