//! `/api/v1/audit`: who changed what, newest first (admin only; never holds secret values).

use super::Admin;
use super::AppState;
use crate::error::ApiError;
use crate::store::models::AuditEntry;
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new().route("/api/v1/audit", get(list))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many entries (1–1000, default 100).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("api_key" = [])), params(AuditQuery),
    responses((status = 200, body = [AuditEntry])))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, _: Admin, Query(q): Query<AuditQuery>) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 1000"));
    }
    Ok(Json(state.store.list_audit(limit).await?))
}
