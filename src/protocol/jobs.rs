//! Jobs: what `POST /api/jobs` takes, what the status and list routes answer, and the data
//! of every job event on the SSE stream (docs/interface.md, "Jobs").

use serde::{Deserialize, Serialize};

/// Most steps a demo job may have.
pub const STEPS_MAX: u32 = 10_000;
/// Longest step of a demo job, in ms.
pub const STEP_MS_MAX: u32 = 60_000;
/// The demo job's defaults.
pub const STEPS_DEFAULT: u32 = 20;
pub const STEP_MS_DEFAULT: u32 = 250;

/// `POST /api/jobs` body. Fields other than `kind` depend on the kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJob {
    /// `demo` or `import`.
    pub kind: String,
    /// Demo: number of steps (1..=STEPS_MAX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<i64>,
    /// Demo: time per step in ms (0..=STEP_MS_MAX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<i64>,
    /// Demo: steps that send a `warning` event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warn_at: Vec<i64>,
    /// Demo: the step at which the job fails (none: it completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_at: Option<i64>,
    /// Import: the export URL to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl CreateJob {
    /// A demo job's number of steps (the default when not given).
    pub fn steps(&self) -> i64 {
        self.steps.unwrap_or(i64::from(STEPS_DEFAULT))
    }

    /// A demo job's time per step in ms (the default when not given).
    pub fn step_ms(&self) -> i64 {
        self.step_ms.unwrap_or(i64::from(STEP_MS_DEFAULT))
    }
}

/// `201` answer to `POST /api/jobs` (and `POST /api/audit/import`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCreated {
    pub id: i64,
    pub kind: String,
    pub status: JobState,
    pub events_url: String,
    pub status_url: String,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    /// The documented word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `word`.
    pub fn parse(word: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }

    /// Whether the job has ended (no event will follow).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// `GET /api/jobs/{id}`: a job's current state (with an `ETag` for cheap polling).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub id: i64,
    pub kind: String,
    pub status: JobState,
    pub percent: i64,
    pub message: String,
    /// Current step and the number of steps (rows for an import).
    pub step: i64,
    pub total: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Id of the job's latest event (0: none yet): an SSE stream resumes after it.
    pub last_event_id: i64,
    /// The owner's username.
    pub owner: String,
}

/// `GET /api/jobs`: the caller's jobs, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobStatus>,
}

/// The SSE event names of a job stream.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobEventKind {
    Started,
    Progress,
    Warning,
    Complete,
    Failed,
    Cancelled,
}

impl JobEventKind {
    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Progress => "progress",
            Self::Warning => "warning",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The kind named `word`.
    pub fn parse(word: &str) -> Option<Self> {
        [
            Self::Started,
            Self::Progress,
            Self::Warning,
            Self::Complete,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == word)
    }

    /// The state a job is in after this event, if it changes it.
    pub fn final_state(self) -> Option<JobState> {
        match self {
            Self::Complete => Some(JobState::Completed),
            Self::Failed => Some(JobState::Failed),
            Self::Cancelled => Some(JobState::Cancelled),
            _ => None,
        }
    }
}

/// The `data:` of every job event.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEventData {
    pub job_id: i64,
    pub step: i64,
    pub total: i64,
    pub percent: i64,
    pub message: String,
    pub at: String,
}

/// One stored job event, as the page's first render and the polling view carry it.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    pub id: i64,
    pub event: JobEventKind,
    pub data: JobEventData,
}

/// What the `/jobs` page renders first (on the server): the selected job with its latest
/// events, and the user's recent jobs. The live stream continues after `status.lastEventId`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobsSnapshot {
    /// The signed-in user's name (`None`: nobody is signed in).
    pub user: Option<String>,
    /// Whether that user is an admin (who may start imports).
    #[serde(default)]
    pub admin: bool,
    /// The selected job, if any (and if the user may see it).
    pub job: Option<JobStatus>,
    /// Its latest events, oldest first.
    pub events: Vec<JobEvent>,
    /// The user's recent jobs, newest first.
    pub recent: Vec<JobStatus>,
}

/// `POST /api/audit/import` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shapes() {
        let body: CreateJob = serde_json::from_str(
            r#"{"kind":"demo","steps":20,"stepMs":250,"warnAt":[7],"failAt":null}"#,
        )
        .unwrap();
        assert_eq!(body.steps, Some(20));
        assert_eq!(body.step_ms, Some(250));
        assert_eq!(body.warn_at, [7]);
        assert_eq!(body.fail_at, None);
        let created = JobCreated {
            id: 4,
            kind: "demo".into(),
            status: JobState::Queued,
            events_url: "/api/jobs/4/events".into(),
            status_url: "/api/jobs/4".into(),
        };
        assert_eq!(
            serde_json::to_value(&created).unwrap(),
            serde_json::json!({"id":4,"kind":"demo","status":"queued",
                "eventsUrl":"/api/jobs/4/events","statusUrl":"/api/jobs/4"})
        );
        let data = JobEventData {
            job_id: 4,
            step: 3,
            total: 20,
            percent: 15,
            message: "step 3 of 20".into(),
            at: "2026-11-23T00:00:00.000Z".into(),
        };
        let keys: Vec<String> = serde_json::to_value(&data)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["at", "jobId", "message", "percent", "step", "total"]);
        for state in ["queued", "running", "completed", "failed", "cancelled"] {
            assert_eq!(JobState::parse(state).unwrap().as_str(), state);
        }
        for kind in [
            "started",
            "progress",
            "warning",
            "complete",
            "failed",
            "cancelled",
        ] {
            assert_eq!(JobEventKind::parse(kind).unwrap().as_str(), kind);
        }
        assert!(serde_json::from_str::<CreateJob>(r#"{"kind":"demo","stpes":3}"#).is_err());
    }

    // Property (proptest): every job event reads back as itself.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(crate::properties::config(512))]

            #[test]
            fn every_job_event_round_trips(event in any::<JobEvent>()) {
                let text = serde_json::to_string(&event).unwrap();
                prop_assert_eq!(JobEventKind::parse(event.event.as_str()), Some(event.event));
                prop_assert_eq!(serde_json::from_str::<JobEvent>(&text).unwrap(), event);
            }
        }
    }
}
