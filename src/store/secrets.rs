//! Encryption at rest for secrets (tenant client secrets, refresh tokens, SMTP passwords).
//!
//! AES-256-GCM with a random 96-bit nonce per value. Each ciphertext is stored as
//! `v1.<key id>.<base64(nonce || ciphertext)>` so `rotate-key` can tell which key sealed it,
//! and each is bound (as associated data) to the row and column it belongs to, so a
//! ciphertext copied into another row does not decrypt.

use crate::domain::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// Says how an administrator makes a key, for every message about a missing or bad one.
pub const HOW_TO_MAKE_A_KEY: &str = "generate one with `head -c 32 /dev/urandom | base64` and set it as master_key in the config file, \
     or as OFFICEBRIDGE_MASTER_KEY (or OFFICEBRIDGE_MASTER_KEY_FILE naming a file that holds it)";

/// One 256-bit master key with its id.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, [redacted])", self.id)
    }
}

impl MasterKey {
    /// Parses a base64 encoding of exactly 32 bytes.
    pub fn parse(encoded: &Secret) -> anyhow::Result<Self> {
        let bytes = STANDARD
            .decode(encoded.expose_secret().trim())
            .map_err(|_| anyhow!("the master key is not valid base64; {HOW_TO_MAKE_A_KEY}"))?;
        if bytes.len() != 32 {
            bail!(
                "the master key must be 32 bytes (base64 of 32 random bytes), found {} bytes; {HOW_TO_MAKE_A_KEY}",
                bytes.len()
            );
        }
        let digest = Sha256::new()
            .chain_update(b"officebridge master key id\0")
            .chain_update(&bytes)
            .finalize();
        Ok(Self {
            id: hex::encode(&digest[..4]),
            cipher: Aes256Gcm::new_from_slice(&bytes).expect("32-byte key"),
        })
    }

    /// A fresh random key and its base64 encoding (to be shown once or written to a file).
    pub fn generate() -> (Self, Secret) {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let encoded = Secret::new(STANDARD.encode(bytes));
        (Self::parse(&encoded).expect("generated key is valid"), encoded)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The current key, which seals, and earlier keys, which may still open values sealed
/// before a rotation finished.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Seals `plaintext` for the place named by `aad` (for example `tenant/CONTOSO/client_secret`).
    pub fn seal(&self, plaintext: &Secret, aad: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        format!("v1.{}.{}", self.current.id, STANDARD.encode(blob))
    }

    /// Opens a value sealed by [`Keyring::seal`] for the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> anyhow::Result<Secret> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("stored secret has an unknown format");
        };
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == kid)
            .with_context(|| {
                format!("stored secret was sealed with key {kid}, which is not configured (master_key or previous_master_keys)")
            })?;
        let blob = STANDARD.decode(body).context("stored secret is not valid base64")?;
        if blob.len() < 12 {
            bail!("stored secret is truncated");
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let plain = key
            .cipher
            .decrypt(
                &Nonce::from(<[u8; 12]>::try_from(nonce).expect("split at 12")),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("stored secret does not authenticate (wrong key or moved between rows)"))?;
        Ok(Secret::new(String::from_utf8(plain).context("stored secret is not UTF-8")?))
    }

    /// True when `sealed` is already under the current key.
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) == Some(self.current.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_bind_to_place() {
        let (key, _) = MasterKey::generate();
        let ring = Keyring::new(key, vec![]);
        let sealed = ring.seal(&Secret::new("s3cr3t"), "tenant/A/client_secret");
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(ring.open(&sealed, "tenant/A/client_secret").unwrap().expose_secret(), "s3cr3t");
        assert!(ring.open(&sealed, "tenant/B/client_secret").is_err());
    }

    #[test]
    fn previous_keys_open_old_values() {
        let (old, _) = MasterKey::generate();
        let (new, _) = MasterKey::generate();
        let sealed = Keyring::new(old.clone(), vec![]).seal(&Secret::new("x"), "a");
        let ring = Keyring::new(new.clone(), vec![old]);
        assert!(!ring.is_current(&sealed));
        assert_eq!(ring.open(&sealed, "a").unwrap().expose_secret(), "x");
        assert!(Keyring::new(new, vec![]).open(&sealed, "a").is_err());
    }

    #[test]
    fn bad_keys_say_how_to_make_one() {
        let err = MasterKey::parse(&Secret::new("c2hvcnQ=")).unwrap_err().to_string();
        assert!(err.contains("32 bytes") && err.contains("/dev/urandom"), "{err}");
        assert!(!format!("{:?}", MasterKey::generate().0).contains("cipher"));
    }
}
