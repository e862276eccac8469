//! Parsed newtypes: once a value has one of these types it is known to be valid, so nothing
//! downstream checks it again (Zero To Production's "parse, don't validate").

mod codes;
mod email;
mod endpoints;
mod mail;
mod operator;
mod profile;
mod secret;
mod tenant;

pub use codes::{CompanyCode, OperatorCode, TenantCode};
pub use email::EmailAddress;
pub use endpoints::{Authority, GraphEndpoint, RedirectUrl};
pub use mail::{
    AttachmentInput, AttachmentSource, Content, Importance, MAX_ATTACHMENT_BYTES, MAX_RECIPIENTS, MailInput, MailRequest, Recipient,
    RecipientInput, StoredMessage, attachment_name, content_type, too_large,
};
pub use operator::{NewOperator, OperatorInput};
pub use profile::{
    ApplyTo, Function, GraphDelegateSettings, GraphDirectSettings, NewProfile, OnAmbiguous, ProfileInput, ProfileName, ProfileSummary,
    Provider, ProviderSettings, Resolution, Scope, SecretKind, SmtpAuth, SmtpSecurity, SmtpSettings, resolve,
};
pub use secret::Secret;
pub use tenant::{ClientId, DirectoryId, NewTenant, Platform, SecretField, SecretUpdate, TenantInput};

use serde::Serialize;

/// One rule broken by one input field; `field` is a JSON-pointer-like dotted path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects every field error of one input so the caller learns all of them at once.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// Parses `value` with `parse`, recording the error under `field` and returning `None`
    /// when it does not hold.
    pub fn field<T, E: std::fmt::Display>(&mut self, field: &str, parsed: Result<T, E>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(FieldError::new(field, e.to_string()));
                None
            }
        }
    }

    /// Like [`Validator::field`] for a value that must be given: absent, it records
    /// "is required".
    pub fn required<T>(&mut self, field: &str, raw: Option<&str>, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        match raw {
            Some(raw) => self.field(field, parse(raw)),
            None => {
                self.push(field, "is required");
                None
            }
        }
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// `Ok(value)` when no error was recorded. `build` runs only then, so it may unwrap the
    /// `Option`s returned by [`Validator::field`].
    pub fn finish<T>(self, build: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.errors.is_empty() { Ok(build()) } else { Err(self.errors) }
    }
}

/// The size of a page of a listing (the outbox, report outputs): 1 to 200, 50 when not given.
pub fn page_limit(limit: Option<u32>) -> Result<u32, String> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err("must be between 1 and 200".into())
    }
}

/// `errors` of a part of a request, their fields named from the request's root (`prefix`
/// such as `metadata.`).
pub fn prefix_fields(prefix: &str, errors: Vec<FieldError>) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|f| FieldError::new(format!("{prefix}{}", f.field), f.message))
        .collect()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
