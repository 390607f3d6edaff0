//! `GET /healthz` (the process serves) and `GET /readyz` (its dependencies answer).

use axum::{extract::State, http::StatusCode, routing::get, Router};

use crate::server::{error::ApiError, state::AppState};

/// The health routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, &'static str), ApiError> {
    if !state.store.ping().await {
        return Err(ApiError::Unavailable(
            "The database does not answer.".into(),
        ));
    }
    if !state.bus.ready() {
        return Err(ApiError::Unavailable(
            "Redis does not answer: this instance serves its own clients only.".into(),
        ));
    }
    Ok((StatusCode::OK, "ok"))
}
