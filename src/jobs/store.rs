//! Durable jobs and their events.
//!
//! A job row holds its request, its state, where it can pick up again (`checkpoint`), the id
//! of its latest event, and who runs it (`claimed_by`, `lease_until`). Events are stored with
//! ids 1, 2, 3… per job *before* anyone is told of them; [`Store::append_job_events`] writes a
//! whole batch from many jobs in one transaction (one multi-row insert, one update per job),
//! which is what lets hundreds of jobs report at once without a transaction per event.
//!
//! Claiming is a single conditional `UPDATE … WHERE status = 'queued'`, so two workers never
//! run one job; a claim is a lease that the runner renews, and a job whose lease ran out
//! (its process died) is queued again by [`Store::requeue_stale_jobs`]. Claims are fair
//! across owners: the next job is the oldest of the owner with the fewest running, and an
//! owner at the cap of running jobs waits, so one user's backlog never holds every worker.
//! Ended jobs older than the retention go with their events ([`Store::prune_ended_jobs`]).
//!
//! Tests: `cargo test --features ssr jobs::store`.
//!
//! Length: about 700 lines, a third of them tests (claims under contention, fairness, quotas
//! on both engines' rules); the queries themselves are under 500.

use sqlx::Row;

use crate::server::storage::{
    audit::insert_audit, placeholders, Backend, Store, ROWS_PER_STATEMENT,
};

/// A stored job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    pub id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub kind: String,
    /// The request, as JSON.
    pub params: String,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub step: i64,
    pub total: i64,
    pub percent: i64,
    pub message: String,
    /// Where the job picks up again after a restart (kind-specific text).
    pub checkpoint: String,
    pub last_event_id: i64,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A job event about to be stored, with the job's state after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJobEvent {
    pub job_id: i64,
    /// The event's id within its job (the previous one + 1).
    pub id: i64,
    /// The SSE event name.
    pub event: String,
    /// The event's JSON data.
    pub data: String,
    /// The job's state after this event.
    pub status: String,
    pub step: i64,
    pub total: i64,
    pub percent: i64,
    pub message: String,
    pub checkpoint: String,
    pub at: i64,
}

/// A stored job event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredJobEvent {
    pub id: i64,
    pub event: String,
    pub data: String,
}

const JOB_COLUMNS: &str =
    "id, owner_id, owner, kind, params, status, step, total, percent, message, \
     checkpoint, last_event_id, cancel_requested, created_at, updated_at";

fn job_from(row: &sqlx::any::AnyRow) -> sqlx::Result<JobRow> {
    Ok(JobRow {
        id: row.try_get(0)?,
        owner_id: row.try_get(1)?,
        owner: row.try_get(2)?,
        kind: row.try_get(3)?,
        params: row.try_get(4)?,
        status: row.try_get(5)?,
        step: row.try_get(6)?,
        total: row.try_get(7)?,
        percent: row.try_get(8)?,
        message: row.try_get(9)?,
        checkpoint: row.try_get(10)?,
        last_event_id: row.try_get(11)?,
        cancel_requested: row.try_get::<i64, _>(12)? != 0,
        created_at: row.try_get(13)?,
        updated_at: row.try_get(14)?,
    })
}

/// A job about to be queued.
#[derive(Clone, Copy, Debug)]
pub struct NewJob<'a> {
    /// Its owner's account id (quotas count by it).
    pub owner_id: i64,
    /// Its owner's username (shown, and used for fairness between owners).
    pub owner: &'a str,
    /// `demo` or `import`.
    pub kind: &'a str,
    /// The kind's parameters, as JSON text.
    pub params: &'a str,
    /// Steps it will take (0: not known yet).
    pub total: i64,
    /// When it was queued (ms since the epoch).
    pub at: i64,
}

/// Inserts a queued job, on the pool or inside a transaction.
async fn insert_job<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    job: &NewJob<'_>,
) -> sqlx::Result<JobRow> {
    let sql = format!(
        "INSERT INTO jobs (owner_id, owner, kind, params, status, total, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $6) RETURNING {JOB_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(job.owner_id)
        .bind(job.owner)
        .bind(job.kind)
        .bind(job.params)
        .bind(job.total)
        .bind(job.at)
        .fetch_one(db)
        .await?;
    job_from(&row)
}

impl Store {
    /// Stores a new queued job and returns it.
    pub async fn create_job(&self, job: &NewJob<'_>) -> sqlx::Result<JobRow> {
        insert_job(self.writer(), job).await
    }

    /// The job with this id.
    pub async fn job(&self, id: i64) -> sqlx::Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from).transpose()
    }

    /// A user's latest `limit` jobs, newest first.
    pub async fn jobs_of(&self, owner_id: i64, limit: i64) -> sqlx::Result<Vec<JobRow>> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE owner_id = $1 ORDER BY id DESC LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(owner_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from).collect()
    }

    /// How many of a user's jobs are queued or running.
    pub async fn count_open_jobs_of(&self, owner_id: i64) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE owner_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(owner_id)
        .fetch_one(&self.pool)
        .await
    }

    /// How many jobs are in `status`.
    pub async fn count_jobs(&self, status: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await
    }

    /// How many jobs are in each status (for `GET /metrics`).
    pub async fn jobs_by_status(&self) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")
            .fetch_all(&self.pool)
            .await
    }

    /// Queued and running jobs, in one query (for the live metrics).
    pub async fn job_counts(&self) -> sqlx::Result<(i64, i64)> {
        sqlx::query_as(
            "SELECT
                 COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0),
                 COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0)
             FROM jobs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Stores a new queued job, with its `JOB_CREATE` audit row, unless its owner already has
    /// `max_open` queued or running (`None`: no limit); `Err(open)` then. The count and the
    /// insert are one step: on SQLite writes run one at a time, on PostgreSQL a lock on the
    /// owner keeps two requests from both passing the count.
    pub async fn create_job_within(
        &self,
        job: &NewJob<'_>,
        max_open: Option<i64>,
    ) -> sqlx::Result<Result<JobRow, i64>> {
        // The count and the insert must see the same jobs. On SQLite a deferred transaction
        // that reads first fails with "database is locked" when a worker writes between its
        // read and its write, so it takes the write lock at once.
        let mut tx = match self.backend {
            Backend::Sqlite if max_open.is_some() => {
                self.writer().begin_with("BEGIN IMMEDIATE").await?
            }
            _ => self.writer().begin().await?,
        };
        if let Some(max) = max_open {
            if self.backend == Backend::Postgres {
                // Held until the transaction ends; keyed by the owner's id.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(job.owner_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE owner_id = $1 AND status IN ('queued', 'running')",
            )
            .bind(job.owner_id)
            .fetch_one(&mut *tx)
            .await?;
            if open >= max {
                return Ok(Err(open));
            }
        }
        let row = insert_job(&mut *tx, job).await?;
        // Its audit row in the same commit: one commit per job instead of two.
        let detail = serde_json::json!({"jobId": row.id, "kind": row.kind});
        insert_audit(&mut *tx, "JOB_CREATE", job.owner, &detail, job.at).await?;
        tx.commit().await?;
        Ok(Ok(row))
    }

    /// Claims a queued job for `instance` until `lease_until`, marking it running: the oldest
    /// of the owner with the fewest jobs running, among owners with fewer than
    /// `running_per_owner` running.
    ///
    /// One statement picks and claims, so many workers asking at once cost one statement
    /// each (a select-then-update loop made 200 workers retry each other quadratically).
    /// SQLite runs writes one at a time; PostgreSQL skips rows another claimer has locked.
    pub async fn claim_next_job(
        &self,
        instance: &str,
        now: i64,
        lease_until: i64,
        running_per_owner: i64,
    ) -> sqlx::Result<Option<JobRow>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE OF j SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // The running jobs are counted per owner once, then joined: a count per queued row
        // (a correlated subquery) cost 3 ms a claim with 200 queued and 200 running, and
        // 200 idle workers claiming at once waited 0.6 s for each other; this is 0.08 ms.
        let sql = format!(
            "UPDATE jobs SET status = 'running', claimed_by = $1, lease_until = $2, updated_at = $3
             WHERE id = (
                 WITH running AS (SELECT owner_id, COUNT(*) AS n FROM jobs
                                  WHERE status = 'running' GROUP BY owner_id)
                 SELECT j.id FROM jobs j LEFT JOIN running r ON r.owner_id = j.owner_id
                 WHERE j.status = 'queued' AND COALESCE(r.n, 0) < $4
                 ORDER BY COALESCE(r.n, 0), j.id LIMIT 1{lock})
               AND status = 'queued' RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(instance)
            .bind(lease_until)
            .bind(now)
            .bind(running_per_owner)
            .fetch_optional(self.writer())
            .await?;
        row.as_ref().map(job_from).transpose()
    }

    /// Deletes up to `limit` jobs that ended before `before` (ms), with their events; returns
    /// how many.
    pub async fn prune_ended_jobs(&self, before: i64, limit: i64) -> sqlx::Result<u64> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'cancelled')
             AND updated_at < $1 ORDER BY id LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        self.delete_ids(&ids, &["job_events WHERE job_id", "jobs WHERE id"])
            .await?;
        Ok(ids.len() as u64)
    }

    /// Claims job `id` if it is still queued (one conditional update: two claimers never
    /// both succeed).
    pub async fn claim_job(
        &self,
        id: i64,
        instance: &str,
        now: i64,
        lease_until: i64,
    ) -> sqlx::Result<Option<JobRow>> {
        let sql = format!(
            "UPDATE jobs SET status = 'running', claimed_by = $1, lease_until = $2, updated_at = $3
             WHERE id = $4 AND status = 'queued' RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(instance)
            .bind(lease_until)
            .bind(now)
            .bind(id)
            .fetch_optional(self.writer())
            .await?;
        row.as_ref().map(job_from).transpose()
    }

    /// Extends `instance`'s lease on a running job.
    pub async fn renew_job_lease(
        &self,
        id: i64,
        instance: &str,
        lease_until: i64,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND claimed_by = $3 AND status = 'running'",
        )
        .bind(lease_until)
        .bind(id)
        .bind(instance)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Queues again the running jobs whose lease ended before `now` (their runner died), or
    /// every running job when `all` (at the start of the only instance on an SQLite file).
    /// Returns their ids.
    pub async fn requeue_stale_jobs(&self, now: i64, all: bool) -> sqlx::Result<Vec<i64>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET status = 'queued', claimed_by = NULL, lease_until = NULL, updated_at = $1
             WHERE status = 'running' AND ($2 <> 0 OR lease_until IS NULL OR lease_until < $1)
             RETURNING id",
        )
        .bind(now)
        .bind(i64::from(all))
        .fetch_all(self.writer())
        .await?;
        Ok(ids)
    }

    /// Asks a queued or running job to stop. Returns the job's status before the request
    /// (`None`: no such job).
    pub async fn request_job_cancel(&self, id: i64) -> sqlx::Result<Option<String>> {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.writer())
            .await?;
        if matches!(status.as_deref(), Some("queued" | "running")) {
            sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1")
                .bind(id)
                .execute(self.writer())
                .await?;
        }
        Ok(status)
    }

    /// Whether someone asked the job to stop.
    pub async fn job_cancel_requested(&self, id: i64) -> sqlx::Result<bool> {
        let flag: Option<i64> =
            sqlx::query_scalar("SELECT cancel_requested FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(flag.unwrap_or(0) != 0)
    }

    /// Stores a batch of events (from any jobs) and each job's state after its last one, in
    /// one transaction. An event whose id is already stored is skipped, so a batch retried
    /// after an error never doubles an event. `lease_until` renews the runners' claims.
    pub async fn append_job_events(
        &self,
        events: &[NewJobEvent],
        lease_until: i64,
    ) -> sqlx::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer().begin().await?;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO job_events (job_id, id, event, data) VALUES {}
                 ON CONFLICT (job_id, id) DO NOTHING",
                placeholders(chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(e.job_id)
                    .bind(e.id)
                    .bind(e.event.as_str())
                    .bind(e.data.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        // Each job's state after its last event in the batch.
        let mut last: Vec<&NewJobEvent> = Vec::new();
        for e in events {
            match last.iter_mut().find(|l| l.job_id == e.job_id) {
                Some(l) if l.id < e.id => *l = e,
                Some(_) => {}
                None => last.push(e),
            }
        }
        // One statement per 32 jobs, not one per job: a batch of 512 events from 200 jobs
        // was 200 round trips to the database's thread.
        for chunk in last.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE jobs SET status = v.column2, step = v.column3, total = v.column4,
                 percent = v.column5, message = v.column6, checkpoint = v.column7,
                 last_event_id = v.column8, updated_at = v.column9,
                 lease_until = CASE WHEN v.column2 = 'running' THEN v.column10 ELSE NULL END
                 FROM (VALUES {}) AS v
                 WHERE jobs.id = v.column1 AND jobs.last_event_id < v.column8",
                placeholders(chunk.len(), 10)
            );
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(e.job_id)
                    .bind(e.status.as_str())
                    .bind(e.step)
                    .bind(e.total)
                    .bind(e.percent)
                    .bind(e.message.as_str())
                    .bind(e.checkpoint.as_str())
                    .bind(e.id)
                    .bind(e.at)
                    .bind(lease_until);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Up to `limit` of a job's events with ids above `after`, oldest first.
    pub async fn job_events_after(
        &self,
        job_id: i64,
        after: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<StoredJobEvent>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, event, data FROM job_events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, event, data)| StoredJobEvent { id, event, data })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A demo job of `total` steps by `owner`, queued at `at`.
    fn demo(owner_id: i64, owner: &'static str, total: i64, at: i64) -> NewJob<'static> {
        NewJob {
            owner_id,
            owner,
            kind: "demo",
            params: "{}",
            total,
            at,
        }
    }

    fn event(job: &JobRow, id: i64, event: &str, status: &str, step: i64) -> NewJobEvent {
        NewJobEvent {
            job_id: job.id,
            id,
            event: event.into(),
            data: format!("{{\"step\":{step}}}"),
            status: status.into(),
            step,
            total: 3,
            percent: step * 100 / 3,
            message: format!("step {step}"),
            checkpoint: step.to_string(),
            at: 1000 + id,
        }
    }

    #[tokio::test]
    async fn jobs_are_claimed_once_and_their_events_stored_in_order() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let owner = store.create_user("ann", "h", 0).await.unwrap().unwrap();
        let a = store.create_job(&demo(owner, "ann", 3, 1)).await.unwrap();
        let b = store.create_job(&demo(owner, "ann", 3, 2)).await.unwrap();
        assert_eq!(a.status, "queued");
        assert_eq!(store.job_counts().await.unwrap(), (2, 0));

        let first = store
            .claim_next_job("w1", 5, 100, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.job_counts().await.unwrap(), (1, 1));
        let second = store
            .claim_next_job("w2", 5, 100, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.id, second.id), (a.id, b.id));
        assert_eq!(first.status, "running");
        assert!(store
            .claim_next_job("w3", 5, 100, 10)
            .await
            .unwrap()
            .is_none());

        let batch = [
            event(&a, 1, "started", "running", 0),
            event(&b, 1, "started", "running", 0),
            event(&a, 2, "progress", "running", 1),
            event(&a, 3, "complete", "completed", 3),
        ];
        store.append_job_events(&batch, 200).await.unwrap();
        // A retried batch does not double anything.
        store.append_job_events(&batch[..2], 200).await.unwrap();
        let events = store.job_events_after(a.id, 0, 10).await.unwrap();
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(events[2].event, "complete");
        assert_eq!(store.job_events_after(a.id, 2, 10).await.unwrap().len(), 1);
        let a_now = store.job(a.id).await.unwrap().unwrap();
        assert_eq!(
            (a_now.status.as_str(), a_now.last_event_id, a_now.percent),
            ("completed", 3, 100)
        );
        let b_now = store.job(b.id).await.unwrap().unwrap();
        assert_eq!((b_now.status.as_str(), b_now.last_event_id), ("running", 1));
        assert_eq!(
            store.job_counts().await.unwrap(),
            (0, 1),
            "a completed, b running"
        );

        let listed: Vec<i64> = store
            .jobs_of(owner, 10)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(listed, [b.id, a.id], "newest first");
    }

    #[tokio::test]
    async fn claims_are_fair_across_owners_and_capped_per_owner() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let ann = store.create_user("ann", "h", 0).await.unwrap().unwrap();
        let bob = store.create_user("bob", "h", 0).await.unwrap().unwrap();
        // Ann's backlog first, then one job of Bob's.
        let mut anns = Vec::new();
        for i in 0..5 {
            anns.push(store.create_job(&demo(ann, "ann", 1, i)).await.unwrap().id);
        }
        let bobs = store.create_job(&demo(bob, "bob", 1, 9)).await.unwrap().id;
        let claim = || async { store.claim_next_job("w", 10, 1000, 2).await.unwrap() };
        assert_eq!(claim().await.unwrap().id, anns[0], "the oldest first");
        assert_eq!(
            claim().await.unwrap().id,
            bobs,
            "then the owner with none running"
        );
        assert_eq!(claim().await.unwrap().id, anns[1]);
        assert!(claim().await.is_none(), "Ann is at her cap of 2 running");
    }

    #[tokio::test]
    async fn the_open_job_quota_and_pruning() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let ann = store.create_user("ann", "h", 0).await.unwrap().unwrap();
        for i in 0..2 {
            let made = store
                .create_job_within(&demo(ann, "ann", 3, i), Some(2))
                .await
                .unwrap();
            assert!(made.is_ok());
        }
        let refused = store
            .create_job_within(&demo(ann, "ann", 3, 5), Some(2))
            .await
            .unwrap();
        assert_eq!(refused.unwrap_err(), 2);
        // Each stored job has its audit row (written in the same commit); the refused one none.
        let audit = store.recent_audit(10).await.unwrap();
        let created: Vec<_> = audit.iter().filter(|a| a.action == "JOB_CREATE").collect();
        assert_eq!(created.len(), 2, "{audit:?}");
        assert!(created.iter().all(|a| a.username == "ann"));
        // An ended job frees its place, and goes (with its events) once old enough.
        let job = store
            .claim_next_job("w", 10, 1000, 5)
            .await
            .unwrap()
            .unwrap();
        let mut done = event(&job, 1, "complete", "completed", 3);
        done.at = 100;
        store.append_job_events(&[done], 0).await.unwrap();
        assert!(store
            .create_job_within(&demo(ann, "ann", 3, 6), Some(2))
            .await
            .unwrap()
            .is_ok());
        assert_eq!(
            store.prune_ended_jobs(50, 10).await.unwrap(),
            0,
            "not old enough"
        );
        assert_eq!(store.prune_ended_jobs(101, 10).await.unwrap(), 1);
        assert!(store.job(job.id).await.unwrap().is_none());
        assert!(store
            .job_events_after(job.id, 0, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.count_open_jobs_of(ann).await.unwrap(),
            2,
            "the others stay"
        );
    }

    #[tokio::test]
    async fn quota_creates_succeed_while_other_connections_write() {
        // A deferred transaction that counts first failed here with "database is locked"
        // whenever a worker's write landed between its count and its insert.
        let (_dir, store) = crate::server::storage::temp_store().await;
        let ann = store.create_user("ann", "h", 0).await.unwrap().unwrap();
        let bob = store.create_user("bob", "h", 0).await.unwrap().unwrap();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    store.create_job(&demo(bob, "bob", 1, i)).await.unwrap();
                    store.claim_next_job("w", i, i + 1000, 1000).await.unwrap();
                }
            })
        };
        let creates = (0..100).map(|i| {
            let store = store.clone();
            async move {
                store
                    .create_job_within(&demo(ann, "ann", 1, i), Some(1000))
                    .await
            }
        });
        for made in futures::future::join_all(creates).await {
            assert!(made.unwrap().is_ok());
        }
        writer.await.unwrap();
        assert_eq!(store.count_open_jobs_of(ann).await.unwrap(), 100);
    }

    #[tokio::test]
    async fn stale_claims_are_queued_again_and_cancel_is_recorded() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let owner = store.create_user("bob", "h", 0).await.unwrap().unwrap();
        let job = store.create_job(&demo(owner, "bob", 3, 1)).await.unwrap();
        store
            .claim_next_job("dead", 10, 50, 10)
            .await
            .unwrap()
            .unwrap();
        assert!(store
            .requeue_stale_jobs(40, false)
            .await
            .unwrap()
            .is_empty());
        assert!(store.renew_job_lease(job.id, "dead", 60).await.unwrap());
        assert!(!store.renew_job_lease(job.id, "other", 60).await.unwrap());
        assert_eq!(store.requeue_stale_jobs(70, false).await.unwrap(), [job.id]);
        assert_eq!(store.job(job.id).await.unwrap().unwrap().status, "queued");

        store
            .claim_next_job("alive", 80, 10_000, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.requeue_stale_jobs(90, true).await.unwrap(), [job.id]);

        assert!(!store.job_cancel_requested(job.id).await.unwrap());
        assert_eq!(
            store.request_job_cancel(job.id).await.unwrap().as_deref(),
            Some("queued")
        );
        assert!(store.job_cancel_requested(job.id).await.unwrap());
        assert_eq!(store.request_job_cancel(9999).await.unwrap(), None);
    }
}
