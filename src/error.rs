//! The one error type of the HTTP edge, mapped to `application/problem+json` (RFC 9457) here
//! and nowhere else: every error of the parts below (store, tokens, OAuth, Graph, export,
//! import) becomes an answer through one `From` impl in this file.

use crate::domain::{FieldError, OperatorCode};
use crate::export::import::ImportError;
use crate::export::jobs::QueueFull;
use crate::export::model::GridErrorKind;
use crate::export::writer::ExportError;
use crate::graph::GraphError;
use crate::identity::oauth::OAuthError;
use crate::identity::tokens::TokenError;
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
    /// No enabled email profile covers a company and function: 404 `/problems/no-profile`.
    #[error("no enabled email profile sends {function} for company {company}: add one for the company or the system (or a default)")]
    NoProfile {
        company: crate::domain::CompanyCode,
        function: crate::domain::Function,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotImplemented(String),
    /// The operator's Microsoft account is not linked (or no longer): 401 with the link that
    /// fixes it. The link needs the keyring and the public URL, so the router's
    /// `signin_links` layer fills it in on the way out ([`ApiError::with_signin_link`]).
    #[error("operator '{operator}' must sign in to Microsoft 365{}", signin_url.as_deref().map(|u| format!(": open {u}")).unwrap_or_default())]
    SigninRequired {
        operator: OperatorCode,
        signin_url: Option<String>,
    },
    /// The identity platform wants more from the user (MFA, consent): 401 with the claims
    /// challenge for the add-in to pass to MSAL.
    #[error("{message}")]
    ClaimsChallenge { claims: String, message: String },
    /// Microsoft Graph refused or failed; `status` is ours (502, 503 or 403).
    #[error("{message}")]
    Upstream { status: StatusCode, message: String },
    /// A profile's test message failed at `step` (502 `/problems/profile-test-failed`), with
    /// every step's answer up to there.
    #[error("the test message failed at {step}: {message}")]
    ProfileTest {
        step: String,
        message: String,
        steps: Vec<crate::mail::smtp::StepReport>,
    },
    /// Anything unexpected: logged with its cause chain, shown to the caller as an opaque 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Marks an answer whose sign-in link is still to be filled in (by the router's layer).
#[derive(Debug, Clone)]
pub struct SigninPending(pub OperatorCode);

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
    /// With `profile-test-failed`: the step that failed (`connect`, `tls`, `auth`, `token`, …) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// ... and what every step answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::mail::smtp::StepReport>,
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
            Self::NotFound(_) | Self::NoProfile { .. } => StatusCode::NOT_FOUND,
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
            Self::ProfileTest { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::NoProfile { .. } => "no-profile",
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
            Self::ProfileTest { .. } => "profile-test-failed",
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
                Self::SigninRequired { signin_url, .. } => signin_url.clone(),
                _ => None,
            },
            step: match self {
                Self::ProfileTest { step, .. } => Some(step.clone()),
                _ => None,
            },
            steps: match self {
                Self::ProfileTest { steps, .. } => steps.clone(),
                _ => vec![],
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

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::SigninRequired(operator) => Self::SigninRequired {
                operator,
                signin_url: None,
            },
            // The operator comes from the `X-Operator` header (or the path, which names it too).
            TokenError::OperatorNotReady(message) => Self::validation("X-Operator", message),
            TokenError::TenantNotReady { field, message } => Self::validation(field, message),
            TokenError::Store(s) => s.into(),
            TokenError::OAuth(o) => o.into(),
        }
    }
}

impl From<OAuthError> for ApiError {
    /// A claims challenge goes back to the client (MSAL passes it to the next sign-in);
    /// anything else the identity platform said is its failure, not the caller's.
    fn from(e: OAuthError) -> Self {
        if let Some(claims) = e.claims() {
            return Self::ClaimsChallenge {
                claims: claims.to_string(),
                message: e.to_string(),
            };
        }
        Self::Upstream {
            status: StatusCode::BAD_GATEWAY,
            message: e.to_string(),
        }
    }
}

impl From<GraphError> for ApiError {
    /// A missing sign-in is a 401 with its link (never a 500); throttling that outlasted our
    /// retries is a 503; Graph's 403 stays a 403; the rest is a 502 naming Graph's answer.
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::Token(t) => t.into(),
            GraphError::Api {
                status,
                code,
                message,
                request_id,
                ..
            } => {
                let ours = match status {
                    429 | 503 | 504 => StatusCode::SERVICE_UNAVAILABLE,
                    403 => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let id = request_id.map(|r| format!(" (request-id {r})")).unwrap_or_default();
                Self::Upstream {
                    status: ours,
                    message: format!("Microsoft Graph answered {status} {code}: {message}{id}"),
                }
            }
            GraphError::Transport(m) => Self::Upstream {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("Microsoft Graph could not be reached: {m}"),
            },
            GraphError::Local(m) => Self::Internal(anyhow::anyhow!(m)),
        }
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Grid(g) if g.kind == GridErrorKind::Syntax => Self::MalformedBody(g.to_string()),
            ExportError::Grid(g) => Self::validation(g.field, g.message),
            ExportError::Io(io) => Self::MalformedBody(format!("the body could not be read: {io}")),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Grid(g) => Self::validation(g.field, g.message),
            ImportError::TooLarge { field, message } => Self::too_large(field, message),
            ImportError::Deadline { secs } => {
                Self::Unavailable(format!("the import did not finish within {secs} seconds (import.timeout_secs)"))
            }
        }
    }
}

impl From<crate::mail::templates::TemplateError> for ApiError {
    fn from(e: crate::mail::templates::TemplateError) -> Self {
        use crate::mail::templates::TemplateError;
        match e {
            TemplateError::Unknown(_) => Self::NotFound(e.to_string()),
            TemplateError::Missing { ref variable, .. } => Self::validation(format!("variables.{variable}"), e.to_string()),
            TemplateError::SubjectLineBreak { .. } => Self::validation("subject", e.to_string()),
            TemplateError::Invalid { .. } => Self::validation("template", e.to_string()),
        }
    }
}

impl From<QueueFull> for ApiError {
    fn from(e: QueueFull) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl ApiError {
    /// Fills in the sign-in link of a `signin-required` error, with `link` making it for the
    /// operator; any other error is returned as it is.
    pub fn with_signin_link(self, link: impl FnOnce(&OperatorCode) -> String) -> Self {
        match self {
            Self::SigninRequired {
                operator,
                signin_url: None,
            } => Self::SigninRequired {
                signin_url: Some(link(&operator)),
                operator,
            },
            other => other,
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
        if let Self::SigninRequired {
            operator,
            signin_url: None,
        } = &self
        {
            response.extensions_mut().insert(SigninPending(operator.clone()));
        }
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
