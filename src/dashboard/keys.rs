//! `POST/GET /api/keys`, `DELETE /api/keys/{id}`: the admin's API keys for other servers
//! (docs/interface.md, "Publishing from other servers"). The key is shown once, in the 201;
//! the database keeps its SHA-256 (`server::storage::api_keys`). Making and revoking a key
//! takes an admin session: a key is never accepted here (`Publisher` is taken only by the
//! publishing routes), so a key cannot make another key. Both write an audit row.
//!
//! Tests: `tests/it/connections.rs`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
    Json, Router,
};

use crate::{
    protocol::keys::{key_name_problem, CreateKey, CreatedKey, KeyInfo, KeyList},
    server::{
        access::identity::AdminUser, clock, storage::api_keys::ApiKeyRow, ApiError, ApiJson,
        AppState,
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/keys", get(list).post(create))
        .route("/api/keys/{id}", delete(revoke))
}

fn info(row: ApiKeyRow) -> KeyInfo {
    KeyInfo {
        id: row.id,
        name: row.name,
        created_at: clock::rfc3339(row.created_at),
        last_used_at: row.last_used_at.map(clock::rfc3339),
        created_by: row.created_by,
    }
}

async fn list(State(state): State<AppState>, _admin: AdminUser) -> Result<Json<KeyList>, ApiError> {
    let keys = state.store.api_keys().await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(info).collect(),
    }))
}

async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let name = body.name.trim();
    if let Some(problem) = key_name_problem(name) {
        return Err(ApiError::bad_request("invalid_key_name", problem));
    }
    // The name signs the key's messages: it must not pass for a person or another key.
    if state.store.user_by_name(name).await?.is_some() || state.store.api_key_named(name).await? {
        return Err(ApiError::Conflict {
            code: "name_taken",
            message: format!("{name} already names an account or a key; pick another name."),
        });
    }
    let now = clock::now_ms();
    let (row, key) = state
        .store
        .create_api_key(name, &admin.user.username, now)
        .await?;
    let detail = serde_json::json!({ "by": admin.user.username, "id": row.id });
    state.store.audit("KEY_CREATE", name, &detail, now).await?;
    tracing::info!(key = %row.id, name, by = %admin.user.username, "an admin made an API key");
    let created = CreatedKey {
        id: row.id,
        name: row.name,
        key,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let now = clock::now_ms();
    if !state.store.revoke_api_key(&id, now).await? {
        return Err(ApiError::NotFound(format!(
            "No live API key has the id {id}."
        )));
    }
    let detail = serde_json::json!({ "by": admin.user.username, "id": id });
    state.store.audit("KEY_REVOKE", &id, &detail, now).await?;
    tracing::info!(key = %id, by = %admin.user.username, "an admin revoked an API key");
    Ok(StatusCode::NO_CONTENT)
}
