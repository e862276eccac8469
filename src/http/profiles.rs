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
