//! An ERP operator record as the API and the command line set it.

use super::{EmailAddress, FieldError, OperatorCode, TenantCode, Validator};
use serde::Deserialize;

/// `PUT /api/v1/operators/{code}` (SPEC §6).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorInput {
    /// Whether Microsoft 365 integration is on for this operator.
    pub enabled: bool,
    /// The tenant code; required when `enabled`.
    pub tenant: Option<String>,
    /// The operator's Microsoft 365 address (used as a sign-in hint).
    pub email: Option<String>,
}

/// What an operator record is set to, every field parsed.
#[derive(Debug, Clone)]
pub struct NewOperator {
    pub code: OperatorCode,
    pub enabled: bool,
    pub tenant: Option<TenantCode>,
    pub email: Option<EmailAddress>,
}

impl OperatorInput {
    /// Parses the input for operator `code`, reporting every field at fault at once.
    pub fn parse(self, code: &str) -> Result<NewOperator, Vec<FieldError>> {
        let mut v = Validator::default();
        let code = v.field("code", OperatorCode::parse(code));
        let tenant = match self.tenant.as_deref() {
            Some(t) => v.field("tenant", TenantCode::parse(t)),
            None => None,
        };
        if self.enabled && self.tenant.is_none() {
            v.push("tenant", "is required when enabled is true");
        }
        let email = match self.email.as_deref() {
            Some(e) => v.field("email", EmailAddress::parse(e)),
            None => None,
        };
        v.finish(|| NewOperator {
            code: code.expect("checked"),
            enabled: self.enabled,
            tenant,
            email,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_error_is_reported_at_once() {
        let input = OperatorInput {
            enabled: true,
            tenant: None,
            email: Some("not an address".into()),
        };
        let errors = input.parse("lower case!").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["code", "tenant", "email"]);
    }
}
