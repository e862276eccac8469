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

/// Graph's resource identifier, and the scopes that are about the user rather than Graph.
const GRAPH: &str = "https://graph.microsoft.com";
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Lifetimes as the identity platform's defaults: codes 10 minutes, access tokens about an
/// hour, refresh tokens 90 days of inactivity.
const CODE_LIFETIME_MINUTES: i64 = 10;
const ACCESS_TOKEN_SECONDS: i64 = 3599;
const REFRESH_INACTIVITY_DAYS: i64 = 90;
const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An error of the token endpoint as the identity platform sends it: `error`, an
/// `error_description` that starts with the AADSTS code and ends with trace and correlation
/// ids and a timestamp, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
pub fn aad_error(emu: &Emulator, status: StatusCode, error: &str, code: u32, description: &str, claims: Option<&str>) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let mut body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}"),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("{}/error?code={code}", emu.base_url),
    });
    if let Some(c) = claims {
        body["claims"] = json!(c);
    }
    let mut response = (status, Json(body)).into_response();
    no_store(response.headers_mut());
    response
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

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

/// A redirect URI is registered when it matches one of the app's exactly — except that for
/// `http://localhost` the port may differ (native apps pick a free port; how-to-add-redirect-uri.md).
fn redirect_registered(app: &SeedApp, uri: &str) -> bool {
    app.redirect_uris.iter().any(|r| {
        if r.uri == uri {
            return true;
        }
        match (url::Url::parse(&r.uri), url::Url::parse(uri)) {
            (Ok(reg), Ok(got)) => {
                reg.scheme() == "http"
                    && got.scheme() == "http"
                    && reg.host_str() == Some("localhost")
                    && got.host_str() == Some("localhost")
                    && reg.path() == got.path()
            }
            _ => false,
        }
    })
}

/// A page of the sign-in experience (errors the user sees, not the app).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} — Microsoft 365 emulator</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto}}button{{display:block;width:100%;margin:.4rem 0;padding:.6rem}}</style>\
         </head><body><h1>{title}</h1>{body}</body></html>"
    );
    let mut r = (status, Html(html)).into_response();
    no_store(r.headers_mut());
    r
}

/// Sends the user back to the app with an error, as the identity platform does once the
/// redirect URI is known to be registered.
fn redirect_error(redirect_uri: &str, state: Option<&str>, error: &str, description: &str) -> Response {
    let mut url = url::Url::parse(redirect_uri).expect("registered redirect URIs parse");
    url.query_pairs_mut()
        .append_pair("error", error)
        .append_pair("error_description", description);
    if let Some(s) = state {
        url.query_pairs_mut().append_pair("state", s);
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
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

/// `GET /{tenant}/oauth2/v2.0/authorize`: checks the request and shows the sign-in page.
pub async fn authorize(State(emu): State<Emulator>, Path(tenant): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    if tenant_ref(&emu, &tenant).is_none() {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            &format!("<p>AADSTS90002: Tenant '{}' not found.</p>", escape(&tenant)),
        );
    }
    let client_id = q.get("client_id").map(String::as_str).unwrap_or("");
    let app = app_in_tenant(&emu, &tenant, client_id);
    let Some((app_tenant, app)) = app else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            &format!(
                "<p>AADSTS700016: Application with identifier '{}' was not found in the directory '{}'.</p>",
                escape(client_id),
                escape(&tenant)
            ),
        );
    };
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    // An unregistered redirect URI is never redirected to: the error is shown here.
    if !redirect_registered(&app, &redirect_uri) {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            &format!(
                "<p>AADSTS50011: The redirect URI '{}' specified in the request does not match the redirect URIs configured for the application '{}'.</p>",
                escape(&redirect_uri),
                escape(client_id)
            ),
        );
    }
    let state = q.get("state").map(String::as_str);
    if q.get("response_type").map(String::as_str) != Some("code") {
        return redirect_error(
            &redirect_uri,
            state,
            "unsupported_response_type",
            "AADSTS700054: response_type must be 'code' for this emulator.",
        );
    }
    let Some(scope) = q.get("scope").filter(|s| !s.trim().is_empty()) else {
        return redirect_error(
            &redirect_uri,
            state,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'scope'.",
        );
    };
    let scopes = match scopes_granted(&emu, &app_tenant.id, &app, scope) {
        Ok(s) => s,
        Err(missing) => {
            return redirect_error(
                &redirect_uri,
                state,
                "consent_required",
                &format!(
                    "AADSTS65001: The user or administrator has not consented to use the application with ID '{client_id}'. Scope '{missing}' is not granted."
                ),
            );
        }
    };
    let challenge = match (q.get("code_challenge"), q.get("code_challenge_method").map(String::as_str)) {
        (None, _) => None,
        (Some(c), None | Some("plain")) => Some((c.clone(), "plain".to_string())),
        (Some(c), Some("S256")) => Some((c.clone(), "S256".to_string())),
        (Some(_), Some(other)) => {
            return redirect_error(
                &redirect_uri,
                state,
                "invalid_request",
                &format!("AADSTS501491: Invalid code_challenge_method '{other}'."),
            );
        }
    };
    if q.get("prompt").map(String::as_str) == Some("none") {
        return redirect_error(
            &redirect_uri,
            state,
            "login_required",
            "AADSTS50058: A silent sign-in request was sent but no user is signed in.",
        );
    }
    let id = opaque();
    emu.pending().insert(
        id.clone(),
        PendingSignin {
            tenant_id: app_tenant.id.clone(),
            client_id: app.client_id.clone(),
            redirect_uri,
            scopes,
            state: state.map(String::from),
            challenge,
            nonce: q.get("nonce").cloned(),
            created: Utc::now(),
        },
    );
    let buttons: String = app_tenant
        .users
        .iter()
        .map(|u| {
            format!(
                "<form method=\"post\"><input type=\"hidden\" name=\"request\" value=\"{id}\"><input type=\"hidden\" name=\"user\" value=\"{}\">\
                 <button type=\"submit\">{} <small>({})</small></button></form>",
                escape(&u.user_principal_name),
                escape(&u.display_name),
                escape(&u.user_principal_name)
            )
        })
        .collect();
    let mut r = page(
        StatusCode::OK,
        "Pick an account",
        &format!("<p>to continue to {}</p>{buttons}", escape(&app.display_name)),
    );
    // Tests complete the sign-in by posting `request` and `user` back to this URL.
    r.headers_mut()
        .insert("x-emulator-signin-request", HeaderValue::from_str(&id).expect("ascii"));
    r
}

/// `POST /{tenant}/oauth2/v2.0/authorize`: the user picked an account (and, for users who
/// need it, approved the second factor); redirects to the app with a code.
pub async fn authorize_submit(State(emu): State<Emulator>, Form(form): Form<HashMap<String, String>>) -> Response {
    let request = form.get("request").cloned().unwrap_or_default();
    let Some(pending) = emu.pending().get(&request).cloned() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            "<p>AADSTS90014: The sign-in request is unknown or has expired. Start again.</p>",
        );
    };
    if Utc::now() - pending.created > Duration::minutes(CODE_LIFETIME_MINUTES) {
        emu.pending().remove(&request);
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            "<p>The sign-in request has expired. Start again.</p>",
        );
    }
    let upn = form.get("user").cloned().unwrap_or_default();
    let Some(user) = emu.user(&pending.tenant_id, &upn) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            &format!(
                "<p>AADSTS50034: The user account {} does not exist in the directory.</p>",
                escape(&upn)
            ),
        );
    };
    if user.mfa && form.get("mfa").map(String::as_str) != Some("approved") {
        let mut r = page(
            StatusCode::OK,
            "Approve sign in request",
            &format!(
                "<p>{} needs a second factor.</p><form method=\"post\"><input type=\"hidden\" name=\"request\" value=\"{request}\">\
                 <input type=\"hidden\" name=\"user\" value=\"{}\"><input type=\"hidden\" name=\"mfa\" value=\"approved\">\
                 <button type=\"submit\">Approve</button></form>",
                escape(&user.display_name),
                escape(&user.user_principal_name)
            ),
        );
        r.headers_mut().insert("x-emulator-mfa", HeaderValue::from_static("required"));
        return r;
    }
    emu.pending().remove(&request);
    let code = opaque();
    emu.codes().insert(
        code.clone(),
        AuthCode {
            tenant_id: pending.tenant_id,
            client_id: pending.client_id,
            user_id: user.id,
            redirect_uri: pending.redirect_uri.clone(),
            scopes: pending.scopes,
            challenge: pending.challenge,
            nonce: pending.nonce,
            issued: Utc::now(),
            redeemed: false,
            mfa: user.mfa,
        },
    );
    let mut url = url::Url::parse(&pending.redirect_uri).expect("registered redirect URIs parse");
    url.query_pairs_mut().append_pair("code", &code);
    if let Some(s) = &pending.state {
        url.query_pairs_mut().append_pair("state", s);
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

/// Client credentials from the body or HTTP Basic (both allowed: v2-oauth2-client-creds-grant-flow.md).
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (Option<String>, Option<String>) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (form.get("client_id").cloned(), form.get("client_secret").cloned()),
    }
}

fn is_public_client(app: &SeedApp) -> bool {
    app.redirect_uris
        .iter()
        .any(|r| r.platform == "public_client" || r.platform == "spa")
}

/// A Graph-audience access token as the identity platform issues it: v1 issuer, a `nonce`
/// in the header (access-tokens.md: "tokens for Microsoft Graph ... can't be validated").
fn graph_token(
    emu: &Emulator,
    tenant: &SeedTenant,
    app: &SeedApp,
    user: Option<&super::seed::SeedUser>,
    scopes: &[String],
    mfa: bool,
) -> String {
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "aud": GRAPH,
        "iss": format!("https://sts.windows.net/{}/", tenant.id),
        "iat": now, "nbf": now, "exp": now + ACCESS_TOKEN_SECONDS + 1,
        "appid": app.client_id,
        "app_displayname": app.display_name,
        "tid": tenant.id,
        "ver": "1.0",
        "uti": opaque()[..22].to_string(),
    });
    match user {
        Some(u) => {
            claims["idtyp"] = json!("user");
            claims["oid"] = json!(u.id);
            claims["sub"] = json!(u.id);
            claims["upn"] = json!(u.user_principal_name);
            claims["unique_name"] = json!(u.user_principal_name);
            claims["name"] = json!(u.display_name);
            claims["amr"] = amr(mfa);
            claims["scp"] = json!(
                scopes
                    .iter()
                    .filter(|s| !OIDC_SCOPES[3..].contains(&s.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        None => {
            claims["idtyp"] = json!("app");
            // The service principal's object id: stable per app, distinct from the client id.
            let digest = <sha2::Sha256 as sha2::Digest>::digest(app.client_id.as_bytes());
            let sp: [u8; 16] = digest[..16].try_into().expect("16 bytes");
            claims["oid"] = json!(uuid::Builder::from_random_bytes(sp).into_uuid().to_string());
            claims["sub"] = claims["oid"].clone();
            claims["roles"] = json!(app.app_roles);
        }
    }
    emu.keys().sign(&claims, Some(json!({"nonce": opaque()})))
}

fn id_token(emu: &Emulator, tenant: &SeedTenant, app: &SeedApp, user: &super::seed::SeedUser, nonce: Option<&str>) -> String {
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "aud": app.client_id,
        "iss": format!("{}/{}/v2.0", emu.base_url, tenant.id),
        "iat": now, "nbf": now, "exp": now + 3600,
        "name": user.display_name,
        "oid": user.id,
        "preferred_username": user.user_principal_name,
        "sub": user.id,
        "tid": tenant.id,
        "ver": "2.0",
    });
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    emu.keys().sign(&claims, None)
}

fn amr(mfa: bool) -> serde_json::Value {
    if mfa { json!(["pwd", "mfa"]) } else { json!(["pwd"]) }
}

/// A v2 access token for an app's own API (access-tokens.md, access-token-claims-reference.md):
/// `aud` the API's client id, `iss` the tenant's v2 issuer, `scp`, `azp` the calling client.
fn api_token(
    emu: &Emulator,
    tenant: &SeedTenant,
    client: &SeedApp,
    api: &SeedApp,
    user: &super::seed::SeedUser,
    scopes: &[String],
    mfa: bool,
) -> String {
    let now = Utc::now().timestamp();
    let names: Vec<&str> = scopes.iter().filter_map(|s| s.rsplit_once('/').map(|(_, n)| n)).collect();
    emu.keys().sign(
        &json!({
            "aud": api.client_id,
            "iss": format!("{}/{}/v2.0", emu.base_url, tenant.id),
            "iat": now, "nbf": now, "exp": now + ACCESS_TOKEN_SECONDS + 1,
            "azp": client.client_id,
            "azpacr": "0",
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.user_principal_name,
            "scp": names.join(" "),
            "sub": user.id,
            "tid": tenant.id,
            "amr": amr(mfa),
            "ver": "2.0",
        }),
        None,
    )
}

/// Issues access (and refresh and ID) tokens for a user: for Graph, or for the app's own API
/// when that is what the scopes name.
pub fn user_tokens(
    emu: &Emulator,
    tenant: &SeedTenant,
    app: &SeedApp,
    user_id: &str,
    scopes: &[String],
    nonce: Option<&str>,
    mfa: bool,
) -> Response {
    let Some(user) = emu.user(&tenant.id, user_id) else {
        return aad_error(
            emu,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50034,
            "The user account does not exist in the directory.",
            None,
        );
    };
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scopes.iter().filter(|s| !OIDC_SCOPES.contains(&s.as_str())).map(|s| format!("{GRAPH}/{s}")).chain(scopes.iter().filter(|s| OIDC_SCOPES.contains(&s.as_str())).cloned()).collect::<Vec<_>>().join(" "),
        "expires_in": ACCESS_TOKEN_SECONDS,
        "ext_expires_in": ACCESS_TOKEN_SECONDS,
        "access_token": match scopes.iter().find(|s| is_api_scope(s)).and_then(|s| api_app(emu, &tenant.id, s)) {
            Some(api) => api_token(emu, tenant, app, &api, &user, scopes, mfa),
            None => graph_token(emu, tenant, app, Some(&user), scopes, mfa),
        },
    });
    if scopes.iter().any(|s| is_api_scope(s)) {
        body["scope"] = json!(
            scopes
                .iter()
                .filter(|s| !OIDC_SCOPES.contains(&s.as_str()))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if scopes.iter().any(|s| s == "offline_access") {
        let refresh = opaque();
        emu.refresh_grants().insert(
            refresh.clone(),
            RefreshGrant {
                tenant_id: tenant.id.clone(),
                client_id: app.client_id.clone(),
                user_id: user.id.clone(),
                scopes: scopes.to_vec(),
                last_used: Utc::now(),
                revoked: false,
                mfa,
            },
        );
        body["refresh_token"] = json!(refresh);
    }
    if scopes.iter().any(|s| s == "openid") {
        body["id_token"] = json!(id_token(emu, tenant, app, &user, nonce));
    }
    let mut r = Json(body).into_response();
    no_store(r.headers_mut());
    r
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub async fn token(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if tenant_ref(&emu, &tenant).is_none() {
        return unknown_tenant(&emu, &tenant);
    }
    let (client_id, secret) = client_credentials(&headers, &form);
    let Some(client_id) = client_id else {
        return aad_error(
            &emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
            None,
        );
    };
    let Some((app_tenant, app)) = app_in_tenant(&emu, &tenant, &client_id) else {
        return unknown_app(&emu, &client_id, &tenant);
    };
    // A secret that is sent must be right; a confidential flow needs one.
    if let Some(s) = &secret
        && !app.secrets.iter().any(|known| known == s)
    {
        return aad_error(
            &emu,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
            None,
        );
    }
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    let needs_secret = grant == "client_credentials" || grant == OBO_GRANT || !is_public_client(&app);
    if needs_secret && secret.is_none() {
        return aad_error(
            &emu,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            None,
        );
    }
    match grant {
        "client_credentials" => {
            let scope = form.get("scope").map(String::as_str).unwrap_or("");
            if scope != format!("{GRAPH}/.default") && scope != "00000003-0000-0000-c000-000000000000/.default" {
                return aad_error(
                    &emu,
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    70011,
                    &format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
                    None,
                );
            }
            let mut r = Json(json!({
                "token_type": "Bearer",
                "expires_in": ACCESS_TOKEN_SECONDS,
                "ext_expires_in": ACCESS_TOKEN_SECONDS,
                "access_token": graph_token(&emu, &app_tenant, &app, None, &[], false),
            }))
            .into_response();
            no_store(r.headers_mut());
            r
        }
        "authorization_code" => redeem_code(&emu, &app_tenant, &app, &form),
        "refresh_token" => redeem_refresh(&emu, &app_tenant, &app, &form),
        "urn:ietf:params:oauth:grant-type:device_code" => super::device::redeem(&emu, &app.client_id, &form),
        OBO_GRANT => on_behalf_of(&emu, &app_tenant, &app, &form),
        "" => aad_error(
            &emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
            None,
        ),
        other => aad_error(
            &emu,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
            None,
        ),
    }
}

fn redeem_code(emu: &Emulator, tenant: &SeedTenant, app: &SeedApp, form: &HashMap<String, String>) -> Response {
    let invalid = |code: u32, text: &str| aad_error(emu, StatusCode::BAD_REQUEST, "invalid_grant", code, text, None);
    let code = form.get("code").cloned().unwrap_or_default();
    let grant = {
        let mut codes = emu.codes();
        let Some(grant) = codes.get_mut(&code) else {
            return invalid(70000, "The provided value for the 'code' parameter is not valid.");
        };
        if grant.redeemed {
            return invalid(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            );
        }
        // Single use: even a failed redemption below spends the code, as a stolen code must not be retried.
        grant.redeemed = true;
        grant.clone()
    };
    if Utc::now() - grant.issued > Duration::minutes(CODE_LIFETIME_MINUTES) {
        return invalid(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        );
    }
    if grant.client_id != app.client_id {
        return invalid(
            70000,
            "The provided value for the 'code' parameter is not valid. The code was issued to a different client.",
        );
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return invalid(
            50148,
            "The redirect_uri is not the same as the one used in the authorization request.",
        );
    }
    if let Some((challenge, method)) = &grant.challenge {
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let computed = if method == "S256" {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()))
        } else {
            verifier
        };
        if &computed != challenge {
            return invalid(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            );
        }
    }
    user_tokens(emu, tenant, app, &grant.user_id, &grant.scopes, grant.nonce.as_deref(), grant.mfa)
}

fn redeem_refresh(emu: &Emulator, tenant: &SeedTenant, app: &SeedApp, form: &HashMap<String, String>) -> Response {
    let invalid = |code: u32, text: &str| aad_error(emu, StatusCode::BAD_REQUEST, "invalid_grant", code, text, None);
    let token = form.get("refresh_token").cloned().unwrap_or_default();
    let grant = {
        let mut grants = emu.refresh_grants();
        let Some(grant) = grants.get_mut(&token) else {
            return invalid(
                9002313,
                "Invalid request. Request is malformed or invalid: the refresh token is not valid.",
            );
        };
        if grant.revoked {
            return invalid(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
            );
        }
        if Utc::now() - grant.last_used > Duration::days(REFRESH_INACTIVITY_DAYS) {
            return invalid(700082, "The refresh token has expired due to inactivity.");
        }
        if grant.client_id != app.client_id {
            return invalid(70000, "The refresh token was issued to a different client.");
        }
        grant.last_used = Utc::now();
        grant.clone()
    };
    // A narrower scope may be asked for; a wider one needs a new sign-in.
    let scopes = match form.get("scope") {
        Some(s) => {
            let (graph, oidc) = split_scopes(s);
            if let Some(extra) = graph.iter().find(|g| !grant.scopes.iter().any(|h| h.eq_ignore_ascii_case(g))) {
                return aad_error(
                    emu,
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    65001,
                    &format!(
                        "The user or administrator has not consented to use the application with ID '{}'. Scope '{extra}' was not granted at sign-in.",
                        app.client_id
                    ),
                    None,
                );
            }
            graph.into_iter().chain(oidc).collect()
        }
        None => grant.scopes.clone(),
    };
    user_tokens(emu, tenant, app, &grant.user_id, &scopes, None, grant.mfa)
}

/// The on-behalf-of grant (v2-oauth2-on-behalf-of-flow.md): a middle tier trades the token a
/// client sent it — whose `aud` must be the middle tier itself — for a Graph token for the same
/// user. A user who must now pass MFA gets `interaction_required` with a claims challenge.
fn on_behalf_of(emu: &Emulator, tenant: &SeedTenant, app: &SeedApp, form: &HashMap<String, String>) -> Response {
    let invalid = |code: u32, text: &str| aad_error(emu, StatusCode::BAD_REQUEST, "invalid_grant", code, text, None);
    if form.get("requested_token_use").map(String::as_str) != Some("on_behalf_of") {
        return aad_error(
            emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'requested_token_use' with the value 'on_behalf_of'.",
            None,
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return aad_error(
            emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'assertion'.",
            None,
        );
    };
    let claims = match emu.keys().verify(assertion) {
        Ok(c) => c,
        Err(_) => return invalid(50013, "Assertion failed signature validation."),
    };
    if claims["exp"].as_i64().is_none_or(|exp| exp <= Utc::now().timestamp()) {
        return invalid(500133, "Assertion is not within its valid time range.");
    }
    let aud = claims["aud"].as_str().unwrap_or_default();
    if !aud.eq_ignore_ascii_case(&app.client_id) && !app.identifier_uris.iter().any(|u| u.eq_ignore_ascii_case(aud)) {
        return invalid(50013, "Assertion audience does not match the Client app presenting the assertion.");
    }
    if claims["tid"].as_str() != Some(tenant.id.as_str()) {
        return invalid(50013, "Assertion was issued by another tenant.");
    }
    let Some(user) = emu.user(&tenant.id, claims["oid"].as_str().unwrap_or_default()) else {
        return invalid(50034, "The user account does not exist in the directory.");
    };
    let scope = form.get("scope").cloned().unwrap_or_default();
    let scopes = match scopes_granted(emu, &tenant.id, app, &scope) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            return aad_error(
                emu,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
                None,
            );
        }
        Err(missing) => {
            return invalid(
                65001,
                &format!(
                    "The user or administrator has not consented to use the application with ID '{}'. Scope '{missing}' is not granted.",
                    app.client_id
                ),
            );
        }
    };
    let passed_mfa = claims["amr"].as_array().is_some_and(|a| a.iter().any(|m| m == "mfa"));
    if user.mfa && !passed_mfa {
        let challenge = format!(
            "{{\"access_token\":{{\"capolids\":{{\"essential\":true,\"values\":[\"{}\"]}}}}}}",
            uuid::Uuid::new_v4()
        );
        return aad_error(
            emu,
            StatusCode::BAD_REQUEST,
            "interaction_required",
            50076,
            &format!(
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{GRAPH}'."
            ),
            Some(&challenge),
        );
    }
    user_tokens(emu, tenant, app, &user.id, &scopes, None, passed_mfa)
}
