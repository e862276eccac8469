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

pub fn routes(dev: bool) -> axum::Router<AppState> {
    use axum::routing::get;
    let mut router = axum::Router::new()
        .route("/addin/excel/manifest.xml", get(excel))
        .route("/addin/outlook/manifest.xml", get(outlook))
        .route("/addin/manifest.json", get(unified))
        .route("/addin/icons/{name}", get(icon))
        .route("/addin/excel/", get(excel_pane))
        .route("/addin/excel/index.html", get(excel_pane));
    for (path, content_type, body) in crate::addin::ASSETS {
        router = router.route(path, get(move || async move { ([(header::CONTENT_TYPE, content_type)], body) }));
    }
    #[cfg(feature = "emulator")]
    if dev {
        for (path, content_type, body) in crate::addin::DEV_ASSETS {
            router = router.route(path, get(move || async move { ([(header::CONTENT_TYPE, content_type)], body) }));
        }
        router = router.route("/addin/dev/token", get(dev_token)).route("/", get(dev_home));
    }
    #[cfg(not(feature = "emulator"))]
    let _ = dev;
    router
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaneParams {
    /// `stand-in`: the Office stand-in's Office.js (`--dev` only; its dev page asks for it).
    pub office: Option<String>,
}

/// `GET /addin/excel/`: the Excel task pane.
pub async fn excel_pane(State(state): State<AppState>, Params(p): Params<PaneParams>) -> Result<Response, ApiError> {
    let office_js = match p.office.as_deref() {
        None => state.settings.addin.office_js_url.as_str(),
        Some("stand-in") if state.settings.dev => crate::addin::STAND_IN_OFFICE_JS,
        Some(_) => {
            return Err(ApiError::validation(
                "office",
                "only the dev server has an Office stand-in (serve --dev)",
            ));
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::addin::pane_html(office_js),
    )
        .into_response())
}

#[cfg(feature = "emulator")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenParams {
    /// A token as after multi-factor authentication (for a claims challenge).
    pub mfa: Option<bool>,
    /// The user (default: the demo user).
    pub user: Option<String>,
}

/// `GET /addin/dev/token` (`--dev` only): the token Office would hand the pane, minted by the
/// emulator for the demo user of the add-in's app registration.
#[cfg(feature = "emulator")]
pub async fn dev_token(State(state): State<AppState>, Params(p): Params<DevTokenParams>) -> Result<Response, ApiError> {
    let emulator = state
        .settings
        .emulator()
        .ok_or_else(|| ApiError::Unavailable("no emulator is configured (serve --dev starts one)".into()))?;
    let tenant = manifest_tenant(&state.store, None, state.settings.addin.tenant.as_deref()).await?;
    let body = serde_json::json!({
        "user": p.user.as_deref().unwrap_or(crate::emulator::seed::DEMO_USER),
        "client_id": tenant.client_id.as_str(),
        "mfa": p.mfa.unwrap_or(false),
    });
    let resp = reqwest::Client::new()
        .post(format!("{emulator}/_emulator/addin-token"))
        .json(&body)
        .send()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the emulator did not answer: {e}")))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(ApiError::Unavailable(format!("the emulator refused to mint a token: {text}")));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
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

/// `GET /` in `--dev`: where everything is, within a minute of starting.
#[cfg(feature = "emulator")]
pub async fn dev_home(State(state): State<AppState>) -> Response {
    use crate::dev::DEV_OPERATOR;
    let esc = crate::domain::escape_html;
    let signin = match crate::domain::OperatorCode::parse(DEV_OPERATOR) {
        Ok(code) => match state.store.get_operator(&code).await {
            Ok(op) => format!("{:?}", op.signin).to_lowercase(),
            Err(e) => format!("unknown ({e})"),
        },
        Err(e) => e,
    };
    let emulator = state.settings.emulator().unwrap_or("(none)").to_string();
    let mut exports = String::new();
    if let Ok(code) = crate::domain::OperatorCode::parse(DEV_OPERATOR)
        && let Ok(tenant) = manifest_tenant(&state.store, None, state.settings.addin.tenant.as_deref()).await
    {
        let folder = state.settings.onedrive.folder_for(tenant.code.as_str(), DEV_OPERATOR);
        let who = crate::graph::Principal::Operator(code);
        let base = crate::graph::base_url(&tenant);
        for f in crate::graph::drive::recent_files(&state.graph, &who, &base, folder, 10)
            .await
            .unwrap_or_default()
        {
            exports.push_str(&format!("<li><a href=\"{}\">{}</a></li>", esc(&f.web_url), esc(&f.name)));
        }
    }
    if exports.is_empty() {
        exports = "<li>Nothing yet: <code>POST /api/v1/exports?destination=onedrive</code> with <code>X-Operator: DEMO</code> puts one there.</li>".into();
    }
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>officebridge (dev)</title>
<link rel="stylesheet" href="/addin/common/pane.css"></head><body><header><h1>officebridge — serve --dev</h1>
<p class="detail">Everything runs here: the Microsoft 365 emulator at {emulator}, tenant DEMO, operator DEMO (sign-in: {signin}).</p></header><main>
<h2>The Office add-in</h2><ul class="list">
<li><a href="/addin/dev/excel">The Excel pane</a> beside the Office stand-in's workbook: insert the shared price list, edit a cell, publish.</li>
<li>Manifests: <a href="/addin/excel/manifest.xml">Excel (XML)</a> · <a href="/addin/outlook/manifest.xml">Outlook (XML)</a> · <a href="/addin/manifest.json">unified (JSON)</a></li></ul>
<h2>The API</h2><ul class="list"><li><a href="/openapi.json">The OpenAPI document</a>; the dev API keys are in {keys}.</li></ul>
<h2>The emulator's OneDrive (operator DEMO's exports)</h2><ul class="list">{exports}</ul>
</main></body></html>"#,
        emulator = esc(&emulator),
        signin = esc(&signin),
        keys = esc(&state.settings.data_dir.join("dev-keys.json").display().to_string()),
    );
    axum::response::Html(html).into_response()
}
