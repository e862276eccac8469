//! A string that must never be shown: client secrets, tokens, passwords, keys, upload URLs.

use std::fmt;

/// Holds a sensitive value. `Debug` and `Display` print `[redacted]`; there is deliberately
/// no `PartialEq` (comparisons would invite timing leaks) and no `Serialize`.
/// [`Secret::expose_secret`] is called only where the value is used; two secrets are compared
/// with [`Secret::same_as`], by digest.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether both hold the same value, compared by their SHA-256 digests: the comparison
    /// takes as long wherever the values first differ, so it tells an attacker nothing.
    pub fn same_as(&self, other: &Secret) -> bool {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.0.as_bytes()) == Sha256::digest(other.0.as_bytes())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose_secret(), "hunter2-very-secret");
    }
}
