//! ERP identifiers: tenant, operator and company codes.

use std::fmt;

/// Defines a code newtype that keeps a validated string. `upper` folds the input to upper
/// case first, because the ERP treats those codes case-insensitively.
macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, upper = $upper:expr, extra = $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, String> {
                let value = if $upper { raw.trim().to_uppercase() } else { raw.trim().to_string() };
                if value.is_empty() {
                    return Err("must not be empty".into());
                }
                if value.chars().count() > $max {
                    return Err(format!("must be at most {} characters", $max));
                }
                let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || $extra.contains(c);
                if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
                    return Err(format!(
                        "may contain only letters, digits, '_' and '-'{}; found {:?}",
                        if $extra.is_empty() { String::new() } else { format!(" and any of {:?}", $extra) },
                        bad
                    ));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Deserialized through [`Self::parse`]: a stored or received value is checked again.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

code_type!(
    /// A tenant record's short code, such as `CONTOSO` (stored upper case).
    TenantCode, max = 32, upper = true, extra = ""
);
code_type!(
    /// An ERP operator (user) code. Case is kept: some ERPs distinguish it.
    OperatorCode, max = 64, upper = false, extra = ".@"
);
code_type!(
    /// An ERP company code (stored upper case).
    CompanyCode, max = 20, upper = true, extra = ""
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_code_is_folded_to_upper_case() {
        assert_eq!(TenantCode::parse(" contoso ").unwrap().as_str(), "CONTOSO");
    }

    #[test]
    fn codes_reject_empty_long_and_odd_characters() {
        assert!(TenantCode::parse("").is_err());
        assert!(TenantCode::parse(&"A".repeat(33)).is_err());
        assert!(TenantCode::parse("CON TOSO").is_err());
        assert!(CompanyCode::parse("A/B").is_err());
        assert!(OperatorCode::parse("j.doe@contoso").is_ok());
        assert!(OperatorCode::parse("jdoe;drop").is_err());
    }
}
