//! Operator sign-in: a link issued by the API (`POST /api/v1/operators/{code}/signin`, or in a
//! `signin-required` answer), `GET /auth/signin?link=…` (authorization code + PKCE),
//! `GET /auth/callback`, and the device-code flow for desktop clients
//! (`POST /api/v1/operators/{code}/signin/device`). Nobody without an API key can start a
//! sign-in: `/auth/signin` needs no key, so before links anyone could link an operator without
//! an address to their own account and receive its exports.
//! entra-docs `docs/identity-platform/v2-oauth2-auth-code-flow.md`, `v2-oauth2-device-code.md`.

use super::AppState;
use super::Caller;
use crate::domain::{OperatorCode, escape_html};
use crate::error::{ApiError, SigninPending};
use crate::identity::oauth::{self, OAuthError, TokenSet};
use crate::identity::tokens::{DELEGATED_SCOPES, TenantAccess};
use crate::store::models::{Operator, PendingSignin};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/operators/{code}/signin", post(issue_link))
        .route("/api/v1/operators/{code}/signin/device", post(device))
        .route("/api/v1/me", get(me))
        .route("/auth/signin", get(signin))
        .route("/auth/callback", get(callback))
}

/// How long a sign-in may take between the redirect and the callback.
const STATE_LIFETIME_MINUTES: i64 = 10;

fn callback_url(state: &AppState) -> String {
    state.settings.public_url.join("/auth/callback").expect("a path joins").to_string()
}

/// A fresh sign-in link for the operator (see [`crate::identity::signin_link`]).
pub(super) fn new_link(state: &AppState, op: &OperatorCode) -> crate::identity::SigninLink {
    crate::identity::signin_link(
        state.store.keyring(),
        &state.settings.public_url,
        op,
        std::time::Duration::from_secs(state.settings.signin.link_lifetime_secs),
    )
}

/// Fills in the link of every `signin-required` answer on its way out: the error is made
/// where the keyring and the public URL are not at hand (a token store, a Graph call).
pub async fn signin_links(State(state): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(req).await;
    match response.extensions().get::<SigninPending>() {
        Some(SigninPending(operator)) => ApiError::SigninRequired {
            operator: operator.clone(),
            signin_url: None,
        }
        .with_signin_link(|op| new_link(&state, op).url)
        .into_response(),
        None => response,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SigninQuery {
    /// The sign-in link's token, as issued by `POST /api/v1/operators/{code}/signin` or a
    /// `signin-required` answer.
    pub link: Option<String>,
}

/// The operator, when they may sign in at all, and their tenant.
async fn signin_target(state: &AppState, raw: Option<&str>) -> Result<(Operator, TenantAccess), ApiError> {
    let raw = raw.ok_or_else(|| ApiError::validation("operator", "is required"))?;
    let code = OperatorCode::parse(raw).map_err(|m| ApiError::validation("operator", m))?;
    Ok(state.tokens.operator_access(&code).await?)
}

#[utoipa::path(post, path = "/api/v1/operators/{code}/signin", tag = "auth", security(("api_key" = [])),
    params(("code" = String, Path, description = "The operator code (upper case)")),
    responses((status = 201, body = crate::identity::SigninLink), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn issue_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<(StatusCode, Json<crate::identity::SigninLink>), ApiError> {
    let (operator, _) = signin_target(&state, Some(&code)).await?;
    let link = new_link(&state, &operator.code);
    state
        .store
        .audit_signin_link(caller.actor(), &operator.code, link.expires_at)
        .await?;
    Ok((StatusCode::CREATED, Json(link)))
}

#[utoipa::path(get, path = "/auth/signin", tag = "auth", params(SigninQuery),
    responses((status = 302, description = "To the tenant's sign-in page"),
        (status = 400, description = "No link, or an unknown, used or expired one (an HTML page)", content_type = "text/html")))]
pub async fn signin(State(state): State<AppState>, Query(q): Query<SigninQuery>) -> Response {
    // Whatever else the query holds (an `operator`), without a valid link every caller gets
    // this same page: nothing tells whether an operator exists or what their address is.
    let refused = || {
        page(
            StatusCode::BAD_REQUEST,
            "Sign-in link needed",
            "This sign-in link is missing, unknown, already used or expired. Sign-in links are \
             issued by your ERP (or by an administrator with `officebridge operators signin`); ask for a new one.",
        )
    };
    let Some(claims) = q
        .link
        .as_deref()
        .and_then(|token| crate::identity::open_signin_link(state.store.keyring(), token))
    else {
        return refused();
    };
    match state
        .store
        .spend_signin_link(&claims.nonce, &claims.operator, claims.expires_at)
        .await
    {
        Ok(true) => {}
        Ok(false) => return refused(),
        Err(e) => return ApiError::from(e).into_response(),
    }
    let (operator, access) = match state.tokens.operator_access(&claims.operator).await {
        Ok(found) => found,
        Err(e) => {
            return page(StatusCode::BAD_REQUEST, "Sign-in not possible", &ApiError::from(e).to_string());
        }
    };
    let pkce = oauth::pkce();
    let csrf = oauth::random_token();
    let nonce = oauth::random_token();
    let redirect_uri = callback_url(&state);
    let bounds = &state.settings.signin;
    let stored = state
        .store
        .put_pending_signin(
            &csrf,
            &PendingSignin {
                operator: operator.code.clone(),
                verifier: pkce.verifier,
                nonce: nonce.clone(),
                redirect_uri: redirect_uri.clone(),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(STATE_LIFETIME_MINUTES),
            },
            bounds.max_pending_per_operator,
            bounds.max_pending,
        )
        .await;
    if let Err(e) = stored {
        return ApiError::from(e).into_response();
    }
    // The address goes to Microsoft as a hint only for a holder of a link, whom an API
    // caller sent here.
    let url = oauth::authorize_url(
        &access.endpoints,
        &access.app,
        &oauth::AuthorizeRequest {
            redirect_uri: &redirect_uri,
            scope: DELEGATED_SCOPES,
            state: &csrf,
            nonce: &nonce,
            challenge: &pkce.challenge,
            login_hint: operator.email.as_ref().map(|e| e.as_str()),
        },
    );
    match url {
        Ok(url) => (
            StatusCode::FOUND,
            [(header::LOCATION, url), (header::CACHE_CONTROL, "no-store".into())],
        )
            .into_response(),
        Err(e) => ApiError::Internal(e.into()).into_response(),
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} — officebridge</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto}}</style></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>",
        t = escape_html(title),
        m = escape_html(message)
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            // The page runs nothing and embeds nothing: say so, and refuse to be framed.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[utoipa::path(get, path = "/auth/callback", tag = "auth", params(CallbackQuery),
    responses((status = 200, description = "Signed in (an HTML page)"), (status = 400, description = "Unknown, used or expired state, or the sign-in failed (an HTML page)")))]
pub async fn callback(State(state): State<AppState>, Query(q): Query<CallbackQuery>) -> Response {
    let failed = |status, message: &str| page(status, "Sign-in failed", message);
    let Some(csrf) = q.state.as_deref().filter(|s| !s.is_empty()) else {
        return failed(StatusCode::BAD_REQUEST, "The sign-in answer has no state. Start the sign-in again.");
    };
    // Taking the state spends it: a second callback with it finds nothing.
    let pending = match state.store.take_pending_signin(csrf).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return failed(
                StatusCode::BAD_REQUEST,
                "This sign-in link is unknown, was already used or has expired. Start the sign-in again.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in state could not be read");
            return failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The sign-in could not be completed; it has been logged. Try again.",
            );
        }
    };
    if let Some(error) = &q.error {
        let why = q.error_description.as_deref().unwrap_or("");
        return failed(StatusCode::BAD_REQUEST, &format!("Microsoft answered {error}: {why}"));
    }
    let Some(code) = q.code.as_deref() else {
        return failed(StatusCode::BAD_REQUEST, "The sign-in answer has no code. Start the sign-in again.");
    };
    let access = match state.tokens.operator_access(&pending.operator).await {
        Ok((_, access)) => access,
        Err(e) => return failed(StatusCode::BAD_REQUEST, &ApiError::from(e).to_string()),
    };
    let set = match oauth::redeem_code(
        state.tokens.http(),
        &access.endpoints,
        &access.app,
        code,
        &pending.verifier,
        &pending.redirect_uri,
        DELEGATED_SCOPES,
    )
    .await
    {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(operator = %pending.operator, error = %e, "code redemption failed");
            return failed(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    match link(&state, &pending.operator, &set, Some(&pending.nonce), "browser").await {
        Ok(who) => page(
            StatusCode::OK,
            "Signed in",
            &format!("Operator {} is now linked to {who}. You can close this window.", pending.operator),
        ),
        Err(e) => failed(e.status_code(), &e.to_string()),
    }
}

/// Checks the ID token against the sign-in and the operator, then stores the grant. The ID
/// token came straight from the token endpoint, so its claims are read, not re-verified
/// (OpenID Connect Core §3.1.3.7). Returns who signed in.
async fn link(state: &AppState, code: &OperatorCode, set: &TokenSet, nonce: Option<&str>, via: &str) -> Result<String, ApiError> {
    let claims = set
        .id_token
        .as_ref()
        .and_then(|t| oauth::unverified_claims(t.expose_secret()))
        .ok_or_else(|| ApiError::Upstream {
            status: StatusCode::BAD_GATEWAY,
            message: "the identity platform issued no ID token (is the openid scope granted?)".into(),
        })?;
    if let Some(nonce) = nonce
        && claims["nonce"].as_str() != Some(nonce)
    {
        return Err(ApiError::Forbidden("the ID token's nonce does not match this sign-in".into()));
    }
    let (operator, access) = state.tokens.operator_access(code).await?;
    let tid = claims["tid"].as_str().unwrap_or("");
    if access.tenant.tenant_id.is_guid() && !tid.eq_ignore_ascii_case(access.tenant.tenant_id.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "the account belongs to another directory than tenant {}",
            access.tenant.code
        )));
    }
    let who = claims["preferred_username"]
        .as_str()
        .or_else(|| claims["email"].as_str())
        .unwrap_or("")
        .to_string();
    // An operator with an address can only be linked to that account: a sign-in link that
    // leaks cannot redirect someone's exports into another OneDrive.
    if let Some(email) = &operator.email
        && !who.eq_ignore_ascii_case(email.as_str())
    {
        return Err(ApiError::Forbidden(format!(
            "operator {code} is {email}, but the sign-in was as {}",
            if who.is_empty() { "an unknown account" } else { &who }
        )));
    }
    state.tokens.signed_in(code, &access, set).await?;
    state.store.audit_signin(code, &who, via).await?;
    tracing::info!(operator = %code, via, "operator signed in to Microsoft 365");
    Ok(who)
}

/// What a desktop client shows the operator.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceSignin {
    pub user_code: String,
    pub verification_uri: String,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/operators/{code}/signin/device", tag = "auth", security(("api_key" = [])),
    responses((status = 200, body = DeviceSignin), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn device(State(state): State<AppState>, _caller: Caller, Path(code): Path<String>) -> Result<Json<DeviceSignin>, ApiError> {
    let (operator, access) = signin_target(&state, Some(&code)).await?;
    let grant = oauth::start_device_code(state.tokens.http(), &access.endpoints, &access.app, DELEGATED_SCOPES).await?;
    let answer = DeviceSignin {
        user_code: grant.user_code.clone(),
        verification_uri: grant.verification_uri.clone(),
        expires_in: grant.expires_in,
        message: grant.message.clone(),
    };
    // The server polls; the operator's state (GET /api/v1/operators/{code}) shows the result.
    // At shutdown the poll stops: the code expires unused and the operator asks again.
    let op = operator.code.clone();
    let workers = state.workers.clone();
    workers.spawn("device-code sign-in", async move {
        let poll = oauth::poll_device_code(state.tokens.http(), &access.endpoints, &access.app, &grant);
        let polled = tokio::select! {
            polled = poll => polled,
            () = state.workers.cancelled() => return,
        };
        match polled {
            Ok(set) => {
                if let Err(e) = link(&state, &op, &set, None, "device_code").await {
                    tracing::warn!(operator = %op, error = %e, "device sign-in refused");
                }
            }
            Err(e) => tracing::warn!(operator = %op, error = %e, "device sign-in did not complete"),
        }
    });
    Ok(Json(answer))
}

/// Who the add-in acts for (`GET /api/v1/me`).
/// The add-in user's Graph principal: the add-in's token is for us; Graph needs its own,
/// obtained on the user's behalf for `scope`.
pub async fn on_behalf_of(state: &AppState, caller: &super::SsoCaller, scope: &str) -> Result<crate::graph::Principal, ApiError> {
    let access = &caller.access;
    let graph_token = oauth::on_behalf_of(state.tokens.http(), &access.endpoints, &access.app, &caller.token, scope)
        .await
        .map_err(|e| match e {
            // The assertion itself was refused (expired, revoked): the add-in needs a new token.
            OAuthError::Refused { ref error, .. } if error == "invalid_grant" && e.claims().is_none() => {
                ApiError::Unauthorized(format!("the identity platform refused the add-in's token: {e}"))
            }
            other => other.into(),
        })?;
    Ok(crate::graph::Principal::OnBehalfOf {
        tenant: access.tenant.code.clone(),
        user: caller.oid.clone(),
        token: graph_token.access_token,
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    #[schema(value_type = String)]
    pub operator: OperatorCode,
    pub tenant: String,
    /// The Microsoft 365 user, as Graph's `/me` describes them.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    pub mail: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("sso" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::error::Problem, description = "Invalid token, or a claims challenge"), (status = 403, body = crate::error::Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn me(State(state): State<AppState>, caller: super::SsoCaller) -> Result<Json<Me>, ApiError> {
    let who = on_behalf_of(&state, &caller, "User.Read").await?;
    let super::SsoCaller { operator, access, .. } = caller;
    let url = format!("{}/me", crate::graph::base_url(&access.tenant));
    let user = state.graph.get_json(&who, &url).await?;
    Ok(Json(Me {
        operator: operator.code,
        tenant: access.tenant.code.to_string(),
        display_name: user["displayName"].as_str().map(String::from),
        mail: user["mail"].as_str().map(String::from),
    }))
}
