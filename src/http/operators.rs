//! `/api/v1/operators`: ERP operators, the tenant each works in, and their sign-in state.

use super::AppState;
use super::{Admin, ApiJson};
use crate::domain::{OperatorCode, OperatorInput};
use crate::error::{ApiError, Problem};
use crate::store::models::Operator;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/operators", get(list))
        .route("/api/v1/operators/{code}", get(self::get).put(put))
}

fn path_code(raw: &str) -> Result<OperatorCode, ApiError> {
    OperatorCode::parse(raw).map_err(|_| ApiError::NotFound(format!("operator '{raw}' does not exist")))
}

#[utoipa::path(get, path = "/api/v1/operators", tag = "operators", security(("api_key" = [])),
    responses((status = 200, body = [Operator]), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<Operator>>, ApiError> {
    Ok(Json(state.store.list_operators().await?))
}

#[utoipa::path(get, path = "/api/v1/operators/{code}", tag = "operators", security(("api_key" = [])),
    responses((status = 200, body = Operator), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn get(State(state): State<AppState>, _: Admin, Path(code): Path<String>) -> Result<Json<Operator>, ApiError> {
    Ok(Json(state.store.get_operator(&path_code(&code)?).await?))
}

#[utoipa::path(put, path = "/api/v1/operators/{code}", tag = "operators", security(("api_key" = [])), request_body = OperatorInput,
    responses((status = 200, body = Operator), (status = 201, body = Operator), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn put(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(code): Path<String>,
    ApiJson(input): ApiJson<OperatorInput>,
) -> Result<(StatusCode, Json<Operator>), ApiError> {
    let op = input.parse(&code).map_err(ApiError::Validation)?;
    let (saved, created) = state.store.put_operator(caller.actor(), &op).await?;
    state.tokens.forget_operator(&saved.code);
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(saved)))
}
