//! The Microsoft identity platform v2.0 endpoints, from MicrosoftDocs/entra-docs:
//! `docs/identity-platform/v2-protocols-oidc.md` (discovery, keys),
//! `docs/identity-platform/v2-oauth2-auth-code-flow.md` (authorize, code, refresh),
//! `docs/identity-platform/v2-oauth2-client-creds-grant-flow.md` (client credentials, the error
//! shape), `docs/identity-platform/reference-error-codes.md` (the AADSTS codes).

use super::seed::{SeedApp, SeedTenant};
use super::{AuthCode, Emulator, PendingSignin, RefreshGrant, escape, opaque};
use axum::Form;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use chrono::{Duration, Utc};
use serde_json::json;
use std::collections::HashMap;

mod authorize;
pub mod device;
mod errors;
mod minting;
mod token;

pub use authorize::{authorize, authorize_submit};
use errors::*;
use minting::*;
pub use token::token;

/// Graph's resource identifier, and the scopes that are about the user rather than Graph.
const GRAPH: &str = "https://graph.microsoft.com";
/// Exchange Online's resource (application id 00000002-0000-0ff1-ce00-000000000000).
const EXCHANGE: &str = "https://outlook.office365.com";

const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Lifetimes as the identity platform's defaults: codes 10 minutes, access tokens about an
/// hour, refresh tokens 90 days of inactivity.
const CODE_LIFETIME_MINUTES: i64 = 10;

const ACCESS_TOKEN_SECONDS: i64 = 3599;

const REFRESH_INACTIVITY_DAYS: i64 = 90;

const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The tenant a URL names; `common` and `organizations` stand for "the tenant of whoever
/// signs in" and resolve later.
enum TenantRef {
    Known(SeedTenant),
    Multi(String),
}

fn tenant_ref(emu: &Emulator, segment: &str) -> Option<TenantRef> {
    match segment.to_ascii_lowercase().as_str() {
        "common" | "organizations" => Some(TenantRef::Multi(segment.to_ascii_lowercase())),
        _ => emu.tenant(segment).map(TenantRef::Known),
    }
}

fn unknown_tenant(emu: &Emulator, segment: &str) -> Response {
    aad_error(
        emu,
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!("Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        None,
    )
}

/// The app registration `client_id` names, if it lives in the tenant `segment` names (any
/// tenant for `common` and `organizations`, which resolve to the app's own).
pub fn app_in_tenant(emu: &Emulator, segment: &str, client_id: &str) -> Option<(SeedTenant, SeedApp)> {
    let tref = tenant_ref(emu, segment)?;
    emu.app(client_id).filter(|(t, _)| match &tref {
        TenantRef::Known(k) => k.id == t.id,
        TenantRef::Multi(_) => true,
    })
}

/// The token endpoint's answer for a client id the tenant does not know (AADSTS700016).
pub fn unknown_app(emu: &Emulator, client_id: &str, tenant: &str) -> Response {
    aad_error(
        emu,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
        &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        None,
    )
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub async fn discovery(State(emu): State<Emulator>, Path(tenant): Path<String>) -> Response {
    let (path_tenant, issuer_tenant) = match tenant_ref(&emu, &tenant) {
        Some(TenantRef::Known(t)) => (t.id.clone(), t.id),
        // The multi-tenant documents carry a placeholder in the issuer (v2-protocols-oidc.md).
        Some(TenantRef::Multi(alias)) => (alias, "{tenantid}".to_string()),
        None => return unknown_tenant(&emu, &tenant),
    };
    let base = &emu.base_url;
    Json(json!({
        "token_endpoint": format!("{base}/{path_tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{path_tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{issuer_tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{path_tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{path_tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{path_tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net"
    }))
    .into_response()
}

/// `GET /{tenant}/discovery/v2.0/keys`.
pub async fn jwks(State(emu): State<Emulator>, Path(tenant): Path<String>) -> Response {
    if tenant_ref(&emu, &tenant).is_none() {
        return unknown_tenant(&emu, &tenant);
    }
    Json(emu.keys().jwks()).into_response()
}

/// Splits a scope parameter into Graph permissions (short names, or the full
/// `resource/scope` of another API, which keeps its `/`) and OIDC scopes.
fn split_scopes(scope: &str) -> (Vec<String>, Vec<String>) {
    let mut graph = Vec::new();
    let mut oidc = Vec::new();
    for s in scope.split_whitespace() {
        if OIDC_SCOPES.contains(&s) {
            oidc.push(s.to_string());
        } else {
            graph.push(s.strip_prefix(&format!("{GRAPH}/")).unwrap_or(s).to_string());
        }
    }
    (graph, oidc)
}

/// A scope of an app's own API (`api://host/{client id}/access_as_user`) rather than Graph's.
fn is_api_scope(scope: &str) -> bool {
    scope.contains('/')
}

/// The app whose API a scope names, in `tenant`, if it exposes that scope.
fn api_app(emu: &Emulator, tenant_id: &str, scope: &str) -> Option<SeedApp> {
    let (resource, name) = scope.rsplit_once('/')?;
    emu.tenant(tenant_id)?.apps.into_iter().find(|a| {
        (a.client_id.eq_ignore_ascii_case(resource) || a.identifier_uris.iter().any(|u| u.eq_ignore_ascii_case(resource)))
            && a.exposed_scopes.iter().any(|x| x == name)
    })
}

/// The scopes of a request if the app may ask for all of them (Graph permissions it was
/// granted, plus the OIDC scopes); otherwise the first one it may not.
pub fn scopes_granted(emu: &Emulator, tenant_id: &str, app: &SeedApp, scope: &str) -> Result<Vec<String>, String> {
    let (graph, oidc) = split_scopes(scope);
    let granted = |s: &String| {
        if is_api_scope(s) {
            api_app(emu, tenant_id, s).is_some()
        } else {
            app.delegated_scopes.iter().any(|d| d.eq_ignore_ascii_case(s))
        }
    };
    if let Some(missing) = graph.iter().find(|s| !granted(s)) {
        return Err(missing.clone());
    }
    // One access token is for one resource: Graph's permissions and an API's cannot mix.
    if graph.iter().any(|s| is_api_scope(s)) && graph.iter().any(|s| !is_api_scope(s)) {
        return Err("a scope of a second resource".into());
    }
    Ok(graph.into_iter().chain(oidc).collect())
}
