//! `/addin/…`: the Office add-in's manifests and icons (SPEC §3.6). Public: Office fetches
//! them without credentials, and they hold nothing secret (the app registration's client id
//! is in every sign-in URL anyway).

use super::{AppState, Params};
use crate::addin::{Host, ICONS, ManifestError, render};
use crate::domain::TenantCode;
use crate::error::ApiError;
use crate::store::Store;
use crate::store::models::Tenant;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/addin/excel/manifest.xml", get(excel))
        .route("/addin/outlook/manifest.xml", get(outlook))
        .route("/addin/manifest.json", get(unified))
        .route("/addin/icons/{name}", get(icon))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ManifestParams {
    /// The tenant whose app registration the manifest names (default: `addin.tenant`, or the
    /// only tenant configured).
    pub tenant: Option<String>,
}

/// The tenant a manifest is for: the one asked for, the configured one, or the only one.
pub async fn manifest_tenant(store: &Store, asked: Option<&str>, configured: Option<&str>) -> Result<Tenant, ApiError> {
    if let Some(raw) = asked.or(configured) {
        let code = TenantCode::parse(raw).map_err(|m| ApiError::validation("tenant", m))?;
        return Ok(store.get_tenant(&code).await?);
    }
    let mut tenants = store.list_tenants().await?;
    match tenants.len() {
        0 => Err(ApiError::Unavailable(
            "no tenant is configured yet: the manifests name its app registration (POST /api/v1/tenants)".into(),
        )),
        1 => Ok(tenants.remove(0)),
        _ => Err(ApiError::validation(
            "tenant",
            "several tenants are configured: name the one whose app registration the add-in uses (?tenant=CODE, or addin.tenant)",
        )),
    }
}

async fn manifest(state: &AppState, host: Host, params: ManifestParams) -> Result<Response, ApiError> {
    let tenant = manifest_tenant(&state.store, params.tenant.as_deref(), state.settings.addin.tenant.as_deref()).await?;
    let body = render(host, &state.settings, tenant.client_id.as_str()).map_err(|e| match e {
        ManifestError::NotHttps(_) => ApiError::Unavailable(e.to_string()),
    })?;
    Ok(([(header::CONTENT_TYPE, host.content_type())], body).into_response())
}

/// `GET /addin/excel/manifest.xml`: the Excel task pane's add-in-only manifest.
#[utoipa::path(get, path = "/addin/excel/manifest.xml", tag = "add-in", params(ManifestParams),
    responses((status = 200, description = "The manifest", content_type = "application/xml"),
              (status = 422, description = "Several tenants and none named", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 503, description = "public_url is not https, or no tenant is configured", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn excel(State(state): State<AppState>, Params(p): Params<ManifestParams>) -> Result<Response, ApiError> {
    manifest(&state, Host::Excel, p).await
}

/// `GET /addin/outlook/manifest.xml`: the Outlook compose pane's add-in-only manifest.
#[utoipa::path(get, path = "/addin/outlook/manifest.xml", tag = "add-in", params(ManifestParams),
    responses((status = 200, description = "The manifest", content_type = "application/xml"),
              (status = 422, description = "Several tenants and none named", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 503, description = "public_url is not https, or no tenant is configured", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn outlook(State(state): State<AppState>, Params(p): Params<ManifestParams>) -> Result<Response, ApiError> {
    manifest(&state, Host::Outlook, p).await
}

/// `GET /addin/manifest.json`: the unified manifest for Microsoft 365, both hosts.
#[utoipa::path(get, path = "/addin/manifest.json", tag = "add-in", params(ManifestParams),
    responses((status = 200, description = "The manifest", content_type = "application/json"),
              (status = 422, description = "Several tenants and none named", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 503, description = "public_url is not https, or no tenant is configured", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn unified(State(state): State<AppState>, Params(p): Params<ManifestParams>) -> Result<Response, ApiError> {
    manifest(&state, Host::Unified, p).await
}

/// `GET /addin/icons/{name}`: served without `Cache-Control`. Office keeps the icons it shows;
/// one answered `no-cache` or `no-store` is replaced by Office's default icon.
pub async fn icon(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, bytes) = ICONS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ApiError::NotFound(format!("no icon {name}")))?;
    Ok(([(header::CONTENT_TYPE, "image/png")], *bytes).into_response())
}
