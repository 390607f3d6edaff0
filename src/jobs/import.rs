//! The `import` job: consumes an NDJSON export stream as it arrives (contract, "Import").
//!
//! Not built yet (see issue 4's notes): the route refuses import requests with a clear 400
//! and a job of this kind that somehow exists fails with the reason.

use axum::response::Response;

use super::runner::{Jobs, Run};
use crate::{
    protocol::jobs::{CreateJob, JobEventKind},
    server::{ApiError, AppState, CurrentUser},
};

/// `POST /api/jobs {"kind":"import"}` and `POST /api/audit/import`.
pub async fn create(
    _state: &AppState,
    _jobs: &Jobs,
    user: &CurrentUser,
    _body: &CreateJob,
) -> Result<Response, ApiError> {
    if !user.user.is_admin() {
        return Err(ApiError::Forbidden(
            "Only admins may import audit rows.".into(),
        ));
    }
    Err(ApiError::BadRequest {
        code: "not_available",
        message: "Imports are not available on this server yet.".into(),
    })
}

/// Runs an import job.
pub async fn run_import(run: &mut Run) {
    run.finish(
        JobEventKind::Failed,
        "Imports are not available on this server yet.",
    )
    .await;
}
