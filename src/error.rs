//! The one error type of the HTTP edge, mapped to `application/problem+json` (RFC 9457) here
//! and nowhere else.

use crate::domain::FieldError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The body is not JSON at all (a syntax error): 400.
    #[error("{0}")]
    MalformedBody(String),
    /// The input is well-formed but breaks rules: 422 naming every field at fault.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{message}")]
    Conflict { field: String, message: String },
    /// The client stopped sending its request body.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A body or what it holds passes a configured bound: 413 naming the field and the setting.
    #[error("{message}")]
    PayloadTooLarge { field: String, message: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotImplemented(String),
    /// The operator's Microsoft account is not linked (or no longer): 401 with the link that
    /// fixes it.
    #[error("operator '{operator}' must sign in to Microsoft 365: open {signin_url}")]
    SigninRequired { operator: String, signin_url: String },
    /// The identity platform wants more from the user (MFA, consent): 401 with the claims
    /// challenge for the add-in to pass to MSAL.
    #[error("{message}")]
    ClaimsChallenge { claims: String, message: String },
    /// Microsoft Graph refused or failed; `status` is ours (502, 503 or 403).
    #[error("{message}")]
    Upstream { status: StatusCode, message: String },
    /// Anything unexpected: logged with its cause chain, shown to the caller as an opaque 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The problem document. `type` is a stable relative URI per kind of problem.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// With `signin-required`: where the operator signs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signin_url: Option<String>,
}

impl ApiError {
    pub fn too_large(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::PayloadTooLarge {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::SigninRequired { .. } | Self::ClaimsChallenge { .. } => StatusCode::UNAUTHORIZED,
            Self::Upstream { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MalformedBody(_) => "malformed-body",
            Self::Validation(_) => "validation",
            Self::Conflict { .. } => "conflict",
            Self::RequestTimeout(_) => "request-timeout",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::Unavailable(_) => "unavailable",
            Self::NotImplemented(_) => "not-implemented",
            Self::SigninRequired { .. } => "signin-required",
            Self::ClaimsChallenge { .. } => "interaction-required",
            Self::Upstream { .. } => "microsoft-graph",
            Self::Internal(_) => "internal",
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status_code();
        let (detail, errors) = match self {
            Self::Validation(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                (format!("invalid input in: {}", fields.join(", ")), errors.clone())
            }
            Self::Conflict { field, message } | Self::PayloadTooLarge { field, message } => {
                (message.clone(), vec![FieldError::new(field.clone(), message.clone())])
            }
            Self::Internal(_) => ("an unexpected error occurred; it has been logged".into(), vec![]),
            other => (other.to_string(), vec![]),
        };
        Problem {
            kind: format!("/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            errors,
            signin_url: match self {
                Self::SigninRequired { signin_url, .. } => Some(signin_url.clone()),
                _ => None,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::NotFound(e.to_string()),
            StoreError::Conflict { field, message } => Self::Conflict {
                field: field.into(),
                message,
            },
            StoreError::Invalid { field, message } => Self::validation(field, message),
            StoreError::Other(e) => Self::Internal(e),
        }
    }
}

/// Formats an error with its whole cause chain, for the log line of a 500.
pub fn error_chain(e: &anyhow::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            tracing::error!(error = %error_chain(e), "request failed");
        }
        let mut response = (self.status_code(), axum::Json(self.to_problem())).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        let challenge = match &self {
            Self::Unauthorized(_) => Some("Bearer realm=\"officebridge\"".to_string()),
            // The format Microsoft's resources use (claims-challenge.md): the claims base64-encoded.
            Self::ClaimsChallenge { claims, .. } => {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(claims);
                Some(format!(
                    "Bearer realm=\"officebridge\", error=\"insufficient_claims\", claims=\"{encoded}\""
                ))
            }
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }
}
