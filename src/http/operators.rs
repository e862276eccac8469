//! `/api/v1/operators`: ERP operators, the tenant each works in, and their sign-in state.

use super::{Admin, ApiJson};
use crate::app::AppState;
use crate::domain::{EmailAddress, OperatorCode, TenantCode, Validator};
use crate::error::{ApiError, Problem};
use crate::store::models::{NewOperator, Operator};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

/// `PUT /api/v1/operators/{code}` (SPEC §6).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorInput {
    /// Whether Microsoft 365 integration is on for this operator.
    pub enabled: bool,
    /// The tenant code; required when `enabled`.
    pub tenant: Option<String>,
    /// The operator's Microsoft 365 address (used as a sign-in hint).
    pub email: Option<String>,
}

impl OperatorInput {
    pub fn parse(self, code: &str) -> Result<NewOperator, ApiError> {
        let mut v = Validator::default();
        let code = v.field("code", OperatorCode::parse(code));
        let tenant = match self.tenant.as_deref() {
            Some(t) => v.field("tenant", TenantCode::parse(t)),
            None => None,
        };
        if self.enabled && self.tenant.is_none() {
            v.push("tenant", "is required when enabled is true");
        }
        let email = match self.email.as_deref() {
            Some(e) => v.field("email", EmailAddress::parse(e)),
            None => None,
        };
        v.finish(|| NewOperator {
            code: code.expect("checked"),
            enabled: self.enabled,
            tenant,
            email,
        })
        .map_err(ApiError::Validation)
    }
}

fn path_code(raw: &str) -> Result<OperatorCode, ApiError> {
    OperatorCode::parse(raw).map_err(|_| ApiError::NotFound(format!("operator '{raw}' does not exist")))
}

#[utoipa::path(get, path = "/api/v1/operators", tag = "operators", security(("api_key" = [])),
    responses((status = 200, body = [Operator]), (status = 403, body = Problem)))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<Operator>>, ApiError> {
    Ok(Json(state.store.list_operators().await?))
}

#[utoipa::path(get, path = "/api/v1/operators/{code}", tag = "operators", security(("api_key" = [])),
    responses((status = 200, body = Operator), (status = 404, body = Problem)))]
pub async fn get(State(state): State<AppState>, _: Admin, Path(code): Path<String>) -> Result<Json<Operator>, ApiError> {
    Ok(Json(state.store.get_operator(&path_code(&code)?).await?))
}

#[utoipa::path(put, path = "/api/v1/operators/{code}", tag = "operators", security(("api_key" = [])), request_body = OperatorInput,
    responses((status = 200, body = Operator), (status = 201, body = Operator), (status = 422, body = Problem)))]
pub async fn put(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(code): Path<String>,
    ApiJson(input): ApiJson<OperatorInput>,
) -> Result<(StatusCode, Json<Operator>), ApiError> {
    let op = input.parse(&code)?;
    let (saved, created) = state.store.put_operator(caller.actor(), &op).await?;
    state.tokens.forget_operator(&saved.code);
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(saved)))
}
