//! `/api/v1/companies`: the ERP's companies, which email profiles apply to (admin only).

use super::{Admin, ApiJson, AppState};
use crate::domain::CompanyCode;
use crate::error::{ApiError, Problem};
use crate::store::models::Company;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/companies", get(list))
        .route("/api/v1/companies/{code}", get(self::get).put(put).delete(delete))
}

/// `PUT /api/v1/companies/{code}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyInput {
    /// The company's name, 1–100 characters.
    pub name: String,
}

impl CompanyInput {
    /// The name, checked.
    pub fn parse(&self) -> Result<String, ApiError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ApiError::validation(
                "name",
                "must be 1 to 100 characters, without control characters",
            ));
        }
        Ok(name.to_string())
    }
}

fn path_code(raw: &str) -> Result<CompanyCode, ApiError> {
    CompanyCode::parse(raw).map_err(|_| ApiError::NotFound(format!("company '{raw}' does not exist")))
}

#[utoipa::path(get, path = "/api/v1/companies", tag = "companies", security(("api_key" = [])),
    responses((status = 200, body = [Company]), (status = 401, body = Problem), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<Company>>, ApiError> {
    Ok(Json(state.store.list_companies().await?))
}

#[utoipa::path(get, path = "/api/v1/companies/{code}", tag = "companies", security(("api_key" = [])),
    responses((status = 200, body = Company), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn get(State(state): State<AppState>, _: Admin, Path(code): Path<String>) -> Result<Json<Company>, ApiError> {
    Ok(Json(state.store.get_company(&path_code(&code)?).await?))
}

#[utoipa::path(put, path = "/api/v1/companies/{code}", tag = "companies", security(("api_key" = [])), request_body = CompanyInput,
    responses((status = 200, body = Company), (status = 201, body = Company), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn put(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(code): Path<String>,
    ApiJson(input): ApiJson<CompanyInput>,
) -> Result<(StatusCode, Json<Company>), ApiError> {
    let code = CompanyCode::parse(&code).map_err(|m| ApiError::validation("code", m))?;
    let name = input.parse()?;
    let created = state.store.put_company(caller.actor(), &code, &name).await?;
    let saved = state.store.get_company(&code).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(saved)))
}

#[utoipa::path(delete, path = "/api/v1/companies/{code}", tag = "companies", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem, description = "email profiles still name the company")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn delete(State(state): State<AppState>, Admin(caller): Admin, Path(code): Path<String>) -> Result<StatusCode, ApiError> {
    state.store.delete_company(caller.actor(), &path_code(&code)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
