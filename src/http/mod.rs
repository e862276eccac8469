//! The HTTP edge: one file per resource, plus the extractors they share. Nothing outside this
//! module knows about axum.

pub mod addin;
pub mod apikeys;
pub mod audit;
pub mod auth;
pub mod companies;
pub mod contacts;
pub mod exports;
pub mod grids;
pub mod health;
pub mod imports;
pub mod mail;
pub mod openapi;
pub mod operators;
pub mod profiles;
pub mod reports;
mod router;
pub mod server;
pub mod templates;
pub mod tenants;

pub use router::{AppState, metrics_router, router};

use crate::domain::OperatorCode;
use crate::error::ApiError;
use crate::identity::tokens::TenantAccess;
use crate::store::models::{ApiKey, Operator, Role};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body whose errors name the field at fault: a syntax error is a 400
/// (`malformed-body`, with line and column), a well-formed body that does not fit the type —
/// wrong type, unknown or missing field — is a 422 naming the field's path.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => {
                ApiError::too_large("body", format!("the body is larger than this endpoint accepts ({e})"))
            }
            other => ApiError::MalformedBody(other.body_text()),
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Refuses a body that is not declared `application/json` (or `application/…+json`): 415.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType("the body must be application/json".into()))
    }
}

/// Deserializes JSON, turning serde's error into one that names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // A UTF-8 byte order mark is not JSON, but Windows tools write one; it means nothing here.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de);
    if let Ok(v) = value {
        // Trailing garbage after a complete value is a syntax error too.
        return de
            .end()
            .map(|()| v)
            .map_err(|e| ApiError::MalformedBody(format!("the body is not valid JSON: {e}")));
    }
    value.map_err(|err| {
        let inner = err.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::MalformedBody(format!("the body is not valid JSON: {inner}"));
        }
        let path = err.path().to_string();
        let message = inner.to_string();
        // serde_path_to_error's path already ends at an unknown key; the root is "."
        let field = if path == "." { "body".to_string() } else { path };
        // Drop serde's " at line 1 column 40" suffix: the field name says where.
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        ApiError::validation(field, message)
    })
}

/// The credentials of an `Authorization: Bearer <token>` header. The scheme is matched
/// without regard to case (RFC 9110 §11.1: `BEARER` and `bearer` are `Bearer`).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The caller, authenticated by `Authorization: Bearer <API key>`.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKey);

impl Caller {
    /// The name the audit log records.
    pub fn actor(&self) -> &str {
        &self.0.name
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(bearer_token) else {
            return Err(ApiError::Unauthorized(
                "an API key is required: send Authorization: Bearer <key>".into(),
            ));
        };
        match state.store.authenticate_api_key(token.trim()).await? {
            Some(key) => Ok(Caller(key)),
            None => Err(ApiError::Unauthorized("the API key is unknown or revoked".into())),
        }
    }
}

/// A caller holding an `admin` key.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.0.role != Role::Admin {
            return Err(ApiError::Forbidden("this endpoint needs an admin API key".into()));
        }
        Ok(Admin(caller))
    }
}

/// Query parameters, refused as a problem naming `query` (axum's own `Query` answers a
/// plain-text 400).
pub struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::validation("query", e.body_text()))
    }
}

/// A whole-number query parameter within `range` (`default` when absent), else a 422 naming it.
pub fn whole_number(raw: Option<&str>, field: &str, range: std::ops::RangeInclusive<u64>, default: u64) -> Result<u64, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| ApiError::validation(field, format!("must be a whole number from {} to {}", range.start(), range.end()))),
    }
}

/// The operator a client key names in `X-Operator`, if it names one: an existing, enabled
/// operator, else a 422 naming the header.
pub async fn named_operator(state: &AppState, headers: &axum::http::HeaderMap) -> Result<Option<crate::store::models::Operator>, ApiError> {
    let Some(raw) = headers.get("x-operator") else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| ApiError::validation("X-Operator", "must be an operator code"))?;
    operator_named(state, raw).await.map(Some)
}

/// The existing, enabled operator `raw` (from `X-Operator`) names, else a 422 naming the header.
pub async fn operator_named(state: &AppState, raw: &str) -> Result<crate::store::models::Operator, ApiError> {
    let code = OperatorCode::parse(raw).map_err(|m| ApiError::validation("X-Operator", m))?;
    let operator = match state.store.get_operator(&code).await {
        Ok(op) => op,
        Err(crate::store::StoreError::NotFound { .. }) => {
            return Err(ApiError::validation("X-Operator", format!("no operator has code '{code}'")));
        }
        Err(e) => return Err(e.into()),
    };
    if !operator.enabled {
        return Err(ApiError::validation("X-Operator", format!("operator {code} is disabled")));
    }
    Ok(operator)
}

/// A caller holding a `client` key (the ERP acting for an operator).
pub struct Client(pub Caller);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.0.role != Role::Client {
            return Err(ApiError::Forbidden("this endpoint needs a client API key".into()));
        }
        Ok(Client(caller))
    }
}

/// The Office add-in's caller: its single sign-on token, validated (SPEC §3.5), with the
/// operator it belongs to and that operator's tenant. A token of one tenant never reaches
/// another tenant's operator.
pub struct SsoCaller {
    /// The add-in's token, for the on-behalf-of exchange.
    pub token: String,
    pub operator: Operator,
    pub access: TenantAccess,
    /// The user's object id in their directory.
    pub oid: String,
}

impl FromRequestParts<AppState> for SsoCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        use crate::identity::sso::{Expected, peek_tid};
        let unauthorized = |m: String| ApiError::Unauthorized(m);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| unauthorized("the add-in's single sign-on token is required: Authorization: Bearer <token>".into()))?
            .to_string();
        let tid = peek_tid(&token).ok_or_else(|| unauthorized("the token is not a Microsoft identity platform token".into()))?;
        let tenant = state
            .store
            .tenant_by_directory(&tid)
            .await?
            // Not which directories are served, nor whether this one is: the same answer as a
            // token that fails validation.
            .ok_or_else(|| unauthorized("the token is not valid for this service".into()))?;
        let access = state.tokens.tenant_access(&tenant.code).await?;
        let client_id = tenant.client_id.as_str();
        let host = state.settings.public_url.host_str().unwrap_or("localhost");
        // The issuer names the directory exactly as the token's `tid` does.
        let endpoints = crate::identity::oauth::Endpoints::microsoft(tenant.authority.as_str(), &tid);
        let expected = Expected {
            jwks_url: endpoints.jwks,
            issuer: endpoints.issuer,
            // The manifest's Application ID URI (with the port, when the public URL has one),
            // and the same without the port, as an app registration made before may have it.
            audiences: vec![
                client_id.to_string(),
                crate::addin::application_id_uri(&state.settings, client_id),
                format!("api://{host}/{client_id}"),
            ],
            scope: Some("access_as_user".into()),
        };
        let claims = state
            .sso
            .validate(&token, &expected)
            .await
            .map_err(|e| unauthorized(e.to_string()))?;
        let user = claims.preferred_username.clone().unwrap_or_default();
        let operator = match parts.headers.get("x-operator").and_then(|v| v.to_str().ok()) {
            Some(raw) => {
                let code = OperatorCode::parse(raw).map_err(|m| ApiError::validation("X-Operator", m))?;
                let op = state.store.get_operator(&code).await?;
                if op.tenant.as_ref() != Some(&tenant.code) {
                    return Err(ApiError::Forbidden(format!(
                        "operator {code} does not belong to tenant {}, which issued this token",
                        tenant.code
                    )));
                }
                op
            }
            None => state
                .store
                .operator_by_email(&tenant.code, &user)
                .await?
                .ok_or_else(|| ApiError::Forbidden(format!("no operator of tenant {} is {user}", tenant.code)))?,
        };
        if let Some(email) = &operator.email
            && !email.as_str().eq_ignore_ascii_case(&user)
        {
            return Err(ApiError::Forbidden(format!("operator {} is not {user}", operator.code)));
        }
        Ok(Self {
            token,
            operator,
            access,
            oid: claims.oid.unwrap_or_default(),
        })
    }
}
