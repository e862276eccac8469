//! The HTTP edge: one file per resource, plus the extractors they share. Nothing below this
//! module knows about axum.

pub mod apikeys;
pub mod audit;
pub mod auth;
pub mod exports;
pub mod health;
pub mod imports;
pub mod openapi;
pub mod operators;
pub mod server;
pub mod tenants;

use crate::app::AppState;
use crate::error::ApiError;
use crate::store::models::{ApiKey, Role};
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
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType("the body must be application/json".into()));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => {
                ApiError::too_large("body", format!("the body is larger than this endpoint accepts ({e})"))
            }
            other => ApiError::MalformedBody(other.body_text()),
        })?;
        parse_json(&bytes).map(ApiJson)
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
