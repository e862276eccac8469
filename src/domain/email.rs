//! E-mail addresses as the ERP and Microsoft Graph accept them.

use std::fmt;

/// An addr-spec (`local@domain`) checked for the shape every mail system accepts: no
/// display name, no spaces or control characters, a dotted domain, RFC 5321's lengths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            return Err("must be an address of the form name@domain".into());
        };
        if local.is_empty() || local.len() > 64 {
            return Err("the part before '@' must be 1 to 64 characters".into());
        }
        let forbidden = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"@".contains(c);
        if local.chars().any(forbidden) || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err("the part before '@' contains characters an address cannot have".into());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err("the domain after '@' must be a dotted host name".into());
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Deserialized through [`EmailAddress::parse`]: a stored or received value is checked again.
impl<'de> serde::Deserialize<'de> for EmailAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <String as serde::Deserialize>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::EmailAddress;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in ["jdoe@contoso.com", "first.last+tag@sub.example.co.za", "ütf@bücher.de"] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "jdoe",
            "@contoso.com",
            "jdoe@",
            "jdoe@localhost",
            "a b@c.com",
            "Jo <jo@c.com>",
            "a..b@c.com",
            "a@-c.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
        assert!(EmailAddress::parse(&format!("{}@c.com", "a".repeat(65))).is_err());
    }
}
