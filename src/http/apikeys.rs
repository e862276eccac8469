//! `/api/v1/apikeys`: API keys for ERP clients and administrators (admin only).

use super::AppState;
use super::{Admin, ApiJson};
use crate::error::{ApiError, Problem};
use crate::store::models::{ApiKey, Role};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{delete, get};
    axum::Router::new()
        .route("/api/v1/apikeys", get(list).post(create))
        .route("/api/v1/apikeys/{id}", delete(revoke))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInput {
    pub name: String,
    pub role: Role,
}

/// A new key: the only time `key` is ever returned.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// Send as `Authorization: Bearer <key>`. Shown once; only its hash is stored.
    pub key: String,
}

#[utoipa::path(get, path = "/api/v1/apikeys", tag = "apikeys", security(("api_key" = [])), responses((status = 200, body = [ApiKey])))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<ApiKey>>, ApiError> {
    Ok(Json(state.store.list_api_keys().await?))
}

#[utoipa::path(post, path = "/api/v1/apikeys", tag = "apikeys", security(("api_key" = [])), request_body = ApiKeyInput,
    responses((status = 201, body = ApiKeyCreated), (status = 409, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(input): ApiJson<ApiKeyInput>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    let (api_key, token) = state.store.create_api_key(caller.actor(), &input.name, input.role).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            api_key,
            key: token.expose_secret().to_string(),
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/apikeys/{id}", tag = "apikeys", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn revoke(State(state): State<AppState>, Admin(caller): Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.store.revoke_api_key(caller.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
