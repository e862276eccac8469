//! `/api/v1/tenants`: the Microsoft 365 tenants this installation serves (admin only).

use super::AppState;
use super::{Admin, ApiJson};
use crate::domain::{TenantCode, TenantInput};
use crate::error::{ApiError, Problem};
use crate::store::models::Tenant;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/tenants", get(list).post(create))
        .route("/api/v1/tenants/{code}", get(self::get).put(replace).delete(delete))
}

/// A tenant as saved, with notes about input that was accepted but ignored.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantSaved {
    #[serde(flatten)]
    pub tenant: Tenant,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A code from the URL; one that cannot be a tenant code names no tenant.
pub(crate) fn path_code(raw: &str) -> Result<TenantCode, ApiError> {
    TenantCode::parse(raw).map_err(|_| ApiError::NotFound(format!("tenant '{raw}' does not exist")))
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", security(("api_key" = [])),
    responses((status = 200, body = [Tenant]), (status = 401, body = Problem), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<Tenant>>, ApiError> {
    Ok(Json(state.store.list_tenants().await?))
}

#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", security(("api_key" = [])), request_body = TenantInput,
    responses((status = 201, body = TenantSaved), (status = 409, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(input): ApiJson<TenantInput>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = input.parse(None, state.settings.emulator()).map_err(ApiError::Validation)?;
    let saved = state.store.create_tenant(caller.actor(), &tenant).await?;
    let location = format!("/api/v1/tenants/{}", saved.code);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(TenantSaved {
            tenant: saved,
            warnings: tenant.warnings,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/tenants/{code}", tag = "tenants", security(("api_key" = [])),
    responses((status = 200, body = Tenant), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn get(State(state): State<AppState>, _: Admin, Path(code): Path<String>) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(state.store.get_tenant(&path_code(&code)?).await?))
}

#[utoipa::path(put, path = "/api/v1/tenants/{code}", tag = "tenants", security(("api_key" = [])), request_body = TenantInput,
    responses((status = 200, body = TenantSaved), (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn replace(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(code): Path<String>,
    ApiJson(input): ApiJson<TenantInput>,
) -> Result<Json<TenantSaved>, ApiError> {
    let code = path_code(&code)?;
    let tenant = input
        .parse(Some(code.as_str()), state.settings.emulator())
        .map_err(ApiError::Validation)?;
    let saved = state.store.replace_tenant(caller.actor(), &tenant).await?;
    state.tokens.forget_tenant(&code);
    Ok(Json(TenantSaved {
        tenant: saved,
        warnings: tenant.warnings,
    }))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{code}", tag = "tenants", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem, description = "operators still use the tenant")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn delete(State(state): State<AppState>, Admin(caller): Admin, Path(code): Path<String>) -> Result<StatusCode, ApiError> {
    let code = path_code(&code)?;
    state.store.delete_tenant(caller.actor(), &code).await?;
    state.tokens.forget_tenant(&code);
    Ok(StatusCode::NO_CONTENT)
}
