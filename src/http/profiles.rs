//! `/api/v1/profiles`: email profiles — which mailbox, through which provider, sends which
//! functions for which companies — and `resolve`, which says which profile would send a
//! message before one is sent (admin only).

use super::{Admin, ApiJson, AppState};
use crate::domain::{CompanyCode, FieldError, Function, ProfileInput, ProfileName, Resolution};
use crate::error::{ApiError, Problem};
use crate::store::models::Profile;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/profiles", get(list).post(create))
        .route("/api/v1/profiles/resolve", get(resolution))
        .route("/api/v1/profiles/{name}", get(self::get).put(replace).delete(delete))
        .route("/api/v1/profiles/{name}/test", axum::routing::post(test))
}

/// A profile as saved, with what deserves a second look (port 25, basic SMTP AUTH against
/// Exchange Online, saved disabled).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProfileSaved {
    #[serde(flatten)]
    pub profile: Profile,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldError>,
}

fn path_name(raw: &str) -> Result<ProfileName, ApiError> {
    ProfileName::parse(raw).map_err(|_| ApiError::NotFound(format!("email profile '{raw}' does not exist")))
}

#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles", security(("api_key" = [])),
    responses((status = 200, body = [Profile]), (status = 401, body = Problem), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<Profile>>, ApiError> {
    Ok(Json(state.store.list_profiles().await?))
}

#[utoipa::path(post, path = "/api/v1/profiles", tag = "profiles", security(("api_key" = [])), request_body = ProfileInput,
    responses((status = 201, body = ProfileSaved), (status = 409, body = Problem, description = "the name is taken, or another enabled profile claims a function for the same scope"),
        (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(input): ApiJson<ProfileInput>,
) -> Result<impl IntoResponse, ApiError> {
    let profile = input.parse(None).map_err(ApiError::Validation)?;
    let saved = state.store.create_profile(caller.actor(), &profile).await?;
    let location = format!("/api/v1/profiles/{}", saved.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ProfileSaved {
            profile: saved,
            warnings: profile.warnings,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/profiles/{name}", tag = "profiles", security(("api_key" = [])),
    responses((status = 200, body = Profile), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn get(State(state): State<AppState>, _: Admin, Path(name): Path<String>) -> Result<Json<Profile>, ApiError> {
    Ok(Json(state.store.get_profile(&path_name(&name)?).await?))
}

#[utoipa::path(put, path = "/api/v1/profiles/{name}", tag = "profiles", security(("api_key" = [])), request_body = ProfileInput,
    responses((status = 200, body = ProfileSaved), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn replace(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<ProfileInput>,
) -> Result<Json<ProfileSaved>, ApiError> {
    let name = path_name(&name)?;
    let profile = input.parse(Some(name.as_str())).map_err(ApiError::Validation)?;
    let saved = state.store.replace_profile(caller.actor(), &profile).await?;
    Ok(Json(ProfileSaved {
        profile: saved,
        warnings: profile.warnings,
    }))
}

#[utoipa::path(delete, path = "/api/v1/profiles/{name}", tag = "profiles", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn delete(State(state): State<AppState>, Admin(caller): Admin, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.store.delete_profile(caller.actor(), &path_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResolveQuery {
    /// The company the message is sent for.
    pub company: Option<String>,
    /// The function it is sent for (`documents_accounts_receivable`, …).
    pub function: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/profiles/resolve", tag = "profiles", security(("api_key" = [])), params(ResolveQuery),
    responses((status = 200, body = Resolution), (status = 404, body = Problem, description = "`/problems/no-profile`: no enabled profile covers it"),
        (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn resolution(State(state): State<AppState>, _: Admin, Query(q): Query<ResolveQuery>) -> Result<Json<Resolution>, ApiError> {
    let mut v = crate::domain::Validator::default();
    let company = v.required("company", q.company.as_deref(), CompanyCode::parse);
    let function = v.required("function", q.function.as_deref(), Function::parse);
    let (company, function) = v
        .finish(|| (company.expect("checked"), function.expect("checked")))
        .map_err(ApiError::Validation)?;
    match state.store.resolve_profile(&company, function).await? {
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::NoProfile { company, function }),
    }
}

/// `POST /api/v1/profiles/{name}/test`: where the test message goes.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The address the test message is sent to.
    pub to: Option<String>,
}

/// What each step of a profile's test answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestReport {
    pub profile: String,
    pub provider: crate::domain::Provider,
    pub to: String,
    pub steps: Vec<crate::mail::smtp::StepReport>,
}

#[utoipa::path(post, path = "/api/v1/profiles/{name}/test", tag = "profiles", security(("api_key" = [])), request_body = TestInput,
    params(("name" = String, Path, description = "The profile's name"),
           ("X-Operator" = Option<String>, Header, description = "The operator a graph_delegate profile sends as")),
    responses((status = 200, body = TestReport, description = "The test message was sent; what each step answered"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 502, body = Problem, content_type = "application/problem+json", description = "The step that failed (`step`) and every step's answer (`steps`)")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn test(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(input): ApiJson<TestInput>,
) -> Result<Json<TestReport>, ApiError> {
    let profile = state.store.get_profile(&path_name(&name)?).await?;
    let to = match input.to.as_deref() {
        None => return Err(ApiError::validation("to", "is required: the address the test message is sent to")),
        Some(raw) => crate::domain::EmailAddress::parse(raw).map_err(|m| ApiError::validation("to", m))?,
    };
    let operator = headers.get("x-operator").and_then(|v| v.to_str().ok());
    if profile.provider == crate::domain::Provider::GraphDelegate && operator.is_none() {
        return Err(ApiError::validation(
            "X-Operator",
            format!("is required: profile {} sends as the operator (graph_delegate)", profile.name),
        ));
    }
    tracing::info!(profile = %profile.name, caller = %caller.actor(), "profile test message");
    match crate::mail::profile_test::run(&state.outbox, &profile, &to, operator).await {
        Ok(steps) => Ok(Json(TestReport {
            profile: profile.name.to_string(),
            provider: profile.provider,
            to: to.as_str().to_string(),
            steps,
        })),
        Err(f) => Err(ApiError::ProfileTest {
            message: f.detail,
            step: f.step,
            steps: f.steps,
        }),
    }
}
